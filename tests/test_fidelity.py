"""Fidelity to the papers: one test per finding of the line-by-line audit, each checked
against an independent formula or the paper's own words, never against the code itself."""
from __future__ import annotations

import ast
import dataclasses
import json

import numpy as np
import pytest
import torch

from brats_lib import labels as L
from brats_lib.app import profiles as params
from brats_lib.inference import probabilities_to_labels
from conftest import REPO


# ------------------------------------------------------------------ Optimized U-Net
def test_dice_bce_is_per_region_sigmoid_dice_plus_bce_summed():
    from brats_lib.losses import region_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, 6)
    target = (torch.rand(2, 3, 6, 6, 6) > 0.6).float()
    target[:, 2] = 0  # a region absent from the batch: the background still gets the BCE gradient
    p = torch.sigmoid(logits)
    hand = 0.0
    for r in range(3):  # WT, TC, ET: batched Dice (one over the batch) + BCEWithLogitsLoss, summed
        inter = (p[:, r] * target[:, r]).sum()
        dice = 1 - (2 * inter + 1e-5) / (p[:, r].sum() + target[:, r].sum() + 1e-5)
        hand = hand + dice + torch.nn.BCEWithLogitsLoss()(logits[:, r], target[:, r])
    assert float(region_loss("dice_bce")(logits, target)) == pytest.approx(float(hand), rel=1e-6)
    # the Focal row: sigmoid focal loss, gamma 2, in place of BCE
    pt = torch.where(target > 0, p, 1 - p)
    focal = -(1 - pt) ** 2 * torch.log(pt.clamp_min(1e-12))
    hand_focal = 0.0
    for r in range(3):
        inter = (p[:, r] * target[:, r]).sum()
        dice = 1 - (2 * inter + 1e-5) / (p[:, r].sum() + target[:, r].sum() + 1e-5)
        hand_focal = hand_focal + dice + focal[:, r].mean()
    assert float(region_loss("dice_focal")(logits, target)) == pytest.approx(float(hand_focal), rel=1e-4)


@pytest.mark.parametrize("voxel, paper, overwrite", [
    ((0.40, 0.50, 0.50), L.BACKGROUND, L.ET),  # WT below 0.45: background whatever TC and ET say
    ((0.44, 0.41, 0.20), L.BACKGROUND, L.NCR),
    ((0.50, 0.35, 0.50), L.ED, L.ET),          # TC below 0.4: ED, ET only counts inside TC
    ((0.50, 0.45, 0.30), L.NCR, L.NCR),
    ((0.50, 0.45, 0.50), L.ET, L.ET),
])
def test_nested_label_rule_of_the_paper(voxel, paper, overwrite):
    prob = np.array(voxel, np.float32).reshape(3, 1, 1, 1)
    thresholds = (0.45, 0.40, 0.45)  # Section 2.5
    assert probabilities_to_labels(prob, "sigmoid", thresholds, "nested").item() == paper
    assert probabilities_to_labels(prob, "sigmoid", thresholds, "overwrite").item() == overwrite
    assert params.load("optimized_unet", "full").label_rule == "nested"


def test_nested_label_rule_nvidia_variant_gates_by_wt_only():
    # NVIDIA's to_lbl: WT -> NCR; WT and not TC -> ED; WT and ET -> ET
    prob = np.array([0.5, 0.35, 0.5], np.float32).reshape(3, 1, 1, 1)
    assert probabilities_to_labels(prob, "sigmoid", (0.45, 0.40, 0.45), "nvidia").item() == L.ET
    prob = np.array([0.5, 0.5, 0.2], np.float32).reshape(3, 1, 1, 1)
    assert probabilities_to_labels(prob, "sigmoid", (0.45, 0.40, 0.45), "nvidia").item() == L.NCR


def test_zscore_per_channel_over_each_modality_s_own_non_zero_voxels():
    from brats_lib.papers.optimized_unet import pipeline as OU
    from brats_lib.preprocess import normalise

    rng = np.random.default_rng(0)
    image = rng.normal(5, 2, size=(4, 8, 8, 8)).astype(np.float32)
    image[:, :2] = 0
    image[1, 2:4] = 0  # modality 1's non-zero region is smaller than the others'
    out = normalise(image, OU.NORMALISATION)
    for c in range(4):
        m = image[c] != 0
        ref = (image[c][m] - image[c][m].mean()) / image[c][m].std()  # independent: numpy on that mask
        assert np.allclose(out[c][m], ref, atol=1e-5) and not out[c][~m].any()
    # the shared-mask form differs exactly where one modality is zero inside the brain
    assert not np.allclose(normalise(image, "zscore")[1], out[1])


