"""OM-Net + CGA: network sizes against the authors' counts, CGA equations, the multi-task
step (concatenate / split, data transfer, curriculum, cross-task flow), overlap-tile
inference, the cascade fusion, post-processing, the CGA* fold ensemble, the notebook's
tables and figures (report) and the notebook."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from brats_lib import labels as L
from brats_lib import models
from brats_lib.data import LoadedCase
from brats_lib.papers.omnet_cga import ensemble as E, paper as PAPER, pipeline as OM, report as R
from brats_lib.app import profiles as params
from brats_lib.complexity import complexity
from brats_lib.papers.omnet_cga.networks import CGA, OMNet, CORE5, ET5, NCR5, NORMAL5, TUMOUR5, channel_importance
from brats_lib.papers.omnet_cga.postprocess import tumour_threshold, two_step
from brats_lib.pipeline import Trained
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


def test_profile_dilation_sets_task2_region_and_fusion():
    """``p.dilation`` (paper 5) is the tumour dilation of task 2's sampling region and of the
    region task 2 relabels when the one-pass outputs are fused."""
    img, lab, _ = make_phantom(5, (32, 32, 32), kind="gbm")
    lc = LoadedCase("x", img, lab, np.eye(4), None, (1.0, 1.0, 1.0))
    sizes = {d: int(OM.task_case(lc, d).regions[1].sum()) for d in (1, 3)}
    assert 0 < sizes[1] < sizes[3]
    # one-pass maps: task 1 says tumour (ED) in a blob, task 2 says NCR everywhere
    probs = np.zeros((12,) + lab.shape, np.float32)
    probs[NORMAL5] = 1
    probs[NORMAL5, 14:18, 14:18, 14:18], probs[2, 14:18, 14:18, 14:18] = 0, 1
    probs[5 + NCR5] = 1
    probs[10] = 1  # task 3: no ET
    wt = {d: int((OM.labels_from_probabilities(OM.ROWS["OM-Net"], probs, lc,
                                                dataclasses.replace(P_TEST, dilation=d)) > 0).sum()) for d in (1, 3)}
    blob = OM.dilate(np.pad(np.ones((4, 4, 4), bool), 14), 1)
    assert wt[1] == int(blob[:32, :32, :32].sum()) and wt[3] > wt[1]


def test_cascade_and_one_pass_predict_whole_cases(task_cases):
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
    out = two_step(lab, img, tau_max=50, tau_fraction=0.1, et_max_component=100)
    assert (out[25:27, 25:27, 25:27] == 0).all()                      # step 1
    assert ((out == L.NCR) == ((lab == L.ED) & (img[1] < 0.5))).all()   # step 2: the darker group
    assert ((out == L.ET) == (lab == L.ET)).all()
    assert ((out > 0) == (lab > 0)).sum() == lab.size - 8                # WT changed only by step 1
    assert tumour_threshold(np.array([100, 30000])) == 2000
    # no K-means when ET is large enough
    lab2 = lab.copy()
    lab2[2:12, 2:12, 2:6] = L.ET
    assert not (two_step(lab2, img, tau_max=50, et_max_component=100) == L.NCR).any()


# ------------------------------------------------------------------ the paper's numbers (paper.py)
def test_paper_table1_keeps_recovered_rows_and_derived_cells():
    t = PAPER.paper_table1()
    assert list(t.columns) == ["Params (M)", "Dice WT", "Dice TC", "Dice ET"]
    assert t.loc["MC3", "Params (M)"] == pytest.approx(41.439) and t.loc["OM-Net", "Dice ET"] == pytest.approx(80.87)
    assert t.loc["OM-Net + CGA", "Dice TC"] == pytest.approx(79.87 + 2.28) and np.isnan(t.loc["OM-Net + CGA", "Dice WT"])
    assert "OM-Net + CGA" not in PAPER.PAPER_TABLE1.index  # the derived cells do not touch the recovered table
    assert {r for c in PAPER.CLAIMS for r in c.rows} <= set(OM.ROWS)


# ------------------------------------------------------------------ the notebook's tables and figures (report.py)
def _phantom_case(seed: int, name: str | None = None) -> LoadedCase:
    img, lab, _ = make_phantom(seed, (32, 32, 32), kind="gbm")
    return LoadedCase(name or f"c{seed}", img, lab, np.eye(4), None, (1.0, 1.0, 1.0))


def test_scale_table_puts_this_run_beside_the_papers_setup():
    t = R.scale_table(P_TEST)
    assert list(t.index) == list(PAPER.PAPER_SETUP) and list(t.columns) == ["paper", "this run"]
    assert t.loc["patch", "paper"] == "32 x 32 x 16" and t.loc["patch", "this run"] == "16 x 16 x 8"
    assert t.loc["feature maps", "paper"] == "32 x 64 x 128 x 256"
    assert t.loc["patches", "this run"] == f"{P_TEST.steps_per_epoch * P_TEST.batch_size} per task per epoch"
    # task 3's ET weight: tumour_weight unless set on its own
    assert R.scale_table(dataclasses.replace(P_TEST, tumour_weight=3.0, et_weight=None)).iloc[-1, 1] == "3"
    assert R.scale_table(dataclasses.replace(P_TEST, tumour_weight=3.0, et_weight=5.0)).iloc[-1, 1] == "5"
    text = R.settings_text(P_TEST)
    assert "thresholds 0.4 and 0.5" in text and f"min({P_TEST.tau_max:g}, {P_TEST.tau_fraction:g} V_max)" in text


def test_model_sizes_count_cascades_and_post_processed_rows():
    rows = [OM.ROWS[r] for r in ("MC1", "MC2", "OM-Net", "OM-Netp", "OM-Net + CGA")]
    sizes = R.model_sizes(P_TEST, rows)
    assert list(sizes.index) == [r.label for r in rows]
    assert sizes.loc["MC2", "params (M)"] == pytest.approx(2 * sizes.loc["MC1", "params (M)"])
    assert R.n_params(OM.ROWS["MC3"], [2, 4, 4, 4]) == sum(
        complexity("omnet_mc1", PATCH, classes=c, features=[2, 4, 4, 4])["params"] for c in (5, 5, 2))
    assert (sizes.loc["OM-Netp"] == sizes.loc["OM-Net"]).all()  # post-processing adds no parameters
    assert sizes.loc["OM-Netp", "params (M), paper"] == PAPER.PAPER_PARAMS["OM-Net"]
    assert np.isnan(sizes.loc["OM-Net + CGA", "ratio"]) and (sizes["ratio"].dropna() - 1).abs().max() < 0.02
    assert (sizes["params (M), this run"] < sizes["params (M)"]).all()
    assert "NOT" not in R.model_size_note(sizes)
    bigger = sizes.copy()
    bigger.loc["OM-Net + CGA", "params (M)"] = 99.0
    assert "NOT smaller" in R.model_size_note(bigger)


def test_task_regions_count_each_tasks_centres():
    cases = [_phantom_case(s) for s in range(2)]
    t = R.task_regions(cases, progress=False)
    assert list(t.index) == ["mean", "min", "max"] and list(t.columns) == list(R.REGION_NAMES)
    brain, dilated, core = (OM.task_case(cases[0]).regions[k].sum() for k in range(3))
    assert t.iloc[:, 0].min() <= brain <= t.iloc[:, 0].max()
    assert (t.iloc[:, 0] > t.iloc[:, 1]).all() and (t.iloc[:, 1] > t.iloc[:, 2]).all() and 0 < core < dilated


def _trained(row: str, fold: int, seconds: float, history: pd.DataFrame | None = None) -> Trained:
    return Trained(row, fold, [], train_seconds=seconds, state={"history": history if history is not None else pd.DataFrame()})


def test_train_seconds_keep_rows_trained_on_their_own():
    h = pd.DataFrame([{"stage": 2, "task 1": 1.0, "transferred to task 2": 3}])
    mc3, netd = _trained("MC3", 0, 12.345), _trained("OM-Netd", 1, 2.0, h)
    trained = {("MC3", 0): mc3, ("MC1", 0): _trained("MC1", 0, 12.345), ("OM-Netd", 1): netd,
               ("OM-Netp", 0): _trained("OM-Netp", 0, 5.0)}
    assert R.train_seconds(trained) == {"MC3/fold0": 12.3, "OM-Netd/fold1": 2.0}
    assert list(R.histories(trained, "OM-Netd")) == [1] and R.histories(trained, "OM-Netd")[1] is h


def _per_case(rows=("OM-Net", "OM-Netp", "MC1", "MC3"), n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    out = []
    for i, row in enumerate(rows):
        for c in range(n):
            line = {"row": row, "fold": c % 2, "case": f"c{c}", "seconds": 0.1 * (i + 1) + 0.01 * c}
            for r in ("WT", "TC", "ET"):
                line.update({f"Dice {r}": rng.uniform(0.3, 0.9), f"PPV {r}": rng.uniform(0.3, 0.9),
                             f"Sensitivity {r}": rng.uniform(0.3, 0.9), f"HD95 {r}": rng.uniform(2, 20)})
            out.append(line)
    return pd.DataFrame(out)


def test_table1_sets_our_means_beside_the_papers():
    per = _per_case()
    sizes = pd.DataFrame({"params (M)": [13.9, 13.9, 13.8, 41.5]}, index=["OM-Net", "OM-Netp", "MC1", "MC3"])
    t = R.table1(per, sizes, rows=["MC1", "OM-Net", "OM-Netp"])
    assert list(t.index) == ["MC1", "OM-Net", "OM-Netp"]
    assert t.loc["OM-Netp", "Dice TC (ours)"] == pytest.approx(100 * per[per.row == "OM-Netp"]["Dice TC"].mean())
    assert t.loc["MC1", "Params (M) (ours)"] == 13.8 and t.loc["OM-Net", "Dice WT (paper)"] == pytest.approx(91.10)
    assert t.loc["OM-Netp", "Dice TC (paper)"] == pytest.approx(82.47)  # derived from the text
    assert list(t.columns)[:2] == ["Params (M) (paper)", "Params (M) (ours)"]


def test_table1_per_region_intervals_and_paired_tests_against_om_net():
    per = _per_case()
    t = R.table1_per_region(per, rows=["OM-Net", "OM-Netp"])
    assert t.loc["OM-Net", "p Dice WT vs OM-Net"] == "" and float(t.loc["OM-Netp", "p Dice ET vs OM-Net"]) <= 1
    mean = 100 * per[per.row == "OM-Netp"]["Dice TC"].mean()
    assert t.loc["OM-Netp", "Dice TC (%)"].startswith(f"{mean:.1f} [")
    hd = per[per.row == "OM-Net"]["HD95 WT"].mean()
    assert t.loc["OM-Net", "HD95 WT"].startswith(f"{hd:.1f} [")  # HD95 in mm, not scaled
    assert len(t.columns) == 3 * (len(R.DETAIL_METRICS) + 1)


def test_table1_note_says_whether_the_transfer_moved_patches():
    none = {0: pd.DataFrame([{"task 1": 1.0, "transferred to task 2": 0}])}
    some = {0: pd.DataFrame([{"transferred to task 2": 2, "transferred to task 3": 1},
                             {"transferred to task 2": 1, "transferred to task 3": np.nan}])}
    assert "exactly as OM-Net0" in R.table1_note(none) and "82.15" in R.table1_note(none)
    assert "fold 0: 3 to task 2, 1 to task 3" in R.table1_note(some)


def test_inference_time_per_row_in_order():
    per = _per_case(rows=("OM-Net", "MC1", "OM-Net + CGA"))
    t = R.inference_time(per)
    assert list(t.index) == list(R.TIMED_ROWS) and t.loc[["MC2", "MC3"]].isna().all().all()
    assert t.loc["MC1", "mean s / case"] == pytest.approx(per[per.row == "MC1"]["seconds"].mean())
    assert t.loc["OM-Net + CGA", "max s / case"] == pytest.approx(per[per.row == "OM-Net + CGA"]["seconds"].max())
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    fig = R.inference_time_figure(t.dropna(), "cpu")
    colours = [matplotlib.colors.to_hex(b.get_facecolor()) for b in fig.axes[0].patches]
    assert colours == [matplotlib.colors.to_hex(c) for c in ("C7", "C0", "C3")]
    plt.close(fig)


def test_figures_from_trained_rows(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    torch.manual_seed(0)
    h = pd.DataFrame([{"stage": 0, "task 1": 1.0}, {"stage": 1, "task 1": 0.9, "task 2": 1.2,
                                                   "transferred to task 2": 1},
                      {"stage": 2, "task 1": 0.8, "task 2": 1.1, "task 3": 0.7, "transferred to task 3": 0}])
    om = [models.build("omnet_cga", features=[2, 4, 4, 4]).eval()]
    mc = [models.build("omnet_mc1", features=[2, 4, 4, 4], classes=c).eval() for c in (5, 5, 2)]
    trained = {(r, 0): Trained(r, 0, mc if OM.ROWS[r].kind == "mc" else om, state={"history": h})
               for r in ("OM-Net", "OM-Net0", *R.QUALITATIVE_ROWS)}
    fig = R.curriculum_figure(trained, batch_size=2)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 3 + 2  # three tasks, two stage boundaries
    plt.close(fig)
    case = _phantom_case(5)
    fig = R.channel_importance_figure(om[0], case, P_TEST, k=5)
    k = min(5, om[0].backbone.out_channels // 2)  # at most half the channels
    assert len(fig.axes) == 4 * (k + 1) and fig.axes[1].get_title().startswith("largest m_t")
    plt.close(fig)
    fig = R.qualitative_figure(trained, case, "phantom", P_TEST)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "reference" and [t.split("\n")[0] for t in titles[1:]] == list(R.QUALITATIVE_ROWS)
    pred = OM.predict(OM.ROWS["MC3"], mc, case, P_TEST)
    assert titles[1].endswith(f"TC Dice {R.tc_dice(pred, case.label):.2f}")
    plt.close(fig)
    assert R.tc_dice(case.label, case.label) == pytest.approx(1.0)
    q = R.real_case_params(dataclasses.replace(P_TEST, real_tile_centre=[4, 4, 2]))
    assert q.tile_centre == [4, 4, 2] and R.real_case_params(P_TEST).tile_centre == list(P_TEST.tile_centre)


# ------------------------------------------------------------------ OM-Net + CGA* (ensemble.py)
def test_fold_ensemble_trains_one_model_per_fold_and_averages_them(tmp_path):
    cases = {f"c{s}": _phantom_case(s) for s in range(4)}
    p = dataclasses.replace(P_TEST, ensemble_folds=2)
    nets = E.train_fold_ensemble(sorted(cases), cases, p, tmp_path, progress=False)
    assert len(nets) == 2 and all(isinstance(n, OMNet) for n in nets)
    assert {d.name for d in tmp_path.iterdir()} == {"fold0", "fold1"}
    assert any(not torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))
    held = [_phantom_case(9, "held")]
    scores = E.evaluate_ensemble([nets[0], nets[0]], held, p, progress=False)  # an ensemble of one model twice
    assert list(scores.row) == [E.STAR.label, E.STAR_P.label, E.SINGLE] and (scores.case == "held").all()
    star, single = scores.set_index("row").loc[E.STAR.label], scores.set_index("row").loc[E.SINGLE]
    assert star[["Dice WT", "Dice TC", "Dice ET"]].tolist() == single[["Dice WT", "Dice TC", "Dice ET"]].tolist()
    single_pred = OM.predict(OM.ROWS["OM-Net + CGA"], nets[:1], held[0], p)
    wt = 100 * float(2 * ((single_pred > 0) & (held[0].label > 0)).sum() / ((single_pred > 0).sum() + (held[0].label > 0).sum()))
    assert single["Dice WT"] == pytest.approx(wt)
    table = E.ensemble_table(pd.concat([scores, scores.assign(case="other", **{"Dice WT": 0.0})]))
    assert table.loc[E.SINGLE, "Dice WT"] == pytest.approx(wt / 2) and list(table.columns) == ["Dice WT", "Dice TC", "Dice ET"]


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
