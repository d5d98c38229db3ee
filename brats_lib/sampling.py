"""Training samples: random 3D patches (foreground-biased), 2D axial slices, and the
fixed cross-validation splits every notebook shares.

Samples are deterministic: item ``i`` of epoch ``e`` is drawn with a generator
seeded by ``(seed, e, i)``, so the data a run sees does not depend on the number
of loader workers or on DDP ranks, and a resumed run sees exactly what an
uninterrupted run would have seen.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import labels as L
from .io import write_text
from .paths import SPLITS_DIR

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def encode_target(label: np.ndarray, target: str) -> torch.Tensor:
    """Canonical label map -> training target: ``"regions"`` gives float (3, ...) WT/TC/ET,
    ``"labels"`` gives long (...) class indices, ``"label_map"`` the uint8 map itself (a
    twelfth of the regions' bytes to move; :func:`regions_on_device` encodes it there)."""
    if target == "regions":
        return torch.from_numpy(L.labels_to_regions(label).astype(np.float32))
    if target == "labels":
        return torch.from_numpy(label.astype(np.int64))
    if target == "label_map":
        return torch.from_numpy(np.ascontiguousarray(label, dtype=np.uint8))
    raise ValueError(f"unknown target {target!r}; expected 'regions', 'labels' or 'label_map'")


def regions_on_device(label_map: torch.Tensor, order: tuple[str, ...] = L.REGION_CHANNELS) -> torch.Tensor:
    """Batched canonical label maps (B, *S) uint8 -> float regions (B, len(order), *S), on
    the tensor's own device; the same values as ``encode_target(..., "regions")``."""
    return torch.stack([torch.isin(label_map, torch.tensor(L.REGIONS[r], device=label_map.device, dtype=label_map.dtype))
                        for r in order], 1).float()


def pad_to(array: np.ndarray, size: Sequence[int], value: float = 0.0) -> np.ndarray:
    """Pad the last ``len(size)`` axes symmetrically up to ``size`` (no-op if larger)."""
    spatial = array.shape[-len(size):]
    pads = [(0, 0)] * (array.ndim - len(size))
    for s, p in zip(spatial, size):
        extra = max(p - s, 0)
        pads.append((extra // 2, extra - extra // 2))
    if all(a == b == 0 for a, b in pads):
        return array
    return np.pad(array, pads, constant_values=value)


def random_patch(image: np.ndarray, label: np.ndarray, patch: Sequence[int], rng: np.random.Generator,
                 fg_prob: float = 0.0, fg_mask: np.ndarray | None = None):
    """Crop one patch of size ``patch`` from (C, *S) ``image`` and (*S) ``label``.

    With probability ``fg_prob`` the patch is centred on a random voxel of
    ``fg_mask`` (default: the tumour, ``label > 0``); otherwise its corner is uniform.
    """
    image, label = pad_to(image, patch), pad_to(label, patch)
    shape = label.shape
    corner = None
    if fg_prob > 0 and rng.random() < fg_prob:
        fg = np.flatnonzero(label > 0 if fg_mask is None else pad_to(fg_mask, patch))
        if fg.size:
            centre = np.unravel_index(fg[rng.integers(fg.size)], shape)
            corner = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch, shape)]
    if corner is None:
        corner = [int(rng.integers(0, s - p + 1)) for s, p in zip(shape, patch)]
    sl = tuple(slice(c, c + p) for c, p in zip(corner, patch))
    return image[(slice(None),) + sl], label[sl]


class EpochSeeded(Dataset):
    """Base of the training datasets: item ``i`` of epoch ``e`` draws its randomness from
    :meth:`rng` = ``default_rng([seed, e, i])`` alone, so any item can be rebuilt exactly
    (resume, worker processes). ``fit`` calls :meth:`set_epoch` each epoch."""

    seed: int = 0
    epoch: int = 0
    n: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(i)])


