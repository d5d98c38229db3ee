"""The tables and figures of the HNF-Netv2 notebook, made from the pipeline's results
(:mod:`~brats_lib.papers.hnfnetv2.pipeline`) beside the paper's numbers
(:mod:`~brats_lib.papers.hnfnetv2.paper`). Read in the notebook's order:

* Section 1, method - :func:`augmentation_table`, :func:`method_settings_text`, :func:`scale_table`.
* Section 2, model sizes - :func:`model_sizes`, :func:`model_size_note` (parameters and
  convolution MACs at the paper's size against Table 1).
* Section 3, architecture - :func:`feature_map_sizes`, :func:`plot_architecture` (Fig. 2/3
  read from the model).
* Section 6, Table 1 - :func:`table1`, :func:`table1_per_region`.
* Section 7, Tables 2-3 - :func:`summary_table`, :func:`table2_3`.
* Section 8, figures - :func:`training_curves_figure`, :func:`ema_attention`,
  :func:`top_bases`, :func:`ema_attention_figure`, :func:`prediction_panel`,
  :func:`dice_text`, :func:`real_case_figures`.

Figures are returned (matplotlib is imported when one is drawn); the notebook saves them.
"""
from __future__ import annotations

import copy
import time
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from brats_lib import data as D, figures as FG, labels as L, metrics as M, statistics as ST, tables as T
from brats_lib.complexity import complexity
from .augmentation import HNFNetAugmentation
from .paper import (LABELS, PAPER_CROP, PAPER_MIN_ET, PAPER_PATCH, PAPER_SETUP, PAPER_STRIDE, PAPER_TABLE1,
                    PAPER_TABLE2, PAPER_TABLE3, ROWS, SUMMARY_COLUMNS, TABLE1_ROWS)
from .params import HNFNetv2Params
from .pipeline import CLIP_PERCENTILES, model_kwargs, network_input, predict, real_case_params

#: the title of the ensemble's predictions in the prediction figures
ENSEMBLE_TITLE = "prediction (HNF-Netv2 ensemble)"


# ------------------------------------------------------------------ Section 1: method
def augmentation_table(aug: HNFNetAugmentation | None = None) -> pd.DataFrame:
    """The online augmentation of Section 4.1 (``aug``, default the paper's): one row per
    step with its probability and range."""
    aug = aug or HNFNetAugmentation()
    return pd.DataFrame([
        ("flip (per axis)", aug.flip_p, "x, y, z independently"),
        ("rotation", aug.rotate_p, f"U(-{aug.max_degrees:g}, {aug.max_degrees:g}) degrees per plane, independently"),
        ("intensity shift (per channel)", 1.0, f"+ U(-{aug.shift:g}, {aug.shift:g})"),
        ("intensity scale (per channel)", 1.0, f"x U({1 - aug.scale:g}, {1 + aug.scale:g})"),
    ], columns=["augmentation", "p", "range"])


def method_settings_text() -> str:
    """One sentence (Markdown) with the pre-processing window and the paper's inference
    geometry (centre crop, patch, stride) and ET rule."""
    return (f"Pre-processing window: {CLIP_PERCENTILES[0]:g}-{CLIP_PERCENTILES[1]:g} percentiles. "
            f"Paper inference: centre crop {' x '.join(map(str, PAPER_CROP))}, "
            f"patch {' x '.join(map(str, PAPER_PATCH))}, "
            f"stride {' x '.join(map(str, PAPER_STRIDE))}, ET rule under {PAPER_MIN_ET} voxels.")


