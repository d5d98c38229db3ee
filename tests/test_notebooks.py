"""Notebooks: committed clean, executed under the test profile, batch runs survive failures."""
import json
from pathlib import Path

import nbformat
import pytest

from brats_lib.app import runner
from conftest import REPO, make_notebook, real

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'profile = "cpu"' in tagged[0].source


@pytest.mark.slow
def test_primer_runs_under_test_profile(test_profile_report):
    tmp_path = test_profile_report("00_data_and_metrics")  # run once per session, shared with the determinism test
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["profile"] == "test" and man["git_commit"] and man["versions"]["torch"].startswith("2.13")
    for t in ("phantom_volumes", "contrast_calibration", "empty_region_rules", "example_scores", "hd95_libraries"):
        assert (tmp_path / "tables" / f"{t}.csv").exists() and (tmp_path / "tables" / f"{t}.md").exists()
    assert (tmp_path / "figures" / "case_modalities.png").exists()
    nb = nbformat.read(tmp_path / "00_data_and_metrics.ipynb", as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_primer_full_profile_code_path_on_a_tiny_folder(tmp_path, phantom_root):
    """The full profile reads a real BraTS folder; a tiny phantom folder stands in."""
    r = runner.run_notebook("00_data_and_metrics", "full", data_dir=str(phantom_root), out_dir=tmp_path, progress=False,
                            extra_parameters={"overrides": {"algorithms": ["isen-20"], "hd95_pairs": 1}})
    assert r.ok, r.error
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["profile"] == "full" and str(phantom_root) in man["data_source"]



@pytest.mark.slow
def test_reproduce_reports_a_failure_and_runs_the_rest(tmp_path, monkeypatch):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    make_notebook(nbs / "00_ok.ipynb", "print('fine')")
    make_notebook(nbs / "broken.ipynb", "raise RuntimeError('boom')")
    make_notebook(nbs / "comparison.ipynb", "print('last')")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nbs)
    assert runner.notebook_names() == ["00_ok", "broken", "comparison"]
    results = runner.reproduce("test", reports_dir=tmp_path / "reports")
    assert [r.ok for r in results] == [True, False, True]
    assert "boom" in results[1].error
    stage = runner.staging_folder(tmp_path / "reports" / "broken")  # the failed run stays beside the report
    assert (stage / "error.txt").exists() and "boom" in (stage / "error.txt").read_text()
    assert not (tmp_path / "reports" / "broken").exists()  # nothing half-written under the report's name
    assert (stage / "broken.failed.ipynb").exists() and results[1].output == stage / "broken.failed.ipynb"
    index = (tmp_path / "reports" / "README.md").read_text()
    assert "failed: RuntimeError" in index and "| [comparison]" in index


def test_index_lists_reports_from_their_manifests_with_headline_tables(tmp_path, monkeypatch):
    from brats_lib.app.cli import main as cli

    nbs, reports = tmp_path / "notebooks", tmp_path / "reports"
    nbs.mkdir()
    for name in ("00_data_and_metrics", "comparison"):
        make_notebook(nbs / f"{name}.ipynb", "print(1)")
    folder = reports / "comparison"
    (folder / "tables").mkdir(parents=True)
    (folder / "comparison.ipynb").write_text("{}")
    (folder / "manifest.json").write_text(json.dumps({"profile": "cpu", "data_source": "phantoms", "wall_time_s": 12.0,
                                                      "hardware": {"cpu_count": 2}, "git_commit": "abc"}))
    (folder / "tables" / "summary.md").write_text("| method | Dice |\n| --- | --- |\n| x | 0.5 |\n")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nbs)
    monkeypatch.setattr(runner, "REPORTS_DIR", reports)
    assert cli(["index"]) == 0
    text = (reports / "README.md").read_text()
    assert "| [comparison](comparison/comparison.ipynb) | ok (earlier run) | cpu | phantoms | 2 CPU cores | 12 |" in text
    assert "## comparison: `summary`" in text and "| x | 0.5 |" in text
    assert "00_data_and_metrics" not in text.split("## A course")[0]  # no report on disk: not listed
