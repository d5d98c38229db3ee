"""Whole-case inference: sliding window (overlap 0.5, Gaussian) with 8-flip TTA.

Reference: what a user would write, a loop calling MONAI's ``sliding_window_inference``
once per flip over the whole z-scored volume. Ours: :func:`brats_lib.inference.predict_case`,
which crops to the brain first and batches the 8 flips of each window into one network
call (one sliding pass, one set of blending buffers). Target: no slower than the
reference, the same segmentation, and under 4 GiB resident for the cpu-profile model.
"""
from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from brats_lib import inference as I
from brats_lib import preprocess as P

from .common import CPU_ROI, PeakRSS, cpu_model, md_table, timer, volume

MEMORY_LIMIT_GIB = 4.0


def reference(model, image: np.ndarray, roi, device) -> np.ndarray:
    x = torch.from_numpy(P.zscore(image))[None]
    total = None
    for f in I.ALL_FLIPS:
        xf = torch.flip(x, f) if f else x
        with torch.no_grad():
            logits = sliding_window_inference(xf, roi, 1, model, overlap=0.5, mode="gaussian", sw_device=device,
                                              device="cpu")
        prob = torch.sigmoid(logits)
        prob = torch.flip(prob, f) if f else prob
        total = prob if total is None else total + prob
    return (total / 8)[0].numpy()


def mean_abs_difference(p: np.ndarray, q: np.ndarray, image: np.ndarray) -> float:
    """Mean absolute difference of two probability maps inside the brain."""
    brain = P.brain_mask(image)
    return float(np.abs(p - q)[:, brain].mean())


def run(sizes=("64^3", "128^3", "full"), device: str = "cpu") -> tuple[str, bool]:
    model = cpu_model().to(device)
    rows, passed = [], True
    for size in sizes:
        image, _, desc = volume(size)
        t: dict[str, float] = {}
        with PeakRSS() as mem_ref, timer(t, "ref"):
            ref_prob = reference(model, image, CPU_ROI, device)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with PeakRSS() as mem_ours, timer(t, "ours"):
            labels, prob = I.predict_case(model, image, CPU_ROI, tta=8, device=device, amp=device == "cuda")
        gpu = [f"{torch.cuda.max_memory_allocated() / 2**30:.2f}"] if device == "cuda" else []
        diff = mean_abs_difference(ref_prob, prob, image)
        ratio = t["ref"] / t["ours"]
        ok = ratio >= 1.0 and mem_ours.gib < MEMORY_LIMIT_GIB
        passed &= ok
        print(f"inference {size}: reference {t['ref']:.1f} s, ours {t['ours']:.1f} s ({ratio:.2f}x), "
              f"peak RSS {mem_ours.gib:.2f} GiB, mean |probability difference| in the brain {diff:.4f}")
        rows.append([size, desc, f"{t['ref']:.1f}", f"{t['ours']:.1f}", f"**{ratio:.2f}x**", f"{mem_ref.gib:.2f}",
                     f"{mem_ours.gib:.2f}", *gpu, f"{diff:.4f}", "yes" if ok else "NO"])
    md = "\n".join([
        "## Inference: one case, sliding window (overlap 0.5, Gaussian) + 8-flip TTA", "",
        f"Model: the cpu-profile U-Net (`unet3d`, filters 8-64), window {'x'.join(map(str, CPU_ROI))}, device {device}. "
        "Reference: a loop calling MONAI's `sliding_window_inference` once per flip on the whole volume. "
        "Ours: `predict_case` (crop to the brain, flips batched per window). Peak resident memory of the process "
        "during each run; |dp| = mean absolute difference of the two probability maps inside the brain "
        "(the reference blends logits, ours probabilities, and window borders fall differently).", "",
        md_table(["size", "data", "reference (s)", "ours (s)", "speed-up", "peak GiB (ref)", "peak GiB (ours)",
                  *(["peak GPU GiB (ours)"] if device == "cuda" else []), "|dp| in brain", f"target met (>= 1x, < {MEMORY_LIMIT_GIB:.0f} GiB)"], rows),
    ])
    return md, passed


if __name__ == "__main__":
    print(run()[0])
