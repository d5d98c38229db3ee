"""Helpers shared by the benchmarks: timing, peak memory, the test volumes, the model."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np
import psutil

from brats_lib import models
from brats_lib.paths import REAL_DIR

REAL = REAL_DIR
#: the U-Net the benchmarks time on the CPU: the size the cpu profiles train
CPU_MODEL = dict(in_channels=4, out_channels=3, depth=4, filters=[8, 16, 32, 64])
CPU_ROI = (64, 64, 64)
SIZES = {"64^3": (64, 64, 64), "128^3": (128, 128, 128), "full": (240, 240, 155)}


#: one way "wins" a timing comparison only beyond this ratio; within it either choice is right
TOLERANCE = 0.05


def choice_verdict(ratio: float, chosen: bool, names: tuple[str, str]) -> tuple[str, bool]:
    """(the faster of ``names``, whether ``chosen`` is right) for ``ratio`` = time of
    ``names[1]``'s way / time of ``names[0]``'s (above 1: ``names[0]`` is faster) and a profile
    whose choice is ``names[0]``'s way when ``chosen``; within :data:`TOLERANCE` either is right."""
    if ratio > 1 + TOLERANCE:
        return names[0], chosen
    if ratio < 1 - TOLERANCE:
        return names[1], not chosen
    return f"either (within {TOLERANCE:.0%})", True


def cpu_model(**overrides):
    import torch

    torch.manual_seed(0)
    return models.build("unet3d", **{**CPU_MODEL, **overrides}).eval()


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms)."""

    def __init__(self):
        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def gib(self) -> float:
        return self.peak / 2**30


@contextmanager
def timer(store: dict, key: str):
    t = time.perf_counter()
    yield
    store[key] = time.perf_counter() - t


def volume(size_name: str):
    """(raw image (4, X, Y, Z), canonical label, description) for a benchmark size.

    ``full`` is a real 240 x 240 x 155 case where present, else a phantom brain of real
    proportions padded into a 240 x 240 x 155 volume; the others are phantoms.
    """
    from brats_lib.phantoms import make_phantom

    if size_name == "full":
        if REAL.is_dir():
            from brats_lib.data import discover_cases, load_case

            lc = load_case(discover_cases(REAL)[-1])
            return lc.image, lc.label, f"real case {lc.case_id} (240x240x155)"
        img, lab, _ = make_phantom(0, (150, 180, 140))
        pad = [(45, 45), (30, 30), (7, 8)]
        return (np.pad(img, [(0, 0)] + pad), np.pad(lab, pad), "phantom brain 150x180x140 in a 240x240x155 volume")
    shape = SIZES[size_name]
    img, lab, _ = make_phantom(0, shape)
    return img, lab, f"phantom {'x'.join(map(str, shape))}"


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
