"""Reliability: what happens when things go wrong (the README's "Reliability" table).

The bad-input catalogue for case folders lives in ``test_data.py`` and for parameter
files in ``test_params_cli.py``; this file adds interruption (SIGKILL during training
and during a batch reproduction), atomic writes, parameter validation before any work,
determinism of every notebook's ``test`` profile, the safety rules (weights-only
checkpoints, safe YAML, no eval, no parameter-driven path escapes) and inference on the
real cases without special-casing.
"""
from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brats_lib import labels as L
from brats_lib import metrics as M
from brats_lib.app import profiles as P
from brats_lib.app import runner
from brats_lib.app.cli import main as cli
from brats_lib.io import write_nifti
from brats_lib.tables import save_table
from brats_lib.sampling import splits_path
from brats_lib.training import load_checkpoint, save_checkpoint
from conftest import REAL, REAL_CASES, make_notebook, real

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------ interruption: training
TRAIN = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [{repo!r}, {tests!r}]
    import torch
    from test_training import _data, _model
    from brats_lib.losses import DeepSupervision, region_loss
    from brats_lib.training import TrainConfig, fit

    out, kill_at = sys.argv[1], int(sys.argv[2])
    base, calls = DeepSupervision(region_loss(), (1.0, 0.5)), [0]

    def loss(outputs, target):  # SIGKILL (cannot be caught) at the kill_at-th step
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return base(outputs, target)

    probe = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(7))

    def val(model):  # a metric that depends on every weight
        with torch.no_grad():
            out = model(probe)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return {{"score": float(out.double().mean()), "spread": float(out.double().std())}}

    cfg = TrainConfig(epochs=4, batch_size=1, lr=2e-3, schedule="cosine", warmup_epochs=1, progress=False,
                      best_metric="score", keep_best=2)
    fit(_model(), loss, _data(), cfg, out, val_fn=val)
""")


def _train(script: Path, out: Path, kill_at: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), str(out), str(kill_at)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_restart_ends_with_the_same_weights_and_metrics(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN.format(repo=str(REPO), tests=str(TESTS)))
    ref = _train(script, tmp_path / "uninterrupted")
    assert ref.returncode == 0, ref.stderr
    # 4 samples per epoch at batch 1: step 10 is the second step of epoch 3
    killed = _train(script, tmp_path / "killed", kill_at=10)
    assert killed.returncode == -signal.SIGKILL
    ck = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert ck["epoch"] == 2 and ck["step"] == 8  # the last finished epoch, nothing of epoch 3
    assert len(pd.read_csv(tmp_path / "killed" / "log.csv")) == 2
    assert not [p.name for p in (tmp_path / "killed").iterdir() if p.name.startswith(".")]  # no temp files
    resumed = _train(script, tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    a, b = load_checkpoint(tmp_path / "uninterrupted" / "last.pt"), load_checkpoint(tmp_path / "killed" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    la, lb = (pd.read_csv(tmp_path / d / "log.csv") for d in ("uninterrupted", "killed"))
    cols = ["epoch", "step", "lr", "train_loss", "val_score", "val_spread"]
    pd.testing.assert_frame_equal(la[cols], lb[cols])
    assert [e for _, e, _ in a["best"]] == [e for _, e, _ in b["best"]]


# ------------------------------------------------------------------ interruption: batch reproduction

REPRODUCE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[4])
    from pathlib import Path
    from brats_lib.app import runner
    runner.NOTEBOOK_DIR = Path(sys.argv[1])
    runner.reproduce("test", reports_dir=sys.argv[2], jobs=int(sys.argv[3]))
""")


