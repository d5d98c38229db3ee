"""Reporting helpers, and the install files agreeing with each other."""
import json
import re
import tomllib

import numpy as np
import pandas as pd
import pytest
import yaml

from brats_lib import figures as FG, manifest as MF, statistics as ST, tables as T
from conftest import REPO


def test_mean_ci():
    m, lo, hi = ST.mean_ci([1.0, 2.0, 3.0, np.nan])
    assert m == 2.0 and 1.0 <= lo < 2.0 < hi <= 3.0
    assert ST.mean_ci([1.0, 2.0, 3.0]) == (m, lo, hi)  # seeded
    # skewed, non-negative values (HD95 with one empty-prediction penalty): a t-interval goes
    # below 0, the bootstrap interval stays inside the observed range
    hd = [2.0, 3.0, 2.5, 4.0, 3.5, 2.0, 3.0, 373.13]
    _, lo, hi = ST.mean_ci(hd)
    assert lo >= 2.0 and hi <= 373.13 and lo < np.mean(hd) < hi
    rng = np.random.default_rng(1)
    wide, narrow = ST.mean_ci(rng.normal(0, 1, 20)), ST.mean_ci(rng.normal(0, 1, 2000))
    assert narrow[2] - narrow[1] < (wide[2] - wide[1]) / 5
    assert ST.mean_ci([0.5]) == (0.5, 0.5, 0.5)
    assert ST.format_ci([0.5, 0.5]) == "0.500 [0.500, 0.500]"


def test_paired_test():
    a = np.linspace(0.5, 0.9, 12)
    assert ST.paired_test(a, a) == 1.0
    assert ST.paired_test(a, a - 0.05) < 0.01


def test_paper_vs_ours_and_save_table(tmp_path):
    ours = pd.DataFrame({"ET": [0.7, 0.8], "WT": [0.9, 0.91]}, index=["U-Net", "Ours"])
    paper = pd.DataFrame({"ET": [0.8577]}, index=["U-Net"])
    t = T.paper_vs_ours(ours, paper)
    assert list(t.columns) == ["ET (paper)", "ET (ours)", "WT (ours)"]
    assert np.isnan(t.loc["Ours", "ET (paper)"]) and t.loc["U-Net", "ET (paper)"] == 0.8577
    T.save_table(t, tmp_path, "t1")
    assert (tmp_path / "tables" / "t1.csv").read_text().startswith(",ET (paper),ET (ours),WT (ours)")
    assert "| U-Net" in (tmp_path / "tables" / "t1.md").read_text()


