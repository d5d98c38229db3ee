"""The published side of Zhou et al., "One-pass Multi-task Networks with Cross-task Guided
Attention for Brain Tumor Segmentation" (IEEE TIP 2020): the setup of Sections III-IV at
the paper's size, the numbers of Table I recovered in ``notebooks/papers.md``, and what
Section V-A claims of them.

* :data:`PAPER_PATCH`, :data:`PAPER_CENTRE`, :data:`PAPER_DILATION`,
  :data:`TRANSFER_THRESHOLDS`, :data:`PAPER_STAGE_EPOCHS`, :data:`PAPER_MC_EPOCHS` - the
  geometry, online data transfer and training lengths of Sections III-A, III-B and IV-C.
* :data:`PAPER_SETUP` - the paper's setup, one line per setting (the notebook's scale table).
* :data:`PAPER_PARAMS`, :data:`PAPER_TABLE1`, :data:`PAPER_DERIVED`, :func:`paper_table1` -
  Table I as far as it is known (the authors' parameter counts, the recovered Dice rows and
  the cells that follow from the text).
* :data:`CLAIMS` - Section V-A's reading of Table I, checked by :func:`brats_lib.claims.check_claims`.
"""
from __future__ import annotations

import pandas as pd

from brats_lib.claims import Claim
from brats_lib.tables import shape_text
from .networks import PAPER_FEATURES


#: the table this notebook's report leads with (``tables/<name>.md``, shown in reports/README.md)
HEADLINE = "table1_claims"
#: what the notebook teaches, in the course order of reports/README.md
LESSON = 'one network for several tasks: curriculum learning and cross-task guided attention'

#: Section III-A geometry: training / tile patch, the central block each tile keeps, and the
#: dilation (voxels) of the coarse tumour that task 2 relabels
PAPER_PATCH = (32, 32, 16)
PAPER_CENTRE = (20, 20, 5)
PAPER_DILATION = 5
#: Ineq. 1-2: fraction of tumour (core) voxels for a patch to join task 2 (task 3)
TRANSFER_THRESHOLDS = (0.4, 0.5)
#: Section IV-C: epochs of the three curriculum steps, and of each MC network
PAPER_STAGE_EPOCHS = (1, 1, 18)
PAPER_MC_EPOCHS = 20

#: the paper's setup, setting -> value as the paper gives it (beside this run's in the notebook)
PAPER_SETUP: dict[str, str] = {
    "patch": shape_text(PAPER_PATCH),
    "kept centre per tile": shape_text(PAPER_CENTRE),
    "feature maps": shape_text(PAPER_FEATURES),
    "batch": "20 per task",
    "OM-Net curriculum (1, 1+2, 1+2+3)": f"{shape_text(PAPER_STAGE_EPOCHS)} epochs",
    "each MC network": f"{PAPER_MC_EPOCHS} epochs",
    "learning rate": "0.001, halved every 4 epochs",
    "patches": "about 400k / 400k / 200k patches",
    "data": "285 BraTS 2018 (260 train / 25 validation)",
    "task-1 patches centred on the tumour": "0 (anywhere in the brain)",
    "tumour-class weight in the loss": "1 (plain cross-entropy)",
    "ET weight in task 3's loss": "1",
}

#: the authors' parameter counts (millions; notebooks/papers.md, from their prototxts and Table I)
PAPER_PARAMS = {"MC1": 13.813, "MC2": 27.626, "MC3": 41.439, "OM-Net0": 13.869, "OM-Netd": 13.869,
                "OM-Net": 13.869, "OM-Net + SE": 13.870}
#: Table I (BraTS 2018 local validation subset, Dice %): the rows recovered in notebooks/papers.md
PAPER_TABLE1 = pd.DataFrame(
    [[90.41, 78.48, 72.91], [91.08, 79.11, 75.14], [91.08, 79.11, 79.53], [90.40, 79.41, 79.96],
     [91.11, 79.93, 80.26], [91.10, 79.87, 80.87], [91.03, 80.20, 80.72]],
    index=["MC1", "MC2", "MC3", "OM-Net0", "OM-Netd", "OM-Net", "OM-Net + SE"],
    columns=["Dice WT", "Dice TC", "Dice ET"])
