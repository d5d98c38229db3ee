"""What a notebook run leaves in ``reports/<notebook>/``: a manifest, tables (CSV +
Markdown) with the paper's numbers beside ours, and figures (PNG).

* :func:`manifest` / :func:`write_manifest` - git commit, profile, data source,
  hardware, library versions, seed, wall time.
* :func:`mean_ci` - mean and 95% confidence interval across cases (percentile bootstrap).
* :func:`paper_vs_ours` - one table, the paper's column and ours side by side.
* :func:`save_table`, :func:`save_figure` - atomic writes into the report folder.
* :func:`overlay`, :func:`plot_case`, :func:`plot_training_curves` - BraTS-coloured
  slice overlays and training curves.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from . import labels as L
from .io import atomic_path, write_text

LIBRARIES = ("torch", "monai", "numpy", "scipy", "nibabel", "pandas", "matplotlib", "papermill")
from .paths import REPO_ROOT, RUNS_DIR  # noqa: F401  (REPO_ROOT re-exported for older imports)


# ------------------------------------------------------------------ manifest
def git_commit(root: Path = REPO_ROOT) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def hardware() -> dict:
    import torch

    hw = {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
          "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    try:
        hw["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return hw


def versions() -> dict:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def manifest(notebook: str, profile: str, data_source: str, seed: int, wall_time_s: float | None = None,
             amp: bool = True, **extra) -> dict:
    """What a report's ``manifest.json`` holds: the run's notebook, profile, data, seed,
    commit, hardware, library versions, the precision its networks ran in (``amp``: the
    notebook's parameter; :mod:`brats_lib.precision`), wall time and ``extra`` keys."""
    import torch

    from .precision import precision_name

    return {"notebook": notebook, "profile": profile, "data_source": data_source, "seed": seed,
            "git_commit": git_commit(), "hardware": hardware(), "versions": versions(),
            "precision": precision_name("cuda" if torch.cuda.is_available() else "cpu", amp),
            "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def write_manifest(out_dir: str | Path, **kwargs) -> dict:
    m = manifest(**kwargs)
    write_text(Path(out_dir) / "manifest.json", json.dumps(m, indent=2, default=str) + "\n")
    return m


# ------------------------------------------------------------------ statistics
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


# ------------------------------------------------------------------ tables
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


def save_figure(fig, out_dir: str | Path, name: str, dpi: int = 110) -> Path:
    path = Path(out_dir) / "figures" / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


# ------------------------------------------------------------------ figures
def label_rgba(label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Canonical label slice -> RGBA image in BraTS colours (transparent background)."""
    rgba = np.zeros(label.shape + (4,), np.float32)
    for lab, col in L.COLOURS.items():
        sel = label == lab
        rgba[sel, :3] = col
        rgba[sel, 3] = alpha
    return rgba


def overlay(ax, image2d: np.ndarray, label2d: np.ndarray | None = None, title: str | None = None, alpha: float = 0.5):
    """Grey-scale slice with the label in BraTS colours (NCR red, ED green, ET yellow).
    Arrays are (X, Y); shown with X horizontal and Y vertical."""
    lo, hi = np.percentile(image2d[image2d != 0], (0.5, 99.5)) if np.any(image2d != 0) else (0, 1)
    ax.imshow(image2d.T, cmap="gray", origin="lower", vmin=lo, vmax=hi)
    if label2d is not None:
        ax.imshow(label_rgba(label2d, alpha).transpose(1, 0, 2), origin="lower")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def legend_handles():
    from matplotlib.patches import Patch

    return [Patch(color=L.COLOURS[k], label=L.CLASS_NAMES[k]) for k in (L.NCR, L.ED, L.ET)]


def tumour_slice(label: np.ndarray) -> int:
    """Axial index (last axis) with the most tumour; the middle slice if there is none."""
    area = (label > 0).sum(axis=(0, 1))
    return int(np.argmax(area)) if area.any() else label.shape[-1] // 2


def plot_case(image: np.ndarray, label: np.ndarray | None, z: int | None = None, modalities=("t1", "t1ce", "t2", "flair"),
              title: str | None = None, axes=None):
    """The four modalities of one axial slice and the label over FLAIR."""
    import matplotlib.pyplot as plt

    z = tumour_slice(label) if (z is None and label is not None) else (image.shape[-1] // 2 if z is None else z)
    if axes is None:
        fig, axes = plt.subplots(1, 5, figsize=(13, 2.9))
    else:
        fig = axes[0].figure
    for i, m in enumerate(modalities):
        overlay(axes[i], image[i][..., z], None, m.upper() if m != "t1ce" else "T1ce")
    overlay(axes[4], image[3][..., z], label[..., z] if label is not None else None, "FLAIR + labels")
    if title:
        axes[0].text(-0.1, 0.5, title, transform=axes[0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    return fig


def plot_training_curves(log: pd.DataFrame | str | Path, metrics: Sequence[str] | None = None, title: str | None = None):
    """Training loss and validation metrics per epoch from a ``log.csv``."""
    import matplotlib.pyplot as plt

    log = pd.read_csv(log) if not isinstance(log, pd.DataFrame) else log
    metrics = list(metrics or [c for c in log.columns if c.startswith("val_")])
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(10 if metrics else 5, 3.2), squeeze=False)
    axes[0, 0].plot(log["epoch"], log["train_loss"], marker=".")
    axes[0, 0].set(xlabel="epoch", ylabel="training loss")
    if metrics:
        for m in metrics:
            d = log[["epoch", m]].dropna()
            axes[0, 1].plot(d["epoch"], d[m], marker="o", label=m.removeprefix("val_"))
        axes[0, 1].set(xlabel="epoch", ylabel="validation")
        axes[0, 1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ notebook helpers
def resolve(path: str | Path | None) -> Path | None:
    """A path from a parameter file: absolute as given, relative to the repository root."""
    if path is None:
        return None
    path = Path(path)
    return path if path.is_absolute() else (REPO_ROOT / path)


def output_folder(notebook: str, output_dir: str | Path | None = None, profile: str = "cpu") -> Path:
    """Where a notebook writes its tables and figures: ``output_dir`` (the runner passes
    its staging folder), or, for a notebook run by hand (JupyterLab, papermill), the
    git-ignored ``runs/<notebook>/<profile>/``, said in the output. Committed reports
    under ``reports/`` are written only by ``python -m brats_lib run`` / ``reproduce``,
    which replace a report whole when its notebook finished."""
    if output_dir:
        folder = Path(output_dir)
    else:
        folder = RUNS_DIR / notebook / profile
        try:
            shown = folder.relative_to(Path.cwd())
        except ValueError:
            shown = folder
        print(f"A hand run: tables, figures and checkpoints go to {shown}/ (reports/ is written only by "
              f"`python -m brats_lib run {notebook} --profile {profile}`).")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def show_table(df: pd.DataFrame, floatfmt: str = ".4f", index: bool = True):
    """Display a table as Markdown in a notebook (plain text elsewhere)."""
    try:
        from IPython.display import Markdown, display

        display(Markdown(df.to_markdown(index=index, floatfmt=floatfmt)))
    except ImportError:
        print(df.to_string())


# ------------------------------------------------------------------ where the time goes
class Stopwatch:
    """Where a notebook's wall time goes, one line per cell.

    ``clock = Stopwatch()`` in the setup cell; ``clock.lap("phase")`` at the end of a cell
    books the time since the previous lap to ``phase`` (laps of the same name add up).
    ``clock.lap("training and evaluation", training=s)`` books ``s`` seconds of it to
    ``"training"`` (e.g. the sum of the training loops' own clocks) and the rest to the
    named phase. ``clock.table()`` is the split in seconds and percent; ``clock.seconds``
    goes into the manifest.
    """

    def __init__(self, start: float | None = None):
        self.last = time.time() if start is None else float(start)
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str, **parts: float) -> None:
        now = time.time()
        spent, self.last = now - self.last, now
        for name, s in parts.items():
            s = min(float(s), spent)
            self.seconds[name] = self.seconds.get(name, 0.0) + s
            spent -= s
        self.seconds[phase] = self.seconds.get(phase, 0.0) + spent
        return None

    def table(self) -> pd.DataFrame:
        total = sum(self.seconds.values()) or 1.0
        df = pd.DataFrame({"seconds": self.seconds}).sort_values("seconds", ascending=False)
        df["share (%)"] = 100 * df["seconds"] / total
        df.loc["total"] = [sum(self.seconds.values()), 100.0]
        df.index.name = "phase"
        return df.round(1)
