"""From the notebook's results to its tables and figures (Ma et al. 2021), in the order the
notebook shows them.

* :func:`heads_note`, :func:`scale_table` - Section 1: the heads and the run's scale
  beside the paper's setup (:data:`~.paper.PAPER_SETUP`).
* :func:`model_sizes` - Section 2: parameters and MACs of every row.
* :func:`summary`, :func:`paper_table` - Section 5: Tables 1, 3, 4 and 6 from the per-case
  scores (mean [95 % CI], parameters, Wilcoxon p against the table's proposed row).
* :func:`training_curves_figure` - Section 6: the training loss of every row.
* :func:`look_inside` / :func:`inside_the_model_figure` - the proposed model on one slice:
  attention-gate maps, SE channel weights, the four outputs.
* :func:`prediction_figure` - a case's reference beside the post-processed prediction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from brats_lib import figures as FG
from brats_lib import labels as L
from brats_lib.complexity import complexity
from brats_lib.data import LoadedCase
from brats_lib.pipeline import Trained, get
from brats_lib.sampling import center_crop_2d
from brats_lib.statistics import format_ci, paired_test

from .networks import HEADS
from .paper import PAPER_CROP, PAPER_SETUP, TABLES
from .params import AttentionR2UNetParams
from .pipeline import METRICS, OUTPUTS, RUNS, SCORED, AttentionR2UNetPipeline, network_input, reference_masks

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# ------------------------------------------------------------------ Section 1: method and scale
def heads_note(p: AttentionR2UNetParams) -> str:
    """One Markdown sentence: the decoder level of every output, the SE dropout and the
    post-processing threshold of this run."""
    return ("Heads (output: decoder level, 0 = full resolution): " + ", ".join(f"{r}: level {lv}" for r, lv in HEADS)
            + f". SE dropout {p.se_dropout:g}; post-processing keeps components of at least "
            f"{p.post_fraction:g} of the largest.")


def scale_table(p: AttentionR2UNetParams) -> pd.DataFrame:
    """The paper's setup (:data:`~.paper.PAPER_SETUP`) beside this run's: crop, width,
    epochs, batch, learning rate, SE dropout, data."""
    data = p.data_dir or f"{p.phantom_cases} phantoms {'x'.join(map(str, p.phantom_shape))}"
    ours = {"slice crop": " x ".join(map(str, p.crop)), "first-level kernels": str(p.base), "epochs": str(p.epochs),
            "batch": str(p.batch_size), "learning rate": f"{p.lr:g}", "SE dropout": f"{p.se_dropout:g}", "data": data}
    return pd.DataFrame({"paper": list(PAPER_SETUP.values()), "this run": [ours[k] for k in PAPER_SETUP]},
                        index=list(PAPER_SETUP))


# ------------------------------------------------------------------ Section 2: model sizes
def model_sizes(p: AttentionR2UNetParams) -> pd.DataFrame:
    """Per row of :data:`~.pipeline.RUNS`: its network and supervision, parameters (M) and
    GMACs of one 4 x 144 x 176 slice at the paper's size (32 first-level kernels), and
    parameters (M) at this run's crop and width."""
    sizes = []
    for name, run in RUNS.items():
        paper_c = complexity(run.model, tuple(PAPER_CROP), base=32)
        ours = complexity(run.model, tuple(p.crop), base=p.base)
        sizes.append({"row": name, "network": run.model, "supervision": run.supervision,
                      "params (M), paper size": paper_c["params"] / 1e6, "GMACs per slice": paper_c["macs"] / 1e9,
                      "params (M), this run": ours["params"] / 1e6})
    return pd.DataFrame(sizes).set_index("row")


# ------------------------------------------------------------------ Section 5: Tables 1, 3, 4, 6
def summary(per_case: pd.DataFrame, rows: Sequence[tuple[str, str]], base: str, params_m: Mapping[str, float],
            digits: int = 3) -> pd.DataFrame:
    """One table: per ``(label, row key)`` of ``rows``, the mean [95 % CI] of each metric for
    WT and the sub-regions the row has (HD95 with one decimal), its parameters (M), and the
    Wilcoxon p-value of the per-case WT Dice against the row ``base`` (empty on ``base``)."""
    ref = per_case[per_case.row == base].set_index("case")["Dice WT"]
    base_label = {key: label for label, key in rows}[base]
    out = {}
    for label, key in rows:
        d = per_case[per_case.row == key].set_index("case")
        row = {}
        for region in SCORED:
            for met in METRICS:
                col = f"{met} {region}"
                if d[col].notna().any():
                    row[col] = format_ci(d[col], digits=1 if met == "HD95" else digits)
        row["params (M)"] = f"{params_m[key]:.3f}"
        row[f"p vs {base_label}"] = "" if key == base else f"{paired_test(d['Dice WT'], ref.reindex(d.index)):.3g}"
        out[label] = row
    return pd.DataFrame(out).T.fillna("")


def paper_table(per_case: pd.DataFrame, table: str, params_m: Mapping[str, float]) -> pd.DataFrame:
    """Table ``table`` of the paper (a key of :data:`~.paper.TABLES`): :func:`summary` of its
    rows against its last row, the paper's proposed one."""
    rows = TABLES[table]
    return summary(per_case, rows, rows[-1][1], params_m)