@pytest.mark.slow
def test_killed_batch_reproduction_continues_without_redoing_finished_notebooks(tmp_path, monkeypatch):
    nbs, reports, hold = tmp_path / "notebooks", tmp_path / "reports", tmp_path / "hold"
    nbs.mkdir()
    hold.touch()
    make_notebook(nbs / "00_first.ipynb", "print('first')")
    make_notebook(nbs / "second.ipynb", f"import os, time\nwhile os.path.exists({str(hold)!r}):\n    time.sleep(0.1)")
    script = tmp_path / "reproduce.py"
    script.write_text(REPRODUCE)
    proc = subprocess.Popen([sys.executable, str(script), str(nbs), str(reports), "1", str(REPO)], cwd=REPO,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr", "w"))
    try:
        deadline = time.time() + 300
        while not (runner.staging_folder(reports / "second") / "run.log").exists():  # the second notebook started
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "stderr").read_text()
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        hold.unlink()  # lets an orphaned kernel finish its cell and exit
    first = reports / "00_first" / "00_first.ipynb"
    assert (reports / "00_first" / runner.STAMP).exists() and first.exists()
    assert not (reports / "second" / runner.STAMP).exists() and not (reports / "second" / "second.ipynb").exists()
    mtime = first.stat().st_mtime_ns

    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nbs)
    results = runner.reproduce("test", reports_dir=reports)
    assert [(r.notebook, r.ok, r.skipped) for r in results] == [("00_first", True, True), ("second", True, False)]
    assert first.stat().st_mtime_ns == mtime and (reports / "second" / runner.STAMP).exists()
    assert "ok (earlier run)" in (reports / "README.md").read_text()
    # a changed notebook is no longer current; --force re-runs a current one
    make_notebook(nbs / "second.ipynb", "print('changed')")
    assert runner.is_current("00_first", "test", out_dir=reports / "00_first")
    assert not runner.is_current("second", "test", out_dir=reports / "second")
    assert not runner.is_current("00_first", "cpu", out_dir=reports / "00_first")  # another profile
    results = runner.reproduce("test", reports_dir=reports, force=True)
    assert [r.skipped for r in results] == [False, False] and first.stat().st_mtime_ns != mtime


@pytest.mark.slow
def test_jobs_run_notebooks_in_parallel_and_the_comparison_last(tmp_path, monkeypatch):
    nbs, reports, times = tmp_path / "notebooks", tmp_path / "reports", tmp_path / "times"
    nbs.mkdir()
    times.mkdir()
    for name in ("a", "b", "comparison"):
        make_notebook(nbs / f"{name}.ipynb", textwrap.dedent(f"""
            import time, pathlib
            t0 = time.time()
            time.sleep(3)
            pathlib.Path({str(times / name)!r}).write_text(f"{{t0}} {{time.time()}}")"""))
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", nbs)
    results = runner.reproduce("test", reports_dir=reports, jobs=2)
    assert [(r.notebook, r.ok) for r in results] == [("a", True), ("b", True), ("comparison", True)], \
        [r.error for r in results]
    span = {n: tuple(map(float, (times / n).read_text().split())) for n in ("a", "b", "comparison")}
    assert span["a"][0] < span["b"][1] and span["b"][0] < span["a"][1]  # a and b overlapped
    assert span["comparison"][0] >= max(span["a"][1], span["b"][1])
    assert all((reports / n / runner.STAMP).exists() for n in span)


# ------------------------------------------------------------------ parameters: checked before any work
@pytest.mark.parametrize("edit, key", [
    (lambda d: d.update(learning_rate=0.1), "learning_rate"),     # unknown key
    (lambda d: d.update(epochs="many"), "epochs"),                # wrong type
    (lambda d: d.pop("splits"), "splits"),                        # missing required value
    (lambda d: d.update(splits="../../outside"), "splits"),       # a path escape
])
def test_bad_parameters_stop_the_run_before_anything_is_written(tmp_path, monkeypatch, edit, key):
    import yaml

    params = tmp_path / "params"
    (params / "optimized_unet").mkdir(parents=True)
    values = yaml.safe_load((REPO / "params" / "optimized_unet" / "test.yaml").read_text())
    edit(values)
    (params / "optimized_unet" / "test.yaml").write_text(yaml.safe_dump(values))
    monkeypatch.setattr(runner, "PARAMS_DIR", params)
    out = tmp_path / "out"
    with pytest.raises(P.ParamsError, match=rf"test\.yaml.*'{key}'"):
        runner.run_notebook("optimized_unet", "test", out_dir=out, progress=False)
    assert not out.exists()
    with pytest.raises(P.ParamsError, match=key):
        runner.reproduce("test", names=["00_data_and_metrics", "optimized_unet"], reports_dir=out)
    assert not out.exists()  # not even the primer ran


def test_split_file_names_cannot_leave_their_folder():
    for bad in ("../x", "a/b", ".hidden", "", "/etc/passwd"):
        with pytest.raises(P.ParamsError, match="plain file name"):
            splits_path(bad)
    assert splits_path("brats2021-k5").parent == REPO / "params" / "splits"


