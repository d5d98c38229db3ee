"""The papers' claims, checked on our per-case scores: one claim type, one checker.

A sentence of a paper such as "OM-Net + CGA outperforms OM-Net by 2.28 % on the Dice score
of the tumour core" becomes a :class:`Claim`: the row the paper says wins (``better``), the
row it is compared with (``worse``) and the per-case column that decides it (``metric``,
here ``"Dice TC"``). :func:`check_claims` pairs the two rows' values case by case (same
fold, same case) and reports for every claim:

* the mean paired difference, oriented so that a positive difference always goes the
  paper's way (for HD95 / Hausdorff columns lower is better, so it is ``worse - better``);
* its 95 % percentile-bootstrap confidence interval (:func:`brats_lib.statistics.mean_ci`);
* the two-sided Wilcoxon signed-rank p-value (:func:`brats_lib.statistics.paired_test`);
* the **verdict**: ``holds`` when p < alpha and the difference is positive,
  ``contradicted`` when p < alpha and it is negative, ``not significant`` otherwise
  (``n/a: <why>`` when a row or the column is missing).

Two other kinds of claim: ``"first"`` (``better`` is the best of the rows ``among``; it is
tested, as above, against the runner-up among the others) and ``"smallest"`` (``better``
has the smallest size among ``among``, e.g. parameters: an exact comparison, no test).

**The empty-region rule.** BraTS scores a region that is absent from both the reference
and the prediction as perfect (Dice 1, HD95 0). A network that never predicts ET thus
scores 1 on every ET-free case, and at a few dozen cases that alone can decide a verdict.
From the voxel-count columns of :func:`brats_lib.metrics.case_scores` (``pred voxels R``,
``ref voxels R``) the checker flags (a) a compared row that predicts the region in no case
while some references lack it, and (b) a verdict that changes when only the cases whose
reference holds every region of the metric are kept ("on the k cases with ET: ...").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .statistics import mean_ci, paired_test

KINDS = ("paired", "first", "smallest")
#: columns of :func:`check_claims`' table, in order
COLUMNS = ["claim", "source", "metric", "compared", "n", "ours: better", "ours: other", "difference", "95% CI", "p",
           "verdict", "empty-region rule", "paper"]
#: the last word of a per-case column -> the regions it averages or names
_REGIONS = {"mean": ("ET", "TC", "WT"), "Average": ("ET", "TC", "WT"),
            **{r: (r,) for r in ("ET", "TC", "WT", "NCR", "ED")}, "NCR/NET": ("NCR",)}


@dataclass(frozen=True)
class Claim:
    """One claim of a paper about its table's rows.

    ``text``: the paper's words, short; ``better``: the row it says wins; ``worse``: the row
    it is compared with (``kind="paired"``); ``metric``: the per-case column that decides it
    ("Dice TC", "HD95 WT", "Dice mean") or, for ``kind="smallest"``, the size it compares
    ("params (M)"); ``among``: the rows of a ``"first"`` / ``"smallest"`` claim; ``source``:
    where the paper says it; ``paper``: the paper's number or words for it ("" if none).
    """

    text: str
    better: str
    worse: str | None
    metric: str
    kind: str = "paired"
    among: tuple[str, ...] = ()
    source: str = ""
    paper: str = ""

    def __post_init__(self):
        object.__setattr__(self, "among", tuple(self.among))
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.text!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.kind == "paired" and not self.worse:
            raise ValueError(f"claim {self.text!r}: a paired claim needs the row it is compared with (worse)")
        if self.kind != "paired" and self.better not in self.among:
            raise ValueError(f"claim {self.text!r}: a {self.kind!r} claim needs 'among' to hold {self.better!r}")

    @property
    def rows(self) -> tuple[str, ...]:
        """Every row the claim names."""
        return (self.better, self.worse) if self.kind == "paired" else self.among


def lower_is_better(metric: str) -> bool:
    """HD95 and Hausdorff distances: lower is better; every other score: higher."""
    return metric.startswith(("HD95", "Hausdorff"))


def regions_of(metric: str) -> tuple[str, ...]:
    """The regions a per-case column depends on: "Dice ET" -> (ET,), "Dice mean" -> (ET, TC, WT)."""
    return _REGIONS.get(metric.rpartition(" ")[2], ())


def verdict(difference: float, p: float, alpha: float = 0.05) -> str:
    """holds / contradicted / not significant, from the oriented mean difference and p."""
    if p < alpha and difference > 0:
        return "holds"
    if p < alpha and difference < 0:
        return "contradicted"
    return "not significant"


# ------------------------------------------------------------------ the checker
def check_claims(claims: Sequence[Claim], per_case: pd.DataFrame, row_col: str = "row",
                 keys: Sequence[str] = ("fold", "case"), sizes: Mapping[str, float] | pd.Series | None = None,
                 alpha: float = 0.05) -> pd.DataFrame:
    """One line per claim (columns :data:`COLUMNS`): the paired cases, our means, the
    oriented mean difference with its bootstrap CI, the Wilcoxon p-value, the verdict and
    the empty-region flag. ``per_case``: one line per (row, case); ``row_col`` names the
    row, ``keys`` (those present) pair the cases; ``sizes``: row -> size for "smallest"."""
    present = [k for k in keys if k in per_case.columns]
    if not present:
        raise ValueError(f"per_case has none of the columns {list(keys)} that pair its cases")
    keys = present
    out = pd.DataFrame([_check(c, per_case, row_col, keys, sizes, alpha) for c in claims], columns=COLUMNS)
    out.attrs["alpha"] = alpha
    return out


def _check(claim: Claim, per_case, row_col, keys, sizes, alpha) -> dict:
    line = {"claim": claim.text, "source": claim.source, "metric": claim.metric, "paper": claim.paper,
            "compared": claim.better + (f" vs {claim.worse}" if claim.worse else ""), "empty-region rule": ""}
    if claim.kind == "smallest":
        return {**line, **_smallest(claim, sizes)}
    missing = [r for r in claim.rows if not (per_case[row_col] == r).any()]
    if missing or claim.metric not in per_case.columns:
        why = f"no per-case scores of {', '.join(missing)}" if missing else f"no column {claim.metric!r}"
        return {**line, "n": 0, "verdict": f"n/a: {why}"}
    cases = _paired_cases(per_case, claim.rows, claim.metric, row_col, keys)
    sign = -1.0 if lower_is_better(claim.metric) else 1.0
    other = claim.worse
    if claim.kind == "first":  # the runner-up: the best of the others by mean, on the same cases
        others = [r for r in claim.among if r != claim.better]
        other = max(others, key=lambda r: sign * cases[r][claim.metric].mean())
        line["compared"] = f"{claim.better} vs {other} (best of the other {len(others)})"
    a, b = cases[claim.better], cases[other]
    stats = _paired(a[claim.metric], b[claim.metric], sign, alpha)
    flag = _empty_region_flag(claim.metric, {claim.better: a, other: b}, sign, alpha, stats["verdict"])
    return {**line, **stats, "empty-region rule": flag}


def _paired_cases(per_case: pd.DataFrame, rows: Sequence[str], metric: str, row_col: str,
                  keys: list[str]) -> dict[str, pd.DataFrame]:
    """Each row's per-case lines, indexed by ``keys``, on the cases that every row scored
    (``metric`` not NaN), in the same order."""
    frames = {}
    for r in rows:
        d = per_case[per_case[row_col] == r].set_index(keys)
        if d.index.duplicated().any():
            raise ValueError(f"row {r!r} has several per-case lines with the same {keys}: cannot pair cases")
        frames[r] = d[d[metric].notna()]
    common = frames[rows[0]].index
    for d in frames.values():
        common = common.intersection(d.index, sort=False)
    return {r: d.loc[common] for r, d in frames.items()}


def _paired(x: pd.Series, y: pd.Series, sign: float, alpha: float) -> dict:
    """Statistics of ``x`` (the claimed winner) against ``y`` on the same cases."""
    if len(x) == 0:
        return {"n": 0, "verdict": "n/a: no case scored by both rows"}
    diff = sign * (x.to_numpy(float) - y.to_numpy(float))
    mean, low, high = mean_ci(diff)
    p = paired_test(x, y)
    return {"n": len(diff), "ours: better": float(x.mean()), "ours: other": float(y.mean()), "difference": mean,
            "95% CI": (low, high), "p": p, "verdict": verdict(mean, p, alpha)}


def _smallest(claim: Claim, sizes) -> dict:
    """Exact: ``better`` is strictly smaller than every other row of ``among``."""
    sizes = pd.Series(dict(sizes) if sizes is not None else {}, dtype=float)
    missing = [r for r in claim.among if r not in sizes.index or not np.isfinite(sizes[r])]
    if missing:
        return {"n": "exact", "verdict": f"n/a: no {claim.metric} of {', '.join(missing)}"}
    others = sizes[[r for r in claim.among if r != claim.better]]
    diff = float(others.min() - sizes[claim.better])
    return {"compared": f"{claim.better} vs {others.idxmin()} (smallest of the other {len(others)})", "n": "exact",
            "ours: better": float(sizes[claim.better]), "ours: other": float(others.min()), "difference": diff,
            "95% CI": "exact", "p": "exact", "verdict": "holds" if diff > 0 else "contradicted"}


# ------------------------------------------------------------------ the empty-region rule
def _empty_region_flag(metric: str, cases: dict[str, pd.DataFrame], sign: float, alpha: float,
                       overall: str) -> str:
    """What the empty-region rule does to this comparison ("" when it plays no part)."""
    regions = regions_of(metric)
    if not regions:
        return ""
    a, b = cases.values()
    columns = [f"{w} voxels {r}" for r in regions for w in ("pred", "ref")]
    if any(c not in d.columns for c in columns for d in (a, b)):
        return "not checked (no voxel counts)"
    notes = []
    score = metric.rpartition(" ")[0]  # "Dice" of "Dice mean"
    perfect = "0" if lower_is_better(metric) else "1"
    for r in regions:
        free = int((a[f"ref voxels {r}"] == 0).sum())
        for row, d in cases.items():
            if free and (d[f"pred voxels {r}"] == 0).all():
                notes.append(f"{row} predicts no {r} in any case: its {score} {r} is {perfect} on the {free} "
                             f"{r}-free cases by the empty-region rule")
    holding = (a[[f"ref voxels {r}" for r in regions]] > 0).all(axis=1).to_numpy()
    named = " and ".join(filter(None, (", ".join(regions[:-1]), regions[-1])))  # "ET, TC and WT"
    if not holding.any():
        notes.append(f"no reference holds {named}: the scores compared rest on the empty-region rule")
    elif not holding.all():
        sub = _paired(a[metric][holding], b[metric][holding], sign, alpha)["verdict"]
        if sub != overall:
            notes.append(f"on the {int(holding.sum())} cases with {named}: {sub}")
    return "; ".join(notes)


# ------------------------------------------------------------------ showing the table
def formatted(claims: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table for reading: numbers to ``digits`` significant digits, the CI as
    "[low, high]", empty cells for what a claim does not have."""
    def cell(v):
        if isinstance(v, tuple):
            return "[" + ", ".join(f"{x:.{digits}g}" for x in v) + "]"
        if isinstance(v, (float, np.floating)):
            return "" if not np.isfinite(v) else f"{v:.{digits}g}"
        return v

    return claims.apply(lambda col: col.map(cell)).fillna("")


