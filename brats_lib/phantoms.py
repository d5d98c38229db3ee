"""Synthetic BraTS-like phantoms: the default data source when no BraTS data is at hand.

One phantom is a skull-stripped head with four co-registered modalities whose
contrasts mimic T1, T1ce, T2 and FLAIR, and a nested tumour (WT contains TC
contains ET), generated from a seed:

1. **Anatomy.** An ellipsoidal brain with a wavy surface; a CSF rim, a cortical grey
   matter band of varying thickness, white matter inside, two lateral ventricles
   (CSF) and two deep grey nuclei.
2. **Tumour.** Irregular blobs (a distance field perturbed by smooth noise): a core,
   a necrotic centre inside it, an enhancing rim = core minus necrosis, and a wide
   irregular oedema halo confined to the brain. The case mix draws from four kinds:
   ``gbm`` (all three labels), ``no_et`` (non-enhancing core + oedema, like a
   lower-grade glioma), ``multifocal`` (two lesions) and ``small``.
3. **Contrast.** Healthy tissues get per-modality values; each tumour tissue is set
   at a number of healthy-brain standard deviations above (or below) the healthy
   mean, calibrated on real BraTS cases (FLAIR in WT about +1.9 to +2.6 SD, T1ce in
   ET about +1.2 to +1.6 SD after partial-volume blur, necrosis dark in T1ce, oedema
   bright in T2 and FLAIR). :func:`contrast_stats` measures these numbers on any case.
4. **Acquisition.** Smooth texture, a multiplicative bias field per modality,
   Gaussian blur (partial volume), Rician noise, int16 scaling, zero outside the brain.

:func:`write_phantom_dataset` writes cases in the BraTS 2021 layout
(``<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz``, ET = 4) so the real loader is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from . import labels as L
from .labels import MODALITIES
from .io import write_nifti
from .paths import REPO_ROOT

#: bumped whenever the generator's output changes, so cached phantom folders are never reused
#: across versions (2: sub-region proportions calibrated on real cases; 3: larger cores, the
#: tumour's share of the brain calibrated on real cases)
GENERATOR_VERSION = 3
KINDS = ("gbm", "no_et", "multifocal", "small")
KIND_PROBS = (0.5, 0.2, 0.15, 0.15)

CSF, GM, WM = 1, 2, 3
#: healthy tissue values per modality (arbitrary units), order t1, t1ce, t2, flair
TISSUE = {
    CSF: (0.30, 0.30, 1.60, 0.30),
    GM: (0.60, 0.62, 0.90, 0.90),
    WM: (0.80, 0.78, 0.65, 0.70),
}
#: tumour tissue contrast in healthy-brain SDs above the healthy mean, per modality
TUMOUR_Z = {
    L.ED: (-0.1, 0.1, 0.6, 1.85),
    L.NCR: (-0.8, -0.7, 1.3, 1.75),
    L.ET: (-0.3, 2.4, 0.8, 1.75),
}
#: the non-enhancing core of ``no_et`` cases
NET_Z = (-0.9, -1.0, 1.3, 1.85)
#: sub-region proportions, calibrated on real BraTS cases (six cases: the tumour core is
#: 0.31-0.63 of the whole tumour, median 0.49; enhancing tumour 0.24-0.73 of the core,
#: median 0.55): the oedema halo's radius as a multiple of the core's (plus a margin in
#: units of the half-width of the volume), and the necrotic centre's radius as a fraction
#: of the core's
OEDEMA_SCALE, OEDEMA_MARGIN, OEDEMA_IRREGULAR = (1.0, 1.3), 0.015, 0.30
NECROSIS_SCALE = (0.84, 1.0)
#: the tumour core's radius range per kind, in units of the half-width of the volume; sized
#: so that the whole tumour's share of the brain is near the real cases' (median WT/brain
#: 0.027 at 96^3 over 20 phantoms against 0.019 in the two real cases; version 2's radii,
#: 0.8x these, gave 0.015 and left a 48^3 phantom a median of 157 ET voxels, now ~270)
CORE_RADIUS = {"gbm": (0.16, 0.26), "no_et": (0.16, 0.26), "small": (0.06, 0.10), "multifocal": (0.11, 0.175)}


def _kernel_matrix(n_out: int, cells: int) -> np.ndarray:
    """(n_out, cells + 2) Gaussian interpolation weights from a coarse grid to ``n_out`` points."""
    x = np.linspace(0.0, 1.0, n_out)[:, None]
    g = np.linspace(-1.0 / cells, 1.0 + 1.0 / cells, cells + 2)[None, :]
    w = np.exp(-0.5 * ((x - g) * cells) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(shape: Sequence[int], rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """Zero-mean, unit-SD smooth random field with about ``cells`` undulations per axis:
    coarse white noise interpolated to ``shape`` by separable Gaussian kernels."""
    f = rng.standard_normal([cells + 2] * len(shape)).astype(np.float32)
    for axis, n in enumerate(shape):
        f = np.moveaxis(np.tensordot(_kernel_matrix(n, cells), np.moveaxis(f, axis, 0), axes=1), 0, axis)
    return (f - f.mean()) / (f.std() + 1e-8)


def _grid(shape):
    return np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij"))


def _blob(grid, centre, radius, rng, irregular, stretch=0.25, cells=5):
    """Boolean irregular blob: normalised anisotropic distance < 1 + irregular * noise."""
    axes = 1 + stretch * rng.uniform(-1, 1, 3)
    d = np.sqrt(sum(((grid[i] - centre[i]) / (radius * axes[i])) ** 2 for i in range(3)))
    shape = grid.shape[1:]
    noise = 0.85 * smooth_noise(shape, rng, cells) + 0.5 * smooth_noise(shape, rng, 3 * cells)  # two octaves
    return d < 1.0 + irregular * noise


def _anatomy(shape, rng, grid):
    x, y, z = grid
    radii = np.array([0.80, 0.88, 0.78]) * rng.uniform(0.94, 1.04, 3)
    r = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2)
    r = r * (1 + 0.04 * smooth_noise(shape, rng, 4)) + 0.15 * np.clip(-z - 0.45, 0, None)
    brain = r < 1.0
    depth = 1.0 - r  # 0 at the surface, growing inwards
    tissue = np.where(brain, WM, 0).astype(np.uint8)
    cortex = depth < 0.16 + 0.06 * smooth_noise(shape, rng, 10)
    tissue[brain & cortex] = GM
    tissue[brain & (depth < 0.035)] = CSF
    for side in (-1, 1):  # lateral ventricles, then deep grey nuclei
        vent = ((x - side * 0.12) / 0.07) ** 2 + ((y + 0.05) / 0.30) ** 2 + ((z - 0.12) / 0.12) ** 2 < 1
        tissue[brain & vent] = CSF
        nuc = ((x - side * 0.28) / 0.10) ** 2 + ((y + 0.02) / 0.14) ** 2 + ((z + 0.02) / 0.12) ** 2 < 1
        tissue[brain & nuc & ~vent] = GM
    return brain, tissue, depth


def _lesion(grid, brain, depth, rng, core_radius, with_et):
    """One lesion: returns (core, necrosis or None, oedema) boolean masks."""
    cand = np.argwhere(brain & (depth > 0.25 + core_radius))
    if cand.size == 0:
        cand = np.argwhere(brain & (depth > 0.2))
    c_idx = cand[rng.integers(len(cand))]
    shape = np.array(brain.shape)
    centre = c_idx / (shape - 1) * 2 - 1
    core = _blob(grid, centre, core_radius, rng, 0.25) & brain
    oedema = _blob(grid, centre, core_radius * rng.uniform(*OEDEMA_SCALE) + OEDEMA_MARGIN, rng, OEDEMA_IRREGULAR,
                   stretch=0.35, cells=7) & brain
    necrosis = None
    if with_et:
        off = rng.uniform(-0.2, 0.2, 3) * core_radius
        necrosis = _blob(grid, centre + off, core_radius * rng.uniform(*NECROSIS_SCALE), rng, 0.2) & core
        # keep the enhancing rim at least one voxel thick everywhere
        necrosis &= ndi.binary_erosion(core, iterations=1)
    return core, necrosis, oedema


def make_phantom(seed: int, shape: Sequence[int] = (96, 96, 96), kind: str | None = None):
    """One phantom case: ``(image (4, *shape) float32 in MODALITIES order, label canonical uint8, kind)``."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    if kind is None:
        kind = KINDS[rng.choice(len(KINDS), p=KIND_PROBS)]
    if kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; expected one of {KINDS}")
    grid = _grid(shape)
    brain, tissue, depth = _anatomy(shape, rng, grid)

    n_lesions = 2 if kind == "multifocal" else 1
    radius = CORE_RADIUS.get(kind, CORE_RADIUS["gbm"])
    label = np.zeros(shape, np.uint8)
    for _ in range(n_lesions):
        core, necrosis, oedema = _lesion(grid, brain, depth, rng, rng.uniform(*radius), kind != "no_et")
        label[oedema & (label == 0)] = L.ED
        if kind == "no_et":
            label[core] = L.NCR
        else:
            label[core] = L.ET
            label[necrosis] = L.NCR

    healthy = brain & (label == 0)
    image = np.zeros((4,) + shape, np.float32)
    for m in range(4):
        vol = np.zeros(shape, np.float32)
        for t, vals in TISSUE.items():
            vol[tissue == t] = vals[m] * rng.uniform(0.95, 1.05)
        vol *= 1 + 0.04 * smooth_noise(shape, rng, 12)  # tissue texture
        mu, sd = float(vol[healthy].mean()), float(vol[healthy].std())
        z_table = dict(TUMOUR_Z)
        if kind == "no_et":
            z_table[L.NCR] = NET_Z
        tumour_tex = 1 + 0.25 * smooth_noise(shape, rng, 10)
        for lab, zs in z_table.items():
            sel = label == lab
            if sel.any():
                z = zs[m] * rng.uniform(0.85, 1.15)
                vol[sel] = (mu + z * sd * tumour_tex[sel]).astype(np.float32)
        vol = ndi.gaussian_filter(vol, sigma=0.7)  # partial volume
        vol *= np.exp(0.12 * smooth_noise(shape, rng, 3))  # bias field
        sigma = 0.035 * mu
        vol = np.sqrt((vol + sigma * rng.standard_normal(shape)) ** 2 + (sigma * rng.standard_normal(shape)) ** 2)
        image[m] = np.where(brain, np.round(vol * 1000.0), 0.0)
    return image, label, kind


