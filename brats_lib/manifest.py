"""The manifest of a notebook run (``reports/<notebook>/manifest.json``): git commit,
profile, data source, hardware, library versions, precision, seed, wall time.

* :func:`manifest` / :func:`write_manifest` - build / write it (atomically).
* :func:`hardware`, :func:`versions`, :func:`git_commit` - its parts.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Mapping

from .io import write_text
from .paths import REPO_ROOT

LIBRARIES = ("torch", "monai", "numpy", "scipy", "nibabel", "pandas", "matplotlib", "papermill")


def git_commit(root: Path = REPO_ROOT) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name and its bfloat16 instructions (``amx_bf16``, ``avx512_bf16``):
    wall times in two manifests compare only on the same model (one cpu profile took
    1.4x as long on one 2-core machine as on another). ``cpuinfo``: the text of
    ``/proc/cpuinfo`` (read when None); ``platform.processor()`` where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f in fields.get("flags", "").split()]
    return name + (f", {' + '.join(bf16)}" if bf16 else "")


def hardware() -> dict:
    import torch

    hw = {"platform": platform.platform(), "processor": platform.machine(), "cpu_model": cpu_model(),
          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()}
    try:
        hw["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return hw


def versions() -> dict:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def precisions(amp: bool | Mapping[str, bool], device_type: str) -> tuple[str, dict[str, str] | None]:
    """The manifest's ``precision`` for ``amp`` (a notebook's parameter) on ``device_type``:
    its name (:func:`~brats_lib.precision.precision_name`). ``amp`` may map the networks
    of a report that mixes papers (the comparison) to each one's parameter: then the name
    they share, or ``"mixed"``, and the name per network."""
    from .precision import precision_name

    if isinstance(amp, Mapping):
        each = {k: precision_name(device_type, bool(v)) for k, v in amp.items()}
        names = set(each.values())
        return (names.pop() if len(names) == 1 else "mixed"), each
    return precision_name(device_type, bool(amp)), None


def manifest(notebook: str, profile: str, data_source: str, seed: int, wall_time_s: float | None = None,
             amp: bool | Mapping[str, bool] = True, **extra) -> dict:
    """What a report's ``manifest.json`` holds: the run's notebook, profile, data, seed,
    commit, hardware, library versions, the precision its networks ran in (``amp``: the
    notebook's parameter, or a mapping of several networks' parameters, which adds
    ``precision_by_network``; :func:`precisions`), wall time and ``extra`` keys."""
    import torch

    name, each = precisions(amp, "cuda" if torch.cuda.is_available() else "cpu")
    if each is not None:
        extra = {"precision_by_network": each, **extra}
    return {"notebook": notebook, "profile": profile, "data_source": data_source, "seed": seed,
            "git_commit": git_commit(), "hardware": hardware(), "versions": versions(),
            "precision": name,
            "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def write_manifest(out_dir: str | Path, **kwargs) -> dict:
    m = manifest(**kwargs)
    write_text(Path(out_dir) / "manifest.json", json.dumps(m, indent=2, default=str) + "\n")
    return m
