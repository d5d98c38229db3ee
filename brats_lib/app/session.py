"""A notebook's setup and closing in one place.

>>> S = session.start("hnfnetv2", profile, data_dir, output_dir, overrides)   # first cell
>>> p, out, device = S.p, S.out, S.device
>>> data = S.cases(holdout=p.holdout_cases)      # cases, folds (and a held-out set)
>>> S.clock.lap("training")                       # one lap per cell
>>> S.finish(rows=list(...))                      # time split, manifest, closing line

* :func:`start` -> :class:`Session`: the validated parameters, the output folder (the
  runner's staging folder, or ``runs/<notebook>/<profile>/`` by hand), a cleared
  ``runs/`` folder for checkpoints, the device, the real-case folder, the stopwatch.
* :meth:`Session.cases` -> :class:`Cases`: loaded cases, the split file's folds, the
  held-out cases; :meth:`Cases.train` / :meth:`Cases.val` give a fold's cases.
* :func:`output_folder`, :class:`Stopwatch` - the two parts notebooks used on their own.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from brats_lib import data as D
from brats_lib.app import profiles
from brats_lib.manifest import write_manifest
from brats_lib.paths import RUNS_DIR, resolve
from brats_lib.sampling import holdout_split, load_or_create_splits, splits_path
from brats_lib.tables import show_table


def output_folder(notebook: str, output_dir: str | Path | None = None, profile: str = "cpu") -> Path:
    """Where a notebook writes its tables and figures: ``output_dir`` (the runner passes
    its staging folder), or, for a notebook run by hand (JupyterLab, papermill), the
    git-ignored ``runs/<notebook>/<profile>/``, said in the output. Committed reports
    under ``reports/`` are written only by ``python -m brats_lib run`` / ``reproduce``,
    which replace a report whole when its notebook finished."""
    if output_dir:
        folder = Path(output_dir)
    else:
        folder = RUNS_DIR / notebook / profile
        try:
            shown = folder.relative_to(Path.cwd())
        except ValueError:
            shown = folder
        print(f"A hand run: tables, figures and checkpoints go to {shown}/ (reports/ is written only by "
              f"`python -m brats_lib run {notebook} --profile {profile}`).")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Stopwatch:
    """Where a notebook's wall time goes, one line per cell.

    ``clock = Stopwatch()`` in the setup cell; ``clock.lap("phase")`` at the end of a cell
    books the time since the previous lap to ``phase`` (laps of the same name add up).
    ``clock.lap("training and evaluation", training=s)`` books ``s`` seconds of it to
    ``"training"`` (e.g. the sum of the training loops' own clocks) and the rest to the
    named phase. ``clock.table()`` is the split in seconds and percent; ``clock.seconds``
    goes into the manifest.
    """

    def __init__(self, start: float | None = None):
        self.last = time.time() if start is None else float(start)
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str, **parts: float) -> None:
        now = time.time()
        spent, self.last = now - self.last, now
        for name, s in parts.items():
            s = min(float(s), spent)
            self.seconds[name] = self.seconds.get(name, 0.0) + s
            spent -= s
        self.seconds[phase] = self.seconds.get(phase, 0.0) + spent
        return None

    def table(self) -> pd.DataFrame:
        total = sum(self.seconds.values()) or 1.0
        df = pd.DataFrame({"seconds": self.seconds}).sort_values("seconds", ascending=False)
        df["share (%)"] = 100 * df["seconds"] / total
        df.loc["total"] = [sum(self.seconds.values()), 100.0]
        df.index.name = "phase"
        return df.round(1)


@dataclass
class Cases:
    """The cases of a run and its folds (``folds[k]`` = ``{"train": ids, "val": ids}``)."""

    cases: list[D.Case]
    source: str
    loaded: dict[str, D.LoadedCase]
    folds: list[dict[str, list[str]]]
    splits_file: Path
    n_folds: int
    #: cases in the folds and cases held out of them (none unless asked)
    pool: list[str]
    holdout: list[str] = field(default_factory=list)

    def train(self, k: int) -> list[D.LoadedCase]:
        return [self.loaded[c] for c in self.folds[k]["train"]]

    def val(self, k: int) -> list[D.LoadedCase]:
        return [self.loaded[c] for c in self.folds[k]["val"]]

    def describe(self) -> str:
        lines = [self.source, f"{len(self.pool)} cases in {self.n_folds} folds (split file {self.splits_file.name}), "
                 f"training {len(self.folds)}: " + ", ".join(
                     f"fold {k}: {len(f['train'])} train / {len(f['val'])} val" for k, f in enumerate(self.folds))]
        if self.holdout:
            lines.append(f"{len(self.holdout)} held-out cases: " + ", ".join(self.holdout))
        return "\n".join(lines)


@dataclass
class Session:
    """What every notebook sets up first (see the module docstring)."""

    notebook: str
    profile: str
    p: Any
    out: Path
    runs_dir: Path
    device: torch.device
    real_dir: Path | None
    clock: Stopwatch
    t0: float
    data: Cases | None = None

    @property
    def has_real(self) -> bool:
        """Real cases to show: the folder exists and the profile asks for some."""
        return (self.real_dir is not None and self.real_dir.is_dir()
                and getattr(self.p, "real_cases", 1) > 0)

    def real_cases(self) -> list[D.LoadedCase]:
        """The first ``real_cases`` real cases of ``real_dir`` (none without it), loaded and,
        where the profile sets ``real_spacing``, resampled to it (printed)."""
        if not self.has_real:
            return []
        spacing = getattr(self.p, "real_spacing", None)
        out = []
        for case in D.discover_cases(self.real_dir)[: self.p.real_cases]:
            lc = D.load_case(case)
            if spacing:
                small = D.resample_case(lc, spacing)
                print(f"real case {lc.case_id}: {'x'.join(map(str, lc.image.shape[1:]))} at "
                      f"{'/'.join(f'{s:g}' for s in lc.spacing)} mm resampled to "
                      f"{'x'.join(map(str, small.image.shape[1:]))} at {spacing:g} mm (real_spacing), "
                      f"the scale of the phantoms the networks learnt on")
                lc = small
            out.append(lc)
        return out

    def cases(self, holdout: int = 0, progress: bool = True) -> Cases:
        """Load the profile's cases (a real folder or phantoms), hold ``holdout`` of them
        out (stratified), and read or create the split file of the rest; printed."""
        p = self.p
        cases, source = D.open_source(p.data_dir and resolve(p.data_dir), p.phantom_cases + holdout, p.seed,
                                      p.phantom_shape)
        loaded = {c.case_id: D.load_case(c) for c in tqdm(cases, desc="loading cases", disable=not progress)}
        pool, held = (holdout_split(sorted(loaded), holdout, p.seed, D.case_strata(cases)) if holdout
                      else (sorted(loaded), []))
        path = splits_path(p.splits)
        folds = load_or_create_splits(path, pool, p.n_folds, p.seed)[: p.folds]
        self.data = Cases(cases, source, loaded, folds, path, p.n_folds, list(pool), list(held))
        print(self.data.describe())
        return self.data

    def finish(self, **manifest: Any) -> dict:
        """Close the run: the time split (shown), the manifest (with it), a closing line."""
        self.clock.lap(manifest.pop("last_phase", "export"))
        show_table(self.clock.table(), floatfmt=".1f")
        wall = time.time() - self.t0
        fields = dict(notebook=self.notebook, profile=self.profile, seed=self.p.seed,
                      data_source=self.data.source if self.data else manifest.pop("data_source", "?"),
                      time_split={k: round(v, 1) for k, v in self.clock.seconds.items()}, wall_time_s=wall)
        if hasattr(self.p, "amp"):
            fields["amp"] = self.p.amp
        fields.update(manifest)
        man = write_manifest(self.out, **fields)
        print(f"report written to {self.out} in {wall:.0f} s")
        return man


def start(notebook: str, profile: str = "cpu", data_dir: str | None = None, output_dir: str | Path | None = None,
          overrides: dict | None = None, t0: float | None = None, clear_runs: bool = True) -> Session:
    """Set a notebook run up: parameters (``overrides`` replace the profile's values,
    validated the same way), output folder, cleared ``runs/`` folder (nothing is resumed),
    device (CUDA when there is one), real-case folder, stopwatch (started at ``t0``)."""
    t0 = time.time() if t0 is None else t0
    p = profiles.load(notebook, profile, **({"data_dir": data_dir} if data_dir else {}), **(overrides or {}))
    out = output_folder(notebook, output_dir, profile)
    runs_dir = out / "runs"  # checkpoints and logs of this run (git-ignored)
    if clear_runs:
        shutil.rmtree(runs_dir, ignore_errors=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return Session(notebook, profile, p, out, runs_dir, device, resolve(p.real_dir), Stopwatch(t0), t0)
