"""HNF-Netv2: network sizes against the paper, the PMF / EMA / SDE blocks, augmentation,
loss, inference geometry, post-processing, predictor files, the Table 1 and ensemble loops,
the report's tables and figures, and the notebook."""
import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from brats_lib.papers.hnfnetv2 import paper as PAPER, pipeline as HN, report as R
from brats_lib import labels as L
from brats_lib import losses, models
from brats_lib.app import profiles as params
from brats_lib.papers.hnfnetv2.augmentation import HNFNetAugmentation
from brats_lib.app.cli import main as cli
from brats_lib.complexity import complexity
from brats_lib.inference import load_predictor, predict_case, predict_with
from brats_lib.papers.hnfnetv2.networks import EMAUnit, InterSDE, IntraSDE, PMFModule
from brats_lib.preprocess import centre_box
from brats_lib.sampling import holdout_split
from brats_lib.training import FitResult
from conftest import run_full_profile

P_TEST = params.load("hnfnetv2", "test")

PAPER_SIZES = {"hnf_unet3d": (15.80, 1240.27), "hnfnet": (16.85, 436.59), "hnfnet_intra": (17.31, 436.75),
               "hnfnetv2": (17.91, 449.79)}


# ------------------------------------------------------------------ sizes (Table 1)
@pytest.fixture(scope="module")
def paper_sizes():
    return {n: complexity(n, (128, 128, 128)) for n in PAPER_SIZES}


@pytest.mark.parametrize("name", list(PAPER_SIZES))
def test_parameters_and_conv_macs_match_table1(paper_sizes, name):
    params_m, flops_g = PAPER_SIZES[name]
    res = paper_sizes[name]
    assert res["params"] / 1e6 == pytest.approx(params_m, rel=0.03)
    assert res["conv_macs"] / 1e9 == pytest.approx(flops_g, rel=0.15)
    if name != "hnf_unet3d":  # the EM matrix products are in macs, not in conv_macs
        assert res["macs"] > 1.3 * res["conv_macs"]


def test_sde_blocks_cost_what_the_paper_says(paper_sizes):
    intra = paper_sizes["hnfnet_intra"]["params"] - paper_sizes["hnfnet"]["params"]
    inter = paper_sizes["hnfnetv2"]["params"] - paper_sizes["hnfnet_intra"]["params"]
    inter_macs = paper_sizes["hnfnetv2"]["conv_macs"] - paper_sizes["hnfnet_intra"]["conv_macs"]
    assert intra / 1e6 == pytest.approx(17.31 - 16.85, rel=0.05)
    assert inter / 1e6 == pytest.approx(17.91 - 17.31, rel=0.05)
    assert inter_macs / 1e9 == pytest.approx(449.79 - 436.75, rel=0.05)


def test_the_other_reading_of_the_decoder_misses_the_flops(paper_sizes):
    two = complexity("hnfnet", (128, 128, 128), decoder_blocks=2)["conv_macs"] / 1e9
    assert two / 436.59 - 1 > 0.15 > paper_sizes["hnfnet"]["conv_macs"] / 1e9 / 436.59 - 1


