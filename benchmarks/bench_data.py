"""Phantom generation, NIfTI writing/reading and preprocessing throughput (cases per second)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from brats_lib import preprocess as P
from brats_lib.augmentation import NnUNetAugmentation
from brats_lib.data import discover_cases, load_case
from brats_lib.papers.hnfnetv2.augmentation import HNFNetAugmentation
from brats_lib.phantoms import make_phantom, write_phantom_dataset

from .common import SIZES, md_table


def _per_patch_ms(aug, image, label, n: int, seed: int) -> tuple[float, list]:
    out, t = [], time.perf_counter()
    for i in range(n):
        out.append(aug(image, label, np.random.default_rng([seed, i])))
    return (time.perf_counter() - t) / n * 1e3, out


def augmentation_rows(patch: int = 32, n: int = 200) -> tuple[list[list[str]], bool]:
    """Milliseconds per training patch (4 x patch^3) of each paper's augmentation. HNF-Netv2's
    rotation runs MONAI's ``Rotate`` on plain tensors (MONAI's meta-data tracking off); the
    reference is the same call on MONAI's default MetaTensors, in this process, and the
    outputs must be identical."""
    from monai.data import set_track_meta
    from monai.transforms import Rotate

    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, patch, patch, patch)).astype(np.float32)
    label = rng.integers(0, 4, (patch,) * 3).astype(np.uint8)

    class TrackedHNF(HNFNetAugmentation):  # the reference: MONAI's default, MetaTensors
        def rotate(self, image, label, rng):
            set_track_meta(True)
            angles = tuple(np.deg2rad(rng.uniform(-self.max_degrees, self.max_degrees, size=3)))
            img = Rotate(angles, keep_size=True, mode="bilinear", padding_mode="zeros")(image)
            lab = Rotate(angles, keep_size=True, mode="nearest", padding_mode="zeros")(label[None])[0]
            return np.asarray(img, np.float32), np.asarray(lab).astype(label.dtype)

    ref_ms, ref = _per_patch_ms(TrackedHNF(), image, label, n, 1)
    ours_ms, ours = _per_patch_ms(HNFNetAugmentation(), image, label, n, 1)
    same = all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(ref, ours))
    nnunet_ms, _ = _per_patch_ms(NnUNetAugmentation(mri_channels=4), image, label, n, 1)
    print(f"augmentation {patch}^3: HNF-Netv2 {ours_ms:.2f} ms (MetaTensors {ref_ms:.2f} ms, identical {same}), "
          f"nnU-Net {nnunet_ms:.2f} ms")
    rows = [["HNF-Netv2 (flips, rotation, intensity), MONAI Rotate on MetaTensors (reference)", f"{ref_ms:.2f}", "1.00x", "-"],
            ["HNF-Netv2, the same Rotate on plain tensors (used)", f"{ours_ms:.2f}", f"**{ref_ms / ours_ms:.2f}x**",
             "yes" if same else "NO"],
            ["Optimized U-Net (nnU-Net list)", f"{nnunet_ms:.2f}", "-", "-"]]
    return rows, same


def run(sizes=("64^3", "128^3", "full")) -> tuple[str, bool]:
    rows = []
    for size in sizes:
        shape = SIZES[size]
        n = {"64^3": 8, "128^3": 3}.get(size, 1)
        t = time.perf_counter()
        for s in range(n):
            make_phantom(s, shape)
        gen = n / (time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            write_phantom_dataset(Path(d), n, 0, shape)
            write = n / (time.perf_counter() - t)
            cases = discover_cases(d)
            t = time.perf_counter()
            loaded = [load_case(c) for c in cases]
            load = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for lc in loaded:
            img, _, _ = P.crop_to_brain(lc.image, lc.label)
            P.zscore(img)
        prep = n / (time.perf_counter() - t)
        print(f"data {size}: generate {gen:.2f}, generate+write {write:.2f}, load {load:.2f}, preprocess {prep:.2f} cases/s")
        rows.append([size, n, f"{gen:.2f}", f"{write:.2f}", f"{load:.2f}", f"{prep:.2f}"])
    md = "\n".join([
        "## Data: phantom generation and preprocessing throughput", "",
        "Cases per second, one process. generate+write includes gzip-compressed NIfTI output of 4 modalities and "
        "the label map; load includes validation; preprocess = crop to the brain + per-modality z-score.", "",
        md_table(["size", "cases", "generate", "generate + write", "load + validate", "preprocess"], rows),
    ])
    aug_rows, same = augmentation_rows()
    md += "\n".join(["", "", "### Training-patch augmentation", "",
                     "Milliseconds per 4 x 32^3 patch (200 patches, the same generators for each row). The speed-up "
                     "is against the reference row, measured in this run; identical: every output voxel equal.", "",
                     md_table(["augmentation", "ms / patch", "speed-up", "identical"], aug_rows)])
    return md, same


if __name__ == "__main__":
    print(run()[0])
