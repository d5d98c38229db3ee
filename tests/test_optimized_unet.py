"""Optimized U-Net: networks and variants, DropBlock, augmentation, post-processing,
searches, predictor files, the predict command and the notebook (test and full profiles)."""
import json
import re

import numpy as np
import pytest
import torch

from brats_lib import labels as L
from brats_lib import models
from brats_lib.app import profiles as params
from brats_lib.papers.optimized_unet import paper as P
from brats_lib.papers.optimized_unet import pipeline as OU
from brats_lib.papers.optimized_unet import report as R
from brats_lib.augmentation import NnUNetAugmentation
from brats_lib.app.cli import main as cli
from brats_lib.complexity import complexity
from brats_lib.data import discover_cases, load_case, read_label_file
from brats_lib.inference import load_predictor, predict_case
from brats_lib.models.blocks import DropBlock3D
from brats_lib.papers.optimized_unet.networks import variant_filters
from conftest import REAL, REAL_CASES, real, run_full_profile

P_TEST = params.load("optimized_unet", "test")


# ------------------------------------------------------------------ networks
def test_deep_supervision_heads_at_their_resolution_or_upsampled():
    x = torch.randn(2, 4, 32, 32, 32)
    for up, sizes in ((False, [32, 16, 8]), (True, [32, 32, 32])):
        net = models.build("unet3d", depth=4, filters=[4, 8, 8, 8], deep_supervision=True, ds_upsample=up).train()
        assert [o.shape[-1] for o in net(x)] == sizes
        assert net.eval()(x).shape == (2, 3, 32, 32, 32)


@pytest.mark.parametrize("variant", ["baseline", "attention", "residual", "dropblock", "ds", "deeper", "channels",
                                     "onehot", "final"])
