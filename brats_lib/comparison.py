"""Cross-paper comparison: each paper's proposed model and a plain 3D U-Net, trained on
the same cases and folds, scored with the same metrics.

The five papers report on different BraTS editions, splits and metric code, so their
numbers cannot be set side by side. Here every method is trained by its own paper's
module (its loss, schedule, sampling and inference, with the hyper-parameters of that
paper's parameter profile) on the folds of one split file, and every prediction is
scored by :func:`brats_lib.metrics.evaluate_labels`.

* :data:`METHODS` - label -> :class:`Method` (which paper module, which row of its tables).
* :func:`method_params` - a paper's profile with the comparison's data and folds.
* :func:`train` - train one method on one fold -> :class:`Fitted` (predict, sizes, times).
* :func:`brats_ranking` - the BraTS ranking scheme: rank per case and metric, averaged.
* :func:`pairwise_wilcoxon` - Wilcoxon signed-rank tests between all pairs, Holm-corrected.
* :func:`peak_memory` - the peak memory of a call (CUDA allocator on GPU, the profiler's
  allocation events on CPU).
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from scipy import stats

from . import labels as L
from . import params as params_mod
from . import postprocess
from .complexity import count_parameters, forward_macs
from .data import LoadedCase


@dataclass(frozen=True)
class Method:
    """One compared method: its paper's notebook (whose module and parameter profile it
    uses) and the row of that paper's tables it is."""
    label: str
    notebook: str
    row: str


METHODS: dict[str, Method] = {m.label: m for m in [
    Method("3D U-Net", "hnfnetv2", "3D U-Net"),
    Method("HNF-Netv2", "hnfnetv2", "HNF-Netv2 (intra + inter-SDE)"),
    Method("MTDS attention R2U-Net", "attention_r2unet_mtds", "Proposed (APR + SE-dropout + MTDS)"),
    Method("Optimized U-Net", "optimized_unet", "D+C+O"),
    Method("OM-Net + CGA", "omnet_cga", "OM-Net + CGAp"),
    Method("Cross-modality fusion", "cross_modality", "Ours"),
]}

#: the data and fold keys the comparison imposes on every paper's profile
SHARED_KEYS = ("seed", "phantom_cases", "phantom_shape", "data_dir", "splits", "n_folds", "folds")


def method_params(method: Method, profile: str, shared: dict, overrides: dict | None = None):
    """The parameters of ``method``'s paper for ``profile``, with the comparison's data and
    folds (``shared``) and the comparison profile's ``overrides`` for that method."""
    values = {**{k: v for k, v in shared.items() if k in SHARED_KEYS}, **(overrides or {})}
    if "holdout_cases" in {f.name for f in dataclasses.fields(params_mod.get_schema(method.notebook))}:
        values.setdefault("holdout_cases", 0)  # the comparison holds out nothing beyond its folds
    return params_mod.load(method.notebook, profile, **values)


@dataclass
class Fitted:
    """A method trained on one fold, behind one prediction path for every method.

    ``probabilities(case)`` gives the method's own probability maps (its channels, whole
    volume, background outside what it segments) without test-time flips;
    ``to_labels(probs, case)`` applies the method's own rule and post-processing.
    :meth:`predict` averages ``probabilities`` over the same flips for every method, then
    labels: the test-time budget is the comparison's, not each paper's."""
    method: Method
    probabilities: Callable[[LoadedCase], np.ndarray]
    to_labels: Callable[[np.ndarray, LoadedCase], np.ndarray]
    networks: list[nn.Module]                      # every network inference runs
    inputs: list[tuple[int, ...]]                  # each network's input (C, *patch) for MAC counts
    out_voxels: list[int]                          # voxels each forward pass predicts
    epoch_seconds: float                           # mean wall time of one training epoch
    train_seconds: float

    def predict(self, lc: LoadedCase, tta: int = 1) -> np.ndarray:
        """Canonical labels of a raw case with ``tta`` flips (1, 4 or 8) of the whole volume."""
        return self.to_labels(flip_average(self.probabilities, lc, tta), lc)


