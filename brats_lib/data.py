"""Find, load and validate BraTS cases.

A :class:`Case` is one patient: four modality images (always in the order
``MODALITIES`` = T1, T1ce, T2, FLAIR inside the library) and an optional label map.
:func:`discover_cases` understands the published layouts:

==============  =================================================  =============
layout          files                                              labels
==============  =================================================  =============
``brats2021``   ``<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz``        ``brats2021``
                (BraTS 2018-2021; ``BraTS20_Training_001``,
                ``BraTS2021_00000``, phantoms)
``brats2023``   ``<id>/<id>-{t1n,t1c,t2w,t2f,seg}.nii.gz``          ``brats2023``
``msd``         ``imagesTr/<id>.nii.gz`` (4D: FLAIR, T1w, T1gd,    ``msd``
                T2w) and ``labelsTr/<id>.nii.gz``
``flat``        ``<id>.nii.gz`` label maps only (predictions,      given
                the BraTS submission convention)
==============  =================================================  =============

:func:`load_case` reads a case with nibabel, checks it (four 3D modalities of one
shape and affine, finite, not empty, label values known to the convention) and
converts its labels to the canonical form of :mod:`brats_lib.labels`. Every
problem raises :class:`CaseError`, whose message names the case and the file.
"""
from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from . import labels as L

MODALITIES = L.MODALITIES