def test_every_variant_builds_and_runs(variant):
    name = "optimized_unet" if variant == "final" else f"optimized_unet_{variant}"
    net = models.build(name, base_filters=[2, 4, 4, 4], wide_filters=[4, 4, 6, 6, 8], drop_block_size=3)
    cin = 5 if variant in ("onehot", "final") else 4
    out = net.train()(torch.randn(2, cin, 32, 32, 32))
    assert isinstance(out, list) == (variant in ("ds", "deeper", "channels", "onehot", "final"))
    assert net.eval()(torch.randn(1, cin, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_variant_filters_follow_the_paper():
    assert variant_filters("baseline") == [32, 64, 128, 256, 320, 320]
    assert variant_filters("deeper") == [32, 64, 128, 256, 320, 320, 320]
    assert variant_filters("channels") == [64, 96, 128, 192, 256, 384]
    assert variant_filters("final") == [64, 96, 128, 192, 256, 384, 512]
    with pytest.raises(ValueError, match="one level more"):
        variant_filters("final", [8, 16], [8, 16])


def test_final_model_has_nvidias_parameter_count(capsys):
    res = complexity("optimized_unet", (128, 128, 128), in_channels=5)
    assert res["params"] == pytest.approx(50.8e6, rel=0.02)
    assert cli(["complexity", "optimized_unet", "--in-channels", "5"]) == 0
    assert "50.8" in capsys.readouterr().out


def test_attention_gates_add_parameters_and_change_output():
    torch.manual_seed(0)
    plain = models.build("optimized_unet_baseline", base_filters=[4, 8, 8, 8], wide_filters=[4, 8, 8, 8, 8])
    gated = models.build("optimized_unet_attention", base_filters=[4, 8, 8, 8], wide_filters=[4, 8, 8, 8, 8])
    assert sum(p.numel() for p in gated.parameters()) > sum(p.numel() for p in plain.parameters())


def test_unetr_and_segresnet_vae():
    x = torch.randn(2, 4, 32, 32, 32)
    unetr = models.build("unetr", img_size=32, feature_size=2, hidden_size=8, mlp_dim=8, num_heads=2)
    assert unetr(x).shape == (2, 3, 32, 32, 32)
    vae = models.build("segresnet_vae", input_image_size=[32, 32, 32], init_filters=2, vae_nz=2).train()
    logits, vae_loss = vae(x)
    assert logits.shape == (2, 3, 32, 32, 32) and vae_loss.ndim == 0 and vae_loss > 0
    loss = OU.loss_function(OU.RUNS["SegResNetVAE"], P_TEST)
    target = (torch.rand(2, 3, 32, 32, 32) > 0.5).float()
    seg_only = OU.losses.region_loss()(logits, target)
    assert float(loss((logits, vae_loss), target).detach()) == pytest.approx(float((seg_only + 0.1 * vae_loss).detach()), rel=1e-5)
    assert vae.eval()(x).shape == (2, 3, 32, 32, 32)


def test_deep_supervision_loss_is_equation_1():
    run = OU.RUNS["DS"]
    loss = OU.loss_function(run, P_TEST)
    region = OU.losses.region_loss()
    t = (torch.rand(1, 3, 16, 16, 16) > 0.5).float()
    outs = [torch.randn(1, 3, 16, 16, 16), torch.randn(1, 3, 8, 8, 8), torch.randn(1, 3, 4, 4, 4)]
    down = [torch.nn.functional.interpolate(t, size=o.shape[2:], mode="nearest") for o in outs]
    expected = sum(w * region(o, d) for w, o, d in zip((1, 0.5, 0.25), outs, down))
    assert float(loss(outs, t)) == pytest.approx(float(expected), rel=1e-5)


def test_dropblock_drops_blocks_only_while_training():
    db = DropBlock3D(0.2, 3)
    x = torch.ones(4, 8, 16, 16, 16)
    assert torch.equal(db.eval()(x), x)
    torch.manual_seed(0)
    y = db.train()(x)
    dropped = float((y == 0).float().mean())
    assert 0.1 < dropped < 0.3  # about drop_prob
    assert float(y.mean()) == pytest.approx(1.0, abs=1e-4)  # rescaled
    with pytest.raises(ValueError):
        DropBlock3D(1.0)


# ------------------------------------------------------------------ augmentation
def test_augmentation_is_deterministic_and_keeps_labels_and_onehot():
    rng0 = np.random.default_rng(0)
    img = rng0.normal(size=(5, 24, 24, 24)).astype(np.float32)
    img[4] = (img[0] > 0)
    lab = rng0.integers(0, 4, size=(24, 24, 24)).astype(np.uint8)
    aug = NnUNetAugmentation(zoom_p=1, noise_p=1, blur_p=1, brightness_p=1, contrast_p=1)
    a = aug(img, lab, np.random.default_rng(7))
    b = aug(img, lab, np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == img.shape and a[1].shape == lab.shape and a[0].dtype == np.float32
    assert set(np.unique(a[1])) <= {0, 1, 2, 3} and set(np.unique(a[0][4])) <= {0.0, 1.0}
    assert not np.array_equal(a[0][:4], img[:4])
    off = NnUNetAugmentation(zoom_p=0, flip_p=0, noise_p=0, blur_p=0, brightness_p=0, contrast_p=0)
    c = off(img, lab, np.random.default_rng(7))
    assert np.array_equal(c[0], img) and np.array_equal(c[1], lab)


def test_contrast_is_clipped_to_the_original_range():
    aug = NnUNetAugmentation()
    mri = np.linspace(-2, 3, 1000, dtype=np.float32).reshape(1, 10, 10, 10)
    out = aug.contrast(mri, np.random.default_rng(1))
    assert out.min() >= -2 and out.max() <= 3


# ------------------------------------------------------------------ post-processing and searches
def _et_case():
    lab = np.zeros((20, 20, 20), np.uint8)
    prob = np.zeros((3, 20, 20, 20), np.float32)
    lab[2:12, 2:12, 2:12] = L.ED
    lab[4:9, 4:9, 4:9] = L.ET          # 125 voxels, low probability
    lab[15:17, 15:17, 15:17] = L.ET    # 8 voxels, a small component
    prob[2][lab == L.ET] = 0.6
    return lab, prob


def test_postprocess_small_components_and_total():
    lab, prob = _et_case()
    out = OU.remove_small_et(lab, prob)
    assert (out[15:17, 15:17, 15:17] == L.NCR).all() and (out[4:9, 4:9, 4:9] == L.ET).all()
    prob[2][15:17, 15:17, 15:17] = 0.95          # confident small component survives
    assert (OU.remove_small_et(lab, prob)[15:17, 15:17, 15:17] == L.ET).all()
    out = OU.remove_small_et(lab, prob, min_total=200)  # 133 ET voxels, mean < 0.9: all to NCR
    assert not (out == L.ET).any() and (out[lab == L.ET] == L.NCR).all()
    assert OU.et_summary(lab, prob)[0] == 133


def test_min_total_search_matches_applying_the_rule():
    lab, prob = _et_case()
    ref = lab.copy()
    ref[ref == L.ET] = L.NCR  # no ET in the reference: removing it is right
    table = OU.min_total_search([lab], [prob], [ref], [0, 100, 200])
    for k in (0, 100, 200):
        direct = OU.remove_small_et(lab, prob, min_total=k)
        assert table.loc[k, "ET Dice"] == pytest.approx(OU.region_dice(direct, ref)["ET"])
    assert table.loc[200, "ET Dice"] == 1.0 and table.loc[0, "ET Dice"] == 0.0


def test_threshold_grid_finds_the_separating_threshold():
    rng = np.random.default_rng(0)
    ref = np.zeros((16, 16, 16), np.uint8)
    ref[4:12, 4:12, 4:12] = L.ED
    prob = np.zeros((3, 16, 16, 16), np.float32)
    prob[0] = np.where(ref > 0, 0.62, 0.58) + rng.uniform(-0.01, 0.01, ref.shape)
    grid = OU.threshold_grid([prob], [ref], [0.3, 0.5, 0.6, 0.7])
    assert grid.loc["WT", "0.60"] == pytest.approx(1.0) and grid.loc["WT", "0.50"] < 1.0
    assert OU.best_thresholds(grid)[0] == 0.6


def test_ensemble_of_identical_models_equals_one_model():
    torch.manual_seed(0)
    net = models.build("unet3d", depth=3, filters=[2, 4, 4]).eval()
    img = np.random.default_rng(0).normal(size=(4, 20, 20, 20)).astype(np.float32) + 5
    _, p1 = predict_case(net, img, (16, 16, 16), tta=4)
    _, p2 = predict_case([net, net], img, (16, 16, 16), tta=4)
    np.testing.assert_allclose(p1, p2, atol=1e-6)


# ------------------------------------------------------------------ predictor files and the predict command
@pytest.fixture
def predictor(tmp_path):
    torch.manual_seed(0)
    run = OU.RUNS["D+C+O"]
    nets = [OU.build_model(run, P_TEST).eval() for _ in range(2)]
    return OU.export_predictor(tmp_path / "final.pt", nets, run, P_TEST)


def test_predictor_round_trip(predictor):
    nets, settings = load_predictor(predictor)
    assert len(nets) == 2 and settings["model"] == "optimized_unet" and settings["foreground"] == "brain"
    assert settings["thresholds"] == pytest.approx(list(OU.PAPER_THRESHOLDS)) and settings["postprocess"] == "optimized_unet"


def test_predict_cli_on_a_phantom_case(predictor, phantom_root, tmp_path, capsys):
    case = sorted(p for p in phantom_root.iterdir() if p.is_dir())[0]
    out = tmp_path / "pred" / f"{case.name}.nii.gz"
    assert cli(["predict", "--checkpoint", str(predictor), "--case", str(case), "--out", str(out), "--tta", "1"]) == 0
    lab, img = read_label_file(out)
    ref = load_case(discover_cases(phantom_root, ids=[case.name])[0])
    assert lab.shape == ref.label.shape and np.allclose(img.affine, ref.affine)
    assert case.name in capsys.readouterr().out


@real
def test_predict_cli_on_a_real_case_keeps_brats2021_labels(predictor, tmp_path):
    case = REAL / REAL_CASES[-1]
    out = tmp_path / "real.nii.gz"
    torch.manual_seed(0)
    assert cli(["predict", "--checkpoint", str(predictor), "--case", str(case), "--out", str(out), "--tta", "1"]) == 0
    import nibabel as nib

    data = np.asarray(nib.load(str(out)).dataobj)
    assert data.shape == (240, 240, 155) and set(np.unique(data)) <= {0, 1, 2, 4}


def test_predict_cli_bad_input(predictor, tmp_path, phantom_root, capsys):
    case = sorted(p for p in phantom_root.iterdir() if p.is_dir())[0]
    out = tmp_path / "x.nii.gz"
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert cli(["predict", "--checkpoint", str(bad), "--case", str(case), "--out", str(out)]) == 2
    assert "bad.pt" in capsys.readouterr().err and not out.exists()
    torch.save({"model": {}}, tmp_path / "train.pt")
    assert cli(["predict", "--checkpoint", str(tmp_path / "train.pt"), "--case", str(case), "--out", str(out)]) == 2
    assert "not a brats_lib predictor" in capsys.readouterr().err
    assert cli(["predict", "--checkpoint", str(predictor), "--case", str(tmp_path), "--out", str(out)]) == 2
    assert "missing" in capsys.readouterr().err and not out.exists()
    assert cli(["predict", "--checkpoint", str(predictor), "--case", str(case), "--out", str(tmp_path / "x.png")]) == 2


# ------------------------------------------------------------------ the notebook
@pytest.mark.slow
def test_notebook_under_test_profile(test_profile_report):
    tmp_path = test_profile_report("optimized_unet")  # run once per session, shared with the determinism test
    tables = tmp_path / "tables"
    for t in ("table1", "table2", "table3", "table4", "table1_per_region", "threshold_grid", "min_total_search",
              "model_sizes", "per_case"):
        assert (tables / f"{t}.csv").exists(), t
    import pandas as pd

    t2 = pd.read_csv(tables / "table2.csv", index_col=0)
    assert list(t2.index) == ["baseline", "Attention", "DS", "Residual", "DB", "Focal"]
    # the paper's mean of its five folds, and the mean it printed
    assert t2.loc["DS", "Mean (paper)"] == pytest.approx(np.mean([0.9111, 0.9115, 0.9175, 0.9268, 0.9074]))
    assert t2.loc["DS", "Mean (paper, printed)"] == pytest.approx(0.9149)
    assert t2["Mean (ours)"].between(0, 1).all()
    sizes = pd.read_csv(tables / "model_sizes.csv", index_col=0)
    assert sizes.loc["D+C+O", "params (M), paper size"] == pytest.approx(50.8, rel=0.02)
    per_case = pd.read_csv(tables / "per_case.csv")
    assert set(per_case.row) == set(OU.RUNS) and per_case["Dice mean"].between(0, 1).all()
    for f in ("training_curves", "threshold_grid", "min_total_search", "prediction_phantom"):
        assert (tmp_path / "figures" / f"{f}.png").exists(), f
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["profile"] == "test" and len(man["chosen_thresholds"]) == 3
    assert (tmp_path / "runs" / "optimized_unet_final.pt").exists()


@pytest.mark.slow
def test_notebook_full_profile_code_path_on_a_tiny_folder(tmp_path, phantom_root):
    """The full profile's code path (5 folds, three learning rates, 8-flip TTA) at toy size."""
    small = {k: getattr(P_TEST, k) for k in ("patch_size", "base_filters", "wide_filters", "unetr_feature_size",
                                             "unetr_hidden_size", "unetr_mlp_dim", "unetr_heads", "segresnet_filters",
                                             "vae_nz", "drop_block_size", "threshold_grid", "min_total_grid")}
    over = {**small, "epochs": 1, "steps_per_epoch": 1, "warmup_steps": 1, "n_folds": 2, "folds": 1,
            "splits": "test-full-profile", "learning_rates": [0.0005, 0.0009], "real_cases": 0, "num_workers": 0,
            "tta_ablation": 1, "progress": False}
    run_full_profile("optimized_unet", phantom_root, tmp_path, over)
    assert len(list((tmp_path / "runs" / "DCO" / "fold0").glob("lr*"))) == 2


# ------------------------------------------------------------------ the paper's numbers (paper.py)
def test_paper_table_means_of_folds_and_printed_means():
    t = P.paper_table("table3")
    assert list(t.columns) == [f"Fold {k}" for k in range(5)] + ["Mean of folds", "Mean (printed)"]
    assert t.loc["One-hot", "Mean of folds"] == pytest.approx(np.mean([0.9109, 0.9132, 0.9174, 0.9263, 0.9075]))
    assert t.loc["One-hot", "Mean (printed)"] == 0.9050  # printed mean disagrees with its folds
    assert all(key in OU.RUNS for rows in P.TABLES.values() for _, key in rows)
    assert set(P.TABLE_TITLES) == {"table1", "table2", "table3", "table4"}


# ------------------------------------------------------------------ the rows x folds loop (pipeline.py)
def test_final_labels_are_paper_thresholds_then_post_processing():
    lab, prob = _et_case()
    prob[0][lab > 0], prob[1][lab > 0] = 0.9, 0.9
    out = OU.final_labels(prob, P_TEST)
    expected = OU.remove_small_et(OU.to_labels(prob, OU.PAPER_THRESHOLDS, P_TEST), prob, **OU.PAPER_POSTPROCESS)
    assert np.array_equal(out, expected)
    assert (out[15:17, 15:17, 15:17] == L.NCR).all()  # the small, uncertain ET component became NCR
    assert OU.row_tta("D+C+O", P_TEST) == P_TEST.tta and OU.row_tta("DS", P_TEST) == P_TEST.tta_ablation


def _fake_fit(score: float):
    from types import SimpleNamespace

    import pandas as pd

    log = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.8], "val_dice_mean": [0.2, score]})
    return SimpleNamespace(best=[(score, 2, "x")], train_seconds=2.0, val_seconds=0.5, log=log)