# ------------------------------------------------------------------ atomic writes
def test_failed_writes_leave_nothing_under_the_final_name(tmp_path, monkeypatch):
    def half_then_fail(data, path, *a, **k):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", lambda img, path: half_then_fail(None, path))
    with pytest.raises(OSError, match="disk full"):
        write_nifti(tmp_path / "pred" / "case.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last.pt", model={})
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, path, **k: half_then_fail(None, path))
    with pytest.raises(OSError, match="disk full"):
        save_table(pd.DataFrame({"a": [1]}), tmp_path, "t")
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == [], left


def test_evaluate_with_bad_input_writes_no_csv(tmp_path, phantom_root, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "Phantom_00000.nii.gz").write_bytes(b"\x1f\x8b truncated")
    out = tmp_path / "scores.csv"
    assert cli(["evaluate", "--pred", str(pred), "--ref", str(phantom_root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Phantom_00000" in err and "Phantom_00000.nii.gz" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred"]


# ------------------------------------------------------------------ bad input, the cases test_data does not cover
def test_inf_voxels_name_case_and_file(phantom_copy):
    from brats_lib import data as D

    path = phantom_copy / "Phantom_00001" / "Phantom_00001_t1.nii.gz"
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[3, 3, 3] = np.inf
    nib.save(nib.Nifti1Image(arr, img.affine), str(path))
    case = [c for c in D.discover_cases(phantom_copy) if c.case_id == "Phantom_00001"][0]
    with pytest.raises(D.CaseError, match=r"Phantom_00001.*Phantom_00001_t1\.nii\.gz.*NaN or Inf"):
        D.load_case(case)


def test_empty_label_map_evaluates_with_the_empty_region_rules(phantom_copy, tmp_path, capsys):
    from brats_lib import data as D

    seg = phantom_copy / "Phantom_00000" / "Phantom_00000_seg.nii.gz"
    img = nib.load(str(seg))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(seg))
    pred = tmp_path / "pred"
    pred.mkdir()
    shutil_copy = (phantom_copy / "Phantom_00001" / "Phantom_00001_seg.nii.gz").read_bytes()
    (pred / "Phantom_00001.nii.gz").write_bytes(shutil_copy)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(pred / "Phantom_00000.nii.gz"))
    assert cli(["evaluate", "--pred", str(pred), "--ref", str(phantom_copy), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert all(res["Phantom_00000"][f"Dice_{r}"] == 1.0 and res["Phantom_00000"][f"HD95_{r}"] == 0.0
               for r in L.REGIONS)  # both empty: a perfect score
    lab = D.load_case(D.discover_cases(phantom_copy)[1]).label
    m = M.evaluate_labels(lab, np.zeros_like(lab))  # tumour predicted where the reference is empty
    present = [r for r in L.REGIONS if L.region_mask(lab, r).any()]
    assert present and all((m[r]["Dice"], m[r]["HD95"]) == (0.0, 373.13) for r in present)


# ------------------------------------------------------------------ determinism
TIMING = re.compile(r"second|time|timing|speed|throughput|memory|\bms\b|_s\b|\(s\)|\bs / ", re.I)


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    """Every table of a report with timing and memory columns (and tables) left out."""
    out = {}
    for path in sorted((folder / "tables").glob("*.csv")):
        if TIMING.search(path.stem):
            continue
        df = pd.read_csv(path)
        out[path.stem] = df[[c for c in df.columns if not TIMING.search(str(c))]]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("notebook", runner.notebook_names())
def test_test_profile_twice_gives_identical_tables(notebook, test_profile_report, tmp_path):
    first = _tables(test_profile_report(notebook))
    r = runner.run_notebook(notebook, "test", out_dir=tmp_path, progress=False)
    assert r.ok, r.error
    second = _tables(tmp_path)
    assert first and list(first) == list(second)
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name], check_exact=True, obj=f"{notebook}: {name}")


