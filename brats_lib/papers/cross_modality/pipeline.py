"""Zhang et al., "Cross-Modality Deep Feature Learning for Brain Tumor Segmentation"
(Pattern Recognition 2021): the experiment pipeline, read beside Sections 3-4.

* Sec. 3.3 - modality pairs: A = (T1, T1c), B = (T2, FLAIR) (:data:`PAIRINGS`; the
  alternative (T1, FLAIR) / (T2, T1c) is the baseline of Sec. 4.3).
* Sec. 3.1 - cross-modality feature transition (CMFT), a CycleGAN on the pairs
  (:class:`Pretrainer` holding G_B^A: A -> B, G_A^B: B -> A, D_A, D_B;
  :class:`CycleGANStep`)::

      L_adv(G_B^A, D_B) = E_B[(D_B(B) - 1)^2] + E_A[D_B(G_B^A(A))^2]            (Eq. 2, D's side)
      L_adv(G_A^B, D_A) = E_A[(D_A(A) - 1)^2] + E_B[D_A(G_A^B(B))^2]            (Eq. 3)
      L_cyc = E_A[|G_A^B(G_B^A(A)) - A|_1] + E_B[|G_B^A(G_A^B(B)) - B|_1]      (Eq. 4)
      L = L_adv + L_adv + lambda L_cyc, lambda = 10                             (Eqs. 5-6)

  The generators minimise the least-squares form E[(D(G(x)) - 1)^2] (LSGAN, as CycleGAN
  [16] codes Eq. 5's min-max); discriminators and generators are updated from the same
  forward pass (the discriminators' weights frozen in the generators' loss, the fakes
  detached in the discriminators').
* Sec. 3.2 - cross-modality feature fusion (CMFF): S_A <- G_B^A and S_B <- G_A^B (all but
  the last layer, :func:`transfer`), the fusion branch random; Eq. 7 = Dice of S_F + S_A +
  S_B (Eq. 8, :class:`SegmentationStep`). Network: :mod:`brats_lib.papers.cross_modality.networks`.
* Sec. 4.2 ablations (:data:`TABLE_ROWS`): S_A, S_B, S_A + S_B (their probabilities
  averaged), Ours w/o MG, Ours w CA, and the pre-training alternatives Ours_random (none),
  Ours_self (:class:`ReconstructionStep`: each branch reconstructs its own pair), Ours_voc
  (a 2D U-Net trained on RGB segmentation data and inflated to 3D, :func:`inflate`; offline,
  :class:`ShapesSegmentation` stands in for PASCAL VOC).
* Sec. 4.1 - z-scored modalities, patches sampled within the tumour, Adam lr 1e-4, batch 1.
  Inference: sliding window over the brain (the paper gives no details; no TTA).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from scipy import ndimage
from torch.func import functional_call

from brats_lib import models
from brats_lib.claims import Claim, lower_is_better
from brats_lib.data import MODALITIES, LoadedCase
from brats_lib.inference import predict_case, prepare_image
from brats_lib.losses import label_dice_loss
from .networks import CrossModalityUNet
from brats_lib.sampling import EpochSeeded, PatchDataset
from brats_lib.precision import autocast
from brats_lib.training import TrainConfig, fit
from brats_lib.pipeline import Pipeline, Trained, register

#: Sec. 3.3 and Sec. 4.3: (pair A, pair B)
PAIRINGS = {"paper": (("t1", "t1ce"), ("t2", "flair")), "alternative": (("t1", "flair"), ("t2", "t1ce"))}
#: Sec. 4.1
PAPER_PATCH = (128, 128, 128)
PAPER_LAMBDA = 10.0
PAPER_LR = 1e-4
PAPER_BATCH = 1

COLUMNS = [f"{m} {r}" for m in ("Dice", "Sensitivity", "Hausdorff95") for r in ("ET", "WT", "TC", "Average")]


@dataclass(frozen=True)
class Row:
    """One row of Tables 2 / 4: the network, how it is initialised, which pairs it reads."""
    label: str
    model: str = "fusion"        # "fusion" (CMFF), "branch_a" (S_A), "branch_b" (S_B), "average" (S_A + S_B)
    attention: str = "mg"        # fusion branch: "mg", "ca" or "none"
    init: str = "cmft"           # "cmft", "self", "voc2d" or "random"
    pairing: str = "paper"
    trained_as: tuple[str, ...] = ()  # rows built from other rows' networks (S_A + S_B)


#: Tables 2 and 4, in the paper's order, then the alternative pairing of Sec. 4.3
TABLE_ROWS: list[Row] = [
    Row("S_A", "branch_a"),
    Row("S_B", "branch_b"),
    Row("S_A + S_B", "average", trained_as=("S_A", "S_B")),
    Row("Ours w/o MG", attention="none"),
    Row("Ours w CA", attention="ca"),
    Row("Ours_random", init="random"),
    Row("Ours_voc", init="voc2d"),
    Row("Ours_self", init="self"),
    Row("Ours"),
    Row("Ours (T1+FLAIR / T2+T1c)", pairing="alternative"),
]
ROWS = {r.label: r for r in TABLE_ROWS}


def _table(rows: dict[str, Sequence[float]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS)


#: Table 2 (BraTS 2017 validation set, 46 cases)
PAPER_TABLE2 = _table({
    "S_A": [.752, .799, .787, .779, .760, .787, .770, .772, 3.735, 11.640, 8.307, 7.894],
    "S_B": [.429, .886, .656, .657, .471, .875, .643, .663, 13.373, 6.072, 10.781, 10.075],
    "S_A + S_B": [.672, .864, .759, .765, .715, .834, .709, .753, 7.944, 7.032, 7.824, 7.600],
    "Ours w/o MG": [.762, .898, .808, .823, .781, .890, .809, .827, 3.144, 5.531, 7.388, 5.354],
    "Ours w CA": [.765, .896, .799, .820, .776, .884, .753, .804, 3.402, 4.981, 8.066, 5.483],
    "Ours_random": [.725, .870, .754, .783, .766, .867, .774, .802, 5.826, 6.664, 8.748, 7.079],
    "Ours_voc": [.725, .879, .778, .794, .768, .899, .766, .811, 5.202, 6.639, 8.642, 6.828],
    "Ours_self": [.751, .898, .779, .809, .785, .884, .768, .812, 3.161, 4.775, 7.238, 5.058],
    "Ours": [.757, .900, .828, .828, .756, .904, .792, .817, 3.170, 5.155, 6.999, 5.108],
})
#: Table 4 (BraTS 2018 validation set, 66 cases; the text's header is garbled, notebooks/papers.md: ET, WT, TC, Average)
PAPER_TABLE4 = _table({
    "S_A": [.786, .807, .812, .802, .862, .816, .826, .835, 4.350, 10.060, 9.670, 8.027],
    "S_B": [.444, .898, .704, .682, .468, .905, .708, .694, 11.164, 5.212, 9.895, 8.757],
    "S_A + S_B": [.721, .873, .797, .797, .770, .863, .782, .805, 4.255, 6.301, 7.323, 5.960],
    "Ours w/o MG": [.781, .900, .822, .834, .794, .916, .836, .849, 3.948, 4.449, 7.348, 5.248],
    "Ours w CA": [.788, .901, .833, .841, .836, .921, .829, .862, 3.788, 5.140, 6.265, 5.064],
    "Ours_random": [.755, .873, .771, .800, .772, .886, .811, .823, 5.340, 6.084, 9.082, 6.835],
    "Ours_voc": [.760, .896, .785, .814, .744, .911, .747, .800, 3.300, 4.700, 8.427, 5.476],
    "Ours_self": [.767, .898, .832, .833, .767, .886, .821, .825, 3.029, 5.272, 6.296, 4.865],
    "Ours": [.791, .903, .836, .843, .846, .919, .835, .867, 3.992, 4.998, 6.369, 5.120],
})
# Sec. 4.3: the alternative pairing on BraTS 2018, averages only
PAPER_TABLE4.loc["Ours (T1+FLAIR / T2+T1c)", ["Dice Average", "Sensitivity Average", "Hausdorff95 Average"]] = \
    [0.822, 0.844, 5.789]

#: what Sections 4.2-4.3 say of the rows of Tables 2 and 4 (the metric each sentence names)
CLAIMS: list[Claim] = [
    Claim("S_A segments ET better than S_B", "S_A", "S_B", "Dice ET", source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("S_B segments WT better than S_A", "S_B", "S_A", "Dice WT", source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("S_A + S_B beats S_B", "S_A + S_B", "S_B", "Dice Average", source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("S_A + S_B is worse than S_A", "S_A", "S_A + S_B", "Dice Average", source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("the fusion branch beats S_A + S_B (Ours w/o MG)", "Ours w/o MG", "S_A + S_B", "Dice Average",
          source="Sec. 4.2, Table 2"),
    Claim("ours beats S_A + S_B by 4.6 % Dice", "Ours", "S_A + S_B", "Dice Average", source="Sec. 4.3, Table 4",
          paper="+4.6 % Dice (BraTS 2018)"),
    Claim("mask guidance helps (Ours vs w/o MG)", "Ours", "Ours w/o MG", "Dice Average", source="Sec. 4.2, Table 2"),
    Claim("mask guidance beats conventional attention", "Ours", "Ours w CA", "Dice Average",
          source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("CMFT pre-training beats random initialisation", "Ours", "Ours_random", "Dice Average",
          source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("CMFT pre-training beats 2D RGB pre-training", "Ours", "Ours_voc", "Dice Average",
          source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("CMFT pre-training beats self-reconstruction", "Ours", "Ours_self", "Dice Average",
          source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("self-reconstruction beats random initialisation", "Ours_self", "Ours_random", "Dice Average",
          source="Sec. 4.2, Table 2"),
    Claim("the paper's pairing beats (T1+FLAIR / T2+T1c)", "Ours", "Ours (T1+FLAIR / T2+T1c)", "Dice Average",
          source="Sec. 4.3", paper="0.843 vs 0.822 Dice (BraTS 2018)"),
]


def holds_in(table: pd.DataFrame, claim: Claim) -> str:
    """Whether ``claim`` holds in a table of means (the paper's Table 2 or 4): yes / no /
    tie, n/a where the table lacks a row or cell."""
    a, b = (table.loc[r, claim.metric] if r in table.index else np.nan for r in (claim.better, claim.worse))
    if not (np.isfinite(a) and np.isfinite(b)):
        return "n/a"
    if abs(a - b) < 1e-9:
        return "tie"
    return "yes" if (a < b if lower_is_better(claim.metric) else a > b) else "no"


def pair_indices(pairing: str = "paper") -> tuple[tuple[int, int], tuple[int, int]]:
    """Channel indices of pairs A and B in the (t1, t1ce, t2, flair) input."""
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; expected one of {sorted(PAIRINGS)}")
    a, b = PAIRINGS[pairing]
    return tuple(MODALITIES.index(m) for m in a), tuple(MODALITIES.index(m) for m in b)


# ------------------------------------------------------------------ data
def network_input(lc: LoadedCase):
    """Sec. 4.1 pre-processing: crop to the brain, z-score each modality inside it."""
    return prepare_image(lc.image, "zscore")


def training_case(lc: LoadedCase) -> tuple[np.ndarray, np.ndarray]:
    x, box = network_input(lc)
    return x, lc.label[box.slices]


def tumour_patches(cases: Sequence[tuple[np.ndarray, np.ndarray]], p, seed: int) -> PatchDataset:
    """Patches of ``p.patch_size`` centred on a random tumour voxel (Sec. 4.1: "within the
    brain tumor area"), with their canonical labels."""
    return PatchDataset(cases, p.patch_size, p.steps_per_epoch * p.batch_size, fg_prob=1.0, target="labels",
                        seed=seed, passes=p.epoch_pass)


# ------------------------------------------------------------------ pre-training (CMFT and its alternatives)
class Pretrainer(nn.Module):
    """The networks of one pre-training: ``g_a`` reads pair A (CMFT: G_B^A, A -> B; self:
    A -> A), ``g_b`` reads pair B; with ``adversarial`` also D_A and D_B (Table 1)."""

    def __init__(self, features: Sequence[int], adversarial: bool = True, pair_channels: int = 2):
        super().__init__()
        self.g_a = models.build("cmft_generator", in_channels=pair_channels, out_channels=pair_channels,
                                features=features)
        self.g_b = models.build("cmft_generator", in_channels=pair_channels, out_channels=pair_channels,
                                features=features)
        self.d_a = models.build("cmft_discriminator", in_channels=pair_channels) if adversarial else None
        self.d_b = models.build("cmft_discriminator", in_channels=pair_channels) if adversarial else None


def _frozen(d: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """D(x) with D's weights treated as constants (gradient to x only)."""
    return functional_call(d, {k: v.detach() for k, v in d.named_parameters()}, (x,))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and not hasattr(model, "g_a") else model


class _Recorder:
    """Per-step loss parts, kept as tensors (no GPU sync per step) until :meth:`frame`."""

    def __init__(self):
        self.history: list[dict[str, torch.Tensor]] = []

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: float(v) for k, v in h.items()} for h in self.history])


