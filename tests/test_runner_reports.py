"""A report folder is one run; reproduce knows what changed; notebooks run as in JupyterLab."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from brats_lib.app import runner
from conftest import REPO, make_notebook



def _writes(table: str, then: str = "") -> str:
    """A notebook body that writes ``tables/t.csv`` into its output folder, then runs ``then``."""
    return textwrap.dedent(f"""
        from pathlib import Path
        (Path(output_dir) / "tables").mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "tables" / "t.csv").write_text({table!r})
        (Path(output_dir) / "manifest.json").write_text('{{"profile": "test"}}')
    """) + then


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_failing_run_leaves_the_previous_report_byte_identical(tmp_path, monkeypatch):
    nbs, reports = tmp_path / "notebooks", tmp_path / "reports"
    nbs.mkdir()
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nbs)
    make_notebook(nbs / "a.ipynb", _writes("old\n"))
    assert runner.run_notebook("a", "test", out_dir=reports / "a", progress=False).ok
    before = _tree(reports / "a")
    assert before["tables/t.csv"] and runner.STAMP in before
    make_notebook(nbs / "a.ipynb", _writes("new\n", "raise RuntimeError('half-way')"))
    r = runner.run_notebook("a", "test", out_dir=reports / "a", progress=False)
    assert not r.ok and "half-way" in r.error
    assert _tree(reports / "a") == before
    stage = runner.staging_folder(reports / "a")
    assert (stage / "tables" / "t.csv").read_text() == "new\n"  # the failed run's partial output, beside it
    assert "half-way" in (stage / "error.txt").read_text() and (stage / "a.failed.ipynb").exists()
    # the next good run replaces the report whole and leaves no staging folder
    make_notebook(nbs / "a.ipynb", _writes("newer\n"))
    assert runner.run_notebook("a", "test", out_dir=reports / "a", progress=False).ok
    assert (reports / "a" / "tables" / "t.csv").read_text() == "newer\n"
    assert not stage.exists() and not (reports / "a" / "error.txt").exists()


KILLABLE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    from brats_lib.app import runner
    runner.NOTEBOOK_DIR = Path(sys.argv[1])
    runner.run_notebook("a", "test", out_dir=Path(sys.argv[2]) / "a", progress=False)
""")


