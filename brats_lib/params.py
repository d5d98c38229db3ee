"""Notebook parameters: ``params/<notebook>/<profile>.yaml``, validated before any work.

Each notebook has a schema, a dataclass registered here with :func:`schema`. Loading
a profile reads the YAML with ``yaml.safe_load`` (no code execution) and checks it
against the schema: an unknown key, a value of the wrong type or a missing required
value raises :class:`ParamsError` naming the file and the key. Nothing in a
parameter file is ever evaluated, and a value that names a file the notebook writes
(type :class:`FileName`) must be a plain name, so no parameter can point a write
outside the folder it belongs in.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .paths import PARAMS_DIR

PROFILES = ("test", "cpu", "full")
_SCHEMAS: dict[str, type] = {}


class ParamsError(ValueError):
    """A parameter file does not fit its notebook's schema."""


class FileName(str):
    """Schema type of a value used as a file name inside a fixed folder (a split file's
    name, say): letters, digits, ``.``, ``_`` and ``-``, not starting with a dot, so it
    can neither climb out of its folder (``../``) nor name a sub-folder."""

    PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

    @classmethod
    def check(cls, value: str, where: str = "file name") -> str:
        if not isinstance(value, str) or not cls.PATTERN.fullmatch(value):
            raise ParamsError(f"{where}: {value!r} must be a plain file name (letters, digits, '.', '_', '-'; "
                              "no '/' and no leading dot)")
        return value


def schema(notebook: str):
    """Class decorator: make ``cls`` a keyword-only dataclass and register it as the
    parameter schema of ``notebook``. Schemas live beside their code (a paper's in
    ``brats_lib/papers/<paper>/params.py``); :mod:`brats_lib.app.profiles` imports them all."""

    def deco(cls):
        _SCHEMAS[notebook] = dataclasses.dataclass(cls, kw_only=True)
        return _SCHEMAS[notebook]

    return deco


def get_schema(notebook: str) -> type:
    try:
        return _SCHEMAS[notebook]
    except KeyError:
        raise ParamsError(f"no parameter schema for notebook {notebook!r}; registered: {sorted(_SCHEMAS)} "
                          "(brats_lib.app.profiles registers every notebook's)") from None


def registered() -> list[str]:
    """Notebooks whose schema has been registered (imported) so far."""
    return sorted(_SCHEMAS)


# ------------------------------------------------------------------ the fields every schema shares
@dataclasses.dataclass(kw_only=True)
class DataParams:
    """Where a notebook's cases come from (every notebook)."""

    seed: int
    #: phantom cases generated (ignored when ``data_dir`` is set) and their shape
    phantom_cases: int
    phantom_shape: list[int]
    #: a real BraTS folder (any supported layout); None uses phantoms
    data_dir: str | None = None
    #: folder of real BraTS-space test cases shown beside the phantoms; skipped if absent
    real_dir: str | None = "../shared/data/real"


@dataclasses.dataclass(kw_only=True)
class FoldParams(DataParams):
    """Cross-validation on a committed split file."""

    #: name of the fixed split file ``params/splits/<name>.json`` (created on first use)
    splits: FileName
    #: folds of the split file, and how many of them are trained
    n_folds: int
    folds: int
    progress: bool = True


@dataclasses.dataclass(kw_only=True)
class TrainingParams(FoldParams):
    """A paper notebook: folds, mixed precision, loader workers, real cases in its figures."""

    #: real cases segmented for the qualitative figures (0 = none)
    real_cases: int = 1
    #: isotropic voxel size (mm) the real cases of the figures are resampled to before they
    #: are segmented (:func:`brats_lib.data.resample_case`): networks trained on 48^3
    #: phantoms (a brain about 40 voxels across) meet a 1 mm BraTS case at their own scale
    #: at about 4 mm; None keeps the real cases as they are (a network trained on them)
    real_spacing: float | None = None
    #: mixed precision (float16 on CUDA, bfloat16 on CPUs that have it; :mod:`brats_lib.precision`)
    amp: bool = True
    #: channels-last weights and inputs (:class:`~brats_lib.training.TrainConfig`): NDHWC for
    #: 3D networks, NHWC for 2D ones; a layout, not a model change; 1.2-1.5x faster training
    #: steps on some CPUs (``benchmarks``), slower on others, so each profile says
    channels_last: bool = False
    num_workers: int = 0


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, where)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(f"{where}: {value!r} does not match {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ParamsError(f"{where}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ParamsError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ParamsError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ParamsError(f"{where}: expected a number, got {value!r}")
    if tp is FileName:
        return FileName.check(value, where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ParamsError(f"{where}: expected a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ParamsError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_check_type(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        return [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        k_t, v_t = typing.get_args(tp) or (Any, Any)
        return {_check_type(k, k_t, where): _check_type(v, v_t, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return validate(value, tp, where)
    raise ParamsError(f"{where}: unsupported type {tp}")


def validate(values: dict, cls: type, where: str = "parameters"):
    """Build ``cls`` from ``values``, checking keys and types; errors name the key."""
    if not isinstance(values, dict):
        raise ParamsError(f"{where}: expected a mapping of keys to values, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ParamsError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        if name in values:
            kwargs[name] = _check_type(values[name], hints[name], f"{where}: key {name!r}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{where}: required key {name!r} is missing")
    return cls(**kwargs)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: parameter file does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})") from None
    return data or {}


def load(notebook: str, profile: str = "cpu", params_dir: str | Path | None = None, **overrides):
    """Validated parameters of ``notebook`` for ``profile``; keyword ``overrides`` that
    are not None replace file values (and are validated the same way)."""
    if profile not in PROFILES:
        raise ParamsError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    path = Path(params_dir or PARAMS_DIR) / notebook / f"{profile}.yaml"
    values = read_yaml(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return validate(values, get_schema(notebook), str(path))


def as_dict(p) -> dict:
    return dataclasses.asdict(p)
