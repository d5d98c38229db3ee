"""The one interface every paper's pipeline implements, and the cross-validation loop.

Modelled on nnU-Net v2's trainer (one class, hook methods a variant overrides) and
MONAI's ``Inferer`` (one call from a case to its prediction). A paper's package
(``brats_lib/papers/<paper>/``) subclasses :class:`Pipeline` and registers it with
:func:`register`; the comparison and :func:`cross_validate` then treat every paper alike.

==========================================  ================================================
method                                      what it does
==========================================  ================================================
``rows``                                    the rows of the paper's tables (label -> row spec)
``describe(p)``                             its input patch and training length under ``p``
``train_fold(row, fold, train, val, p,      train one row on one fold -> :class:`Trained`
out_dir, device)``
``probabilities(trained, case, p,           the model's probability maps of a raw case,
device)``                                   one pass without flips (its own channels)
``to_labels(trained, probs, case, p,        canonical labels: the rule of the paper's
final)``                                    tables, or (``final``) its submitted rule with
                                            post-processing
``predict(trained, case, p, tta, final,     both, with ``tta`` whole-volume flips ->
device)``                                   :class:`Prediction`
``network_inputs(trained, p)``              per network: its input shape (C, *patch) and the
                                            voxels one forward pass predicts (for MACs)
``score(prediction, case)``                 the per-case metrics of a prediction
``sources(row)`` / ``combine(row, parts)``  rows built from other rows' networks (a cascade's
                                            first stages, post-processed rows, averages)
==========================================  ================================================

:func:`train` trains one row on one fold (its sources first, each once); :func:`cross_validate`
is the rows x folds loop of the paper notebooks: train, predict each validation case,
score it; it returns the per-case table and the trained rows.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch.nn as nn
from tqdm.auto import tqdm

from . import labels as L
from . import metrics as M
from .inference import flip_average


@dataclass
class Trained:
    """One row trained on one fold: the networks inference runs (eval mode, on the
    training device), the training logs, wall time, and the paper's own results
    (``state``: e.g. the fit result and chosen learning rate, the pre-training)."""

    row: str
    fold: int
    networks: list[nn.Module]
    logs: list[pd.DataFrame] = field(default_factory=list)
    train_seconds: float = 0.0
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def epoch_seconds(self) -> float:
        """Mean wall time of one training epoch over every log (NaN without timings)."""
        times = [t for log in self.logs if "time_s" in log for t in log["time_s"]]
        return float(np.mean(times)) if times else float("nan")


@dataclass
class Prediction:
    """Canonical labels of a case (:mod:`brats_lib.labels`), and the probability maps
    they came from where the model has them (whole volume, the model's channels)."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None


class Pipeline:
    """Base class of a paper's pipeline (see the module docstring for the hooks)."""

    #: the notebook (and parameter folder) of the paper
    notebook: str = ""
    #: the rows of the paper's tables: label -> the paper's row description
    rows: Mapping[str, Any] = {}
    #: how its training length reads, filled from the parameters (``str.format`` of their fields)
    training_text: str = "{epochs} x {steps_per_epoch} steps"

    def describe(self, p) -> dict[str, str]:
        """The network input (``patch``) and the training length (``training``) under ``p``."""
        patch = getattr(p, "patch_size", None) or getattr(p, "crop", None)
        return {"patch": "x".join(map(str, patch)), "training": self.training_text.format(**dataclasses.asdict(p))}

    def train_fold(self, row: str, fold: int, train: Sequence, val: Sequence, p, out_dir: str | Path,
                   device=None) -> Trained:
        raise NotImplementedError

    def probabilities(self, trained: Trained, case, p, device=None) -> np.ndarray:
        raise NotImplementedError

    def to_labels(self, trained: Trained, probs: np.ndarray, case, p, final: bool = False) -> np.ndarray:
        raise NotImplementedError

    def predict(self, trained: Trained, case, p, tta: int = 1, final: bool = False, device=None) -> Prediction:
        """``tta`` whole-volume flips (:func:`~brats_lib.inference.flip_average`) of
        :meth:`probabilities`, then :meth:`to_labels`."""
        probs = flip_average(lambda c: self.probabilities(trained, c, p, device), case, tta)
        return Prediction(self.to_labels(trained, probs, case, p, final), probs)

    def network_inputs(self, trained: Trained, p) -> list[tuple[tuple[int, ...], int]]:
        raise NotImplementedError

    def sources(self, row: str) -> tuple[str, ...]:
        """The rows whose trained networks ``row`` is made of: itself, unless the paper
        builds it from others (then :meth:`combine` makes it)."""
        return (row,)

    def combine(self, row: str, parts: Sequence[Trained]) -> Trained:
        """``row`` from its :meth:`sources`' trained results (one per source)."""
        raise NotImplementedError(f"{self.notebook}: row {row!r} has sources but no combine")

    def score(self, prediction: Prediction, case) -> dict[str, float]:
        """Dice, HD95, sensitivity, specificity and PPV of ET, TC, WT (:mod:`brats_lib.metrics`)."""
        return M.case_scores(prediction.labels, case.label, case.spacing)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.notebook}: {len(self.rows)} rows>"