@pytest.mark.slow
def test_a_run_killed_half_way_leaves_the_previous_report_byte_identical(tmp_path, monkeypatch):
    nbs, reports, hold = tmp_path / "notebooks", tmp_path / "reports", tmp_path / "hold"
    nbs.mkdir()
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nbs)
    make_notebook(nbs / "a.ipynb", _writes("old\n"))
    assert runner.run_notebook("a", "test", out_dir=reports / "a", progress=False).ok
    before = _tree(reports / "a")
    hold.touch()
    make_notebook(nbs / "a.ipynb", _writes("new\n", f"import os, time\nwhile os.path.exists({str(hold)!r}):\n    time.sleep(0.1)"))
    script = tmp_path / "run.py"
    script.write_text(KILLABLE)
    proc = subprocess.Popen([sys.executable, str(script), str(nbs), str(reports), str(REPO)], cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = runner.staging_folder(reports / "a") / "tables" / "t.csv"
    try:
        deadline = time.time() + 300
        while not partial.exists():  # the notebook has written half its report
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        hold.unlink()
    assert _tree(reports / "a") == before
    # still a finished report, of the notebook as it was: stale only because the notebook changed
    assert runner.stale_reasons("a", "test", out_dir=reports / "a") == ["notebook"]


def test_a_swap_killed_between_its_renames_is_recovered(tmp_path):
    out = tmp_path / "reports" / "a"
    prev = out.parent / ".a.previous"
    prev.mkdir(parents=True)
    (prev / "t.csv").write_text("old")
    runner._recover(out)  # killed after moving the old report aside, before the new one arrived
    assert (out / "t.csv").read_text() == "old" and not prev.exists()
    prev.mkdir()
    runner._recover(out)  # killed after the new one arrived: the old one is dropped
    assert not prev.exists() and out.exists()


# ------------------------------------------------------------------ the fingerprint and --dry-run
@pytest.fixture
def stamped(tmp_path, monkeypatch):
    """A fake finished ``optimized_unet`` report (test profile) whose stamp matches now,
    with private copies of the parameter and split folders."""
    shutil.copytree(REPO / "params", tmp_path / "params")
    monkeypatch.setattr(runner, "PARAMS_DIR", tmp_path / "params")
    monkeypatch.setattr(runner, "SPLITS_DIR", tmp_path / "params" / "splits")
    monkeypatch.setattr(runner, "DIGEST_CACHE", tmp_path / "digests.json")
    reports = tmp_path / "reports"
    out = reports / "optimized_unet"
    out.mkdir(parents=True)
    (out / "optimized_unet.ipynb").write_text("{}")

    def stamp(data_dir=None):
        fp = runner.fingerprint("optimized_unet", "test", data_dir)
        (out / runner.STAMP).write_text(json.dumps({"notebook": "optimized_unet", "fingerprint": fp}))
        return fp

    return reports, stamp


def _reasons(reports, data_dir=None):
    return dict(runner.plan("test", data_dir, ["optimized_unet", "hnfnetv2"], reports))


def test_dry_run_says_current_or_no_report(stamped):
    reports, stamp = stamped
    stamp()
    assert _reasons(reports) == {"optimized_unet": [], "hnfnetv2": ["no report"]}


def test_dry_run_names_a_changed_split_file(stamped):
    reports, stamp = stamped
    fp = stamp()
    assert list(fp["splits"]) == ["phantoms-seed0-32-n4-k2.json"]  # what the test profile reads
    split = runner.SPLITS_DIR / "phantoms-seed0-32-n4-k2.json"
    folds = json.loads(split.read_text())
    folds[0]["train"], folds[0]["val"] = folds[0]["val"], folds[0]["train"]
    split.write_text(json.dumps(folds))
    assert _reasons(reports)["optimized_unet"] == ["split file (phantoms-seed0-32-n4-k2.json)"]


def test_dry_run_names_changed_library_versions_and_device(stamped, monkeypatch):
    reports, stamp = stamped
    stamp()
    env = runner.environment()
    changed = {"versions": {**env["versions"], "torch": "0.0.1"},
               "device": {"kind": "cuda: NVIDIA H100", "precision": "float16 autocast"}}
    monkeypatch.setattr(runner, "environment", lambda: changed)
    reasons = _reasons(reports)["optimized_unet"]
    assert reasons[0] == f"versions (torch {env['versions']['torch']} -> 0.0.1)"
    here = env["device"]["precision"]  # bfloat16 autocast on CPUs with bfloat16 instructions, else float32
    assert here in ("float32", "bfloat16 autocast")
    assert reasons[1] == f"device (kind cpu -> cuda: NVIDIA H100; precision {here} -> float16 autocast)"


def test_dry_run_names_changed_data_content_and_parameters(stamped, tmp_path):
    reports, stamp = stamped
    data = tmp_path / "data"
    (data / "case").mkdir(parents=True)
    (data / "case" / "case_seg.nii.gz").write_bytes(b"0123456789")
    stamp(str(data))
    assert _reasons(reports, str(data))["optimized_unet"] == []
    (data / "case" / "case_seg.nii.gz").write_bytes(b"9876543210")  # same name, same size
    assert _reasons(reports, str(data))["optimized_unet"] == ["data"]
    stamp(str(data))
    profile = runner.PARAMS_DIR / "optimized_unet" / "test.yaml"
    profile.write_text(profile.read_text() + "\n# edited\n")
    assert _reasons(reports, str(data))["optimized_unet"] == []  # a comment changes no parameter
    profile.write_text(profile.read_text().replace("\nseed: 0\n", "\nseed: 12345\n"))
    assert _reasons(reports, str(data))["optimized_unet"] == ["parameters"]


def test_the_profiles_own_data_dir_is_fingerprinted(stamped, tmp_path):
    reports, stamp = stamped
    data = tmp_path / "brats"
    data.mkdir()
    (data / "x.nii.gz").write_bytes(b"abc")
    profile = runner.PARAMS_DIR / "optimized_unet" / "test.yaml"
    profile.write_text(profile.read_text() + f"\ndata_dir: {data}\n")
    assert stamp()["data"] != "phantoms"
    (data / "x.nii.gz").write_bytes(b"abd")
    assert _reasons(reports)["optimized_unet"] == ["data"]


def test_code_and_notebook_changes_are_reasons(stamped):
    reports, stamp = stamped
    fp = stamp()
    path = reports / "optimized_unet" / runner.STAMP
    path.write_text(json.dumps({"fingerprint": {**fp, "code": "x", "notebook": "y"}}))
    assert _reasons(reports)["optimized_unet"] == ["code", "notebook"]


def test_data_digests_are_cached_by_size_and_modification_time(tmp_path):
    folder, cache = tmp_path / "d", tmp_path / "cache.json"
    folder.mkdir()
    f = folder / "a.nii.gz"
    f.write_bytes(b"aaaa")
    first = runner.folder_digest(folder, cache)
    assert str(f.resolve()) in json.loads(cache.read_text())
    st = f.stat()
    f.write_bytes(b"bbbb")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and time: the cached digest is used
    assert runner.folder_digest(folder, cache) == first
    f.write_bytes(b"cccc")  # a new modification time: hashed again
    assert runner.folder_digest(folder, cache) != first


def test_reproduce_dry_run_from_the_command_line_lists_every_notebook():
    r = subprocess.run([sys.executable, "-m", "brats_lib", "reproduce", "--profile", "test", "--dry-run"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == len(runner.notebook_names())
    for name, line in zip(runner.notebook_names(), lines):
        assert f"] {name}: " in line and ("current" in line or "would run (" in line)


# ------------------------------------------------------------------ a hand run, as in JupyterLab
@pytest.mark.slow
def test_a_hand_run_from_the_notebooks_folder_writes_to_runs_and_leaves_reports_alone(tmp_path):
    """The primer with its default parameters (cpu profile, shortened by ``overrides``),
    executed by a Jupyter kernel with ``notebooks/`` as working directory, as JupyterLab does."""
    import papermill as pm

    def status():
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "reports/"], cwd=REPO,
                              capture_output=True, text=True).stdout

    before, t0 = status(), time.time()
    out_nb = tmp_path / "primer.ipynb"
    short = {"phantom_cases": 3, "phantom_shape": [48, 48, 48], "algorithms": ["isen-20"], "hd95_pairs": 1}
    pm.execute_notebook(str(REPO / "notebooks" / "00_data_and_metrics.ipynb"), str(out_nb), cwd=str(REPO / "notebooks"),
                        parameters={"overrides": short}, kernel_name="python3", progress_bar=False)
    assert status() == before
    run_dir = REPO / "runs" / "00_data_and_metrics" / "cpu"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["profile"] == "cpu" and (run_dir / "manifest.json").stat().st_mtime > t0
    text = out_nb.read_text()
    assert "A hand run: tables, figures and checkpoints go to" in text and "runs/00_data_and_metrics/cpu" in text
    assert "IProgress not found" not in text  # ipywidgets is installed: widget progress bars


def test_ipywidgets_is_a_dependency_so_progress_bars_are_widgets():
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("ipywidgets") for d in deps)
    import ipywidgets  # noqa: F401  (installed by the project's own files)
