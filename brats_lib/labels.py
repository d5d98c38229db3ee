"""Label conventions, tumour regions and the modality order, in one place.

Inside the library every label map uses one canonical form::

    0 background, 1 NCR/NET (necrotic / non-enhancing core), 2 ED (oedema), 3 ET (enhancing)

On disk three conventions exist; each is converted to the canonical form once, when
a label map is loaded, and back once, when a prediction is written:

================  ======================================  ==================
convention        values on disk                          used by
================  ======================================  ==================
``brats2021``     0, 1 NCR/NET, 2 ED, 4 ET                BraTS 2017-2021
``brats2023``     0, 1 NCR, 2 ED, 3 ET                    BraTS 2023+
``msd``           0, 1 ED, 2 NET, 3 ET                    MSD Task01
================  ======================================  ==================

Regions (evaluated by every BraTS challenge): WT = {NCR, ED, ET}, TC = {NCR, ET},
ET = {ET}. Tables report them in the order ET, TC, WT (``REGIONS``).
"""
from __future__ import annotations

import numpy as np

#: the order of the four MRI channels of every image inside the library
MODALITIES = ("t1", "t1ce", "t2", "flair")

BACKGROUND, NCR, ED, ET = 0, 1, 2, 3
CLASS_NAMES = ("background", "NCR/NET", "ED", "ET")

#: region name -> canonical labels it contains; table order ET, TC, WT
REGIONS: dict[str, tuple[int, ...]] = {"ET": (ET,), "TC": (NCR, ET), "WT": (NCR, ED, ET)}
#: order of the three sigmoid channels of region-based networks (nnU-Net / NVIDIA order)
REGION_CHANNELS = ("WT", "TC", "ET")

#: on-disk value -> canonical value, per convention
CONVENTIONS: dict[str, dict[int, int]] = {
    "brats2021": {0: BACKGROUND, 1: NCR, 2: ED, 4: ET},
    "brats2023": {0: BACKGROUND, 1: NCR, 2: ED, 3: ET},
    "msd": {0: BACKGROUND, 1: ED, 2: NCR, 3: ET},
}

#: BraTS overlay colours (RGB 0-1) for canonical labels 1..3
COLOURS = {NCR: (0.90, 0.10, 0.10), ED: (0.10, 0.80, 0.20), ET: (1.00, 0.85, 0.05)}


class LabelError(ValueError):
    """A label map holds values that its convention does not know."""


def check_convention(convention: str) -> dict[int, int]:
    try:
        return CONVENTIONS[convention]
    except KeyError:
        raise ValueError(
            f"unknown label convention {convention!r}; expected one of {sorted(CONVENTIONS)}"
        ) from None


def to_canonical(label: np.ndarray, convention: str, source: str = "label map") -> np.ndarray:
    """Map an on-disk label array (integer values) to canonical labels (uint8).

    No sort and no wide index array: the array's minimum and maximum catch values outside
    the convention's range, one comparison per value inside the range that the convention
    lacks (3 for ``brats2021``) catches the rest, and one masked assignment per value that
    changes does the mapping (ET 4 -> 3 for ``brats2021``), all on the array's own small
    integer type. Raises :class:`LabelError` naming ``source`` when a value is not part of
    the convention (for example a BraTS 2023 map, with ET = 3, read as ``brats2021``).
    """
    mapping = check_convention(convention)
    a = np.asarray(label)
    if a.dtype.kind not in "iu":  # floats holding whole numbers, booleans
        a = a.astype(np.int64)
    top = max(mapping)
    ok = a.size == 0 or (int(a.min()) >= 0 and int(a.max()) <= top)
    if ok:
        ok = not any((a == v).any() for v in range(top + 1) if v not in mapping)
    if not ok:  # the error path only: list the offending values
        unknown = np.unique(a[~np.isin(a, list(mapping))]).tolist()
        raise LabelError(
            f"{source}: label values {unknown} are not in the {convention} convention "
            f"(allowed {sorted(mapping)})"
        )
    out = a.astype(np.uint8)  # values are within 0..top here, so nothing wraps
    for disk, canon in mapping.items():
        if disk != canon:
            out[a == disk] = canon
    return out


def from_canonical(label: np.ndarray, convention: str) -> np.ndarray:
    """Map canonical labels back to an on-disk convention (uint8)."""
    mapping = check_convention(convention)
    lut = np.zeros(4, dtype=np.uint8)
    for disk, canon in mapping.items():
        lut[canon] = disk
    return lut[np.asarray(label).astype(np.int64)]


def region_mask(label: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of one region (``"ET"``, ``"TC"`` or ``"WT"``) of a canonical map."""
    return np.isin(label, REGIONS[region])


def labels_to_regions(label: np.ndarray, order: tuple[str, ...] = REGION_CHANNELS) -> np.ndarray:
    """Canonical label map (H, W, D) -> stacked boolean regions (len(order), H, W, D)."""
    return np.stack([region_mask(label, r) for r in order])


#: how binary region masks become labels where they disagree (a TC voxel outside WT, say)
LABEL_RULES = ("overwrite", "nested", "nvidia")


def regions_to_labels(regions: np.ndarray, order: tuple[str, ...] = REGION_CHANNELS,
                      rule: str = "overwrite") -> np.ndarray:
    """Binary region masks (3, H, W, D) in ``order`` -> canonical label map.

    ``rule`` decides where the masks disagree:

    * ``"overwrite"`` (nnU-Net's region-based BraTS code): WT -> ED, then TC -> NCR, then
      ET -> ET, each overwriting the previous, so any ET voxel is ET.
    * ``"nested"`` (Futrega et al. 2021, Section 2.5): not WT -> background; else not TC
      -> ED; else not ET -> NCR; else ET. TC counts only inside WT, ET only inside TC.
    * ``"nvidia"`` (NVIDIA's public ``to_lbl``): WT -> NCR; WT and not TC -> ED; WT and ET
      -> ET. TC and ET are gated by WT only.
    """
    idx = {r: i for i, r in enumerate(order)}
    regions = np.asarray(regions).astype(bool)
    wt, tc, et = regions[idx["WT"]], regions[idx["TC"]], regions[idx["ET"]]
    out = np.zeros(regions.shape[1:], dtype=np.uint8)
    if rule == "overwrite":
        out[wt] = ED
        out[tc] = NCR
        out[et] = ET
    elif rule == "nested":
        out[wt] = ED
        out[wt & tc] = NCR
        out[wt & tc & et] = ET
    elif rule == "nvidia":
        out[wt] = NCR
        out[wt & ~tc] = ED
        out[wt & et] = ET
    else:
        raise ValueError(f"unknown label rule {rule!r}; expected one of {LABEL_RULES}")
    return out
