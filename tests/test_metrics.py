import numpy as np
import pytest
from medpy.metric import binary as mb

from brats_lib import labels as L
from brats_lib import metrics as M
from brats_lib.data import discover_cases, read_label_file
from brats_lib.phantoms import make_phantom
from conftest import REAL, REAL_CASES, real


def test_empty_rules():
    z = np.zeros((5, 5, 5), bool)
    one = z.copy()
    one[2, 2, 2] = True
    both = M.binary_metrics(z, z)
    assert both == {"Dice": 1.0, "HD95": 0.0, "Sensitivity": 1.0, "Specificity": 1.0, "PPV": 1.0}
    fp = M.binary_metrics(one, z)
    assert fp["Dice"] == 0.0 and fp["HD95"] == M.HD95_EMPTY == 373.13 and fp["Sensitivity"] == 0.0
    fn = M.binary_metrics(z, one)
    assert fn["Dice"] == 0.0 and fn["HD95"] == 373.13 and fn["PPV"] == 0.0 and fn["Specificity"] == 1.0


def test_confusion_based_metrics():
    ref = np.zeros((10, 10, 10), bool)
    ref[2:6, 2:6, 2:6] = True  # 64
    pred = np.zeros_like(ref)
    pred[3:7, 2:6, 2:6] = True  # 64, overlap 48
    m = M.binary_metrics(pred, ref)
    assert m["Dice"] == pytest.approx(2 * 48 / 128)
    assert m["Sensitivity"] == pytest.approx(48 / 64) and m["PPV"] == pytest.approx(48 / 64)
    assert m["Specificity"] == pytest.approx((1000 - 80) / (1000 - 64))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.2, 3.0)])
def test_hd95_equals_medpy_on_phantoms(spacing):
    for seed in range(3):
        _, ref, _ = make_phantom(seed, (48, 48, 48))
        _, other, _ = make_phantom(seed + 100, (48, 48, 48))
        # a plausible prediction: reference with another phantom's errors mixed in
        pred = np.where(other > 0, other, ref)
        for r in L.REGIONS:
            p, q = L.region_mask(pred, r), L.region_mask(ref, r)
            if p.any() and q.any():
                assert M.hd95(p, q, spacing) == pytest.approx(mb.hd95(p, q, voxelspacing=spacing), abs=1e-6)
                assert M.dice(p, q) == pytest.approx(mb.dc(p, q), abs=1e-12)


def test_masks_touching_the_array_edge_match_medpy():
    ref = np.zeros((12, 12, 12), bool)
    ref[0:5, 0:12, 3:9] = True
    pred = np.zeros_like(ref)
    pred[0:7, 1:12, 2:8] = True
    assert M.hd95(pred, ref) == pytest.approx(mb.hd95(pred, ref), abs=1e-9)


@real
@pytest.mark.parametrize("case", REAL_CASES)
def test_hd95_and_dice_equal_medpy_on_real_algorithm_outputs(case):
    folder = REAL / case
    ref, img = read_label_file(folder / f"{case}_seg.nii.gz")
    spacing = img.header.get_zooms()[:3]
    algos = sorted((folder / "algorithms").glob("*.nii.gz"))
    assert algos
    for f in algos:
        pred, _ = read_label_file(f)
        res = M.evaluate_labels(pred, ref, spacing)
        for r in L.REGIONS:
            p, q = L.region_mask(pred, r), L.region_mask(ref, r)
            if p.any() and q.any():
                assert res[r]["HD95"] == pytest.approx(mb.hd95(p, q, voxelspacing=spacing), abs=1e-6), (f.name, r)
                assert res[r]["Dice"] == pytest.approx(mb.dc(p, q), abs=1e-6)
                assert res[r]["Sensitivity"] == pytest.approx(mb.sensitivity(p, q), abs=1e-6)
                assert res[r]["Specificity"] == pytest.approx(mb.specificity(p, q), abs=1e-6)
                assert res[r]["PPV"] == pytest.approx(mb.precision(p, q), abs=1e-6)


@real
def test_prediction_with_et_where_reference_has_none():
    """TCGA-DU-7294 has no ET; an algorithm that predicts a few ET voxels scores 0 / 373.13."""
    folder = REAL / "TCGA-DU-7294"
    ref, _ = read_label_file(folder / "TCGA-DU-7294_seg.nii.gz")
    assert not (ref == L.ET).any()
    seen = []
    for f in sorted((folder / "algorithms").glob("*.nii.gz")):
        pred, _ = read_label_file(f)
        m = M.evaluate_labels(pred, ref)["ET"]
        seen.append((pred == L.ET).any())
        assert (m["Dice"], m["HD95"]) == ((0.0, 373.13) if (pred == L.ET).any() else (1.0, 0.0))
    assert any(seen) and not all(seen)


def test_summary_rows():
    df = M.to_frame({f"c{i}": M.evaluate_labels(np.full((4, 4, 4), i % 4, np.uint8), np.full((4, 4, 4), 3, np.uint8))
                     for i in range(4)})
    assert list(df.columns[:3]) == ["Dice_ET", "Dice_TC", "Dice_WT"]
    full = M.with_summary(df)
    assert list(full.index[-5:]) == ["Mean", "StdDev", "Median", "25quantile", "75quantile"]
    assert full.loc["Mean", "Dice_WT"] == pytest.approx(0.75)
