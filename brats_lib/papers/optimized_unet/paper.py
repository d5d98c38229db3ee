"""The published side of Futrega et al., "Optimized U-Net for Brain Tumor Segmentation"
(BraTS 2021, NVIDIA), Section 3.3: which trained rows each of Tables 1-4 prints, their
titles, the paper's per-fold numbers, and what the text claims of them.

* :data:`TABLES` / :data:`TABLE_TITLES` - the rows of Tables 1-3 (labels as printed -> keys of
  :data:`~brats_lib.papers.optimized_unet.pipeline.RUNS`), and every table's title.
* :data:`PAPER_TABLES` / :func:`paper_table` - the paper's five folds and printed mean per row.
* :data:`TABLE4_ROWS` - the two rows of Table 4 (without / with the ET post-processing).
* :data:`CLAIMS` - Section 3.3's claims, checked by :func:`brats_lib.claims.check_claims`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from brats_lib.claims import Claim


#: the table this notebook's report leads with (``tables/<name>.md``, shown in reports/README.md)
HEADLINE = "table1"
#: what the notebook teaches, in the course order of reports/README.md
LESSON = 'a strong 3D U-Net baseline and how to run an ablation honestly (folds, CIs, paired tests)'

#: table -> [(row label as printed by the paper, key of RUNS)]; the first row is the baseline
TABLES: dict[str, list[tuple[str, str]]] = {
    "table1": [("U-Net", "U-Net"), ("UNETR", "UNETR"), ("SegResNetVAE", "SegResNetVAE")],
    "table2": [("baseline", "U-Net"), ("Attention", "Attention"), ("DS", "DS"), ("Residual", "Residual"),
               ("DB", "DB"), ("Focal", "Focal")],
    "table3": [("DS", "DS"), ("Deeper", "Deeper"), ("Channels", "Channels"), ("One-hot", "One-hot"),
               ("D+C+O", "D+C+O")],
}
TABLE_TITLES = {
    "table1": "Table 1: U-Net vs UNETR vs SegResNetVAE",
    "table2": "Table 2: U-Net extensions",
    "table3": "Table 3: encoder depth, channels, one-hot input (all with DS)",
    "table4": "Table 4: post-processing (D+C+O)",
}

#: the paper's per-fold mean Dice (average of ET, TC, WT) and the means it printed
PAPER_TABLES: dict[str, dict[str, list[float]]] = {
    "table1": {"U-Net": [0.9087, 0.9100, 0.9162, 0.9238, 0.9061, 0.9130],
               "UNETR": [0.9044, 0.8976, 0.9051, 0.9111, 0.8971, 0.9031],
               "SegResNetVAE": [0.9086, 0.9090, 0.9140, 0.9219, 0.9053, 0.9118]},
    "table2": {"baseline": [0.9087, 0.9100, 0.9162, 0.9238, 0.9061, 0.9130],
               "Attention": [0.9091, 0.9110, 0.9157, 0.9232, 0.9061, 0.9130],
               "DS": [0.9111, 0.9115, 0.9175, 0.9268, 0.9074, 0.9149],
               "Residual": [0.9087, 0.9103, 0.9175, 0.9233, 0.9070, 0.9134],
               "DB": [0.9096, 0.9114, 0.9159, 0.9241, 0.9071, 0.9136],
               "Focal": [0.9094, 0.9026, 0.9146, 0.9229, 0.9072, 0.9133]},
    "table3": {"DS": [0.9111, 0.9115, 0.9175, 0.9268, 0.9074, 0.9149],
               "Deeper": [0.9118, 0.9140, 0.9170, 0.9256, 0.9079, 0.9152],
               "Channels": [0.9107, 0.9135, 0.9173, 0.9265, 0.9072, 0.9150],
               "One-hot": [0.9109, 0.9132, 0.9174, 0.9263, 0.9075, 0.9050],
               "D+C+O": [0.9118, 0.9141, 0.9176, 0.9268, 0.9076, 0.9156]},
    "table4": {"without": [0.9118, 0.9141, 0.9176, 0.9268, 0.9076, 0.9156],
               "with": [0.9132, 0.9142, 0.9189, 0.9268, 0.9086, 0.9163]},
}


def paper_table(name: str) -> pd.DataFrame:
    """The paper's table: rows = its columns (models), columns Fold 0..4, the mean of the
    folds, and the mean as printed (two printed means disagree with their folds)."""
    rows = {}
    for model, vals in PAPER_TABLES[name].items():
        folds = vals[:5]
        rows[model] = {**{f"Fold {k}": v for k, v in enumerate(folds)},
                       "Mean of folds": float(np.mean(folds)), "Mean (printed)": vals[5]}
    return pd.DataFrame(rows).T


#: the two rows of Table 4 in the per-case table of the post-processing step
TABLE4_ROWS = ("without post-processing", "with post-processing")


def _versus(table: str, *labels: str) -> str:
    """The paper's mean Dice over the five folds of ``labels`` in ``table``."""
    return " vs ".join(f"{np.mean(PAPER_TABLES[table][lab][:5]):.4f}" for lab in labels) + " (mean of the folds)"


#: what Section 3.3 says of Tables 1-4, on the mean Dice of ET, TC, WT the tables print;
#: post-processing also on ET, the region it changes (Section 2.5). Rows: keys of RUNS and TABLE4_ROWS
CLAIMS: list[Claim] = [
    Claim("the baseline U-Net achieves the highest score", "U-Net", None, "Dice mean", kind="first",
          among=tuple(k for _, k in TABLES["table1"]), source="Sec. 3.3, Table 1",
          paper=_versus("table1", "U-Net", "SegResNetVAE", "UNETR")),
    Claim("deep supervision significantly improves the baseline U-Net", "DS", "U-Net", "Dice mean",
          source="Sec. 3.3, Table 2", paper=_versus("table2", "DS", "baseline")),
    Claim("a deeper encoder slightly improves U-Net + DS", "Deeper", "DS", "Dice mean", source="Sec. 3.3, Table 3",
          paper=_versus("table3", "Deeper", "DS")),
    Claim("more channels slightly improve U-Net + DS", "Channels", "DS", "Dice mean", source="Sec. 3.3, Table 3",
          paper=_versus("table3", "Channels", "DS")),
    Claim("the one-hot channel slightly improves U-Net + DS", "One-hot", "DS", "Dice mean",
          source="Sec. 3.3, Table 3", paper=_versus("table3", "One-hot", "DS")),
    Claim("all modifications together improve the score further (D+C+O)", "D+C+O", None, "Dice mean", kind="first",
          among=tuple(k for _, k in TABLES["table3"]), source="Sec. 3.3, Table 3",
          paper=_versus("table3", "D+C+O", "Deeper")),
    Claim("post-processing improves the mean Dice", TABLE4_ROWS[1], TABLE4_ROWS[0], "Dice mean",
          source="Sec. 3.3, Table 4", paper=_versus("table4", "with", "without")),
    Claim("removing small ET improves the ET score", TABLE4_ROWS[1], TABLE4_ROWS[0], "Dice ET",
          source="Sec. 2.5, 3.3", paper="\"beneficial to the final score\" (ET-free cases: Dice 1 or 0)"),
]
