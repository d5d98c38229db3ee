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


def _to_canonical_by_sorting(label, convention):
    """An independent reference: np.unique over the values, then a dict lookup per value."""
    mapping = L.CONVENTIONS[convention]
    values, inverse = np.unique(np.asarray(label).astype(np.int64), return_inverse=True)
    unknown = [v for v in values.tolist() if v not in mapping]
    if unknown:
        return unknown
    return np.array([mapping[v] for v in values.tolist()], np.uint8)[inverse.reshape(np.shape(label))]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("convention", sorted(L.CONVENTIONS))
def test_lookup_conversion_equals_a_sort_based_one(dtype, convention):
    rng = np.random.default_rng(1)
    keys = np.array(sorted(L.CONVENTIONS[convention]))
    label = keys[rng.integers(0, len(keys), size=(9, 8, 7))].astype(dtype)
    ours = L.to_canonical(label, convention)
    assert ours.dtype == np.uint8 and np.array_equal(ours, _to_canonical_by_sorting(label, convention))


@pytest.mark.parametrize("bad, dtype", [(3, np.uint8), (-1, np.int16), (300, np.int32), (255, np.uint8),
                                        (7, np.float64), (70000, np.int64)])
def test_lookup_conversion_names_every_unknown_value(bad, dtype):
    label = np.array([0, 1, 2, 4, bad, bad], dtype=dtype)
    with pytest.raises(L.LabelError, match=rf"case Y: label values \[{bad}\] are not in the brats2021"):
        L.to_canonical(label, "brats2021", source="case Y")
    assert _to_canonical_by_sorting(label, "brats2021") == [bad]


def test_lookup_conversion_of_empty_and_boolean_maps():
    assert L.to_canonical(np.zeros((0, 3), np.uint8), "brats2021").shape == (0, 3)
    assert L.to_canonical(np.array([True, False]), "brats2021").tolist() == [L.NCR, 0]
