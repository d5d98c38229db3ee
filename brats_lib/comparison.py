"""Cross-paper comparison: each paper's proposed model and a plain 3D U-Net, trained on
the same cases and folds, scored with the same metrics.

The five papers report on different BraTS editions, splits and metric code, so their
numbers cannot be set side by side. Here every method is trained by its own paper's
pipeline (:mod:`brats_lib.pipeline`: its loss, schedule, sampling and inference, with the
hyper-parameters of that paper's parameter profile) on the folds of one split file, and
every prediction is scored by :func:`brats_lib.metrics.case_scores`. Every method goes
through the same calls of the one pipeline interface: no method has code of its own here.

* :data:`METHODS` - label -> :class:`Method` (which paper, which row of its tables).
* :func:`method_params` - a paper's profile with the comparison's data and folds.
* :func:`train` - train one method on one fold -> :class:`Fitted` (predict, sizes, times);
  :func:`train_jobs` - many of them, ``workers`` at once in processes of their own;
  :func:`train_all` - every (method, fold) of a split through it.
* :func:`evaluate` - every method trained on every fold (:func:`train_all`) and scored on
  its validation cases (:func:`score`) -> the fitted methods, the per-case table and the
  peak memory of some predictions; :func:`empty_region_table` - per method, how much of each
  mean Dice the cases without that region decide;
  :func:`scored_cases` - that table with one row per (method, case), what the tables count
  (a held-out case scored by several folds' models once, its scores averaged).
* :func:`sizes`, :func:`inference_macs`, :func:`peak_memory`, :func:`timed` - what it costs;
  :func:`summary_table` - per method: Dice and HD95 with CIs, sizes, times, memory.
* :func:`dice_boxplots`, :func:`dice_vs_cost`, :func:`one_case_figure` - the figures.
* The statistics (:func:`~brats_lib.statistics.brats_ranking`,
  :func:`~brats_lib.statistics.pairwise_wilcoxon`, :func:`~brats_lib.statistics.holm`) are
  re-exported from :mod:`brats_lib.statistics`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import labels as L
from . import metrics as M
from . import params as params_mod
from . import pipeline as pipelines
from .complexity import count_parameters, forward_macs
from .data import LoadedCase
from .figures import prediction_figure, tumour_slice
from .params import FoldParams, schema
from .statistics import RANKED, brats_ranking, format_ci, holm, pairwise_wilcoxon  # noqa: F401  (re-exported)


@schema("comparison")
class ComparisonParams(FoldParams):
    """Cross-paper comparison: every paper's proposed model and a plain 3D U-Net on the same folds."""

    #: labels of :data:`METHODS` to train, in table order
    methods: list[str]
    #: per method label, values replacing its paper profile's (same profile name as this one)
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: phantoms beyond the split's pool (the last ones of the seed) that no method trains or
    #: selects on: every trained fold's models score them as well as the fold's validation
    #: cases (cheap: inference only), so that the means rest on more cases than one fold has
    holdout_cases: int = 0
    #: test-time flips of the whole volume, the same for every method (1, 4 or 8)
    tta: int = 1
    #: share of each fold's training cases held back for the methods' own selections
    #: (learning rate, checkpoints); every method trains on the rest
    selection_fraction: float = 0.2
    #: measure peak memory on this many validation cases per method (0 = skip; the CPU
    #: profiler slows inference down)
    memory_cases: int = 1
    #: methods trained at once on a CPU, each in a fresh process of its own with this
    #: process's threads divided among them (:func:`train_all`); 1 trains them one after
    #: another here. On 2 cores two one-thread trainings get through more work than one
    #: two-thread training (the small 3D convolutions of these profiles use a second
    #: thread poorly; ``python -m benchmarks --only workers`` measures by how much). A GPU
    #: always trains one at a time. ``select`` trains its checks the same way
    workers: int = 1


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


#: values the comparison imposes where a paper's schema has the key: nothing held out beyond
#: the folds, and one network per method (the best checkpoint, no checkpoint ensembles)
IMPOSED = {"holdout_cases": 0, "keep_best": 1}


