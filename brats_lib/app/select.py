"""Choosing a setting on cases no report scores: ``python -m brats_lib select``.

A ``cpu`` profile moves some settings away from the paper so that a model learns in
minutes (README, "cpu profiles"). Such a setting must be chosen on cases that the
report it goes into never scores, and with a 4- or 8-case validation set the training
seed moves Dice as much as most settings do. This module runs that check the same way
every time:

* :func:`selection_sets` - the sets a choice may look at: the comparison split's folds
  that the comparison profile does not train (``fold:K``, K >= its ``folds``), and fresh
  phantoms of another seed (``phantoms:S``: the first half trains, the second half
  validates). A fold the comparison scores, or phantoms of its own seed, is refused.
* :func:`evaluate` - one comparison method (its paper's profile with the comparison's
  overrides, through :func:`brats_lib.comparison.train_jobs`, the code path the comparison
  report runs, with its ``workers``) trained with each setting on each set and each
  training seed, every validation case scored -> the per-case table.
* :func:`summary` - mean Dice per setting and set, and over all sets (the mean of the
  set means, as the yaml comments record).
* :func:`paired_difference` - candidate minus baseline on the same (set, seed, case)
  units: mean, 95 % bootstrap CI and Wilcoxon p per region.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from brats_lib import comparison as C
from brats_lib import data as D
from brats_lib import metrics as M
from brats_lib import pipeline as pipelines
from brats_lib.app import profiles
from brats_lib.paths import RUNS_DIR
from brats_lib.sampling import read_splits, splits_path
from brats_lib.statistics import mean_ci, paired_test

#: the selection seed of fresh phantoms the earlier checks used (README, "cpu profiles")
DEFAULT_PHANTOM_SEED = 101
SETTING_COLUMNS = ("setting", "set", "seed", "case")


@dataclass
class SelectionSet:
    """Cases a choice may be made on: a name, training cases and validation cases."""
    name: str
    train: list[D.LoadedCase]
    val: list[D.LoadedCase]
    fold: int = 0


def default_specs(cp) -> list[str]:
    """Every fold of the comparison split that the comparison does not train, and 16
    phantoms of seed :data:`DEFAULT_PHANTOM_SEED`."""
    return [f"fold:{k}" for k in range(cp.folds, cp.n_folds)] + [f"phantoms:{DEFAULT_PHANTOM_SEED}"]


def _parse_spec(spec: str) -> tuple[str, int]:
    kind, _, value = spec.partition(":")
    if kind not in ("fold", "phantoms") or not value.lstrip("-").isdigit():
        raise ValueError(f"selection set {spec!r}: expected fold:K or phantoms:SEED")
    return kind, int(value)


def selection_sets(cp, specs: Sequence[str], phantoms: int = 16, progress: bool = False) -> list[SelectionSet]:
    """The :class:`SelectionSet` of each spec (``fold:K`` or ``phantoms:SEED``) under the
    comparison parameters ``cp``. Refused with a ``ValueError`` naming the set: a fold
    the comparison scores (K < ``cp.folds``) or outside the split, phantoms of the
    comparison's own seed, fewer than 2 phantoms."""
    out, pool = [], None
    for spec in specs:
        kind, value = _parse_spec(spec)
        if kind == "fold":
            if value < cp.folds:
                raise ValueError(f"selection set {spec!r}: the comparison scores folds 0-{cp.folds - 1} of "
                                 f"{cp.splits}; choose among folds {cp.folds}-{cp.n_folds - 1} or fresh phantoms")
            if value >= cp.n_folds:
                raise ValueError(f"selection set {spec!r}: split {cp.splits} has folds 0-{cp.n_folds - 1}")
            if pool is None:
                cases, _ = D.open_source(None, cp.phantom_cases, cp.seed, cp.phantom_shape)
                pool = {c.case_id: D.load_case(c) for c in cases}
            fold = read_splits(splits_path(cp.splits))[value]
            out.append(SelectionSet(f"fold {value}", [pool[c] for c in fold["train"]], [pool[c] for c in fold["val"]],
                                    value))
        else:
            if value == cp.seed:
                raise ValueError(f"selection set {spec!r}: seed {value} makes the comparison's own phantoms; "
                                 "choose another seed")
            if phantoms < 2:
                raise ValueError(f"selection set {spec!r}: needs at least 2 phantoms, got {phantoms}")
            cases, _ = D.open_source(None, phantoms, value, cp.phantom_shape)
            loaded = sorted((D.load_case(c) for c in cases), key=lambda c: c.case_id)
            half = len(loaded) // 2
            out.append(SelectionSet(f"phantoms {value}", loaded[:half], loaded[half:]))
    return out