def test_tta_of_the_whole_volume_is_the_paper_s_form_in_full():
    p = params.load("optimized_unet", "full")
    assert p.tta == 8 and p.tta_mode == "image"


# ------------------------------------------------------------------ all papers
def test_holdout_random_stratified_by_grade_and_collection(tmp_path):
    from brats_lib import data as D
    from brats_lib.sampling import holdout_split

    # BraTS 2018 names sort TCIA09-13 (all LGG) last: "the last 25" would be LGG only
    ids = ([f"Brats18_2013_{i}_1" for i in range(20)] + [f"Brats18_CBICA_A{i:02d}_1" for i in range(60)]
           + [f"Brats18_TCIA09_{i}_1" for i in range(20)])
    strata = {i: i.split("_")[1] for i in ids}
    pool, held = holdout_split(ids, 10, seed=0, strata=strata)
    assert held != sorted(ids)[-10:] and len(held) == 10 and not set(held) & set(pool)
    count = {g: sum(strata[h] == g for h in held) for g in ("2013", "CBICA", "TCIA09")}
    assert count == {"2013": 2, "CBICA": 6, "TCIA09": 2}  # proportional to 20 / 60 / 20
    assert holdout_split(ids, 10, seed=0, strata=strata) == (pool, held)  # seeded
    assert holdout_split(ids, 10, seed=1, strata=strata)[1] != held
    # the grade, where the data records it: BraTS 2018-2019 HGG / LGG folders
    for grade, n in (("HGG", 3), ("LGG", 2)):
        for i in range(n):
            cid = f"Brats18_TCIA0{i}_{grade}_1"
            folder = tmp_path / grade / cid
            folder.mkdir(parents=True)
            for s in ("t1", "t1ce", "t2", "flair"):
                (folder / f"{cid}_{s}.nii.gz").write_bytes(b"")
    grades = D.case_strata(D.discover_cases(tmp_path))
    assert sorted(grades.values()) == ["HGG"] * 3 + ["LGG"] * 2
    # BraTS 2020's name_mapping.csv
    csv_dir = tmp_path / "b20"
    (csv_dir / "BraTS20_Training_001").mkdir(parents=True)
    for s in ("t1", "t1ce", "t2", "flair"):
        (csv_dir / "BraTS20_Training_001" / f"BraTS20_Training_001_{s}.nii.gz").write_bytes(b"")
    (csv_dir / "name_mapping.csv").write_text("Grade,BraTS_2017_subject_ID,BraTS_2020_subject_ID\n"
                                              "LGG,Brats17_x,BraTS20_Training_001\n")
    assert D.case_strata(D.discover_cases(csv_dir)) == {"BraTS20_Training_001": "LGG"}


def test_epoch_pass_visits_every_case_once_in_a_new_order():
    from brats_lib.sampling import PatchDataset

    cases = [(np.full((1, 8, 8, 8), k, np.float32), np.zeros((8, 8, 8), np.uint8)) for k in range(6)]
    ds = PatchDataset(cases, (4, 4, 4), samples_per_epoch=6, fg_prob=0.0, target="labels", seed=3, passes=True)
    orders = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        seen = [int(ds[i][0][0, 0, 0, 0]) for i in range(6)]
        assert sorted(seen) == list(range(6))  # a pass: each case once
        orders.append(seen)
    assert orders[0] != orders[1] or orders[1] != orders[2]  # shuffled per epoch
    for nb in ("optimized_unet", "hnfnetv2", "cross_modality"):
        assert params.load(nb, "full").epoch_pass
    p = params.load("hnfnetv2", "full")  # its comment: one pass of the fold's 900 cases per epoch
    assert p.steps_per_epoch * p.batch_size == (1251 - p.holdout_cases) * 4 // 5


def test_precision_follows_each_paper_in_full():
    assert params.load("optimized_unet", "full").amp  # "all training and inference runs ... mixed precision"
    for nb in ("hnfnetv2", "attention_r2unet_mtds", "omnet_cga", "cross_modality"):
        assert not params.load(nb, "full").amp, nb