#: Table I cells whose numbers are lost but follow from the text (Section V-A): (row, column)
#: -> (value, how it is derived). Shown beside the recovered rows and marked as derived.
PAPER_DERIVED = {
    ("OM-Net + CGA", "Dice TC"): (round(79.87 + 2.28, 2), "OM-Net's 79.87 + 2.28 (\"outperforms OM-Net by as much as 2.28 %\")"),
    ("OM-Net + CGA", "Dice ET"): (round(80.87 - 0.14, 2), "OM-Net's 80.87 - 0.14 (\"a slight performance drop ... of 0.14 %\")"),
    ("OM-Netp", "Dice TC"): (round(79.87 + 2.6, 2), "about OM-Net's 79.87 + 2.6 (\"improves ... tumor core by 2.6 %\")"),
    ("OM-Netp", "Params (M)"): (PAPER_PARAMS["OM-Net"], "OM-Net's: post-processing adds no parameters"),
}


def paper_table1() -> pd.DataFrame:
    """Table I as far as it is known: the recovered rows, the parameter counts and the
    :data:`PAPER_DERIVED` cells (their derivation is listed by the notebook)."""
    paper = PAPER_TABLE1.copy()
    paper.insert(0, "Params (M)", pd.Series(PAPER_PARAMS))
    for (row, col), (value, _) in PAPER_DERIVED.items():
        paper.loc[row, col] = value
    return paper


def _paper_gain(better: str, worse: str) -> str:
    """Table I's Dice differences (better - worse) per region, as recovered."""
    d = PAPER_TABLE1.loc[better] - PAPER_TABLE1.loc[worse]
    return ", ".join(f"{c.split()[1]} {v:+.2f}" for c, v in d.items()) + " (Dice %)"


#: what Section V-A says of Table I's rows, each on the region the text names (mean Dice
#: of ET, TC, WT where it names none); checked by :func:`brats_lib.claims.check_claims`
CLAIMS: list[Claim] = [
    Claim("more models in MC, better Dice: MC2 beats MC1", "MC2", "MC1", "Dice mean", source="Sec. V-A1, Table I",
          paper=_paper_gain("MC2", "MC1")),
    Claim("more models in MC, better Dice: MC3 beats MC2 (its third network decides ET only)", "MC3", "MC2",
          "Dice ET", source="Sec. V-A1, Table I", paper=_paper_gain("MC3", "MC2")),
    Claim("OM-Net beats MC3, especially on TC and ET", "OM-Net", "MC3", "Dice mean", source="Sec. V-A2, Table I",
          paper=_paper_gain("OM-Net", "MC3")),
    Claim("OM-Net beats OM-Net0 (curriculum + data transfer)", "OM-Net", "OM-Net0", "Dice mean",
          source="Sec. V-A2, Table I", paper=_paper_gain("OM-Net", "OM-Net0")),
    Claim("OM-Net beats OM-Netd (curriculum)", "OM-Net", "OM-Netd", "Dice mean", source="Sec. V-A2, Table I",
          paper=_paper_gain("OM-Net", "OM-Netd")),
    Claim("OM-Net + CGA beats OM-Net by as much as 2.28 on TC Dice", "OM-Net + CGA", "OM-Net", "Dice TC",
          source="Sec. V-A3, Table I", paper="+2.28 TC Dice"),
    Claim("OM-Net + CGA beats OM-Net + SE", "OM-Net + CGA", "OM-Net + SE", "Dice mean", source="Sec. V-A3, Table I"),
    Claim("OM-Net + CGA significantly beats CGA- (Pt, Pn in CompSeg)", "OM-Net + CGA", "OM-Net + CGA-", "Dice mean",
          source="Sec. V-A3, Table I", paper="\"significantly outperforms\""),
    Claim("OM-Net + CGA beats CGAt (upper CompSeg branch only)", "OM-Net + CGA", "OM-Net + CGAt", "Dice mean",
          source="Sec. V-A3, Table I"),
    Claim("OM-Net + CGA beats CGAn (lower CompSeg branch only)", "OM-Net + CGA", "OM-Net + CGAn", "Dice mean",
          source="Sec. V-A3, Table I"),
    Claim("post-processing improves OM-Net's TC Dice by 2.6", "OM-Netp", "OM-Net", "Dice TC",
          source="Sec. V-A4, Table I", paper="+2.6 TC Dice"),
    Claim("post-processing slightly improves OM-Net's WT Dice", "OM-Netp", "OM-Net", "Dice WT",
          source="Sec. V-A4, Table I", paper="\"slightly\""),
    Claim("post-processing improves OM-Net + CGA on WT", "OM-Net + CGAp", "OM-Net + CGA", "Dice WT",
          source="Sec. V-A4, Table I"),
    Claim("post-processing improves OM-Net + CGA on TC", "OM-Net + CGAp", "OM-Net + CGA", "Dice TC",
          source="Sec. V-A4, Table I"),
]
