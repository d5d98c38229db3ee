"""Memory layout: one training step of each compared network, contiguous (NCDHW / NCHW)
vs channels-last (NDHWC / NHWC).

``channels_last`` is a profile setting (a layout, not a model change): on some CPUs
oneDNN's channels-last kernels are much faster, on others not, and for some networks
(16 channels at full resolution, whose instance norms copy their input to the default
layout and back) not at all. This section measures every network the comparison trains,
at the comparison's patch, batch and precision, and says whether each profile's choice is
the faster layout (or the two are within 5 %).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from brats_lib import comparison as C
from brats_lib.app import profiles
from brats_lib.precision import autocast, guard_tiny_convolutions
from brats_lib.training import CHANNELS_LAST, layout_rank

from .common import TOLERANCE, choice_verdict, md_table



@dataclass
class Entry:
    """A network to time: the comparison method whose profile sets its size, patch, batch,
    precision and layout, how to build it, its input channels and the batch it trains on."""
    label: str
    method: str
    build: Callable[[object], nn.Module]
    channels: int = 4
    batch: Callable[[object], int] = lambda p: p.batch_size
    patch: Callable[[object], list[int]] = lambda p: list(p.patch_size)
    #: the profile whose ``channels_last`` the row checks (default: the comparison's for ``method``)
    notebook_profile: str | None = None


def _entries() -> list[Entry]:
    from brats_lib.papers.attention_r2unet_mtds import pipeline as AR
    from brats_lib.papers.attention_r2unet_mtds.paper import PROPOSED
    from brats_lib.papers.cross_modality import pipeline as CM
    from brats_lib.papers.hnfnetv2 import pipeline as HN
    from brats_lib.papers.omnet_cga import pipeline as OM
    from brats_lib.papers.optimized_unet import pipeline as OU

    return [
        Entry("3D U-Net", "3D U-Net", lambda p: HN.build_model("hnf_unet3d", p)),
        Entry("HNF-Netv2", "HNF-Netv2", lambda p: HN.build_model("hnfnetv2", p)),
        Entry("MTDS attention R2U-Net", "MTDS attention R2U-Net", lambda p: AR.build_model(AR.RUNS[PROPOSED], p),
              patch=lambda p: list(p.crop)),
        Entry("Optimized U-Net, U-Net row (its notebook)", "Optimized U-Net",
              lambda p: OU.build_model(OU.RUNS["U-Net"], p), notebook_profile="optimized_unet"),
        Entry("Optimized U-Net (D+C+O)", "Optimized U-Net", lambda p: OU.build_model(OU.RUNS["D+C+O"], p), channels=5),
        # one patch per task through the shared backbone (the one-pass batch of a stage-3 step)
        Entry("OM-Net + CGA", "OM-Net + CGA", lambda p: OM.build("omnet_cga", p), batch=lambda p: 3 * p.batch_size),
        Entry("Cross-modality fusion", "Cross-modality fusion", lambda p: CM.build(CM.ROWS["Ours"], p)),
    ]


def _step(model: nn.Module, x: torch.Tensor, amp: bool) -> Callable[[], None]:
    """One training step: forward under the profile's precision, a loss touching every
    output, backward, Adam."""
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=1e-4)

    def outputs(out):
        if torch.is_tensor(out):
            return [out]
        return [t for o in out for t in outputs(o)] if isinstance(out, (list, tuple)) else []

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(x.device.type, amp):
            out = model(x)
        sum(o.float().square().mean() for o in outputs(out)).backward()
        opt.step()

    return step


def time_layouts(entry: Entry, p, repeats: int = 4, steps: int = 3, device: str = "cpu") -> dict:
    """Milliseconds per step in both layouts (median of ``repeats`` interleaved rounds of
    ``steps`` steps after a warm-up) and their ratio."""
    torch.set_flush_denormal(True)  # as fit does on the CPU
    runs = {}
    for cl in (False, True):
        torch.manual_seed(0)
        model = entry.build(p).to(device).train()
        guard_tiny_convolutions(model, torch.device(device).type, p.amp)
        x = torch.randn(entry.batch(p), entry.channels, *entry.patch(p), device=device)
        rank = layout_rank(model)
        if cl:
            model.to(memory_format=CHANNELS_LAST[rank])
            x = x.contiguous(memory_format=CHANNELS_LAST[rank])
        runs[cl] = _step(model, x, p.amp)
        for _ in range(2):
            runs[cl]()
    times = {False: [], True: []}
    for r in range(repeats):
        for cl in ((False, True) if r % 2 == 0 else (True, False)):
            t = time.perf_counter()
            for _ in range(steps):
                runs[cl]()
            times[cl].append((time.perf_counter() - t) / steps)
    plain, last = float(np.median(times[False])), float(np.median(times[True]))
    return {"contiguous ms": 1e3 * plain, "channels-last ms": 1e3 * last, "ratio": plain / last}


def verdict(ratio: float, chosen: bool) -> tuple[str, bool]:
    """(the faster layout, whether ``chosen`` (channels-last) is right)."""
    return choice_verdict(ratio, chosen, ("channels-last", "contiguous"))


def run(device: str = "cpu", repeats: int = 4) -> tuple[str, bool]:
    cp = profiles.load("comparison", "cpu")
    shared = profiles.as_dict(cp)
    rows, passed = [], True
    for e in _entries():
        m = C.METHODS[e.method]
        p = C.method_params(m, "cpu", shared, cp.method_overrides.get(e.method, {}))
        chosen_p = profiles.load(e.notebook_profile, "cpu") if e.notebook_profile else p
        t = time_layouts(e, p, repeats, device=device)
        faster, ok = verdict(t["ratio"], chosen_p.channels_last)
        passed &= ok
        where = f"params/{e.notebook_profile}/cpu.yaml" if e.notebook_profile else "comparison"
        rows.append([e.label, f"{e.batch(p)} x {'x'.join(map(str, e.patch(p)))}",
                     "bf16 autocast" if p.amp else "fp32", f"{t['contiguous ms']:.0f}", f"{t['channels-last ms']:.0f}",
                     f"**{t['ratio']:.2f}x**", faster, f"{'on' if chosen_p.channels_last else 'off'} ({where})",
                     "yes" if ok else "NO"])
        print(f"layout {e.label}: contiguous / channels-last {t['ratio']:.2f}x")
    md = "\n".join([
        "## Memory layout: contiguous vs channels-last, per compared network", "",
        "One training step (forward in the profile's precision, a loss on every output, backward, Adam) of each "
        "network the comparison trains, at the comparison's size, patch and batch (OM-Net + CGA: one patch per task, "
        f"as a stage-3 step), in both layouts, {repeats} interleaved rounds; the ratio is contiguous / channels-last "
        "time (above 1: channels-last is faster). `channels_last` is each profile's choice; it is right when it "
        f"picks the faster layout or the two are within {TOLERANCE:.0%}.", "",
        md_table(["network", "batch x patch", "precision", "contiguous (ms)", "channels-last (ms)", "ratio",
                  "faster", "channels_last", "choice right"], rows),
    ])
    return md, passed
