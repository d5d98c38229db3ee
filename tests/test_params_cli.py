import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from brats_lib.app import cli
from brats_lib.app import profiles as params
from brats_lib.app.profiles import ParamsError
from conftest import REPO

NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
@pytest.mark.parametrize("profile", params.PROFILES)
def test_every_profile_validates(notebook, profile):
    params.load(notebook, profile)


def _write(tmp_path, text):
    d = tmp_path / "00_data_and_metrics"
    d.mkdir(parents=True, exist_ok=True)
    (d / "cpu.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize("text, message", [
    ("seed: 0\nphantom_cases: 2\nphantom_casez: 3\n", "unknown key 'phantom_casez'"),
    ("seed: zero\nphantom_cases: 2\n", "key 'seed': expected an integer"),
    ("seed: 0\nphantom_cases: 2\nphantom_shape: [1, x, 3]\n", r"key 'phantom_shape'\[1\]"),
    ("seed: 0\n", "required key 'phantom_cases' is missing"),
    ("seed: !!python/object/apply:os.system ['echo hacked']\nphantom_cases: 1\n", "not valid YAML"),
])
def test_bad_parameter_files_name_the_key(tmp_path, text, message):
    with pytest.raises(ParamsError, match=message):
        params.load("00_data_and_metrics", "cpu", params_dir=_write(tmp_path, text))


def test_unknown_profile():
    with pytest.raises(ParamsError, match="unknown profile"):
        params.load("00_data_and_metrics", "gpu")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "brats_lib", *args], capture_output=True, text=True, timeout=300)


def test_cli_phantoms_and_evaluate(tmp_path):
    r = run_cli("phantoms", "--out", str(tmp_path / "ds"), "--cases", "2", "--seed", "1", "--shape", "32", "32", "32")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "ds" / "Phantom_00001").iterdir()) == [
        f"Phantom_00001_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")]
    # predictions: the references themselves, in the submission convention <id>.nii.gz
    pred = tmp_path / "pred"
    pred.mkdir()
    for cid in ("Phantom_00000", "Phantom_00001"):
        (pred / f"{cid}.nii.gz").write_bytes((tmp_path / "ds" / cid / f"{cid}_seg.nii.gz").read_bytes())
    r = run_cli("evaluate", "--pred", str(pred), "--ref", str(tmp_path / "ds"), "--json", "--out", str(tmp_path / "s.csv"))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert list(res)[:2] == ["Phantom_00000", "Phantom_00001"] and list(res)[-5:] == [
        "Mean", "StdDev", "Median", "25quantile", "75quantile"]
    assert res["Mean"]["Dice_WT"] == 1.0 and res["Mean"]["HD95_TC"] == 0.0
    assert (tmp_path / "s.csv").read_text().startswith("case,Dice_ET,Dice_TC,Dice_WT,HD95_ET")


def test_cli_bad_input_exits_2_naming_case_and_file(tmp_path, phantom_root):
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "Phantom_00000.nii.gz").write_bytes(b"garbage")
    r = run_cli("evaluate", "--pred", str(pred), "--ref", str(phantom_root))
    assert r.returncode == 2 and "Phantom_00000" in r.stderr and "Phantom_00000.nii.gz" in r.stderr
    assert not r.stdout.strip() or "Traceback" not in r.stderr


def test_cli_complexity_json_and_list():
    r = run_cli("complexity", "unet3d", "--patch", "32", "32", "32", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["params"] > 0 and res["macs"] >= res["conv_macs"] > 0
    assert "unet3d" in run_cli("complexity", "--list").stdout


def test_evaluate_single_files_with_conventions(tmp_path):
    import numpy as np
    from conftest import save

    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 2
    ref[3:5, 3:5, 3:5] = 3  # msd: ET
    save(tmp_path / "ref.nii.gz", ref)
    save(tmp_path / "pred.nii.gz", ref)
    df = cli.evaluate_paths(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", labels="msd", progress=False)
    assert df.loc["ref", "Dice_ET"] == 1.0
    with pytest.raises(Exception, match=r"\[3\]"):
        cli.evaluate_paths(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", labels="brats2021", progress=False)


def test_evaluate_jobs_gives_the_same_table_and_checks_its_argument(phantom_root, tmp_path):
    from brats_lib.data import discover_cases

    pred = tmp_path / "pred"
    pred.mkdir()
    cases = discover_cases(phantom_root)
    for k, c in enumerate(cases):  # each prediction is another case's reference
        shutil.copy(cases[(k + 1) % len(cases)].label, pred / f"{c.case_id}.nii.gz")
    one = cli.evaluate_paths(pred, phantom_root, progress=False)
    two = cli.evaluate_paths(pred, phantom_root, progress=False, jobs=2)
    assert one.equals(two) and list(one.index) == [c.case_id for c in cases]
    assert (one["Dice_WT"] < 1).all()
    # the command scores the tumour box of the stored values only: the same values, bit for
    # bit, as the metrics on the whole canonical volumes
    from brats_lib.data import read_label_file
    from brats_lib.metrics import evaluate_labels, to_frame

    whole = {}
    for k, c in enumerate(cases):
        ref, img = read_label_file(c.label)
        guess, _ = read_label_file(pred / f"{c.case_id}.nii.gz")
        whole[c.case_id] = evaluate_labels(guess, ref, img.header.get_zooms()[:3])
    assert to_frame(whole).equals(one)
    r = run_cli("evaluate", "--pred", str(pred), "--ref", str(phantom_root), "--jobs", "0")
    assert r.returncode == 2 and "--jobs must be at least 1" in r.stderr
