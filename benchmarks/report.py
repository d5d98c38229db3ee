"""Assemble ``reports/benchmarks.md`` from sections, keeping the sections of an earlier
run that ``--only`` did not re-run."""
from __future__ import annotations

import re

#: the heading each benchmark section starts with, by its ``--only`` name
HEADINGS = {"metrics": "## Metrics", "inference": "## Inference", "training": "## Training",
            "precision": "## Training precision", "layout": "## Memory layout",
            "workers": "## Training the comparison's methods at once", "data": "## Data"}
_TOTAL = re.compile(r"^Total benchmark time .*all targets met: (yes|NO)\.$", re.M)
_SECTION = re.compile(r"^Targets in this section met: (yes|NO)\.$", re.M)


def split_sections(text: str) -> dict[str, str]:
    """``{name: markdown}`` of the benchmark sections found in an earlier report."""
    out = {}
    parts = re.split(r"(?m)^(?=## )", text)
    for part in parts:
        title = part.split("\n", 1)[0].split(":", 1)[0].strip()
        for name, heading in HEADINGS.items():
            if title == heading:
                out[name] = part.strip()
    return out


def earlier_targets_met(text: str) -> bool:
    """The verdict an earlier report printed on its last line (False if it has none)."""
    m = _TOTAL.search(text)
    return bool(m) and m.group(1) == "yes"


def section_verdict(md: str, passed: bool) -> str:
    """A section's markdown with its verdict as its last line (read back by :func:`section_met`)."""
    return f"{md.rstrip()}\n\nTargets in this section met: {'yes' if passed else 'NO'}."


def section_met(section: str, earlier: str) -> bool:
    """The verdict of a kept section: its own last line; for sections written before that line
    existed, its table's 'target met' column, else the earlier report's overall verdict."""
    m = _SECTION.search(section)
    if m:
        return m.group(1) == "yes"
    if "target met" in section:
        return "| NO |" not in section
    return earlier_targets_met(earlier)


def merge(new: dict[str, tuple[str, bool]], earlier: str | None, stamp: str) -> tuple[list[str], bool]:
    """Sections in the fixed order: re-run ones from ``new`` ({name: (markdown, passed)}), the
    others from the ``earlier`` report, each kept one marked as such. Returns (sections, all
    passed); kept sections count with the earlier report's verdict."""
    kept = split_sections(earlier) if earlier else {}
    ok, out = True, []
    for name in HEADINGS:
        if name in new:
            md, passed = new[name]
            md = section_verdict(md, passed)
            if kept or earlier:
                md = md.replace("\n", f"\n\n(Re-run {stamp}; other sections are from the earlier run.)\n", 1)
            out.append(md)
            ok &= passed
        elif name in kept:
            out.append(kept[name])
            ok &= section_met(kept[name], earlier)
    return out, ok