class CycleGANStep(_Recorder):
    """``step_fn`` for :func:`~brats_lib.training.fit`: one CMFT step (Eqs. 1-6) on a batch
    of 4-modality patches split into the pairs."""

    def __init__(self, pair_a: Sequence[int], pair_b: Sequence[int], lam: float = PAPER_LAMBDA):
        super().__init__()
        self.pair_a, self.pair_b, self.lam = list(pair_a), list(pair_b), float(lam)

    def __call__(self, model: nn.Module, batch, loss_fn=None) -> torch.Tensor:
        net = _unwrap(model)
        a, b = batch[0][:, self.pair_a], batch[0][:, self.pair_b]
        fake_b, fake_a = net.g_a(a), net.g_b(b)                    # G_B^A(A), G_A^B(B)
        rec_a, rec_b = net.g_b(fake_b), net.g_a(fake_a)            # Eq. 1: back to A and B
        adv_g = (((_frozen(net.d_b, fake_b) - 1) ** 2).mean()      # generators: fool D_B and D_A
                 + ((_frozen(net.d_a, fake_a) - 1) ** 2).mean())
        cyc = (rec_a - a).abs().mean() + (rec_b - b).abs().mean()  # Eq. 4
        adv_d = (((net.d_b(b) - 1) ** 2).mean() + (net.d_b(fake_b.detach()) ** 2).mean()   # Eq. 2
                 + ((net.d_a(a) - 1) ** 2).mean() + (net.d_a(fake_a.detach()) ** 2).mean())  # Eq. 3
        self.history.append({"adversarial (G)": adv_g.detach(), "adversarial (D)": adv_d.detach(),
                             "cycle L1": cyc.detach()})
        return adv_g + self.lam * cyc + adv_d


