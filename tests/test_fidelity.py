"""Fidelity to the papers: one test per finding of the line-by-line audit, each checked
against an independent formula or the paper's own words, never against the code itself."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from brats_lib import labels as L
from brats_lib import params
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
    from brats_lib import optimized_unet as OU
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
    from brats_lib import hnfnetv2 as HN
    from brats_lib.training import lr_curve

    p = dataclasses.replace(params.load("hnfnetv2", "test"), epochs=10, warmup_epochs=2, lr=1.0)
    curve = lr_curve(HN.train_config(p), 3)
    for e in range(10):  # the paper's lr0 (1 - e / E)^0.9 after a linear warm-up, per epoch
        want = (e + 1) / 2 if e < 2 else (1 - e / 10) ** 0.9
        assert np.allclose(curve[3 * e: 3 * e + 3], want)


# ------------------------------------------------------------------ OM-Net
def test_task3_patches_are_half_of_the_others_for_the_cascade(monkeypatch):
    from brats_lib import omnet_cga as OM
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
    from brats_lib import omnet_cga as OM

    t = OM.paper_table1()
    assert t.loc["OM-Net + CGA", "Dice TC"] == pytest.approx(82.15)
    assert t.loc["OM-Net + CGA", "Dice ET"] == pytest.approx(80.73)
    assert t.loc["OM-Netp", "Dice TC"] == pytest.approx(82.47)
    assert t.loc["OM-Netp", "Params (M)"] == pytest.approx(13.869)
    import pandas as pd

    none_moved = pd.DataFrame([{"task 1": 1.0}, {"task 1": 0.9, "transferred to task 2": 0}])
    assert sum(OM.transfer_counts(none_moved).values()) == 0


# ------------------------------------------------------------------ cross-modality
def test_attention_residual_form_is_the_same_for_mask_guidance_and_cbam():
    from brats_lib.models.cross_modality import FusionBranch

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


def test_comparison_selection_uses_inner_training_cases_only(monkeypatch):
    from brats_lib import comparison as C

    seen = {}

    def fake(m, k, train, select, p, out, device):
        seen["train"], seen["select"] = [c.case_id for c in train], [c.case_id for c in select]
        return C.Fitted(m, lambda lc: np.zeros((1, 1)), lambda pr, lc: pr, [], [], [], 0.0, 0.0)

    monkeypatch.setitem(C.TRAINERS, "optimized_unet", fake)
    train_cases = _tiny_cases(5)
    C.train(C.METHODS["Optimized U-Net"], 0, train_cases, None, "/tmp/unused", selection_fraction=0.2, seed=0)
    assert len(seen["select"]) == 1 and len(seen["train"]) == 4
    assert set(seen["select"]) | set(seen["train"]) == {c.case_id for c in train_cases}
    assert not set(seen["select"]) & set(seen["train"])
    import inspect

    assert "val_cases" not in inspect.signature(C.train).parameters  # the scored cases cannot be passed in


def test_comparison_tta_one_code_path_flips_the_whole_volume():
    from brats_lib import comparison as C

    lc = _tiny_cases(1)[0]
    calls = []

    def probs(case):  # a voxel-wise "method": flipping its input flips its output, nothing else
        calls.append(case.image.copy())
        return 1 / (1 + np.exp(-case.image[:2]))

    avg = C.flip_average(probs, lc, 8)
    # independent: for a voxel-wise map every flip, undone, gives the unflipped map back
    assert len(calls) == 8 and np.allclose(avg, 1 / (1 + np.exp(-lc.image[:2])), atol=1e-6)
    flipped = {tuple(np.argwhere(c[0] == lc.image[0].max())[0]) for c in calls}
    assert len(flipped) == 8  # eight different orientations were seen
    fitted = C.Fitted(C.METHODS["3D U-Net"], lambda case: case.image[:1], lambda pr, case: (pr[0] > 0).astype(np.uint8),
                      [], [], [], 0.0, 0.0)
    assert np.array_equal(fitted.predict(lc, 8), (lc.image[0] > 0).astype(np.uint8))  # flips undone exactly


def test_comparison_macs_count_every_forward_pass_with_overlap_and_flips():
    from brats_lib import comparison as C
    from brats_lib.complexity import forward_macs
    from brats_lib.inference import sliding_window_probabilities

    torch.manual_seed(0)
    net = torch.nn.Conv3d(4, 3, 3, padding=1).eval()
    lc = _tiny_cases(1)[0]
    roi = (8, 8, 8)

    def probs(case):
        x = torch.from_numpy(case.image)[None]
        return sliding_window_probabilities(net, x, roi, overlap=0.5, sw_batch_size=1)[0].numpy()

    fitted = C.Fitted(C.METHODS["3D U-Net"], probs, lambda pr, case: pr.argmax(0), [net], [(4, *roi)],
                      [int(np.prod(roi))], 0.0, 0.0)
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
