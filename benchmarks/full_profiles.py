"""What the ``full`` profiles ask of a GPU: ``python -m benchmarks.full_profiles [--device cuda]``.

For each paper notebook: its proposed model at the full profile's patch and batch, the
optimiser steps the profile trains in all (rows x folds x learning rates x epochs x
steps), and the memory of one training step. On the CPU the memory is an estimate
counted on the ``meta`` device (no compute): float32 weights, gradients and Adam's two
moments, plus every tensor autograd saves for the backward pass (the activations), the
bulk of a step's peak. With ``--device cuda`` each model also trains a few steps with AMP
and the measured step time and peak memory are added. Ratios are against the plain
3D U-Net (HNF-Netv2's Table 1 baseline) in the same process. Writes
``reports/full-profiles.md`` (``full-profiles-cuda.md`` with ``--device cuda``).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn

from brats_lib.app import profiles as params
from brats_lib.io import write_text
from brats_lib.manifest import hardware
from brats_lib.paths import REPO_ROOT


def _hnf(name):
    from brats_lib.papers.hnfnetv2 import paper as HNP
    from brats_lib.papers.hnfnetv2 import pipeline as HN

    p = params.load("hnfnetv2", "full")
    steps = len(HNP.TABLE1_ROWS) * p.folds * p.epochs * p.steps_per_epoch
    return (lambda: HN.build_model(HN.ROWS[name], p)), (p.batch_size, 4, *p.patch_size), steps, \
        f"{len(HNP.TABLE1_ROWS)} rows x {p.folds} folds x {p.epochs} epochs x {p.steps_per_epoch} steps"


def _ou():
    from brats_lib.papers.optimized_unet import pipeline as OU

    p = params.load("optimized_unet", "full")
    run = OU.RUNS["D+C+O"]
    rows = len(OU.RUNS)
    steps = rows * p.folds * len(p.learning_rates) * p.epochs * p.steps_per_epoch
    return (lambda: OU.build_model(run, p)), (p.batch_size, run.in_channels, *p.patch_size), steps, \
        f"{rows} rows x {p.folds} folds x {len(p.learning_rates)} rates x {p.epochs} epochs x {p.steps_per_epoch} steps"


def _ar():
    from brats_lib.papers.attention_r2unet_mtds import pipeline as AR

    p = params.load("attention_r2unet_mtds", "full")
    name = "Proposed (APR + SE-dropout + MTDS)"
    return (lambda: AR.build_model(AR.RUNS[name], p)), (p.batch_size, 4, *p.crop), None, \
        f"{len(AR.RUNS)} rows x {p.folds} folds x {p.epochs} epochs over every training slice (batch {p.batch_size})"


def _om():
    from brats_lib.papers.omnet_cga import pipeline as OM

    p = params.load("omnet_cga", "full")
    trained = [r for r in OM.TABLE1_ROWS if r.trained_as is None]
    epochs = sum(3 * p.mc_epochs if r.kind == "mc" else sum(p.stage_epochs) for r in trained)
    epochs += p.ensemble_folds * sum(p.stage_epochs)
    steps = p.folds * epochs * p.steps_per_epoch
    return (lambda: OM.build("omnet_cga", p)), (p.batch_size * 3, 4, *p.patch_size), steps, \
        f"{len(trained)} trained rows ({epochs} network-epochs incl. {p.ensemble_folds} ensemble folds) x " \
        f"{p.steps_per_epoch} steps; batch {p.batch_size} per task"


def _cm():
    from brats_lib.papers.cross_modality import pipeline as CM

    p = params.load("cross_modality", "full")
    trained = [r for r in CM.TABLE_ROWS if not r.trained_as]
    pre = 3 * p.cmft_epochs * p.steps_per_epoch + p.pretrain_2d_epochs * p.pretrain_2d_steps_per_epoch
    steps = p.folds * (pre + len(trained) * p.cmff_epochs * p.steps_per_epoch)
    return (lambda: CM.build(CM.ROWS["Ours"], p)), (p.batch_size, 4, *p.patch_size), steps, \
        f"{p.folds} fold x (3 pre-trainings x {p.cmft_epochs} epochs + {len(trained)} rows x {p.cmff_epochs} epochs) " \
        f"x {p.steps_per_epoch} steps"


NOTEBOOKS = {
    "3D U-Net (hnfnetv2 baseline)": lambda: _hnf("3D U-Net"),
    "hnfnetv2 (HNF-Netv2)": lambda: _hnf("HNF-Netv2 (intra + inter-SDE)"),
    "optimized_unet (D+C+O)": _ou,
    "attention_r2unet_mtds (MTDS)": _ar,
    "omnet_cga (OM-Net + CGA)": _om,
    "cross_modality (CMFF)": _cm,
}


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _outputs(o)]


def estimated_step_bytes(build, shape) -> tuple[int, int]:
    """(parameters, bytes) of one float32 training step, counted on the meta device:
    4 copies of the weights (weights, gradients, Adam's moments) + saved activations."""
    with torch.device("meta"):
        model = build()
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    seen, saved = set(), 0

    def pack(t):
        nonlocal saved
        if id(t) not in seen and not isinstance(t, nn.Parameter):
            seen.add(id(t))
            keep.append(t)  # hold a reference so ids stay unique
            saved += t.numel() * t.element_size()
        return t

    keep: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.empty(shape, device="meta"))
    return n_params, 4 * 4 * n_params + saved