def scale_table(p: HNFNetv2Params) -> pd.DataFrame:
    """The paper's setup (:data:`~.paper.PAPER_SETUP`) beside this run's, one row per setting."""
    def shape(v) -> str:
        return T.shape_text(v, sep="x")

    widths = ", ".join(str(p.width * 2 ** i) for i in range(4))
    data = p.data_dir or f"{p.phantom_cases} + {p.holdout_cases} held-out phantoms {shape(p.phantom_shape)}"
    this_run = {
        "patch / window": shape(p.patch_size),
        "window stride": shape(p.window_stride),
        "inference crop": shape(p.inference_crop),
        "HNF-Net width": f"c = {p.width} (branches {widths})",
        "residual blocks per branch": str(p.blocks),
        "EMA bases K": str(p.bases),
        "3D U-Net widths": " ".join(map(str, p.unet_filters)),
        "folds trained": f"{p.folds} of {p.n_folds}",
        "epochs x steps": f"{p.epochs} x {p.steps_per_epoch} x batch {p.batch_size}",
        "learning rate": f"{p.lr:g}",
        "TTA flips (ensemble)": f"{p.tta} versions (the original + {p.tta - 1} flips)",
        "data": data,
    }
    return pd.DataFrame({"paper": list(PAPER_SETUP.values()), "this run": [this_run[k] for k in PAPER_SETUP]},
                        index=list(PAPER_SETUP))


# ------------------------------------------------------------------ Section 2: model sizes
def model_sizes(p: HNFNetv2Params) -> pd.DataFrame:
    """Per Table 1 row: parameters and convolution MACs of one 4 x 128^3 forward pass at the
    paper's size (:func:`brats_lib.complexity.complexity`, meta device) against the paper's
    Params / FLOPs and their ratios, all MACs (with the EMA unit's matrix products), and the
    parameters at this run's size."""
    rows = []
    for label, name in TABLE1_ROWS:
        paper_c = complexity(name, PAPER_PATCH, **model_kwargs(name, paper_size=True))
        ours = complexity(name, tuple(p.patch_size), **model_kwargs(name, p))
        published = PAPER_TABLE1.loc[label]
        rows.append({"row": label, "network": name,
                     "params (M)": paper_c["params"] / 1e6, "params (M), paper": published["Params (M)"],
                     "params ratio": paper_c["params"] / 1e6 / published["Params (M)"],
                     "conv GMACs": paper_c["conv_macs"] / 1e9, "FLOPs (G), paper": published["FLOPs (G)"],
                     "conv MACs ratio": paper_c["conv_macs"] / 1e9 / published["FLOPs (G)"],
                     "all GMACs (with EM)": paper_c["macs"] / 1e9,
                     "params (M), this run": ours["params"] / 1e6})
    return pd.DataFrame(rows).set_index("row")


def model_size_note(sizes: pd.DataFrame) -> str:
    """Markdown under :func:`model_sizes`: the largest gaps to the paper, and HNF-Net's
    convolution MACs under the other reading of its decoder (two 3x3x3 conv blocks)."""
    worst_p = float((sizes["params ratio"] - 1).abs().max())
    worst_m = float((sizes["conv MACs ratio"] - 1).abs().max())
    two_dec = complexity("hnfnet", PAPER_PATCH, decoder_blocks=2)["conv_macs"] / 1e9
    return (f"Largest gap to the paper: parameters {100 * worst_p:.1f} %, convolution MACs {100 * worst_m:.1f} %. "
            f"Reading 'two blocks for decoding' as two 3x3x3 conv blocks would give HNF-Net {two_dec:.1f} GMACs, "
            f"{100 * (two_dec / PAPER_TABLE1.loc['HNF-Net', 'FLOPs (G)'] - 1):+.1f} % from the paper "
            "(see Deviations).")


