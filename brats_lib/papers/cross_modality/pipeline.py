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
* Each pre-training runs once per fold and is shared by the rows that start from it
  (:func:`pretrain_folds`, :func:`shared_pretraining`); :class:`CrossModalityPipeline` is
  the common interface (:func:`brats_lib.pipeline.cross_validate` runs every row).

The paper's numbers, titles and claims are in :mod:`~brats_lib.papers.cross_modality.paper`;
its tables and figures are made by :mod:`~brats_lib.papers.cross_modality.report`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from monai.inferers import sliding_window_inference
from scipy import ndimage
from torch.func import functional_call
from tqdm.auto import tqdm

from brats_lib import models
from brats_lib.data import MODALITIES, LoadedCase
from brats_lib.inference import predict_case, prepare_image
from brats_lib.io import load_checkpoint, save_checkpoint
from brats_lib.losses import label_dice_loss
from brats_lib.params import as_dict
from brats_lib.pipeline import Pipeline, Trained, register
from brats_lib.precision import autocast
from brats_lib.sampling import EpochSeeded, PatchDataset
from brats_lib.training import TrainConfig, fit
from .networks import CrossModalityUNet
from .paper import PAPER_LAMBDA
from .params import CrossModalityParams

#: Sec. 3.3 and Sec. 4.3: (pair A, pair B)
PAIRINGS = {"paper": (("t1", "t1ce"), ("t2", "flair")), "alternative": (("t1", "flair"), ("t2", "t1ce"))}


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


def tumour_patches(cases: Sequence[tuple[np.ndarray, np.ndarray]], p: CrossModalityParams, seed: int) -> PatchDataset:
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


def train_config(p: CrossModalityParams, epochs: int, lr: float, batch_size: int | None = None) -> TrainConfig:
    """Sec. 4.1: Adam, constant learning rate (no schedule is given)."""
    return TrainConfig(epochs=epochs, batch_size=batch_size or p.batch_size, optimizer="adam", lr=lr,
                       channels_last=p.channels_last,
                       schedule="constant", val_every=0, amp=p.amp, num_workers=p.num_workers, seed=p.seed,
                       progress=p.progress)


