"""Jia et al., "HNF-Netv2 for Brain Tumor Segmentation using multi-modal MR Imaging"
(BraTS 2021): the experiment pipeline of the paper, read top to bottom beside Section 4.

* Section 3 - networks: :mod:`brats_lib.papers.hnfnetv2.networks` (``hnf_unet3d``, ``hnfnet``,
  ``hnfnet_intra``, ``hnfnetv2``).
* Section 4.1, pre-processing - each sequence clipped inside the brain to its
  [0.5 %, 99.5 %] intensity window, then z-scored (background stays 0).
* Section 4.1, training - random crops of the four concatenated sequences (128^3),
  flips / rotations within +-10 degrees / per-channel intensity shift and scale
  (:class:`~brats_lib.papers.hnfnetv2.augmentation.HNFNetAugmentation`), generalized Dice + BCE on the WT, TC,
  ET regions, Adam (0.9, 0.999), lr 1e-3, 5 linear warm-up epochs then poly decay
  (power 0.9), L2 weight decay 1e-5, batch 4, 250 epochs.
* Section 4.1, inference - a 176 x 224 x 155 centre crop, sliding 128^3 patches with
  stride 32 x 32 x 27, predictions of the 8 flip versions and of the overlapping
  patches averaged (uniform weights); ET replaced by NCR/NET when fewer than 200 ET
  voxels are predicted (:func:`~.postprocess.small_et_to_ncr`).
* Section 4.2 - Table 1 (five-fold cross-validation ablation), Tables 2-3 (the
  five fold models ensembled), and the paper's numbers (:data:`PAPER_TABLE1` ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from brats_lib import losses, models
from .augmentation import HNFNetAugmentation
from brats_lib.claims import Claim
from brats_lib.data import LoadedCase
from brats_lib.inference import predict_case, prepare_image, probabilities_to_labels, save_predictor, validation_fn
from brats_lib.sampling import PatchDataset
from brats_lib.training import FitResult, TrainConfig, fit, load_weights
from .postprocess import small_et_to_ncr
from brats_lib.pipeline import Pipeline, Trained, register

#: Section 4.1 pre-processing: intensity window inside the brain, in percent
CLIP_PERCENTILES = (0.5, 99.5)
#: Section 4.1: the ET volume under which ET becomes NCR/NET
PAPER_MIN_ET = 200
#: Section 4.1 inference geometry at the paper's size
PAPER_CROP = (176, 224, 155)
PAPER_PATCH = (128, 128, 128)
PAPER_STRIDE = (32, 32, 27)

#: Table 1 rows: (label as the paper prints it, registered network)
TABLE1_ROWS: list[tuple[str, str]] = [
    ("3D U-Net", "hnf_unet3d"),
    ("HNF-Net", "hnfnet"),
    ("HNF-Netv2 (intra-SDE)", "hnfnet_intra"),
    ("HNF-Netv2 (intra + inter-SDE)", "hnfnetv2"),
]
ROWS = dict(TABLE1_ROWS)

#: Table 1 of the paper (BraTS 2021 training set, five-fold cross-validation; Dice in %)
PAPER_TABLE1 = pd.DataFrame(
    [[15.80, 1240.27, 85.7795, 87.4699, 92.4132],
     [16.85, 436.59, 86.6906, 89.5270, 92.8332],
     [17.31, 436.75, 87.0310, 89.9685, 93.1362],
     [17.91, 449.79, 87.7336, 90.9558, 93.4373]],
    index=[r for r, _ in TABLE1_ROWS], columns=["Params (M)", "FLOPs (G)", "Dice ET", "Dice TC", "Dice WT"])

_SUMMARY_COLUMNS = ["Dice ET", "Dice TC", "Dice WT", "HD95 ET", "HD95 TC", "HD95 WT"]
#: Table 2 (BraTS 2021 validation set, the five fold models ensembled; Dice in %, HD95 in mm)
PAPER_TABLE2 = pd.DataFrame(
    [[84.8032, 87.9639, 92.5352, 14.1787, 5.8626, 3.4551],
     [90.1445, 94.0622, 94.4855, 1.4142, 1.7321, 2.2361]],
    index=["mean", "median"], columns=_SUMMARY_COLUMNS)
#: Table 3 (BraTS 2021 test set)
PAPER_TABLE3 = pd.DataFrame(
    [[87.8514, 87.2985, 92.4919, 8.9184, 16.2530, 4.4895],
     [93.6785, 95.9990, 95.6831, 1.0, 1.4142, 1.7321]],
    index=["mean", "median"], columns=_SUMMARY_COLUMNS)


def _paper_gain(better: str, worse: str, metric: str) -> str:
    """Table 1's Dice difference (better - worse, in %) of a per-case column; rows by network."""
    label = {n: lab for lab, n in TABLE1_ROWS}
    d = PAPER_TABLE1.loc[label[better], ["Dice ET", "Dice TC", "Dice WT"]] - \
        PAPER_TABLE1.loc[label[worse], ["Dice ET", "Dice TC", "Dice WT"]]
    return f"{(d.mean() if metric == 'Dice mean' else d[metric]):+.4f} Dice %"