def flip_average(probabilities: Callable[[LoadedCase], np.ndarray], lc: LoadedCase, tta: int = 1) -> np.ndarray:
    """Test-time flips of the whole case, the same for every method: the raw image flipped
    along each combination of ``tta`` (:func:`~brats_lib.inference.parse_flips`), the
    method's probability maps flipped back and averaged."""
    from .inference import parse_flips

    total = None
    flips = parse_flips(tta)
    for f in flips:
        axes = tuple(a - 1 for a in f)  # tensor dims 2, 3, 4 -> image axes 1, 2, 3 (C, H, W, D)
        case = dataclasses.replace(lc, image=np.ascontiguousarray(np.flip(lc.image, axes)) if f else lc.image,
                                   label=None)
        prob = probabilities(case)
        prob = np.flip(prob, axes) if f else prob
        total = prob.astype(np.float32, copy=True) if total is None else total + prob
    return total / len(flips)


def inner_split(cases: Sequence[LoadedCase], fraction: float, seed: int) -> tuple[list[LoadedCase], list[LoadedCase]]:
    """(training, selection) cases: a seeded draw of ``fraction`` of a fold's training cases
    (at least one) on which methods choose learning rates, checkpoints and thresholds, so
    that nothing is tuned on the cases it is scored on."""
    cases = sorted(cases, key=lambda c: c.case_id)
    if len(cases) < 2:
        raise ValueError(f"an inner selection split needs at least 2 training cases, got {len(cases)}")
    n = min(max(1, int(round(fraction * len(cases)))), len(cases) - 1)
    pick = set(np.random.default_rng([seed, 104729]).permutation(len(cases))[:n].tolist())
    return [c for i, c in enumerate(cases) if i not in pick], [c for i, c in enumerate(cases) if i in pick]


def _epoch_seconds(logs: Sequence[pd.DataFrame]) -> float:
    times = [t for log in logs if "time_s" in log for t in log["time_s"]]
    return float(np.mean(times)) if times else float("nan")


def _hnfnetv2(m: Method, k: int, train: list[LoadedCase], select: list[LoadedCase], p, out: Path, device):
    from . import hnfnetv2 as HN

    net_name = HN.ROWS[m.row]
    res = HN.train_fold(net_name, k, train, select, p, out, device)
    net = HN.load_final(res, net_name, p).to(device or "cpu")
    return Fitted(m, lambda lc: HN.predict(net, lc, p, tta=1, post=False, device=device)[1],
                  lambda probs, lc: HN.to_labels(probs, p), [net],
                  [(4, *p.patch_size)], [int(np.prod(p.patch_size))], _epoch_seconds([res.log]), 0.0)


def _optimized_unet(m: Method, k: int, train, select, p, out: Path, device):
    from . import optimized_unet as OU

    run = OU.RUNS[m.row]
    res, _ = OU.train_fold(m.row, k, train, select, p, out, device)
    net = OU.load_ensemble(res, run, p)[0].to(device or "cpu")  # the best checkpoint alone: no ensembles here

    def to_labels(probs, lc):  # the submitted rule: paper thresholds and ET post-processing (Section 2.5)
        return postprocess.optimized_unet(OU.to_labels(probs, OU.PAPER_THRESHOLDS, p), probs, **OU.PAPER_POSTPROCESS)

    return Fitted(m, lambda lc: OU.predict(net, lc, run, p, tta=1, device=device)[1], to_labels, [net],
                  [(run.in_channels, *p.patch_size)], [int(np.prod(p.patch_size))], _epoch_seconds([res.log]), 0.0)


def _attention_r2unet(m: Method, k: int, train, select, p, out: Path, device):
    from . import attention_r2unet_mtds as AR

    res = AR.train(m.row, k, train, p, out, device)
    net = AR.load_final(res, m.row, p).to(device or "cpu")

    def to_labels(probs, lc):  # 3D post-processing of WT (Section 3.4)
        return AR.labels_from_masks(AR.masks_from_probabilities(probs, True, p.post_fraction))

    return Fitted(m, lambda lc: AR.predict_case(net, lc, p, device), to_labels, [net], [(4, *p.crop)],
                  [int(np.prod(p.crop))], _epoch_seconds([res.log]), 0.0)


