import numpy as np
import pytest

from brats_lib import labels as L


def test_brats2021_roundtrip_and_regions():
    disk = np.array([0, 1, 2, 4, 4, 2])
    canon = L.to_canonical(disk, "brats2021")
    assert canon.tolist() == [0, 1, 2, 3, 3, 2]
    assert L.from_canonical(canon, "brats2021").tolist() == disk.tolist()
    assert L.region_mask(canon, "WT").tolist() == [False, True, True, True, True, True]
    assert L.region_mask(canon, "TC").tolist() == [False, True, False, True, True, False]
    assert L.region_mask(canon, "ET").tolist() == [False, False, False, True, True, False]


def test_msd_and_2023_conventions():
    # MSD: 1 ED, 2 NET, 3 ET
    assert L.to_canonical(np.array([0, 1, 2, 3]), "msd").tolist() == [0, L.ED, L.NCR, L.ET]
    assert L.to_canonical(np.array([0, 1, 2, 3]), "brats2023").tolist() == [0, L.NCR, L.ED, L.ET]
    assert L.from_canonical(np.array([0, 1, 2, 3]), "msd").tolist() == [0, 2, 1, 3]


def test_2023_map_read_as_2021_is_an_error():
    with pytest.raises(L.LabelError, match=r"\[3\].*brats2021"):
        L.to_canonical(np.array([0, 1, 2, 3]), "brats2021", source="case X")


def test_unknown_convention():
    with pytest.raises(ValueError, match="unknown label convention"):
        L.to_canonical(np.zeros(3), "brats2019")


def test_regions_to_labels_inverts_labels_to_regions():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, size=(6, 7, 8)).astype(np.uint8)
    assert np.array_equal(L.regions_to_labels(L.labels_to_regions(lab)), lab)


def test_regions_to_labels_et_wins_where_regions_disagree():
    regions = np.zeros((3, 1, 1, 2), bool)
    regions[2, 0, 0, 0] = True  # ET predicted outside WT and TC
    assert L.regions_to_labels(regions)[0, 0].tolist() == [L.ET, 0]