# ------------------------------------------------------------------ Section 6: figures
def training_curves_figure(logs: Mapping[str, pd.DataFrame]) -> Figure:
    """The training loss (summed over outputs) per epoch of every row, on a log scale;
    ``logs``: row -> its ``log.csv`` table."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, (name, log) in enumerate(logs.items()):
        ax.plot(log["epoch"], log["train_loss"], marker=".", label=name, color=plt.cm.tab20(i))
    ax.set(xlabel="epoch", ylabel="training loss (sum over outputs)", yscale="log")
    ax.legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


@dataclass
class InsideView:
    """What the proposed network computes on one cropped axial slice (arrays are (X, Y))."""

    #: the normalised FLAIR slice the network sees
    flair: np.ndarray
    #: the reference's canonical labels on the slice
    reference: np.ndarray
    #: per encoder level, the spatial map of the APR module's attention gate (values in [0, 1])
    gate_maps: list[np.ndarray]
    #: per encoder level, the SE module's channel weights
    se_weights: list[np.ndarray]
    #: (4, X, Y) probabilities of the outputs, in :data:`~.pipeline.OUTPUTS` order (main WT, heads)
    outputs: np.ndarray


@torch.no_grad()
def look_inside(net: nn.Module, lc: LoadedCase, p: AttentionR2UNetParams, device: torch.device) -> InsideView:
    """Run ``net`` (an attention R2U-Net with heads, on ``device``) on the slice of ``lc``
    with the most tumour, centre-cropped to ``p.crop``, keeping every APR gate's map and
    every encoder SE module's weights (their ``keep`` flags are set for this pass only)."""
    x, _ = network_input(lc)
    z = FG.tumour_slice(lc.label)
    xs = torch.from_numpy(np.ascontiguousarray(center_crop_2d(x[..., z], p.crop)))[None].to(device)
    probes = list(net.apr_gates) + list(net.enc_se)
    for m in probes:
        m.keep = True
    try:
        outputs = torch.sigmoid(net.all_outputs(xs))[0].cpu().numpy()
    finally:
        for m in probes:
            m.keep = False
    return InsideView(flair=xs[0, L.MODALITIES.index("flair")].cpu().numpy(),
                      reference=center_crop_2d(lc.label[..., z], p.crop),
                      gate_maps=[g.last_map[0, 0].cpu().numpy() for g in net.apr_gates],
                      se_weights=[se.last_weights[0].cpu().numpy() for se in net.enc_se], outputs=outputs)


def inside_the_model_figure(view: InsideView) -> Figure:
    """Three rows: FLAIR with the reference and each APR gate's map; each encoder level's
    SE channel weights; the four outputs (main WT head, ET, NCR/NET, ED heads) with the
    reference's contour in white."""
    import matplotlib.pyplot as plt

    n_lv = len(view.gate_maps)
    cols = max(n_lv, 5)
    fig, axes = plt.subplots(3, cols, figsize=(2.6 * cols, 7.5))
    for a in axes.ravel():
        a.axis("off")
    FG.overlay(axes[0, 0], view.flair, view.reference, "FLAIR + reference")
    for i, gate in enumerate(view.gate_maps):
        ax = axes[0, i + 1 if i + 1 < cols else i]
        ax.imshow(gate.T, cmap="magma", origin="lower", vmin=0, vmax=1)
        ax.set_title(f"APR gate, level {i}", fontsize=9)
    for i, w in enumerate(view.se_weights):
        ax = axes[1, i]
        ax.axis("on")
        ax.bar(range(len(w)), w, color="C0")
        ax.set(ylim=(0, 1), title=f"SE weights, level {i}", xlabel="channel")
    ref_masks = reference_masks(view.reference)
    for j, name in enumerate(OUTPUTS):
        axes[2, j].imshow(view.outputs[j].T, cmap="viridis", origin="lower", vmin=0, vmax=1)
        axes[2, j].contour(ref_masks[name].T.astype(float), levels=[0.5], colors="w", linewidths=0.8)
        axes[2, j].set_title(f"{'main' if j == 0 else 'head'}: {name} (white: reference)", fontsize=9)
    fig.tight_layout()
    return fig


def prediction_figure(trained: Trained, lc: LoadedCase, p: AttentionR2UNetParams, device: torch.device,
                      title: str) -> Figure:
    """FLAIR, reference and the post-processed prediction of ``trained`` (the submitted
    rule, no flips) on the slice of ``lc`` with the most tumour; the title gives each scored
    region's Dice."""
    pipe = get(AttentionR2UNetPipeline.notebook)
    pred = pipe.predict(trained, lc, p, tta=1, final=True, device=device)
    scores = pipe.score(pred, lc)
    dice = ", ".join(f"{r} {scores['Dice ' + r]:.2f}" for r in SCORED)
    return FG.prediction_figure(lc.image, lc.label, {"prediction (MTDS, post-processed)": pred.labels},
                                title=f"{title}: Dice {dice}")