#: Section 4.2's reading of Table 1: each step improves the Dice of ET, TC and WT (the text
#: gives every region's gain), and HNF-Netv2 is best; rows are the per-case "row" keys
CLAIMS: list[Claim] = [
    Claim(text, better, worse, metric, source="Sec. 4.2, Table 1",
          paper=_paper_gain(better, worse, metric))
    for text, better, worse in (("HNF-Net beats the 3D U-Net", "hnfnet", "hnf_unet3d"),
                                ("intra-SDE improves HNF-Net", "hnfnet_intra", "hnfnet"),
                                ("inter-SDE improves it further (HNF-Netv2)", "hnfnetv2", "hnfnet_intra"))
    for metric in ("Dice mean", "Dice ET", "Dice TC", "Dice WT")
] + [Claim("HNF-Netv2 achieves the best segmentation performance", "hnfnetv2", None, "Dice mean", kind="first",
           among=tuple(ROWS.values()), source="Sec. 4.2, Table 1", paper="the best row of Table 1 in ET, TC and WT")]


# ------------------------------------------------------------------ networks and loss
def model_kwargs(name: str, p=None, paper_size: bool = False) -> dict:
    """Constructor arguments of network ``name``: the paper's sizes (``paper_size``) or the
    profile's scaled ones (``p.unet_filters``, ``p.width``, ``p.blocks``, ``p.bases``)."""
    if name not in ROWS.values():
        raise KeyError(f"unknown HNF-Net row network {name!r}; expected one of {sorted(ROWS.values())}")
    if paper_size:
        return dict(in_channels=4, out_channels=3)
    if name == "hnf_unet3d":
        return dict(in_channels=4, out_channels=3, filters=list(p.unet_filters))
    return dict(in_channels=4, out_channels=3, width=p.width, blocks=p.blocks, bases=p.bases,
                iterations=p.em_iterations)


def build_model(name: str, p=None, paper_size: bool = False) -> nn.Module:
    return models.build(name, **model_kwargs(name, p, paper_size))


def loss_function() -> nn.Module:
    """Generalized Dice + binary cross-entropy on the three sigmoid regions (WT, TC, ET)."""
    return losses.region_loss("gdl_bce", batch_dice=True)


# ------------------------------------------------------------------ data
def network_input(lc: LoadedCase) -> tuple[np.ndarray, np.ndarray | None]:
    """(input (4, h, w, d), label cropped alike): crop to the brain, clip each sequence to
    its [0.5, 99.5] percentile window inside the brain, z-score inside the brain."""
    x, box = prepare_image(lc.image, "zscore", None, CLIP_PERCENTILES)
    return x, (lc.label[box.slices] if lc.label is not None else None)