def test_cross_validate_rows_keeps_the_final_row_s_probabilities(monkeypatch, phantom_root, tmp_path):
    from brats_lib import pipeline as PL

    seen = []

    def fake(self, row, fold, train, val, p, out_dir, device=None):
        seen.append((row, out_dir.relative_to(tmp_path).as_posix(), [c.case_id for c in train]))
        torch.manual_seed(len(seen))
        nets = [OU.build_model(OU.RUNS[row], p).eval()]
        return PL.Trained(row, fold, nets, state={"fit": _fake_fit(0.1 * len(seen))})

    monkeypatch.setattr(OU.OptimizedUNetPipeline, "train_fold", fake)
    cases = {c.case_id: load_case(c) for c in discover_cases(phantom_root)[:3]}
    ids = sorted(cases)
    folds = [{"train": ids[:2], "val": ids[2:]}]
    cv = OU.cross_validate_rows(["DS", "D+C+O"], folds, cases, P_TEST, tmp_path, progress=False)
    assert seen == [("DS", "DS/fold0", ids[:2]), ("D+C+O", "DCO/fold0", ids[:2])]
    assert list(cv.per_case.row) == ["DS", "D+C+O"] and set(cv.oof) == {ids[2]}
    assert cv.best_scores == {("DS", 0): pytest.approx(0.1), ("D+C+O", 0): pytest.approx(0.2)}
    assert cv.seconds("train_seconds") == 4.0 and cv.seconds("val_seconds") == 1.0
    lc = cases[ids[2]]
    prob, ref, fold = cv.oof[ids[2]]
    final = cv.trained["D+C+O", 0]
    expected = OU.predict(final.networks, lc, OU.RUNS["D+C+O"], P_TEST, tta=P_TEST.tta)[1]  # the profile's 8 flips
    assert np.array_equal(prob, expected) and np.array_equal(ref, lc.label) and fold == 0
    # the ablation rows (tta_ablation = 1) score exactly what the comparison's predict(tta=1) gives
    pipe = PL.get("optimized_unet")
    ds = pipe.score(pipe.predict(cv.trained["DS", 0], lc, P_TEST, tta=1), lc)
    assert cv.per_case.iloc[0][list(ds)].tolist() == pytest.approx(list(ds.values()), nan_ok=True)
    assert cv.per_case["Dice mean"].iloc[0] == pytest.approx(np.mean([ds[f"Dice {r}"] for r in L.REGIONS]))


