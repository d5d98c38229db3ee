"""OM-Net + CGA: network sizes against the authors' counts, CGA equations, the multi-task
step (concatenate / split, data transfer, curriculum, cross-task flow), overlap-tile
inference, the cascade fusion, post-processing and the notebook."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from brats_lib import labels as L
from brats_lib import models
from brats_lib.papers.omnet_cga import pipeline as OM
from brats_lib.app import profiles as params
from brats_lib.app import runner
from brats_lib.complexity import complexity
from brats_lib.papers.omnet_cga.networks import CGA, OMNet, CORE5, ET5, NCR5, NORMAL5, TUMOUR5, channel_importance
from brats_lib.phantoms import make_phantom
from conftest import run_full_profile

P_TEST = params.load("omnet_cga", "test")
PATCH = (32, 32, 16)


# ------------------------------------------------------------------ sizes (notebooks/papers.md / Table I)
@pytest.mark.parametrize("name, kwargs, paper", [
    ("omnet_mc1", {}, 13.813), ("omnet", {}, 13.869), ("omnet_se", {}, 13.870)])
def test_parameters_match_the_authors_counts(name, kwargs, paper):
    assert complexity(name, PATCH, **kwargs)["params"] / 1e6 == pytest.approx(paper, rel=0.02)


def test_cascades_and_cga_sizes_relate_as_the_paper_says():
    mc = [complexity("omnet_mc1", PATCH, classes=c)["params"] for c in (5, 5, 2)]
    assert sum(mc) / 1e6 == pytest.approx(41.439, rel=0.02) and sum(mc[:2]) / 1e6 == pytest.approx(27.626, rel=0.02)
    om = complexity("omnet", PATCH)["params"]
    for v in ("omnet_cga", "omnet_cga_minus", "omnet_cga_t", "omnet_cga_n"):
        assert complexity(v, PATCH)["params"] < om
    assert complexity("omnet_se", PATCH)["params"] - om == pytest.approx(1000, abs=300)


def test_every_variant_gives_three_task_outputs():
    x = torch.randn(2, 4, 16, 16, 8)
    for name in ("omnet", "omnet_se", "omnet_cga", "omnet_cga_minus", "omnet_cga_t", "omnet_cga_n"):
        outs = models.build(name, features=[2, 4, 4, 4]).eval()(x)
        assert [tuple(o.shape) for o in outs] == [(2, 5, 16, 16, 8), (2, 5, 16, 16, 8), (2, 2, 16, 16, 8)]
    mc = models.build("omnet_mc1", features=[2, 4, 4, 4], classes=2).eval()(x)
    assert len(mc) == 1 and mc[0].shape[1] == 2
    with pytest.raises(ValueError, match="head"):
        OMNet(head="attention")


# ------------------------------------------------------------------ CGA
def test_channel_importance_is_eq5_l1_normalised():
    f = torch.rand(1, 3, 2, 2, 2)
    pt = torch.zeros(1, 1, 2, 2, 2)
    pt[..., 0, 0, 0] = 1.0
    m = channel_importance(f, pt)
    expect = f[0, :, 0, 0, 0] / f[0, :, 0, 0, 0].sum()
    assert torch.allclose(m[0], expect, atol=1e-5) and m.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_compseg_weights_the_two_pathways_by_pt_and_pn():
    torch.manual_seed(0)
    cga = CGA(4, 5, TUMOUR5, "cga")
    f = torch.rand(1, 4, 3, 3, 3)
    p = torch.softmax(torch.randn(1, 5, 3, 3, 3), 1)
    pt = p[:, list(TUMOUR5)].sum(1, keepdim=True)
    m_t, m_n = channel_importance(f, pt), channel_importance(f, 1 - pt)
    s_t = cga.score_t(f * m_t[..., None, None, None])
    s_n = cga.score_n(f * m_n[..., None, None, None])
    assert torch.allclose(cga(f, p), cga.classify(pt * s_t + pn_(pt) * s_n), atol=1e-6)
    minus = CGA(4, 5, TUMOUR5, "minus")
    minus.load_state_dict(cga.state_dict())
    assert torch.allclose(minus(f, p), cga.classify(s_t + s_n), atol=1e-6)
    assert CGA(4, 5, CORE5, "tumour").score_n is None and CGA(4, 5, CORE5, "normal").score_t is None


def pn_(pt):
    return 1 - pt


def test_no_gradient_flows_through_the_guidance():
    cga = CGA(4, 2, CORE5)
    f = torch.rand(1, 4, 3, 3, 3, requires_grad=True)
    logits = torch.randn(1, 5, 3, 3, 3, requires_grad=True)
    cga(f, torch.softmax(logits, 1)).sum().backward()
    assert f.grad is not None and logits.grad is None
    torch.softmax(logits, 1).sum().backward()  # the leaf does collect a gradient when one flows
    assert logits.grad is not None


# ------------------------------------------------------------------ data and the training step
@pytest.fixture(scope="module")
def task_cases():
    from brats_lib.data import LoadedCase

    out = []
    for s in range(2):
        img, lab, _ = make_phantom(s, (32, 32, 32), kind="gbm")
        out.append(OM.task_case(LoadedCase(f"c{s}", img, lab, np.eye(4), None, (1.0, 1.0, 1.0))))
    return out


def test_five_classes_and_task_regions(task_cases):
    tc = task_cases[0]
    assert set(np.unique(tc.five)) <= {0, NCR5, 2, ET5, NORMAL5} and (tc.five == NORMAL5).any()
    brain, dilated, core = tc.regions
    assert core.sum() < (tc.five != 0).sum() and dilated.sum() > np.isin(tc.five, TUMOUR5).sum()
    assert not (dilated & ~brain).any()
    assert np.array_equal(OM.to_canonical(tc.five) > 0, np.isin(tc.five, TUMOUR5))


def test_task_patches_are_centred_in_their_regions(task_cases):
    # every side at least 2 x 5 + 1: a centre within the 5-voxel dilation sees the tumour
    ds = OM.TaskPatches(task_cases, (16, 16, 12), 20, seed=1)
    items = [ds[i] for i in range(20)]
    assert len(items[0]) == 6 and items[0][0].shape == (4, 16, 16, 12)
    # task 2 patches hold tumour, task 3 patches core (their centres were drawn there)
    assert all(np.isin(it[3].numpy(), TUMOUR5).any() for it in items)
    assert all(np.isin(it[5].numpy(), CORE5).any() for it in items)
    assert sum(np.isin(it[1].numpy(), TUMOUR5).mean() for it in items) < sum(np.isin(it[3].numpy(), TUMOUR5).mean() for it in items)
    assert torch.equal(ds[3][0], items[3][0])  # deterministic in (seed, epoch, i)


def test_task1_tumour_fraction_centres_task_1_patches_on_the_tumour(task_cases):
    plain = OM.TaskPatches(task_cases, (16, 16, 12), 40, seed=1)
    tumour = OM.TaskPatches(task_cases, (16, 16, 12), 40, seed=1, task1_tumour_fraction=1.0)
    share = lambda ds: np.mean([np.isin(ds[i][1].numpy(), TUMOUR5).mean() for i in range(40)])  # noqa: E731
    assert all(np.isin(tumour[i][1].numpy(), TUMOUR5).any() for i in range(40))
    assert share(tumour) > 1.3 * share(plain)  # (the patches cover much of a 32^3 brain)
    # fraction 0 draws exactly what the paper's sampler drew before the option existed
    assert torch.equal(OM.TaskPatches(task_cases, (16, 16, 12), 40, seed=1, task1_tumour_fraction=0.0)[5][0], plain[5][0])
    with pytest.raises(ValueError, match="task1_tumour_fraction"):
        OM.TaskPatches(task_cases, (16, 16, 8), 4, task1_tumour_fraction=1.5)


def test_tumour_weighted_cross_entropy_against_the_written_out_sum():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 5, 3, 3, 2), torch.randint(0, 5, (2, 3, 3, 2))
    w = 7.0
    logp = torch.log_softmax(logits, 1).permute(0, 2, 3, 4, 1).reshape(-1, 5)
    t = target.reshape(-1)
    wt = torch.tensor([w if int(k) in TUMOUR5 else 1.0 for k in t])
    expect = -(wt * logp[torch.arange(len(t)), t]).sum() / wt.sum()
    assert OM.TumourWeightedCE(w)(logits, target).item() == pytest.approx(expect.item(), rel=1e-5)
    # task 3 (two classes): ET is the tumour class
    l2, t2 = torch.randn(4, 2, 2, 2, 2), torch.randint(0, 2, (4, 2, 2, 2))
    lp2 = torch.log_softmax(l2, 1).permute(0, 2, 3, 4, 1).reshape(-1, 2)
    w2 = torch.where(t2.reshape(-1) == 1, w, 1.0)
    expect2 = -(w2 * lp2[torch.arange(lp2.shape[0]), t2.reshape(-1)]).sum() / w2.sum()
    assert OM.TumourWeightedCE(w)(l2, t2).item() == pytest.approx(expect2.item(), rel=1e-5)
    # task 3's ET weight on its own: the 5-class loss keeps tumour_weight
    w3 = torch.where(t2.reshape(-1) == 1, 3 * w, 1.0)
    expect3 = -(w3 * lp2[torch.arange(lp2.shape[0]), t2.reshape(-1)]).sum() / w3.sum()
    split = OM.loss_function(w, et_weight=3 * w)
    assert split(l2, t2).item() == pytest.approx(expect3.item(), rel=1e-5)
    assert split(logits, target).item() == pytest.approx(expect.item(), rel=1e-5)
    assert isinstance(OM.loss_function(1.0), torch.nn.CrossEntropyLoss)
    with pytest.raises(ValueError, match="tumour_weight"):
        OM.TumourWeightedCE(0.0)
    with pytest.raises(ValueError, match="et_weight"):
        OM.TumourWeightedCE(2.0, -1.0)
    with pytest.raises(ValueError, match="5 or 2 classes"):
        OM.TumourWeightedCE(2.0)(torch.randn(1, 3, 2, 2, 2), torch.zeros(1, 2, 2, 2, dtype=torch.long))


def _batch(ds, n):
    items = [ds[i] for i in range(n)]
    return tuple(torch.stack([it[j] for it in items]) for j in range(6))


def test_step_transfers_patches_by_ineq_1_and_2(task_cases):
    ds = OM.TaskPatches(task_cases, (16, 16, 8), 6, seed=0)
    batch = _batch(ds, 6)
    net = models.build("omnet", features=[2, 4, 4, 4])
    step = OM.MultiTaskStep([0, 1, 2], transfer=True)
    loss = step(net, batch, OM.loss_function())
    assert loss.requires_grad
    rec = step.history[-1]
    expect2 = int((OM.fraction(batch[1], TUMOUR5) >= 0.4).sum())
    expect3 = int((OM.fraction(batch[1], CORE5) >= 0.5).sum() + (OM.fraction(batch[3], CORE5) >= 0.5).sum())
    assert rec["transferred to task 2"] == expect2 and rec["transferred to task 3"] == expect3
    assert {"task 1", "task 2", "task 3"} <= set(rec)
    first = OM.MultiTaskStep([0], transfer=True)
    first(net, batch, OM.loss_function())
    assert set(first.history[-1]) == {"stage", "task 1"}


def test_cga_training_uses_the_cross_task_flow(task_cases, monkeypatch):
    ds = OM.TaskPatches(task_cases, (16, 16, 8), 2, seed=0)
    net = models.build("omnet_cga", features=[2, 4, 4, 4])
    calls = []
    orig = net.guidance
    monkeypatch.setattr(net, "guidance", lambda t, f: calls.append(t) or orig(t, f))
    OM.MultiTaskStep([0, 1, 2], transfer=False)(net, _batch(ds, 2), OM.loss_function()).backward()
    assert calls == [1, 2]
    # the guidance carries no gradient into task 1's classifier from tasks 2-3
    net.zero_grad()
    OM.MultiTaskStep([1], transfer=False)(net, _batch(ds, 2), OM.loss_function()).backward()
    assert all(p.grad is None or not p.grad.any() for p in net.heads[0].parameters())


def test_curriculum_trains_stage_by_stage(task_cases, tmp_path):
    res = OM.train_row(OM.ROWS["OM-Net"], task_cases, P_TEST, tmp_path, seed=0)
    h = res.history
    assert list(h["stage"]) == [0, 1, 2] and OM.stage_boundaries(h) == [1, 2]
    assert h["task 2"].isna().iloc[0] and not h["task 3"].isna().iloc[2]
    assert list(res.logs[0]["epoch"]) == [1, 2, 3]
    flat = OM.train_row(OM.ROWS["OM-Net0"], task_cases, P_TEST, tmp_path / "zero", seed=0).history
    assert list(flat["stage"]) == [2, 2, 2] and "transferred to task 2" not in flat
    mc = OM.train_row(OM.ROWS["MC3"], task_cases, P_TEST, tmp_path / "mc", seed=0)
    assert len(mc.nets) == 3 and mc.nets[2].classes == (2,)
    again = OM.load_trained(OM.ROWS["MC3"], P_TEST, tmp_path / "mc")
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for a, b in zip(mc.nets, again) for k in a.state_dict())


def test_a_stage_ends_when_its_loss_flattens(task_cases, tmp_path):
    import dataclasses

    assert OM.flattened([1.0, 0.95], 0.1) and not OM.flattened([1.0, 0.8], 0.1) and not OM.flattened([1.0, 1.0], 0)
    p = dataclasses.replace(P_TEST, stage_epochs=[3, 3, 1], plateau=1.0)  # any epoch after the first "flattens"
    h = OM.train_row(OM.ROWS["OM-Net"], task_cases, p, tmp_path / "early", seed=0).history
    assert list(h["stage"]) == [0, 0, 1, 1, 2, 2, 2]  # stages of 2, 2, then the remaining 3 of 7 epochs
    fixed = OM.train_row(OM.ROWS["OM-Net"], task_cases, dataclasses.replace(p, plateau=0.0), tmp_path / "fixed", seed=0)
    assert list(fixed.history["stage"]) == [0, 0, 0, 1, 1, 1, 2]


# ------------------------------------------------------------------ inference
def test_overlap_tile_keeps_each_tiles_centre():
    img = np.random.default_rng(0).normal(size=(1, 13, 11, 7)).astype(np.float32)
    seen = []

    def fn(b):  # identity on the input; remember patch shapes
        seen.append(tuple(b.shape[2:]))
        return [b]

    out = OM.overlap_tile(fn, img, (8, 8, 6), (4, 4, 2))[0]
    assert np.allclose(out, img) and set(seen) == {(8, 8, 6)}
    # the centre of each tile, not its border: a function that returns each voxel's offset in its patch
    idx = OM.overlap_tile(lambda b: [torch.arange(8.).view(1, 1, 8, 1, 1).expand(b.shape[0], 1, 8, 8, 6)], img,
                          (8, 8, 6), (4, 4, 2))[0]
    assert set(np.unique(idx)) == {2.0, 3.0, 4.0, 5.0}
    masked = OM.overlap_tile(lambda b: [b], img, (8, 8, 6), (4, 4, 2), mask=np.zeros(img.shape[1:], bool) | (
        np.arange(13)[:, None, None] < 4), fill=[np.array([-9.0])])[0]
    assert np.allclose(masked[:, :4], img[:, :4]) and (masked[:, 4:] == -9).all()
    with pytest.raises(ValueError, match="centre"):
        OM.overlap_tile(fn, img, (4, 4, 4), (8, 8, 2))


def test_fuse_goes_coarse_to_fine():
    shape = (1, 12, 12, 12)
    p1 = np.zeros((5,) + shape[1:], np.float32)
    p1[NORMAL5] = 1
    p1[:, 5:7, 5:7, 5:7] = 0
    p1[2, 5:7, 5:7, 5:7] = 1  # task 1: an oedema blob
    assert (OM.fuse(p1) == 2).sum() == 8
    p2 = np.zeros_like(p1)
    p2[NCR5] = 1  # task 2 says NCR everywhere: only the dilated coarse tumour takes it
    five2 = OM.fuse(p1, p2, dilation=1)
    assert (five2 == NCR5).sum() == OM.dilate(p1[2] > 0.5, 1).sum() and (five2[0, 0] == NORMAL5).all()
    p3 = np.zeros((2,) + shape[1:], np.float32)
    p3[1, 5:7] = 1  # ET inside the core where task 3 says so, NCR elsewhere in the core
    five3 = OM.fuse(p1, p2, p3, dilation=1)
    assert (five3 == ET5).sum() > 0 and not ((five3 == ET5) & (p3[1] < 0.5)).any()


def test_cascade_and_one_pass_predict_whole_cases(task_cases):
    from brats_lib.data import LoadedCase

    img, lab, _ = make_phantom(5, (32, 32, 32), kind="gbm")
    lc = LoadedCase("x", img, lab, np.eye(4), None, (1.0, 1.0, 1.0))
    nets = [models.build("omnet_mc1", features=[2, 4, 4, 4], classes=c).eval() for c in (5, 5, 2)]
    for k in (1, 2, 3):
        out = OM.predict(OM.Row("MC", "omnet_mc1", "mc", k), nets, lc, P_TEST)
        assert out.shape == lab.shape and set(np.unique(out)) <= {0, 1, 2, 3}
    om = [models.build("omnet_cga", features=[2, 4, 4, 4]).eval()]
    a = OM.predict(OM.ROWS["OM-Net + CGA"], om, lc, P_TEST)
    b = OM.predict(OM.ROWS["OM-Net + CGA"], om + om, lc, P_TEST)  # an ensemble of one model twice
    assert np.array_equal(a, b)


# ------------------------------------------------------------------ post-processing
def test_postprocessing_removes_small_components_and_relabels_dark_oedema():
    lab = np.zeros((30, 30, 30), np.uint8)
    lab[2:12, 2:12, 2:12] = L.ED         # a large oedema component (1000 voxels) ...
    lab[6:8, 6:8, 6:8] = L.ET            # ... with a little ET (8 voxels: ratio < 0.05)
    lab[25:27, 25:27, 25:27] = L.ED      # a small component (8 voxels) below tau
    img = np.ones((4, 30, 30, 30), np.float32)
    img[1, 2:12, 2:7] = 0.2              # half of the oedema darker in T1c
    out = OM.two_step(lab, img, tau_max=50, tau_fraction=0.1, et_max_component=100)
    assert (out[25:27, 25:27, 25:27] == 0).all()                      # step 1
    assert ((out == L.NCR) == ((lab == L.ED) & (img[1] < 0.5))).all()   # step 2: the darker group
    assert ((out == L.ET) == (lab == L.ET)).all()
    assert ((out > 0) == (lab > 0)).sum() == lab.size - 8                # WT changed only by step 1
    assert OM.tumour_threshold(np.array([100, 30000])) == 2000
    # no K-means when ET is large enough
    lab2 = lab.copy()
    lab2[2:12, 2:12, 2:6] = L.ET
    assert not (OM.two_step(lab2, img, tau_max=50, et_max_component=100) == L.NCR).any()


# ------------------------------------------------------------------ the notebook
@pytest.mark.slow
def test_notebook_test_profile_runs(test_profile_report):
    tmp_path = test_profile_report("omnet_cga")  # run once per session, shared with the determinism test
    t1 = pd.read_csv(tmp_path / "tables" / "table1.csv", index_col=0)
    assert list(t1.index) == [r.label for r in OM.TABLE1_ROWS]
    assert t1.loc["OM-Net", "Dice WT (paper)"] == pytest.approx(91.10)
    assert t1["Dice WT (ours)"].between(0, 100).all()
    per = pd.read_csv(tmp_path / "tables" / "per_case.csv")
    assert set(per.row) == set(t1.index) and (per.seconds > 0).all()
    for fig in ("curriculum", "csci_channels", "qualitative", "inference_time"):
        assert (tmp_path / "figures" / f"{fig}.png").exists()
    assert (tmp_path / "tables" / "ensemble.csv").exists()  # the test profile exercises CGA*
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["profile"] == "test" and man["ensemble_folds"] == 2


@pytest.mark.slow
def test_full_profile_code_path_at_toy_size(phantom_root, tmp_path):
    run_full_profile("omnet_cga", phantom_root, tmp_path, {
        "splits": "tmp-omnet-full", "features": [2, 4, 4, 4], "patch_size": [16, 16, 8], "tile_centre": [8, 8, 4],
        "batch_size": 1, "steps_per_epoch": 1, "stage_epochs": [1, 1, 1], "mc_epochs": 1, "n_folds": 2, "folds": 1,
        "ensemble_folds": 0, "holdout_cases": 0, "real_cases": 0, "num_workers": 0, "tile_batch": 16})
