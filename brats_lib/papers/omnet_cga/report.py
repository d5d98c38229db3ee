"""The tables and figures of the OM-Net + CGA notebook, made from the pipeline's results
(:mod:`~brats_lib.papers.omnet_cga.pipeline`, rows x folds by
:func:`brats_lib.pipeline.cross_validate`) beside the paper's numbers
(:mod:`~brats_lib.papers.omnet_cga.paper`). Read in the notebook's order:

* Section 1, method - :func:`settings_text`, :func:`scale_table` (the paper's setup beside this run's).
* Section 2, model sizes - :func:`n_params`, :func:`model_sizes`, :func:`model_size_note`
  (parameters at the paper's widths against the authors' counts).
* Section 3, data - :func:`task_regions` (the three tasks' sampling regions).
* Section 4, training - :func:`train_seconds`, :func:`histories` (read from the trained rows).
* Section 5, Table I - :func:`table1`, :func:`table1_note`, :func:`table1_per_region`.
* Section 6, figures - :func:`curriculum_figure`, :func:`channel_importance_figure` (Fig. 6),
  :func:`qualitative_figure`, :func:`real_case_figures` (Fig. 7), :func:`inference_time`,
  :func:`inference_time_figure`.

The trained rows are ``{(row label, fold): Trained}`` as :func:`~brats_lib.pipeline.cross_validate`
returns them (a row built from another row's networks has its own key). Figures are
returned (matplotlib is imported when one is drawn); the notebook saves them.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch.nn as nn
from tqdm.auto import tqdm

from brats_lib import data as D, figures as FG, labels as L, metrics as M, statistics as ST, tables as T
from brats_lib.complexity import complexity
from brats_lib.pipeline import Trained
from . import pipeline as OM
from .paper import (PAPER_DERIVED, PAPER_DILATION, PAPER_PARAMS, PAPER_PATCH, PAPER_SETUP, TRANSFER_THRESHOLDS,
                    paper_table1)
from .params import OMNetParams

#: the rows of the qualitative comparison (Fig. 7)
QUALITATIVE_ROWS = ("MC3", "OM-Net", "OM-Net + CGA", "OM-Net + CGAp")
#: the rows of the cascade vs one-pass inference time
TIMED_ROWS = ("MC1", "MC2", "MC3", "OM-Net", "OM-Net + CGA")
#: the detailed Table I's metrics per region: (metric, decimals, scale; 100 prints percent)
DETAIL_METRICS = (("Dice", 1, 100), ("PPV", 1, 100), ("Sensitivity", 1, 100), ("HD95", 1, 1))
#: the sampling region of each task (Section III-A), as :attr:`~.pipeline.TaskCase.regions` orders them
REGION_NAMES = ("task 1 centres (brain)", f"task 2 centres (tumour + {PAPER_DILATION} voxels)", "task 3 centres (core)")


# ------------------------------------------------------------------ Section 1: method
def settings_text(p: OMNetParams) -> str:
    """One sentence (Markdown): this run's post-processing constants, the paper's data-transfer
    thresholds (Ineq. 1-2) and the dilation of the coarse tumour."""
    return (f"Post-processing of this run: tau_VOL = min({p.tau_max:g}, {p.tau_fraction:g} V_max), K-means when "
            f"vol_e(n) < {p.et_max_component}; data-transfer thresholds {TRANSFER_THRESHOLDS[0]:g} and "
            f"{TRANSFER_THRESHOLDS[1]:g}; dilation of the coarse tumour {p.dilation} voxels (paper {PAPER_DILATION}).")


def scale_table(p: OMNetParams) -> pd.DataFrame:
    """The paper's setup (:data:`~.paper.PAPER_SETUP`) beside this run's, one row per setting."""
    shape = T.shape_text
    et_weight = p.tumour_weight if p.et_weight is None else p.et_weight
    this_run = {
        "patch": shape(p.patch_size),
        "kept centre per tile": shape(p.tile_centre),
        "feature maps": shape(p.features),
        "batch": f"{p.batch_size} per task",
        "OM-Net curriculum (1, 1+2, 1+2+3)": f"{shape(p.stage_epochs)} epochs of {p.steps_per_epoch} steps",
        "each MC network": f"{p.mc_epochs} epochs",
        "learning rate": f"{p.lr:g}, halved every {p.lr_step_epochs} epochs",
        "patches": f"{p.steps_per_epoch * p.batch_size} per task per epoch",
        "data": p.data_dir or f"{p.phantom_cases} phantoms {shape(p.phantom_shape)}, {p.folds} of {p.n_folds} folds",
        "task-1 patches centred on the tumour": f"{p.task1_tumour_fraction:g}",
        "tumour-class weight in the loss": f"{p.tumour_weight:g}",
        "ET weight in task 3's loss": f"{et_weight:g}",
    }
    return pd.DataFrame({"paper": list(PAPER_SETUP.values()), "this run": [this_run[k] for k in PAPER_SETUP]},
                        index=list(PAPER_SETUP))


# ------------------------------------------------------------------ Section 2: model sizes
def n_params(row: OM.Row, features: Sequence[int] | None = None) -> int:
    """Parameters of a Table I row (:func:`brats_lib.complexity.complexity`) at the paper's
    widths, or at ``features``: a cascade row counts its ``stages`` networks (the third has a
    2-class classifier), an OM-Net row its one network."""
    kw = {} if features is None else {"features": list(features)}
    if row.kind == "mc":
        return sum(complexity("omnet_mc1", tuple(PAPER_PATCH), classes=2 if t == 2 else 5, **kw)["params"]
                   for t in range(row.stages))
    return complexity(row.network, tuple(PAPER_PATCH), **kw)["params"]


def model_sizes(p: OMNetParams, rows: Sequence[OM.Row] = OM.TABLE1_ROWS) -> pd.DataFrame:
    """Per Table I row: parameters (millions) at the paper's widths, the authors' count
    (:data:`~.paper.PAPER_PARAMS`; a p row has its row's) and the ratio of the two, the
    MACs of one network's forward pass over a paper-size patch, and the parameters at this
    run's widths."""
    sizes = []
    for row in rows:
        n = n_params(row)
        paper_n = PAPER_PARAMS.get(row.label.rstrip("p") if row.post else row.label)
        macs = complexity("omnet_mc1" if row.kind == "mc" else row.network, tuple(PAPER_PATCH))["macs"]
        sizes.append({"row": row.label, "params (M)": n / 1e6, "params (M), paper": paper_n,
                      "ratio": n / 1e6 / paper_n if paper_n else np.nan,
                      "GMACs per patch (one network)": macs / 1e9,
                      "params (M), this run": n_params(row, p.features) / 1e6})
    return pd.DataFrame(sizes).set_index("row")


def model_size_note(sizes: pd.DataFrame) -> str:
    """Markdown under :func:`model_sizes`: the largest gap to the authors' counts, and
    whether OM-Net + CGA has fewer parameters than OM-Net (as the paper states)."""
    worst = float((sizes["ratio"].dropna() - 1).abs().max())
    below = sizes.loc["OM-Net + CGA", "params (M)"] < sizes.loc["OM-Net", "params (M)"]
    return (f"Largest gap to the authors' counts: {100 * worst:.2f} %. OM-Net + CGA is "
            f"{'smaller' if below else 'NOT smaller'} than OM-Net, as the paper states.")


# ------------------------------------------------------------------ Section 3: data
def task_regions(cases: Iterable[D.LoadedCase], dilation: int = PAPER_DILATION, progress: bool = True) -> pd.DataFrame:
    """Mean, smallest and largest number of voxels per case where each task's patches may be
    centred (:func:`~.pipeline.task_case`: the brain, the tumour dilated by ``dilation`` voxels, the core)."""
    names = (REGION_NAMES[0], f"task 2 centres (tumour + {dilation} voxels)", REGION_NAMES[2])
    counts = []
    for lc in tqdm(list(cases), desc="task regions", disable=not progress):
        tc = OM.task_case(lc, dilation)
        counts.append({"case": tc.case_id, **{name: int(r.sum()) for name, r in zip(names, tc.regions)}})
    return pd.DataFrame(counts).set_index("case").describe().loc[["mean", "min", "max"]]


# ------------------------------------------------------------------ Section 4: training
def train_seconds(trained: Mapping[tuple[str, int], Trained]) -> dict[str, float]:
    """Training wall time (s, one decimal) of every row trained on its own, as
    ``"<row>/fold<k>"``: rows made of another row's networks (MC1, MC2, the p rows) are left
    out, their networks' time is their source's."""
    return {f"{row}/fold{k}": round(t.train_seconds, 1) for (row, k), t in trained.items()
            if OM.ROWS[row].trained_as is None}


def histories(trained: Mapping[tuple[str, int], Trained], row: str) -> dict[int, pd.DataFrame]:
    """Per fold, the per-step task losses and transfer counts of ``row``'s training
    (:attr:`~.pipeline.MultiTaskStep.history`)."""
    return {k: t.state["history"] for (r, k), t in trained.items() if r == row}


# ------------------------------------------------------------------ Section 5: Table I
def table1(per_case: pd.DataFrame, sizes: pd.DataFrame, rows: Sequence[str] = tuple(OM.ROWS)) -> pd.DataFrame:
    """Table I: per row, parameters (millions, from :func:`model_sizes`) and mean Dice (%) of
    WT, TC, ET over every validation case, each beside the paper's (:func:`~.paper.paper_table1`)."""
    ours = pd.DataFrame({lab: {f"Dice {r}": 100 * per_case[per_case.row == lab][f"Dice {r}"].mean()
                               for r in ("WT", "TC", "ET")} for lab in rows}).T
    ours.insert(0, "Params (M)", sizes["params (M)"])
    return T.paper_vs_ours(ours, paper_table1(), ["Params (M)", "Dice WT", "Dice TC", "Dice ET"])


def table1_note(transfer_histories: Mapping[int, pd.DataFrame]) -> str:
    """Markdown under Table I: the paper's cells derived from the text
    (:data:`~.paper.PAPER_DERIVED`), and the patches OM-Netd's online transfer moved per fold
    (``transfer_histories``: fold -> its training history), or that none qualified."""
    moved = {k: OM.transfer_counts(h) for k, h in transfer_histories.items()}
    derived = "; ".join(f"{row} {col} = {v:g} ({how})" for (row, col), (v, how) in PAPER_DERIVED.items())
    if all(sum(m.values()) == 0 for m in moved.values()):
        transfer = "**OM-Netd trained exactly as OM-Net0 here: no patch qualified for the online transfer.**"
    else:
        transfer = "Online transfer in OM-Netd, patches moved per fold: " + "; ".join(
            f"fold {k}: {m['transferred to task 2']} to task 2, {m['transferred to task 3']} to task 3"
            for k, m in moved.items())
    return f"Paper cells derived from the text, not printed in it: {derived}.\n\n{transfer}"


def table1_per_region(per_case: pd.DataFrame, rows: Sequence[str] = tuple(OM.ROWS),
                      base: str = "OM-Net") -> pd.DataFrame:
    """Per row and region (WT, TC, ET): ``mean [95 % CI]`` of Dice, PPV, sensitivity (%) and
    HD95 (:func:`brats_lib.statistics.format_ci`), and the Wilcoxon p-value of the per-case
    Dice against ``base`` on the same (fold, case) pairs."""
    ref = per_case[per_case.row == base].set_index(["fold", "case"])
    detail = {}
    for lab in rows:
        d = per_case[per_case.row == lab].set_index(["fold", "case"])
        row = {}
        for r in ("WT", "TC", "ET"):
            for met, digits, scale in DETAIL_METRICS:
                name = f"{met} {r}" + (" (%)" if scale == 100 else "")
                row[name] = ST.format_ci(d[f"{met} {r}"], digits=digits, scale=scale)
            row[f"p Dice {r} vs {base}"] = ("" if lab == base else
                                            f"{ST.paired_test(d[f'Dice {r}'], ref[f'Dice {r}'].reindex(d.index)):.3g}")
        detail[lab] = row
    return pd.DataFrame(detail).T


# ------------------------------------------------------------------ Section 6: figures
def curriculum_figure(trained: Mapping[tuple[str, int], Trained], batch_size: int, fold: int = 0):
    """Per-step task losses (3-step mean) of OM-Net (curriculum; stage boundaries dashed)
    and OM-Net0 (all tasks from the first step) on ``fold``, and the patches OM-Net's
    online transfer added to tasks 2 and 3 per step (of ``batch_size`` per task)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
    for ax, lab in zip(axes[:2], ["OM-Net", "OM-Net0"]):
        h = trained[lab, fold].state["history"]
        for t in range(3):
            col = f"task {t + 1}"
            if col in h:
                ax.plot(h.index, h[col].rolling(3, min_periods=1).mean(), label=col, color=f"C{t}")
        for b in OM.stage_boundaries(h):
            ax.axvline(b, color="k", ls="--", lw=0.8)
        ax.set(title=lab, xlabel="step", ylabel="cross-entropy (3-step mean)")
        ax.legend(fontsize=8)
    h = trained["OM-Net", fold].state["history"]
    for col, c in (("transferred to task 2", "C1"), ("transferred to task 3", "C2")):
        if col in h:
            axes[2].plot(h.index, h[col], ".", label=col, color=c)
    axes[2].set(title="online data transfer (OM-Net)", xlabel="step", ylabel=f"patches (of {batch_size} per task)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig


def channel_importance_figure(net: nn.Module, case: D.LoadedCase, p: OMNetParams, device=None, k: int = 5):
    """Fig. 6: on the case's slice with the most tumour, the feature channels of an OM-Net +
    CGA network with the ``k`` largest and smallest m_t and m_n
    (:func:`~.pipeline.channel_importance_maps`), each row beside FLAIR (the first with the reference)."""
    import matplotlib.pyplot as plt

    z, f, m_t, m_n, x_in, lab_in = OM.channel_importance_maps(net, case, p, device=device)
    k = min(k, len(m_t) // 2)
    picks = [("largest m_t", np.argsort(m_t)[::-1][:k], m_t), ("smallest m_t", np.argsort(m_t)[:k], m_t),
             ("largest m_n", np.argsort(m_n)[::-1][:k], m_n), ("smallest m_n", np.argsort(m_n)[:k], m_n)]
    fig, axes = plt.subplots(4, k + 1, figsize=(2 * (k + 1), 8.4))
    for i, (title, idx, m) in enumerate(picks):
        FG.overlay(axes[i, 0], x_in[D.MODALITIES.index("flair"), ..., z], lab_in[..., z] if i == 0 else None,
                   "FLAIR + reference" if i == 0 else "FLAIR")
        for j, c in enumerate(idx):
            axes[i, j + 1].imshow(f[c].T, cmap="jet", origin="lower")
            axes[i, j + 1].set_title(f"{title}\nch {c}: {m[c]:.3f}", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig


def tc_dice(labels: np.ndarray, reference: np.ndarray) -> float:
    """Dice of the tumour core (NCR/NET + ET) of canonical ``labels`` against ``reference``."""
    return M.dice(L.region_mask(labels, "TC"), L.region_mask(reference, "TC"))


def qualitative_figure(trained: Mapping[tuple[str, int], Trained], case: D.LoadedCase, title: str,
                       p: OMNetParams, device=None, rows: Sequence[str] = QUALITATIVE_ROWS, fold: int = 0):
    """Fig. 7: the reference and each of ``rows``' prediction (fold ``fold``'s networks,
    :func:`~.pipeline.predict`) over FLAIR on the slice with the most tumour, each titled
    with its TC Dice (:func:`brats_lib.figures.prediction_figure`)."""
    preds = {}
    for lab in rows:
        labels = OM.predict(OM.ROWS[lab], trained[lab, fold].networks, case, p, device)
        preds[f"{lab}\nTC Dice {tc_dice(labels, case.label):.2f}"] = labels
    return FG.prediction_figure(case.image, case.label, preds, title, show_image=False)


def real_case_params(p: OMNetParams) -> OMNetParams:
    """``p`` for whole real scans: the tiles keep ``real_tile_centre`` (default ``tile_centre``)."""
    return dataclasses.replace(p, tile_centre=list(p.real_tile_centre or p.tile_centre))


def real_case_figures(trained: Mapping[tuple[str, int], Trained], cases: Sequence[D.LoadedCase], p: OMNetParams,
                      device=None) -> Iterator[tuple[str, object]]:
    """Real BraTS cases (loaded, at the scale the profile asks for:
    :meth:`brats_lib.app.session.Session.real_cases`) segmented by fold 0's rows
    (:func:`real_case_params`): yields (case id, :func:`qualitative_figure`)."""
    q = real_case_params(p)
    for lc in cases:
        title = (f"real case {lc.case_id} at {max(lc.spacing):.3g} mm (reference = fusion), tiles keep "
                 f"{T.shape_text(q.tile_centre)}")
        yield lc.case_id, qualitative_figure(trained, lc, title, q, device)


def inference_time(per_case: pd.DataFrame, rows: Sequence[str] = TIMED_ROWS) -> pd.DataFrame:
    """Mean and longest inference time per validation case (``seconds`` of the per-case
    table) of the cascade rows and the one-pass rows, in ``rows``' order."""
    timing = per_case[per_case.row.isin(rows)].groupby("row")["seconds"]
    return pd.DataFrame({"mean s / case": timing.mean(), "max s / case": timing.max()}).reindex(list(rows))


def inference_time_figure(timing: pd.DataFrame, device_type: str):
    """Bars of :func:`inference_time`'s mean seconds per case: the cascade rows grey, OM-Net
    blue, the CGA rows red."""
    import matplotlib.pyplot as plt

    colours = ["C7" if OM.ROWS[r].kind == "mc" else "C3" if "CGA" in r else "C0" for r in timing.index]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(timing.index, timing["mean s / case"], color=colours)
    ax.set(ylabel="seconds per case", title=f"inference on {device_type}")
    fig.tight_layout()
    return fig
