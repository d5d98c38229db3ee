"""Training: the overhead of :func:`brats_lib.training.fit` over a bare PyTorch loop.

Both train the same model from the same initial weights for the same number of steps
on the same batches (the bare loop gets them pre-built in memory, so its time is pure
compute). ``fit`` adds everything a real run needs: sampling patches on the fly, the
schedule, the progress bar, the CSV log and a checkpoint every epoch. Targets: at most
10% overhead, and data wait under 10% of step time.

``throughput`` measures images per second for training and inference in the format of
NVIDIA's published table (A100, AMP, batch 2, 128^3: 27.5 img/s training, 68.5 img/s
inference) for a user with a GPU (``python -m benchmarks --device cuda``).
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import torch

from brats_lib import models
from brats_lib.augmentation import DeviceBatch
from brats_lib.losses import DeepSupervision, region_loss
from brats_lib.phantoms import make_phantom
from brats_lib.precision import autocast, needs_grad_scaler, precision_name
from brats_lib.preprocess import zscore
from brats_lib.sampling import PatchDataset
from brats_lib.training import EpochSampler, LRFactor, TrainConfig, fit, make_optimizer, to_channels_last

from .common import CPU_MODEL, md_table

OVERHEAD_TARGET = 0.10
NVIDIA_A100_AMP = {"training": 27.5, "inference": 68.5}


def _dataset(patch, n_samples, target: str = "regions"):
    cases = []
    for s in range(2):
        img, lab, _ = make_phantom(s, tuple(max(p, 64) + 16 for p in patch), kind="gbm")
        cases.append((zscore(img), lab))
    return PatchDataset(cases, patch, samples_per_epoch=n_samples, fg_prob=0.5, seed=0, target=target)


def _model(device):
    torch.manual_seed(0)
    return models.build("unet3d", deep_supervision=True, **CPU_MODEL).to(device)


def bare_loop(ds, cfg: TrainConfig, device) -> float:
    """The same steps as ``fit`` with none of its machinery; returns seconds."""
    model = _model(device)
    if device == "cpu":
        torch.set_flush_denormal(True)  # as fit does on the CPU
    else:
        torch.backends.cudnn.benchmark = True  # as fit does on the GPU
    loss_fn = DeepSupervision(region_loss(), (1.0, 0.5, 0.25))
    batches = []
    for epoch in range(cfg.epochs):  # the same samples in the same order as fit
        ds.set_epoch(epoch)
        idx = list(EpochSampler(len(ds), cfg.seed))
        for k in range(0, len(idx), cfg.batch_size):
            items = [ds[i] for i in idx[k:k + cfg.batch_size]]
            batches.append((torch.stack([a for a, _ in items]).to(device), torch.stack([b for _, b in items]).to(device)))
    opt = make_optimizer(model.parameters(), cfg, device)  # fused on a GPU, as fit
    sched = torch.optim.lr_scheduler.LambdaLR(opt, LRFactor(cfg, len(batches) // cfg.epochs))
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device, cfg.amp))  # as fit
    model.train()
    t = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        with autocast(device, cfg.amp):  # as fit: float16 on CUDA, bfloat16 on CPUs that have it
            loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def ours(ds, cfg: TrainConfig, device, batch_transform=None) -> tuple[float, float]:
    model = _model(device)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        res = fit(model, DeepSupervision(region_loss(), (1.0, 0.5, 0.25)), ds, cfg, d, device=device, resume=False,
                  batch_transform=batch_transform)
        wall = time.perf_counter() - t
    print("  fit epochs: " + ", ".join(f"{t:.2f} s (data wait {w:.2f} s)" for t, w in zip(res.log["time_s"], res.log["data_wait_s"])))
    return wall, float(res.log["data_wait_s"].sum() / res.log["time_s"].sum())


def run(patches=((64, 64, 64), (128, 128, 128)), device: str = "cpu", repeats: int = 5) -> tuple[str, bool]:
    """Overhead = median over ``repeats`` pairs of (fit time / bare time - 1).

    The two runs of a pair are back to back, their order alternating from pair to pair, so
    a slow spell of a shared machine hits both runs of a pair alike and drift cancels; the
    median ignores the pair a spell split in two.
    """
    rows, passed = [], True
    for patch in patches:
        cuda = device == "cuda"
        # a GPU step of this small model takes milliseconds: give it epochs of realistic length and
        # worker processes to sample patches (on 2 CPU cores a worker would only steal the model's core)
        n = 256 if cuda else 8 if patch[0] <= 64 else 4
        cfg = TrainConfig(epochs=2, batch_size=2 if cuda or patch[0] <= 64 else 1, lr=1e-3, schedule="cosine",
                          warmup_epochs=0.5, progress=True, amp=True,
                          num_workers=min(8, (os.cpu_count() or 1) - 1) if cuda else 0)
        ds = _dataset(patch, n)
        # on a GPU fit gets the same samples as uint8 label maps, encoded to regions on the device
        # (a twelfth of the bytes through the workers' shared memory and the copy to the GPU)
        ds_fit, transform = (_dataset(patch, n, "label_map"), DeviceBatch()) if cuda else (ds, None)
        bare_loop(ds, TrainConfig(epochs=1, batch_size=cfg.batch_size), device)  # warm-up (allocator, threads)
        t_bare, t_ours, waits = [], [], []
        for r in range(repeats):
            if r % 2:
                w, frac = ours(ds_fit, cfg, device, transform)
                b = bare_loop(ds, cfg, device)
            else:
                b = bare_loop(ds, cfg, device)
                w, frac = ours(ds_fit, cfg, device, transform)
            t_bare.append(b)
            t_ours.append(w)
            waits.append(frac)
        ratios = np.array(t_ours) / np.array(t_bare) - 1
        overhead, wait = float(np.median(ratios)), float(np.median(waits))
        ok = overhead <= OVERHEAD_TARGET and wait < 0.10
        passed &= ok
        steps = cfg.epochs * (n // cfg.batch_size)
        print(f"training {patch}: bare {np.median(t_bare):.1f} s, fit {np.median(t_ours):.1f} s, overhead "
              f"{overhead:+.1%} (pairs {', '.join(f'{x:+.1%}' for x in ratios)}), data wait {wait:.1%}")
        rows.append(["x".join(map(str, patch)), cfg.batch_size, steps, f"{np.median(t_bare):.2f}",
                     f"{np.median(t_ours):.2f}", f"**{overhead:+.1%}**", f"{ratios.min():+.1%} .. {ratios.max():+.1%}",
                     f"{wait:.1%}", "yes" if ok else "NO"])
    md = "\n".join([
        "## Training: the loop's overhead over a bare PyTorch loop", "",
        f"Model: the cpu-profile U-Net with deep supervision, Adam, cosine schedule, device {device}. "
        "`fit` samples patches on the fly (" + (f"{cfg.num_workers} worker processes" if cfg.num_workers else "in the main process")
        + (", uint8 label maps encoded to regions on the GPU, fused Adam" if device == "cuda" else "") + "), logs, shows a progress bar and writes a checkpoint every epoch; "
        "the bare loop trains on the same batches pre-built in memory. Each size runs "
        f"{repeats} back-to-back pairs (bare, fit), their order alternating; the overhead is the median of the "
        "pairs' ratios (times are medians too), the range shows the machine's noise. Training sizes stop at "
        "128^3, the largest patch any of the five papers trains on; a whole 240x240x155 volume is never a "
        "training input.", "",
        md_table(["patch", "batch", "steps", "bare loop (s)", "fit (s)", "overhead (median)", "range over pairs",
                  "data wait / step time", "target met (<= 10%, < 10%)"], rows),
    ])
    return md, passed


def throughput(model, batch: int, patch, device: str, amp: bool, steps: int = 10, warmup: int = 3,
               channels_last: bool = False, fused: bool = False, compile: bool = False) -> dict[str, float]:
    """Images per second of training steps and of inference forward passes.

    ``channels_last``: NDHWC weights and inputs; ``fused``: the fused Adam kernel (CUDA);
    ``compile``: ``torch.compile`` (CUDA), its compilation inside the warm-up steps."""
    x = torch.randn(batch, model_in_channels(model), *patch, device=device)
    y = (torch.rand(batch, 3, *patch, device=device) > 0.5).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
        x, y = to_channels_last(x), to_channels_last(y)
    loss_fn = DeepSupervision(region_loss(), (1.0, 0.5, 0.25))
    opt = make_optimizer(model.parameters(), TrainConfig(lr=1e-4, fused=fused), device)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device, amp))
    torch.backends.cudnn.benchmark = device == "cuda"
    net = torch.compile(model) if compile and device == "cuda" else model

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    sync()
    train = batch * steps / (time.perf_counter() - t)
    model.eval()
    with torch.no_grad(), autocast(device, amp):
        for i in range(warmup + steps):
            if i == warmup:
                sync()
                t = time.perf_counter()
            net(x)
    sync()
    return {"training": train, "inference": batch * steps / (time.perf_counter() - t)}


def model_in_channels(model) -> int:
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    return first.in_channels


#: the settings the throughput table compares, from the plain eager loop to everything on
THROUGHPUT_VARIANTS = {
    "eager, NCDHW, Adam": dict(channels_last=False, fused=False, compile=False),
    "channels-last + fused Adam": dict(channels_last=True, fused=True, compile=False),
    "channels-last + fused Adam + torch.compile": dict(channels_last=True, fused=True, compile=True),
}


#: NVIDIA's final model: depth 7, filters 64-512, 5 input channels, deep supervision
FINAL_MODEL = dict(in_channels=5, depth=7, filters=[64, 96, 128, 192, 256, 384, 512], deep_supervision=True)


def run_gpu_throughput(device: str = "cuda", patch=(128, 128, 128), steps: int = 10,
                       variants: dict | None = None, model_kwargs: dict | None = None) -> str:
    """NVIDIA's final model (``FINAL_MODEL``), AMP, batch 2, 128^3, under each of
    ``THROUGHPUT_VARIANTS``; NVIDIA's table shows the fastest."""
    name = torch.cuda.get_device_name(0) if device == "cuda" else device
    results = {}
    for label, kw in (variants or THROUGHPUT_VARIANTS).items():
        torch.manual_seed(0)
        model = models.build("unet3d", **(model_kwargs or FINAL_MODEL)).to(device)
        results[label] = throughput(model, 2, patch, device, amp=True, steps=steps, **kw)
        print(f"throughput on {name}, {label}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in results[label].items()))
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    best = {k: max(r[k] for r in results.values()) for k in ("training", "inference")}
    rows = [[k, f"{best[k]:.1f}", f"{NVIDIA_A100_AMP[k]:.1f}", f"{best[k] / NVIDIA_A100_AMP[k]:.2f}"] for k in ("training", "inference")]
    var_rows = [[label, f"{r['training']:.1f}", f"{r['inference']:.1f}"] for label, r in results.items()]
    size = "x".join(map(str, patch))
    return "\n".join([
        f"## Throughput in NVIDIA's format (AMP, batch 2, {size})", "",
        f"Model: depth 7, filters 64-512, 5 input channels, deep supervision; device {name}. "
        "NVIDIA's column is their published A100 figure (targets: at least 27.5 img/s training, 68.5 img/s "
        "inference); ours is the fastest of the settings below.", "",
        md_table(["phase", f"ours on {name} (img/s)", "NVIDIA A100 AMP (img/s)", "ratio"], rows), "",
        md_table(["setting", "training (img/s)", "inference (img/s)"], var_rows),
    ])


if __name__ == "__main__":
    print(run()[0])


# ------------------------------------------------------------------ float32 vs bfloat16 on the CPU
def _precision_fit(amp: bool, train, val, patch, steps: int, device: str) -> tuple[float, dict[str, float]]:
    """Train the cpu-profile U-Net for ``steps`` steps in one precision; returns (seconds,
    mean validation Dice per region, inference in the same precision)."""
    from brats_lib.inference import predict_case
    from brats_lib.metrics import evaluate_labels

    ds = PatchDataset(train, patch, samples_per_epoch=2 * steps, fg_prob=0.67, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=2, lr=3e-3, optimizer="adam", schedule="cosine", val_every=0,
                      amp=amp, progress=False)
    model = _model(device)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        fit(model, DeepSupervision(region_loss(), (1.0, 0.5, 0.25)), ds, cfg, d, device=device, resume=False)
        seconds = time.perf_counter() - t
    scores = [evaluate_labels(predict_case(model, img, patch, device=device, amp=amp)[0], lab) for img, lab in val]
    return seconds, {r: float(np.mean([s[r]["Dice"] for s in scores])) for r in ("WT", "TC", "ET")}


def run_precision(device: str = "cpu", patches=((32, 32, 32), (64, 64, 64)), repeats: int = 5,
                  steps: int = 10, train_steps: int = 400, target: float = 2.0) -> tuple[str, bool]:
    """One training step of the cpu-profile U-Net in float32 and under bfloat16 autocast
    (what ``amp: true`` gives on a CPU with bfloat16 instructions), ``repeats`` back-to-back
    pairs, order alternating; the ratio is the median of the pairs'. Then the same network
    trained ``train_steps`` steps in each precision on the same phantoms and samples, and
    its validation Dice: the speed must not cost accuracy."""
    if precision_name(device) != "bfloat16 autocast":
        return ("## Training precision: float32 vs bfloat16 autocast\n\nNot measured: this "
                f"{device} has no bfloat16 instructions (`amp: true` trains in {precision_name(device)} here).", True)
    rows, passed = [], True
    for patch in patches:
        ratios, times = [], {True: [], False: []}
        for r in range(repeats):
            for amp in ((False, True) if r % 2 == 0 else (True, False)):
                torch.manual_seed(0)
                times[amp].append(1.0 / throughput(_model(device), 2, patch, device, amp=amp, steps=steps, warmup=2)["training"])
            ratios.append(times[False][-1] / times[True][-1])
        ratio = float(np.median(ratios))
        ok = ratio >= target
        passed &= ok
        size = "x".join(map(str, patch))
        rows.append([f"bf16 training step vs fp32, {size}, batch 2", f"{2 * np.median(times[False]) * 1e3:.0f}",
                     f"{2 * np.median(times[True]) * 1e3:.0f}", f"**{ratio:.2f}x**",
                     f"{min(ratios):.2f}-{max(ratios):.2f}x", "yes" if ok else "NO"])
        print(f"precision {size}: fp32 / bf16 step time {ratio:.2f}x")
    shape, patch = (48, 48, 48), (32, 32, 32)
    cases = [make_phantom(s, shape, kind="gbm")[:2] for s in range(12)]
    train, val = [(zscore(i), lab) for i, lab in cases[:8]], cases[8:]
    dice_rows = []
    for amp in (False, True):
        seconds, dice = _precision_fit(amp, train, val, patch, train_steps, device)
        dice_rows.append([precision_name(device, amp), str(train_steps), f"{seconds:.1f}"]
                         + [f"{dice[r]:.3f}" for r in ("WT", "TC", "ET")])
        print(f"precision {precision_name(device, amp)}: {train_steps} steps in {seconds:.1f} s, Dice {dice}")
    md = "\n".join([
        "## Training precision: float32 vs bfloat16 autocast", "",
        "`amp: true` (every notebook's default) autocasts to bfloat16 on CPUs with bfloat16 instructions "
        "(AVX512-BF16 / AMX; `brats_lib.precision`), float16 on CUDA. One training step (forward, loss, backward, "
        f"Adam) of the U-Net the cpu profiles train (depth 4, filters 8-64, deep supervision), {repeats} back-to-back "
        "pairs per size, order alternating; the ratio is the median of the pairs' fp32 / bf16 time "
        f"(target: at least {target:.1f}x).", "",
        md_table(["comparison", "fp32 step (ms)", "bf16 step (ms)", "ratio", "range over pairs", f"target met (>= {target:.1f}x)"], rows), "",
        f"The same network trained {train_steps} steps in each precision (same initial weights, same samples: "
        f"8 phantoms of {'x'.join(map(str, shape))}, {'x'.join(map(str, patch))} patches, batch 2, Adam 3e-3 with a cosine "
        "schedule), then its mean Dice on 4 validation phantoms (sliding window in the same precision):", "",
        md_table(["precision", "steps", "training (s)", "WT Dice", "TC Dice", "ET Dice"], dice_rows),
    ])
    return md, passed