class ReconstructionStep(_Recorder):
    """Ours_self: each generator reconstructs its own pair (L1), no adversary."""

    def __init__(self, pair_a: Sequence[int], pair_b: Sequence[int]):
        super().__init__()
        self.pair_a, self.pair_b = list(pair_a), list(pair_b)

    def __call__(self, model: nn.Module, batch, loss_fn=None) -> torch.Tensor:
        net = _unwrap(model)
        a, b = batch[0][:, self.pair_a], batch[0][:, self.pair_b]
        loss = (net.g_a(a) - a).abs().mean() + (net.g_b(b) - b).abs().mean()
        self.history.append({"reconstruction L1": loss.detach()})
        return loss


# ------------------------------------------------------------------ Ours_voc: 2D RGB pre-training, inflated
SHAPE_CLASSES = ("background", "ellipse", "rectangle", "triangle")


class ShapesSegmentation(EpochSeeded):
    """Offline stand-in for PASCAL VOC segmentation: RGB images (3, H, W) of 1-4 coloured,
    possibly overlapping ellipses, rectangles and triangles on a smooth, textured
    background, with per-pixel class labels (:data:`SHAPE_CLASSES`; a later shape hides an
    earlier one). Each channel is z-scored. Deterministic in (seed, epoch, i)."""

    def __init__(self, size: Sequence[int], samples_per_epoch: int, seed: int = 0):
        self.size, self.n, self.seed, self.epoch = tuple(int(s) for s in size), int(samples_per_epoch), int(seed), 0

    def __getitem__(self, i: int):
        image, label = shapes_image(self.size, self.rng(i))
        return torch.from_numpy(image), torch.from_numpy(label.astype(np.int64))