def _omnet(m: Method, k: int, train, select, p, out: Path, device):
    from . import omnet_cga as OM

    row = OM.ROWS[m.row]
    if row.kind == "mc":
        raise ValueError(f"{m.label}: the comparison runs one-pass OM-Net rows; {row.label} is a cascade")
    res = OM.train_row(OM.ROWS[row.trained_as or row.label], [OM.task_case(lc) for lc in train], p, out,
                       seed=p.seed + 1000 * k, device=device)
    nets = res.nets
    centre = int(np.prod(p.tile_centre))
    return Fitted(m, lambda lc: OM.probabilities(nets, lc, p, device),
                  lambda probs, lc: OM.labels_from_probabilities(row, probs, lc, p), nets,
                  [(4, *p.patch_size)] * len(nets), [centre] * len(nets), _epoch_seconds(res.logs), 0.0)


def _cross_modality(m: Method, k: int, train, select, p, out: Path, device):
    from . import cross_modality as CM

    row = CM.ROWS[m.row]
    cases = [CM.training_case(lc) for lc in train]
    pre = CM.pretrain(row.init, cases, p, out / "pretrain", seed=p.seed + 1000 * k, pairing=row.pairing, device=device)
    res = CM.train_row(row, pre, cases, p, out / "cmff", seed=p.seed + 1000 * k + 1, device=device)
    net = res.net
    return Fitted(m, lambda lc: CM.probabilities(net, lc, p, device),
                  lambda probs, lc: np.argmax(probs, axis=0).astype(np.uint8), [net], [(4, *p.patch_size)],
                  [int(np.prod(p.patch_size))], _epoch_seconds([res.log]), 0.0)


TRAINERS = {"hnfnetv2": _hnfnetv2, "optimized_unet": _optimized_unet, "attention_r2unet_mtds": _attention_r2unet,
            "omnet_cga": _omnet, "cross_modality": _cross_modality}


def train(method: Method, fold: int, train_cases: Sequence[LoadedCase], p, out_dir: str | Path,
          selection_fraction: float = 0.2, seed: int = 0, device=None) -> Fitted:
    """Train ``method`` on one fold's training cases with its paper's module and parameters
    ``p``. Every method trains on the same :func:`inner_split` of them; the methods that
    select (a learning rate, checkpoints) do so on its selection cases only, never on the
    fold's validation cases, which score them."""
    t0 = time.time()
    inner, select = inner_split(train_cases, selection_fraction, seed + fold)
    fitted = TRAINERS[method.notebook](method, fold, inner, select, p, Path(out_dir), device)
    fitted.train_seconds = time.time() - t0
    for n in fitted.networks:
        n.eval()
    return fitted


# ------------------------------------------------------------------ sizes, time, memory
def sizes(fitted: Fitted) -> dict[str, float]:
    """Parameters (all networks) and network MACs per predicted voxel: each network's MACs
    for one forward pass over the voxels that pass predicts, summed over the networks of
    one prediction (comparable across 2D and 3D methods; no overlap, no flips)."""
    macs_per_voxel = 0.0
    for net, shape, vox in zip(fitted.networks, fitted.inputs, fitted.out_voxels):
        device = next(net.parameters()).device
        macs_per_voxel += forward_macs(net, torch.zeros((1, *shape), device=device)) / vox
    return {"params (M)": sum(count_parameters(n, trainable_only=False) for n in fitted.networks) / 1e6,
            "network kMACs / voxel": macs_per_voxel / 1e3}


