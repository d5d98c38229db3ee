"""One training loop for every notebook.

:func:`fit` (a :class:`Trainer` run whole) trains a model on a dataset of ``(input, target)`` items with the
optimiser and learning-rate schedule named in a :class:`TrainConfig`, validates
every ``val_every`` epochs with a caller-supplied function, and writes to
``out_dir``:

* ``log.csv`` - one row per epoch (loss, learning rate, time, data wait, validation metrics);
* ``last.pt`` - everything needed to resume exactly: model, optimiser, scheduler,
  AMP scaler, RNG states (torch, CUDA, numpy, python), epoch, step, log, best scores;
* ``best-epochNNNN.pt`` - weights of the ``keep_best`` best validated epochs.

Exact resume: sample ``i`` of epoch ``e`` depends only on ``(seed, e, i)`` (see
:mod:`brats_lib.sampling`), the batch order on ``(seed, e)``, and the RNG states are
restored, so a run interrupted after any completed epoch and resumed ends with the
same weights as an uninterrupted run (on the CPU, where kernels are deterministic).

Mixed precision (``amp``) is float16 on CUDA and bfloat16 on CPUs with bfloat16
instructions (:mod:`brats_lib.precision`); ``torch.compile`` is used only where CUDA is present. On a GPU the loop adds no
host synchronisation to a step: batches are copied on a side stream while the previous
one computes, Adam / AdamW / SGD run their fused CUDA kernels (which also take the AMP
gradient scaler's inf check on the device), and the progress bar shows the loss once
per epoch. ``channels_last`` stores weights and inputs as NDHWC (NHWC for a 2D network),
the layout cuDNN's fastest kernels want and oneDNN's often do; ``batch_transform`` augments each batch on the device (see
:class:`~brats_lib.augmentation.DeviceNnUNetAugmentation`). Launched by
``torchrun`` (``WORLD_SIZE`` > 1) the loop runs DDP (NCCL on GPUs, gloo on CPUs),
each rank taking every ``world_size``-th sample; rank 0 validates and writes.
Checkpoints are read back with ``torch.load(weights_only=True)`` only.
"""
from __future__ import annotations

import csv
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .io import atomic_path, load_checkpoint, save_checkpoint, unwrap as _unwrap
from .precision import autocast, guard_tiny_convolutions, needs_grad_scaler


@dataclass
class TrainConfig:
    """Training settings; notebooks fill it from their parameter files."""

    epochs: int = 10
    batch_size: int = 2
    optimizer: str = "adam"          # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.99           # sgd
    nesterov: bool = False           # sgd
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"       # constant | poly | cosine | step
    warmup_epochs: float = 0.0       # linear warm-up before the schedule
    poly_power: float = 0.9
    step_epochs: int = 30            # step decay: multiply by step_gamma every step_epochs
    step_gamma: float = 0.5
    min_lr: float = 0.0              # cosine floor
    #: the rate changes once per epoch (warm-up e+1 / warm-up epochs, poly (1 - e / epochs)^power),
    #: as papers that write their schedule in epochs; otherwise every step
    schedule_per_epoch: bool = False
    grad_clip: float | None = None
    val_every: int = 1
    best_metric: str = "dice_mean"   # key of the validation result; higher is better
    keep_best: int = 1
    amp: bool = True                 # float16 on CUDA, bfloat16 on CPUs that have it (brats_lib.precision)
    compile: bool = False            # only with CUDA
    channels_last: bool = False      # NDHWC (3D networks) / NHWC (2D) weights and inputs
    fused: bool = True               # fused optimiser kernels, only with CUDA
    num_workers: int = 0
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in ("constant", "poly", "cosine", "step"):
            raise ValueError(f"schedule must be constant, poly, cosine or step, got {self.schedule!r}")


def _to_float(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_float(v) for k, v in x.items()}
    return x


def in_float32(loss_fn: Callable, device_type: str) -> Callable:
    """``loss_fn`` computed in float32 on float32 copies of the network's outputs, outside
    autocast: its sums over whole patches (Dice numerators and denominators) would lose
    most of their digits in bfloat16 / float16."""
    def loss(output, target, *args, **kwargs):
        with torch.autocast(device_type=device_type, enabled=False):
            return loss_fn(_to_float(output), _to_float(target), *args, **kwargs)
    return loss


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ optimiser and schedule
def make_optimizer(params, cfg: TrainConfig, device: str | torch.device = "cpu") -> torch.optim.Optimizer:
    """The optimiser of ``cfg``; with ``cfg.fused`` on a CUDA device, its fused kernel
    (one launch for all parameters, no host synchronisation under AMP)."""
    extra = {"fused": True} if cfg.fused and torch.device(device).type == "cuda" else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **extra)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **extra)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, **extra)


