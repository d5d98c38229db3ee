"""Zhou et al., "One-pass Multi-task Networks with Cross-task Guided Attention for Brain
Tumor Segmentation" (IEEE TIP 2020): the experiment pipeline, read beside Sections III-IV.

* Section III-A, the model cascade (MC) - three tasks, each with its own patches
  (:class:`TaskPatches`): (1) 5 classes, centres anywhere in the brain; (2) 5 classes,
  centres in the reference tumour dilated by 5 voxels; (3) ET vs rest, centres in the
  reference tumour core. At inference the networks run one after another
  (:func:`predict_cascade`): net 1's tumour probabilities (summed) give a coarse mask,
  net 2 relabels the mask dilated by 5 voxels, net 3 decides ET inside the core.
  Overlap-tile inference (:func:`overlap_tile`): 32 x 32 x 16 patches every 20 x 20 x 5
  voxels, only the central 20 x 20 x 5 predictions kept.
* Section III-B, OM-Net - the three tasks in one network (:mod:`brats_lib.papers.omnet_cga.networks`),
  each task's data concatenated along the batch and its features split back
  (:class:`MultiTaskStep`); curriculum (task 1, then 1 + 2, then 1 + 2 + 3, a stage ending after ``stage_epochs`` or earlier when
  its newest task's loss flattens, :func:`flattened`);
  online data transfer (Ineq. 1-2: a Data-1 patch joins task 2 when >= 0.4 of its voxels
  are tumour; a Data-1 / Data-2 patch joins task 3 when >= 0.5 are core). One pass at
  inference, fused as MC (:func:`predict_one_pass`).
* Section III-C, CGA - cross-task forward flow of Data-2 through task 1 and of Data-3
  through tasks 1-2 while training (guidance without gradient), CSCI and CompSeg in the
  network module; :func:`channel_importance_maps` recomputes m_t, m_n on a whole slice (Fig. 6).
* Section III-D, post-processing - :func:`~.postprocess.two_step`.
* Section IV-C - softmax cross-entropy, SGD momentum 0.99, lr 1e-3 halved every 4 epochs,
  weight decay 5e-4, batch 20 per task; MC networks 20 epochs, OM-Net 1 + 1 + 18.

The paper's numbers and claims are in :mod:`~brats_lib.papers.omnet_cga.paper`, the
notebook's tables and figures in :mod:`~brats_lib.papers.omnet_cga.report`, the CGA* fold
ensemble (Section V-C) in :mod:`~brats_lib.papers.omnet_cga.ensemble`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from brats_lib import labels as L
from brats_lib import models
from brats_lib import preprocess as P
from brats_lib.data import LoadedCase
from brats_lib.inference import prepare_image
from .networks import CORE5, ED5, ET5, NCR5, NORMAL5, TUMOUR5
from brats_lib.sampling import EpochSeeded, random_patch
from brats_lib.precision import autocast
from brats_lib.io import load_weights
from brats_lib.training import TrainConfig, fit
from .postprocess import two_step
from brats_lib.pipeline import Pipeline, Prediction, Trained, register
from .paper import PAPER_DILATION, TRANSFER_THRESHOLDS
from .params import OMNetParams


#: canonical label -> 5-class index (background and normal brain are told apart by the brain mask)
_TO_FIVE = {L.NCR: NCR5, L.ED: ED5, L.ET: ET5}
#: 5-class index -> canonical label
FIVE_TO_CANONICAL = np.array([L.BACKGROUND, L.NCR, L.ED, L.ET, L.BACKGROUND], np.uint8)


@dataclass(frozen=True)
class Row:
    """One row of Table I: how its model is built and trained and how it predicts."""
    label: str
    network: str                 # registered name ("omnet_mc1" for the cascade rows)
    kind: str = "omnet"          # "mc" (cascade of `stages` networks) or "omnet"
    stages: int = 3              # MC: networks in the cascade
    curriculum: bool = True
    transfer: bool = True
    post: bool = False           # Section III-D post-processing
    trained_as: str | None = None  # rows that reuse another row's models (the p rows, MC1/MC2)


#: Table I, in the paper's order
TABLE1_ROWS: list[Row] = [
    Row("MC1", "omnet_mc1", "mc", 1, trained_as="MC3"),
    Row("MC2", "omnet_mc1", "mc", 2, trained_as="MC3"),
    Row("MC3", "omnet_mc1", "mc", 3),
    Row("OM-Net0", "omnet", curriculum=False, transfer=False),
    Row("OM-Netd", "omnet", curriculum=False, transfer=True),
    Row("OM-Net", "omnet"),
    Row("OM-Net + SE", "omnet_se"),
    Row("OM-Net + CGA", "omnet_cga"),
    Row("OM-Net + CGA-", "omnet_cga_minus"),
    Row("OM-Net + CGAt", "omnet_cga_t"),
    Row("OM-Net + CGAn", "omnet_cga_n"),
    Row("OM-Netp", "omnet", post=True, trained_as="OM-Net"),
    Row("OM-Net + CGAp", "omnet_cga", post=True, trained_as="OM-Net + CGA"),
]
ROWS = {r.label: r for r in TABLE1_ROWS}

def transfer_counts(history: pd.DataFrame) -> dict[str, int]:
    """Patches moved by the online data transfer over a run (Ineq. 1-2), from
    :attr:`MultiTaskStep.history`: zero for both tasks means OM-Netd trained exactly as
    OM-Net0 (no patch qualified)."""
    return {k: int(history[k].fillna(0).sum()) if k in history else 0
            for k in ("transferred to task 2", "transferred to task 3")}


# ------------------------------------------------------------------ data
def five_class(label: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Canonical labels -> the 5-class target: 0 background, 1 NCR/NET, 2 ED, 3 ET, 4 normal brain."""
    out = np.where(brain, NORMAL5, 0).astype(np.uint8)
    for canonical, k in _TO_FIVE.items():
        out[label == canonical] = k
    return out


