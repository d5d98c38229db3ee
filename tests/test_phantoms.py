import numpy as np
import pytest

from brats_lib import labels as L
from brats_lib.phantoms import KINDS, contrast_stats, make_phantom
from conftest import REAL, real


def test_deterministic_and_seed_dependent():
    a, la, ka = make_phantom(5, (40, 40, 40))
    b, lb, kb = make_phantom(5, (40, 40, 40))
    c, lc, _ = make_phantom(6, (40, 40, 40))
    assert np.array_equal(a, b) and np.array_equal(la, lb) and ka == kb
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", KINDS)
def test_kinds_nested_and_inside_brain(kind):
    image, label, k = make_phantom(11, (64, 64, 64), kind=kind)
    assert k == kind
    brain = np.any(image != 0, axis=0)
    assert (label > 0).any() and not (label[~brain] > 0).any()
    if kind == "no_et":
        assert not (label == L.ET).any() and (label == L.NCR).any()
    else:
        assert (label == L.ET).any()
    # oedema surrounds the core: the core is not on the tumour's outer surface everywhere
    assert (label == L.ED).sum() > (label == L.NCR).sum()


def test_case_mix_has_every_kind():
    kinds = {make_phantom(s, (32, 32, 32))[2] for s in range(40)}
    assert kinds == set(KINDS)


def test_contrasts_calibrated_like_real_brats():
    """FLAIR in WT about +1.9..2.6 SD and T1ce in ET about +1.2..1.6 SD above healthy
    brain on real cases; phantoms must land near these numbers on average."""
    flair, t1ce_et, t1ce_ncr = [], [], []
    for s in range(8):
        image, label, kind = make_phantom(s, (96, 96, 96), kind="gbm")
        st = contrast_stats(image, label)
        flair.append(st["flair"]["WT"])
        t1ce_et.append(st["t1ce"]["ET"])
        t1ce_ncr.append(st["t1ce"]["NCR"])
    assert 1.7 <= np.mean(flair) <= 2.8
    assert 1.0 <= np.mean(t1ce_et) <= 2.0
    assert np.mean(t1ce_ncr) < 0.3 < np.mean(t1ce_et)  # necrosis dark, rim bright in T1ce


@real
def test_contrast_stats_on_real_cases_match_the_design_numbers():
    from brats_lib.data import discover_cases, load_case

    lc = load_case([c for c in discover_cases(REAL) if c.case_id == "TCGA-FG-6692"][0])
    st = contrast_stats(lc.image, lc.label)
    assert 1.8 <= st["flair"]["WT"] <= 2.7
    assert 1.2 <= st["t1ce"]["ET"] <= 1.7