# ------------------------------------------------------------------ HNF-Netv2
def test_hnfnetv2_poly_decay_changes_once_per_epoch():
    from brats_lib.papers.hnfnetv2 import pipeline as HN
    from brats_lib.training import lr_curve

    p = dataclasses.replace(params.load("hnfnetv2", "test"), epochs=10, warmup_epochs=2, lr=1.0)
    curve = lr_curve(HN.train_config(p), 3)
    for e in range(10):  # the paper's lr0 (1 - e / E)^0.9 after a linear warm-up, per epoch
        want = (e + 1) / 2 if e < 2 else (1 - e / 10) ** 0.9
        assert np.allclose(curve[3 * e: 3 * e + 3], want)


# ------------------------------------------------------------------ OM-Net
def test_task3_patches_are_half_of_the_others_for_the_cascade(monkeypatch):
    from brats_lib.papers.omnet_cga import pipeline as OM
    from brats_lib.data import LoadedCase

    lengths = []

    class Stop(Exception):
        pass

    def fake_fit(model, loss, dataset, cfg, out_dir, **kw):
        import pandas as pd

        from brats_lib.training import FitResult

        lengths.append(len(dataset))
        if len(lengths) == 3:
            raise Stop
        return FitResult(pd.DataFrame())

    monkeypatch.setattr(OM, "fit", fake_fit)
    p = dataclasses.replace(params.load("omnet_cga", "test"), steps_per_epoch=4)
    img = np.random.default_rng(0).normal(size=(4, 24, 24, 24)).astype(np.float32)
    lab = np.zeros((24, 24, 24), np.uint8)
    lab[8:16, 8:16, 8:16] = L.ED
    lab[10:14, 10:14, 10:14] = L.ET
    case = OM.task_case(LoadedCase("c", img, lab, np.eye(4), None, (1.0, 1.0, 1.0)))
    with pytest.raises(Stop):
        OM.train_row(OM.ROWS["MC3"], [case], p, "/tmp/unused", seed=0)
    per_step = p.batch_size
    assert lengths == [4 * per_step, 4 * per_step, 2 * per_step]  # 400k, 400k, 200k patches in the paper


def test_omnet_biases_as_the_prototxts():
    from brats_lib import models
    from brats_lib.training import TrainConfig, make_optimizer

    net = models.build("omnet", features=[4, 8, 8, 8])
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    assert torch.all(convs[0].bias == 0) and all(torch.all(m.bias == 0.1) for m in convs[1:] if m.bias is not None)
    groups = net.optimizer_groups(1e-3, 5e-4)
    opt = make_optimizer(groups, TrainConfig(optimizer="sgd", lr=1e-3, weight_decay=5e-4))
    bias_ids = {id(m.bias) for m in convs if m.bias is not None}
    for g in opt.param_groups:
        is_bias = all(id(q) in bias_ids for q in g["params"])
        assert (g["lr"], g["weight_decay"]) == ((2e-3, 0.0) if is_bias else (1e-3, 5e-4))


def test_omnet_paper_cells_derived_from_the_text():
    from brats_lib.papers.omnet_cga import paper as OMP
    from brats_lib.papers.omnet_cga import pipeline as OM

    t = OMP.paper_table1()
    assert t.loc["OM-Net + CGA", "Dice TC"] == pytest.approx(82.15)
    assert t.loc["OM-Net + CGA", "Dice ET"] == pytest.approx(80.73)
    assert t.loc["OM-Netp", "Dice TC"] == pytest.approx(82.47)
    assert t.loc["OM-Netp", "Params (M)"] == pytest.approx(13.869)
    import pandas as pd

    none_moved = pd.DataFrame([{"task 1": 1.0}, {"task 1": 0.9, "transferred to task 2": 0}])
    assert sum(OM.transfer_counts(none_moved).values()) == 0


# ------------------------------------------------------------------ cross-modality
def test_attention_residual_form_is_the_same_for_mask_guidance_and_cbam():
    from brats_lib.papers.cross_modality.networks import FusionBranch

    torch.manual_seed(0)
    feats, classes = 6, 4
    a = [torch.randn(1, feats, 8, 8, 8), torch.randn(1, feats, 8, 8, 8), torch.randn(1, classes, 8, 8, 8)]
    b = [torch.randn(1, feats, 8, 8, 8), torch.randn(1, feats, 8, 8, 8), torch.randn(1, classes, 8, 8, 8)]
    outs, base = {}, FusionBranch(feats, classes, "none").eval()
    for kind in ("none", "mg", "ca"):
        branch = FusionBranch(feats, classes, kind).eval()
        branch.load_state_dict(base.state_dict(), strict=False)  # the same fusion and classifier weights
        outs[kind] = branch(a, b)
    # both attention blocks start as the identity, in the same place: at initialisation every
    # row equals "w/o MG", so "w CA" and "Ours" differ by the attention they learn alone
    assert torch.allclose(outs["mg"], outs["none"]) and torch.allclose(outs["ca"], outs["none"])


