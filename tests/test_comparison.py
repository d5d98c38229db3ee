import json

import numpy as np
import pandas as pd
import pytest
import torch

from brats_lib import comparison as C
from brats_lib.app import profiles as params
from brats_lib.app import runner


def _per_case(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for method, dice in values.items():
        for i, d in enumerate(dice):
            rows.append({"method": method, "fold": 0, "case": f"c{i}", "Dice mean": d,
                         **{f"Dice {r}": d for r in ("ET", "TC", "WT")},
                         **{f"HD95 {r}": 10 * (1 - d) for r in ("ET", "TC", "WT")}})
    return pd.DataFrame(rows)


def test_brats_ranking_ranks_per_case_and_metric_then_averages():
    per = _per_case({"a": [0.9, 0.8, 0.7], "b": [0.5, 0.9, 0.6], "c": [0.9, 0.1, 0.1]})
    table = C.brats_ranking(per, ["a", "b", "c"])
    # case 0: a and c tie for first (both rank 1), b third; case 1: b, a, c; case 2: a, b, c
    assert table.loc["a", "mean rank"] == pytest.approx((1 + 2 + 1) / 3)
    assert table.loc["b", "mean rank"] == pytest.approx((3 + 1 + 2) / 3)
    assert table.loc["c", "mean rank"] == pytest.approx((1 + 3 + 3) / 3)
    assert list(table.index) == ["a", "b", "c"] and list(table["position"]) == [1, 2, 3]
    # HD95 is ranked lower-is-better: the same order as Dice here
    assert table.loc["a", "HD95 ET"] == table.loc["a", "Dice ET"]


def test_holm_adjustment():
    adj = C.holm([0.01, 0.04, 0.03, 0.2])
    # sorted 0.01, 0.03, 0.04, 0.2 -> 0.04, 0.09, 0.09 (monotone), 0.2
    assert adj.tolist() == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert C.holm([0.5, 0.6]).tolist() == pytest.approx([1.0, 1.0])


def test_pairwise_wilcoxon_finds_a_consistent_difference():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.8, 12)
    per = _per_case({"good": base + 0.1, "bad": base, "same": base + rng.normal(0, 0.01, 12)})
    pairs = C.pairwise_wilcoxon(per, ["good", "bad", "same"]).set_index(["A", "B"])
    assert pairs.loc[("good", "bad"), "p (Holm)"] < 0.05
    assert pairs.loc[("good", "bad"), "mean Dice mean A - B"] == pytest.approx(0.1)
    assert pairs.loc[("bad", "same"), "p (Holm)"] > 0.05
    assert (pairs["p (Holm)"] >= pairs["p"]).all()


def test_peak_memory_on_cpu_sees_a_large_temporary():
    def work():
        x = torch.ones(4 * 2 ** 20)  # 16 MiB, freed before returning
        return float(x.sum())

    out, mib = C.peak_memory(work)
    assert out == 4 * 2 ** 20 and 15 < mib < 40


def test_method_params_take_the_shared_data_and_the_overrides():
    shared = params.as_dict(params.load("comparison", "test"))
    m = C.METHODS["Optimized U-Net"]
    q = C.method_params(m, "test", shared, {"epochs": 3})
    assert q.splits == shared["splits"] and q.phantom_shape == shared["phantom_shape"] and q.epochs == 3
    hq = C.method_params(C.METHODS["HNF-Netv2"], "test", shared)
    assert hq.holdout_cases == 0
    with pytest.raises(params.ParamsError, match="'no_such_key'"):
        C.method_params(m, "test", shared, {"no_such_key": 1})


def test_every_method_has_a_pipeline_and_a_known_row():
    from brats_lib.papers.attention_r2unet_mtds import pipeline as AR
    from brats_lib.papers.cross_modality import pipeline as CM
    from brats_lib.papers.hnfnetv2 import pipeline as HN
    from brats_lib.papers.omnet_cga import pipeline as OM
    from brats_lib.papers.optimized_unet import pipeline as OU
    from brats_lib import pipeline as pipelines

    rows = {"hnfnetv2": HN.ROWS, "optimized_unet": OU.RUNS, "attention_r2unet_mtds": AR.RUNS,
            "omnet_cga": OM.ROWS, "cross_modality": CM.ROWS}
    for m in C.METHODS.values():
        pipe = pipelines.get(m.notebook)
        assert pipe.rows is rows[m.notebook] and m.row in pipe.rows, m


def test_evaluate_refuses_held_out_cases_that_a_fold_holds():
    folds = [{"train": ["a", "b"], "val": ["c"]}]
    with pytest.raises(ValueError, match=r"held-out cases inside the folds: \['b'\]"):
        C.evaluate([], {}, folds, {}, params.load("comparison", "test"), "unused", holdout=["b", "z"])