class PatchDataset(EpochSeeded):
    """``samples_per_epoch`` random patches from in-memory cases.

    ``cases``: list of (image (C, H, W, D) float32, label (H, W, D) canonical uint8).
    Items are ``(image tensor, target tensor)``; call :meth:`set_epoch` each epoch.

    ``passes``: an epoch is a shuffled pass over the cases: item ``i`` comes from case
    ``order_e[i mod n_cases]`` with ``order_e`` a permutation seeded by ``(seed, e)``, so
    ``samples_per_epoch`` = number of cases visits every case once (a multiple of it, each
    case that many times). Without it each item draws its case at random, with
    replacement, and an epoch is only a number of samples.
    """

    def __init__(self, cases: Sequence[tuple[np.ndarray, np.ndarray]], patch_size: Sequence[int],
                 samples_per_epoch: int, fg_prob: float = 0.5, target: str = "regions",
                 transform: Transform | None = None, seed: int = 0, passes: bool = False):
        if not cases:
            raise ValueError("PatchDataset needs at least one case")
        self.cases, self.patch = list(cases), tuple(int(p) for p in patch_size)
        self.n, self.fg_prob, self.target = int(samples_per_epoch), float(fg_prob), target
        self.transform, self.seed, self.epoch, self.passes = transform, int(seed), 0, bool(passes)
        self._order: tuple[int, np.ndarray] | None = None

    def case_index(self, i: int, rng: np.random.Generator) -> int:
        """Which case item ``i`` of the current epoch is cut from."""
        if not self.passes:
            return int(rng.integers(len(self.cases)))
        if self._order is None or self._order[0] != self.epoch:
            self._order = (self.epoch, np.random.default_rng([self.seed, self.epoch, 2**31]).permutation(len(self.cases)))
        return int(self._order[1][int(i) % len(self.cases)])

    def __getitem__(self, i: int):
        rng = self.rng(i)
        image, label = self.cases[self.case_index(i, rng)]
        img, lab = random_patch(image, label, self.patch, rng, self.fg_prob)
        if self.transform is not None:
            img, lab = self.transform(img, lab, rng)
        return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)), encode_target(np.ascontiguousarray(lab), self.target)


class SliceDataset(EpochSeeded):
    """Axial 2D slices (last axis) of in-memory cases, for 2D networks.

    ``only_brain`` drops slices without brain; ``crop`` = (h, w) centre-crops or pads
    every slice. Items are ``(image (C, h, w), target)``; the order is fixed, so use a
    shuffling sampler. ``index`` lists (case number, slice number) per item.
    """

    def __init__(self, cases: Sequence[tuple[np.ndarray, np.ndarray]], crop: Sequence[int] | None = None,
                 only_brain: bool = True, target: str = "labels",
                 transform: Transform | None = None, seed: int = 0):
        self.cases, self.crop, self.target = list(cases), crop, target
        self.transform, self.seed, self.epoch = transform, int(seed), 0
        self.index = []
        for ci, (img, _) in enumerate(self.cases):
            keep = np.any(img != 0, axis=(0, 1, 2)) if only_brain else np.ones(img.shape[-1], bool)
            self.index += [(ci, int(z)) for z in np.flatnonzero(keep)]
        self.n = len(self.index)

    def __getitem__(self, i: int):
        ci, z = self.index[int(i)]
        img, lab = self.cases[ci][0][..., z], self.cases[ci][1][..., z]
        if self.crop is not None:
            img, lab = center_crop_2d(img, self.crop), center_crop_2d(lab, self.crop)
        if self.transform is not None:
            img, lab = self.transform(img, lab, self.rng(i))
        return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)), encode_target(np.ascontiguousarray(lab), self.target)