def patch_dataset(cases: Sequence[LoadedCase], p, seed: int) -> PatchDataset:
    """Random ``p.patch_size`` crops (``p.fg_prob`` of them centred on tumour; the paper: 0)
    with the paper's augmentation, targets = WT, TC, ET masks."""
    aug = HNFNetAugmentation() if p.augment else None
    return PatchDataset([network_input(lc) for lc in cases], p.patch_size, p.steps_per_epoch * p.batch_size,
                        fg_prob=p.fg_prob, target="regions", transform=aug, seed=seed, passes=p.epoch_pass)


def overlap_from_stride(patch: Sequence[int], stride: Sequence[int]) -> list[float]:
    """MONAI's sliding-window ``overlap`` per axis that gives ``stride`` (1 - stride / patch)."""
    if any(s < 1 or s > n for s, n in zip(stride, patch)):
        raise ValueError(f"window stride {list(stride)} must be between 1 and the patch size {list(patch)}")
    return [1.0 - s / n for s, n in zip(stride, patch)]


def inference_settings(p) -> dict:
    """Keyword arguments of :func:`~brats_lib.inference.predict_case` for Section 4.1."""
    return dict(roi_size=list(p.patch_size), output="sigmoid", thresholds=(0.5, 0.5, 0.5),
                overlap=overlap_from_stride(p.patch_size, p.window_stride), mode="constant",
                normalisation="zscore", foreground=None, clip_percentiles=CLIP_PERCENTILES,
                centre_crop=None if p.inference_crop is None else list(p.inference_crop),
                sw_batch_size=p.sw_batch_size)


def predict(model, lc: LoadedCase, p, tta=None, post: bool = True, device=None):
    """(labels, probabilities (3, H, W, D)) of one raw case: centre crop, sliding window with
    the profile's stride, uniform averaging over windows and ``tta`` flips, thresholds 0.5,
    and (``post``) the ET-volume rule. ``model`` may be a list (the fold ensemble)."""
    rule = (lambda labels, probs: small_et_to_ncr(labels, probs, p.min_et)) if post else None
    return predict_case(model, lc.image, tta=tta, device=device, postprocess=rule,
                        amp=p.amp, **inference_settings(p))


def to_labels(probs: np.ndarray, p, post: bool = True) -> np.ndarray:
    """Region probabilities (WT, TC, ET) -> labels as :func:`predict` does: thresholds 0.5,
    then (``post``) the ET-volume rule."""
    labels = probabilities_to_labels(probs, "sigmoid", inference_settings(p)["thresholds"])
    return small_et_to_ncr(labels, probs, p.min_et) if post else labels


def validation(cases: Sequence[LoadedCase], p, device=None):
    """``val_fn`` for :func:`~brats_lib.training.fit` (training curves): mean Dice per region
    over whole validation cases, Section 4.1 inference without TTA and post-processing."""
    s = inference_settings(p)
    return validation_fn(cases, s["roi_size"], "sigmoid", s["thresholds"], s["overlap"], None, "zscore", None,
                         CLIP_PERCENTILES, device, amp=p.amp,
                         centre_crop=s["centre_crop"], mode="constant", sw_batch_size=s["sw_batch_size"])


# ------------------------------------------------------------------ training
def train_config(p) -> TrainConfig:
    """Section 4.1: Adam (0.9, 0.999), linear warm-up then poly (0.9) decay, L2 weight decay."""
    return TrainConfig(epochs=p.epochs, batch_size=p.batch_size, optimizer="adam", lr=p.lr, betas=(0.9, 0.999),
                       weight_decay=p.weight_decay, schedule="poly", poly_power=0.9, warmup_epochs=p.warmup_epochs,
                       schedule_per_epoch=True,
                       val_every=p.val_every, best_metric="dice_mean", keep_best=1, amp=p.amp,
                       num_workers=p.num_workers, seed=p.seed, progress=p.progress)