#: per layout: modality -> file suffix (joined to the case id by the separator)
_SUFFIXES = {
    "brats2021": ("_", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"}),
    "brats2023": ("-", {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}),
}
#: MSD Task01 channel order of the 4D image -> our modality order
_MSD_CHANNELS = {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
_NII = re.compile(r"\.nii(\.gz)?$")
AFFINE_TOLERANCE = 1e-3


class CaseError(ValueError):
    """A case cannot be used; the message names the case and the file."""

    def __init__(self, case_id: str, path: str | Path | None, problem: str):
        self.case_id, self.path, self.problem = case_id, path, problem
        where = f" ({path})" if path is not None else ""
        super().__init__(f"case {case_id}{where}: {problem}")


@dataclass(frozen=True)
class Case:
    """One patient on disk. ``images`` maps modality -> path (MSD: the same 4D path)."""

    case_id: str
    images: dict[str, Path]
    label: Path | None
    layout: str
    convention: str
    extra_files: tuple[Path, ...] = field(default=())

    @property
    def folder(self) -> Path:
        return next(iter(self.images.values())).parent


def _strip_nii(name: str) -> str:
    return _NII.sub("", name)


def nifti_files(folder: str | Path) -> dict[str, Path]:
    """``{case id: file}`` of the NIfTI files directly in ``folder`` (``<id>.nii[.gz]``,
    the BraTS submission convention for predictions)."""
    return {_strip_nii(f.name): f for f in Path(folder).iterdir() if f.is_file() and _NII.search(f.name)}


def case_from_folder(folder: str | Path, convention: str | None = None) -> Case:
    """One BraTS case folder (2018-2021 ``<id>_t1.nii.gz`` ... or 2023 ``<id>-t1n.nii.gz``
    ..., the layout told from its files); labels read in ``convention`` (default: the
    layout's own)."""
    folder = Path(folder)
    layout = "brats2023" if any(folder.glob("*-t2f.nii*")) else "brats2021"
    return _case_from_folder(folder, layout, convention or layout)


def case_id_from_file(path: str | Path) -> str:
    """``BraTS2021_00000_seg.nii.gz`` -> ``BraTS2021_00000``; ``<id>.nii.gz`` -> ``<id>``."""
    return re.sub(r"[_-]seg$", "", _strip_nii(Path(path).name))


def detect_layout(root: Path) -> str:
    root = Path(root)
    if (root / "imagesTr").is_dir():
        return "msd"
    # case folders may sit at any depth (archives nest them); stop at the first hit
    for pattern, layout in (("*-t2f.nii*", "brats2023"), ("*_flair.nii*", "brats2021")):
        if any(f.parent != root for f in root.rglob(pattern)):
            return layout
    if any(_NII.search(f.name) for f in root.iterdir() if f.is_file()):
        return "flat"
    raise FileNotFoundError(
        f"{root}: no BraTS 2018-2021, BraTS 2023, MSD Task01 or flat NIfTI layout found"
    )


def _case_from_folder(folder: Path, layout: str, convention: str) -> Case:
    sep, suffixes = _SUFFIXES[layout]
    case_id = folder.name
    files = {f.name: f for f in folder.iterdir() if f.is_file()}
    images, used = {}, set()
    for mod in MODALITIES:
        hits = [files[n] for n in (f"{case_id}{sep}{suffixes[mod]}.nii.gz", f"{case_id}{sep}{suffixes[mod]}.nii") if n in files]
        if not hits:
            raise CaseError(case_id, folder / f"{case_id}{sep}{suffixes[mod]}.nii.gz", f"modality {mod} is missing")
        images[mod] = hits[0]
        used.add(hits[0].name)
    label = None
    for n in (f"{case_id}{sep}seg.nii.gz", f"{case_id}{sep}seg.nii"):
        if n in files:
            label = files[n]
            used.add(n)
    extra = tuple(sorted(f for n, f in files.items() if n not in used))
    return Case(case_id, images, label, layout, convention, extra)


def discover_cases(
    root: str | Path,
    layout: str | None = None,
    convention: str | None = None,
    ids: list[str] | None = None,
) -> list[Case]:
    """All cases under ``root``, sorted by id.

    ``layout`` is detected when not given; ``convention`` defaults to the layout's.
    Case folders that hold other files besides the expected ones are accepted (the
    stray files are listed in ``Case.extra_files``); sub-folders that hold no
    NIfTI file at all are ignored. Duplicate case ids raise :class:`CaseError`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    layout = layout or detect_layout(root)
    default_conv = {"brats2021": "brats2021", "brats2023": "brats2023", "msd": "msd", "flat": "brats2021"}
    convention = convention or default_conv[layout]
    L.check_convention(convention)
    cases: list[Case] = []
    if layout == "msd":
        for img in sorted((root / "imagesTr").iterdir()):
            if not _NII.search(img.name) or img.name.startswith("."):
                continue
            cid = _strip_nii(img.name)
            lab = root / "labelsTr" / img.name
            cases.append(Case(cid, {m: img for m in MODALITIES}, lab if lab.exists() else None, "msd", convention))
    elif layout == "flat":
        for f in sorted(root.iterdir()):
            if f.is_file() and _NII.search(f.name):
                cases.append(Case(_strip_nii(f.name), {}, f, "flat", convention))
    else:
        sep, suffixes = _SUFFIXES[layout]
        known = tuple(f"{sep}{s}.nii" for s in suffixes.values())
        for sub in sorted(p for p in [root, *root.rglob("*")] if p.is_dir()):
            # a case folder holds files named <folder name><sep><modality>.nii[.gz]
            names = [f.name for f in sub.iterdir() if f.is_file()]
            if not any(n.startswith(sub.name) and any(k in n[len(sub.name):] for k in known) for n in names):
                continue
            cases.append(_case_from_folder(sub, layout, convention))
    seen: dict[str, Case] = {}
    for c in cases:
        if c.case_id in seen:
            first = seen[c.case_id].label or next(iter(seen[c.case_id].images.values()))
            second = c.label or next(iter(c.images.values()))
            raise CaseError(c.case_id, second, f"duplicate case id (also at {first})")
        seen[c.case_id] = c
    if ids is not None:
        missing = sorted(set(ids) - set(seen))
        if missing:
            raise CaseError(missing[0], root, f"case id not found under {root} ({len(missing)} missing)")
        cases = [seen[i] for i in ids]
    return cases


def _read(case_id: str, path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    if not Path(path).exists():
        raise CaseError(case_id, path, "file does not exist")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # force the read so corrupt files fail here
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError) as e:
        raise CaseError(case_id, path, f"cannot read NIfTI file ({type(e).__name__}: {e})") from None
    return img, data


def read_label_file(path: str | Path, convention: str = "brats2021", case_id: str | None = None):
    """One label map (prediction or reference) -> (canonical uint8 array, NIfTI image)."""
    path = Path(path)
    case_id = case_id or case_id_from_file(path)
    data, img = read_label_values(path, case_id)
    return canonical_labels(data, convention, case_id, path), img


def read_label_values(path: str | Path, case_id: str) -> tuple[np.ndarray, nib.Nifti1Image]:
    """A label map's values as stored (3D, finite, whole numbers; not yet converted) and
    its NIfTI image; :func:`canonical_labels` converts them (or a crop of them)."""
    path = Path(path)
    img, data = _read(case_id, path)
    if data.ndim != 3:
        raise CaseError(case_id, path, f"label map must be 3D, got shape {data.shape}")
    if data.dtype.kind == "f":  # integer files need neither check (nor a copy)
        if not np.all(np.isfinite(data)):
            raise CaseError(case_id, path, "label map holds NaN or Inf")
        if np.any(data != np.round(data)):
            raise CaseError(case_id, path, "label map holds non-integer values")
    return data, img


def canonical_labels(data: np.ndarray, convention: str, case_id: str, path: str | Path) -> np.ndarray:
    """Label values as stored -> canonical uint8 labels; unknown values raise
    :class:`CaseError` naming the case and the file."""
    try:
        return L.to_canonical(data, convention, source=f"case {case_id} ({path})")
    except L.LabelError as e:
        raise CaseError(case_id, path, str(e).split(": ", 1)[1]) from None


@dataclass
class LoadedCase:
    """A case in memory: ``image`` (4, H, W, D) float32 in ``MODALITIES`` order,
    ``label`` (H, W, D) canonical uint8 or None, and the reference NIfTI (affine, header)."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    header: nib.Nifti1Header
    spacing: tuple[float, float, float]
    case: Case | None = None


def load_case(case: Case, with_label: bool = True) -> LoadedCase:
    """Read and validate one case; raise :class:`CaseError` naming the case and file."""
    cid = case.case_id
    if case.layout == "msd":
        path = case.images["t1"]
        img, data = _read(cid, path)
        if data.ndim != 4 or data.shape[-1] != 4:
            raise CaseError(cid, path, f"MSD image must be 4D with 4 channels, got shape {data.shape}")
        arrays = {m: np.asarray(data[..., _MSD_CHANNELS[m]], dtype=np.float32) for m in MODALITIES}
        paths = {m: path for m in MODALITIES}
        ref = img
    else:
        arrays, paths, ref = {}, {}, None
        for m in MODALITIES:
            img, data = _read(cid, case.images[m])
            if data.ndim == 4 and data.shape[-1] == 1:
                data = data[..., 0]
            if data.ndim != 3:
                raise CaseError(cid, case.images[m], f"modality {m} must be a 3D image, got shape {data.shape}")
            arrays[m], paths[m] = np.asarray(data, dtype=np.float32), case.images[m]
            if ref is None:
                ref = img
            else:
                _check_geometry(cid, case.images[m], arrays[m].shape, img.affine, arrays[MODALITIES[0]].shape, ref.affine)
    for m in MODALITIES:
        a = arrays[m]
        if not np.all(np.isfinite(a)):
            n = int(np.size(a) - np.isfinite(a).sum())
            raise CaseError(cid, paths[m], f"modality {m} holds {n} NaN or Inf voxels")
        if not np.any(a):
            raise CaseError(cid, paths[m], f"modality {m} is all zero")
    image = np.stack([arrays[m] for m in MODALITIES])
    label = None
    if with_label and case.label is not None:
        label, limg = read_label_file(case.label, case.convention, cid)
        _check_geometry(cid, case.label, label.shape, limg.affine, image.shape[1:], ref.affine)
    spacing = tuple(float(s) for s in ref.header.get_zooms()[:3])
    return LoadedCase(cid, image, label, ref.affine.copy(), ref.header.copy(), spacing, case)


def resample_case(lc: LoadedCase, spacing: float) -> LoadedCase:
    """``lc`` resampled to an isotropic voxel of ``spacing`` mm: each modality smoothed
    against aliasing (a Gaussian of (zoom - 1) / 2 input voxels along an axis shrunk by
    ``zoom``, as scikit-image's ``resize``) then interpolated linearly (scipy.ndimage.zoom,
    order 1), the label by nearest neighbour; the affine and header
    follow, so the result overlays its case. A network trained on 48^3 phantoms (a brain of
    about 40 voxels) sees a 1 mm BraTS case at about its own scale at 4 mm."""
    from scipy import ndimage

    if spacing <= 0:
        raise ValueError(f"case {lc.case_id}: spacing must be positive, got {spacing}")
    factors = [s / spacing for s in lc.spacing]
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
    image = np.stack([ndimage.zoom(ndimage.gaussian_filter(ch, sigma) if any(sigma) else ch, factors, order=1,
                                   grid_mode=True, mode="grid-constant") for ch in lc.image])
    label = (None if lc.label is None
             else ndimage.zoom(lc.label, factors, order=0, grid_mode=True, mode="grid-constant"))
    affine = lc.affine.copy()
    zoom = np.array([lc.image.shape[i + 1] / image.shape[i + 1] for i in range(3)])  # input voxels per output voxel
    affine[:3, :3] = lc.affine[:3, :3] * zoom
    # grid mode: output voxel centre j sits at input coordinate (j + 0.5) * zoom - 0.5
    affine[:3, 3] = lc.affine[:3, :3] @ (0.5 * zoom - 0.5) + lc.affine[:3, 3]
    header = lc.header.copy()
    header.set_data_shape(image.shape[1:])
    header.set_zooms(tuple(float(z) * s for z, s in zip(lc.header.get_zooms()[:3], zoom)))
    header.set_qform(affine)
    header.set_sform(affine)
    return LoadedCase(lc.case_id, image.astype(np.float32), None if label is None else label.astype(np.uint8), affine,
                      header, tuple(float(s * z) for s, z in zip(lc.spacing, zoom)), lc.case)


def _check_geometry(cid, path, shape, affine, ref_shape, ref_affine):
    if tuple(shape) != tuple(ref_shape):
        raise CaseError(cid, path, f"shape {tuple(shape)} differs from the case's {tuple(ref_shape)}")
    if not np.allclose(affine, ref_affine, atol=AFFINE_TOLERANCE):
        raise CaseError(cid, path, f"affine differs from the case's beyond tolerance {AFFINE_TOLERANCE}")


_COLLECTION = re.compile(r"^[^_]+_([A-Za-z]+\d*|\d{4})_")


def case_strata(cases: list[Case]) -> dict[str, str]:
    """Case id -> group for a stratified hold-out: the tumour grade where the dataset
    records it (BraTS 2018-2019 ``HGG/`` and ``LGG/`` folders; BraTS 2020
    ``name_mapping.csv``, column ``Grade``), else the collection in the id
    (``Brats18_TCIA09_...`` -> ``TCIA09``, ``Brats18_2013_...`` -> ``2013``), else one group."""
    out = {}
    mappings: dict[Path, dict[str, str]] = {}
    for c in cases:
        grade = None
        for parent in c.folder.parents:
            if parent.name.upper() in ("HGG", "LGG"):
                grade = parent.name.upper()
                break
            csv_path = parent / "name_mapping.csv"
            if csv_path.is_file():
                if csv_path not in mappings:
                    mappings[csv_path] = _grades_from_mapping(csv_path)
                grade = mappings[csv_path].get(c.case_id)
                break
        if grade is None:
            m = _COLLECTION.match(c.case_id)
            grade = m.group(1) if m else ""
        out[c.case_id] = grade
    return out


def _grades_from_mapping(path: Path) -> dict[str, str]:
    """BraTS 2020's ``name_mapping.csv``: subject id -> grade (HGG / LGG)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # columns BraTS_2017_subject_ID ... BraTS_2020_subject_ID: the newest names the folders
    id_cols = [k for k in (rows[0] if rows else {}) if "subject_id" in k.lower() and "brats" in k.lower()]
    if not id_cols or "Grade" not in rows[0]:
        return {}
    id_col = sorted(id_cols)[-1]
    return {r[id_col]: r["Grade"] for r in rows if r.get(id_col)}


def open_source(data_dir: str | Path | None, phantom_cases: int, seed: int = 0,
                phantom_shape=(96, 96, 96), progress: bool = False) -> tuple[list[Case], str]:
    """The cases a notebook works on, and a description of their source for the manifest.

    ``data_dir`` given: every case of that real BraTS folder (any supported layout).
    Otherwise ``phantom_cases`` synthetic phantoms (generated once, then cached).
    """
    if data_dir:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(
                f"data folder {data_dir} does not exist: the full profile needs a real BraTS folder "
                "(pass --data DIR or set data_dir in the parameter file)")
        cases = discover_cases(data_dir)
        return cases, f"BraTS folder {data_dir} ({len(cases)} cases, {cases[0].layout if cases else '?'} layout)"
    from .phantoms import phantom_dataset

    folder, ids = phantom_dataset(phantom_cases, seed, tuple(phantom_shape), progress=progress)
    shape = "x".join(str(int(s)) for s in phantom_shape)
    return discover_cases(folder, ids=ids), f"synthetic phantoms ({phantom_cases} cases, {shape}, seed {seed})"