#: memory format of the channels-last layout, by tensor rank (a 3D / 2D network's weights and inputs)
CHANNELS_LAST = {5: torch.channels_last_3d, 4: torch.channels_last}


def layout_rank(model: nn.Module) -> int | None:
    """5 for a network with 3D convolutions, 4 for one with 2D convolutions only, else None:
    the rank of the tensors ``channels_last`` reorders."""
    ranks = {w.dim() for w in model.parameters()}
    return 5 if 5 in ranks else 4 if 4 in ranks else None


def to_channels_last(x, rank: int = 5):
    """Tensors of ``rank`` dimensions (5: NCDHW -> NDHWC, 4: NCHW -> NHWC), also inside
    lists, tuples and dicts, in the channels-last memory format; others as they are."""
    if isinstance(x, torch.Tensor):
        return x.contiguous(memory_format=CHANNELS_LAST[rank]) if x.ndim == rank else x
    if isinstance(x, (list, tuple)):
        return type(x)(to_channels_last(v, rank) for v in x)
    if isinstance(x, dict):
        return {k: to_channels_last(v, rank) for k, v in x.items()}
    return x


class LRFactor:
    """Learning-rate multiplier at optimiser step ``s`` (a picklable callable).

    Linear warm-up over ``warmup_epochs`` then: ``constant``; ``poly``
    (1 - t)^power; ``cosine`` annealing to ``min_lr``; ``step`` decay by ``step_gamma``
    every ``step_epochs`` epochs. ``t`` runs from 0 to 1 over the steps after warm-up.

    With ``schedule_per_epoch`` the factor is constant within an epoch ``e`` (0-based):
    warm-up (e + 1) / warmup_epochs, then poly (1 - e / epochs)^power (HNF-Netv2's
    "(1 - current epoch / max epoch)^0.9"), cosine and step likewise by epoch.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        self.kind, self.spe = cfg.schedule, max(int(steps_per_epoch), 1)
        self.total = cfg.epochs * self.spe
        self.warm = int(round(cfg.warmup_epochs * self.spe))
        self.power, self.step_epochs, self.gamma = cfg.poly_power, cfg.step_epochs, cfg.step_gamma
        self.floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
        self.per_epoch, self.epochs, self.warm_epochs = cfg.schedule_per_epoch, cfg.epochs, cfg.warmup_epochs

    def _by_epoch(self, e: int) -> float:
        if e < self.warm_epochs:
            return (e + 1) / self.warm_epochs
        t = min(e / max(self.epochs, 1), 1.0)
        if self.kind == "poly":
            return (1 - t) ** self.power
        if self.kind == "cosine":
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t))
        if self.kind == "step":
            return self.gamma ** (e // self.step_epochs)
        return 1.0

    def __call__(self, s: int) -> float:
        if self.per_epoch:
            return self._by_epoch(s // self.spe)
        if s < self.warm:
            return (s + 1) / self.warm
        t = min((s - self.warm) / max(self.total - self.warm, 1), 1.0)
        if self.kind == "poly":
            return (1 - t) ** self.power
        if self.kind == "cosine":
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t))
        if self.kind == "step":
            return self.gamma ** ((s // self.spe) // self.step_epochs)
        return 1.0


def lr_curve(cfg: TrainConfig, steps_per_epoch: int) -> np.ndarray:
    """The learning rate of every step of a run (for plots and tests)."""
    f = LRFactor(cfg, steps_per_epoch)
    return np.array([cfg.lr * f(s) for s in range(cfg.epochs * steps_per_epoch)])


# ------------------------------------------------------------------ data order
class EpochSampler(Sampler[int]):
    """A fixed permutation per ``(seed, epoch)``, split across DDP ranks (padded to equal length)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world, self.epoch = n, seed, shuffle, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        idx = np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        per = math.ceil(self.n / self.world)
        idx = np.resize(idx, per * self.world)
        return idx[self.rank::self.world].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)


