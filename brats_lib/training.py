"""One training loop for every notebook.

:func:`fit` trains a model on a dataset of ``(input, target)`` items with the
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
per epoch. ``channels_last`` stores weights and inputs as NDHWC, the layout cuDNN's
fastest 3D kernels want; ``batch_transform`` augments each batch on the device (see
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

from .io import atomic_path, load_checkpoint, load_weights, save_checkpoint, unwrap as _unwrap  # noqa: F401
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
    channels_last: bool = False      # NDHWC weights and inputs (5D models)
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


def to_channels_last(x):
    """5D tensors (and those inside lists, tuples, dicts) in the NDHWC memory format."""
    if isinstance(x, torch.Tensor):
        return x.contiguous(memory_format=torch.channels_last_3d) if x.ndim == 5 else x
    if isinstance(x, (list, tuple)):
        return type(x)(to_channels_last(v) for v in x)
    if isinstance(x, dict):
        return {k: to_channels_last(v) for k, v in x.items()}
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


def fit(model: nn.Module, loss_fn: Callable, dataset: Dataset, cfg: TrainConfig, out_dir: str | Path,
        val_fn: Callable[[nn.Module], dict[str, float]] | None = None, device: str | torch.device | None = None,
        resume: bool = True, shuffle: bool = True, step_fn: Callable | None = None,
        stop_after_epochs: int | None = None, batch_transform: Callable | None = None,
        param_groups: Callable[[nn.Module, TrainConfig], list[dict]] | None = None) -> FitResult:
    """Train ``model`` and return its log and best checkpoints.

    ``loss_fn(outputs, target)`` gets whatever the model returns (a list for deep
    supervision). ``step_fn(model, batch, loss_fn) -> loss`` replaces the default
    forward + loss for methods whose step is unusual (multi-task batches, GANs).
    ``val_fn(model) -> {name: value}`` runs on rank 0 every ``val_every`` epochs and at
    the end; ``cfg.best_metric`` selects the best checkpoints. With ``resume`` and a
    ``last.pt`` in ``out_dir``, training continues from it. ``stop_after_epochs`` ends
    the call early (used to test resumption). ``batch_transform(input, target, step) ->
    (input, target)`` changes each batch on the device before the step (augmentation on
    the GPU); it gets the global step so a resumed run repeats it. ``param_groups(model,
    cfg)`` returns the optimiser's parameter groups (their own ``lr`` / ``weight_decay``;
    the schedule scales every group's rate alike).
    """
    out_dir = Path(out_dir)
    info = init_distributed()
    if device is None:
        device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if not cuda:
        # subnormal floats make oneDNN's CPU kernels ~10x slower (measured: HNF-Netv2's
        # backward pass, 15 s -> 1.6 s); flushing them to zero changes nothing visible
        torch.set_flush_denormal(True)
    if info.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + info.rank)
    model.to(device)
    guard_tiny_convolutions(model, device.type, cfg.amp)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    net: nn.Module = model
    if info.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed patch sizes: let cuDNN pick its fastest kernels
    if cuda and cfg.compile:
        net = torch.compile(net)

    sampler = EpochSampler(len(dataset), cfg.seed, shuffle, info.rank, info.world)
    # the epoch travels with each index, so persistent workers (started once) load the right
    # epoch's samples: a dataset copied into a worker never sees the main process's set_epoch
    loader = DataLoader(_EpochAware(dataset), batch_size=cfg.batch_size, sampler=_EpochTagged(sampler),
                        num_workers=cfg.num_workers, pin_memory=cuda, drop_last=False,
                        persistent_workers=cfg.num_workers > 0,
                        # its own generator: the loader then takes nothing from the global RNG
                        # (which drives dropout), with or without workers, resumed or not
                        generator=torch.Generator().manual_seed(cfg.seed + info.rank))
    steps_per_epoch = len(loader)
    groups = param_groups(model, cfg) if param_groups is not None else [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(groups, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRFactor(cfg, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device.type, cfg.amp))
    float_loss = in_float32(loss_fn, device.type) if loss_fn is not None else None

    start_epoch, step, rows, best = 0, 0, [], []
    last = out_dir / "last.pt"
    if resume and last.exists():
        ck = load_checkpoint(last, map_location=device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        _set_rng_state(ck["rng"][min(info.rank, len(ck["rng"]) - 1)])
        start_epoch, step, rows = ck["epoch"], ck["step"], list(ck["log"])
        best = [tuple(b) for b in ck["best"]]
    log_path = out_dir / "log.csv"
    if info.main:
        _write_log(log_path, rows)

    stop_at = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, stop_at):
        sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        net.train()
        t0, wait, losses = time.perf_counter(), 0.0, []
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and info.main))
        t_data = time.perf_counter()
        for batch in _on_device(loader, device):
            wait += time.perf_counter() - t_data
            if batch_transform is not None:
                batch = (*batch_transform(batch[0], batch[1], step), *batch[2:])
            if cfg.channels_last:
                batch = to_channels_last(batch)
            opt.zero_grad(set_to_none=True)
            with autocast(device.type, cfg.amp):
                if step_fn is not None:
                    loss = step_fn(net, batch, float_loss)
                else:
                    loss = float_loss(net(batch[0]), batch[1])
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            losses.append(loss.detach())  # no float() here: it would wait for the GPU every step
            bar.update(1)
            # reading the loss waits for the device: on a GPU only at the epoch's end
            if not bar.disable and (len(losses) == steps_per_epoch or (not cuda and len(losses) % 10 == 1)):
                bar.set_postfix(loss=f"{float(losses[-1]):.4f}")
            t_data = time.perf_counter()
        bar.close()
        row = {"epoch": epoch + 1, "step": step, "lr": opt.param_groups[0]["lr"],
               "train_loss": float(torch.stack(losses).double().mean()) if losses else float("nan"),
               "time_s": time.perf_counter() - t0, "data_wait_s": wait}
        if info.world > 1:
            t = torch.tensor([row["train_loss"]], device=device)
            dist.all_reduce(t)
            row["train_loss"] = float(t) / info.world
        validate = val_fn is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs)
        if validate and info.main:
            model.eval()
            t_val = time.perf_counter()
            metrics = val_fn(model)
            row["validation_s"] = time.perf_counter() - t_val
            row.update({f"val_{k}": float(v) for k, v in metrics.items()})
            if cfg.best_metric not in metrics:
                raise KeyError(f"validation returned {sorted(metrics)}, not best_metric {cfg.best_metric!r}")
            score = float(metrics[cfg.best_metric])
            if len(best) < cfg.keep_best or score > best[-1][0]:
                path = out_dir / f"best-epoch{epoch + 1:04d}.pt"
                save_checkpoint(path, model=_unwrap(model).state_dict(), epoch=epoch + 1, score=score)
                best = sorted(best + [(score, epoch + 1, str(path))], key=lambda b: (-b[0], b[1]))
                for _, _, p in best[cfg.keep_best:]:
                    Path(p).unlink(missing_ok=True)
                best = best[: cfg.keep_best]
        rows.append(row)
        rngs = [_rng_state()]
        if info.world > 1:
            gathered = [None] * info.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if info.main:
            _write_log(log_path, rows)
            save_checkpoint(last, model=_unwrap(model).state_dict(), optimizer=opt.state_dict(),
                            scheduler=sched.state_dict(), scaler=scaler.state_dict(), rng=rngs,
                            epoch=epoch + 1, step=step, log=rows, best=[list(b) for b in best],
                            config=_plain(asdict(cfg)))
        if info.world > 1:
            dist.barrier()
    return FitResult(pd.DataFrame(rows), best, out_dir)


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