# ------------------------------------------------------------------ comparison
def _tiny_cases(n=5):
    from brats_lib.data import LoadedCase

    rng = np.random.default_rng(0)
    return [LoadedCase(f"c{i}", rng.normal(size=(4, 10, 12, 14)).astype(np.float32), np.zeros((10, 12, 14), np.uint8),
                       np.eye(4), None, (1.0, 1.0, 1.0)) for i in range(n)]


class _FakePipeline:
    """A voxel-wise "method" behind the pipeline interface (not registered)."""

    def __new__(cls, probabilities, to_labels, inputs=()):
        from brats_lib.pipeline import Pipeline

        class Fake(Pipeline):
            notebook = "fake"

            def probabilities(self, trained, case, p, device=None):
                return probabilities(case)

            def to_labels(self, trained, probs, case, p, final=False):
                return to_labels(probs, case)

            def network_inputs(self, trained, p):
                return list(inputs)

        return Fake()


def test_comparison_selection_uses_inner_training_cases_only(monkeypatch):
    from brats_lib import comparison as C
    from brats_lib import pipeline as pipelines

    seen = {}

    def fake(self, row, k, train, select, p, out, device):
        seen["train"], seen["select"] = [c.case_id for c in train], [c.case_id for c in select]
        return pipelines.Trained(row, k, [])

    monkeypatch.setattr(type(pipelines.get("optimized_unet")), "train_fold", fake)
    train_cases = _tiny_cases(5)
    C.train(C.METHODS["Optimized U-Net"], 0, train_cases, None, "/tmp/unused", selection_fraction=0.2, seed=0)
    assert len(seen["select"]) == 1 and len(seen["train"]) == 4
    assert set(seen["select"]) | set(seen["train"]) == {c.case_id for c in train_cases}
    assert not set(seen["select"]) & set(seen["train"])
    import inspect

    assert "val_cases" not in inspect.signature(C.train).parameters  # the scored cases cannot be passed in


def test_comparison_tta_one_code_path_flips_the_whole_volume():
    from brats_lib import comparison as C
    from brats_lib.inference import flip_average
    from brats_lib.pipeline import Trained

    lc = _tiny_cases(1)[0]
    calls = []

    def probs(case):  # a voxel-wise "method": flipping its input flips its output, nothing else
        calls.append(case.image.copy())
        return 1 / (1 + np.exp(-case.image[:2]))

    avg = flip_average(probs, lc, 8)
    # independent: for a voxel-wise map every flip, undone, gives the unflipped map back
    assert len(calls) == 8 and np.allclose(avg, 1 / (1 + np.exp(-lc.image[:2])), atol=1e-6)
    flipped = {tuple(np.argwhere(c[0] == lc.image[0].max())[0]) for c in calls}
    assert len(flipped) == 8  # eight different orientations were seen
    fitted = C.Fitted(C.METHODS["3D U-Net"], _FakePipeline(lambda case: case.image[:1],
                                                           lambda pr, case: (pr[0] > 0).astype(np.uint8)),
                      Trained("3D U-Net", 0, []), None)
    assert np.array_equal(fitted.predict(lc, 8), (lc.image[0] > 0).astype(np.uint8))  # flips undone exactly