def contrast_stats(image: np.ndarray, label: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean of each modality inside WT, NCR, ED and ET in SDs above healthy brain.

    ``image`` (4, ...) in MODALITIES order, ``label`` canonical. NaN where a region is empty.
    """
    brain = np.any(image != 0, axis=0)
    healthy = brain & (label == 0)
    regions = {"WT": label > 0, "NCR": label == L.NCR, "ED": label == L.ED, "ET": label == L.ET}
    out = {}
    for m, name in enumerate(MODALITIES):
        h = image[m][healthy]
        mu, sd = float(h.mean()), float(h.std())
        out[name] = {r: (float(image[m][sel].mean()) - mu) / sd if sel.any() else float("nan") for r, sel in regions.items()}
    return out


def composition_stats(label: np.ndarray, brain: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[str, float]:
    """Sub-region proportions of one case: TC/WT, ET/TC, NCR/TC, the enhancing rim's
    thickness in mm (ET volume over the tumour core's surface area: the mean thickness of
    a thin shell) and WT as a fraction of the brain. NaN where a ratio's denominator is empty."""
    vox = float(np.prod(spacing))
    wt, tc = label > 0, np.isin(label, (L.NCR, L.ET))
    n_wt, n_tc, n_et, n_ncr = int(wt.sum()), int(tc.sum()), int((label == L.ET).sum()), int((label == L.NCR).sum())
    # the core's surface: faces between a core voxel and a non-core 6-neighbour, each of its face's area
    area = 0.0
    padded = np.pad(tc, 1)
    for axis in range(3):
        face = vox / float(spacing[axis])
        area += face * np.count_nonzero(np.diff(padded.astype(np.int8), axis=axis))
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    return {"TC/WT": ratio(n_tc, n_wt), "ET/TC": ratio(n_et, n_tc), "NCR/TC": ratio(n_ncr, n_tc),
            "ET rim (mm)": ratio(n_et * vox, area) if n_et else float("nan"),
            "WT/brain": ratio(n_wt, int(np.count_nonzero(brain)))}


def phantom_ids(n: int) -> list[str]:
    return [f"Phantom_{i:05d}" for i in range(n)]


def write_phantom_dataset(out: str | Path, n: int, seed: int = 0, shape: Sequence[int] = (96, 96, 96),
                          progress: bool = False) -> list[str]:
    """Write ``n`` phantoms in the BraTS 2021 layout under ``out``; returns the case ids.

    Case ``i`` is generated from ``(seed, i)``, so a dataset of 10 cases is the first
    10 cases of a dataset of 40 with the same seed. Existing complete cases are kept.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    ids = phantom_ids(n)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    for i in tqdm(range(n), desc="phantoms", disable=not progress):
        cid = ids[i]
        folder = out / cid
        files = {m: folder / f"{cid}_{m}.nii.gz" for m in MODALITIES + ("seg",)}
        if all(f.exists() for f in files.values()):
            continue
        image, label, _ = make_phantom(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), shape)
        for m, name in enumerate(MODALITIES):
            write_nifti(files[name], image[m].astype(np.int16), affine)
        write_nifti(files["seg"], L.from_canonical(label, "brats2021"), affine)
    return ids


def phantom_dataset(n: int, seed: int = 0, shape: Sequence[int] = (96, 96, 96), root: str | Path | None = None,
                    progress: bool = False) -> tuple[Path, list[str]]:
    """Generate (or reuse) ``n`` phantoms in a cache folder keyed by seed, shape and
    :data:`GENERATOR_VERSION`.

    Returns ``(folder, case ids)``; default cache: ``<repo>/data/phantoms`` (git-ignored).
    """
    root = Path(root) if root is not None else REPO_ROOT / "data" / "phantoms"
    folder = root / f"seed{seed}_{'x'.join(str(int(s)) for s in shape)}_v{GENERATOR_VERSION}"
    ids = write_phantom_dataset(folder, n, seed, shape, progress=progress)
    return folder, ids