def measured_step(build, shape, device: str, steps: int = 5) -> tuple[float, float]:
    """(seconds per step, peak GiB) of AMP training steps with Adam on ``device``."""
    model = build().to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(shape, device=device)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = sum(o.float().mean() for o in _outputs(model(x)))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()
        if i:  # the first step warms up cuDNN
            times.append(time.perf_counter() - t)
    return sum(times) / len(times), torch.cuda.max_memory_allocated() / 2 ** 30


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.full_profiles")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    a = ap.parse_args()
    hw = hardware()
    rows, ref = [], None
    for label, make in NOTEBOOKS.items():
        build, shape, steps, how = make()
        n, est = estimated_step_bytes(build, shape)
        ref = ref or est
        row = [label, "x".join(map(str, shape[2:])) + f", batch {shape[0]}", f"{n / 1e6:.2f}",
               f"{steps:,}" if steps else "see right", how, f"{est / 2 ** 30:.1f}", f"{est / ref:.2f}x"]
        if a.device == "cuda":
            sec, peak = measured_step(build, shape, "cuda")
            row += [f"{sec:.3f}", f"{peak:.1f}", f"{steps * sec / 3600:,.0f}" if steps else "n/a"]
        rows.append(row)
        print(" | ".join(row), flush=True)
    head = ["notebook (model)", "patch, batch", "params (M)", "optimiser steps", "training length",
            "est. GiB per step (fp32)", "vs 3D U-Net"]
    if a.device == "cuda":
        head += ["measured s / step (AMP)", "measured peak GiB (AMP)", "hours at that rate"]
    lines = ["# What the full profiles ask of a GPU", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M')} by `python -m benchmarks.full_profiles --device {a.device}` "
             f"({hw['cpu_count']} CPU cores, GPUs: {', '.join(hw.get('gpus', [])) or 'none'}).",
             "Estimated memory: weights, gradients and Adam moments in float32 plus the activations autograd saves "
             "in the forward pass, counted on the meta device; AMP roughly halves the activations. "
             "Optimiser steps: every trained row, fold and learning rate of the profile.", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    name = "full-profiles-cuda.md" if a.device == "cuda" else "full-profiles.md"
    write_text(REPO_ROOT / "reports" / name, "\n".join(lines) + "\n")
    print(f"written reports/{name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