def parse_setting(items: Sequence[str]) -> dict[str, Any]:
    """``["cmff_epochs=20", "stage_epochs=[3, 3, 30]"]`` -> values (YAML syntax, as in a profile)."""
    import yaml

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"setting {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def evaluate(method: str, settings: dict[str, dict[str, Any]], sets: Sequence[SelectionSet], cp, profile: str = "cpu",
             seeds: Sequence[int] = (0,), out_dir: str | Path | None = None, device=None,
             log: Callable[[str], None] | None = print, workers: int | None = None) -> pd.DataFrame:
    """Train comparison method ``method`` with each of ``settings`` (name -> values that
    replace the comparison profile's for it) on each set and training seed, and score its
    validation cases with the comparison's flips. Returns one row per (setting, set,
    seed, case) with the case's scores (:func:`brats_lib.metrics.case_scores`).

    The models train as the comparison trains its methods (:func:`brats_lib.comparison.train_jobs`),
    ``workers`` at once (default: the comparison profile's), each in a process of its own
    with its share of the threads, so that a setting checked here gets the numerics it would
    get in the report; each is scored here as it arrives."""
    if method not in C.METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(C.METHODS)}")
    m = C.METHODS[method]
    workers = cp.workers if workers is None else workers
    out_dir = Path(out_dir) if out_dir is not None else RUNS_DIR / "select" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    # a folder of this call's own: two selections running at once never share checkpoints
    # (fit resumes from a last.pt it finds), and nothing is left behind, even on an error
    work_root = Path(tempfile.mkdtemp(prefix=f"{pipelines.safe_name(method)}-", dir=out_dir))
    jobs, val = {}, {}
    for name, values in settings.items():
        for s in sets:
            for seed in seeds:
                overrides = {**cp.method_overrides.get(m.label, {}), **values, "seed": int(seed)}
                p = C.method_params(m, profile, profiles.as_dict(cp), overrides)
                key = (name, s.name, int(seed))
                jobs[key] = (m, s.fold, s.train, p, work_root / f"{len(jobs)}", cp.selection_fraction, cp.seed)
                val[key] = s.val
    scored: dict[tuple, list[dict]] = {}

    def score(key, f):
        name, set_name, seed = key
        scored[key] = [{"setting": name, "set": set_name, "seed": seed, "case": lc.case_id,
                        **M.case_scores(f.predict(lc, cp.tta), lc.label, lc.spacing)} for lc in val[key]]
        if log is not None:
            d = pd.DataFrame(scored[key])
            log(f"{name}, {set_name}, seed {seed}: Dice WT / TC / ET "
                + " / ".join(f"{d[f'Dice {r}'].mean():.3f}" for r in ("WT", "TC", "ET"))
                + f" ({f.train_seconds:.0f} s training)")
        shutil.rmtree(jobs[key][4], ignore_errors=True)

    try:
        C.train_jobs(jobs, workers, device, progress=False, on_done=score)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return pd.DataFrame([row for key in jobs for row in scored[key]])


def summary(per_case: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice WT / TC / ET per (setting, set) over its cases and seeds, and per setting
    over all sets (``set`` = "mean of sets": the mean of the set means)."""
    cols = [f"Dice {r}" for r in ("WT", "TC", "ET")]
    per_set = per_case.groupby(["setting", "set"], sort=False)[cols].mean().reset_index()
    overall = per_set.groupby("setting", sort=False)[cols].mean().reset_index().assign(set="mean of sets")
    return pd.concat([per_set, overall], ignore_index=True)[["setting", "set", *cols]]


def paired_difference(per_case: pd.DataFrame, candidate: str, baseline: str) -> pd.DataFrame:
    """Per region (WT, TC, ET): candidate minus baseline Dice over the (set, seed, case)
    units both have, as mean, 95 % bootstrap CI, Wilcoxon p and the number of units."""
    key = ["set", "seed", "case"]
    a = per_case[per_case.setting == candidate].set_index(key)
    b = per_case[per_case.setting == baseline].set_index(key)
    both = a.index.intersection(b.index)
    if not len(both):
        raise ValueError(f"settings {candidate!r} and {baseline!r} share no (set, seed, case)")
    rows = []
    for r in ("WT", "TC", "ET"):
        x, y = a.loc[both, f"Dice {r}"].to_numpy(float), b.loc[both, f"Dice {r}"].to_numpy(float)
        mean, lo, hi = mean_ci(x - y)
        rows.append({"region": r, "difference": mean, "95% CI low": lo, "95% CI high": hi,
                     "p (Wilcoxon)": paired_test(x, y), "n": len(both)})
    return pd.DataFrame(rows)