def test_complexity_cli_json_reports_conv_macs(capsys):
    assert cli(["complexity", "hnfnetv2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["input"] == [1, 4, 128, 128, 128]
    assert res["params"] / 1e6 == pytest.approx(17.91, rel=0.03)
    assert res["conv_macs"] / 1e9 == pytest.approx(449.79, rel=0.15) and res["macs"] > res["conv_macs"]


# ------------------------------------------------------------------ blocks
def test_every_row_builds_runs_and_checks_its_input_size():
    x = torch.randn(2, 4, 32, 32, 32)
    for _, name in PAPER.TABLE1_ROWS:
        net = HN.build_model(name, P_TEST)
        out = net(x)
        assert out.shape == (2, 3, 32, 32, 32)
        out.mean().backward()
    with pytest.raises(ValueError, match="divisible by 16"):
        models.build("hnfnet", width=2, bases=4)(torch.randn(1, 4, 24, 32, 32))


def test_pmf_module_fuses_every_branch_into_every_other():
    torch.manual_seed(0)
    pmf = PMFModule([4, 8, 16], blocks=1).eval()
    xs = [torch.randn(1, 4, 16, 16, 16), torch.randn(1, 8, 8, 8, 8), torch.randn(1, 16, 4, 4, 4)]
    out = pmf(xs)
    assert [o.shape for o in out] == [x.shape for x in xs]
    changed = pmf([xs[0], xs[1], xs[2] + 1.0])   # only the lowest-resolution branch changes
    assert not torch.allclose(changed[0], out[0]) and not torch.allclose(changed[1], out[1])


def test_ema_unit_responsibilities_bases_and_gradient_flow():
    torch.manual_seed(0)
    ema = EMAUnit(6, bases=5, iterations=3)
    x = torch.randn(2, 6, 4, 4, 4, requires_grad=True)
    ema.keep_attention = True
    before = ema.mu.clone()
    ema.train()(x).sum().backward()
    z = ema.last_attention
    assert z.shape == (2, 64, 5) and torch.allclose(z.sum(-1), torch.ones(2, 64), atol=1e-5)
    assert not torch.allclose(ema.mu, before)           # momentum update while training
    assert ema.conv_in.weight.grad is None              # as EMANet: no gradient through the EM steps
    assert ema.conv_out[0].weight.grad is not None and x.grad is not None
    after = ema.mu.clone()
    ema.eval()(x)
    assert torch.equal(ema.mu, after)                   # bases frozen at inference


def test_sde_blocks_reweight_and_broadcast_global_context():
    torch.manual_seed(0)
    sde = IntraSDE(4)
    x = torch.rand(1, 4, 6, 6, 6)
    y = sde(x)
    ratio = y / x
    assert ((ratio > 0) & (ratio < 1)).all()
    assert torch.allclose(ratio, ratio[..., :1, :1, :1].expand_as(ratio), atol=1e-6)  # one weight per channel
    inter = InterSDE([2, 4])
    xs = [torch.randn(1, 2, 8, 8, 8), torch.randn(1, 4, 4, 4, 4)]
    out = inter(xs)
    assert [o.shape for o in out] == [x.shape for x in xs]
    shifted = inter([xs[0], xs[1] + 3.0])   # the smallest branch's global mean reaches the largest
    assert not torch.allclose(shifted[0], out[0])


def test_feature_map_sizes_are_read_from_the_model():
    sizes = R.feature_map_sizes(HN.build_model("hnfnetv2", P_TEST), [32, 32, 32])
    pmf4 = sizes[sizes.stage == "PMF4"]
    w = P_TEST.width
    assert list(pmf4.channels) == [w, 2 * w, 4 * w, 8 * w]
    assert list(pmf4["size"]) == ["16x16x16", "8x8x8", "4x4x4", "2x2x2"]
    assert (sizes.stage == "inter-SDE").sum() == 3
    assert int(sizes[sizes.stage == "concat + EMA"].channels.iloc[0]) == 15 * w


def test_ema_attention_map_of_a_case():
    net = HN.build_model("hnfnetv2", P_TEST)
    z = R.ema_attention(net, np.random.rand(4, 27, 30, 33).astype(np.float32))
    assert z.shape == (P_TEST.bases, 14, 15, 17)
    assert np.allclose(z.sum(0), 1, atol=1e-5)


# ------------------------------------------------------------------ training pieces
def test_augmentation_is_deterministic_and_keeps_labels():
    aug = HNFNetAugmentation()
    img = np.random.default_rng(0).random((4, 24, 24, 24), dtype=np.float32)
    lab = np.zeros((24, 24, 24), np.uint8)
    lab[8:16, 8:16, 8:16] = L.ET
    lab[10:12, 10:12, 10:12] = L.NCR
    a = aug(img, lab, np.random.default_rng(5))
    b = aug(img, lab, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert set(np.unique(a[1])) <= {0, L.NCR, L.ET}
    none = HNFNetAugmentation(flip_p=0, rotate_p=0, shift=0, scale=0)
    c = none(img, lab, np.random.default_rng(5))
    assert np.allclose(c[0], img) and np.array_equal(c[1], lab)
    d = HNFNetAugmentation(flip_p=0, rotate_p=0, scale=0)(img, lab, np.random.default_rng(1))[0] - img
    per_channel = d.reshape(4, -1)
    assert np.allclose(per_channel, per_channel[:, :1]) and np.abs(per_channel).max() <= 0.1 + 1e-6


def test_augmentation_rotation_matches_monai_on_meta_tensors_and_restores_meta_tracking():
    from monai.data import get_track_meta
    from monai.transforms import Rotate

    rng = np.random.default_rng(3)
    img = rng.normal(size=(4, 20, 22, 24)).astype(np.float32)
    lab = rng.integers(0, 4, (20, 22, 24)).astype(np.uint8)
    aug = HNFNetAugmentation()
    assert get_track_meta()
    got_img, got_lab = aug.rotate(img, lab, np.random.default_rng(9))
    assert get_track_meta()  # the global MONAI flag is back as it was
    angles = tuple(np.deg2rad(np.random.default_rng(9).uniform(-10, 10, size=3)))
    ref_img = Rotate(angles, keep_size=True, mode="bilinear", padding_mode="zeros")(img)
    ref_lab = Rotate(angles, keep_size=True, mode="nearest", padding_mode="zeros")(lab[None])[0]
    assert type(ref_img).__name__ == "MetaTensor"  # the reference took MONAI's tracked path
    assert np.array_equal(got_img, np.asarray(ref_img)) and np.array_equal(got_lab, np.asarray(ref_lab).astype(np.uint8))
    assert not np.allclose(got_img, img)


def test_generalized_dice_bce_prefers_the_right_answer():
    loss = losses.region_loss("gdl_bce")
    target = torch.zeros(2, 3, 8, 8, 8)
    target[:, :, 2:6, 2:6, 2:6] = 1
    good = loss(20 * (2 * target - 1), target)
    bad = loss(-20 * (2 * target - 1), target)
    assert good < 0.05 < bad
    with pytest.raises(ValueError, match="gdl_bce"):
        losses.region_loss("gdl")


def test_training_schedule_is_the_papers():
    p = params.load("hnfnetv2", "full", data_dir="x")
    cfg = HN.train_config(p)
    assert (cfg.optimizer, cfg.lr, cfg.betas, cfg.weight_decay) == ("adam", 1e-3, (0.9, 0.999), 1e-5)
    assert (cfg.schedule, cfg.poly_power, cfg.warmup_epochs, cfg.epochs, cfg.batch_size) == ("poly", 0.9, 5, 250, 4)


# ------------------------------------------------------------------ inference
def test_paper_stride_gives_the_papers_windows():
    from monai.inferers.utils import _get_scan_interval

    overlap = HN.overlap_from_stride(PAPER.PAPER_PATCH, PAPER.PAPER_STRIDE)
    assert _get_scan_interval(PAPER.PAPER_CROP, PAPER.PAPER_PATCH, 3, overlap) == PAPER.PAPER_STRIDE
    with pytest.raises(ValueError, match="stride"):
        HN.overlap_from_stride([32, 32, 32], [0, 8, 8])


def test_centre_crop_inference_fills_background_outside():
    box = centre_box((240, 240, 155), PAPER.PAPER_CROP)
    assert box.start == (32, 8, 0) and box.shape == (176, 224, 155)
    assert centre_box((20, 20, 20), (32, 16, 32)).shape == (20, 16, 20)

    class Hot(torch.nn.Module):  # every voxel tumour everywhere
        def forward(self, x):
            return torch.full((x.shape[0], 3, *x.shape[2:]), 10.0)

    image = np.ones((4, 40, 40, 40), np.float32)
    labels, prob = predict_case(Hot(), image, (16, 16, 16), overlap=0.5, mode="constant", centre_crop=(16, 24, 32))
    assert labels[12:28, 8:32, 4:36].min() == L.ET and labels.astype(bool).sum() == 16 * 24 * 32
    assert prob[:, :12].max() == 0


def test_et_volume_rule():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:5, 2:5, 2:5] = L.ET                      # 27 ET voxels
    lab[6:8, 6:8, 6:8] = L.ED
    small = HN.small_et_to_ncr(lab, None, min_et=28)
    assert (small == L.ET).sum() == 0 and (small == L.NCR).sum() == 27 and (small == L.ED).sum() == 8
    assert np.array_equal(HN.small_et_to_ncr(lab, None, min_et=27), lab)
    empty = np.zeros_like(lab)
    assert np.array_equal(HN.small_et_to_ncr(empty), empty)


def test_holdout_split_of_phantoms_is_a_stable_suffix():
    # phantoms are independent draws: their last ids are a random sample, and nested pools
    # keep one split file valid (real data get a stratified draw: tests/test_fidelity.py)
    ids = [f"Phantom_{i:05d}" for i in range(6)]
    pool, held = holdout_split(list(reversed(ids)), 2)
    assert pool == ids[:4] and held == ids[4:]
    with pytest.raises(ValueError, match="hold out"):
        holdout_split(ids, 6)


def test_predictor_file_keeps_the_inference_settings(tmp_path, phantom_root):
    from brats_lib.data import discover_cases, load_case

    torch.manual_seed(0)
    net = HN.build_model("hnfnetv2", P_TEST).eval()
    path = HN.export_predictor(tmp_path / "hnf.pt", [net], "hnfnetv2", P_TEST)
    nets, settings = load_predictor(path)
    assert settings["mode"] == "constant" and settings["centre_crop"] == list(P_TEST.inference_crop)
    assert settings["clip_percentiles"] == list(HN.CLIP_PERCENTILES) and settings["postprocess"] == "hnfnetv2"
    lc = load_case(discover_cases(phantom_root)[0])
    direct, _ = HN.predict([net], lc, P_TEST, tta=1)
    via_file, _ = predict_with(nets, settings, lc.image, tta=1)
    assert np.array_equal(direct, via_file)


# ------------------------------------------------------------------ the paper's numbers (paper.py)
def test_claims_carry_table1s_gains():
    assert PAPER.paper_gain("hnfnet", "hnf_unet3d", "Dice TC") == "+2.0571 Dice %"  # 89.5270 - 87.4699
    gains = [87.7336 - 87.0310, 90.9558 - 89.9685, 93.4373 - 93.1362]
    assert PAPER.paper_gain("hnfnetv2", "hnfnet_intra", "Dice mean") == f"{np.mean(gains):+.4f} Dice %"
    assert len(PAPER.CLAIMS) == 3 * 4 + 1 and {c.paper for c in PAPER.CLAIMS if c.kind == "paired"} >= {
        "+2.0571 Dice %"}
    assert HN.ROWS is PAPER.ROWS
    assert [PAPER.LABELS[n] for n in PAPER.ROWS.values()] == list(PAPER.PAPER_TABLE1.index)


# ------------------------------------------------------------------ the Table 1 and ensemble loops
def _toy_case(case_id: str) -> SimpleNamespace:
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:6, 2:6, 2:6] = L.ED
    lab[3:5, 3:5, 3:5] = L.ET
    lab[3, 3, 3] = L.NCR
    return SimpleNamespace(case_id=case_id, image=None, label=lab, spacing=(1.0, 1.0, 1.0))


def test_cross_validate_rows_trains_every_row_on_every_fold(monkeypatch, tmp_path):
    cases = {c: _toy_case(c) for c in "abcd"}
    folds = [{"train": ["a", "b"], "val": ["c", "d"]}, {"train": ["c", "d"], "val": ["a", "b"]}]
    trained, flips = [], []

    def fake_train(name, k, train, val, p, out_dir, device):
        trained.append((name, k, [c.case_id for c in train], Path(out_dir)))
        log = pd.DataFrame({"epoch": [0], "train_loss": [1.0], "time_s": [2.0], "validation_s": [0.5]})
        return FitResult(log, out_dir=out_dir)

    def fake_predict(net, lc, p, tta=None, device=None):  # case "a" is missed entirely
        flips.append(tta)
        return (np.zeros_like(lc.label) if lc.case_id == "a" else lc.label), None

    monkeypatch.setattr(HN, "train_fold", fake_train)
    monkeypatch.setattr(HN, "load_final", lambda res, name, p: torch.nn.Identity())
    monkeypatch.setattr(HN, "predict", fake_predict)
    cv = HN.cross_validate_rows(folds, cases, P_TEST, tmp_path, progress=False)
    assert [(n, k) for n, k, _, _ in trained] == [(n, k) for n in PAPER.ROWS.values() for k in (0, 1)]
    assert trained[1][2] == ["c", "d"] and trained[1][3] == tmp_path / "hnf_unet3d" / "fold1"
    assert set(flips) == {P_TEST.tta_ablation} and len(flips) == 4 * 2 * 2
    per = cv.per_case
    assert len(per) == 16 and list(per.columns[:3]) == ["row", "fold", "case"]
    assert per.loc[per.case == "c", "Dice mean"].eq(1).all() and per.loc[per.case == "a", "Dice mean"].eq(0).all()
    assert cv.train_seconds == 8 * 2.0 and cv.val_seconds == 8 * 0.5 and len(cv.seconds) == 8
    ensemble = cv.fold_models("hnfnetv2")
    assert len(ensemble) == 2 and ensemble[1] is cv.networks["hnfnetv2", 1]
    assert list(cv.logs(fold=1)) == [label for label, _ in PAPER.TABLE1_ROWS]


def test_evaluate_ensemble_segments_each_case_with_every_fold_model(monkeypatch):
    calls = []

    def fake_predict(nets, lc, p, tta=None, device=None):
        calls.append((nets, tta))
        return lc.label, None

    monkeypatch.setattr(HN, "predict", fake_predict)
    nets = (torch.nn.Identity(), torch.nn.Identity())
    held = HN.evaluate_ensemble(nets, [_toy_case("x"), _toy_case("y")], P_TEST, progress=False)
    assert list(held.case) == ["x", "y"] and held["Dice ET"].eq(1).all() and "HD95 WT" in held
    assert all(isinstance(n, list) and len(n) == 2 for n, _ in calls) and {t for _, t in calls} == {P_TEST.tta}
    assert HN.evaluate_ensemble(nets, [], P_TEST, progress=False).empty


def test_real_cases_use_the_papers_crop_and_their_own_stride():
    q = HN.real_case_params(P_TEST)
    assert q.inference_crop == list(PAPER.PAPER_CROP) and q.window_stride == list(P_TEST.patch_size)
    q = HN.real_case_params(dataclasses.replace(P_TEST, inference_crop=None, real_window_stride=[8, 8, 8]))
    assert q.inference_crop is None and q.window_stride == [8, 8, 8]
    assert P_TEST.inference_crop != list(PAPER.PAPER_CROP)  # the profile itself is untouched
    # a case resampled to 4 mm: the same 176 x 224 x 155 mm, in its voxels (never below the patch)
    q = HN.real_case_params(P_TEST, (4.0, 4.0, 4.0))
    assert q.inference_crop == [max(44, P_TEST.patch_size[0]), max(56, P_TEST.patch_size[1]),
                                max(39, P_TEST.patch_size[2])]


# ------------------------------------------------------------------ the report (report.py)
def test_method_tables_give_the_augmentation_and_the_papers_geometry():
    aug = R.augmentation_table(HNFNetAugmentation(flip_p=0.25, max_degrees=15, shift=0.2, scale=0.3))
    assert list(aug["p"]) == [0.25, 1.0, 1.0, 1.0]
    assert aug.loc[1, "range"].startswith("U(-15, 15) degrees")
    assert list(aug.loc[2:, "range"]) == ["+ U(-0.2, 0.2)", "x U(0.7, 1.3)"]
    text = R.method_settings_text()
    for part in ("0.5-99.5 percentiles", "centre crop 176 x 224 x 155", "stride 32 x 32 x 27", "under 200 voxels"):
        assert part in text, part


def test_scale_table_puts_this_run_beside_the_paper():
    t = R.scale_table(P_TEST)
    assert list(t.index) == list(PAPER.PAPER_SETUP) and list(t.columns) == ["paper", "this run"]
    assert t.loc["EMA bases K", "paper"] == "256" and t.loc["3D U-Net widths", "paper"] == "56 112 224 416"
    w = P_TEST.width
    assert t.loc["patch / window", "this run"] == "x".join(map(str, P_TEST.patch_size))
    assert t.loc["HNF-Net width", "this run"] == f"c = {w} (branches {w}, {2 * w}, {4 * w}, {8 * w})"
    assert t.loc["data", "this run"] == (f"{P_TEST.phantom_cases} + {P_TEST.holdout_cases} held-out phantoms "
                                         + "x".join(map(str, P_TEST.phantom_shape)))
    assert t.loc["TTA flips (ensemble)", "this run"] == f"{P_TEST.tta} versions (the original + {P_TEST.tta - 1} flips)"


def test_model_sizes_compare_every_row_with_table1():
    sizes = R.model_sizes(P_TEST)
    assert list(sizes.index) == list(PAPER.PAPER_TABLE1.index) and list(sizes.network) == list(PAPER.ROWS.values())
    assert ((sizes["params ratio"] - 1).abs() < 0.03).all() and ((sizes["conv MACs ratio"] - 1).abs() < 0.15).all()
    assert (sizes["params (M), this run"] < sizes["params (M)"] / 100).all()
    assert (sizes["all GMACs (with EM)"] > sizes["conv GMACs"]).iloc[1:].all()  # the EMA unit's products
    note = R.model_size_note(sizes)
    assert f"convolution MACs {100 * (sizes['conv MACs ratio'] - 1).abs().max():.1f} %" in note
    gap = re.search(r"HNF-Net [\d.]+ GMACs, \+([\d.]+) % from the paper", note)
    assert gap and float(gap.group(1)) > 15


def _toy_per_case() -> pd.DataFrame:
    """Six cases per row; row i's Dice is 0.5 + 0.1 i + 0.01 c + 0.002 i c (better every row), HD95 10 - i."""
    rows = []
    for i, name in enumerate(PAPER.ROWS.values()):
        for c in range(6):
            rows.append({"row": name, "fold": c % 2, "case": f"c{c}",
                         **{f"Dice {r}": 0.5 + 0.1 * i + 0.01 * c + 0.002 * i * c for r in L.REGIONS},
                         **{f"HD95 {r}": 10.0 - i for r in L.REGIONS}})
    per = pd.DataFrame(rows)
    per["Dice mean"] = per[[f"Dice {r}" for r in L.REGIONS]].mean(axis=1)
    return per


def _toy_sizes() -> pd.DataFrame:
    return pd.DataFrame({"params (M)": [1.0, 2.0, 3.0, 4.0], "conv GMACs": [5.0, 6.0, 7.0, 8.0],
                         "params (M), this run": [0.1, 0.2, 0.3, 0.4]}, index=PAPER.PAPER_TABLE1.index)


def test_table1_puts_our_dice_in_percent_beside_the_papers():
    t = R.table1(_toy_per_case(), _toy_sizes())
    assert list(t.index) == list(PAPER.PAPER_TABLE1.index)
    assert list(t.columns[:4]) == ["Params (M) (paper)", "Params (M) (ours)", "FLOPs (G) (paper)", "FLOPs (G) (ours)"]
    assert t.loc["HNF-Net", "Dice ET (ours)"] == pytest.approx(63.0)  # 100 (0.6 + 0.025 + 0.005)
    assert t.loc["HNF-Net", "Dice ET (paper)"] == pytest.approx(86.6906) and t.loc["3D U-Net", "FLOPs (G) (ours)"] == 5.0


def test_table1_per_region_tests_each_row_against_the_row_above():
    t = R.table1_per_region(_toy_per_case(), _toy_sizes())
    assert t.loc["3D U-Net", "p vs row above"] == "" and float(t.loc["HNF-Net", "p vs row above"]) < 0.05
    assert t.loc["HNF-Net", "Dice ET (%)"].startswith("63.0 [") and t.loc["HNF-Net", "HD95 WT"] == "9.0 [9.0, 9.0]"
    assert t.loc["HNF-Netv2 (intra + inter-SDE)", "params (M), this run"] == "0.400"


def test_tables_2_3_stack_our_summary_above_the_papers():
    held = pd.DataFrame({**{f"Dice {r}": [0.8, 0.9, 1.0] for r in L.REGIONS},
                         **{f"HD95 {r}": [1.0, 2.0, 9.0] for r in L.REGIONS}})
    s = R.summary_table(held)
    assert s.loc["mean", "Dice ET"] == pytest.approx(90.0) and s.loc["mean", "HD95 TC"] == 4.0
    assert s.loc["median", "HD95 WT"] == 2.0 and list(s.columns) == PAPER.SUMMARY_COLUMNS
    t = R.table2_3(held)
    assert list(t.index) == [f"{src}: {stat}" for src in ("ours (held-out)", "paper, Table 2 (validation)",
                                                          "paper, Table 3 (test)") for stat in ("mean", "median")]
    assert t.loc["paper, Table 3 (test): mean", "Dice ET"] == pytest.approx(87.8514)


def test_top_bases_rank_the_mass_inside_the_tumour():
    z = np.zeros((3, 2, 2, 2))
    z[0] = 1.0
    z[1, 0, 0, 0] = 5.0
    z[2, 1, 1, 1] = 2.0
    mask = np.zeros((2, 2, 2), bool)
    mask[1, 1, 1] = True
    assert list(R.top_bases(z, mask)) == [2, 0]
    assert list(R.top_bases(z, np.zeros_like(mask), k=1)) == [0]  # no tumour: the whole map (8 > 5 > 2)


def test_dice_text_names_every_region():
    ref = _toy_case("r").label
    assert R.dice_text(ref, ref) == "ET 1.00, TC 1.00, WT 1.00"
    pred = ref.copy()
    pred[pred != 0] = L.ED  # whole tumour right, no core
    assert R.dice_text(pred, ref) == "ET 0.00, TC 0.00, WT 1.00"


def test_training_curves_figure_draws_a_line_per_row():
    import matplotlib.pyplot as plt

    logs = {label: pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.5], "val_dice_mean": [np.nan, 0.4]})
            for label, _ in PAPER.TABLE1_ROWS}
    loss_ax, val_ax = R.training_curves_figure(logs, validation=True).axes
    assert len(loss_ax.lines) == 4 and len(val_ax.lines) == 4 and list(val_ax.lines[0].get_xdata()) == [1]
    assert len(R.training_curves_figure(logs).axes) == 1
    plt.close("all")


