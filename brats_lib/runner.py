"""Execute notebooks headlessly with papermill into ``reports/<notebook>/``.

``run_notebook`` executes one notebook with one profile; ``reproduce`` executes them
all (the primer first, the comparison last). A failing notebook is recorded with its
error and the others still run; the executed copy is written to a temporary file and
renamed, so a report notebook is never half-written.
"""
from __future__ import annotations

import json
import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .io import write_text
from .report import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
REPORTS_DIR = REPO_ROOT / "reports"


def notebook_names() -> list[str]:
    """Notebooks in run order: the primer (``00_*``) first, ``comparison`` last."""
    names = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    return sorted(names, key=lambda n: (n == "comparison", not n.startswith("00_"), n))


@dataclass
class RunResult:
    notebook: str
    profile: str
    ok: bool
    wall_time_s: float
    output: Path
    error: str | None = None


def run_notebook(name: str, profile: str = "cpu", data_dir: str | None = None, out_dir: str | Path | None = None,
                 progress: bool = True, extra_parameters: dict | None = None) -> RunResult:
    """Execute ``notebooks/<name>.ipynb`` with ``profile``; outputs under ``out_dir``
    (default ``reports/<name>``). Returns a :class:`RunResult` (never raises for a
    failing notebook; raises for a notebook that does not exist)."""
    import papermill as pm

    src = NOTEBOOK_DIR / f"{name}.ipynb"
    if not src.exists():
        raise FileNotFoundError(f"no notebook {src}; available: {', '.join(notebook_names())}")
    out_dir = Path(out_dir) if out_dir is not None else REPORTS_DIR / name
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    params = {"profile": profile, "data_dir": data_dir, "output_dir": str(out_dir.resolve())}
    params.update(extra_parameters or {})
    log_path = out_dir / "run.log"
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    pm_logger = logging.getLogger("papermill")
    pm_logger.addHandler(handler)
    pm_logger.setLevel(logging.INFO)
    t0, error = time.perf_counter(), None
    tmp = out_dir / f".{name}.running.ipynb"
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=params, cwd=str(REPO_ROOT), kernel_name="python3",
                            progress_bar=progress, log_output=True, language="python")
        os.replace(tmp, target)
    except Exception as e:  # a failing notebook is a result, not a crash of the batch
        if hasattr(e, "ename"):  # papermill's PapermillExecutionError: the notebook's own exception
            error = f"{e.ename}: {e.evalue}"
        else:
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        write_text(out_dir / "error.txt", traceback.format_exc())
        if tmp.exists():  # keep the partly executed notebook for inspection, under its own name
            os.replace(tmp, out_dir / f"{name}.failed.ipynb")
    finally:
        pm_logger.removeHandler(handler)
        handler.close()
    if error is None:
        (out_dir / "error.txt").unlink(missing_ok=True)
        (out_dir / f"{name}.failed.ipynb").unlink(missing_ok=True)
    return RunResult(name, profile, error is None, time.perf_counter() - t0, target, error)


def reproduce(profile: str = "cpu", data_dir: str | None = None, names: list[str] | None = None,
              reports_dir: str | Path | None = None) -> list[RunResult]:
    """Run every notebook (or ``names``) in order; print a summary; never stop early."""
    names = names or notebook_names()
    results = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ({profile}) ...", flush=True)
        out = Path(reports_dir) / name if reports_dir else None
        r = run_notebook(name, profile, data_dir, out)
        status = "ok" if r.ok else f"FAILED: {r.error}"
        print(f"[{i}/{len(names)}] {name}: {status} in {r.wall_time_s:.0f} s -> {r.output.parent}", flush=True)
        results.append(r)
    write_index(results, Path(reports_dir) if reports_dir else REPORTS_DIR)
    return results


def write_index(results: list[RunResult], reports_dir: Path) -> Path:
    """``reports/README.md``: one line per notebook, rendered from the run and its manifest."""
    lines = ["# Reports", "", "Rendered by `python -m brats_lib reproduce`; every number comes from the run listed here.", "",
             "| notebook | status | profile | data source | hardware | wall time (s) | commit |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        man_path = r.output.parent / "manifest.json"
        man = json.loads(man_path.read_text()) if man_path.exists() else {}
        hw = man.get("hardware", {})
        hw_s = ", ".join(hw.get("gpus", [])) or f"{hw.get('cpu_count', '?')} CPU cores" if hw else "?"
        status = "ok" if r.ok else f"failed: {r.error}"
        rel = r.output.relative_to(reports_dir) if r.output.is_relative_to(reports_dir) else r.output
        lines.append(f"| [{r.notebook}]({rel}) | {status} | {r.profile} | {man.get('data_source', '?')} | {hw_s} | "
                     f"{r.wall_time_s:.0f} | {str(man.get('git_commit', '?'))[:12]} |")
    return write_text(reports_dir / "README.md", "\n".join(lines) + "\n")