def pretrain(kind: str, cases: Sequence[tuple[np.ndarray, np.ndarray]], p: CrossModalityParams, out_dir: str | Path, seed: int,
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


# ------------------------------------------------------------------ one pre-training per fold, shared by its rows
#: the pre-trainings the rows of :data:`TABLE_ROWS` start from, (kind, pairing), in the order they run
PRETRAININGS: list[tuple[str, str]] = [("cmft", "paper"), ("cmft", "alternative"), ("self", "paper"),
                                       ("voc2d", "paper"), ("random", "paper")]


def pretrain_folder(rows_dir: str | Path, kind: str, pairing: str, fold_folder: str) -> Path:
    """Where a fold's pre-training is kept: ``<rows_dir>/pretrain/<kind>-<pairing>/<fold
    folder>``, beside the rows' own ``<rows_dir>/<row>/<fold folder>``."""
    return Path(rows_dir) / "pretrain" / f"{kind}-{pairing}" / fold_folder


def _fingerprint(kind: str, pairing: str, seed: int, case_ids: Sequence[str], p: CrossModalityParams) -> str:
    """What decides a pre-training's weights, as text: a kept one is reused only on a match."""
    return json.dumps({"kind": kind, "pairing": pairing, "seed": seed, "cases": list(case_ids),
                       "params": as_dict(p)}, sort_keys=True, default=str)


def _restore(saved: dict, p: CrossModalityParams) -> Pretrained:
    """A kept pre-training (:func:`shared_pretraining`) back as :class:`Pretrained`."""
    gens = []
    for key in ("g_a", "g_b"):
        g = models.build("cmft_generator", in_channels=2, out_channels=2, features=p.features)
        g.load_state_dict(saved[key])
        gens.append(g.eval())
    return Pretrained(saved["kind"], *gens, pd.DataFrame(saved["history"]), float(saved["seconds"]))


def shared_pretraining(kind: str, pairing: str, fold: int, train: Sequence[LoadedCase | tuple], p: CrossModalityParams,
                       folder: str | Path, device=None) -> tuple[Pretrained, bool]:
    """Phase 1 of one fold, run once and shared by every row that starts from it: the
    pre-training ``kind`` on the fold's training cases ``train`` (seed ``p.seed + 1000 *
    fold``). A finished one kept in ``folder`` for the same kind, pairing, seed, cases and
    parameters is loaded (``(pre, False)``); otherwise it runs, is kept there (loaded cases
    only: they have ids) and ``(pre, True)`` returned. ``"random"`` has nothing to keep."""
    seed, folder = p.seed + 1000 * fold, Path(folder)
    ids = [c.case_id for c in train if not isinstance(c, tuple)]
    key, path = _fingerprint(kind, pairing, seed, ids, p), folder / "pretrained.pt"
    keep = kind != "random" and len(ids) == len(train)
    if keep and path.exists():
        saved = load_checkpoint(path)
        if saved["fingerprint"] == key:
            return _restore(saved, p), False
    cases = [c if isinstance(c, tuple) else training_case(c) for c in train]
    pre = pretrain(kind, cases, p, folder, seed=seed, pairing=pairing, device=device)
    if keep:
        save_checkpoint(path, fingerprint=key, kind=kind, g_a=pre.g_a.state_dict(), g_b=pre.g_b.state_dict(),
                        history=pre.history.to_dict("list"), seconds=pre.seconds)
    return pre, True


def pretrain_folds(folds: Sequence[dict], cases: dict[str, LoadedCase], p: CrossModalityParams, rows_dir: str | Path, device=None,
                   progress: bool = True) -> dict[tuple[str, str, int], Pretrained]:
    """Phase 1 of the notebook: every pre-training of :data:`PRETRAININGS` once per fold
    (``folds[k]["train"]``, ids of ``cases``), kept under ``rows_dir`` where
    :meth:`CrossModalityPipeline.train_fold` of the rows that start from it finds it.
    Returns ``{(kind, pairing, fold): Pretrained}``."""
    out = {}
    jobs = [(kp, k) for kp in PRETRAININGS for k in range(len(folds))]
    for (kind, pairing), k in tqdm(jobs, desc="pre-trainings x folds", disable=not progress):
        train = [cases[c] for c in folds[k]["train"]]
        out[kind, pairing, k], _ = shared_pretraining(kind, pairing, k, train, p,
                                                      pretrain_folder(rows_dir, kind, pairing, f"fold{k}"), device)
    return out


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


def build(row: Row, p: CrossModalityParams) -> nn.Module:
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


def train_row(row: Row, pre: Pretrained, cases: Sequence[tuple[np.ndarray, np.ndarray]], p: CrossModalityParams, out_dir: str | Path,
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
def predict(nets: nn.Module | Sequence[nn.Module], lc: LoadedCase, p: CrossModalityParams, device=None,
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


def probabilities(nets: nn.Module | Sequence[nn.Module], lc: LoadedCase, p: CrossModalityParams, device=None) -> np.ndarray:
    """Softmax probabilities (4, H, W, D) of one raw case as :func:`predict` computes them,
    without test-time flips."""
    for n in nets if isinstance(nets, (list, tuple)) else [nets]:
        n.to(device or "cpu")
    _, probs = predict_case(nets, lc.image, p.patch_size, output="softmax", overlap=p.overlap, tta=1,
                            device=device, sw_batch_size=p.sw_batch_size, amp=p.amp)
    return probs


@torch.no_grad()
def _slide(fn, x: np.ndarray, p: CrossModalityParams, device=None) -> np.ndarray:
    dev = torch.device(device or "cpu")
    with autocast(dev.type, p.amp):
        out = sliding_window_inference(torch.from_numpy(x)[None], tuple(p.patch_size), p.sw_batch_size,
                                       lambda b: fn(b).float(), overlap=p.overlap, mode="gaussian",
                                       sw_device=dev, device=torch.device("cpu"))
    return out[0].float().numpy()


def translate(g: nn.Module, lc: LoadedCase, pair_in: Sequence[int], p: CrossModalityParams, device=None):
    """A generator over a whole case (sliding window). Returns (cropped 4-modality input,
    the generated pair (2, x, y, z))."""
    x, _ = network_input(lc)
    g = g.to(device or "cpu").eval()
    return x, _slide(lambda b: g(b[:, list(pair_in)]), x, p, device)


def branch_predictions(net: nn.Module, lc: LoadedCase, p: CrossModalityParams, device=None) -> dict[str, np.ndarray]:
    """S_F, S_A and S_B of a fusion network over a whole case: canonical labels (cropped
    to the brain) and the tumour masks M_A, M_B that guide the fusion."""
    x, box = network_input(lc)
    net = net.to(device or "cpu").eval()
    prob = _slide(lambda b: torch.cat([torch.softmax(o, 1) for o in net(b, branches=True)], 1), x, p, device)
    f, a, b = prob[:4], prob[4:8], prob[8:]
    return {"S_F": f.argmax(0), "S_A": a.argmax(0), "S_B": b.argmax(0), "M_A": 1 - a[0], "M_B": 1 - b[0],
            "image": x, "label": lc.label[box.slices]}


# ------------------------------------------------------------------ the common interface
def networks(trained: Trained) -> nn.Module | list[nn.Module]:
    """What :func:`predict` takes for a trained row: its network, or the list whose
    probabilities it averages (S_A + S_B)."""
    return trained.networks[0] if len(trained.networks) == 1 else list(trained.networks)


@register
class CrossModalityPipeline(Pipeline):
    """:class:`~brats_lib.pipeline.Pipeline` of cross-modality feature learning: CMFT (or the
    row's other pre-training) then CMFF on the fold's training cases; sliding window,
    softmax, argmax (the paper has no post-processing, so ``final`` changes nothing).
    S_A + S_B averages the two branch rows' networks (:meth:`sources`)."""

    notebook = "cross_modality"
    rows = ROWS
    training_text = "CMFT {cmft_epochs} + CMFF {cmff_epochs} x {steps_per_epoch} steps"

    def train_fold(self, row, fold, train, val, p: CrossModalityParams, out_dir, device=None) -> Trained:
        """Phase 1, the row's pre-training (shared by the fold's rows that start from it:
        :func:`shared_pretraining`, kept in :func:`pretrain_folder` of ``out_dir``'s
        ``<rows folder>``), then phase 2 (:func:`train_row`). ``train_seconds`` counts the
        pre-training only where this call ran it; ``state["cmff_seconds"]`` is phase 2's."""
        r, out_dir = ROWS[row], Path(out_dir)
        pre, ran = shared_pretraining(r.init, r.pairing, fold, train, p,
                                      pretrain_folder(out_dir.parent.parent, r.init, r.pairing, out_dir.name), device)
        cases = [c if isinstance(c, tuple) else training_case(c) for c in train]
        res = train_row(r, pre, cases, p, out_dir / "cmff", seed=p.seed + 1000 * fold + 1, device=device)
        return Trained(row, fold, [res.net], [res.log], (pre.seconds if ran else 0.0) + res.seconds,
                       {"pretrained": pre, "history": res.history, "cmff_seconds": res.seconds})

    def sources(self, row):
        return ROWS[row].trained_as or (row,)

    def combine(self, row, parts):
        return Trained(row, parts[0].fold, [t.networks[0] for t in parts], [log for t in parts for log in t.logs],
                       sum(t.train_seconds for t in parts))

    def probabilities(self, trained, case, p: CrossModalityParams, device=None) -> np.ndarray:
        return probabilities(networks(trained), case, p, device)

    def to_labels(self, trained, probs, case, p: CrossModalityParams, final=False) -> np.ndarray:
        return np.argmax(probs, axis=0).astype(np.uint8)

    def network_inputs(self, trained, p: CrossModalityParams):
        return [((4, *p.patch_size), int(np.prod(p.patch_size)))] * len(trained.networks)