def train_fold(name: str, fold: int, train: Sequence[LoadedCase], val: Sequence[LoadedCase], p,
               out_dir: str | Path, device=None) -> FitResult:
    """Train network ``name`` on one fold; the model of the last epoch is the fold's model
    (the paper selects none)."""
    torch.manual_seed(p.seed + fold)
    model = build_model(name, p)
    val_fn = validation(val, p, device) if p.val_every > 0 else None
    return fit(model, loss_function(), patch_dataset(train, p, seed=p.seed + 1000 * fold), train_config(p),
               out_dir, val_fn=val_fn, device=device)


def load_final(res: FitResult, name: str, p) -> nn.Module:
    """The last-epoch weights of a fold (``last.pt``), in eval mode."""
    return load_weights(build_model(name, p), Path(res.out_dir) / "last.pt").eval()


def export_predictor(path: str | Path, nets: Sequence[nn.Module], name: str, p) -> Path:
    """Write the fold ensemble of ``name`` with the Section 4.1 inference settings as a
    predictor file for ``python -m brats_lib predict``."""
    s = inference_settings(p)
    return save_predictor(path, nets, name, model_kwargs(name, p), s["roi_size"], "sigmoid", s["thresholds"],
                          s["overlap"], p.tta, "zscore", None, "hnfnetv2", {"min_et": p.min_et}, mode="constant",
                          centre_crop=s["centre_crop"], clip_percentiles=CLIP_PERCENTILES, amp=p.amp)


# ------------------------------------------------------------------ tables
def summary_table(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean and median of per-case Dice (in %) and HD95 (mm) per region, as Tables 2-3."""
    cols = {c: per_case[c] * (100 if c.startswith("Dice") else 1) for c in _SUMMARY_COLUMNS}
    df = pd.DataFrame(cols)
    return pd.DataFrame({"mean": df.mean(), "median": df.median()}).T[_SUMMARY_COLUMNS]


# ------------------------------------------------------------------ looking inside the model
def feature_map_sizes(model: nn.Module, patch: Sequence[int], in_channels: int = 4) -> pd.DataFrame:
    """Run ``model`` (an :class:`~brats_lib.papers.hnfnetv2.networks.HNFNet`) on a zero (1, C, *patch)
    input on the meta device and list every stage's feature maps: stage, branch (scale
    r / 2^k), channels and spatial size, read from the model itself."""
    import copy

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


@torch.no_grad()
def ema_attention(model: nn.Module, image: np.ndarray, min_size: Sequence[int] = (32, 32, 32), device=None) -> np.ndarray:
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


# ------------------------------------------------------------------ the common interface
@register
class HNFNetv2Pipeline(Pipeline):
    """:class:`~brats_lib.pipeline.Pipeline` of HNF-Netv2: a row's network is its last epoch's;
    sliding window with the profile's stride, thresholds 0.5; the submitted (``final``)
    rule adds the ET volume rule (:func:`~.postprocess.small_et_to_ncr`)."""

    notebook = "hnfnetv2"
    rows = ROWS

    def train_fold(self, row, fold, train, val, p, out_dir, device=None) -> Trained:
        res = train_fold(ROWS[row], fold, train, val, p, out_dir, device)
        net = load_final(res, ROWS[row], p).to(device or "cpu")
        return Trained(row, fold, [net], [res.log], res.train_seconds + res.val_seconds, {"fit": res})

    def probabilities(self, trained, case, p, device=None) -> np.ndarray:
        net = trained.networks[0] if len(trained.networks) == 1 else trained.networks
        return predict(net, case, p, tta=1, post=False, device=device)[1]

    def to_labels(self, trained, probs, case, p, final=False) -> np.ndarray:
        return to_labels(probs, p, post=final)

    def network_inputs(self, trained, p):
        return [((4, *p.patch_size), int(np.prod(p.patch_size)))] * len(trained.networks)
