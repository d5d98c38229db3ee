"""Discovery of every supported layout, loading, and the bad-input errors."""
import dataclasses
import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from brats_lib import data as D
from brats_lib import labels as L
from conftest import REAL, real, save


def test_discover_brats2021_phantoms(phantom_root):
    cases = D.discover_cases(phantom_root)
    assert [c.case_id for c in cases] == [f"Phantom_{i:05d}" for i in range(4)]
    assert all(c.layout == "brats2021" and c.label is not None for c in cases)
    lc = D.load_case(cases[0])
    assert lc.image.shape == (4, 40, 40, 40) and lc.image.dtype == np.float32
    assert set(np.unique(lc.label)) <= {0, 1, 2, 3}
    assert lc.spacing == (1.0, 1.0, 1.0)


def test_brats2023_layout(phantom_root, tmp_path):
    src = D.discover_cases(phantom_root)[0]
    lc = D.load_case(src)
    cid = "BraTS-GLI-00000-000"
    folder = tmp_path / cid
    folder.mkdir()
    for m, suffix in zip(D.MODALITIES, ("t1n", "t1c", "t2w", "t2f")):
        save(folder / f"{cid}-{suffix}.nii.gz", lc.image[D.MODALITIES.index(m)].astype(np.int16), lc.affine)
    save(folder / f"{cid}-seg.nii.gz", L.from_canonical(lc.label, "brats2023"), lc.affine)
    cases = D.discover_cases(tmp_path)
    assert cases[0].layout == "brats2023" and cases[0].case_id == cid
    got = D.load_case(cases[0])
    assert np.array_equal(got.label, lc.label) and np.array_equal(got.image, lc.image)


def test_msd_layout(phantom_root, tmp_path):
    lc = D.load_case(D.discover_cases(phantom_root)[0])
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    # MSD channel order: FLAIR, T1w, T1gd, T2w
    order = [D.MODALITIES.index(m) for m in ("flair", "t1", "t1ce", "t2")]
    save(tmp_path / "imagesTr" / "BRATS_001.nii.gz", np.moveaxis(lc.image[order], 0, -1), lc.affine)
    save(tmp_path / "labelsTr" / "BRATS_001.nii.gz", L.from_canonical(lc.label, "msd"), lc.affine)
    cases = D.discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BRATS_001"] and cases[0].layout == "msd"
    got = D.load_case(cases[0])
    assert np.array_equal(got.image, lc.image) and np.array_equal(got.label, lc.label)


def _case(root):
    return D.discover_cases(root)[0]


def test_missing_modality_names_case_and_file(phantom_copy):
    (phantom_copy / "Phantom_00000" / "Phantom_00000_t2.nii.gz").unlink()
    with pytest.raises(D.CaseError, match=r"Phantom_00000.*Phantom_00000_t2\.nii\.gz.*modality t2 is missing"):
        D.discover_cases(phantom_copy)


def _replace(case_dir, name, array, affine=None):
    path = case_dir / name
    ref = nib.load(str(path))
    save(path, array, ref.affine if affine is None else affine)
    return path


@pytest.mark.parametrize("problem, make, message", [
    ("shape", lambda a: a[:-1], "shape .* differs"),
    ("4d", lambda a: np.stack([a, a], -1), "must be a 3D image"),
    ("nan", lambda a: np.where(a > 0, np.nan, 0).astype(np.float32), "NaN or Inf"),
    ("zero", lambda a: np.zeros_like(a), "all zero"),
])
def test_bad_modality(phantom_copy, problem, make, message):
    folder = phantom_copy / "Phantom_00001"
    arr = np.asarray(nib.load(str(folder / "Phantom_00001_flair.nii.gz")).dataobj).astype(np.float32)
    _replace(folder, "Phantom_00001_flair.nii.gz", make(arr))
    case = [c for c in D.discover_cases(phantom_copy) if c.case_id == "Phantom_00001"][0]
    with pytest.raises(D.CaseError, match=rf"case Phantom_00001 \(.*Phantom_00001_flair\.nii\.gz\): .*{message}"):
        D.load_case(case)


