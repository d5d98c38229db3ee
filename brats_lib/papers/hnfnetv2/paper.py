"""What Jia et al. (HNF-Netv2, BraTS 2021) publish: the rows and numbers of Tables 1-3, the
setup of Section 4.1 at the paper's size, and the claims of Section 4.2.

* :data:`TABLE1_ROWS` / :data:`ROWS` - the four networks of the ablation (Table 1).
* :data:`PAPER_TABLE1`, :data:`PAPER_TABLE2`, :data:`PAPER_TABLE3` - the published numbers.
* :data:`PAPER_CROP`, :data:`PAPER_PATCH`, :data:`PAPER_STRIDE`, :data:`PAPER_MIN_ET`,
  :data:`PAPER_SETUP` - the inference geometry and training setup of Section 4.1.
* :data:`CLAIMS` - Section 4.2's reading of Table 1, checked by :mod:`brats_lib.claims`.
"""
from __future__ import annotations

import pandas as pd

from brats_lib.claims import Claim
from .networks import PAPER_UNET_FILTERS


#: the table this notebook's report leads with (``tables/<name>.md``, shown in reports/README.md)
HEADLINE = "table1"
#: what the notebook teaches, in the course order of reports/README.md
LESSON = "multi-scale fusion and attention (EMA, SDE blocks); checking a model against a paper's sizes"

#: Section 4.1: the ET volume under which ET becomes NCR/NET
PAPER_MIN_ET = 200
#: Section 4.1 inference geometry at the paper's size: centre crop, patch, window stride
PAPER_CROP = (176, 224, 155)
PAPER_PATCH = (128, 128, 128)
PAPER_STRIDE = (32, 32, 27)

#: Table 1 rows: (label as the paper prints it, registered network)
TABLE1_ROWS: list[tuple[str, str]] = [
    ("3D U-Net", "hnf_unet3d"),
    ("HNF-Net", "hnfnet"),
    ("HNF-Netv2 (intra-SDE)", "hnfnet_intra"),
    ("HNF-Netv2 (intra + inter-SDE)", "hnfnetv2"),
]
#: label -> network (the rows of :class:`~brats_lib.papers.hnfnetv2.pipeline.HNFNetv2Pipeline`)
ROWS = dict(TABLE1_ROWS)
#: network -> label, to print per-case results (keyed by network) under the paper's labels
LABELS = {name: label for label, name in TABLE1_ROWS}

#: Table 1 of the paper (BraTS 2021 training set, five-fold cross-validation; Dice in %)
PAPER_TABLE1 = pd.DataFrame(
    [[15.80, 1240.27, 85.7795, 87.4699, 92.4132],
     [16.85, 436.59, 86.6906, 89.5270, 92.8332],
     [17.31, 436.75, 87.0310, 89.9685, 93.1362],
     [17.91, 449.79, 87.7336, 90.9558, 93.4373]],
    index=[r for r, _ in TABLE1_ROWS], columns=["Params (M)", "FLOPs (G)", "Dice ET", "Dice TC", "Dice WT"])

#: the columns of Tables 2-3 (Dice in %, HD95 in mm), rows "mean" and "median"
SUMMARY_COLUMNS = ["Dice ET", "Dice TC", "Dice WT", "HD95 ET", "HD95 TC", "HD95 WT"]
#: Table 2 (BraTS 2021 validation set, the five fold models ensembled; Dice in %, HD95 in mm)
PAPER_TABLE2 = pd.DataFrame(
    [[84.8032, 87.9639, 92.5352, 14.1787, 5.8626, 3.4551],
     [90.1445, 94.0622, 94.4855, 1.4142, 1.7321, 2.2361]],
    index=["mean", "median"], columns=SUMMARY_COLUMNS)
#: Table 3 (BraTS 2021 test set)
PAPER_TABLE3 = pd.DataFrame(
    [[87.8514, 87.2985, 92.4919, 8.9184, 16.2530, 4.4895],
     [93.6785, 95.9990, 95.6831, 1.0, 1.4142, 1.7321]],
    index=["mean", "median"], columns=SUMMARY_COLUMNS)

#: Section 4.1's setup as the paper runs it, one line per setting of the notebook's scale
#: table (:func:`~brats_lib.papers.hnfnetv2.report.scale_table` adds this run's values)
PAPER_SETUP: dict[str, str] = {
    "patch / window": "128^3",
    "window stride": "32 x 32 x 27",
    "inference crop": "176 x 224 x 155",
    "HNF-Net width": "c = 32 (branches 32, 64, 128, 256)",
    "residual blocks per branch": "2",
    "EMA bases K": "256",
    "3D U-Net widths": " ".join(map(str, PAPER_UNET_FILTERS)),
    "folds trained": "5 of 5",
    "epochs x steps": "250 x (1251 x 4/5 / 4)",
    "learning rate": "0.001",
    "TTA flips (ensemble)": "7 flips (+ the original: our reading)",
    "data": "1251 BraTS 2021",
}


def paper_gain(better: str, worse: str, metric: str) -> str:
    """Table 1's Dice difference (better - worse, in %) of a per-case column ("Dice ET", ...,
    or "Dice mean": the mean of the three regions' differences); rows by network."""
    regions = ["Dice ET", "Dice TC", "Dice WT"]
    d = PAPER_TABLE1.loc[LABELS[better], regions] - PAPER_TABLE1.loc[LABELS[worse], regions]
    return f"{(d.mean() if metric == 'Dice mean' else d[metric]):+.4f} Dice %"


#: Section 4.2's reading of Table 1: each step improves the Dice of ET, TC and WT (the text
#: gives every region's gain), and HNF-Netv2 is best; rows are the per-case "row" keys
CLAIMS: list[Claim] = [
    Claim(text, better, worse, metric, source="Sec. 4.2, Table 1",
          paper=paper_gain(better, worse, metric))
    for text, better, worse in (("HNF-Net beats the 3D U-Net", "hnfnet", "hnf_unet3d"),
                                ("intra-SDE improves HNF-Net", "hnfnet_intra", "hnfnet"),
                                ("inter-SDE improves it further (HNF-Netv2)", "hnfnetv2", "hnfnet_intra"))
    for metric in ("Dice mean", "Dice ET", "Dice TC", "Dice WT")
] + [Claim("HNF-Netv2 achieves the best segmentation performance", "hnfnetv2", None, "Dice mean", kind="first",
           among=tuple(ROWS.values()), source="Sec. 4.2, Table 1", paper="the best row of Table 1 in ET, TC and WT")]
