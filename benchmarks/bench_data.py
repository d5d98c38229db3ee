"""Phantom generation, NIfTI writing/reading and preprocessing throughput (cases per second)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from brats_lib import preprocess as P
from brats_lib.data import discover_cases, load_case
from brats_lib.phantoms import make_phantom, write_phantom_dataset

from .common import SIZES, md_table


def run(sizes=("64^3", "128^3", "full")) -> tuple[str, bool]:
    rows = []
    for size in sizes:
        shape = SIZES[size]
        n = {"64^3": 8, "128^3": 3}.get(size, 1)
        t = time.perf_counter()
        for s in range(n):
            make_phantom(s, shape)
        gen = n / (time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            write_phantom_dataset(Path(d), n, 0, shape)
            write = n / (time.perf_counter() - t)
            cases = discover_cases(d)
            t = time.perf_counter()
            loaded = [load_case(c) for c in cases]
            load = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for lc in loaded:
            img, _, _ = P.crop_to_brain(lc.image, lc.label)
            P.zscore(img)
        prep = n / (time.perf_counter() - t)
        print(f"data {size}: generate {gen:.2f}, generate+write {write:.2f}, load {load:.2f}, preprocess {prep:.2f} cases/s")
        rows.append([size, n, f"{gen:.2f}", f"{write:.2f}", f"{load:.2f}", f"{prep:.2f}"])
    md = "\n".join([
        "## Data: phantom generation and preprocessing throughput", "",
        "Cases per second, one process. generate+write includes gzip-compressed NIfTI output of 4 modalities and "
        "the label map; load includes validation; preprocess = crop to the brain + per-modality z-score.", "",
        md_table(["size", "cases", "generate", "generate + write", "load + validate", "preprocess"], rows),
    ])
    return md, True


if __name__ == "__main__":
    print(run()[0])