# ------------------------------------------------------------------ Section 3: architecture
def feature_map_sizes(model: nn.Module, patch: Sequence[int], in_channels: int = 4) -> pd.DataFrame:
    """Run ``model`` (an :class:`~brats_lib.papers.hnfnetv2.networks.HNFNet`) on a zero (1, C, *patch)
    input on the meta device and list every stage's feature maps: stage, branch (scale
    r / 2^k), channels and spatial size, read from the model itself."""
    net = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(1, in_channels, *patch, device="meta")
    rows = []

    def add(stage, k, t):
        rows.append({"stage": stage, "scale": "r" if k == 0 else f"r/{2 ** k}", "level": k,
                     "channels": int(t.shape[1]), "size": "x".join(str(int(s)) for s in t.shape[2:])})

    with torch.no_grad():
        skip = net.encoder(x)
        add("encoder", 0, skip)
        xs = [net.down(skip)]
        for m, module in enumerate(net.pmf):
            xs = module(xs)
            for b, t in enumerate(xs):
                add(f"PMF{m + 1}", b + 1, t)
            if m < len(net.transitions):
                if net.inter_sde is not None and m == len(net.pmf) - 2:
                    xs = net.inter_sde(xs)
                    for b, t in enumerate(xs):
                        add("inter-SDE", b + 1, t)
                xs = xs + [net.transitions[m](xs[-1])]
        _, _, mixed = net.features(x)
        add("concat + EMA", 1, mixed)
        y = net.reduce(net.ema(mixed))
        add("1x1 conv", 1, y)
        add("decoder", 0, net.decoder(skip))
        add("output", 0, net.head(skip))
    return pd.DataFrame(rows)


def plot_architecture(sizes: pd.DataFrame, title: str = ""):
    """Draw :func:`feature_map_sizes` as HNF-Net's Fig. 2: one column per stage, one row per
    scale, each feature map a box whose height grows with its channels."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    stages = list(dict.fromkeys(sizes["stage"]))
    levels = sorted(sizes["level"].unique())
    cmax = sizes["channels"].max()
    fig, ax = plt.subplots(figsize=(1.5 * len(stages) + 1, 1.1 * len(levels) + 1))
    for _, r in sizes.iterrows():
        i, j = stages.index(r["stage"]), levels.index(r["level"])
        h = 0.25 + 0.6 * np.sqrt(r["channels"] / cmax)
        ax.add_patch(FancyBboxPatch((i - 0.35, -j - h / 2), 0.7, h, boxstyle="round,pad=0.02",
                                    fc=plt.cm.viridis(j / max(len(levels) - 1, 1)), alpha=0.6, ec="k"))
        ax.text(i, -j, f"{r['channels']}\n{r['size']}", ha="center", va="center", fontsize=7)
    ax.set(xlim=(-0.6, len(stages) - 0.4), ylim=(-len(levels) + 0.3, 0.7), xticks=range(len(stages)),
           yticks=[-j for j in range(len(levels))], title=title)
    ax.set_xticklabels(stages, fontsize=8, rotation=20)
    ax.set_yticklabels([sizes[sizes.level == lv]["scale"].iloc[0] for lv in levels])
    ax.set_frame_on(False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ Section 6: Table 1
def table1(per_case: pd.DataFrame, sizes: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as the paper prints it, the paper's value beside ours per column: parameters
    and convolution GMACs at the paper's size (:func:`model_sizes`), and the mean Dice (%)
    of each region over every validation case of every trained fold."""
    ours = pd.DataFrame({LABELS[n]: {f"Dice {r}": 100 * per_case[per_case.row == n][f"Dice {r}"].mean()
                                     for r in L.REGIONS} for n in ROWS.values()}).T
    ours.insert(0, "FLOPs (G)", sizes["conv GMACs"])
    ours.insert(0, "Params (M)", sizes["params (M)"])
    return T.paper_vs_ours(ours, PAPER_TABLE1, list(PAPER_TABLE1.columns))