def test_affine_mismatch(phantom_copy):
    folder = phantom_copy / "Phantom_00000"
    path = folder / "Phantom_00000_t1ce.nii.gz"
    img = nib.load(str(path))
    aff = img.affine.copy()
    aff[0, 3] += 2.0
    save(path, np.asarray(img.dataobj), aff)
    with pytest.raises(D.CaseError, match=r"Phantom_00000_t1ce.*affine differs"):
        D.load_case(_case(phantom_copy))


def test_unknown_label_values(phantom_copy):
    folder = phantom_copy / "Phantom_00000"
    seg = np.asarray(nib.load(str(folder / "Phantom_00000_seg.nii.gz")).dataobj).copy()
    seg[seg == 4] = 3  # a BraTS 2023 map in a BraTS 2021 folder
    seg[0, 0, 0] = 3
    _replace(folder, "Phantom_00000_seg.nii.gz", seg)
    with pytest.raises(D.CaseError, match=r"Phantom_00000_seg\.nii\.gz.*\[3\].*brats2021"):
        D.load_case(_case(phantom_copy))


def test_corrupt_and_truncated_gzip(phantom_copy):
    path = phantom_copy / "Phantom_00000" / "Phantom_00000_t1.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(D.CaseError, match=r"Phantom_00000_t1\.nii\.gz.*cannot read"):
        D.load_case(_case(phantom_copy))
    path.write_bytes(b"not a nifti file at all")
    with pytest.raises(D.CaseError, match="cannot read"):
        D.load_case(_case(phantom_copy))


def test_stray_files_are_listed_not_fatal(phantom_copy):
    folder = phantom_copy / "Phantom_00000"
    (folder / "notes.txt").write_text("x")
    shutil.copy(folder / "Phantom_00000_t1.nii.gz", folder / "Phantom_00000_t1_backup.nii.gz")
    case = _case(phantom_copy)
    assert sorted(p.name for p in case.extra_files) == ["Phantom_00000_t1_backup.nii.gz", "notes.txt"]
    D.load_case(case)


def test_duplicate_case_ids(phantom_copy):
    (phantom_copy / "batch2").mkdir()
    shutil.copytree(phantom_copy / "Phantom_00002", phantom_copy / "batch2" / "Phantom_00002")
    with pytest.raises(D.CaseError, match="Phantom_00002.*duplicate case id"):
        D.discover_cases(phantom_copy)


def test_empty_label_map_is_valid(phantom_copy):
    folder = phantom_copy / "Phantom_00000"
    seg = np.asarray(nib.load(str(folder / "Phantom_00000_seg.nii.gz")).dataobj)
    _replace(folder, "Phantom_00000_seg.nii.gz", np.zeros_like(seg))
    assert not D.load_case(_case(phantom_copy)).label.any()


def test_open_source_missing_real_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="needs a real BraTS folder"):
        D.open_source(tmp_path / "nope", 0)


@real
def test_real_cases_load_despite_negative_values_and_mask_differences():
    cases = D.discover_cases(REAL)
    assert {c.case_id for c in cases} >= {"TCGA-DU-7294", "TCGA-FG-6692"}
    for c in cases:
        lc = D.load_case(c)
        assert lc.image.shape == (4, 240, 240, 155)
        assert lc.image.min() < 0  # interpolation artefacts are tolerated
        masks = lc.image != 0
        assert (masks.any(0) ^ masks.all(0)).sum() > 0  # per-modality brain masks differ
    du = D.load_case([c for c in cases if c.case_id == "TCGA-DU-7294"][0])
    assert not (du.label == L.ET).any() and (du.label == L.NCR).sum() == 9281


def _cube_case(shape=(40, 40, 30), affine=None):
    image = np.zeros((4,) + shape, np.float32)
    label = np.zeros(shape, np.uint8)
    image[:, 4:36, 4:36, 2:28] = 5.0  # a constant "brain"
    label[10:22, 10:22, 8:20] = L.ED
    image[1][label > 0] = 9.0
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) if affine is None else affine
    affine[:3, 3] = [39.0, 20.0, -7.0]
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_zooms(tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3)))
    return D.LoadedCase("cube", image, label, affine, header, header.get_zooms()[:3])