# ------------------------------------------------------------------ safety
def _sources() -> list[tuple[str, str]]:
    """(where, Python source) of the package, the benchmarks and every notebook's code cells."""
    import nbformat

    found = [(str(p.relative_to(REPO)), p.read_text()) for d in ("brats_lib", "benchmarks")
             for p in sorted((REPO / d).rglob("*.py"))]
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and not c.source.lstrip().startswith(("%", "!")))
        found.append((str(nb_path.relative_to(REPO)), code))
    return found


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def test_no_unsafe_loading_and_no_eval_anywhere():
    problems, loads = [], 0
    for where, src in _sources():
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if name.endswith("torch.load"):
                loads += 1
                wo = kw.get("weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            if name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where}:{node.lineno}: {name}()")
            if name.split(".")[-1] in ("unsafe_load", "full_load", "load_all") and name.startswith("yaml") or name == "yaml.load":
                problems.append(f"{where}:{node.lineno}: {name}")
            if name.startswith("pickle.") or name.startswith("dill."):
                problems.append(f"{where}:{node.lineno}: {name}")
            if name.endswith("np.load") and isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
                problems.append(f"{where}:{node.lineno}: np.load(allow_pickle=True)")
    assert not problems, problems
    assert loads >= 1  # the scan does see the one place checkpoints are read


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoints_with_code_and_yaml_with_tags_are_refused(tmp_path):
    torch.save({"model": {}, "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|unsupported"):
        load_checkpoint(tmp_path / "evil.pt")
    bad = tmp_path / "p.yaml"
    bad.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(P.ParamsError, match="not valid YAML"):
        P.read_yaml(bad)


# ------------------------------------------------------------------ real cases, no special-casing
@real
def test_real_cases_run_through_predict_and_evaluate(tmp_path, capsys):
    from brats_lib import models
    from brats_lib.inference import save_predictor

    torch.manual_seed(0)
    kwargs = dict(in_channels=5, depth=3, filters=[4, 8, 8])  # 4 modalities + the one-hot brain channel
    predictor = save_predictor(tmp_path / "tiny.pt", [models.build("unet3d", **kwargs).eval()], "unet3d", kwargs,
                               roi_size=(64, 64, 64), output="sigmoid", overlap=0.0, tta=1, foreground="brain")
    pred = tmp_path / "pred"
    for cid in REAL_CASES:
        assert cli(["predict", "--checkpoint", str(predictor), "--case", str(REAL / cid),
                    "--out", str(pred / f"{cid}.nii.gz")]) == 0
        out = nib.load(str(pred / f"{cid}.nii.gz"))
        ref = nib.load(str(REAL / cid / f"{cid}_seg.nii.gz"))
        assert out.shape == ref.shape and np.allclose(out.affine, ref.affine)
        assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2, 4}
    capsys.readouterr()
    assert cli(["evaluate", "--pred", str(pred), "--ref", str(REAL), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for cid in REAL_CASES:
        assert all(np.isfinite(res[cid][f"{m}_{r}"]) for m in ("Dice", "HD95") for r in L.REGIONS)
    no_et = "TCGA-DU-7294"
    if no_et in res:  # no ET in the reference: the empty-region rule, 1/0 or 0/373.13
        predicted_et = (np.asarray(nib.load(str(pred / f"{no_et}.nii.gz")).dataobj) == 4).any()
        assert (res[no_et]["Dice_ET"], res[no_et]["HD95_ET"]) == ((0.0, 373.13) if predicted_et else (1.0, 0.0))


def test_the_comparison_report_goes_stale_when_a_paper_profile_changes(tmp_path, monkeypatch):
    import shutil

    shutil.copytree(REPO / "params", tmp_path / "params")
    monkeypatch.setattr(runner, "PARAMS_DIR", tmp_path / "params")
    before = {nb: runner.fingerprint(nb, "cpu") for nb in ("comparison", "hnfnetv2", "cross_modality")}
    test_before = runner.fingerprint("comparison", "test")
    path = tmp_path / "params" / "cross_modality" / "cpu.yaml"
    path.write_text("# a comment: the record of a check\n" + path.read_text() + "\n# edited\n")
    assert {nb: runner.fingerprint(nb, "cpu") for nb in before} == before  # comments alone: still current
    path.write_text(path.read_text().replace("cmff_epochs: 14", "cmff_epochs: 15"))
    after = {nb: runner.fingerprint(nb, "cpu") for nb in before}
    assert after["comparison"] != before["comparison"] and after["cross_modality"] != before["cross_modality"]
    assert after["hnfnetv2"] == before["hnfnetv2"]  # another paper's report stays current
    assert runner.fingerprint("comparison", "test") == test_before  # another profile too