def method_params(method: Method, profile: str, shared: dict, overrides: dict | None = None):
    """The parameters of ``method``'s paper for ``profile``, with the comparison's data and
    folds (``shared``) and the comparison profile's ``overrides`` for that method."""
    values = {**{k: v for k, v in shared.items() if k in SHARED_KEYS}, **(overrides or {})}
    fields = {f.name for f in dataclasses.fields(params_mod.get_schema(method.notebook))}
    for key, value in IMPOSED.items():
        if key in fields:
            values.setdefault(key, value)
    return params_mod.load(method.notebook, profile, **values)


@dataclass
class Fitted:
    """A method trained on one fold: its paper's pipeline, the trained row and the
    parameters it was trained with, behind one prediction call for every method."""

    method: Method
    pipeline: pipelines.Pipeline
    trained: pipelines.Trained
    params: Any
    device: Any = None

    @property
    def networks(self) -> list[nn.Module]:
        return self.trained.networks

    @property
    def epoch_seconds(self) -> float:
        return self.trained.epoch_seconds

    @property
    def train_seconds(self) -> float:
        return self.trained.train_seconds

    def predict(self, lc: LoadedCase, tta: int = 1) -> np.ndarray:
        """Canonical labels of a raw case with ``tta`` whole-volume flips (1, 4 or 8) and
        the paper's submitted rule (``final``: its thresholds and post-processing)."""
        return self.pipeline.predict(self.trained, lc, self.params, tta=tta, final=True, device=self.device).labels


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


def train(method: Method, fold: int, train_cases: Sequence[LoadedCase], p, out_dir: str | Path,
          selection_fraction: float = 0.2, seed: int = 0, device=None) -> Fitted:
    """Train ``method`` on one fold's training cases with its paper's pipeline and
    parameters ``p``. Every method trains on the same :func:`inner_split` of them; the
    methods that select (a learning rate, checkpoints) do so on its selection cases only,
    never on the fold's validation cases, which score them."""
    t0 = time.time()
    inner, select = inner_split(train_cases, selection_fraction, seed + fold)
    pipe = pipelines.get(method.notebook)
    trained = pipelines.train(pipe, method.row, fold, inner, select, p, Path(out_dir) / "row" / f"fold{fold}", device)
    trained.train_seconds = time.time() - t0
    for n in trained.networks:
        n.eval()
    return Fitted(method, pipe, trained, p, device)