def test_comparison_macs_count_every_forward_pass_with_overlap_and_flips():
    from brats_lib import comparison as C
    from brats_lib.pipeline import Trained
    from brats_lib.complexity import forward_macs
    from brats_lib.inference import sliding_window_probabilities

    torch.manual_seed(0)
    net = torch.nn.Conv3d(4, 3, 3, padding=1).eval()
    lc = _tiny_cases(1)[0]
    roi = (8, 8, 8)

    def probs(case):
        x = torch.from_numpy(case.image)[None]
        return sliding_window_probabilities(net, x, roi, overlap=0.5, sw_batch_size=1)[0].numpy()

    fitted = C.Fitted(C.METHODS["3D U-Net"], _FakePipeline(probs, lambda pr, case: pr.argmax(0),
                                                           [((4, *roi), int(np.prod(roi)))]),
                      Trained("3D U-Net", 0, [net]), None)
    per_window = forward_macs(net, torch.zeros(1, 4, *roi))
    network = C.sizes(fitted)["network kMACs / voxel"] * 1e3
    assert network == pytest.approx(per_window / 512)
    # independent count: windows of 8 at stride 4 cover 10 / 12 / 14 voxels with 2 / 2 / 3
    # starts (MONAI moves the last window back to the border): 12 windows
    one = C.inference_macs(fitted, lc, 1)
    eight = C.inference_macs(fitted, lc, 8)
    assert one == pytest.approx(2 * 2 * 3 * per_window / (10 * 12 * 14))
    assert eight == pytest.approx(8 * one)


# ------------------------------------------------------------------ citations
def test_notebooks_cite_papers_not_files_outside_the_repository():
    for nb in REPO.joinpath("notebooks").glob("*.ipynb"):
        text = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"])
        assert "shared/papers" not in text and "NOTES.md" not in text, nb.name
    papers = REPO.joinpath("notebooks", "papers.md").read_text()
    for ref in ("arXiv:2202.05268", "doi:10.3389/fonc.2021.704850", "arXiv:2110.03352", "doi:10.1109/TIP.2020.2973510",
                "doi:10.1016/j.patcog.2020.107562"):
        assert ref in papers


# ------------------------------------------------------------------ claims (brats_lib.claims)
def _claim_frame(values: dict[str, list[float]], metric: str = "Dice ET", **extra: dict[str, list]) -> "pd.DataFrame":
    """Long per-case frame: one line per (row, case), cases paired by (fold, case)."""
    import pandas as pd

    rows = []
    for row, vals in values.items():
        for i, v in enumerate(vals):
            line = {"row": row, "fold": i % 2, "case": f"c{i}", metric: v}
            line.update({col: per_row[row][i] for col, per_row in extra.items() if row in per_row})
            rows.append(line)
    return pd.DataFrame(rows)


def test_claim_verdicts_win_loss_noise_and_hd95_orientation():
    from brats_lib.claims import Claim, check_claims

    base = np.linspace(0.5, 0.8, 16)
    wobble = np.resize([0.01, -0.01, 0.02, -0.02], 16)  # symmetric: Wilcoxon p = 1
    per = _claim_frame({"base": base, "win": base + 0.05 + wobble / 10, "lose": base - 0.05 + wobble / 10,
                        "noise": base + wobble})
    out = check_claims([Claim("win beats base", "win", "base", "Dice ET"),
                        Claim("lose beats base", "lose", "base", "Dice ET"),
                        Claim("noise beats base", "noise", "base", "Dice ET")], per)
    assert list(out.verdict) == ["holds", "contradicted", "not significant"]
    assert (out.n == 16).all() and out.loc[2, "p"] == pytest.approx(1.0)
    # HD95: lower is better, so a lower distance is a positive difference in the claim's direction
    hd = _claim_frame({"base": 20 - 10 * base, "win": 15 - 10 * base + wobble}, metric="HD95 WT")
    out = check_claims([Claim("win beats base on HD95", "win", "base", "HD95 WT"),
                        Claim("base beats win on HD95", "base", "win", "HD95 WT")], hd)
    assert list(out.verdict) == ["holds", "contradicted"]
    assert out.loc[0, "difference"] == pytest.approx(5.0) and out.loc[1, "difference"] == pytest.approx(-5.0)
    assert out.loc[0, "ours: better"] < out.loc[0, "ours: other"]  # means as measured, not oriented