def to_canonical(five: np.ndarray) -> np.ndarray:
    return FIVE_TO_CANONICAL[five]


@dataclass
class TaskCase:
    """One case prepared for the three tasks: network input, 5-class label, sampling regions."""
    case_id: str
    image: np.ndarray             # (4, X, Y, Z) cropped to the brain, z-scored inside it
    five: np.ndarray              # (X, Y, Z) 5-class label
    regions: tuple[np.ndarray, np.ndarray, np.ndarray]  # brain, tumour dilated, core


def network_input(lc: LoadedCase) -> tuple[np.ndarray, P.BBox]:
    """Section IV-C pre-processing: crop to the brain, z-score each sequence inside it."""
    return prepare_image(lc.image, "zscore")


def task_case(lc: LoadedCase, dilation: int = PAPER_DILATION) -> TaskCase:
    x, box = network_input(lc)
    brain = P.brain_mask(x) if x.any() else np.ones(x.shape[1:], bool)
    label = lc.label[box.slices]
    wt = label > 0
    dilated = dilate(wt, dilation)
    core = np.isin(label, (L.NCR, L.ET))
    return TaskCase(lc.case_id, x, five_class(label, brain), (brain, dilated & brain, core))


def dilate(mask: np.ndarray, voxels: int) -> np.ndarray:
    """Voxels within ``voxels`` (Euclidean) of the mask."""
    if voxels <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= voxels


class TaskPatches(EpochSeeded):
    """Item ``i`` = one patch per task: ``(x1, y1, x2, y2, x3, y3)``, each y a 5-class label
    patch; patch t is centred on a random voxel of task t's region (brain / dilated
    tumour / core) of a random case that has one; with ``task1_tumour_fraction`` > 0 that
    fraction of task 1's patches is centred on the dilated tumour instead (a cpu-profile
    deviation). Deterministic in (seed, epoch, i)."""

    def __init__(self, cases: Sequence[TaskCase], patch: Sequence[int], samples_per_epoch: int, seed: int = 0,
                 task1_tumour_fraction: float = 0.0):
        if not cases:
            raise ValueError("TaskPatches needs at least one case")
        if not 0.0 <= task1_tumour_fraction <= 1.0:
            raise ValueError(f"task1_tumour_fraction must lie in [0, 1], got {task1_tumour_fraction}")
        self.cases, self.patch, self.n, self.seed, self.epoch = list(cases), tuple(patch), int(samples_per_epoch), int(seed), 0
        self.task1_tumour = float(task1_tumour_fraction)
        self.having = [[k for k, c in enumerate(self.cases) if c.regions[t].any()] or list(range(len(self.cases)))
                       for t in range(3)]

    def __getitem__(self, i: int):
        rng = self.rng(i)
        out = []
        for t in range(3):
            region = 1 if t == 0 and self.task1_tumour and rng.random() < self.task1_tumour else t
            c = self.cases[self.having[region][int(rng.integers(len(self.having[region])))]]
            x, y = random_patch(c.image, c.five, self.patch, rng, fg_prob=1.0, fg_mask=c.regions[region])
            out += [torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y.astype(np.int64))]
        return tuple(out)