def _train_job(method: Method, fold: int, train_cases: Sequence[LoadedCase], p, out_dir: str | Path,
               selection_fraction: float, seed: int, threads: int) -> Fitted:
    """:func:`train` in a worker process of :func:`train_all` with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    return train(method, fold, train_cases, p, out_dir, selection_fraction, seed)


def _in_fresh_process(args: tuple, threads: int) -> Fitted:
    """:func:`_train_job` in a process spawned for it alone. The process stays up until its
    result (tensors shared through file descriptors) has been received here, then exits."""
    import concurrent.futures as cf
    import multiprocessing

    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_train_job, *args, threads).result()


def train_jobs(jobs: Mapping[Hashable, tuple], workers: int = 1, device=None, progress: bool = True,
               desc: str = "methods x folds (training)",
               on_done: Callable[[Hashable, Fitted], None] | None = None) -> dict[Hashable, Fitted]:
    """:func:`train` each job -> ``{key: Fitted}`` in the order of ``jobs``. A job is
    ``key -> (method, fold, train_cases, p, out_dir, selection_fraction, seed)``, the
    arguments of :func:`train` before ``device``.

    With ``workers`` > 1 on the CPU, ``workers`` jobs run at once, each in a fresh spawned
    process (one job per process, so that nothing a job leaves in a process reaches
    another) with ``torch.get_num_threads() // workers`` threads: a job's weights depend on
    its inputs and its thread count only, not on which jobs ran beside it. Otherwise the
    jobs run here, one after another. The networks come back to this process.
    ``on_done(key, fitted)`` runs here as each job's result arrives (in order of finishing)."""
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    fitted: dict[Hashable, Fitted] = {}

    def done(key, result):
        fitted[key] = result
        if on_done is not None:
            on_done(key, result)
        bar.update()

    if workers <= 1 or torch.device(device or "cpu").type != "cpu":
        for key, a in jobs.items():
            bar.set_postfix_str(str(key))
            done(key, train(*a, device=device))
    else:
        import concurrent.futures as cf

        threads = max(1, torch.get_num_threads() // workers)
        quiet = {key: (*a[:3], dataclasses.replace(a[3], progress=False), *a[4:]) if hasattr(a[3], "progress") else a
                 for key, a in jobs.items()}
        with cf.ThreadPoolExecutor(workers) as pool:  # each thread waits on one spawned process at a time
            running = {pool.submit(_in_fresh_process, a, threads): key for key, a in quiet.items()}
            try:
                for future in cf.as_completed(running):
                    bar.set_postfix_str(str(running[future]))
                    done(running[future], future.result())
            except BaseException:
                for f in running:  # jobs not started yet are dropped; running ones finish
                    f.cancel()
                raise
    bar.close()
    return {key: fitted[key] for key in jobs}


def train_all(jobs: Sequence[tuple[Method, int]], params_of: dict[str, Any], folds: Sequence[dict],
              cases: dict[str, LoadedCase], out_dir: str | Path, selection_fraction: float = 0.2, seed: int = 0,
              workers: int = 1, device=None, progress: bool = True) -> dict[tuple[str, int], Fitted]:
    """:func:`train` each (method, fold) of ``jobs`` on the fold's training cases, through
    :func:`train_jobs` (``workers`` at once on a CPU) -> ``{(method label, fold): Fitted}``."""
    out_dir = Path(out_dir)
    args = {(m.label, k): (m, k, [cases[c] for c in folds[k]["train"]], params_of[m.label],
                           out_dir / pipelines.safe_name(m.label) / f"fold{k}", selection_fraction, seed)
            for m, k in jobs}
    return train_jobs(args, workers, device, progress)


# ------------------------------------------------------------------ sizes, time, memory
def sizes(fitted: Fitted) -> dict[str, float]:
    """Parameters (all networks) and network MACs per predicted voxel: each network's MACs
    for one forward pass over the voxels that pass predicts, summed over the networks of
    one prediction (comparable across 2D and 3D methods; no overlap, no flips)."""
    macs_per_voxel = 0.0
    inputs = fitted.pipeline.network_inputs(fitted.trained, fitted.params)
    for net, (shape, vox) in zip(fitted.networks, inputs):
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


# ------------------------------------------------------------------ the notebook's loop and tables
def check_holdout(folds: Sequence[dict], holdout: Sequence[str]) -> None:
    """Raise if a held-out case is in a fold (it would be trained or selected on)."""
    in_folds = {c for f in folds for c in (*f["train"], *f["val"])}
    if set(holdout) & in_folds:
        raise ValueError(f"held-out cases inside the folds: {sorted(set(holdout) & in_folds)}")


def score(fitted: dict[tuple[str, int], Fitted], folds: Sequence[dict], cases: dict[str, LoadedCase], p, device=None,
          holdout: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score each trained (method, fold) on the fold's validation cases and on each
    ``holdout`` case (in no fold: no method trains or selects on it), with the comparison's
    flips (``p.tta``), timed, one after another in this process; the first
    ``p.memory_cases`` predictions of each method also get their peak memory. Returns the
    per-case table (``scored``: "validation" or "held out") and the memory table."""
    check_holdout(folds, holdout)
    per_case, memory = [], []
    for (label, k), f in tqdm(fitted.items(), desc="methods x folds (scoring)", disable=not p.progress):
        scored = [(c, "validation") for c in folds[k]["val"]] + [(c, "held out") for c in holdout]
        for i, (lc, kind) in enumerate((cases[c], kind) for c, kind in scored):
            labels, sec = timed(lambda: f.predict(lc, p.tta), device)
            if i < p.memory_cases:
                _, mib = peak_memory(lambda: f.predict(lc, p.tta), device)
                memory.append({"method": label, "case": lc.case_id, "peak MiB": mib})
            per_case.append({"method": label, "fold": k, "case": lc.case_id, "scored": kind, "seconds": sec,
                             **M.case_scores(labels, lc.label, lc.spacing)})
    return pipelines.with_dice_mean(pd.DataFrame(per_case)), pd.DataFrame(memory, columns=["method", "case", "peak MiB"])


def evaluate(methods: Sequence[Method], params_of: dict[str, Any], folds: Sequence[dict], cases: dict[str, LoadedCase],
             p, out_dir: str | Path, device=None, holdout: Sequence[str] = ()
             ) -> tuple[dict[tuple[str, int], Fitted], pd.DataFrame, pd.DataFrame]:
    """Train every method on every fold (:func:`train_all`, ``p.workers`` at once; never
    seeing the fold's validation cases), then :func:`score` them. Returns ``{(method, fold):
    Fitted}``, the per-case table and the memory table."""
    check_holdout(folds, holdout)
    fitted = train_all([(m, k) for m in methods for k in range(len(folds))], params_of, folds, cases, out_dir,
                       p.selection_fraction, p.seed, p.workers, device, p.progress)
    return (fitted, *score(fitted, folds, cases, p, device, holdout))


def training_text(p, device=None) -> str:
    """How the methods were trained, in words, from the parameters (and the device)."""
    if p.workers > 1 and torch.device(device or "cpu").type == "cpu":
        threads = max(1, torch.get_num_threads() // p.workers)
        return (f"{p.workers} methods trained at once, each in a process of its own with {threads} "
                f"thread{'s' if threads > 1 else ''}; training times per epoch were measured that way.")
    return f"Methods trained one after another in this process ({torch.get_num_threads()} threads on the CPU)." \
        if torch.device(device or "cpu").type == "cpu" else "Methods trained one after another on the GPU."


#: the ``fold`` of a held-out case's row in :func:`scored_cases`: the mean over every fold's model
ALL_FOLDS = -1


def scored_cases(per_case: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, case) of :func:`evaluate`'s per-case table, what the summary,
    the ranking, the paired tests and the figures count. A validation case is predicted by
    one fold's model and keeps its row; a held-out case is predicted by every fold's model,
    and its rows become one (the mean of each score over the folds, ``fold``
    :data:`ALL_FOLDS`), so that with several folds it is counted once, not once per fold
    (its fold scores are not independent cases). With one fold nothing changes."""
    held = per_case["scored"] == "held out"
    if not held.any() or per_case.loc[held, "fold"].nunique() == 1:
        return per_case.reset_index(drop=True)
    numeric = [c for c in per_case.columns if c not in ("method", "fold", "case", "scored")
               and pd.api.types.is_numeric_dtype(per_case[c])]
    mean = per_case[held].groupby(["method", "case"], sort=False)[numeric].mean().reset_index()
    mean.insert(1, "fold", ALL_FOLDS)
    mean.insert(3, "scored", "held out")
    return pd.concat([per_case[~held], mean[per_case.columns]], ignore_index=True)


def summary_table(per_case: pd.DataFrame, fitted: dict[tuple[str, int], Fitted], memory: pd.DataFrame,
                  cost: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per method: Dice and HD95 of each region as mean [95 % CI], parameters and
    MACs (``cost``: :func:`sizes` plus ``inference kMACs / voxel``), training seconds per
    epoch (mean over folds), inference seconds per case and peak inference memory."""
    rows = {}
    for lab in dict.fromkeys(per_case["method"]):
        d = per_case[per_case.method == lab]
        row = {f"{met} {r}": format_ci(d[f"{met} {r}"], digits=3 if met == "Dice" else 1)
               for met in ("Dice", "HD95") for r in L.REGIONS}
        row.update({k: f"{v:.3f}" if k.startswith("params") else f"{v:.4g}" for k, v in cost[lab].items()})
        row["train s / epoch"] = f"{np.nanmean([f.epoch_seconds for (m, _), f in fitted.items() if m == lab]):.1f}"
        row["inference s / case"] = f"{d.seconds.mean():.2f}"
        mem = memory.loc[memory.method == lab, "peak MiB"]
        row["peak MiB (inference)"] = f"{mem.max():.0f}" if len(mem) else "n/a"
        rows[lab] = row
    return pd.DataFrame(rows).T


def empty_region_table(per_case: pd.DataFrame, regions: Sequence[str] = L.REGIONS) -> pd.DataFrame:
    """Per method and each region that some scored case's reference lacks: the cases that
    hold it and the method's mean Dice on them, the cases without it and the share of them
    it left free of that region (its mean Dice there: 1 for no voxel predicted, 0 for any,
    by the empty-region rule), and the mean over all, as the summary has it. One row per
    (method, region); empty when every reference holds every region."""
    rows = []
    for lab in dict.fromkeys(per_case["method"]):
        d = per_case[per_case.method == lab]
        for r in regions:
            free = (d[f"ref voxels {r}"] == 0).to_numpy()
            if not free.any():
                continue
            dice = d[f"Dice {r}"].to_numpy(float)
            rows.append({"method": lab, "region": r, "cases with it": int((~free).sum()),
                         "Dice on them": float(np.mean(dice[~free])) if (~free).any() else float("nan"),
                         "cases without it": int(free.sum()), "share left free (Dice there)": float(np.mean(dice[free])),
                         "Dice on all": float(np.mean(dice))})
    return pd.DataFrame(rows, columns=["method", "region", "cases with it", "Dice on them", "cases without it",
                                       "share left free (Dice there)", "Dice on all"])


def significance_text(pairs: pd.DataFrame, n_cases: int) -> str:
    """How many pairs differ after Holm's correction, which, and the smallest p-value a
    Wilcoxon test can reach with ``n_cases`` cases (when that is the limit)."""
    significant = pairs[pairs["p (Holm)"] < 0.05]
    text = (f"With {n_cases} scored cases per method (validation and held out), {len(significant)} of {len(pairs)} pairs differ significantly "
            f"after Holm's correction" + (": " + "; ".join(f"{a} vs {b}" for a, b in zip(significant.A, significant.B))
                                          if len(significant) else "."))
    if n_cases < 10:
        text += f" The smallest two-sided p-value a Wilcoxon test can reach with this many cases is {2 / 2 ** n_cases:.3g}."
    return text


def dice_boxplots(per_case: pd.DataFrame, methods: Sequence[str]):
    """Per-case Dice of each region, one box per method."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, r in zip(axes, L.REGIONS):
        ax.boxplot([per_case.loc[per_case.method == lab, f"Dice {r}"].to_numpy() for lab in methods], showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"Dice {r}")
    axes[0].set_ylabel("per-case Dice")
    fig.tight_layout()
    return fig


def dice_vs_cost(per_case: pd.DataFrame, cost: dict[str, dict[str, float]]):
    """Mean Dice against inference MACs per voxel (log scale), one point per method."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for lab, c in cost.items():
        x, y = c["inference kMACs / voxel"], per_case.loc[per_case.method == lab, "Dice mean"].mean()
        ax.scatter(x, y, s=60)
        ax.annotate(lab, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(xscale="log", xlabel="inference kMACs per voxel, flips and overlap included (log scale)",
           ylabel="mean Dice (ET, TC, WT)", title="accuracy against cost")
    fig.tight_layout()
    return fig


def one_case_figure(lc: LoadedCase, fitted: dict[str, Fitted], tta: int = 1):
    """One validation case segmented by every method (``{label: Fitted}``), its mean Dice in each title."""
    preds = {}
    for lab, f in fitted.items():
        pred = f.predict(lc, tta)
        d = np.mean([M.dice(L.region_mask(pred, r), L.region_mask(lc.label, r)) for r in L.REGIONS])
        preds[f"{lab}\nmean Dice {d:.2f}"] = pred
    z = tumour_slice(lc.label)
    return prediction_figure(lc.image, lc.label, preds, title=f"{lc.case_id}, axial slice {z}", z=z, show_image=False)
