"""Attention R2U-Net + MTDS: network variants and blocks, targets and loss, slice
inference, post-processing, scoring, claim checks and the notebook."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from brats_lib.papers.attention_r2unet_mtds import pipeline as AR
from brats_lib import labels as L
from brats_lib import models
from brats_lib.app import profiles as params
from brats_lib.app import runner
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
    assert tuple(p.crop) == AR.PAPER_CROP


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
    assert len(claims) == len(AR.CLAIMS)
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