def explain(claims: pd.DataFrame, alpha: float | None = None) -> str:
    """One Markdown paragraph: how the verdicts of ``claims`` were decided, and their count."""
    alpha = claims.attrs.get("alpha", 0.05) if alpha is None else alpha
    counts = claims["verdict"].str.split(":").str[0].value_counts()
    n = pd.to_numeric(claims["n"], errors="coerce")
    n = n[n > 0]
    text = (f"**Verdicts.** Each claim's rows are paired case by case; *difference* is our mean paired "
            f"difference, oriented so that > 0 goes the paper's way (lower is better for HD95), with its 95 % "
            f"percentile-bootstrap interval; *p* is the two-sided Wilcoxon signed-rank test over the n paired "
            f"cases. A claim **holds** when p < {alpha:g} and the difference is positive, is **contradicted** when "
            f"p < {alpha:g} and it is negative, and is **not significant** otherwise; \"first\" claims are tested "
            f"against the best other row, \"smallest\" claims compare sizes exactly. Here: "
            + ", ".join(f"{counts[v]} {v}" for v in counts.index) + ".")
    flagged = int((claims["empty-region rule"].fillna("") != "").sum())
    if flagged:
        text += f" {flagged} of {len(claims)} verdicts carry an empty-region note: read them before the verdict."
    if len(n) and n.min() < 10:  # few cases: say how small a p-value can get
        floor = 2 / 2 ** n.min()
        text += (f" With {int(n.min())} paired cases the smallest p a two-sided Wilcoxon test can reach is "
                 f"{floor:.3g}" + (", so such a claim cannot be significant." if floor >= alpha else "."))
    return text