@pytest.mark.slow
def test_scored_cases_counts_a_held_out_case_once_however_many_folds_score_it():
    rows = [  # two folds; v0 / v1 validate in one fold each; h is held out, scored by both folds' models
        {"method": "a", "fold": 0, "case": "v0", "scored": "validation", "Dice WT": 0.8, "HD95 WT": 2.0},
        {"method": "a", "fold": 1, "case": "v1", "scored": "validation", "Dice WT": 0.6, "HD95 WT": 4.0},
        {"method": "a", "fold": 0, "case": "h", "scored": "held out", "Dice WT": 0.9, "HD95 WT": 1.0},
        {"method": "a", "fold": 1, "case": "h", "scored": "held out", "Dice WT": 0.5, "HD95 WT": 7.0},
        {"method": "b", "fold": 0, "case": "v0", "scored": "validation", "Dice WT": 0.7, "HD95 WT": 3.0},
        {"method": "b", "fold": 1, "case": "v1", "scored": "validation", "Dice WT": 0.7, "HD95 WT": 3.0},
        {"method": "b", "fold": 0, "case": "h", "scored": "held out", "Dice WT": 0.2, "HD95 WT": 9.0},
        {"method": "b", "fold": 1, "case": "h", "scored": "held out", "Dice WT": 0.4, "HD95 WT": 5.0},
    ]
    per = pd.DataFrame(rows)
    out = C.scored_cases(per)
    assert list(out.columns) == list(per.columns)
    assert out.groupby("method").size().eq(3).all()  # v0, v1 and h once
    held = out[out.scored == "held out"].set_index("method")
    assert (held.fold == C.ALL_FOLDS).all() and (held.case == "h").all()
    assert held.loc["a", "Dice WT"] == pytest.approx(0.7) and held.loc["a", "HD95 WT"] == pytest.approx(4.0)
    assert held.loc["b", "Dice WT"] == pytest.approx(0.3) and held.loc["b", "HD95 WT"] == pytest.approx(7.0)
    pd.testing.assert_frame_equal(out[out.scored == "validation"], per[per.scored == "validation"].reset_index(drop=True))
    # the paired test pairs the held-out case once: 3 cases, not 4
    assert C.pairwise_wilcoxon(out, ["a", "b"], column="Dice WT")["cases"].item() == 3
    # one fold: nothing to merge
    one = per[per.fold == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(C.scored_cases(one), one)


def test_empty_region_table_splits_each_mean_by_cases_with_and_without_the_region():
    # method a: ET Dice 0.6 and 0.8 where the reference has ET, 1 and 0 on the two ET-free cases
    # (no ET predicted on one, some on the other); every reference holds TC and WT
    ref_et, dice_et = [50, 80, 0, 0], {"a": [0.6, 0.8, 1.0, 0.0], "b": [0.2, 0.4, 1.0, 1.0]}
    per = pd.DataFrame([{"method": m, "case": f"c{i}", "ref voxels ET": ref_et[i], "Dice ET": d,
                         "ref voxels TC": 90, "Dice TC": 0.5, "ref voxels WT": 200, "Dice WT": 0.7}
                        for m, ds in dice_et.items() for i, d in enumerate(ds)])
    t = C.empty_region_table(per).set_index("method")
    assert list(t.index) == ["a", "b"] and (t.region == "ET").all()  # no TC- or WT-free case: no row
    assert t.loc["a", "cases with it"] == 2 and t.loc["a", "cases without it"] == 2
    assert t.loc["a", "Dice on them"] == pytest.approx(0.7) and t.loc["a", "share left free (Dice there)"] == 0.5
    assert t.loc["b", "Dice on them"] == pytest.approx(0.3) and t.loc["b", "share left free (Dice there)"] == 1.0
    # the mean over all cases is the summary's: (2 * 0.7 + 2 * 0.5) / 4 for a
    assert t.loc["a", "Dice on all"] == pytest.approx(0.6) and t.loc["b", "Dice on all"] == pytest.approx(0.65)
    every = per.assign(**{"ref voxels ET": 50})
    assert C.empty_region_table(every).empty


def test_train_jobs_reports_each_job_as_it_arrives_and_returns_them_in_job_order(monkeypatch, tmp_path):
    seen = []

    def fake_train(m, k, cases, p, out_dir, fraction, seed, device=None):
        return f"{m}-{k}"

    monkeypatch.setattr(C, "train", fake_train)
    out = C.train_jobs({key: (key, 0, [], None, tmp_path, 0.2, 0) for key in ("late", "early")}, workers=1, progress=False,
                       on_done=lambda key, f: seen.append((key, f)))
    assert list(out) == ["late", "early"] and out["early"] == "early-0"
    assert seen == [("late", "late-0"), ("early", "early-0")]


def test_notebook_under_test_profile(test_profile_report):
    out = test_profile_report("comparison")
    summary = pd.read_csv(out / "tables" / "summary.csv", index_col=0)
    assert list(summary.index) == list(C.METHODS)
    assert summary["peak MiB (inference)"].astype(float).gt(0).all()
    assert summary["network kMACs / voxel"].gt(0).all() and summary["params (M)"].gt(0).all()
    assert summary["inference kMACs / voxel"].gt(0).all()
    ranking = pd.read_csv(out / "tables" / "ranking.csv", index_col=0)
    assert sorted(ranking.index) == sorted(C.METHODS) and ranking["mean rank"].between(1, len(C.METHODS)).all()
    pairs = pd.read_csv(out / "tables" / "pairwise_wilcoxon.csv")
    assert len(pairs) == len(C.METHODS) * (len(C.METHODS) - 1) // 2
    per = pd.read_csv(out / "tables" / "per_case.csv")
    assert per.groupby("method").size().nunique() == 1  # the same cases for every method
    held = per[per.scored == "held out"]
    assert set(per.scored) == {"validation", "held out"} and held.groupby("method").size().eq(1).all()
    assert not set(held.case) & set(per.loc[per.scored == "validation", "case"])
    empty = pd.read_csv(out / "tables" / "empty_region.csv")
    assert list(empty.columns) == ["method", "region", "cases with it", "Dice on them", "cases without it",
                                   "share left free (Dice there)", "Dice on all"]
    for fig in ("dice_boxplots", "dice_vs_macs", "one_case_every_method"):
        assert (out / "figures" / f"{fig}.png").exists()
    man = json.loads((out / "manifest.json").read_text())
    assert man["profile"] == "test" and man["methods"] == list(C.METHODS)


@pytest.mark.slow
def test_full_profile_code_path_on_a_tiny_folder(tmp_path, phantom_root):
    from conftest import run_full_profile

    hn = params.load("hnfnetv2", "test")
    small = {k: getattr(hn, k) for k in ("patch_size", "window_stride", "inference_crop", "unet_filters", "width",
                                         "blocks", "bases", "em_iterations", "min_et", "sw_batch_size")}
    overrides = {"splits": "pytest-comparison-full", "n_folds": 2, "folds": 1,
                 "methods": ["3D U-Net", "Cross-modality fusion"],
                 "method_overrides": {
                     "3D U-Net": {**small, "epochs": 1, "steps_per_epoch": 1, "warmup_epochs": 0, "val_every": 0,
                                  "num_workers": 0},
                     "Cross-modality fusion": {"patch_size": [32, 32, 32], "features": [2, 2, 4, 4, 4],
                                               "cmft_epochs": 1, "cmff_epochs": 1, "steps_per_epoch": 1,
                                               "num_workers": 0}},
                 "tta": 1, "memory_cases": 0, "progress": False}
    man = run_full_profile("comparison", phantom_root, tmp_path, overrides)
    assert man["methods"] == ["3D U-Net", "Cross-modality fusion"]
    assert runner.notebook_names()[-1] == "comparison"


def _tiny_jobs(phantom_root):
    from brats_lib import data as D

    cases = {c.case_id: D.load_case(c) for c in D.open_source(phantom_root, 0)[0]}
    ids = sorted(cases)
    folds = [{"train": ids[:3], "val": ids[3:]}]
    shared = params.as_dict(params.load("comparison", "test"))
    over = {"3D U-Net": {"epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0, "val_every": 0},
            "Cross-modality fusion": {"features": [2, 2, 4, 4, 4], "cmft_epochs": 1, "cmff_epochs": 1,
                                      "steps_per_epoch": 2}}
    params_of = {lab: C.method_params(C.METHODS[lab], "test", shared, {**o, "progress": False})
                 for lab, o in over.items()}
    return [(C.METHODS[lab], 0) for lab in over], params_of, folds, cases


@pytest.mark.slow
def test_train_all_in_worker_processes_gives_the_weights_of_one_thread_here(phantom_root, tmp_path):
    """Two methods trained at once, each in a spawned process with one thread, end with
    exactly the weights that training them one after another here with one thread gives:
    nothing but the thread count reaches a job from its neighbour or its process."""
    jobs, params_of, folds, cases = _tiny_jobs(phantom_root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = C.train_all(jobs, params_of, folds, cases, tmp_path / "here", workers=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    if threads < 2:
        pytest.skip("one thread: the pool would give each worker the same one")
    pooled = C.train_all(jobs, params_of, folds, cases, tmp_path / "pool", workers=threads, progress=False)
    assert list(pooled) == list(here) == [(m.label, 0) for m, _ in jobs]
    for key in here:
        a, b = here[key], pooled[key]
        assert b.method == a.method and b.trained.train_seconds > 0
        for na, nb in zip(a.networks, b.networks):
            sa, sb = na.state_dict(), nb.state_dict()
            assert list(sa) == list(sb)
            for name in sa:
                assert torch.equal(sa[name], sb[name]), (key, name)
        lc = cases[folds[0]["val"][0]]
        np.testing.assert_array_equal(a.predict(lc), b.predict(lc))
