"""Statistics over per-case scores: confidence intervals, paired tests, rankings.

* :func:`mean_ci` / :func:`format_ci` - mean and 95 % CI across cases (percentile bootstrap).
* :func:`paired_test` - two-sided Wilcoxon signed-rank p-value of paired scores.
* :func:`ci_table` - one row per method: mean [CI] of each column, and p against a baseline.
* :func:`holm`, :func:`pairwise_wilcoxon`, :func:`brats_ranking` - many methods at once.
"""
from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from . import labels as L


def mean_ci(values: Sequence[float], level: float = 0.95, resamples: int = 5000,
            seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): percentile-bootstrap interval of the mean across cases (NaNs dropped).

    Per-case Dice and HD95 are skewed and bounded (HD95 of an empty prediction is the
    373.13 mm penalty), so a Student-t interval can leave the possible range (negative
    HD95); the bootstrap interval stays within the observed values. Seeded: the same
    values give the same interval.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    m = float(v.mean())
    if v.size < 2 or v.std() == 0:
        return m, m, m
    res = stats.bootstrap((v,), np.mean, confidence_level=level, n_resamples=resamples, method="percentile",
                          random_state=np.random.default_rng(seed))
    return m, float(res.confidence_interval.low), float(res.confidence_interval.high)


def format_ci(values: Sequence[float], digits: int = 3, scale: float = 1.0) -> str:
    m, lo, hi = mean_ci(np.asarray(values, float) * scale)
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def paired_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired per-case values (1.0 if all equal)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.allclose(a, b):
        return 1.0
    return float(stats.wilcoxon(a, b).pvalue)


def ci_table(per_case: pd.DataFrame, rows: Mapping[str, str] | Sequence[str], columns: Sequence[str],
             base: str | None = None, digits: Mapping[str, int] | None = None, row_col: str = "row",
             test_column: str = "Dice mean", p_label: str | None = None) -> pd.DataFrame:
    """One row per method: ``mean [95 % CI]`` (:func:`format_ci`) of each of ``columns``
    over its cases, and, with a ``base`` row, the :func:`paired_test` p-value of
    ``test_column`` against it (column ``p_label``, default ``"p vs <base>"``).

    ``rows``: table label -> value of ``per_case[row_col]`` (or a list of values, shown as
    they are); ``digits``: decimals per column (3 unless given)."""
    rows = dict(rows) if isinstance(rows, Mapping) else {r: r for r in rows}
    digits = dict(digits or {})
    by_case = {label: per_case[per_case[row_col] == key].set_index("case") for label, key in rows.items()}
    out = {}
    for label, d in by_case.items():
        row = {c: format_ci(d[c], digits=digits.get(c, 3)) for c in columns}
        if base is not None:
            ref = by_case[base][test_column]
            row[p_label or f"p vs {base}"] = ("" if label == base else
                                              f"{paired_test(d[test_column], ref.reindex(d.index)):.3g}")
        out[label] = row
    return pd.DataFrame(out).T


# ------------------------------------------------------------------ many methods at once
#: metric columns of the per-case table and whether higher is better
RANKED = {**{f"Dice {r}": True for r in L.REGIONS}, **{f"HD95 {r}": False for r in L.REGIONS}}


def brats_ranking(per_case: pd.DataFrame, methods: Sequence[str], method_col: str = "method") -> pd.DataFrame:
    """The BraTS ranking scheme: for each case and each metric (Dice and HD95 of ET, TC,
    WT) the methods are ranked (1 = best, ties share the lowest rank, as the challenge
    does), then each method's ranks are averaged over cases and metrics. Returns one row
    per method: its mean rank per metric, the overall mean rank and the final position."""
    rows = []
    for (case, fold), d in per_case.groupby(["case", "fold"]):
        d = d.set_index(method_col).reindex(methods)
        for col, higher in RANKED.items():
            ranks = d[col].rank(ascending=not higher, method="min")
            rows += [{"method": m, "case": case, "metric": col, "rank": r} for m, r in ranks.items()]
    ranks = pd.DataFrame(rows)
    table = ranks.pivot_table(index="method", columns="metric", values="rank", aggfunc="mean")[list(RANKED)]
    table["mean rank"] = ranks.groupby("method")["rank"].mean()
    table = table.reindex(methods).sort_values("mean rank", kind="stable")
    table["position"] = table["mean rank"].rank(method="min").astype(int)
    return table


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error)."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (len(p) - i) * p[idx]))
        adjusted[idx] = running
    return adjusted


def pairwise_wilcoxon(per_case: pd.DataFrame, methods: Sequence[str], column: str = "Dice mean",
                      method_col: str = "method") -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank test of ``column`` for every pair of methods over the
    cases both predicted, Holm-corrected over all pairs. One row per pair."""
    wide = per_case.pivot_table(index=["fold", "case"], columns=method_col, values=column)
    rows = []
    for a, b in itertools.combinations(methods, 2):
        x, y = wide[a].to_numpy(float), wide[b].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        diff = x[ok] - y[ok]
        p = 1.0 if np.allclose(diff, 0) else float(stats.wilcoxon(x[ok], y[ok]).pvalue)
        rows.append({"A": a, "B": b, "cases": int(ok.sum()), f"mean {column} A - B": float(diff.mean()),
                     "p": p})
    out = pd.DataFrame(rows)
    out["p (Holm)"] = holm(out["p"]) if len(out) else []
    return out
