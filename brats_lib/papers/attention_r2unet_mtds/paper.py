"""What Ma, Tang and Guo (Frontiers in Oncology 2021) publish, as data: the setup of
Sections 3.1-3.3, the rows and titles of Tables 1, 3, 4 and 6, and the claims of the
text. The paper's numeric tables were lost in our copy, so the claims are qualitative
(which row wins); :mod:`brats_lib.claims` checks them on our per-case scores.

* :data:`PAPER_CROP`, :data:`PAPER_SETUP` - the crop, sizes and training of the paper.
* :data:`PROPOSED` - the paper's proposed row (a key of
  :data:`~brats_lib.papers.attention_r2unet_mtds.pipeline.RUNS`).
* :data:`TABLES`, :data:`TABLE_TITLES` - each table's rows (table label -> row key).
* :data:`CLAIMS` - the paper's claims per table, on the whole tumour.
"""
from __future__ import annotations

from typing import Sequence

from brats_lib.claims import Claim


#: the table this notebook's report leads with (``tables/<name>.md``, shown in reports/README.md)
HEADLINE = "claims"
#: what the notebook teaches, in the course order of reports/README.md
LESSON = '2D models on slices, attention gates and multi-task deep supervision'

#: Section 3.1.2: the centre crop of every 240 x 240 axial slice
PAPER_CROP = (144, 176)

#: the paper's setup (Sections 3.1-3.3), as the scale table shows it beside this run's
PAPER_SETUP: dict[str, str] = {
    "slice crop": " x ".join(map(str, PAPER_CROP)),
    "first-level kernels": "32",
    "epochs": "50",
    "batch": "32",
    "learning rate": "0.0001",
    "SE dropout": "not given",
    "data": "BraTS 2020 (369 + 125 validation)",
}

#: the paper's proposed configuration: APR modules, SE with dropout, MTDS
PROPOSED = "Proposed (APR + SE-dropout + MTDS)"

#: table -> [(row label, key of RUNS)]; the last row is the paper's proposed row of the table,
#: the one the others are compared against
TABLES: dict[str, list[tuple[str, str]]] = {
    "table1": [("SE without dropout", "SE without dropout"), ("SE with dropout", PROPOSED)],
    "table3": [("no shortcut, no AGs", "No shortcut, no AGs"), ("shortcut, no AGs", "Shortcut, no AGs"),
               ("shortcut + AGs on skips", "Shortcut + AGs on skips (Attention U-Net)"), ("APR", "APR (no DS)")],
    "table4": [("no deep supervision", "APR (no DS)"), ("single-task DS", "Single-task DS (WT on every head)"),
               ("MTDS", PROPOSED)],
    "table6": [("U-Net", "U-Net (MONAI)"), ("Attention U-Net", "Attention U-Net (MONAI)"),
               ("UNet++", "UNet++ (MONAI)"), ("SegResNet", "SegResNet (MONAI)"), ("Ours", PROPOSED)],
}
TABLE_TITLES: dict[str, str] = {
    "table1": "Table 1: SE module with or without dropout",
    "table3": "Table 3: the APR module (without MTDS)",
    "table4": "Table 4: deep supervision",
    "table6": "Table 6: retrained comparison models",
}
_KEYS = {table: dict(rows) for table, rows in TABLES.items()}  # table -> {row label: key of RUNS}


def _first(table: str, label: str, metrics: Sequence[str], text: str, source: str) -> list[Claim]:
    """``label`` is first among the rows of ``table`` in each of ``metrics``."""
    among = tuple(_KEYS[table].values())
    return [Claim(text.format(metric=m), _KEYS[table][label], None, m, kind="first", among=among, source=source)
            for m in metrics]


#: the paper's claims per table (its numbers were lost, the text says which row wins), on
#: the whole tumour, as Sections 2.1, 3.6 and 3.7 say; rows are the per-case "row" keys (RUNS)
CLAIMS: list[Claim] = [
    Claim("dropout in the SE module improves the results", _KEYS["table1"]["SE with dropout"],
          _KEYS["table1"]["SE without dropout"], "Dice WT", source="Sec. 2.1, Table 1"),
    *_first("table3", "APR", ("Dice WT", "Sensitivity WT", "HD95 WT"),
            "APR is first in {metric}", "Sec. 3.6.1, Table 3"),
    *_first("table4", "MTDS", ("Dice WT", "Sensitivity WT", "Specificity WT", "HD95 WT"),
            "MTDS is first in every metric: {metric}", "Sec. 3.6.2, Table 4"),
    *[Claim("no deep supervision beats single-task DS", _KEYS["table4"]["no deep supervision"],
            _KEYS["table4"]["single-task DS"], m, source="Sec. 3.6.2, Table 4")
      for m in ("Dice WT", "Sensitivity WT", "HD95 WT")],
    *_first("table6", "Ours", ("Dice WT", "Sensitivity WT", "Specificity WT", "HD95 WT"),
            "ours is first in {metric}", "Sec. 3.7, Table 6"),
    Claim("ours has the fewest parameters", _KEYS["table6"]["Ours"], None, "params (M)", kind="smallest",
          among=tuple(_KEYS["table6"].values()), source="Sec. 3.7, Table 6"),
]
