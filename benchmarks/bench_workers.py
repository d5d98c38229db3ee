"""Training the comparison's methods at once: one after another in this process with all
its threads, vs ``workers`` at a time, each in a spawned process with a share of them
(:func:`brats_lib.comparison.train_all`).

The networks of the cpu profiles are small (8-40 channels at 32^3 or 48^3 for most), so a
second thread speeds a training step up far less than twice; two one-thread trainings side
by side then get through more work per second than one two-thread training. This section
trains every compared method, with the comparison's cpu settings but a few epochs each, both
ways on the same fold, and says whether the comparison profile's ``workers`` is the faster
choice (or the two are within 5 %). The pooled time includes starting a fresh process per
method and sending its networks back.
"""
from __future__ import annotations

import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from brats_lib import comparison as C
from brats_lib import data as D
from brats_lib.app import profiles
from brats_lib.sampling import read_splits, splits_path

from .common import choice_verdict, md_table

#: a few epochs of each method (the comparison cpu profile's settings otherwise): long enough that
#: starting a process (about 5 s of imports) is not most of a job, as in the comparison itself
SHORT = {"3D U-Net": {"epochs": 6}, "HNF-Netv2": {"epochs": 4}, "MTDS attention R2U-Net": {"epochs": 12},
         "Optimized U-Net": {"epochs": 6, "val_every": 6}, "OM-Net + CGA": {"stage_epochs": [2, 2, 4]},
         "Cross-modality fusion": {"cmff_epochs": 6, "cmft_epochs": 2}}


def jobs_and_data(fold: int = 1):
    """The comparison's methods with :data:`SHORT` epochs, its cpu split's fold ``fold`` (a
    fold no report scores) and its cases."""
    cp = profiles.load("comparison", "cpu")
    cases, _ = D.open_source(None, cp.phantom_cases, cp.seed, cp.phantom_shape)
    loaded = {c.case_id: D.load_case(c) for c in cases}
    folds = read_splits(splits_path(cp.splits))
    shared = profiles.as_dict(cp)
    params_of = {m: C.method_params(C.METHODS[m], "cpu", shared,
                                    {**cp.method_overrides.get(m, {}), **SHORT[m], "progress": False})
                 for m in cp.methods}
    return cp, [(C.METHODS[m], fold) for m in cp.methods], params_of, folds, loaded


def verdict(ratio: float, pooled_chosen: bool) -> tuple[str, bool]:
    """(the faster way, whether the profile's choice (``workers`` > 1) is right)."""
    return choice_verdict(ratio, pooled_chosen, ("pool", "one after another"))


def run(device: str = "cpu") -> tuple[str, bool]:
    cp, jobs, params_of, folds, loaded = jobs_and_data()
    threads = torch.get_num_threads()
    workers = max(2, cp.workers)
    each_threads = max(1, threads // workers)
    with TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        here = C.train_all(jobs, params_of, folds, loaded, Path(tmp) / "here", cp.selection_fraction, cp.seed,
                           workers=1, progress=False)
        sequential = time.perf_counter() - t0
        t0 = time.perf_counter()
        C.train_all(jobs, params_of, folds, loaded, Path(tmp) / "pool", cp.selection_fraction, cp.seed,
                    workers=workers, progress=False)
        pooled = time.perf_counter() - t0
    ratio = sequential / pooled
    faster, ok = verdict(ratio, cp.workers > 1)
    print(f"workers: one after another {sequential:.0f} s, {workers} at once {pooled:.0f} s, {ratio:.2f}x")
    each = ", ".join(f"{k[0]} {f.train_seconds:.0f} s" for k, f in here.items())
    md = "\n".join([
        "## Training the comparison's methods at once: one after another vs worker processes", "",
        f"Every method the comparison trains, with its cpu settings but a few epochs each, on fold {jobs[0][1]} of "
        f"its split: one after another in this process with {threads} threads, vs {workers} at a time, each in a "
        f"fresh process with {each_threads} thread{'s' if each_threads > 1 else ''} (`comparison.train_all`; the pooled time "
        "includes starting the processes and sending the networks back). The ratio is the sequential time over "
        f"the pooled one. One after another: {each}.", "",
        md_table(["methods", "one after another (s)", f"{workers} at once (s)", "ratio", "faster",
                  "workers (params/comparison/cpu.yaml)", "choice right"],
                 [[str(len(jobs)), f"{sequential:.0f}", f"{pooled:.0f}", f"**{ratio:.2f}x**", faster,
                   str(cp.workers), "yes" if ok else "NO"]]),
    ])
    return md, ok