def test_ema_attention_and_real_case_figures_of_phantoms(phantom_root):
    import matplotlib.pyplot as plt
    from brats_lib.data import discover_cases, load_case

    torch.manual_seed(0)
    net = HN.build_model("hnfnetv2", P_TEST).eval()
    found = discover_cases(phantom_root)
    fig = R.ema_attention_figure(net, load_case(found[0]), P_TEST.patch_size)
    assert len(fig.axes) == 4 + 2 and fig.axes[1].get_title() == f"best base of {P_TEST.bases} per voxel"
    shown = list(R.real_case_figures([net], [load_case(found[0])], P_TEST))
    assert [c for c, _ in shown] == [found[0].case_id]
    assert shown[0][1]._suptitle.get_text().startswith(f"real case {shown[0][0]} at 1 mm (reference = fusion): Dice ET ")
    assert [ax.get_title() for ax in shown[0][1].axes] == ["FLAIR", "reference", R.ENSEMBLE_TITLE]
    plt.close("all")


# ------------------------------------------------------------------ the notebook
@pytest.mark.slow
def test_notebook_under_test_profile(test_profile_report):
    tmp_path = test_profile_report("hnfnetv2")  # run once per session, shared with the determinism test
    tables = tmp_path / "tables"
    for t in ("model_sizes", "architecture", "per_case", "table1", "table1_per_region", "table1_claims", "table2_3",
              "ensemble_per_case"):
        assert (tables / f"{t}.csv").exists(), t
    t1 = pd.read_csv(tables / "table1.csv", index_col=0)
    assert list(t1.index) == [r for r, _ in PAPER.TABLE1_ROWS]
    assert t1.loc["HNF-Net", "Dice TC (paper)"] == pytest.approx(89.5270)
    assert t1["Dice WT (ours)"].between(0, 100).all()
    sizes = pd.read_csv(tables / "model_sizes.csv", index_col=0)
    assert ((sizes["params ratio"] - 1).abs() < 0.03).all() and ((sizes["conv MACs ratio"] - 1).abs() < 0.15).all()
    per_case = pd.read_csv(tables / "per_case.csv")
    assert set(per_case.row) == set(PAPER.ROWS.values()) and per_case["Dice mean"].between(0, 1).all()
    for f in ("architecture", "training_curves", "ema_attention", "prediction_phantom"):
        assert (tmp_path / "figures" / f"{f}.png").exists(), f
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["profile"] == "test" and man["folds"] == 2 and len(man["holdout"]) == 1
    assert (tmp_path / "runs" / "hnfnetv2_ensemble.pt").exists()


@pytest.mark.slow
def test_notebook_full_profile_code_path_on_a_tiny_folder(tmp_path, phantom_root):
    """The full profile's code path (paper crop geometry replaced by toy sizes) on 4 phantoms."""
    small = {k: getattr(P_TEST, k) for k in ("patch_size", "window_stride", "inference_crop", "unet_filters", "width",
                                             "blocks", "bases", "em_iterations", "min_et", "sw_batch_size")}
    over = {**small, "epochs": 1, "steps_per_epoch": 1, "warmup_epochs": 0, "n_folds": 2, "folds": 2,
            "holdout_cases": 1, "splits": "test-full-profile-hnfnetv2", "real_cases": 0, "num_workers": 0,
            "tta_ablation": 1, "tta": 4, "val_every": 1, "progress": False}
    run_full_profile("hnfnetv2", phantom_root, tmp_path, over)
    log = pd.read_csv(tmp_path / "runs" / "hnfnetv2" / "fold1" / "log.csv")
    assert "val_dice_mean" in log
