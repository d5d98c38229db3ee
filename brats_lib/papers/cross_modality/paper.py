"""What Zhang et al. ("Cross-Modality Deep Feature Learning for Brain Tumor Segmentation",
Pattern Recognition 2021) publish: the setup of Section 4.1 at the paper's size, the numbers
of Tables 2 and 4, and what Sections 4.2-4.3 claim of them.

* :data:`PAPER_PATCH`, :data:`PAPER_LAMBDA`, :data:`PAPER_LR`, :data:`PAPER_BATCH`,
  :data:`PAPER_TRAINING`, :data:`PAPER_DATA` - Section 4.1 (the U-Net's filters and Table 1's
  discriminator are in :mod:`~brats_lib.papers.cross_modality.networks`: ``PAPER_FEATURES``,
  ``PAPER_DISC_FILTERS``); :data:`TABLE1_DISCRIMINATOR_PARAMS` - Table 1's parameter count.
* :data:`COLUMNS` - the columns of Tables 2 and 4, in the paper's order (HD95 is "Hausdorff95").
* :data:`PAPER_TABLE2`, :data:`PAPER_TABLE4`, :data:`PAPER_TABLES`, :data:`TABLE_TITLES` - the
  published means per row (BraTS 2017 / 2018 validation sets) and each table's title.
* :data:`CLAIMS` - the orderings the text draws from the tables, checked by
  :func:`brats_lib.claims.check_claims`; :func:`holds_in` reads one in a table of means.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from brats_lib.claims import Claim, lower_is_better


#: the table this notebook's report leads with (``tables/<name>.md``, shown in reports/README.md)
HEADLINE = "claims"
#: what the notebook teaches, in the course order of reports/README.md
LESSON = 'self-supervised pre-training across modalities (CycleGAN) and mask-guided fusion'

#: Sec. 4.1: training patch, weight of the cycle loss (Eq. 6), Adam learning rate, batch
PAPER_PATCH = (128, 128, 128)
PAPER_LAMBDA = 10.0
PAPER_LR = 1e-4
PAPER_BATCH = 1
#: Sec. 4.1 (training length and data, as the paper states them)
PAPER_TRAINING = "not given (18 h 57 min in all)"
PAPER_DATA = "285 BraTS 2017 / 2018 training cases; validation sets of 46 / 66"
#: Table 1's discriminator on a 2-channel pair: its parameters counted from the table's layers
TABLE1_DISCRIMINATOR_PARAMS = 698_609

#: the regions of Tables 2 and 4, then their average
REGIONS = ("ET", "WT", "TC")
#: the metrics of Tables 2 and 4 (the paper names HD95 "Hausdorff95")
METRICS = ("Dice", "Sensitivity", "Hausdorff95")
COLUMNS = [f"{m} {r}" for m in METRICS for r in (*REGIONS, "Average")]


def _table(rows: dict[str, Sequence[float]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS)


#: Table 2 (BraTS 2017 validation set, 46 cases)
PAPER_TABLE2 = _table({
    "S_A": [.752, .799, .787, .779, .760, .787, .770, .772, 3.735, 11.640, 8.307, 7.894],
    "S_B": [.429, .886, .656, .657, .471, .875, .643, .663, 13.373, 6.072, 10.781, 10.075],
    "S_A + S_B": [.672, .864, .759, .765, .715, .834, .709, .753, 7.944, 7.032, 7.824, 7.600],
    "Ours w/o MG": [.762, .898, .808, .823, .781, .890, .809, .827, 3.144, 5.531, 7.388, 5.354],
    "Ours w CA": [.765, .896, .799, .820, .776, .884, .753, .804, 3.402, 4.981, 8.066, 5.483],
    "Ours_random": [.725, .870, .754, .783, .766, .867, .774, .802, 5.826, 6.664, 8.748, 7.079],
    "Ours_voc": [.725, .879, .778, .794, .768, .899, .766, .811, 5.202, 6.639, 8.642, 6.828],
    "Ours_self": [.751, .898, .779, .809, .785, .884, .768, .812, 3.161, 4.775, 7.238, 5.058],
    "Ours": [.757, .900, .828, .828, .756, .904, .792, .817, 3.170, 5.155, 6.999, 5.108],
})
#: Table 4 (BraTS 2018 validation set, 66 cases; the text's header is garbled, notebooks/papers.md: ET, WT, TC, Average)
PAPER_TABLE4 = _table({
    "S_A": [.786, .807, .812, .802, .862, .816, .826, .835, 4.350, 10.060, 9.670, 8.027],
    "S_B": [.444, .898, .704, .682, .468, .905, .708, .694, 11.164, 5.212, 9.895, 8.757],
    "S_A + S_B": [.721, .873, .797, .797, .770, .863, .782, .805, 4.255, 6.301, 7.323, 5.960],
    "Ours w/o MG": [.781, .900, .822, .834, .794, .916, .836, .849, 3.948, 4.449, 7.348, 5.248],
    "Ours w CA": [.788, .901, .833, .841, .836, .921, .829, .862, 3.788, 5.140, 6.265, 5.064],
    "Ours_random": [.755, .873, .771, .800, .772, .886, .811, .823, 5.340, 6.084, 9.082, 6.835],
    "Ours_voc": [.760, .896, .785, .814, .744, .911, .747, .800, 3.300, 4.700, 8.427, 5.476],
    "Ours_self": [.767, .898, .832, .833, .767, .886, .821, .825, 3.029, 5.272, 6.296, 4.865],
    "Ours": [.791, .903, .836, .843, .846, .919, .835, .867, 3.992, 4.998, 6.369, 5.120],
})
# Sec. 4.3: the alternative pairing on BraTS 2018, averages only
PAPER_TABLE4.loc["Ours (T1+FLAIR / T2+T1c)", ["Dice Average", "Sensitivity Average", "Hausdorff95 Average"]] = \
    [0.822, 0.844, 5.789]

#: the saved table's name -> the paper's table
PAPER_TABLES = {"table2": PAPER_TABLE2, "table4": PAPER_TABLE4}
#: the saved table's name -> its title in the notebook
TABLE_TITLES = {"table2": "Table 2 (paper: BraTS 2017 validation)", "table4": "Table 4 (paper: BraTS 2018 validation)"}

#: what Sections 4.2-4.3 say of the rows of Tables 2 and 4 (the metric each sentence names)
CLAIMS: list[Claim] = [
    Claim("S_A segments ET better than S_B", "S_A", "S_B", "Dice ET", source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("S_B segments WT better than S_A", "S_B", "S_A", "Dice WT", source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("S_A + S_B beats S_B", "S_A + S_B", "S_B", "Dice Average", source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("S_A + S_B is worse than S_A", "S_A", "S_A + S_B", "Dice Average", source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("the fusion branch beats S_A + S_B (Ours w/o MG)", "Ours w/o MG", "S_A + S_B", "Dice Average",
          source="Sec. 4.2, Table 2"),
    Claim("ours beats S_A + S_B by 4.6 % Dice", "Ours", "S_A + S_B", "Dice Average", source="Sec. 4.3, Table 4",
          paper="+4.6 % Dice (BraTS 2018)"),
    Claim("mask guidance helps (Ours vs w/o MG)", "Ours", "Ours w/o MG", "Dice Average", source="Sec. 4.2, Table 2"),
    Claim("mask guidance beats conventional attention", "Ours", "Ours w CA", "Dice Average",
          source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("CMFT pre-training beats random initialisation", "Ours", "Ours_random", "Dice Average",
          source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("CMFT pre-training beats 2D RGB pre-training", "Ours", "Ours_voc", "Dice Average",
          source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("CMFT pre-training beats self-reconstruction", "Ours", "Ours_self", "Dice Average",
          source="Sec. 4.2-4.3, Tables 2, 4"),
    Claim("self-reconstruction beats random initialisation", "Ours_self", "Ours_random", "Dice Average",
          source="Sec. 4.2, Table 2"),
    Claim("the paper's pairing beats (T1+FLAIR / T2+T1c)", "Ours", "Ours (T1+FLAIR / T2+T1c)", "Dice Average",
          source="Sec. 4.3", paper="0.843 vs 0.822 Dice (BraTS 2018)"),
]


def holds_in(table: pd.DataFrame, claim: Claim) -> str:
    """Whether ``claim`` holds in a table of means (the paper's Table 2 or 4): yes / no /
    tie, n/a where the table lacks a row or cell."""
    a, b = (table.loc[r, claim.metric] if r in table.index else np.nan for r in (claim.better, claim.worse))
    if not (np.isfinite(a) and np.isfinite(b)):
        return "n/a"
    if abs(a - b) < 1e-9:
        return "tie"
    return "yes" if (a < b if lower_is_better(claim.metric) else a > b) else "no"