def table1_per_region(per_case: pd.DataFrame, sizes: pd.DataFrame) -> pd.DataFrame:
    """Per row: mean [95 % bootstrap CI] of Dice (%) and HD95 (mm) per region across cases,
    the parameters at this run's size, and the two-sided Wilcoxon p-value of the per-case
    mean Dice against the row above (the paper's claims are successive improvements)."""
    names = list(ROWS.values())
    rows = {}
    for i, n in enumerate(names):
        d = per_case[per_case.row == n].set_index("case")
        row = {f"Dice {r} (%)": ST.format_ci(d[f"Dice {r}"], digits=1, scale=100) for r in L.REGIONS}
        row.update({f"HD95 {r}": ST.format_ci(d[f"HD95 {r}"], digits=1) for r in L.REGIONS})
        row["params (M), this run"] = f"{sizes.loc[LABELS[n], 'params (M), this run']:.3f}"
        if i:
            prev = per_case[per_case.row == names[i - 1]].set_index("case")["Dice mean"]
            row["p vs row above"] = f"{ST.paired_test(d['Dice mean'], prev.reindex(d.index)):.3g}"
        else:
            row["p vs row above"] = ""
        rows[LABELS[n]] = row
    return pd.DataFrame(rows).T


# ------------------------------------------------------------------ Section 7: Tables 2-3
def summary_table(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean and median of per-case Dice (in %) and HD95 (mm) per region, as Tables 2-3."""
    cols = {c: per_case[c] * (100 if c.startswith("Dice") else 1) for c in SUMMARY_COLUMNS}
    df = pd.DataFrame(cols)
    return pd.DataFrame({"mean": df.mean(), "median": df.median()}).T[SUMMARY_COLUMNS]


def table2_3(held: pd.DataFrame) -> pd.DataFrame:
    """Our ensemble on the held-out cases (:func:`summary_table` of
    :func:`~.pipeline.evaluate_ensemble`) above the paper's Table 2 (validation) and Table 3
    (test); rows ``"<source>: mean"`` / ``"<source>: median"``."""
    sources = (("ours (held-out)", summary_table(held)), ("paper, Table 2 (validation)", PAPER_TABLE2),
               ("paper, Table 3 (test)", PAPER_TABLE3))
    return pd.concat([t.rename(index=lambda i, src=src: f"{src}: {i}") for src, t in sources])


# ------------------------------------------------------------------ Section 8: figures
def training_curves_figure(logs: Mapping[str, pd.DataFrame], validation: bool = False):
    """Training loss per epoch of every row (``logs``: row label -> ``log.csv``) and, with
    ``validation``, the validation mean Dice (no TTA) where the log has it."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2 if validation else 1, figsize=(10 if validation else 5, 3.2), squeeze=False)
    for i, (label, log) in enumerate(logs.items()):
        ax[0, 0].plot(log["epoch"], log["train_loss"], marker=".", label=label, color=f"C{i}")
        if validation and "val_dice_mean" in log:
            v = log.dropna(subset=["val_dice_mean"])
            ax[0, 1].plot(v["epoch"], v["val_dice_mean"], marker="o", label=label, color=f"C{i}")
    ax[0, 0].set(xlabel="epoch", ylabel="training loss (GDL + BCE)")
    if validation:
        ax[0, 1].set(xlabel="epoch", ylabel="validation mean Dice (no TTA)")
    ax[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


@torch.no_grad()
def ema_attention(model: nn.Module, image: np.ndarray, min_size: Sequence[int] = (32, 32, 32),
                  device: torch.device | str | None = None) -> np.ndarray:
    """Responsibilities z of the EMA bases for one network input (4, X, Y, Z): (K, X/2, Y/2, Z/2)
    (sizes rounded up to even), summing to 1 over K at every voxel. The input is zero-padded
    (at the far end) to a multiple of the network's divisor and at least ``min_size`` (instance norm needs more
    than one voxel at r/16), and the map cropped back."""
    div = model.divisor
    size = [max(int(m), -(-s // div) * div) for s, m in zip(image.shape[1:], min_size)]
    x = np.pad(np.asarray(image, np.float32), [(0, 0)] + [(0, n - s) for n, s in zip(size, image.shape[1:])])
    ema = model.ema
    ema.keep_attention = True
    try:
        model.eval()
        dev = device or next(model.parameters()).device
        model(torch.from_numpy(np.ascontiguousarray(x))[None].to(dev))
        z = ema.last_attention[0]                        # (N, K)
    finally:
        ema.keep_attention = False
    z = z.T.reshape(z.shape[1], *[s // 2 for s in size]).cpu().numpy()
    keep = [-(-s // 2) for s in image.shape[1:]]
    return z[:, : keep[0], : keep[1], : keep[2]]


def top_bases(z: np.ndarray, mask: np.ndarray, k: int = 2) -> np.ndarray:
    """The ``k`` EMA bases with the largest responsibility mass inside ``mask`` (the whole
    map when the mask is empty), largest first; ``z`` is (K, X, Y, Z) as :func:`ema_attention`."""
    inside = z[:, mask].sum(axis=1) if mask.any() else z.reshape(z.shape[0], -1).sum(axis=1)
    return np.argsort(inside)[::-1][:k]


def ema_attention_figure(model: nn.Module, case: D.LoadedCase, min_size: Sequence[int]):
    """The EMA unit's responsibilities on one case at r/2, on its slice with the most tumour:
    FLAIR with the reference, the best base per voxel, and the maps of the two bases with
    the largest mass inside the tumour (:func:`top_bases`)."""
    import matplotlib.pyplot as plt

    x_in, lab_in = network_input(case)
    z = ema_attention(model, x_in, min_size)
    half = lab_in[::2, ::2, ::2] > 0
    zs = FG.tumour_slice(half)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    FG.overlay(axes[0], x_in[D.MODALITIES.index("flair"), ::2, ::2, zs], lab_in[::2, ::2, zs],
               "FLAIR + reference (r/2)")
    axes[1].imshow(z.argmax(0)[..., zs].T, cmap="tab20", origin="lower")
    axes[1].set_title(f"best base of {z.shape[0]} per voxel")
    for ax, k in zip(axes[2:], top_bases(z, half)):
        im = ax.imshow(z[k][..., zs].T, cmap="magma", origin="lower", vmin=0)
        ax.set_title(f"base {k}: responsibility")
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def dice_text(labels: np.ndarray, reference: np.ndarray) -> str:
    """Dice of each region of ``labels`` against ``reference``, as "ET 0.81, TC 0.77, WT 0.90"."""
    return ", ".join(f"{r} {M.dice(L.region_mask(labels, r), L.region_mask(reference, r)):.2f}" for r in L.REGIONS)


def prediction_panel(case: D.LoadedCase, labels: np.ndarray, title: str):
    """FLAIR, the reference and the ensemble's ``labels`` on the case's slice with the most
    tumour (:func:`brats_lib.figures.prediction_figure`)."""
    return FG.prediction_figure(case.image, case.label, {ENSEMBLE_TITLE: labels}, title)


def real_case_figures(ensemble: Sequence[nn.Module], cases: Sequence[D.LoadedCase], p: HNFNetv2Params,
                      device: torch.device | str | None = None) -> Iterator[tuple[str, object]]:
    """Real BraTS cases (loaded, at the scale the profile asks for:
    :meth:`brats_lib.app.session.Session.real_cases`) segmented by the fold ensemble
    (:func:`~.pipeline.real_case_params`: the paper's centre crop in mm, ``p.real_tta``
    flips): yields (case id, :func:`prediction_panel` titled with its Dice and seconds)."""
    for lc in cases:
        real_p = real_case_params(p, lc.spacing)
        t = time.time()
        labels, _ = predict(list(ensemble), lc, real_p, tta=p.real_tta, device=device)
        title = (f"real case {lc.case_id} at {max(lc.spacing):.3g} mm (reference = fusion): Dice "
                 f"{dice_text(labels, lc.label)}; {time.time() - t:.0f} s")
        yield lc.case_id, prediction_panel(lc, labels, title)
