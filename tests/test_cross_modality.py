"""Cross-modality feature transition and fusion: Table 1's discriminator, the generator and
branch features, the CMFF network and its attention variants, the CycleGAN step (Eqs. 2-6),
self-reconstruction, 2D-to-3D inflation, weight transfer, pre-trainings shared by the rows,
every row's training, the notebook's tables and figures (report) and the notebook."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from brats_lib import data as D, figures as FG, models, statistics as ST
from brats_lib.papers.cross_modality import paper as CP, pipeline as CM, report as R
from brats_lib.app import profiles as params
from brats_lib.claims import Claim
from brats_lib.complexity import complexity
from brats_lib.inference import predict_case
from brats_lib.pipeline import Trained, get
from brats_lib.papers.cross_modality.networks import CrossModalityUNet, MaskGuidedAttention, ResidualCBAM
from conftest import run_full_profile

P_TEST = params.load("cross_modality", "test")
TINY = [2, 2, 4, 4, 4]


# ------------------------------------------------------------------ networks
def test_discriminator_is_table_1():
    assert complexity("cmft_discriminator", (128, 128, 128), in_channels=2)["params"] == 698_609
    assert complexity("cmft_discriminator", (128, 128, 128), in_channels=1)["params"] == 698_609 - 16 * 64
    d = models.build("cmft_discriminator", in_channels=2)
    convs = [m for m in d if isinstance(m, nn.Conv3d)]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 1] and [c.out_channels for c in convs] == [16, 32, 64, 128, 1]
    assert all(c.kernel_size == (4, 4, 4) for c in convs)
    assert sum(isinstance(m, nn.InstanceNorm3d) for m in d) == 3 and sum(isinstance(m, nn.LeakyReLU) for m in d) == 4
    shapes, x = [], torch.zeros(1, 2, 128, 128, 128, device="meta")
    for m in d:
        x = m(x)
        if isinstance(m, nn.Conv3d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes[:4] == [(16, 64, 64, 64), (32, 32, 32, 32), (64, 16, 16, 16), (128, 8, 8, 8)]  # Table 1's inputs
    assert shapes[4] == (1, 7, 7, 7)


def test_generator_features_and_output():
    g = CrossModalityUNet(2, 2, TINY).eval()
    x = torch.randn(1, 2, 32, 32, 32)
    f1, f2 = g.decode(x)
    assert f1.shape == f2.shape == (1, TINY[0], 32, 32, 32)
    assert torch.allclose(g(x), g.final_conv(f2))
    branch = models.build("cmff_branch", pair=(2, 3), features=TINY).eval()
    branch.load_state_dict({**g.state_dict(), **{k: v for k, v in branch.state_dict().items() if "final_conv" in k}})
    four = torch.randn(1, 4, 32, 32, 32)
    assert torch.allclose(branch.decode(four)[1], g.decode(four[:, 2:])[1])  # the branch reads its own pair
    assert branch(four).shape == (1, 4, 32, 32, 32)
    with pytest.raises(ValueError, match="outside"):
        models.build("cmff_branch", pair=(3, 4))
    with pytest.raises(ValueError, match="five levels"):
        CrossModalityUNet(2, 2, [4, 8, 16])


@pytest.mark.parametrize("attention", ["mg", "ca", "none"])
def test_cmff_returns_fusion_and_both_branches_while_training(attention):
    net = models.build("cmff", features=TINY, attention=attention)
    x = torch.randn(2, 4, 32, 32, 32)
    outs = net.train()(x)
    assert len(outs) == 3 and all(o.shape == (2, 4, 32, 32, 32) for o in outs)
    net.eval()
    assert torch.allclose(net(x), net(x, branches=True)[0], atol=1e-6)
    assert isinstance(net.s_f.attention, {"mg": MaskGuidedAttention, "ca": ResidualCBAM, "none": type(None)}[attention])
    with pytest.raises(ValueError, match="attention"):
        models.build("cmff", attention="self")


def test_mask_guided_attention_uses_the_branch_masks():
    torch.manual_seed(0)
    mg = MaskGuidedAttention(3).eval()
    h = torch.rand(1, 3, 4, 4, 4)
    assert torch.equal(mg(h, torch.rand_like(h[:, :1]), torch.rand_like(h[:, :1])), h)  # starts as the identity
    nn.init.normal_(mg.mix.weight)
    ma, mb = torch.rand(1, 1, 4, 4, 4), torch.rand(1, 1, 4, 4, 4)
    assert torch.allclose(mg(h, ma, mb), h + mg.mix(torch.cat([h * ma, h * mb], 1)))
    assert not torch.allclose(mg(h, ma, mb), mg(h, mb, ma))
    # the fusion branch's masks are one minus each branch's background probability
    net = models.build("cmff", features=TINY).eval()
    seen = {}
    net.s_f.attention.register_forward_pre_hook(lambda m, args: seen.update(m_a=args[1], m_b=args[2]))
    x = torch.randn(1, 4, 32, 32, 32)
    _, la, lb = net(x, branches=True)
    assert torch.allclose(seen["m_a"], 1 - torch.softmax(la, 1)[:, :1], atol=1e-6)
    assert torch.allclose(seen["m_b"], 1 - torch.softmax(lb, 1)[:, :1], atol=1e-6)


# ------------------------------------------------------------------ phase 1
def test_pairs():
    assert CM.pair_indices("paper") == ((0, 1), (2, 3))  # (t1, t1ce), (t2, flair)
    assert CM.pair_indices("alternative") == ((0, 3), (2, 1))  # (t1, flair), (t2, t1ce)
    with pytest.raises(ValueError, match="pairing"):
        CM.pair_indices("t1-only")


def _grads(model):
    return {k: (v.grad.clone() if v.grad is not None else torch.zeros_like(v)) for k, v in model.named_parameters()}


def test_cyclegan_step_gives_each_player_its_own_gradient():
    torch.manual_seed(0)
    model = CM.Pretrainer(TINY)
    x = torch.randn(1, 4, 32, 32, 32)
    step = CM.CycleGANStep((0, 1), (2, 3), lam=10.0)
    step(model, (x, None)).backward()
    got = _grads(model)
    rec = {k: float(v) for k, v in step.history[-1].items()}
    # the generators' loss alone, written out: fool D_B and D_A, cycle back (Eqs. 1, 4)
    model.zero_grad()
    a, b = x[:, :2], x[:, 2:]
    fb, fa = model.g_a(a), model.g_b(b)
    adv_g = ((model.d_b(fb) - 1) ** 2).mean() + ((model.d_a(fa) - 1) ** 2).mean()
    cyc = (model.g_b(fb) - a).abs().mean() + (model.g_a(fa) - b).abs().mean()
    (adv_g + 10.0 * cyc).backward()
    want_g = _grads(model)
    # the discriminators' loss alone (Eqs. 2-3), fakes fixed
    model.zero_grad()
    adv_d = (((model.d_b(b) - 1) ** 2).mean() + (model.d_b(fb.detach()) ** 2).mean()
             + ((model.d_a(a) - 1) ** 2).mean() + (model.d_a(fa.detach()) ** 2).mean())
    adv_d.backward()
    want_d = _grads(model)
    for k in got:
        want = want_g[k] if k.startswith("g_") else want_d[k]
        assert torch.allclose(got[k], want, rtol=1e-4, atol=1e-6), k
    assert rec["adversarial (G)"] == pytest.approx(adv_g.item(), rel=1e-5)
    assert rec["cycle L1"] == pytest.approx(cyc.item(), rel=1e-5)
    assert rec["adversarial (D)"] == pytest.approx(adv_d.item(), rel=1e-5)


def test_self_reconstruction_of_a_perfect_copy_costs_nothing():
    model = CM.Pretrainer(TINY, adversarial=False)
    assert model.d_a is None
    model.g_a, model.g_b = nn.Identity(), nn.Identity()
    step = CM.ReconstructionStep((0, 1), (2, 3))
    assert float(step(model, (torch.randn(1, 4, 8, 8, 8), None))) == 0.0


def test_cmft_refuses_patches_the_discriminator_cannot_take(tmp_path):
    p = params.load("cross_modality", "test", patch_size=[32, 32, 16])
    with pytest.raises(ValueError, match="patch_size"):
        CM.pretrain("cmft", [(np.zeros((4, 32, 32, 32), np.float32), np.ones((32, 32, 32), np.uint8))], p, tmp_path, 0)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ Ours_voc
def test_shapes_set_is_deterministic_and_labelled():
    ds = CM.ShapesSegmentation((32, 32), 4, seed=1)
    x, y = ds[2]
    x2, y2 = ds[2]
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.shape == (3, 32, 32) and y.shape == (32, 32)
    assert torch.allclose(x.mean((1, 2)), torch.zeros(3), atol=1e-4)
    assert set(y.unique().tolist()) <= {0, 1, 2, 3} and (y > 0).any()
    ds.set_epoch(1)
    assert not torch.equal(ds[2][0], x)


def test_inflation_keeps_each_layers_2d_response():
    torch.manual_seed(0)
    net2d = CrossModalityUNet(3, 4, TINY, spatial_dims=2)
    net3d = CM.inflate(net2d, CrossModalityUNet(2, 2, TINY))
    before = net3d.final_conv.weight.clone()
    assert torch.equal(CM.inflate(net2d, net3d).final_conv.weight, before)  # the last layer is left alone
    # first conv: a grey RGB slice vs the same slice repeated over both channels and 9 slices
    conv2, conv3 = net2d.conv_0.conv_0.conv, net3d.conv_0.conv_0.conv
    s = torch.randn(1, 1, 16, 16)
    out2 = conv2(s.repeat(1, 3, 1, 1))
    out3 = conv3(s[..., None].repeat(1, 2, 1, 1, 9))
    assert torch.allclose(out3[..., 4], out2, atol=1e-5)
    # transposed conv (kernel = stride = 2): every output slice
    up2, up3 = net2d.upcat_1.upsample.deconv, net3d.upcat_1.upsample.deconv
    f = torch.randn(1, up2.in_channels, 8, 8)
    out3 = up3(f[..., None].repeat(1, 1, 1, 1, 3))
    assert all(torch.allclose(out3[..., z], up2(f), atol=1e-5) for z in range(6))


# ------------------------------------------------------------------ phase 2
def test_transfer_copies_all_but_the_last_layer():
    g = CrossModalityUNet(2, 2, TINY)
    branch = CM.transfer(models.build("cmff_branch", features=TINY), g)
    for k, v in g.state_dict().items():
        if not k.startswith("final_conv."):
            assert torch.equal(branch.state_dict()[k], v)
    assert branch.final_conv.out_channels == 4
    with pytest.raises(ValueError, match="does not match"):
        CM.transfer(models.build("cmff_branch", features=[4, 4, 4, 4, 4]), g)


@pytest.fixture(scope="module")
def cases():
    found, _ = D.open_source(None, 2, 0, (32, 32, 32))
    return [CM.training_case(D.load_case(c)) for c in found]


def test_every_row_builds_and_starts_from_its_pretraining(cases, tmp_path):
    pre = {k: CM.pretrain(k, cases, P_TEST, tmp_path / k, 0) for k in ("cmft", "self", "voc2d", "random")}
    assert list(pre["cmft"].history.columns) == ["adversarial (G)", "adversarial (D)", "cycle L1"]
    for row in CM.TABLE_ROWS:
        if row.trained_as:
            continue
        net = CM.initialise(CM.build(row, P_TEST), row, pre[row.init])
        first = (net.s_a if row.model == "fusion" else net).conv_0.conv_0.conv.weight
        source = pre[row.init].g_a if row.model in ("fusion", "branch_a") else pre[row.init].g_b
        if source is None:
            assert not torch.equal(first, pre["cmft"].g_a.conv_0.conv_0.conv.weight)
        else:
            assert torch.equal(first, source.conv_0.conv_0.conv.weight), row.label
    with pytest.raises(ValueError, match="not trained"):
        CM.build(CM.ROWS["S_A + S_B"], P_TEST)


def test_fusion_training_records_the_three_terms_of_eq_7(cases, tmp_path):
    pre = CM.pretrain("random", cases, P_TEST, tmp_path, 0)
    res = CM.train_row(CM.ROWS["Ours"], pre, cases, P_TEST, tmp_path / "ours", 0)
    assert list(res.history.columns) == ["Dice loss S_F", "Dice loss S_A", "Dice loss S_B"]
    assert len(res.history) == P_TEST.cmff_epochs * P_TEST.steps_per_epoch
    assert res.history.to_numpy().min() >= 0 and res.history.to_numpy().max() <= 1
    assert res.log["train_loss"].iloc[-1] == pytest.approx(res.history.sum(axis=1).mean(), rel=1e-5)


def test_average_row_is_the_mean_of_both_branches_probabilities():
    torch.manual_seed(0)
    lc = D.load_case(D.open_source(None, 1, 0, (32, 32, 32))[0][0])
    sa = models.build("cmff_branch", pair=(0, 1), features=TINY).eval()
    sb = models.build("cmff_branch", pair=(2, 3), features=TINY).eval()
    kw = dict(output="softmax", overlap=P_TEST.overlap, sw_batch_size=P_TEST.sw_batch_size, amp=P_TEST.amp)
    prob_a = predict_case(sa, lc.image, P_TEST.patch_size, **kw)[1]
    prob_b = predict_case(sb, lc.image, P_TEST.patch_size, **kw)[1]
    want = ((prob_a + prob_b) / 2).argmax(0)
    assert (CM.predict([sa, sb], lc, P_TEST) == want).all()
    assert not (CM.predict(sa, lc, P_TEST) == CM.predict(sb, lc, P_TEST)).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_networks_trained_on_the_cpu_predict_on_the_gpu():
    lc = D.load_case(D.open_source(None, 1, 0, (32, 32, 32))[0][0])
    net = models.build("cmff", features=TINY).eval()
    on_cpu = CM.predict(net, lc, P_TEST)
    assert (CM.predict(net, lc, P_TEST, device="cuda") == on_cpu).mean() > 0.99


# ------------------------------------------------------------------ one pre-training per fold, shared by the rows
@pytest.fixture(scope="module")
def loaded():
    found, _ = D.open_source(None, 2, 0, (32, 32, 32))
    return [D.load_case(c) for c in found]


def test_a_pretraining_is_kept_and_reused_only_for_the_same_run(loaded, tmp_path):
    first, ran = CM.shared_pretraining("self", "paper", 0, loaded, P_TEST, tmp_path / "a")
    assert ran and (tmp_path / "a" / "pretrained.pt").exists()
    again, ran = CM.shared_pretraining("self", "paper", 0, loaded, P_TEST, tmp_path / "a")
    assert not ran and again.seconds == first.seconds and again.kind == "self"
    pd.testing.assert_frame_equal(again.history, first.history)
    for g, g0 in ((again.g_a, first.g_a), (again.g_b, first.g_b)):
        assert all(torch.equal(v, g0.state_dict()[k]) for k, v in g.state_dict().items())
    # a kept pre-training of another fold (seed) or of other parameters is not taken
    for fold, p in ((1, P_TEST), (0, params.load("cross_modality", "test", cmft_lr=0.01))):
        (tmp_path / "b").mkdir(exist_ok=True)
        (tmp_path / "b" / "pretrained.pt").write_bytes((tmp_path / "a" / "pretrained.pt").read_bytes())
        assert CM.shared_pretraining("self", "paper", fold, loaded, p, tmp_path / "b")[1]
    # cases without ids are not kept; random initialisation has nothing to keep
    cases = [CM.training_case(lc) for lc in loaded]
    assert CM.shared_pretraining("self", "paper", 0, cases, P_TEST, tmp_path / "c")[1]
    assert not (tmp_path / "c" / "pretrained.pt").exists()
    rnd, ran = CM.shared_pretraining("random", "paper", 0, loaded, P_TEST, tmp_path / "d")
    assert ran and rnd.g_a is None and not (tmp_path / "d").exists()


def test_rows_start_from_the_pretraining_of_their_fold_without_running_it_again(loaded, tmp_path):
    folds = [{"train": [lc.case_id for lc in loaded], "val": []}]
    pre = CM.pretrain_folds(folds, {lc.case_id: lc for lc in loaded}, P_TEST, tmp_path, progress=False)
    assert set(pre) == {(kind, pairing, 0) for kind, pairing in CM.PRETRAININGS}
    assert CM.pretrain_folder(tmp_path, "cmft", "alternative", "fold0").joinpath("pretrained.pt").exists()
    t = get("cross_modality").train_fold("Ours (T1+FLAIR / T2+T1c)", 0, loaded, [], P_TEST,
                                         tmp_path / "alt" / "fold0")
    kept = pre["cmft", "alternative", 0]
    assert t.train_seconds == t.state["cmff_seconds"]  # phase 1 was not run again
    assert t.state["pretrained"].seconds == kept.seconds
    assert torch.equal(t.state["pretrained"].g_b.conv_0.conv_0.conv.weight, kept.g_b.conv_0.conv_0.conv.weight)
    assert list(t.state["history"].columns) == ["Dice loss S_F", "Dice loss S_A", "Dice loss S_B"]


# ------------------------------------------------------------------ the notebook's tables and figures
def _per_case(seed: int = 0, cases: int = 6) -> pd.DataFrame:
    """A per-case table as :func:`brats_lib.pipeline.cross_validate` returns it, random scores."""
    rng = np.random.default_rng(seed)
    rows = []
    for lab in R.ORDER:
        for i in range(cases):
            scores = {f"{m} {r}": float(rng.uniform()) for m in ("Dice", "HD95", "Sensitivity") for r in ("ET", "TC", "WT")}
            rows.append({"row": lab, "fold": 0, "case": f"c{i}", "seconds": float(rng.uniform()), **scores,
                         "Dice mean": 0.5})
    return pd.DataFrame(rows)


def test_per_case_table_in_the_papers_terms_and_tables_2_and_4():
    per = R.paper_columns(_per_case())
    assert "Dice mean" not in per and not any("HD95" in c for c in per) and set(CP.COLUMNS) <= set(per)
    hd = per[["Hausdorff95 ET", "Hausdorff95 WT", "Hausdorff95 TC"]].mean(axis=1)
    assert np.array_equal(per["Hausdorff95 Average"], hd)
    ours = R.row_means(per)
    assert list(ours.index) == R.ORDER and list(ours.columns) == CP.COLUMNS
    assert ours.loc["Ours", "Dice ET"] == pytest.approx(per.loc[per.row == "Ours", "Dice ET"].mean())
    tables = R.paper_tables(ours)
    assert tables["table2"].loc["Ours", "Dice TC (paper)"] == 0.828
    assert np.isnan(tables["table2"].loc["Ours (T1+FLAIR / T2+T1c)", "Dice Average (paper)"])
    assert tables["table4"].loc["Ours (T1+FLAIR / T2+T1c)", "Dice Average (paper)"] == 0.822
    assert tables["table4"]["Hausdorff95 WT (ours)"].equals(ours["Hausdorff95 WT"])
    dice, other = R.shown_tables(ours).values()
    assert all(c.startswith("Dice") for c in dice) and not any(c.startswith("Dice") for c in other)
    timing = R.inference_times(per)
    assert list(timing.index) == R.ORDER
    assert timing.loc["S_B", "max s / case"] == per.loc[per.row == "S_B", "seconds"].max()


def test_region_table_gives_intervals_and_paired_tests_against_ours():
    per = R.paper_columns(_per_case())
    ours = per.row == "Ours"
    per.loc[per.row == "S_A", "Dice ET"] = per.loc[ours, "Dice ET"].to_numpy() - 0.1
    t = R.region_table(per)
    assert list(t.index) == R.ORDER and t.loc["Ours", "p Dice ET vs Ours"] == ""
    assert float(t.loc["S_A", "p Dice ET vs Ours"]) == pytest.approx(2 / 2 ** 6, rel=1e-2)  # all 6 lower
    assert t.loc["S_A", "Dice ET"] == ST.format_ci(per.loc[per.row == "S_A", "Dice ET"], digits=3)
    assert [c for c in t.columns if c.startswith("p ")] == [f"p {c} vs Ours" for c in R.TESTED]


def test_claims_are_read_in_the_papers_own_tables():
    assert CP.holds_in(CP.PAPER_TABLE2, Claim("x", "S_A", "S_B", "Hausdorff95 ET")) == "yes"  # 3.735 < 13.373 mm
    assert CP.holds_in(CP.PAPER_TABLE2, Claim("x", "S_B", "S_A", "Hausdorff95 ET")) == "no"
    assert CP.holds_in(CP.PAPER_TABLE2, Claim("x", "Ours", "Ours", "Dice ET")) == "tie"
    checked = pd.DataFrame({"claim": [c.text for c in CP.CLAIMS], "source": "", "metric": "", "compared": ""})
    out = R.with_paper_verdicts(checked)
    assert list(out.columns[4:6]) == ["BraTS 2017 (paper)", "BraTS 2018 (paper)"]
    alt = out.set_index("claim").loc["the paper's pairing beats (T1+FLAIR / T2+T1c)"]
    assert alt["BraTS 2017 (paper)"] == "n/a" and alt["BraTS 2018 (paper)"] == "yes"  # Sec. 4.3: BraTS 2018 only


def test_setup_tables_put_the_paper_beside_this_run():
    t = R.scale_table(P_TEST)
    assert t.loc["patch", "paper"] == "128 x 128 x 128" and t.loc["patch", "this run"] == "32 x 32 x 32"
    assert t.loc["data", "this run"] == "4 phantoms 32 x 32 x 32, 1 of 2 folds"
    assert "A = (t1, t1ce), B = (t2, flair); lambda = 10 (paper 10)" in R.run_summary(P_TEST)
    sizes = R.model_sizes(P_TEST)
    assert list(sizes.index) == [name for name, _, _ in R.SIZE_ROWS]
    assert sizes.loc["discriminator D (Table 1)", "params"] == CP.TABLE1_DISCRIMINATOR_PARAMS
    assert sizes.loc["CMFF w/o MG", "params, this run"] < sizes.loc["CMFF w/o MG", "params"]
    assert "(as the issue's count" in R.discriminator_check(sizes)
    assert "NOT as" in R.discriminator_check(sizes.assign(params=1))


def test_times_leave_out_random_initialisation_and_combined_rows():
    pre = {(kind, pairing, 0): CM.Pretrained(kind, None, None, pd.DataFrame(), 1.26) for kind, pairing in CM.PRETRAININGS}
    assert list(R.pretrain_seconds(pre)) == ["cmft-paper/fold0", "cmft-alternative/fold0", "self-paper/fold0",
                                             "voc2d-paper/fold0"]
    assert list(R.pretraining_times(pre)["pre-training"])[:2] == ["cmft (paper pairs)", "cmft (alternative pairs)"]
    trained = {("S_A", 0): Trained("S_A", 0, [], train_seconds=3.0, state={"cmff_seconds": 2.04}),
               ("S_A + S_B", 0): Trained("S_A + S_B", 0, [], train_seconds=5.0)}
    assert R.row_seconds(trained) == {"S_A/fold0": 2.04}
    man = R.manifest_seconds(pre, trained)
    assert man["train_seconds"] == {"S_A/fold0": 2.0} and set(man["pretrain_seconds"].values()) == {1.3}


def _translation(perfect: bool) -> R.Translation:
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 4)).astype(np.float32)
    ia, ib = CM.pair_indices("paper")
    fake_b, fake_a = (x[list(ib)], x[list(ia)]) if perfect else (np.zeros((2, 8, 8, 4)),) * 2
    return R.Translation("c", x, fake_b, fake_a, ia, ib, 2)


def test_translations_are_scored_against_the_real_target_pair(loaded):
    err = R.translation_error(_translation(True))
    assert (err["mean |fake - real| (z-score units)"] == 0).all() and (err["mean |input - real target|"] > 0).all()
    tr = _translation(False)
    assert err.loc["A -> B", "mean |input - real target|"] == pytest.approx(np.abs(tr.image[:2] - tr.image[2:]).mean())
    assert R.translation_error(tr).loc["A -> B"].iloc[0] == pytest.approx(np.abs(tr.image[2:]).mean())
    fig = R.translation_figure(_translation(True))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:6] == ["real t1 (A)", "real t1ce (A)", "G(A): fake t2", "G(A): fake flair", "real t2 (B)",
                          "real flair (B)"]
    assert titles[8:10] == ["G(B): fake t1", "G(B): fake t1ce"]
    # identity "generators" over a whole case give back their own input pair
    lc = loaded[0]
    tr = R.translate_case(CM.Pretrained("cmft", nn.Identity(), nn.Identity(), pd.DataFrame(), 0.0), lc, P_TEST)
    assert np.allclose(tr.fake_b, tr.image[:2], atol=1e-5) and np.allclose(tr.fake_a, tr.image[2:], atol=1e-5)
    assert tr.z == FG.tumour_slice(lc.label[CM.network_input(lc)[1].slices])


def test_figures_draw_every_curve_and_row(loaded):
    steps = pd.DataFrame({"a": [1.0, 0.5, 0.2], "b": [0.3, 0.2, 0.1], "c": [0.9, 0.8, 0.7]})
    pre = {(kind, pairing, 0): CM.Pretrained(kind, None, None, steps, 0.0) for kind, pairing in CM.PRETRAININGS}
    pre["voc2d", "paper", 0] = CM.Pretrained("voc2d", None, None, pd.DataFrame({"epoch": [0], "ce": [1.0]}), 0.0)
    fig = R.pretraining_figure(pre)
    assert [len(ax.lines) for ax in fig.axes] == [3, 3, 1, 1]
    hist = steps.set_axis(["Dice loss S_F", "Dice loss S_A", "Dice loss S_B"], axis=1)
    nets = {"fusion": models.build("cmff", features=TINY).eval(),
            "a": models.build("cmff_branch", pair=(0, 1), features=TINY).eval(),
            "b": models.build("cmff_branch", pair=(2, 3), features=TINY).eval()}
    trained = {}
    for r in CM.TABLE_ROWS:
        net = {"branch_a": [nets["a"]], "branch_b": [nets["b"]], "average": [nets["a"], nets["b"]]}.get(
            r.model, [nets["fusion"]])
        trained[r.label, 0] = Trained(r.label, 0, net, state={"history": hist})
    fig = R.cmff_training_figure(trained)
    fusion = [r for r in CM.TABLE_ROWS if r.model == "fusion"]
    assert [len(ax.lines) for ax in fig.axes] == [len(fusion), 3 + 2]
    fig = R.qualitative_figure(trained, 0, loaded[0], "t", P_TEST)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["reference", *R.SHOWN_ROWS]
    fig = R.branch_masks_figure(nets["fusion"], loaded[0], P_TEST)
    assert [ax.get_title().split(":")[0] for ax in fig.axes[:6]] == ["reference", "S_A", "S_B", "S_F", "mask M_A",
                                                                      "mask M_B"]
    assert len(R.shapes_figure(P_TEST).axes) == 8


# ------------------------------------------------------------------ the notebook
@pytest.mark.slow
def test_notebook_test_profile_runs(test_profile_report):
    tmp_path = test_profile_report("cross_modality")  # run once per session, shared with the determinism test
    for name in ("table2", "table4"):
        t = pd.read_csv(tmp_path / "tables" / f"{name}.csv", index_col=0)
        assert list(t.index) == [r.label for r in CM.TABLE_ROWS]
        assert t["Dice ET (ours)"].between(0, 1).all() and t["Hausdorff95 Average (ours)"].ge(0).all()
    t2 = pd.read_csv(tmp_path / "tables" / "table2.csv", index_col=0)
    assert t2.loc["Ours", "Dice TC (paper)"] == pytest.approx(0.828)
    t4 = pd.read_csv(tmp_path / "tables" / "table4.csv", index_col=0)
    assert t4.loc["Ours (T1+FLAIR / T2+T1c)", "Dice Average (paper)"] == pytest.approx(0.822)
    per = pd.read_csv(tmp_path / "tables" / "per_case.csv")
    assert set(per.row) == set(t2.index) and (per.seconds > 0).all()
    sizes = pd.read_csv(tmp_path / "tables" / "model_sizes.csv", index_col=0)
    assert sizes.loc["discriminator D (Table 1)", "params"] == 698_609
    for fig in ("pretraining_curves", "shapes_pretraining_data", "translations", "cmff_training_curves",
                "branch_masks", "qualitative"):
        assert (tmp_path / "figures" / f"{fig}.png").exists()
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["profile"] == "test" and len(man["train_seconds"]) == 9 and len(man["pretrain_seconds"]) == 4


@pytest.mark.slow
def test_full_profile_code_path_at_toy_size(phantom_root, tmp_path):
    run_full_profile("cross_modality", phantom_root, tmp_path, {
        "splits": "tmp-cross-modality-full", "features": TINY, "patch_size": [32, 32, 32], "steps_per_epoch": 1,
        "cmft_epochs": 1, "cmff_epochs": 1, "pretrain_2d_epochs": 1, "pretrain_2d_steps_per_epoch": 1,
        "pretrain_2d_batch": 2, "n_folds": 2, "folds": 1, "real_cases": 0, "num_workers": 0})
