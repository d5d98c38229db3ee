"""Tables: the paper's numbers beside ours, saved as CSV + Markdown, shown in a notebook.

* :func:`paper_vs_ours` - one table, the paper's column and ours side by side.
* :func:`save_table` - atomic CSV + Markdown writes into a report's ``tables/``.
* :func:`show_table` - Markdown in a notebook, plain text elsewhere.
* :func:`shape_text` - a size or list as text (``128 x 128 x 128``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .io import atomic_path, write_text


def paper_vs_ours(ours: pd.DataFrame, paper: pd.DataFrame | None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Interleave columns: for each column ``c``, ``c (paper)`` then ``c (ours)``.

    Rows are matched by index; a row or value the paper lacks is left empty.
    """
    columns = list(columns or ours.columns)
    out = pd.DataFrame(index=ours.index)
    for c in columns:
        if paper is not None and c in paper.columns:
            out[f"{c} (paper)"] = paper[c].reindex(ours.index)
        out[f"{c} (ours)"] = ours[c]
    return out


def save_table(df: pd.DataFrame, out_dir: str | Path, name: str, floatfmt: str = ".4f", index: bool = True) -> pd.DataFrame:
    """Write ``tables/<name>.csv`` and ``tables/<name>.md`` under ``out_dir``."""
    folder = Path(out_dir) / "tables"
    with atomic_path(folder / f"{name}.csv") as tmp:
        df.to_csv(tmp, index=index)
    write_text(folder / f"{name}.md", df.to_markdown(index=index, floatfmt=floatfmt) + "\n")
    return df


def show_table(df: pd.DataFrame, floatfmt: str = ".4f", index: bool = True):
    """Display a table as Markdown in a notebook (plain text elsewhere)."""
    try:
        from IPython.display import Markdown, display

        display(Markdown(df.to_markdown(index=index, floatfmt=floatfmt)))
    except ImportError:
        print(df.to_string())


def shape_text(value, sep: str = " x ") -> str:
    """A size or a list as text (``[128, 128, 128]`` -> ``"128 x 128 x 128"``); anything
    else as ``str``."""
    return sep.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
