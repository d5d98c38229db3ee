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
from .complexity import _count, count_parameters
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
    """A method trained on one fold."""
    method: Method
    predict: Callable[[LoadedCase], np.ndarray]   # raw case -> canonical labels (full size)
    networks: list[nn.Module]                      # every network inference runs
    inputs: list[tuple[int, ...]]                  # each network's input (C, *patch) for MAC counts
    out_voxels: list[int]                          # voxels each forward pass predicts
    epoch_seconds: float                           # mean wall time of one training epoch
    train_seconds: float


def _epoch_seconds(logs: Sequence[pd.DataFrame]) -> float:
    times = [t for log in logs if "time_s" in log for t in log["time_s"]]
    return float(np.mean(times)) if times else float("nan")


def _hnfnetv2(m: Method, k: int, train: list[LoadedCase], val: list[LoadedCase], p, out: Path, tta: int, device):
    from . import hnfnetv2 as HN

    net_name = HN.ROWS[m.row]
    res = HN.train_fold(net_name, k, train, val, p, out, device)
    net = HN.load_final(res, net_name, p).to(device or "cpu")
    return Fitted(m, lambda lc: HN.predict(net, lc, p, tta=tta, device=device)[0], [net],
                  [(4, *p.patch_size)], [int(np.prod(p.patch_size))], _epoch_seconds([res.log]), 0.0)


def _optimized_unet(m: Method, k: int, train, val, p, out: Path, tta: int, device):
    from . import optimized_unet as OU

    run = OU.RUNS[m.row]
    res, _ = OU.train_fold(m.row, k, train, val, p, out, device)
    nets = [n.to(device or "cpu") for n in OU.load_ensemble(res, run, p)]

    def predict(lc):  # the submitted pipeline: paper thresholds and ET post-processing (Section 2.5)
        labels, probs = OU.predict(nets, lc, run, p, tta=tta, thresholds=OU.PAPER_THRESHOLDS, device=device)
        return postprocess.optimized_unet(labels, probs, **OU.PAPER_POSTPROCESS)

    c = run.in_channels
    return Fitted(m, predict, nets, [(c, *p.patch_size)] * len(nets), [int(np.prod(p.patch_size))] * len(nets),
                  _epoch_seconds([res.log]), 0.0)


def _attention_r2unet(m: Method, k: int, train, val, p, out: Path, tta: int, device):
    from . import attention_r2unet_mtds as AR

    res = AR.train(m.row, k, train, p, out, device)
    net = AR.load_final(res, m.row, p).to(device or "cpu")

    def predict(lc):  # slice by slice, 3D post-processing of WT (Section 3.4)
        probs = AR.predict_case(net, lc, p, device)
        return AR.labels_from_masks(AR.masks_from_probabilities(probs, True, p.post_fraction))

    return Fitted(m, predict, [net], [(4, *p.crop)], [int(np.prod(p.crop))], _epoch_seconds([res.log]), 0.0)


def _omnet(m: Method, k: int, train, val, p, out: Path, tta: int, device):
    from . import omnet_cga as OM

    row = OM.ROWS[m.row]
    res = OM.train_row(OM.ROWS[row.trained_as or row.label], [OM.task_case(lc) for lc in train], p, out,
                       seed=p.seed + 1000 * k, device=device)
    nets = res.nets
    centre = int(np.prod(p.tile_centre))
    return Fitted(m, lambda lc: OM.predict(row, nets, lc, p, device), nets, [(4, *p.patch_size)] * len(nets),
                  [centre] * len(nets), _epoch_seconds(res.logs), 0.0)


def _cross_modality(m: Method, k: int, train, val, p, out: Path, tta: int, device):
    from . import cross_modality as CM

    row = CM.ROWS[m.row]
    cases = [CM.training_case(lc) for lc in train]
    pre = CM.pretrain(row.init, cases, p, out / "pretrain", seed=p.seed + 1000 * k, pairing=row.pairing, device=device)
    res = CM.train_row(row, pre, cases, p, out / "cmff", seed=p.seed + 1000 * k + 1, device=device)
    net = res.net
    return Fitted(m, lambda lc: CM.predict(net, lc, p, device), [net], [(4, *p.patch_size)],
                  [int(np.prod(p.patch_size))], _epoch_seconds([res.log]), 0.0)


TRAINERS = {"hnfnetv2": _hnfnetv2, "optimized_unet": _optimized_unet, "attention_r2unet_mtds": _attention_r2unet,
            "omnet_cga": _omnet, "cross_modality": _cross_modality}


def train(method: Method, fold: int, train_cases: Sequence[LoadedCase], val_cases: Sequence[LoadedCase], p,
          out_dir: str | Path, tta: int = 1, device=None) -> Fitted:
    """Train ``method`` on one fold with its paper's module and parameters ``p``; the
    returned :class:`Fitted` predicts raw cases with ``tta`` flips where the method's
    inference has test-time augmentation."""
    t0 = time.time()
    fitted = TRAINERS[method.notebook](method, fold, list(train_cases), list(val_cases), p, Path(out_dir), tta, device)
    fitted.train_seconds = time.time() - t0
    for n in fitted.networks:
        n.eval()
    return fitted


# ------------------------------------------------------------------ sizes, time, memory
def sizes(fitted: Fitted) -> dict[str, float]:
    """Parameters (all networks) and MACs of one forward pass of each network, per
    predicted voxel and scaled to a 128^3 volume (comparable across 2D and 3D methods)."""
    macs_per_voxel = 0.0
    for net, shape, vox in zip(fitted.networks, fitted.inputs, fitted.out_voxels):
        device = next(net.parameters()).device
        macs, _ = _count(net, torch.zeros((1, *shape), device=device))
        macs_per_voxel += macs / vox
    return {"params (M)": sum(count_parameters(n, trainable_only=False) for n in fitted.networks) / 1e6,
            "GMACs per 128^3": macs_per_voxel * 128 ** 3 / 1e9}


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
