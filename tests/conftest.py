"""Shared fixtures: a tiny phantom dataset, the real cases (skipped where absent)."""
from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import brats_lib.papers  # noqa: F401  (registers every paper's networks, rules, schemas and pipeline)
from brats_lib.phantoms import write_phantom_dataset

REPO = Path(__file__).resolve().parent.parent
REAL = REPO.parent / "shared" / "data" / "real"
REAL_CASES = sorted(p.name for p in REAL.iterdir() if p.is_dir()) if REAL.is_dir() else []

real = pytest.mark.skipif(not REAL_CASES, reason=f"real test cases not present at {REAL}")


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """Four 40^3 phantoms in the BraTS 2021 layout (read-only: copy before changing)."""
    root = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(root, 4, seed=3, shape=(40, 40, 40))
    return root


@pytest.fixture
def phantom_copy(phantom_root, tmp_path) -> Path:
    """A private, writable copy of the phantom dataset."""
    dst = tmp_path / "data"
    shutil.copytree(phantom_root, dst)
    return dst


def make_notebook(path: Path, source: str) -> Path:
    """A two-cell notebook: a ``parameters`` cell (profile, data_dir, output_dir), then ``source``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'cpu'\ndata_dir = None\noutput_dir = None"),
                nbformat.v4.new_code_cell(source)]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def run_full_profile(notebook: str, data_dir: Path, out_dir: Path, overrides: dict) -> dict:
    """Execute ``notebook`` under its ``full`` profile on ``data_dir`` with toy-size
    ``overrides`` (which must name a throw-away ``splits`` file, removed afterwards);
    check it ran on that folder and return its manifest."""
    import json

    from brats_lib.app import runner
    from brats_lib.sampling import splits_path

    try:
        r = runner.run_notebook(notebook, "full", data_dir=str(data_dir), out_dir=out_dir, progress=False,
                                extra_parameters={"overrides": overrides})
    finally:
        splits_path(overrides["splits"]).unlink(missing_ok=True)
    assert r.ok, r.error
    man = json.loads((Path(out_dir) / "manifest.json").read_text())
    assert man["profile"] == "full" and str(data_dir) in man["data_source"]
    return man


_TEST_PROFILE_RUNS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def test_profile_report(tmp_path_factory):
    """``test_profile_report(notebook)`` -> the report folder of ``notebook`` executed
    under its ``test`` profile, run at most once per session (the notebook's own test
    checks its tables; the determinism test runs it a second time and compares)."""
    from brats_lib.app import runner

    def report(notebook: str) -> Path:
        if notebook not in _TEST_PROFILE_RUNS:
            out = tmp_path_factory.mktemp(f"{notebook}-test-profile")
            r = runner.run_notebook(notebook, "test", out_dir=out, progress=False)
            error = (out / "error.txt").read_text() if (out / "error.txt").exists() else r.error
            assert r.ok, error
            _TEST_PROFILE_RUNS[notebook] = out
        return _TEST_PROFILE_RUNS[notebook]

    return report