def task_target(task: int, five: torch.Tensor) -> torch.Tensor:
    """Task 1-2: the 5-class label; task 3: ET (1) vs everything else (0)."""
    return (five == ET5).long() if task == 2 else five


def fraction(five: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """(B,) fraction of each patch's voxels in ``classes`` (the left sides of Ineq. 1-2)."""
    hit = torch.zeros_like(five, dtype=torch.bool)
    for c in classes:
        hit |= five == c
    return hit.flatten(1).float().mean(1)


# ------------------------------------------------------------------ one training step
class MultiTaskStep:
    """``step_fn`` for :func:`~brats_lib.training.fit`: Fig. 3 / Fig. 4 in one function.

    ``tasks``: the data tasks trained in this stage (0-based), each by the head of the same
    index (a cascade network, ``single_task``, has one head trained on its one task).
    ``transfer``: Ineq. 1-2 online data transfer. Per-task losses of every step are kept
    in :attr:`history` (for the curriculum figure).
    """

    def __init__(self, tasks: Sequence[int], transfer: bool = True, stage: int = 0, single_task: bool = False,
                 thresholds: Sequence[float] = TRANSFER_THRESHOLDS):
        self.tasks, self.transfer, self.stage, self.single = tuple(tasks), bool(transfer), int(stage), bool(single_task)
        self.thresholds = tuple(thresholds)
        self.history: list[dict] = []

    def __call__(self, model: nn.Module, batch, loss_fn: Callable) -> torch.Tensor:
        net = model.module if hasattr(model, "module") and not hasattr(model, "heads") else model
        xs, ys = list(batch[0::2]), list(batch[1::2])
        sizes = [xs[t].shape[0] for t in self.tasks]
        feats = net.features(torch.cat([xs[t] for t in self.tasks]))       # concatenate along the batch
        split = dict(zip(self.tasks, torch.split(feats, sizes)))          # ... and split the features back
        total, record = 0.0, {"stage": self.stage}
        for t in self.tasks:
            f, y = split[t], ys[t]
            if self.transfer and t == 1 and 0 in split:                   # Ineq. 1
                keep = fraction(ys[0], TUMOUR5) >= self.thresholds[0]
                f, y = torch.cat([f, split[0][keep]]), torch.cat([y, ys[0][keep]])
                record["transferred to task 2"] = int(keep.sum())
            if self.transfer and t == 2:                                  # Ineq. 2
                n = 0
                for s in (0, 1):
                    if s in split:
                        keep = fraction(ys[s], CORE5) >= self.thresholds[1]
                        f, y = torch.cat([f, split[s][keep]]), torch.cat([y, ys[s][keep]])
                        n += int(keep.sum())
                record["transferred to task 3"] = n
            head = 0 if self.single else t
            guidance = net.guidance(head, f) if getattr(net, "head", "") == "cga" and head > 0 else None
            logits = net.task_logits(head, f, guidance)
            loss = loss_fn(logits, task_target(t, y))                     # mean over the task's voxels
            record[f"task {t + 1}"] = float(loss.detach())
            total = total + loss
        self.history.append(record)
        return total


class TumourWeightedCE(nn.Module):
    """Softmax cross-entropy with the tumour classes of a 5-class task (NCR/NET, ED, ET)
    weighted by ``tumour_weight``, task 3's ET by ``et_weight`` (default ``tumour_weight``)
    and every other class by 1, normalised by the summed weights (weights 1 are the paper's
    SoftmaxWithLoss)."""

    def __init__(self, tumour_weight: float = 1.0, et_weight: float | None = None):
        super().__init__()
        et_weight = tumour_weight if et_weight is None else et_weight
        for name, v in (("tumour_weight", tumour_weight), ("et_weight", et_weight)):
            if v <= 0:
                raise ValueError(f"{name} must be positive, got {v}")
        w = float(tumour_weight)
        self.register_buffer("w5", torch.tensor([1.0 if k not in TUMOUR5 else w for k in range(5)]), persistent=False)
        self.register_buffer("w2", torch.tensor([1.0, float(et_weight)]), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = {5: self.w5, 2: self.w2}.get(logits.shape[1])
        if weight is None:
            raise ValueError(f"expected 5 or 2 classes, got logits of shape {tuple(logits.shape)}")
        return F.cross_entropy(logits, target, weight=weight.to(logits.device, logits.dtype))


def loss_function(tumour_weight: float = 1.0, et_weight: float | None = None) -> nn.Module:
    """SoftmaxWithLoss: softmax cross-entropy, normalised by the counted voxels; the tumour
    classes weighted by ``tumour_weight`` and task 3's ET by ``et_weight`` (paper 1; see
    :class:`TumourWeightedCE`)."""
    if tumour_weight == 1 and et_weight in (None, 1):
        return nn.CrossEntropyLoss()
    return TumourWeightedCE(tumour_weight, et_weight)


def train_config(p: OMNetParams, epochs: int) -> TrainConfig:
    """Section IV-C: SGD, momentum 0.99, weight decay 5e-4, lr halved every ``lr_step_epochs``
    (``p.optimizer`` may replace SGD by Adam for short CPU runs)."""
    return TrainConfig(epochs=epochs, batch_size=p.batch_size, optimizer=p.optimizer, lr=p.lr, momentum=0.99,
                       channels_last=p.channels_last,
                       weight_decay=p.weight_decay, schedule="step", step_epochs=p.lr_step_epochs, step_gamma=0.5,
                       val_every=0, amp=p.amp, num_workers=p.num_workers, seed=p.seed, progress=p.progress)


def build(network: str, p: OMNetParams, **kwargs) -> nn.Module:
    return models.build(network, features=list(p.features), **kwargs)


@dataclass
class RowResult:
    """The trained networks of one row on one fold, their logs and per-step task losses."""
    nets: list[nn.Module]
    logs: list[pd.DataFrame]
    history: pd.DataFrame
    seconds: float


def task_patches(cases: Sequence[TaskCase], p: OMNetParams, seed: int, task: int | None = None) -> TaskPatches:
    """An epoch's patches: ``steps_per_epoch`` batches for OM-Net and the cascade's first two
    networks; for the cascade's third network (task 3 alone) ``task3_fraction`` of that
    (Section IV-C: about 400k, 400k and 200k patches for the three tasks)."""
    steps = p.steps_per_epoch if task != 2 else max(1, int(round(p.steps_per_epoch * p.task3_fraction)))
    return TaskPatches(cases, p.patch_size, steps * p.batch_size, seed=seed,
                       task1_tumour_fraction=p.task1_tumour_fraction)


def caffe_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """``param_groups`` for :func:`~brats_lib.training.fit`: the prototxts' bias learning
    rate x2 and no weight decay on biases (:meth:`~brats_lib.papers.omnet_cga.networks.OMNet.optimizer_groups`)."""
    return model.optimizer_groups(cfg.lr, cfg.weight_decay)


def train_row(row: Row, cases: Sequence[TaskCase], p: OMNetParams, out_dir: str | Path, seed: int, device=None) -> RowResult:
    """Train the networks of a Table I row: three cascade networks (one task each, the
    paper's MC) or one OM-Net, with or without the curriculum (``p.stage_epochs``)."""
    out_dir, t0 = Path(out_dir), time.time()
    ds = task_patches(cases, p, seed)
    nets, logs, hist = [], [], []
    if row.kind == "mc":
        for t in range(row.stages):
            torch.manual_seed(seed + t)
            net = build(row.network, p, classes=2 if t == 2 else 5)
            step = MultiTaskStep([t], transfer=False, stage=t, single_task=True)
            res = fit(net, loss_function(p.tumour_weight, p.et_weight), task_patches(cases, p, seed, t), train_config(p, p.mc_epochs),
                      out_dir / f"net{t + 1}", device=device, step_fn=step, param_groups=caffe_groups)
            nets.append(net.eval())
            logs.append(res.log)
            hist += [{**h, "network": t + 1} for h in step.history]
    else:
        torch.manual_seed(seed)
        net = build(row.network, p)
        total = int(sum(p.stage_epochs))
        if not row.curriculum:
            step = MultiTaskStep([0, 1, 2], transfer=row.transfer, stage=2)
            res = fit(net, loss_function(p.tumour_weight, p.et_weight), ds, train_config(p, total), out_dir, device=device, step_fn=step,
                      param_groups=caffe_groups)
            hist += step.history
        else:                # Fig. 3: task 1, then 1 + 2, then 1 + 2 + 3, each stage resumed from the last
            done = 0
            for k in range(3):
                step = MultiTaskStep(list(range(k + 1)), transfer=row.transfer, stage=k)
                longest = total - done if k == 2 else int(p.stage_epochs[k])
                if longest <= 0:
                    continue
                res = fit(net, loss_function(p.tumour_weight, p.et_weight), ds, train_config(p, done + longest), out_dir,
                          device=device, step_fn=step, param_groups=caffe_groups,
                          stop=stage_plateau(step, k + 1, p.plateau) if k < 2 else None)
                done = int(res.log["epoch"].iloc[-1])
                hist += step.history
        nets.append(net.eval())
        logs.append(res.log)
    return RowResult(nets, logs, pd.DataFrame(hist), time.time() - t0)


def stage_plateau(step: MultiTaskStep, task: int, plateau: float) -> Callable[[list[dict]], bool]:
    """The stop hook of a curriculum stage (:func:`~brats_lib.training.fit`'s ``stop``):
    after every epoch, the newest task's mean loss over that epoch (from ``step.history``)
    is appended and :func:`flattened` decides whether the stage ends."""
    seen, epoch_losses = [len(step.history)], []

    def stop(rows: list[dict]) -> bool:
        epoch_losses.append(np.mean([h[f"task {task}"] for h in step.history[seen[0]:]]))
        seen[0] = len(step.history)
        return flattened(epoch_losses, plateau)

    return stop


def flattened(epoch_losses: Sequence[float], plateau: float) -> bool:
    """The stage's end test ("until the loss curve displays a flattening trend"): the newest
    task's mean loss over the last epoch fell by less than ``plateau`` (relative) from the
    epoch before. ``plateau`` 0 never ends a stage early."""
    if plateau <= 0 or len(epoch_losses) < 2:
        return False
    before, last = float(epoch_losses[-2]), float(epoch_losses[-1])
    return (before - last) / max(abs(before), 1e-12) < plateau


def load_trained(row: Row, p: OMNetParams, out_dir: str | Path) -> list[nn.Module]:
    """Rebuild a row's networks from their ``last.pt`` checkpoints."""
    out_dir = Path(out_dir)
    if row.kind == "mc":
        return [load_weights(build(row.network, p, classes=2 if t == 2 else 5), out_dir / f"net{t + 1}" / "last.pt").eval()
                for t in range(row.stages)]
    return [load_weights(build(row.network, p), out_dir / "last.pt").eval()]


# ------------------------------------------------------------------ inference
def tile_corners(shape: Sequence[int], centre: Sequence[int], mask: np.ndarray | None = None) -> list[tuple[int, ...]]:
    """Corners of the central regions that tile ``shape``; with ``mask``, only those whose
    central region holds a mask voxel."""
    grid = np.stack(np.meshgrid(*[np.arange(0, s, c) for s, c in zip(shape, centre)], indexing="ij"), -1).reshape(-1, len(shape))
    corners = [tuple(int(v) for v in g) for g in grid]
    if mask is not None:
        corners = [c for c in corners if mask[tuple(slice(a, a + n) for a, n in zip(c, centre))].any()]
    return corners


@torch.no_grad()
def overlap_tile(fn: Callable[[torch.Tensor], list[torch.Tensor]], image: np.ndarray, patch: Sequence[int],
                 centre: Sequence[int], mask: np.ndarray | None = None, batch_size: int = 8, device=None,
                 fill: Sequence[np.ndarray] | None = None, amp: bool = False) -> list[np.ndarray]:
    """Ronneberger's overlap-tile strategy (Section III-A): patches of size ``patch``
    every ``centre`` voxels, each keeping only its central ``centre`` block.

    ``fn(batch (B, C, *patch)) -> [output (B, K_j, *patch), ...]`` (probabilities or
    features); returns one (K_j, *image.shape[1:]) array per output. Only tiles whose
    centre holds a ``mask`` voxel run; the rest of each output is ``fill[j]`` (a (K_j,)
    vector; default 0). ``amp``: mixed precision (:mod:`brats_lib.precision`).
    """
    patch, centre = tuple(int(v) for v in patch), tuple(int(v) for v in centre)
    if any(c > p for c, p in zip(centre, patch)):
        raise ValueError(f"the kept centre {list(centre)} is larger than the patch {list(patch)}")
    shape = image.shape[1:]
    lo = [(p - c) // 2 for p, c in zip(patch, centre)]
    tiled = [-(-s // c) * c for s, c in zip(shape, centre)]
    pads = [(a, t - s + p - c - a) for a, s, t, p, c in zip(lo, shape, tiled, patch, centre)]
    x = np.pad(image, [(0, 0)] + pads)
    corners = tile_corners(shape, centre, mask)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    outs: list[np.ndarray] | None = None
    for k in range(0, len(corners), batch_size):
        chunk = corners[k:k + batch_size]
        batch = np.stack([x[(slice(None),) + tuple(slice(c, c + p) for c, p in zip(cor, patch))] for cor in chunk])
        with autocast(dev.type, amp):
            res = [r.float().cpu().numpy() for r in fn(torch.from_numpy(batch).to(dev))]
        if outs is None:
            outs = [np.zeros((r.shape[1], *tiled), np.float32) for r in res]
            for j, o in enumerate(outs):
                if fill is not None:
                    o[:] = np.asarray(fill[j], np.float32).reshape(-1, 1, 1, 1)
        for b, cor in enumerate(chunk):
            src = (slice(None),) + tuple(slice(a, a + c) for a, c in zip(lo, centre))
            dst = (slice(None),) + tuple(slice(a, a + c) for a, c in zip(cor, centre))
            for o, r in zip(outs, res):
                o[dst] = r[b][src]
    if outs is None:
        raise ValueError("overlap_tile: the mask selects no tile")
    return [o[(slice(None),) + tuple(slice(0, s) for s in shape)] for o in outs]


def _background(k: int) -> np.ndarray:
    v = np.zeros(k, np.float32)
    v[0] = 1.0
    return v


def _softmax_fn(net: nn.Module | Sequence[nn.Module]):
    """Tile function: every task's softmax, averaged over the networks of an ensemble."""
    nets = list(net) if isinstance(net, (list, tuple)) else [net]

    def fn(x):
        outs = [[torch.softmax(o, 1) for o in n(x)] for n in nets]
        return [sum(o[t] for o in outs) / len(nets) for t in range(len(outs[0]))]
    return fn


def fuse(p1: np.ndarray, p2: np.ndarray | None = None, p3: np.ndarray | None = None,
         dilation: int = PAPER_DILATION) -> np.ndarray:
    """Section III-A: the tasks' probabilities -> 5-class labels, coarse to fine.

    Task 1 alone: its argmax. Task 2: inside the coarse tumour (summed tumour probabilities
    of task 1 > 0.5) dilated by ``dilation`` voxels, task 2's argmax; outside, task 1's
    non-tumour classes. Task 3: inside the tumour core of the result, ET where task 3
    says ET, else NCR/NET.
    """
    five = p1.argmax(0).astype(np.uint8)
    if p2 is None:
        return five
    roi = dilate(p1[list(TUMOUR5)].sum(0) > 0.5, dilation)
    outside = np.where(p1[NORMAL5] >= p1[0], NORMAL5, 0).astype(np.uint8)
    five = np.where(roi, p2.argmax(0), outside).astype(np.uint8)
    if p3 is None:
        return five
    core = np.isin(five, CORE5)
    five[core] = np.where(p3[1][core] > 0.5, ET5, NCR5)
    return five


def _uncrop(five: np.ndarray, box) -> np.ndarray:
    return P.uncrop(to_canonical(five), box, fill=0).astype(np.uint8)


def predict_cascade(nets: Sequence[nn.Module], x: np.ndarray, p: OMNetParams, device=None):
    """MC inference (Fig. 1a): net 1 on the brain; net 2 on the coarse tumour dilated by
    ``p.dilation``; net 3 on the tumour core - three passes, each after the last. Returns
    5-class labels."""
    dilation = p.dilation
    brain = P.brain_mask(x)
    kw = dict(patch=p.patch_size, centre=p.tile_centre, batch_size=p.tile_batch, device=device, amp=p.amp)
    p1 = overlap_tile(_softmax_fn(nets[0]), x, mask=brain, fill=[_background(5)], **kw)[0]
    if len(nets) == 1:
        return fuse(p1)
    roi = dilate(p1[list(TUMOUR5)].sum(0) > 0.5, dilation)
    p2 = overlap_tile(_softmax_fn(nets[1]), x, mask=roi, fill=[_background(5)], **kw)[0] if roi.any() else p1
    if len(nets) == 2:
        return fuse(p1, p2, dilation=dilation)
    core = np.isin(fuse(p1, p2, dilation=dilation), CORE5)
    p3 = overlap_tile(_softmax_fn(nets[2]), x, mask=core, fill=[_background(2)], **kw)[0] if core.any() \
        else np.stack([np.ones_like(p1[0]), np.zeros_like(p1[0])])
    return fuse(p1, p2, p3, dilation)


def predict_one_pass(net: nn.Module | Sequence[nn.Module], x: np.ndarray, p: OMNetParams, device=None):
    """OM-Net inference (Fig. 1b): one pass over the brain gives all three tasks' outputs,
    fused as MC. A list of networks is an ensemble (probabilities averaged, as OM-Net +
    CGA*). Returns 5-class labels."""
    kw = dict(patch=p.patch_size, centre=p.tile_centre, batch_size=p.tile_batch, device=device, amp=p.amp)
    p1, p2, p3 = overlap_tile(_softmax_fn(net), x, mask=P.brain_mask(x),
                              fill=[_background(5), _background(5), _background(2)], **kw)
    return fuse(p1, p2, p3, p.dilation)


def predict(row: Row, nets: Sequence[nn.Module], lc: LoadedCase, p: OMNetParams, device=None) -> np.ndarray:
    """Canonical labels (full size) of one raw case by a Table I row, post-processed for the
    p rows. OM-Net rows with several networks predict as their ensemble."""
    x, box = network_input(lc)
    for n in nets:
        n.to(device or "cpu").eval()
    five = predict_cascade(nets[: row.stages], x, p, device) if row.kind == "mc" else predict_one_pass(list(nets), x, p, device)
    labels = _uncrop(five, box)
    if row.post:
        labels = two_step(labels, lc.image, p.tau_max, p.tau_fraction, p.et_max_component)
    return labels


def probabilities(nets: Sequence[nn.Module], lc: LoadedCase, p: OMNetParams, device=None) -> np.ndarray:
    """One-pass OM-Net rows: the three tasks' softmax (5 + 5 + 2 channels) over the whole
    raw case (background outside the brain box), stacked; :func:`labels_from_probabilities`
    fuses them. Whole-volume maps can be flipped and averaged (test-time flips)."""
    x, box = network_input(lc)
    for n in nets:
        n.to(device or "cpu").eval()
    kw = dict(patch=p.patch_size, centre=p.tile_centre, batch_size=p.tile_batch, device=device, amp=p.amp)
    fills = [_background(5), _background(5), _background(2)]
    maps = overlap_tile(_softmax_fn(list(nets)), x, mask=P.brain_mask(x), fill=fills, **kw)
    return np.stack([P.uncrop(m[c], box, fill=float(f[c])) for m, f in zip(maps, fills) for c in range(len(f))])


def labels_from_probabilities(row: Row, probs: np.ndarray, lc: LoadedCase, p: OMNetParams) -> np.ndarray:
    """:func:`probabilities` -> canonical labels: the tasks fused (Section III-A), then the
    post-processing of the p rows."""
    labels = to_canonical(fuse(probs[:5], probs[5:10], probs[10:12], p.dilation)).astype(np.uint8)
    if row.post:
        labels = two_step(labels, lc.image, p.tau_max, p.tau_fraction, p.et_max_component)
    return labels


# ------------------------------------------------------------------ Fig. 6
@torch.no_grad()
def channel_importance_maps(net: nn.Module, lc: LoadedCase, p: OMNetParams, z: int | None = None, device=None):
    """Fig. 6: the shared features F and task 1's probabilities stitched over the whole
    case (overlap-tile), then m_t and m_n (Eqs. 5-6) of one axial slice.

    Returns (slice index, F on the slice (K, X, Y), m_t (K,), m_n (K,), cropped input, cropped label)."""
    x, box = network_input(lc)
    net = net.to(device or "cpu").eval()

    def fn(b):
        f = net.features(b)
        return [f, torch.softmax(net.task_logits(0, f), 1)]

    feats, p1 = overlap_tile(fn, x, p.patch_size, p.tile_centre, P.brain_mask(x), p.tile_batch, device,
                             fill=[np.zeros(net.backbone.out_channels), _background(5)])
    label = lc.label[box.slices]
    if z is None:
        z = int(np.argmax((label > 0).sum((0, 1)))) if label.any() else x.shape[-1] // 2
    f = feats[..., z]
    pt = p1[list(TUMOUR5)].sum(0)[..., z]
    m_t = (f * pt).reshape(len(f), -1).sum(1)
    m_n = (f * (1 - pt)).reshape(len(f), -1).sum(1)
    return z, f, m_t / max(np.abs(m_t).sum(), 1e-6), m_n / max(np.abs(m_n).sum(), 1e-6), x, label


def stage_boundaries(history: pd.DataFrame) -> list[int]:
    """Step indices where a curriculum stage begins (after the first)."""
    st = history["stage"].to_numpy()
    return [int(i) for i in np.flatnonzero(np.diff(st)) + 1]


# ------------------------------------------------------------------ the common interface
@register
class OMNetPipeline(Pipeline):
    """:class:`~brats_lib.pipeline.Pipeline` of OM-Net + CGA: every Table I row. The cascade
    rows MC1 / MC2 are MC3's first networks, the p rows their row's networks with the
    post-processing (:meth:`sources`); a row's rule is its own (``final`` changes nothing:
    the post-processed rows are rows of their own). One-pass rows give probabilities (the
    three tasks' softmax, stacked) and take whole-volume flips; the cascade predicts labels."""

    notebook = "omnet_cga"
    training_text = "curriculum {stage_epochs} x {steps_per_epoch} steps"
    rows = ROWS

    def train_fold(self, row, fold, train, val, p: OMNetParams, out_dir, device=None) -> Trained:
        cases = [c if isinstance(c, TaskCase) else task_case(c, p.dilation) for c in train]
        res = train_row(ROWS[row], cases, p, out_dir, seed=p.seed + 1000 * fold, device=device)
        return Trained(row, fold, res.nets, res.logs, res.seconds, {"history": res.history})

    def sources(self, row):
        return (ROWS[row].trained_as,) if ROWS[row].trained_as else (row,)

    def combine(self, row, parts):
        (src,) = parts
        return Trained(row, src.fold, src.networks, src.logs, src.train_seconds, src.state)

    def probabilities(self, trained, case, p: OMNetParams, device=None) -> np.ndarray:
        if ROWS[trained.row].kind == "mc":
            raise ValueError(f"{trained.row} is a cascade: it predicts labels, not one set of probabilities")
        return probabilities(trained.networks, case, p, device)

    def to_labels(self, trained, probs, case, p: OMNetParams, final=False) -> np.ndarray:
        return labels_from_probabilities(ROWS[trained.row], probs, case, p)

    def predict(self, trained, case, p: OMNetParams, tta=1, final=False, device=None) -> Prediction:
        row = ROWS[trained.row]
        if row.kind != "mc":
            return super().predict(trained, case, p, tta, final, device)
        if tta not in (0, 1, None):
            raise ValueError(f"{row.label}: the cascade takes no test-time flips (asked for {tta})")
        return Prediction(predict(row, trained.networks, case, p, device))

    def network_inputs(self, trained, p: OMNetParams):
        row = ROWS[trained.row]
        nets = trained.networks[: row.stages] if row.kind == "mc" else trained.networks
        return [((4, *p.patch_size), int(np.prod(p.tile_centre)))] * len(nets)