def test_claim_ci_and_p_match_numpy_and_scipy_computed_directly():
    from scipy import stats

    from brats_lib.claims import Claim, check_claims

    rng = np.random.default_rng(4)
    a, b = rng.uniform(0.4, 0.9, 20), rng.uniform(0.4, 0.9, 20)
    out = check_claims([Claim("a beats b", "a", "b", "Dice TC")], _claim_frame({"a": a, "b": b}, "Dice TC")).iloc[0]
    diff = a - b
    assert out["difference"] == pytest.approx(np.mean(diff)) and out["n"] == 20
    assert out["ours: better"] == pytest.approx(a.mean()) and out["ours: other"] == pytest.approx(b.mean())
    assert out["p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    low, high = out["95% CI"]
    assert low < np.mean(diff) < high and diff.min() <= low and high <= diff.max()
    # an independent percentile bootstrap of the mean, numpy only: the same interval up to resampling noise
    boot = rng.choice(diff, size=(20000, diff.size)).mean(axis=1)
    ref_low, ref_high = np.percentile(boot, [2.5, 97.5])
    width = ref_high - ref_low
    assert low == pytest.approx(ref_low, abs=0.05 * width) and high == pytest.approx(ref_high, abs=0.05 * width)


def test_claim_first_and_smallest_kinds():
    from brats_lib.claims import Claim, check_claims

    base = np.linspace(0.5, 0.8, 12)
    per = _claim_frame({"a": base + 0.1, "b": base + 0.05, "c": base})
    among = ("a", "b", "c")
    out = check_claims([Claim("a is first", "a", None, "Dice WT", kind="first", among=among),
                        Claim("c is first", "c", None, "Dice WT", kind="first", among=among),
                        Claim("b is first", "b", None, "Dice WT", kind="first", among=among)],
                       per.rename(columns={"Dice ET": "Dice WT"}))
    assert list(out.verdict) == ["holds", "contradicted", "contradicted"]
    assert out.loc[0, "compared"].startswith("a vs b") and out.loc[1, "compared"].startswith("c vs a")
    assert out.loc[0, "difference"] == pytest.approx(0.05)
    # HD95: the runner-up is the row with the lowest mean distance
    hd = _claim_frame({"a": 10 - 10 * base, "b": 12 - 10 * base, "c": 11 - 10 * base}, "HD95 WT")
    first = check_claims([Claim("a first in HD95", "a", None, "HD95 WT", kind="first", among=among)], hd).iloc[0]
    assert first["verdict"] == "holds" and first["compared"].startswith("a vs c")
    sizes = {"a": 1.5, "b": 2.0, "c": 1.5}
    out = check_claims([Claim("b fewest", "b", None, "params (M)", kind="smallest", among=("a", "b")),
                        Claim("a fewest", "a", None, "params (M)", kind="smallest", among=("a", "b")),
                        Claim("tie is not fewest", "a", None, "params (M)", kind="smallest", among=among),
                        Claim("no size", "a", None, "params (M)", kind="smallest", among=("a", "d"))],
                       per, sizes=sizes)
    assert list(out.verdict[:3]) == ["contradicted", "holds", "contradicted"] and out.verdict[3].startswith("n/a")
    assert out.loc[1, "n"] == out.loc[1, "p"] == out.loc[1, "95% CI"] == "exact"
    assert out.loc[1, "difference"] == pytest.approx(0.5)


def test_claim_on_a_missing_row_or_column_is_na_with_the_reason():
    from brats_lib.claims import Claim, check_claims

    per = _claim_frame({"a": [0.5, 0.6, 0.7], "b": [0.4, 0.5, 0.6]})
    out = check_claims([Claim("a beats ghost", "a", "ghost", "Dice ET"), Claim("a beats b on TC", "a", "b", "Dice TC"),
                        Claim("ghost first", "ghost", None, "Dice ET", kind="first", among=("a", "ghost"))], per)
    assert out.verdict[0] == "n/a: no per-case scores of ghost" and "Dice TC" in out.verdict[1]
    assert out.verdict[2].startswith("n/a") and (out.n == 0).all()


def test_claim_kind_is_validated():
    from brats_lib.claims import Claim

    with pytest.raises(ValueError, match="unknown kind"):
        Claim("x", "a", "b", "Dice ET", kind="best")
    with pytest.raises(ValueError, match="compared with"):
        Claim("x", "a", None, "Dice ET")
    with pytest.raises(ValueError, match="among"):
        Claim("x", "a", None, "Dice ET", kind="first", among=("b", "c"))


def test_claim_empty_region_flag_and_the_verdict_on_cases_with_the_region():
    from brats_lib.claims import Claim, check_claims

    # 12 cases, the first 4 without ET. "omnet" predicts no ET anywhere: Dice 1 on the ET-free
    # cases, 0 on the others; "cga" predicts ET everywhere: 0 on ET-free cases, about 0.7 elsewhere
    ref_et = [0] * 4 + [500] * 8
    cga = [0.0] * 4 + list(np.linspace(0.6, 0.8, 8))
    omnet = [1.0] * 4 + [0.0] * 8
    voxels = {"pred voxels ET": {"cga": [300] * 12, "omnet": [0] * 12},
              "ref voxels ET": {"cga": ref_et, "omnet": ref_et}}
    per = _claim_frame({"cga": cga, "omnet": omnet}, **voxels)
    out = check_claims([Claim("cga beats omnet on ET", "cga", "omnet", "Dice ET")], per).iloc[0]
    assert out["verdict"] == "not significant"  # the four ET-free cases (rank 9-12) outweigh eight wins
    assert ("omnet predicts no ET in any case: its Dice ET is 1 on the 4 ET-free cases by the empty-region rule"
            in out["empty-region rule"])
    assert "on the 8 cases with ET: holds" in out["empty-region rule"]
    # where every reference holds the region and both rows predict it: no flag
    per_all = _claim_frame({"cga": cga[4:], "omnet": [0.5] * 8},
                           **{"pred voxels ET": {"cga": [300] * 8, "omnet": [10] * 8},
                              "ref voxels ET": {"cga": [500] * 8, "omnet": [500] * 8}})
    assert check_claims([Claim("c", "cga", "omnet", "Dice ET")], per_all).loc[0, "empty-region rule"] == ""
    # without voxel counts the flag says so; a size claim is not concerned
    assert check_claims([Claim("c", "cga", "omnet", "Dice ET")], per[["row", "fold", "case", "Dice ET"]]).loc[
        0, "empty-region rule"] == "not checked (no voxel counts)"


def test_claim_regions_of_a_metric_and_lower_is_better():
    from brats_lib.claims import lower_is_better, regions_of

    assert regions_of("Dice ET") == ("ET",) and regions_of("HD95 WT") == ("WT",)
    assert regions_of("Dice mean") == regions_of("Hausdorff95 Average") == ("ET", "TC", "WT")
    assert regions_of("Dice NCR") == ("NCR",) and regions_of("Sensitivity ED") == ("ED",)
    assert regions_of("params (M)") == ()
    assert lower_is_better("HD95 ET") and lower_is_better("Hausdorff95 Average") and not lower_is_better("Dice TC")


def test_claim_table_formatting_and_explanation():
    from brats_lib.claims import COLUMNS, Claim, check_claims, explain, formatted

    base = np.linspace(0.5, 0.8, 8)
    per = _claim_frame({"a": base + 0.1, "b": base})
    out = check_claims([Claim("a beats b", "a", "b", "Dice ET", paper="+2.28 TC Dice")], per, alpha=0.01)
    assert list(out.columns) == COLUMNS and out.loc[0, "paper"] == "+2.28 TC Dice"
    shown = formatted(out)
    assert shown.loc[0, "95% CI"].startswith("[") and shown.loc[0, "difference"] == "0.1"
    text = explain(out)
    assert "p < 0.01" in text and "1 holds" in text and "0.00781" in text  # 2 / 2^8: the smallest p with 8 cases


def _claim_columns(module: str) -> set[str]:
    """The per-case columns each notebook builds for ``module`` (from the library's scorers)."""
    from brats_lib.papers.attention_r2unet_mtds import pipeline as AR
    from brats_lib.metrics import case_scores
    from brats_lib.papers.cross_modality import paper as CMP

    lab = np.zeros((6, 6, 6), np.uint8)
    lab[1:4, 1:4, 1:4] = L.ED
    lab[2, 2, 2] = L.ET
    lab[3, 3, 3] = L.NCR
    scores = set(case_scores(lab, lab))
    if module == "attention_r2unet_mtds":
        return set(AR.score_case(AR.reference_masks(lab), lab))
    if module == "cross_modality":
        return {c.replace("HD95", "Hausdorff95") for c in scores} | set(CMP.COLUMNS)
    return scores | {"Dice mean"}


def test_claim_lists_name_rows_and_columns_that_exist():
    from brats_lib.papers.attention_r2unet_mtds import pipeline as AR
    from brats_lib.papers.cross_modality import pipeline as CM
    from brats_lib.papers.hnfnetv2 import pipeline as HN
    from brats_lib.papers.omnet_cga import pipeline as OM
    from brats_lib.papers.optimized_unet import pipeline as OU
    from brats_lib.claims import Claim
    from brats_lib.papers.attention_r2unet_mtds import paper as ARP
    from brats_lib.papers.cross_modality import paper as CMP
    from brats_lib.papers.hnfnetv2 import paper as HNP
    from brats_lib.papers.omnet_cga import paper as OMP
    from brats_lib.papers.optimized_unet import paper as OUP

    rows = {"omnet_cga": {r.label for r in OM.TABLE1_ROWS}, "cross_modality": {r.label for r in CM.TABLE_ROWS},
            "hnfnetv2": set(HN.ROWS.values()), "attention_r2unet_mtds": set(AR.RUNS),
            "optimized_unet": set(OU.RUNS) | set(OUP.TABLE4_ROWS)}
    modules = {"omnet_cga": OMP, "cross_modality": CMP, "hnfnetv2": HNP, "attention_r2unet_mtds": ARP,
               "optimized_unet": OUP}
    for name, mod in modules.items():
        columns = _claim_columns(name)
        assert mod.CLAIMS and all(isinstance(c, Claim) for c in mod.CLAIMS), name
        for c in mod.CLAIMS:
            assert set(c.rows) <= rows[name], (name, c.text, set(c.rows) - rows[name])
            assert c.kind == "smallest" or c.metric in columns, (name, c.text, c.metric)
            assert c.source, (name, c.text)
    # the examples: each on the region and metric the paper names
    om = {(c.better, c.worse): c for c in OMP.CLAIMS if c.metric != "Dice WT"}
    assert om["OM-Net + CGA", "OM-Net"].metric == "Dice TC" and "2.28" in om["OM-Net + CGA", "OM-Net"].paper
    assert om["MC3", "MC2"].metric == "Dice ET" and ("MC2", "MC1") in om
    assert om["OM-Netp", "OM-Net"].metric == "Dice TC" and "2.6" in om["OM-Netp", "OM-Net"].paper
    six = [c for c in ARP.CLAIMS if "Table 6" in c.source]
    assert {c.metric for c in six if c.kind == "first"} == {"Dice WT", "Sensitivity WT", "Specificity WT", "HD95 WT"}
    assert [c.kind for c in six].count("smallest") == 1
    four = {(c.kind, c.metric) for c in ARP.CLAIMS if "Table 4" in c.source}
    assert ("first", "HD95 WT") in four and ("paired", "Sensitivity WT") in four
    assert {c.metric for c in HNP.CLAIMS} == {"Dice mean", "Dice ET", "Dice TC", "Dice WT"}
    assert any(c.metric == "Dice ET" for c in OUP.CLAIMS)  # post-processing acts on ET


def test_claim_voxel_counts_of_case_scores_match_numpy():
    from brats_lib import metrics as M

    rng = np.random.default_rng(1)
    pred, ref = rng.integers(0, 4, (12, 10, 8)).astype(np.uint8), rng.integers(0, 4, (12, 10, 8)).astype(np.uint8)
    pred[pred == L.ET] = L.NCR  # a prediction without ET
    s = M.case_scores(pred, ref, (1.0, 1.0, 2.0))
    for r, labels in {"ET": [3], "TC": [1, 3], "WT": [1, 2, 3]}.items():
        assert s[f"pred voxels {r}"] == np.isin(pred, labels).sum()
        assert s[f"ref voxels {r}"] == np.isin(ref, labels).sum()
        assert isinstance(s[f"pred voxels {r}"], int)
    assert s["pred voxels ET"] == 0 and s["Dice ET"] == 0.0
    full = M.evaluate_labels(pred, ref, (1.0, 1.0, 2.0))
    assert all(s[f"{m} {r}"] == full[r][m] for r in L.REGIONS for m in M.METRICS)
    assert len(s) == len(L.REGIONS) * (len(M.METRICS) + 2)


def test_claim_cells_of_the_notebooks_use_the_one_checker():
    tables = {"omnet_cga": "table1_claims", "hnfnetv2": "table1_claims", "cross_modality": "claims",
              "attention_r2unet_mtds": "claims", "optimized_unet": "claims"}
    for name, table in tables.items():
        cells = json.loads(REPO.joinpath("notebooks", f"{name}.ipynb").read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        claim_cells = [s for s in code if "CL.check_claims(" in s]
        assert len(claim_cells) == 1 and f'"{table}"' in claim_cells[0] and "CL.explain(" in claim_cells[0], name
        ast.parse(claim_cells[0])  # the cell is valid Python
        assert not any("evaluate_labels" in s for s in code if "per_case.append" in s), name