# ------------------------------------------------------------------ the notebook's tables and figures (report.py)
def test_method_and_scale_tables_follow_their_sources():
    aug = NnUNetAugmentation(zoom_p=0.3)
    table = R.augmentation_table(aug)
    assert len(table) == 6 and table.set_index("augmentation").loc["zoom", "p"] == 0.3
    assert "n_t = 73" in R.settings_text() and "0.45 / 0.4 / 0.45" in R.settings_text()
    scale = R.scale_table(P_TEST)
    assert scale.loc["patch / window", "this run"] == "32x32x32"
    assert scale.loc["folds trained", "this run"] == f"{P_TEST.folds} of {P_TEST.n_folds}"
    assert scale.loc["data", "this run"] == "4 phantoms 32x32x32"


def test_model_sizes_at_paper_size_and_this_run():
    from brats_lib.complexity import count_parameters

    runs = {k: OU.RUNS[k] for k in ("U-Net", "Deeper", "D+C+O")}
    sizes = R.model_sizes(P_TEST, runs)
    assert sizes.loc["D+C+O", "params (M), paper size"] == pytest.approx(50.8, rel=0.02)
    assert sizes.loc["Deeper", "filters at paper size"] == "32 64 128 256 320 320 320"
    assert sizes.loc["Deeper", "filters from"].startswith("inferred") and sizes.loc["D+C+O", "filters from"] == "NVIDIA's code"
    ours = count_parameters(OU.build_model(runs["D+C+O"], P_TEST), trainable_only=False) / 1e6
    assert sizes.loc["D+C+O", "params (M), this run"] == pytest.approx(ours)
    assert sizes.loc["U-Net", "GMACs at 128^3"] > 0


