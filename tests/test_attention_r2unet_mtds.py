"""Attention R2U-Net + MTDS: network variants and blocks, targets and loss, slice
inference, post-processing, scoring, the pipeline and its rows x folds loop, the
notebook's tables and figures (report), claim checks and the notebook."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from brats_lib.papers.attention_r2unet_mtds import paper, pipeline as AR, report as R
from brats_lib import labels as L
from brats_lib import models
from brats_lib import pipeline as pipelines
from brats_lib.app import profiles as params
from brats_lib.augmentation import FlipAugmentation
from brats_lib.data import LoadedCase
from brats_lib.papers.attention_r2unet_mtds.networks import AttentionGate, PreActResidualUnit, SEDropout
from conftest import run_full_profile

P_TEST = params.load("attention_r2unet_mtds", "test")


@pytest.mark.parametrize("name", list(AR.RUNS))
def test_every_row_builds_and_runs(name):
    run = AR.RUNS[name]
    net = AR.build_model(run, P_TEST)
    x = torch.randn(2, 4, 32, 40)
    out = net.train()(x)
    if run.model in ("mtds_attention_r2unet", "attention_r2unet_se_nodropout"):
        assert isinstance(out, list) and [o.shape for o in out] == [(2, 1, 32, 40)] * 4
    else:
        assert out.shape == (2, 1, 32, 40)
    assert net.eval()(x).shape == (2, 1, 32, 40)


def test_variants_differ_where_the_tables_say():
    build = lambda n: models.build(n, base=4)  # noqa: E731
    plain, res, skip, apr = (build(f"attention_r2unet_{v}") for v in ("plain", "residual", "skip_gates", "apr"))
    assert not plain.units[0].shortcut and res.units[0].shortcut
    assert not any(isinstance(m, AttentionGate) for m in res.modules())
    assert any(isinstance(m, AttentionGate) for m in apr.modules()) and not apr.deep_supervision
    assert not any(isinstance(m, AttentionGate) for m in skip.modules()) and skip.gates == "skip"
    assert isinstance(build("attention_r2unet_se_nodropout").enc_se[0].dropout, torch.nn.Identity)
    assert isinstance(build("mtds_attention_r2unet").enc_se[0].dropout, torch.nn.Dropout)
    with pytest.raises(ValueError, match="divisible by 8"):
        apr(torch.randn(1, 4, 30, 32))


def test_all_outputs_match_the_eval_main_head():
    torch.manual_seed(0)
    net = models.build("mtds_attention_r2unet", base=4).eval()
    x = torch.randn(2, 4, 32, 32)
    both = net.all_outputs(x)
    assert both.shape == (2, 4, 32, 32) and not net.training
    assert torch.allclose(both[:, :1], net(x), atol=1e-5)


def test_preactivation_unit_gate_and_se():
    unit = PreActResidualUnit(3)
    for m in unit.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(unit.eval()(x), x)                          # x + F(x) with F = 0
    unit.shortcut = False
    assert torch.count_nonzero(unit(x)) == 0
    gate = AttentionGate(3)
    gate.keep = True
    y = torch.rand(1, 3, 8, 8) + 0.1
    ratio = gate(y) / y
    assert gate.last_map.shape == (1, 1, 8, 8) and ((ratio > 0) & (ratio < 1)).all()
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))   # one spatial map for every channel
    se = SEDropout(8, reduction=2, dropout=0.5)
    z = torch.rand(4, 8, 6, 6)
    assert torch.equal(se.eval()(z), se(z))
    torch.manual_seed(0)
    assert not torch.equal(se.train()(z), se(z))                   # dropout on the channel weights


def test_targets_and_loss():
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
    lab[:, 2:6, 2:6] = L.ED
    lab[:, 3:5, 3:5] = L.ET
    lab[:, 3, 3] = L.NCR
    multi = AR.head_targets(lab, "multi")
    assert [float(t.sum()) for t in multi] == [32.0, 6.0, 2.0, 24.0]
    assert all(torch.equal(t, multi[0]) for t in AR.head_targets(lab, "single"))
    assert len(AR.head_targets(lab, "none")) == 1
    loss = AR.MTDSLoss("multi")
    perfect = [20 * (2 * t - 1) for t in multi]
    assert float(loss(perfect, lab)) < 0.05 < float(loss([-p for p in perfect], lab))
    one = float(AR.MTDSLoss("none")(perfect[0] * 0, lab))
    assert float(AR.MTDSLoss("single")([perfect[0] * 0] * 4, lab)) == pytest.approx(4 * one)
    with pytest.raises(ValueError, match="supervision"):
        AR.MTDSLoss("both")


def test_post_processing_keeps_components_of_a_tenth_of_the_largest():
    m = np.zeros((30, 30, 30), bool)
    m[0:5, 0:5, 0:4] = True      # 100 voxels
    m[10:15, 10:12, 10:12] = True  # 20 voxels
    m[20:21, 20:21, 20:25] = True  # 5 voxels
    kept = AR.keep_large_components(m, 0.1)
    assert kept.sum() == 120 and not kept[20, 20, 20]
    assert AR.keep_large_components(m, 0.25).sum() == 100


def test_slice_inference_scoring_and_sub_regions():
    img = np.zeros((4, 36, 44, 10), np.float32)
    img[:, 4:32, 4:40] = np.random.default_rng(0).random((4, 28, 36, 10))
    lab = np.zeros((36, 44, 10), np.uint8)
    lab[10:20, 10:20, 3:7] = L.ED
    lab[12:16, 12:16, 4:6] = L.ET
    lc = LoadedCase("c0", img, lab, np.eye(4), None, (1.0, 1.0, 1.0))
    p = params.load("attention_r2unet_mtds", "test", crop=[24, 32])
    heads = AR.predict_case(models.build("mtds_attention_r2unet", base=2), lc, p)
    plain = AR.predict_case(models.build("attention_r2unet_apr", base=2), lc, p)
    assert heads.shape == (4, 36, 44, 10) and not np.isnan(heads).any()
    assert np.isnan(plain[1:]).all() and not np.isnan(plain[0]).any()
    assert heads[:, :6].max() == 0 and heads[:, :, :6].max() == 0      # outside the centre crop
    masks = AR.masks_from_probabilities(heads)
    assert set(masks) == {"WT", "ET", "NCR", "ED"} and not (masks["ET"] & ~masks["WT"]).any()
    assert set(AR.masks_from_probabilities(heads, sub_regions=False)) == {"WT"}
    row = AR.score_case(AR.masks_from_probabilities(plain), lab)
    assert np.isnan(row["Dice ET"]) and 0 <= row["Dice WT"] <= 1 and len(row) == 16 + 8
    assert np.isnan(row["pred voxels ET"]) and row["ref voxels ET"] == (lab == L.ET).sum()  # no ET head
    exact = AR.score_case(AR.reference_masks(lab), lab)
    assert exact["Dice ET"] == exact["Dice WT"] == 1.0 and exact["HD95 ED"] == 0.0
    assert exact["pred voxels WT"] == exact["ref voxels WT"] == (lab > 0).sum()


def test_flip_augmentation():
    img = np.random.default_rng(0).random((4, 8, 10), dtype=np.float32)
    lab = (img[0] > 0.5).astype(np.uint8)
    a = FlipAugmentation()(img, lab, np.random.default_rng(3))
    b = FlipAugmentation()(img, lab, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = FlipAugmentation(p=1.0)(img, lab, np.random.default_rng(3))
    assert np.array_equal(c[0], img[:, ::-1, ::-1]) and np.array_equal(c[1], lab[::-1, ::-1])


def test_training_settings_are_the_papers():
    p = params.load("attention_r2unet_mtds", "full", data_dir="x")
    cfg = AR.train_config(p)
    assert (cfg.optimizer, cfg.lr, cfg.schedule, cfg.poly_power, cfg.batch_size, cfg.epochs) == \
        ("adam", 1e-4, "poly", 0.9, 32, 50)
    assert tuple(p.crop) == paper.PAPER_CROP


def _case(case_id: str, seed: int) -> LoadedCase:
    """A 36 x 44 x 10 case with a brain of random intensities, ED around ET and one NCR voxel."""
    img = np.zeros((4, 36, 44, 10), np.float32)
    img[:, 4:32, 4:40] = np.random.default_rng(seed).random((4, 28, 36, 10))
    lab = np.zeros((36, 44, 10), np.uint8)
    lab[10:20, 10:20, 3:7] = L.ED
    lab[12:16, 12:16, 4:6] = L.ET
    lab[18, 18, 5] = L.NCR
    return LoadedCase(case_id, img, lab, np.eye(4), None, (1.0, 1.0, 1.0))


def _trained(row: str, p) -> pipelines.Trained:
    torch.manual_seed(0)
    return pipelines.Trained(row, 0, [AR.build_model(AR.RUNS[row], p).eval()])


def test_paper_tables_and_claims_name_trained_rows():
    assert paper.PROPOSED in AR.RUNS
    assert set(paper.TABLES) == set(paper.TABLE_TITLES)
    for table, rows in paper.TABLES.items():
        assert {key for _, key in rows} <= set(AR.RUNS), table
    assert paper.TABLES["table1"][-1][1] == paper.TABLES["table4"][-1][1] == paper.TABLES["table6"][-1][1] \
        == paper.PROPOSED                                            # the last row is the proposed one
    assert paper.PAPER_SETUP["slice crop"] == "144 x 176" and len(paper.PAPER_SETUP) == 7


def test_pipeline_predictions_carry_the_scored_masks():
    p = params.load("attention_r2unet_mtds", "test", crop=[24, 32])
    pipe = pipelines.get("attention_r2unet_mtds")
    assert pipe.describe(p) == {"patch": "24x32", "training": "1 epochs of slices"}   # the comparison's setup table
    lc = _case("c0", 0)
    for row, scored in ((paper.PROPOSED, {"WT", "ET", "NCR", "ED"}),
                        ("Single-task DS (WT on every head)", {"WT"}), ("APR (no DS)", {"WT"})):
        trained = _trained(row, p)
        pred = pipe.predict(trained, lc, p, final=True)
        assert isinstance(pred, AR.MaskPrediction) and set(pred.masks) == scored, row
        probs = AR.predict_case(trained.networks[0], lc, p)
        np.testing.assert_array_equal(pred.labels, pipe.to_labels(trained, probs, lc, p, final=True))
        assert pipe.score(pred, lc) == pytest.approx(AR.score_case(pred.masks, lc.label, lc.spacing), nan_ok=True)
    single = pipe.score(pipe.predict(_trained("Single-task DS (WT on every head)", p), lc, p), lc)
    assert np.isnan(single["Dice ET"]) and not np.isnan(single["Dice WT"])  # its heads learnt WT, not ET


def test_cross_validate_rows_trains_and_scores_every_row_and_fold(tmp_path):
    p = params.load("attention_r2unet_mtds", "test", crop=[24, 32], batch_size=8)
    cases = {c.case_id: c for c in (_case(f"c{i}", i) for i in range(3))}
    folds = [{"train": ["c0", "c1"], "val": ["c2"]}, {"train": ["c1", "c2"], "val": ["c0"]}]
    rows = [paper.PROPOSED, "APR (no DS)"]
    per_case, trained = AR.cross_validate_rows(rows, folds, cases, p, tmp_path, progress=False)
    assert set(trained) == {(r, k) for r in rows for k in (0, 1)}
    assert list(per_case[["row", "fold", "case"]].itertuples(index=False, name=None)) == \
        [(paper.PROPOSED, 0, "c2"), (paper.PROPOSED, 1, "c0"), ("APR (no DS)", 0, "c2"), ("APR (no DS)", 1, "c0")]
    assert "Dice mean" not in per_case and per_case["Dice WT"].between(0, 1).all()
    assert per_case.loc[per_case.row == "APR (no DS)", "Dice ET"].isna().all()
    assert per_case.loc[per_case.row == paper.PROPOSED, "Dice ET"].notna().all()
    assert (tmp_path / "attention_r2unet_apr" / "none" / "fold1" / "last.pt").exists()
    assert trained[paper.PROPOSED, 0].logs[0]["train_loss"].notna().all()


def test_scale_table_and_heads_note():
    p = params.load("attention_r2unet_mtds", "test")
    t = R.scale_table(p)
    assert list(t.index) == list(paper.PAPER_SETUP) and list(t.columns) == ["paper", "this run"]
    assert t.loc["slice crop", "this run"] == "32 x 32" and t.loc["first-level kernels", "this run"] == "2"
    assert t.loc["data", "this run"] == "4 phantoms 32x32x32" and t.loc["epochs", "paper"] == "50"
    note = R.heads_note(params.load("attention_r2unet_mtds", "test", post_fraction=0.25))
    assert "ET: level 0, NCR: level 1, ED: level 2" in note and "at least 0.25 of the largest" in note


def test_model_sizes():
    sizes = R.model_sizes(params.load("attention_r2unet_mtds", "test"))
    assert list(sizes.index) == list(AR.RUNS)
    assert (sizes["params (M), paper size"] > 10 * sizes["params (M), this run"]).all()
    same = sizes.loc[[paper.PROPOSED, "SE without dropout", "Single-task DS (WT on every head)"]]
    assert same["params (M), paper size"].nunique() == 1                # dropout and supervision add no weights
    assert sizes.loc[paper.PROPOSED, "params (M), paper size"] == pytest.approx(2.741632)
    assert sizes.loc["APR (no DS)", "params (M), paper size"] < sizes.loc[paper.PROPOSED, "params (M), paper size"]


def test_summary_and_paper_table():
    values = np.random.default_rng(0).random(8) * 0.5
    per_case = []
    for row, shift in ((paper.PROPOSED, 0.1), ("SE without dropout", 0.0)):   # WT Dice + 0.1 on every case
        for i in range(8):
            d = {"row": row, "case": f"c{i}"}
            for region in AR.SCORED:
                for met in AR.METRICS:
                    d[f"{met} {region}"] = (values[i] + shift if region == "WT" or row == paper.PROPOSED
                                            else float("nan"))
            per_case.append(d)
    per_case = pd.DataFrame(per_case)
    params_m = {paper.PROPOSED: 1.23456, "SE without dropout": 1.2}
    t = R.paper_table(per_case, "table1", params_m)
    assert list(t.index) == ["SE without dropout", "SE with dropout"]
    assert t.loc["SE with dropout", "p vs SE with dropout"] == ""
    assert t.loc["SE without dropout", "p vs SE with dropout"] == "0.00781"   # 2 / 2^8: all 8 pairs one way
    assert t.loc["SE without dropout", "Dice ET"] == "" and t.loc["SE with dropout", "Dice ET"].startswith("0.")
    assert t.loc["SE with dropout", "params (M)"] == "1.235"
    hd = t.loc["SE with dropout", "HD95 WT"]
    assert len(hd.split(" [")[0].split(".")[1]) == 1                 # HD95 with one decimal, Dice with three
    assert len(t.loc["SE with dropout", "Dice WT"].split(" [")[0].split(".")[1]) == 3
    mean = per_case.loc[per_case.row == paper.PROPOSED, "Dice WT"].mean()
    assert t.loc["SE with dropout", "Dice WT"].startswith(f"{mean:.3f} [")


def test_look_inside_and_the_figures():
    import matplotlib

    matplotlib.use("Agg")
    p = params.load("attention_r2unet_mtds", "test", crop=[24, 32])
    trained = _trained(paper.PROPOSED, p)
    net, lc = trained.networks[0], _case("c0", 0)
    view = R.look_inside(net, lc, p, torch.device("cpu"))
    assert view.flair.shape == view.reference.shape == (24, 32) and view.outputs.shape == (4, 24, 32)
    assert view.reference.max() > 0                                 # the slice with the most tumour
    assert len(view.gate_maps) == len(net.apr_gates) and view.gate_maps[1].shape == (12, 16)
    assert all(((g >= 0) & (g <= 1)).all() for g in view.gate_maps)
    assert [len(w) for w in view.se_weights] == [se.fc[0].in_features for se in net.enc_se]
    assert not any(m.keep for m in list(net.apr_gates) + list(net.enc_se))  # flags restored
    fig = R.inside_the_model_figure(view)
    titles = [a.get_title() for a in fig.axes]
    assert "APR gate, level 3" in titles and "head: ED (white: reference)" in titles
    fig = R.prediction_figure(trained, lc, p, torch.device("cpu"), "phantom c0")
    assert fig._suptitle.get_text().startswith("phantom c0: Dice WT ") and "ED" in fig._suptitle.get_text()
    log = pd.DataFrame({"epoch": [0, 1], "train_loss": [2.0, 1.0]})
    fig = R.training_curves_figure({"a": log, "b": log / 2})
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["a", "b"]
    assert fig.axes[0].get_yscale() == "log"
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.slow
def test_notebook_under_test_profile(test_profile_report):
    tmp_path = test_profile_report("attention_r2unet_mtds")  # run once per session, shared with the determinism test
    tables = tmp_path / "tables"
    for t in ("model_sizes", "per_case", "table1", "table3", "table4", "table6", "claims"):
        assert (tables / f"{t}.csv").exists(), t
    t4 = pd.read_csv(tables / "table4.csv", index_col=0)
    assert list(t4.index) == ["no deep supervision", "single-task DS", "MTDS"]
    assert t4["Dice NCR"].isna().tolist() == [True, True, False]   # sub-regions only from MTDS heads
    claims = pd.read_csv(tables / "claims.csv")
    assert len(claims) == len(paper.CLAIMS)
    assert set(claims["verdict"]) <= {"holds", "contradicted", "not significant"}, set(claims["verdict"])
    per_case = pd.read_csv(tables / "per_case.csv")
    assert set(per_case.row) == set(AR.RUNS) and per_case["Dice WT"].between(0, 1).all()
    for f in ("training_curves", "inside_the_model", "prediction_phantom"):
        assert (tmp_path / "figures" / f"{f}.png").exists(), f
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["profile"] == "test" and man["folds"] == 2
    assert man["precision"] in ("float32", "bfloat16 autocast")
    assert man["time_split"]["training"] > 0 and "evaluation (sliding-window inference)" in man["time_split"]


@pytest.mark.slow
def test_notebook_full_profile_code_path_on_a_tiny_folder(tmp_path, phantom_root):
    over = {"crop": [32, 32], "base": 2, "epochs": 1, "batch_size": 64, "n_folds": 2, "folds": 1,
            "splits": "test-full-profile-mtds", "real_cases": 0, "num_workers": 0, "progress": False}
    run_full_profile("attention_r2unet_mtds", phantom_root, tmp_path, over)