def shapes_image(size: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    g = rng.normal(size=3)
    image = (rng.uniform(0, 1, (3, 1, 1)) + 0.3 * g[:, None, None] * (xx - yy)[None]
             + 0.15 * ndimage.gaussian_filter(rng.normal(size=(3, h, w)), (0, 2, 2)))
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        k = int(rng.integers(1, len(SHAPE_CLASSES)))
        cy, cx = rng.uniform(0.15, 0.85, 2)
        ry, rx = rng.uniform(0.08, 0.3, 2)
        t = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / rx
        v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / ry
        if k == 1:
            inside = u ** 2 + v ** 2 <= 1
        elif k == 2:
            inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
        else:
            inside = (v >= -0.8) & (v <= 1 - 2 * np.abs(u) * 0.9)
        colour = rng.uniform(0, 1, (3, 1, 1)) + 0.05 * rng.normal(size=(3, h, w))
        image = np.where(inside[None], colour, image)
        label[inside] = k
    image = image + 0.05 * rng.normal(size=image.shape)
    image = (image - image.mean((1, 2), keepdims=True)) / (image.std((1, 2), keepdims=True) + 1e-6)
    return image.astype(np.float32), label


def inflate(net2d: CrossModalityUNet, net3d: CrossModalityUNet) -> CrossModalityUNet:
    """I3D inflation [34] of a 2D U-Net's weights into the 3D one, in place (but the last
    layer, which the branch replaces): a k x k conv kernel is repeated k times along the
    third axis and divided by k; a (k = stride) transposed-conv kernel is repeated without
    division (each output voxel sees one of its taps); a first layer with another number
    of input channels gets the sum of its RGB kernels spread evenly over the new channels.
    A volume constant along the third axis then gives the 2D network's response on each slice."""
    sd2, modules3 = net2d.state_dict(), dict(net3d.named_modules())
    out = {}
    for key, w3 in net3d.state_dict().items():
        if key.startswith("final_conv."):
            continue
        w = sd2[key]
        module = modules3[key.rsplit(".", 1)[0]]
        if w.ndim == 4 and w3.ndim == 5:
            k = w3.shape[-1]
            w = w.unsqueeze(-1).repeat(1, 1, 1, 1, k)
            if not isinstance(module, nn.ConvTranspose3d):
                w = w / k
            if w.shape[1] != w3.shape[1]:  # RGB -> a modality pair
                w = (w.sum(1, keepdim=True) / w3.shape[1]).repeat(1, w3.shape[1], 1, 1, 1)
        if w.shape != w3.shape:
            raise ValueError(f"cannot inflate {key}: 2D {tuple(sd2[key].shape)} -> 3D {tuple(w3.shape)}")
        out[key] = w
    net3d.load_state_dict(out, strict=False)
    return net3d


# ------------------------------------------------------------------ the pre-trainings
@dataclass
class Pretrained:
    """Weights to initialise S_A (``g_a``) and S_B (``g_b``) from, with the pre-training's log."""
    kind: str
    g_a: nn.Module | None
    g_b: nn.Module | None
    history: pd.DataFrame
    seconds: float
    extra: dict | None = None


def train_config(p, epochs: int, lr: float, batch_size: int | None = None) -> TrainConfig:
    """Sec. 4.1: Adam, constant learning rate (no schedule is given)."""
    return TrainConfig(epochs=epochs, batch_size=batch_size or p.batch_size, optimizer="adam", lr=lr,
                       schedule="constant", val_every=0, amp=p.amp, num_workers=p.num_workers, seed=p.seed,
                       progress=p.progress)


def pretrain(kind: str, cases: Sequence[tuple[np.ndarray, np.ndarray]], p, out_dir: str | Path, seed: int,
             pairing: str = "paper", device=None) -> Pretrained:
    """Run one pre-training: ``"cmft"`` (CycleGAN on the pairs), ``"self"`` (each generator
    reconstructs its own pair), ``"voc2d"`` (a 2D U-Net on :class:`ShapesSegmentation`,
    inflated into both branches) or ``"random"`` (nothing)."""
    t0, out_dir = time.time(), Path(out_dir)
    pa, pb = pair_indices(pairing)
    torch.manual_seed(seed)
    if kind == "random":
        return Pretrained(kind, None, None, pd.DataFrame(), 0.0)
    if kind == "cmft" and min(p.patch_size) < 32:
        raise ValueError(f"patch_size {list(p.patch_size)}: Table 1's discriminator needs at least 32 voxels per axis "
                         "(four stride-2 convs, then a 4^3 conv)")
    if kind in ("cmft", "self"):
        model = Pretrainer(p.features, adversarial=kind == "cmft")
        step = CycleGANStep(pa, pb, p.cycle_lambda) if kind == "cmft" else ReconstructionStep(pa, pb)
        res = fit(model, None, tumour_patches(cases, p, seed), train_config(p, p.cmft_epochs, p.cmft_lr), out_dir,
                  device=device, step_fn=step)
        model.cpu().eval()
        return Pretrained(kind, model.g_a, model.g_b, step.frame(), time.time() - t0, {"log": res.log, "model": model})
    if kind == "voc2d":
        net2d = CrossModalityUNet(3, len(SHAPE_CLASSES), p.features, spatial_dims=2)
        data = ShapesSegmentation(p.patch_size[:2], p.pretrain_2d_steps_per_epoch * p.pretrain_2d_batch, seed)
        res = fit(net2d, nn.CrossEntropyLoss(), data, train_config(p, p.pretrain_2d_epochs, p.cmft_lr,
                                                                   p.pretrain_2d_batch), out_dir, device=device)
        net2d.cpu().eval()
        g = inflate(net2d, models.build("cmft_generator", features=p.features))
        hist = res.log[["epoch", "train_loss"]].rename(columns={"train_loss": "cross-entropy (2D shapes)"})
        return Pretrained(kind, g, g, hist, time.time() - t0, {"net2d": net2d, "log": res.log})
    raise ValueError(f"unknown pre-training {kind!r}; expected cmft, self, voc2d or random")


def transfer(branch: CrossModalityUNet, source: nn.Module) -> CrossModalityUNet:
    """Sec. 4.1: copy a pre-trained generator into a branch, all layers but the last
    (1 kernel per modality there, 4 class kernels here)."""
    weights = {k: v for k, v in source.state_dict().items() if not k.startswith("final_conv.")}
    try:
        missing, unexpected = branch.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # a tensor of another shape
        raise ValueError(f"transfer: the generator does not match the branch: {e}") from None
    if unexpected or any(not k.startswith("final_conv.") for k in missing):
        raise ValueError(f"transfer: the generator does not match the branch (missing {missing}, unexpected {unexpected})")
    return branch


# ------------------------------------------------------------------ CMFF: the rows of Tables 2 and 4
class SegmentationStep(_Recorder):
    """``step_fn``: Eq. 7, the Dice loss (Eq. 8) summed over the network's outputs
    (``names``: S_F, S_A, S_B for the fusion network), each part recorded per step."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = list(names)

    def __call__(self, model: nn.Module, batch, loss_fn) -> torch.Tensor:
        outs = model(batch[0])
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        parts = [loss_fn(o, batch[1]) for o in outs]
        self.history.append({f"Dice loss {n}": l.detach() for n, l in zip(self.names, parts)})
        return sum(parts)


def dice_loss() -> nn.Module:
    """Eq. 8 on the 4-class softmax: 1 - Dice, averaged over the four output kernels
    (background included: the text's Y is "the desired brain tumor areas"; with the
    background term the small networks of the cpu profile learn several times faster)."""
    return label_dice_loss(include_background=True)


def build(row: Row, p) -> nn.Module:
    pa, pb = pair_indices(row.pairing)
    if row.model == "fusion":
        return models.build("cmff", pair_a=pa, pair_b=pb, features=p.features, attention=row.attention)
    if row.model in ("branch_a", "branch_b"):
        return models.build("cmff_branch", pair=pa if row.model == "branch_a" else pb, features=p.features)
    raise ValueError(f"row {row.label!r} is not trained (model {row.model!r})")


def initialise(net: nn.Module, row: Row, pre: Pretrained) -> nn.Module:
    if pre.g_a is None:
        return net
    if row.model == "fusion":
        transfer(net.s_a, pre.g_a)
        transfer(net.s_b, pre.g_b)
    else:
        transfer(net, pre.g_a if row.model == "branch_a" else pre.g_b)
    return net


@dataclass
class RowResult:
    net: nn.Module
    history: pd.DataFrame
    log: pd.DataFrame
    seconds: float


def train_row(row: Row, pre: Pretrained, cases: Sequence[tuple[np.ndarray, np.ndarray]], p, out_dir: str | Path,
              seed: int, device=None) -> RowResult:
    """CMFF phase of one row: build, initialise from ``pre``, train with Eq. 7."""
    t0 = time.time()
    torch.manual_seed(seed)
    net = initialise(build(row, p), row, pre)
    step = SegmentationStep(["S_F", "S_A", "S_B"] if row.model == "fusion" else [row.label])
    res = fit(net, dice_loss(), tumour_patches(cases, p, seed), train_config(p, p.cmff_epochs, p.cmff_lr),
              out_dir, device=device, step_fn=step)
    return RowResult(net.cpu().eval(), step.frame(), res.log, time.time() - t0)


# ------------------------------------------------------------------ inference
def predict(nets: nn.Module | Sequence[nn.Module], lc: LoadedCase, p, device=None,
            overlap: float | None = None) -> np.ndarray:
    """Canonical labels of one raw case: sliding window (``p.patch_size``, ``p.overlap``
    unless ``overlap`` is given) over the brain, softmax, argmax. A list of networks
    averages their probabilities (S_A + S_B)."""
    for n in nets if isinstance(nets, (list, tuple)) else [nets]:
        n.to(device or "cpu")
    labels, _ = predict_case(nets, lc.image, p.patch_size, output="softmax",
                             overlap=p.overlap if overlap is None else overlap, tta=p.tta,
                             device=device, sw_batch_size=p.sw_batch_size, amp=p.amp)
    return labels


def probabilities(nets: nn.Module | Sequence[nn.Module], lc: LoadedCase, p, device=None) -> np.ndarray:
    """Softmax probabilities (4, H, W, D) of one raw case as :func:`predict` computes them,
    without test-time flips."""
    for n in nets if isinstance(nets, (list, tuple)) else [nets]:
        n.to(device or "cpu")
    _, probs = predict_case(nets, lc.image, p.patch_size, output="softmax", overlap=p.overlap, tta=1,
                            device=device, sw_batch_size=p.sw_batch_size, amp=p.amp)
    return probs


def timed_predict(nets, lc: LoadedCase, p, device=None) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    labels = predict(nets, lc, p, device)
    return labels, time.perf_counter() - t


@torch.no_grad()
def _slide(fn, x: np.ndarray, p, device=None) -> np.ndarray:
    dev = torch.device(device or "cpu")
    with autocast(dev.type, p.amp):
        out = sliding_window_inference(torch.from_numpy(x)[None], tuple(p.patch_size), p.sw_batch_size,
                                       lambda b: fn(b).float(), overlap=p.overlap, mode="gaussian",
                                       sw_device=dev, device=torch.device("cpu"))
    return out[0].float().numpy()


def translate(g: nn.Module, lc: LoadedCase, pair_in: Sequence[int], p, device=None):
    """A generator over a whole case (sliding window). Returns (cropped 4-modality input,
    the generated pair (2, x, y, z))."""
    x, _ = network_input(lc)
    g = g.to(device or "cpu").eval()
    return x, _slide(lambda b: g(b[:, list(pair_in)]), x, p, device)


def branch_predictions(net: nn.Module, lc: LoadedCase, p, device=None) -> dict[str, np.ndarray]:
    """S_F, S_A and S_B of a fusion network over a whole case: canonical labels (cropped
    to the brain) and the tumour masks M_A, M_B that guide the fusion."""
    x, box = network_input(lc)
    net = net.to(device or "cpu").eval()
    prob = _slide(lambda b: torch.cat([torch.softmax(o, 1) for o in net(b, branches=True)], 1), x, p, device)
    f, a, b = prob[:4], prob[4:8], prob[8:]
    return {"S_F": f.argmax(0), "S_A": a.argmax(0), "S_B": b.argmax(0), "M_A": 1 - a[0], "M_B": 1 - b[0],
            "image": x, "label": lc.label[box.slices]}


# ------------------------------------------------------------------ the common interface
@register
class CrossModalityPipeline(Pipeline):
    """:class:`~brats_lib.pipeline.Pipeline` of cross-modality feature learning: CMFT (or the
    row's other pre-training) then CMFF on the fold's training cases; sliding window,
    softmax, argmax (the paper has no post-processing, so ``final`` changes nothing).
    S_A + S_B averages the two branch rows' networks (:meth:`sources`)."""

    notebook = "cross_modality"
    rows = ROWS

    def train_fold(self, row, fold, train, val, p, out_dir, device=None) -> Trained:
        r = ROWS[row]
        cases = [c if isinstance(c, tuple) else training_case(c) for c in train]
        out_dir = Path(out_dir)
        pre = pretrain(r.init, cases, p, out_dir / "pretrain", seed=p.seed + 1000 * fold, pairing=r.pairing,
                       device=device)
        res = train_row(r, pre, cases, p, out_dir / "cmff", seed=p.seed + 1000 * fold + 1, device=device)
        return Trained(row, fold, [res.net], [res.log], pre.seconds + res.seconds,
                       {"pretrained": pre, "history": res.history})

    def sources(self, row):
        return ROWS[row].trained_as or (row,)

    def combine(self, row, parts):
        return Trained(row, parts[0].fold, [t.networks[0] for t in parts], [log for t in parts for log in t.logs],
                       sum(t.train_seconds for t in parts))

    def probabilities(self, trained, case, p, device=None) -> np.ndarray:
        nets = trained.networks[0] if len(trained.networks) == 1 else trained.networks
        return probabilities(nets, case, p, device)

    def to_labels(self, trained, probs, case, p, final=False) -> np.ndarray:
        return np.argmax(probs, axis=0).astype(np.uint8)

    def network_inputs(self, trained, p):
        return [((4, *p.patch_size), int(np.prod(p.patch_size)))] * len(trained.networks)