def center_crop_2d(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Centre-crop (or zero-pad) the last two axes to ``size``."""
    array = pad_to(array, size)
    h, w = array.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return array[..., top:top + size[0], left:left + size[1]]


# ---------------------------------------------------------------- splits
def make_splits(case_ids: Sequence[str], n_folds: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """K-fold splits: a list of ``{"train": [...], "val": [...]}``, every id validated once."""
    ids = sorted(case_ids)
    if n_folds < 2 or n_folds > len(ids):
        raise ValueError(f"cannot make {n_folds} folds from {len(ids)} cases")
    order = np.random.default_rng(seed).permutation(len(ids))
    folds = [sorted(ids[j] for j in order[k::n_folds]) for k in range(n_folds)]
    return [{"train": sorted(set(ids) - set(f)), "val": f} for f in folds]


def extend_splits(splits: list[dict[str, list[str]]], new_ids: Sequence[str], seed: int = 0) -> list[dict[str, list[str]]]:
    """``splits`` grown by the cases ``new_ids``: they are split into as many folds
    (:func:`make_splits`, ``seed``) and fold ``k`` of the result validates fold ``k``'s
    old cases and new cases. Every case keeps the role it had in every fold, so a fold
    whose validation cases were used to choose settings stays that fold, and a fold that
    scores a report still scores its old cases."""
    old = {c for f in splits for c in (*f["train"], *f["val"])}
    new = sorted(set(new_ids))
    if old & set(new):
        raise ValueError(f"cases already in the splits: {sorted(old & set(new))[:5]}")
    grown = make_splits(new, len(splits), seed)
    return [{"train": sorted([*f["train"], *g["train"]]), "val": sorted([*f["val"], *g["val"]])}
            for f, g in zip(splits, grown)]


PHANTOM_PREFIX = "Phantom_"


def holdout_split(case_ids: Sequence[str], n: int, seed: int = 0,
                  strata: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(pool for the folds, held-out cases), both sorted.

    Real data: a seeded random draw of ``n`` cases, stratified by ``strata`` (case id ->
    group, from :func:`brats_lib.data.case_strata`: tumour grade where the dataset says,
    else the collection prefix of the id), each group giving its share (largest
    remainders). Sorted BraTS 2018 ids end with the TCIA09-13 collections, all low-grade,
    so "the last n" would be neither random nor representative.

    Phantoms (ids ``Phantom_*``) are independent draws of the generator, so the last
    ``n`` are a random sample already; holding those out keeps the nested pools (asking
    for ``k + n`` phantoms leaves the same ``k``-case pool, and its split file, as a
    notebook that asked for ``k``).
    """
    ids = sorted(case_ids)
    if not 0 <= n < len(ids):
        raise ValueError(f"cannot hold out {n} of {len(ids)} cases and keep some for the folds")
    if n == 0:
        return ids, []
    if all(i.startswith(PHANTOM_PREFIX) for i in ids):
        return ids[: len(ids) - n], ids[len(ids) - n:]
    strata = strata or {}
    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(strata.get(i, ""), []).append(i)
    names = sorted(groups)
    quota = {g: n * len(groups[g]) / len(ids) for g in names}
    take = {g: int(np.floor(quota[g])) for g in names}
    for g in sorted(names, key=lambda g: (-(quota[g] - take[g]), g))[: n - sum(take.values())]:
        take[g] += 1
    rng = np.random.default_rng([seed, 7919])
    held = []
    for g in names:
        held += [groups[g][j] for j in rng.permutation(len(groups[g]))[: take[g]]]
    held = sorted(held)
    return sorted(set(ids) - set(held)), held


def write_splits(path: str | Path, splits: list[dict[str, list[str]]]) -> Path:
    return write_text(path, json.dumps(splits, indent=1) + "\n")


def read_splits(path: str | Path) -> list[dict[str, list[str]]]:
    splits = json.loads(Path(path).read_text())
    for k, f in enumerate(splits):
        if set(f) != {"train", "val"} or set(f["train"]) & set(f["val"]):
            raise ValueError(f"{path}: fold {k} must hold disjoint 'train' and 'val' lists")
    return splits


def splits_path(name: str) -> Path:
    """Where the shared split file ``name`` lives: ``params/splits/<name>.json``; ``name``
    must be a plain file name (it comes from a parameter file and the file may be written)."""
    from .params import FileName

    return SPLITS_DIR / f"{FileName.check(name, 'split file name')}.json"


def load_or_create_splits(path: str | Path, case_ids: Sequence[str], n_folds: int, seed: int = 0):
    """Read the split file at ``path``; create it when missing. A file whose cases
    differ from ``case_ids`` is an error (folds must be the same for every notebook)."""
    path = Path(path)
    if path.exists():
        splits = read_splits(path)
        have = set(splits[0]["train"]) | set(splits[0]["val"])
        if have != set(case_ids) or len(splits) != n_folds:
            raise ValueError(
                f"{path}: holds {len(splits)} folds over {len(have)} cases, but {n_folds} folds over "
                f"{len(set(case_ids))} cases were asked for; delete it or point at another split file"
            )
        return splits
    splits = make_splits(case_ids, n_folds, seed)
    write_splits(path, splits)
    return splits