_PIPELINES: dict[str, Pipeline] = {}


def register(cls: type[Pipeline]) -> type[Pipeline]:
    """Class decorator: register (an instance of) a paper's pipeline under its notebook."""
    if not cls.notebook:
        raise ValueError(f"{cls.__name__} names no notebook")
    if cls.notebook in _PIPELINES and type(_PIPELINES[cls.notebook]) is not cls:
        raise ValueError(f"pipeline {cls.notebook!r} is registered twice")
    _PIPELINES[cls.notebook] = cls()
    return cls


def available() -> list[str]:
    return sorted(_PIPELINES)


def get(notebook: str) -> Pipeline:
    """The pipeline of ``notebook`` (``import brats_lib.papers`` registers all five)."""
    try:
        return _PIPELINES[notebook]
    except KeyError:
        raise KeyError(f"no pipeline {notebook!r}; registered: {', '.join(available()) or 'none'} "
                       "(import brats_lib.papers to register the papers' pipelines)") from None


def with_dice_mean(per_case: pd.DataFrame) -> pd.DataFrame:
    """``Dice mean``: the mean of the three regions' Dice, as every table reports it."""
    per_case["Dice mean"] = per_case[[f"Dice {r}" for r in L.REGIONS]].mean(axis=1)
    return per_case


def train(pipeline: Pipeline, row: str, fold: int, train_cases: Sequence, val_cases: Sequence, p,
          out_dir: str | Path, device=None, cache: dict[tuple[str, int], Trained] | None = None) -> Trained:
    """``row`` trained on one fold: ``pipeline.train_fold`` for a row of its own, or its
    :meth:`~Pipeline.sources` trained (each once: ``cache`` keeps them by ``(row, fold)``)
    and combined. ``out_dir`` is ``<folder>/<row>/<fold folder>``; a source's checkpoints go
    to ``<folder>/<source>/<fold folder>``."""
    cache = {} if cache is None else cache
    if (row, fold) in cache:
        return cache[row, fold]
    sources = pipeline.sources(row)
    t0 = time.time()
    if sources == (row,):
        res = pipeline.train_fold(row, fold, train_cases, val_cases, p, Path(out_dir), device)
        res.train_seconds = res.train_seconds or time.time() - t0
    else:
        where = Path(out_dir)
        parts = [train(pipeline, s, fold, train_cases, val_cases, p, where.parent.parent / safe_name(s) / where.name,
                       device, cache) for s in sources]
        res = pipeline.combine(row, parts)
    cache[row, fold] = res
    return res


def cross_validate(pipeline: Pipeline, rows: Sequence[str], folds: Sequence[Mapping[str, Sequence[str]]],
                   cases: Mapping[str, Any], p, out_dir: str | Path, device=None,
                   tta: int | Callable[[str], int] = 1, final: bool = False,
                   on_prediction: Callable[[str, int, Any, Prediction], None] | None = None,
                   timed: bool = False, progress: bool = True
                   ) -> tuple[pd.DataFrame, dict[tuple[str, int], Trained]]:
    """Train every row on every fold (``folds[k]["train"]``) and score it on the fold's
    validation cases (``folds[k]["val"]``), ``cases`` mapping case ids to loaded cases.

    ``tta``: flips, or a function of the row giving them; ``on_prediction(row, fold,
    case, prediction)`` sees every prediction (to keep probabilities, say); ``timed`` adds
    each prediction's wall time (``seconds``). Checkpoints and logs go to
    ``out_dir/<row>/fold<k>``. Returns the per-case table (row, fold, case, the
    :meth:`Pipeline.score` columns, ``Dice mean``) and ``{(row, fold): Trained}`` (every
    row asked for, and the sources they were built from)."""
    trained, table = {}, []
    bar = tqdm([(r, k) for r in rows for k in range(len(folds))], desc="rows x folds", disable=not progress)
    for row, k in bar:
        bar.set_postfix(row=row, fold=k)
        val = [cases[c] for c in folds[k]["val"]]
        res = train(pipeline, row, k, [cases[c] for c in folds[k]["train"]], val, p,
                    Path(out_dir) / safe_name(row) / f"fold{k}", device, trained)
        flips = tta(row) if callable(tta) else tta
        for lc in val:
            t0 = time.perf_counter()
            pred = pipeline.predict(res, lc, p, tta=flips, final=final, device=device)
            took = {"seconds": time.perf_counter() - t0} if timed else {}
            if on_prediction is not None:
                on_prediction(row, k, lc, pred)
            table.append({"row": row, "fold": k, "case": lc.case_id, **took, **pipeline.score(pred, lc)})
    return with_dice_mean(pd.DataFrame(table)), trained


def safe_name(row: str) -> str:
    """A row label as a folder name (letters, digits, ``-``, ``_``, ``.``; others dropped)."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" if ch == " " else "" for ch in row)
    return keep or "row"