def test_resample_case_to_a_coarser_voxel_keeps_geometry_volumes_and_values():
    lc = _cube_case()
    small = D.resample_case(lc, 2.0)
    assert small.image.shape == (4, 20, 20, 15) and small.label.shape == (20, 20, 15)
    assert small.spacing == (2.0, 2.0, 2.0) and small.header.get_zooms()[:3] == (2.0, 2.0, 2.0)
    # output voxel j covers input voxels 2j and 2j + 1: its centre is their midpoint, in world mm
    for j in [(0, 0, 0), (7, 3, 11)]:
        world = small.affine @ [*j, 1]
        expected = lc.affine @ [2 * j[0] + 0.5, 2 * j[1] + 0.5, 2 * j[2] + 0.5, 1]
        assert np.allclose(world, expected)
    assert (small.label == L.ED).sum() * 8 == (lc.label == L.ED).sum()  # a 12^3 cube on the 2-voxel grid
    assert small.image[0, 10, 10, 7] == pytest.approx(5.0) and small.image[1, 8, 8, 7] == pytest.approx(9.0)
    assert small.image.dtype == np.float32 and small.label.dtype == np.uint8
    assert D.resample_case(lc, 1.0).image.shape == lc.image.shape  # the same spacing changes nothing
    with pytest.raises(ValueError, match="cube: spacing must be positive"):
        D.resample_case(lc, 0.0)


@real
def test_real_cases_resampled_to_the_phantoms_scale_keep_their_regions():
    lc = D.load_case([c for c in D.discover_cases(REAL) if c.case_id == "TCGA-FG-6692"][0])
    small = D.resample_case(lc, 4.0)
    assert small.image.shape == (4, 60, 60, 39)
    for r in L.REGIONS:  # the tumour's volume in ml is kept within 15 %
        ml = L.region_mask(lc.label, r).sum() / 1000.0
        assert L.region_mask(small.label, r).sum() * np.prod(small.spacing) / 1000.0 == pytest.approx(ml, rel=0.15)


@pytest.mark.parametrize("cid", ["BraTS20_Training_001", "Brats18_2013_2_1", "BraTS2021_00000"])
def test_brats_2018_to_2021_naming(phantom_root, tmp_path, cid):
    src = phantom_root / "Phantom_00000"
    dst = tmp_path / "MICCAI_BraTS_TrainingData" / cid  # nested one level, as the archives are
    dst.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name.replace("Phantom_00000", cid))
    cases = D.discover_cases(tmp_path)
    assert [c.case_id for c in cases] == [cid] and cases[0].convention == "brats2021"
    assert np.array_equal(D.load_case(cases[0]).label, D.load_case(_case(phantom_root)).label)


def test_session_real_cases_are_the_first_real_cases_resampled_to_the_profiles_spacing(phantom_root, tmp_path, capsys):
    from brats_lib.app import session

    s = session.start("hnfnetv2", "test", output_dir=tmp_path / "out",
                      overrides={"real_dir": str(phantom_root), "real_cases": 2, "real_spacing": 2.0})
    cases = s.real_cases()
    found = D.discover_cases(phantom_root)
    assert [lc.case_id for lc in cases] == [c.case_id for c in found[:2]]
    assert all(lc.image.shape == (4, 20, 20, 20) and lc.spacing == (2.0, 2.0, 2.0) for lc in cases)
    assert "resampled to 20x20x20 at 2 mm" in capsys.readouterr().out
    s.p = dataclasses.replace(s.p, real_cases=1, real_spacing=None)
    assert [lc.image.shape for lc in s.real_cases()] == [(4, 40, 40, 40)]  # as they are
    s = session.start("hnfnetv2", "test", output_dir=tmp_path / "out", overrides={"real_dir": str(tmp_path / "none")})
    assert s.real_cases() == []