def test_figures_and_manifest(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    log = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_dice_mean": [np.nan, 0.4]})
    FG.save_figure(FG.plot_training_curves(log), tmp_path, "curves")
    lab = np.zeros((10, 10, 5), np.uint8)
    lab[2:5, 2:5, 3] = 3
    assert FG.tumour_slice(lab) == 3
    rgba = FG.label_rgba(lab[..., 3])
    assert rgba[3, 3, 3] > 0 and rgba[0, 0, 3] == 0
    FG.save_figure(FG.plot_case(np.random.rand(4, 10, 10, 5), lab), tmp_path, "case")
    assert (tmp_path / "figures" / "curves.png").stat().st_size > 1000
    m = MF.write_manifest(tmp_path, notebook="x", profile="test", data_source="phantoms", seed=1, wall_time_s=2.0)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["seed"] == 1 and on_disk["versions"]["numpy"] and re.match(r"[0-9a-f]{40}|unknown", m["git_commit"])


def test_manifest_names_each_networks_precision_when_a_report_mixes_them(monkeypatch):
    from brats_lib import precision as PR

    monkeypatch.setattr(PR, "cpu_supports_bf16", lambda: True)
    assert MF.precisions(True, "cpu") == ("bfloat16 autocast", None)
    assert MF.precisions(False, "cpu") == ("float32", None)
    name, each = MF.precisions({"A": True, "B": False}, "cpu")
    assert name == "mixed" and each == {"A": "bfloat16 autocast", "B": "float32"}
    assert MF.precisions({"A": True, "B": True}, "cuda")[0] == "float16 autocast"
    m = MF.manifest("comparison", "test", "phantoms", 0, amp={"A": True, "B": False})
    assert m["precision"] == "mixed" and m["precision_by_network"]["B"] == "float32"
    assert "precision_by_network" not in MF.manifest("x", "test", "phantoms", 0, amp=True)


def test_manifest_hardware_names_the_cpu_model_and_its_bf16_instructions():
    info = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
            "model name\t: AMD EPYC 9R14\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert MF.cpu_model(info) == "AMD EPYC 9R14 (family 25, model 17), avx512_bf16"
    intel = "model name\t: Intel(R) Xeon(R) 8488C\nflags\t: avx512f amx_bf16 avx512_bf16 amx_tile\n"
    assert MF.cpu_model(intel) == "Intel(R) Xeon(R) 8488C, amx_bf16 + avx512_bf16"
    assert "avx" not in MF.cpu_model("model name\t: Old CPU\nflags\t: sse2\n")
    assert MF.hardware()["cpu_model"]


def test_environment_yml_installs_the_pyproject_set():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    pip = [d for d in deps if isinstance(d, dict)][0]["pip"]
    assert pip == ["-c requirements.lock", "-e .[test]"]  # the package itself (pyproject's list), at the lock's versions
    conda = [d for d in deps if isinstance(d, str)]
    assert all(d.split("=")[0] in ("python", "pip") for d in conda)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]
    assert int(env["dependencies"][0].split("=")[1].split(".")[1]) >= int(project["requires-python"].split(".")[1])


def _lock() -> dict[str, str]:
    lines = [ln.strip() for ln in (REPO / "requirements.lock").read_text().splitlines()]
    pins = dict(ln.split("==", 1) for ln in lines if ln and not ln.startswith("#"))
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins.items()}


def test_lock_pins_every_dependency_but_torch_exactly():
    lock = _lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    names = {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]).lower() for d in wanted}
    assert "torch" not in lock  # pyproject pins it; a GPU machine may bring a CUDA build of it
    assert not names - {"torch"} - set(lock), f"not in requirements.lock: {sorted(names - {'torch'} - set(lock))}"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in lock.values())
    makefile = (REPO / "Makefile").read_text()
    assert "LOCK ?=" in makefile and "-c $(LOCK)" in makefile


def test_committed_reports_were_made_with_the_locked_versions():
    """A report's manifest records its library versions; the lock must be the environment
    that made them (refresh both together), or a fresh install would make them stale."""
    lock = _lock()
    manifests = sorted(REPO.glob("reports/*/manifest.json"))
    if not manifests:
        pytest.skip("no committed reports")
    for path in manifests:
        versions = json.loads(path.read_text()).get("versions", {})
        for name, version in versions.items():
            key = re.sub(r"[-_.]+", "-", name).lower()
            if key in lock:
                assert lock[key] == version, f"{path.parent.name}: {name} {version}, requirements.lock {lock[key]}"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text()
    block = readme.split("```")[1]
    commands = [line for line in block.splitlines()[1:] if line.strip() and not line.startswith("#")]
    assert commands == ["make reports", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_stopwatch_books_laps_and_parts():
    from brats_lib.app.session import Stopwatch

    clock = Stopwatch(start=100.0)
    import time as _time
    real = _time.time
    try:
        _time.time = lambda: 110.0
        clock.lap("evaluation", training=6.0, validation=1.0)   # 10 s: 6 training, 1 validation, 3 evaluation
        _time.time = lambda: 112.0
        clock.lap("figures")
        _time.time = lambda: 115.0
        clock.lap("evaluation", training=99.0)                   # a part cannot exceed the lap: all 3 s training
    finally:
        _time.time = real
    assert clock.seconds == {"training": 9.0, "validation": 1.0, "evaluation": 3.0, "figures": 2.0}
    t = clock.table()
    assert t.loc["total", "seconds"] == 15.0 and t.loc["training", "share (%)"] == 60.0
    assert list(t.index[:1]) == ["training"]