def test_fold_table_and_detail_table():
    import pandas as pd

    best = {(key, k): 0.5 + 0.1 * k + 0.01 * i for i, key in enumerate(OU.RUNS) for k in range(2)}
    t1 = R.fold_table("table1", best, 2)
    assert list(t1.index) == ["U-Net", "UNETR", "SegResNetVAE"]
    assert t1.loc["UNETR", "Mean (ours)"] == pytest.approx(np.mean([best["UNETR", 0], best["UNETR", 1]]))
    assert t1.loc["UNETR", "Fold 1 (paper)"] == 0.8976 and t1.columns[-2] == "Mean (paper, printed)"
    rng = np.random.default_rng(0)
    rows = []
    for key in ("DS", "Deeper", "Channels", "One-hot", "D+C+O"):
        for c in range(8):
            d = rng.uniform(0.3, 0.9, 3) + (0.05 if key == "D+C+O" else 0)
            rows.append({"row": key, "case": f"c{c}", **{f"Dice {r}": v for r, v in zip(L.REGIONS, d)},
                         **{f"HD95 {r}": 10 * v for r, v in zip(L.REGIONS, d)}, "Dice mean": d.mean()})
    per_case = pd.DataFrame(rows)
    sizes = pd.DataFrame({"params (M), this run": {k: 0.001 * i for i, k in enumerate(OU.RUNS)}})
    t3 = R.detail_table("table3", per_case, sizes)
    assert list(t3.columns)[-2:] == ["params (M)", "p vs DS"] and t3.loc["DS", "p vs DS"] == ""
    assert t3.loc["D+C+O", "params (M)"] == f"{sizes.loc['D+C+O', 'params (M), this run']:.3f}"
    mean_dco = per_case[per_case.row == "D+C+O"]["Dice ET"].mean()
    assert t3.loc["D+C+O", "Dice ET"].startswith(f"{mean_dco:.3f} [")
    assert re.fullmatch(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", t3.loc["D+C+O", "HD95 WT"])  # one decimal for HD95
    assert float(t3.loc["Deeper", "p vs DS"]) > 0


def _oof_cases():
    """Two ET-free references whose predictions have 64 + 8 uncertain ET voxels: the paper's
    post-processing (n_c 16, n_t 73) removes all of it, which scores ET Dice 1 instead of 0."""
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:12, 2:12, 2:12] = L.ED
    lab[4:8, 4:8, 4:8] = L.ET          # 64 voxels
    lab[15:17, 15:17, 15:17] = L.ET    # 8 voxels, a small component
    prob = np.zeros((3, 20, 20, 20), np.float32)
    prob[0][lab > 0], prob[1][lab > 0], prob[2][lab == L.ET] = 0.9, 0.9, 0.6
    ref = lab.copy()
    ref[ref == L.ET] = L.NCR
    return {"b": (prob, ref, 1), "a": (prob.copy(), ref.copy(), 0)}


