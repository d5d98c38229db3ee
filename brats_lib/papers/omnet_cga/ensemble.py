"""Section V-C: OM-Net + CGA* - OM-Net + CGA trained on several folds of the pool and the
fold models' probabilities averaged (CGA*), then post-processed (CGA*p).

* :func:`train_fold_ensemble` - one OM-Net + CGA per fold of ``p.ensemble_folds`` folds of the pool.
* :func:`evaluate_ensemble` - CGA*, CGA*p and one fold model alone on the held-out cases (Dice %).
* :func:`ensemble_table` - their mean Dice per region.

The paper trains ten fold models (nine folds each, the tenth for picking a snapshot); here
every fold model keeps its last epoch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch.nn as nn
from tqdm.auto import tqdm

from brats_lib import metrics as M
from brats_lib.data import LoadedCase
from brats_lib.sampling import make_splits
from .params import OMNetParams
from .pipeline import ROWS, Row, predict, task_case, train_row

#: the fold ensemble and its post-processed form (rows of their own, not of Table I)
STAR = Row("OM-Net + CGA*", "omnet_cga")
STAR_P = Row("OM-Net + CGA*p", "omnet_cga", post=True)
#: the label of the first fold model alone, the ensemble's baseline
SINGLE = "one fold model (OM-Net + CGA)"


def train_fold_ensemble(pool: Sequence[str], cases: Mapping[str, LoadedCase], p: OMNetParams,
                        out_dir: str | Path, device=None, progress: bool = True) -> list[nn.Module]:
    """Train OM-Net + CGA (:func:`~.pipeline.train_row`) on the training part of each of
    ``p.ensemble_folds`` folds of ``pool`` (:func:`brats_lib.sampling.make_splits`, seed
    ``p.seed``), fold ``k`` from seed ``p.seed + 7000 + k`` into ``out_dir/fold<k>``; returns
    the fold models in fold order."""
    nets: list[nn.Module] = []
    splits = make_splits(list(pool), p.ensemble_folds, p.seed)
    for k, fold in enumerate(tqdm(splits, desc="CGA* fold models", disable=not progress)):
        train = [task_case(cases[c], p.dilation) for c in fold["train"]]
        res = train_row(ROWS["OM-Net + CGA"], train, p, Path(out_dir) / f"fold{k}", seed=p.seed + 7000 + k,
                        device=device)
        nets += res.nets
    return nets


def evaluate_ensemble(nets: Sequence[nn.Module], cases: Sequence[LoadedCase], p: OMNetParams, device=None,
                      progress: bool = True) -> pd.DataFrame:
    """Per held-out case: Dice (%) of WT, TC, ET of the ensemble of ``nets``
    (:data:`STAR`, probabilities averaged), of the ensemble post-processed (:data:`STAR_P`)
    and of the first fold model alone (:data:`SINGLE`). Columns: row, case, Dice WT/TC/ET."""
    scores = []
    for lc in tqdm(list(cases), desc="ensemble on held-out cases", disable=not progress):
        for label, row, members in ((STAR.label, STAR, nets), (STAR_P.label, STAR_P, nets),
                                    (SINGLE, ROWS["OM-Net + CGA"], nets[:1])):
            m = M.evaluate_labels(predict(row, list(members), lc, p, device), lc.label, lc.spacing)
            scores.append({"row": label, "case": lc.case_id, **{f"Dice {r}": 100 * m[r]["Dice"] for r in ("WT", "TC", "ET")}})
    return pd.DataFrame(scores)


def ensemble_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice (%) of WT, TC, ET per row of :func:`evaluate_ensemble`'s table."""
    return scores.groupby("row")[["Dice WT", "Dice TC", "Dice ET"]].mean()