def inference_macs(fitted: Fitted, lc: LoadedCase, tta: int = 1) -> float:
    """MACs per voxel of the case that one whole prediction costs, counted as it runs:
    every forward pass of every network (sliding-window overlap, overlap tiles, cascades,
    slices, flips) at its own input size, divided by the voxels of the volume."""
    counts: dict[tuple[int, tuple[int, ...]], int] = {}

    def hook(i):
        def count(module, args):
            x = args[0]
            # the CPU runs a batch of one as an expanded batch of two (brats_lib.inference._forward)
            n = 1 if x.shape[0] == 2 and x.stride(0) == 0 else int(x.shape[0])
            counts[i, tuple(x.shape[1:])] = counts.get((i, tuple(x.shape[1:])), 0) + n
        return count

    handles = [net.register_forward_pre_hook(hook(i)) for i, net in enumerate(fitted.networks)]
    try:
        fitted.predict(lc, tta)
    finally:
        for h in handles:
            h.remove()
    total = 0
    for (i, shape), n in counts.items():
        net = fitted.networks[i]
        total += n * forward_macs(net, torch.zeros((1, *shape), device=next(net.parameters()).device))
    return total / float(np.prod(lc.image.shape[1:]))


def peak_memory(fn: Callable[[], object], device=None) -> tuple[object, float]:
    """(result, peak MiB) of ``fn()``: on CUDA the allocator's peak above its level before
    the call; on CPU the highest running sum of the allocation and free events the
    PyTorch profiler records (tensors only; NumPy arrays are not counted)."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        out = fn()
        torch.cuda.synchronize(dev)
        return out, (torch.cuda.max_memory_allocated(dev) - before) / 2 ** 20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    live = peak = 0
    for ev in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += ev.self_cpu_memory_usage
        peak = max(peak, live)
    return out, peak / 2 ** 20


def timed(fn: Callable[[], object], device=None) -> tuple[object, float]:
    dev = torch.device(device or "cpu")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t = time.perf_counter()
    out = fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out, time.perf_counter() - t


# ------------------------------------------------------------------ statistics
#: metric columns of the per-case table and whether higher is better
RANKED = {**{f"Dice {r}": True for r in L.REGIONS}, **{f"HD95 {r}": False for r in L.REGIONS}}


def brats_ranking(per_case: pd.DataFrame, methods: Sequence[str], method_col: str = "method") -> pd.DataFrame:
    """The BraTS ranking scheme: for each case and each metric (Dice and HD95 of ET, TC,
    WT) the methods are ranked (1 = best, ties share the lowest rank, as the challenge
    does), then each method's ranks are averaged over cases and metrics. Returns one row
    per method: its mean rank per metric, the overall mean rank and the final position."""
    rows = []
    for (case, fold), d in per_case.groupby(["case", "fold"]):
        d = d.set_index(method_col).reindex(methods)
        for col, higher in RANKED.items():
            ranks = d[col].rank(ascending=not higher, method="min")
            rows += [{"method": m, "case": case, "metric": col, "rank": r} for m, r in ranks.items()]
    ranks = pd.DataFrame(rows)
    table = ranks.pivot_table(index="method", columns="metric", values="rank", aggfunc="mean")[list(RANKED)]
    table["mean rank"] = ranks.groupby("method")["rank"].mean()
    table = table.reindex(methods).sort_values("mean rank", kind="stable")
    table["position"] = table["mean rank"].rank(method="min").astype(int)
    return table


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error)."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (len(p) - i) * p[idx]))
        adjusted[idx] = running
    return adjusted


def pairwise_wilcoxon(per_case: pd.DataFrame, methods: Sequence[str], column: str = "Dice mean",
                      method_col: str = "method") -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank test of ``column`` for every pair of methods over the
    cases both predicted, Holm-corrected over all pairs. One row per pair."""
    wide = per_case.pivot_table(index=["fold", "case"], columns=method_col, values=column)
    rows = []
    for a, b in itertools.combinations(methods, 2):
        x, y = wide[a].to_numpy(float), wide[b].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        diff = x[ok] - y[ok]
        p = 1.0 if np.allclose(diff, 0) else float(stats.wilcoxon(x[ok], y[ok]).pvalue)
        rows.append({"A": a, "B": b, "cases": int(ok.sum()), f"mean {column} A - B": float(diff.mean()),
                     "p": p})
    out = pd.DataFrame(rows)
    out["p (Holm)"] = holm(out["p"]) if len(out) else []
    return out