def test_searches_and_table4_on_out_of_fold_predictions():
    from types import SimpleNamespace

    oof = R.out_of_fold(_oof_cases(), P_TEST)
    assert oof.ids == ["a", "b"] and oof.folds == [0, 1]
    assert np.array_equal(oof.labels[0], OU.to_labels(oof.probs[0], OU.PAPER_THRESHOLDS, P_TEST))
    grid, chosen = R.threshold_search(oof, P_TEST)
    assert list(grid.columns) == ["0.30", "0.50", "0.70"] and len(chosen) == 3
    counts, best_n = R.voxel_count_search(oof, P_TEST)  # 64 ET voxels survive rule 1: only n_t = 100 removes them
    assert list(counts.index) == [0, 50, 100] and counts["ET Dice"].tolist() == [0.0, 0.0, 1.0] and best_n == 100
    assert "Best n_t here: 100; paper: 73." in R.search_text(chosen, best_n)
    cases = {c: SimpleNamespace(spacing=(1.0, 1.0, 1.0)) for c in oof.ids}
    short, long = R.postprocessing_scores(oof, cases)
    assert list(short.case) == ["a", "b"] and (short["ET with"] == 1.0).all() and (short["ET without"] == 0.0).all()
    assert list(long.row) == list(P.TABLE4_ROWS) * 2 and "Dice mean" in long
    t4 = R.table4(short)
    assert list(t4.index) == ["without", "with"]
    assert t4.loc["with", "Mean (ours)"] > t4.loc["without", "Mean (ours)"]
    assert t4.loc["with", "Fold 1 (paper)"] == 0.9142 and t4.loc["without", "p (Wilcoxon, with vs without)"] == ""


def test_report_figures_and_dice_text():
    import matplotlib

    matplotlib.use("Agg")
    from brats_lib import pipeline as PL

    oof = R.out_of_fold(_oof_cases(), P_TEST)
    grid = R.threshold_search(oof, P_TEST)[0]
    assert len(R.threshold_figure(grid).axes) == 2  # the map and its colour bar
    counts, best_n = R.voxel_count_search(oof, P_TEST)
    lines = R.voxel_count_figure(counts, best_n).axes[0].lines  # the search, the paper's n_t, the best n_t
    assert len(lines) == 3 and list(lines[2].get_xdata()) == [best_n, best_n]
    trained = {(r, 0): PL.Trained(r, 0, [], state={"fit": _fake_fit(0.5)}) for r in ("DS", "D+C+O")}
    fig = R.training_curves_figure(trained, ["DS", "D+C+O"])
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    lab, _ = _et_case()
    assert R.dice_text(lab, lab) == "ET 1.00, TC 1.00, WT 1.00"
