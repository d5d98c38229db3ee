"""Where things live, in one place (imports nothing of the package, so any module may use it).

==================  ==============================================================
name                folder
==================  ==============================================================
``REPO_ROOT``       the repository (this package's parent folder)
``NOTEBOOK_DIR``    ``notebooks/``: one notebook per paper, the primer, the comparison
``PARAMS_DIR``      ``params/<notebook>/<profile>.yaml``
``SPLITS_DIR``      ``params/splits/``: committed cross-validation split files
``REPORTS_DIR``     ``reports/<notebook>/``: committed reports, written only by the runner
``RUNS_DIR``        ``runs/<notebook>/<profile>/``: where a hand run of a notebook
                    writes (git-ignored)
``CACHE_DIR``       ``.cache/``: generated phantoms' hashes and other caches (git-ignored)
``REAL_DIR``        ``../shared/data/real``: real BraTS-space cases for tests, beside
                    the repository and never committed
==================  ==============================================================
"""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"
SPLITS_DIR = PARAMS_DIR / "splits"
REPORTS_DIR = REPO_ROOT / "reports"
RUNS_DIR = REPO_ROOT / "runs"
CACHE_DIR = REPO_ROOT / ".cache"
REAL_DIR = REPO_ROOT.parent / "shared" / "data" / "real"


def resolve(path: str | Path | None) -> Path | None:
    """A path from a parameter file: absolute as given, relative to the repository root."""
    if path is None:
        return None
    path = Path(path)
    return path if path.is_absolute() else (REPO_ROOT / path)