class _EpochTagged(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)``: the epoch travels with each index to the worker processes."""

    def __init__(self, sampler: EpochSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.sampler.epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class _EpochAware(Dataset):
    """Calls the dataset's ``set_epoch`` from the index's epoch tag, in whichever process
    loads the item, so persistent worker processes follow the epochs of the main loop."""

    def __init__(self, dataset: Dataset):
        self.dataset, self.epoch = dataset, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        if epoch != self.epoch and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        return self.dataset[i]


# ------------------------------------------------------------------ distributed
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group when launched by ``torchrun``; no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# ------------------------------------------------------------------ checkpoints
def _rng_state() -> dict:
    mt = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(mt[1].astype(np.int64)), "pos": int(mt[2]),
                  "has_gauss": int(mt[3]), "cached": float(mt[4])},
        "python": [list(random.getstate()[1]), random.getstate()[0]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    # RNG states are CPU byte tensors, whatever map_location the checkpoint was read with
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((state["python"][1], tuple(state["python"][0]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


# ------------------------------------------------------------------ the loop
@dataclass
class FitResult:
    log: pd.DataFrame
    best: list[tuple[float, int, str]] = field(default_factory=list)  # (score, epoch, path), best first
    out_dir: Path | None = None

    @property
    def best_checkpoints(self) -> list[Path]:
        return [Path(p) for _, _, p in self.best]

    @property
    def train_seconds(self) -> float:
        """Seconds spent in training steps (all epochs, resumed ones included)."""
        return float(self.log["time_s"].sum()) if "time_s" in self.log else 0.0

    @property
    def val_seconds(self) -> float:
        """Seconds spent in the validation function."""
        return float(self.log["validation_s"].sum()) if "validation_s" in self.log else 0.0


def _to_device(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _tensors(x):
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)


def _on_device(loader, device: torch.device):
    """Yield the loader's batches on ``device``. On a GPU, batch k+1 is copied on a side
    stream while batch k computes, so the host-to-device copy costs no step time."""
    if device.type != "cuda":
        for batch in loader:
            yield _to_device(batch, device)
        return
    side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def copy(batch):
        with torch.cuda.stream(side):
            return _to_device(batch, device)

    it = iter(loader)
    nxt = copy(next(it, None))
    while nxt is not None:
        main.wait_stream(side)
        for t in _tensors(nxt):
            t.record_stream(main)  # the allocator must not reuse it before the main stream is done
        cur, nxt = nxt, copy(next(it, None))
        yield cur


class Trainer:
    """The training loop in parts, so that a caller can drive it (the OM-Net curriculum
    ends a stage when its loss flattens) and a reader can follow it:

    ==========================  =====================================================
    part                        what it does
    ==========================  =====================================================
    ``Trainer(...)``            prepare: device, model, loader, optimiser, schedule,
                                AMP scaler (see :func:`fit` for the arguments)
    :meth:`resume`              continue from ``out_dir/last.pt`` if there is one
    :meth:`train_epoch`         one pass over an epoch's batches -> its log row
    :meth:`validate`            ``val_fn`` on rank 0 and keep the ``keep_best`` best
    :meth:`save`                ``log.csv`` and ``last.pt`` (exact resume)
    :meth:`run`                 epochs until ``cfg.epochs``, ``stop_after_epochs`` or
                                the ``stop`` hook -> :class:`FitResult`
    ==========================  =====================================================
    """

    def __init__(self, model: nn.Module, loss_fn: Callable | None, dataset: Dataset, cfg: TrainConfig,
                 out_dir: str | Path, val_fn: Callable[[nn.Module], dict[str, float]] | None = None,
                 device: str | torch.device | None = None, shuffle: bool = True, step_fn: Callable | None = None,
                 batch_transform: Callable | None = None,
                 param_groups: Callable[[nn.Module, TrainConfig], list[dict]] | None = None):
        self.cfg, self.out_dir, self.val_fn = cfg, Path(out_dir), val_fn
        self.dataset, self.step_fn, self.batch_transform = dataset, step_fn, batch_transform
        self.info = info = init_distributed()
        if device is None:
            device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
        self.device = device = torch.device(device)
        self.cuda = cuda = device.type == "cuda"
        if not cuda:
            # subnormal floats make oneDNN's CPU kernels ~10x slower (measured: HNF-Netv2's
            # backward pass, 15 s -> 1.6 s); flushing them to zero changes nothing visible
            torch.set_flush_denormal(True)
        if info.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed + info.rank)
        self.model = model.to(device)
        guard_tiny_convolutions(model, device.type, cfg.amp)
        self.layout_rank = layout_rank(model) if cfg.channels_last else None
        if self.layout_rank is not None:
            model.to(memory_format=CHANNELS_LAST[self.layout_rank])  # NDHWC for a 3D network, NHWC for a 2D one
        self.net: nn.Module = model
        if info.world > 1:
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed patch sizes: let cuDNN pick its fastest kernels
        if cuda and cfg.compile:
            self.net = torch.compile(self.net)
        self.sampler = EpochSampler(len(dataset), cfg.seed, shuffle, info.rank, info.world)
        # the epoch travels with each index, so persistent workers (started once) load the right
        # epoch's samples: a dataset copied into a worker never sees the main process's set_epoch
        self.loader = DataLoader(_EpochAware(dataset), batch_size=cfg.batch_size, sampler=_EpochTagged(self.sampler),
                                 num_workers=cfg.num_workers, pin_memory=cuda, drop_last=False,
                                 persistent_workers=cfg.num_workers > 0,
                                 # its own generator: the loader then takes nothing from the global RNG
                                 # (which drives dropout), with or without workers, resumed or not
                                 generator=torch.Generator().manual_seed(cfg.seed + info.rank))
        self.steps_per_epoch = len(self.loader)
        groups = (param_groups(model, cfg) if param_groups is not None
                  else [p for p in model.parameters() if p.requires_grad])
        self.opt = make_optimizer(groups, cfg, device)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, LRFactor(cfg, self.steps_per_epoch))
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device.type, cfg.amp))
        self.loss = in_float32(loss_fn, device.type) if loss_fn is not None else None
        self.epoch, self.step, self.rows, self.best = 0, 0, [], []

    @property
    def last(self) -> Path:
        return self.out_dir / "last.pt"

    def resume(self) -> bool:
        """Load model, optimiser, schedule, scaler, RNG states, epoch, step, log and best
        scores from ``last.pt``; False (nothing changed) without one."""
        if not self.last.exists():
            return False
        ck = load_checkpoint(self.last, map_location=self.device)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"][min(self.info.rank, len(ck["rng"]) - 1)])
        self.epoch, self.step, self.rows = ck["epoch"], ck["step"], list(ck["log"])
        self.best = [tuple(b) for b in ck["best"]]
        return True

    def train_epoch(self) -> dict:
        """One epoch of optimiser steps (epoch ``self.epoch``, 0-based) -> its log row."""
        cfg, epoch = self.cfg, self.epoch
        self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.net.train()
        t0, wait, losses = time.perf_counter(), 0.0, []
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and self.info.main))
        t_data = time.perf_counter()
        for batch in _on_device(self.loader, self.device):
            wait += time.perf_counter() - t_data
            losses.append(self._optimiser_step(batch))  # no float() here: it would wait for the GPU
            bar.update(1)
            # reading the loss waits for the device: on a GPU only at the epoch's end
            if not bar.disable and (len(losses) == self.steps_per_epoch or (not self.cuda and len(losses) % 10 == 1)):
                bar.set_postfix(loss=f"{float(losses[-1]):.4f}")
            t_data = time.perf_counter()
        bar.close()
        row = {"epoch": epoch + 1, "step": self.step, "lr": self.opt.param_groups[0]["lr"],
               "train_loss": float(torch.stack(losses).double().mean()) if losses else float("nan"),
               "time_s": time.perf_counter() - t0, "data_wait_s": wait}
        if self.info.world > 1:
            t = torch.tensor([row["train_loss"]], device=self.device)
            dist.all_reduce(t)
            row["train_loss"] = float(t) / self.info.world
        return row

    def _optimiser_step(self, batch) -> torch.Tensor:
        cfg, opt = self.cfg, self.opt
        if self.batch_transform is not None:
            batch = (*self.batch_transform(batch[0], batch[1], self.step), *batch[2:])
        if self.layout_rank is not None:
            batch = to_channels_last(batch, self.layout_rank)
        opt.zero_grad(set_to_none=True)
        with autocast(self.device.type, cfg.amp):
            loss = (self.step_fn(self.net, batch, self.loss) if self.step_fn is not None
                    else self.loss(self.net(batch[0]), batch[1]))
        self.scaler.scale(loss).backward()
        if cfg.grad_clip:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        self.sched.step()
        self.step += 1
        return loss.detach()

    def validate(self, row: dict) -> None:
        """Every ``val_every`` epochs and at the last: ``val_fn`` on rank 0, its results in
        ``row``; the ``keep_best`` best epochs by ``best_metric`` kept as checkpoints."""
        cfg, epoch = self.cfg, row["epoch"]
        if self.val_fn is None or not self.info.main or not (epoch % cfg.val_every == 0 or epoch == cfg.epochs):
            return
        self.model.eval()
        t_val = time.perf_counter()
        metrics = self.val_fn(self.model)
        row["validation_s"] = time.perf_counter() - t_val
        row.update({f"val_{k}": float(v) for k, v in metrics.items()})
        if cfg.best_metric not in metrics:
            raise KeyError(f"validation returned {sorted(metrics)}, not best_metric {cfg.best_metric!r}")
        score = float(metrics[cfg.best_metric])
        if len(self.best) < cfg.keep_best or score > self.best[-1][0]:
            path = self.out_dir / f"best-epoch{epoch:04d}.pt"
            save_checkpoint(path, model=_unwrap(self.model).state_dict(), epoch=epoch, score=score)
            self.best = sorted(self.best + [(score, epoch, str(path))], key=lambda b: (-b[0], b[1]))
            for _, _, p in self.best[cfg.keep_best:]:
                Path(p).unlink(missing_ok=True)
            self.best = self.best[: cfg.keep_best]

    def save(self) -> None:
        """``log.csv`` and ``last.pt`` (every rank's RNG states gathered on rank 0)."""
        rngs = [_rng_state()]
        if self.info.world > 1:
            gathered = [None] * self.info.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if self.info.main:
            _write_log(self.out_dir / "log.csv", self.rows)
            save_checkpoint(self.last, model=_unwrap(self.model).state_dict(), optimizer=self.opt.state_dict(),
                            scheduler=self.sched.state_dict(), scaler=self.scaler.state_dict(), rng=rngs,
                            epoch=self.epoch, step=self.step, log=self.rows, best=[list(b) for b in self.best],
                            config=_plain(asdict(self.cfg)))
        if self.info.world > 1:
            dist.barrier()

    def run(self, stop_after_epochs: int | None = None, stop: Callable[[list[dict]], bool] | None = None) -> FitResult:
        """Train from the current epoch to ``cfg.epochs`` (or ``stop_after_epochs`` more);
        after each saved epoch ``stop(log rows)`` may end the run (True)."""
        if self.info.main:
            _write_log(self.out_dir / "log.csv", self.rows)
        end = self.cfg.epochs if stop_after_epochs is None else min(self.cfg.epochs, self.epoch + stop_after_epochs)
        while self.epoch < end:
            row = self.train_epoch()
            self.validate(row)
            self.rows.append(row)
            self.epoch += 1
            self.save()
            if stop is not None and stop(self.rows):
                break
        return FitResult(pd.DataFrame(self.rows), self.best, self.out_dir)


def fit(model: nn.Module, loss_fn: Callable, dataset: Dataset, cfg: TrainConfig, out_dir: str | Path,
        val_fn: Callable[[nn.Module], dict[str, float]] | None = None, device: str | torch.device | None = None,
        resume: bool = True, shuffle: bool = True, step_fn: Callable | None = None,
        stop_after_epochs: int | None = None, batch_transform: Callable | None = None,
        param_groups: Callable[[nn.Module, TrainConfig], list[dict]] | None = None,
        stop: Callable[[list[dict]], bool] | None = None) -> FitResult:
    """Train ``model`` and return its log and best checkpoints (:class:`Trainer`, whole).

    ``loss_fn(outputs, target)`` gets whatever the model returns (a list for deep
    supervision). ``step_fn(model, batch, loss_fn) -> loss`` replaces the default
    forward + loss for methods whose step is unusual (multi-task batches, GANs).
    ``val_fn(model) -> {name: value}`` runs on rank 0 every ``val_every`` epochs and at
    the end; ``cfg.best_metric`` selects the best checkpoints. With ``resume`` and a
    ``last.pt`` in ``out_dir``, training continues from it. ``stop_after_epochs`` ends
    the call early (used to test resumption); ``stop(log rows) -> bool``, asked after
    every epoch, ends it when it says so (a curriculum stage whose loss flattened).
    ``batch_transform(input, target, step) -> (input, target)`` changes each batch on the
    device before the step (augmentation on the GPU); it gets the global step so a
    resumed run repeats it. ``param_groups(model, cfg)`` returns the optimiser's
    parameter groups (their own ``lr`` / ``weight_decay``; the schedule scales every
    group's rate alike).
    """
    trainer = Trainer(model, loss_fn, dataset, cfg, out_dir, val_fn, device, shuffle, step_fn, batch_transform,
                      param_groups)
    if resume:
        trainer.resume()
    return trainer.run(stop_after_epochs, stop)


def _plain(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _write_log(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys or ["epoch"])
            w.writeheader()
            w.writerows(rows)
