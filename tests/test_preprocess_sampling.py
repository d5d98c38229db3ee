import json

import numpy as np
import pytest

from brats_lib import preprocess as P
from brats_lib import sampling as S
from brats_lib.phantoms import make_phantom


@pytest.fixture(scope="module")
def case():
    image, label, _ = make_phantom(1, (48, 48, 48), kind="gbm")
    return image, label


def test_crop_uncrop_roundtrip(case):
    image, label = case
    img, lab, box = P.crop_to_brain(image, label)
    assert img.shape[1:] == lab.shape == box.shape and np.prod(box.shape) < np.prod(label.shape)
    assert np.array_equal(P.uncrop(lab, box), label)
    prob = P.uncrop(np.ones((3,) + box.shape, np.float32), box, fill=0.0)
    assert prob.shape == (3,) + label.shape and prob[:, 0, 0, 0].tolist() == [0, 0, 0]


def test_brain_mask_is_union_of_modalities():
    image = np.zeros((4, 3, 3, 3))
    image[0, 0, 0, 0] = -5.0  # negative interpolation artefact in one modality only
    image[3, 1, 1, 1] = 2.0
    assert P.brain_mask(image).sum() == 2


def test_zscore_and_minmax(case):
    image, _ = case
    mask = P.brain_mask(image)
    z = P.zscore(image)
    for c in range(4):
        assert abs(z[c][mask].mean()) < 1e-4 and abs(z[c][mask].std() - 1) < 1e-3
    assert not z[:, ~mask].any()
    zc = P.zscore(image, clip_percentiles=(0.5, 99.5))
    assert zc[0][mask].max() < z[0][mask].max() + 1e-6
    mm = P.minmax(image)
    assert mm[:, mask].min() == 0.0 and mm[:, mask].max() == 1.0


def test_foreground_channel(case):
    image, _ = case
    fg = P.foreground_channel(image)
    assert fg.shape == (1,) + image.shape[1:] and fg.sum() == P.brain_mask(image).sum()
    with pytest.raises(ValueError, match="unknown foreground mode"):
        P.foreground_channel(image, "bogus")


def test_patches_deterministic_and_foreground_biased(case):
    image, label = case
    ds = S.PatchDataset([(image, label)], (16, 16, 16), samples_per_epoch=20, fg_prob=1.0, seed=4)
    x0, y0 = ds[3]
    x1, y1 = ds[3]
    assert x0.shape == (4, 16, 16, 16) and y0.shape == (3, 16, 16, 16)
    assert np.array_equal(x0, x1) and np.array_equal(y0, y1)
    assert all(ds[i][1][0].any() for i in range(20))  # every patch holds whole tumour
    ds.set_epoch(1)
    assert not np.array_equal(ds[3][0], x0)


def test_patch_larger_than_volume_is_padded(case):
    image, label = case
    img, lab = S.random_patch(image[:, :10], label[:10], (16, 16, 16), np.random.default_rng(0))
    assert img.shape == (4, 16, 16, 16) and lab.shape == (16, 16, 16)


def test_slice_dataset(case):
    image, label = case
    ds = S.SliceDataset([(image, label)], crop=(32, 40), target="labels")
    x, y = ds[0]
    assert x.shape == (4, 32, 40) and y.shape == (32, 40) and y.dtype.is_floating_point is False
    assert len(ds) == int(np.any(image != 0, axis=(0, 1, 2)).sum())


def test_extended_splits_keep_every_old_case_in_its_fold():
    old = S.make_splits([f"c{i:02d}" for i in range(12)], 3, seed=0)
    new_ids = [f"c{i:02d}" for i in range(12, 24)]
    grown = S.extend_splits(old, new_ids, seed=0)
    assert len(grown) == 3
    assert sorted(sum((f["val"] for f in grown), [])) == sorted([*sum((f["val"] for f in old), []), *new_ids])
    for f, g in zip(old, grown):
        assert set(f["val"]) <= set(g["val"]) and set(f["train"]) <= set(g["train"])
        assert not set(g["train"]) & set(g["val"]) and len(g["train"]) + len(g["val"]) == 24
        assert len(g["val"]) == 8
    with pytest.raises(ValueError, match="already in the splits"):
        S.extend_splits(old, ["c03", "c30"])


def test_splits_fixed_and_disjoint(tmp_path):
    ids = [f"c{i}" for i in range(11)]
    splits = S.make_splits(ids, 5, seed=0)
    assert sorted(sum((f["val"] for f in splits), [])) == sorted(ids)
    for f in splits:
        assert not set(f["train"]) & set(f["val"]) and len(f["train"]) + len(f["val"]) == 11
    path = tmp_path / "splits.json"
    assert S.load_or_create_splits(path, ids, 5) == splits
    assert json.loads(path.read_text()) == splits
    assert S.load_or_create_splits(path, ids, 5) == splits  # read back, not regenerated
    with pytest.raises(ValueError, match="folds over"):
        S.load_or_create_splits(path, ids[:-1], 5)
