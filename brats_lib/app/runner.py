"""Execute notebooks headlessly with papermill into ``reports/<notebook>/``.

``run_notebook`` executes one notebook with one profile; ``reproduce`` executes them
all (the primer first, the comparison last). A failing notebook is recorded with its
error and the others still run; the executed copy is written to a temporary file and
renamed, so a report notebook is never half-written.

A report folder is one run. A notebook runs into a staging folder beside its report,
``reports/.<notebook>.staging/``; only when it finished is ``reports/<notebook>/``
replaced, whole, by the staging folder. A notebook that fails, or a run that is killed,
leaves the previous report byte-identical, with the error (``error.txt``), the log and
the partly executed notebook (``<notebook>.failed.ipynb``) in the staging folder beside
it. A notebook opened by hand (JupyterLab, papermill) never writes into ``reports/``:
see :func:`brats_lib.app.session.output_folder`.

The parameter file is validated before anything is executed or written. A finished
run leaves ``run.json`` in its report: the profile and a fingerprint of everything
that changes results (:func:`fingerprint`). ``reproduce`` skips a notebook whose
``run.json`` matches (unless ``force``), so a batch that was interrupted continues
where it stopped; ``reproduce --dry-run`` says, per notebook, whether it is current or
why it would run (:func:`stale_reasons`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from brats_lib.io import write_text
from brats_lib.paths import CACHE_DIR, NOTEBOOK_DIR, PARAMS_DIR, REAL_DIR, REPO_ROOT, REPORTS_DIR, SPLITS_DIR


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
    skipped: bool = False


STAMP = "run.json"


def _hash_files(paths: list[Path], root: Path | None = None) -> str:
    """One hash over the files' names (relative to ``root``, else bare) and contents."""
    h = hashlib.sha256()
    for path in sorted(paths):
        label = str(path.relative_to(root)) if root else f"{path.parent.name}/{path.name}"
        h.update(label.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _hash_parameters(paths: list[Path]) -> str:
    """One hash over parameter files' names and parsed values (canonical JSON): a profile
    whose comments alone change (a record of a check, a reworded reason) keeps its reports
    current; a changed value, key or file makes them stale."""
    import yaml

    h = hashlib.sha256()
    for path in sorted(paths):
        values = json.dumps(yaml.safe_load(path.read_text()), sort_keys=True, default=str)
        h.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + values.encode() + b"\0")
    return h.hexdigest()


def _source(notebook: str | Path) -> Path:
    """``notebooks/<name>.ipynb``, or ``notebook`` itself when it is a path to an .ipynb file."""
    return Path(notebook) if str(notebook).endswith(".ipynb") else NOTEBOOK_DIR / f"{notebook}.ipynb"


def _file_digest(path: Path, cache: dict) -> str:
    """sha256 of a file's content, reused from ``cache`` while its size and
    modification time are unchanged (so a large data folder is hashed once)."""
    st = path.stat()
    key = str(path.resolve())
    hit = cache.get(key)
    if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    cache[key] = [st.st_size, st.st_mtime_ns, h.hexdigest()]
    return cache[key][2]


DIGEST_CACHE = CACHE_DIR / "file-digests.json"


def folder_digest(folder: str | Path | None, cache_file: Path | None = None) -> str | None:
    """One hash over the relative names, sizes and contents of every file under
    ``folder`` (None when absent). Content hashes are cached by size and modification
    time in ``cache_file`` (default ``.cache/file-digests.json``, git-ignored)."""
    if folder is None or not Path(folder).is_dir():
        return None
    folder, cache_file = Path(folder), cache_file or DIGEST_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    before = len(json.dumps(cache))
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder)}\0{path.stat().st_size}\0{_file_digest(path, cache)}\0".encode())
    if len(json.dumps(cache)) != before:
        try:
            write_text(cache_file, json.dumps(cache))
        except OSError:  # a read-only checkout still fingerprints, only more slowly
            pass
    return h.hexdigest()


def _profile(name: str, profile: str, data_dir: str | None, overrides: dict | None):
    """The validated parameters a run of ``name`` would use (None without a schema)."""
    from brats_lib.app import profiles as params

    if not (PARAMS_DIR / name).is_dir():
        return None
    return params.load(name, profile, params_dir=PARAMS_DIR, data_dir=data_dir, **(overrides or {}))


def _split_files(p) -> dict[str, str]:
    """{split file: content hash} of every split file a parameter set names."""
    import dataclasses

    if p is None:
        return {}
    out = {}
    for f in dataclasses.fields(p):
        value = getattr(p, f.name)
        path = SPLITS_DIR / f"{value}.json" if isinstance(value, str) and "/" not in value else None
        if path is not None and path.is_file():
            out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def environment() -> dict:
    """What the installed software and the device add to a run: library versions,
    Python, the device kind (CPU or the GPUs' names) and the precision training uses."""
    import torch

    from brats_lib.manifest import versions
    from brats_lib.precision import precision_name

    cuda = torch.cuda.is_available()
    kind = ("cuda: " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
            if cuda else "cpu")
    return {"versions": {**versions(), "torch_cuda": torch.version.cuda if cuda else None},
            "device": {"kind": kind, "precision": precision_name("cuda" if cuda else "cpu")}}


def fingerprint(notebook: str | Path, profile: str, data_dir: str | None = None,
                extra_parameters: dict | None = None) -> dict:
    """Everything a report of ``notebook`` under ``profile`` depends on: the package
    code and packaging, the notebook, its parameter profile's values (for ``comparison``,
    every paper's profile of that name too; comments do not count), every split file those name, the data folder
    (names, sizes and contents; whether it came from ``--data`` or the profile's
    ``data_dir``), the real-case folder, library versions, Python, device and precision."""
    from brats_lib.paths import resolve

    src = _source(notebook)
    code = [p for p in (REPO_ROOT / "brats_lib").rglob("*.py")] + [REPO_ROOT / "pyproject.toml"]
    profiles = [p for p in [PARAMS_DIR / src.stem / f"{profile}.yaml"] if p.exists()]
    if src.stem == "comparison":  # it trains every paper's model with that paper's profile
        profiles += sorted(p for p in PARAMS_DIR.glob(f"*/{profile}.yaml") if p.parent.name != "comparison")
    overrides = (extra_parameters or {}).get("overrides")
    p = _profile(src.stem, profile, data_dir, overrides) if src.exists() else None
    data = resolve(getattr(p, "data_dir", None) or data_dir)
    real = resolve(getattr(p, "real_dir", None)) if p is not None else REAL_DIR
    env = environment()
    return {"profile": profile,
            "code": _hash_files([p for p in code if p.exists()], REPO_ROOT),
            "notebook": _hash_files([src]) if src.exists() else None,
            "parameters": _hash_parameters(profiles),
            "splits": _split_files(p),
            "data": folder_digest(data) if data else "phantoms",
            "real": folder_digest(real),
            "overrides": json.dumps(extra_parameters or {}, sort_keys=True, default=str),
            "versions": env["versions"],
            "device": env["device"]}


#: fingerprint key -> the reason a changed value gives for re-running
REASONS = {"profile": "profile", "code": "code", "notebook": "notebook", "parameters": "parameters",
           "overrides": "parameters", "splits": "split file", "data": "data", "real": "real cases",
           "versions": "versions", "device": "device"}


def _difference(key: str, old, new) -> str:
    reason = REASONS.get(key, key)
    if old is None and key in ("splits", "versions", "device"):
        return f"{reason} (not recorded by the earlier run)"
    if key == "splits" and isinstance(old, dict) and isinstance(new, dict):
        changed = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
        return f"{reason} ({', '.join(changed)})"
    if isinstance(old, dict) and isinstance(new, dict):
        changed = [f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return f"{reason} ({'; '.join(changed)})"
    return reason


def stale_reasons(name: str, profile: str, data_dir: str | None = None, out_dir: str | Path | None = None,
                  extra_parameters: dict | None = None) -> list[str]:
    """Why ``out_dir`` (default ``reports/<name>``) would be re-made: an empty list when
    it holds a finished report made from the same code, notebook, parameters, split
    files, data, library versions and device; else the reasons (``no report``,
    ``code``, ``notebook``, ``parameters``, ``split file (...)``, ``data``,
    ``versions (...)``, ``device (...)``, ...)."""
    out_dir = Path(out_dir) if out_dir is not None else REPORTS_DIR / name
    _recover(out_dir)
    stamp = out_dir / STAMP
    if not stamp.exists() or not (out_dir / f"{name}.ipynb").exists():
        return ["no report"]
    try:
        done = json.loads(stamp.read_text()).get("fingerprint") or {}
    except ValueError:
        return ["no report"]
    now = fingerprint(_source(name), profile, data_dir, extra_parameters)
    reasons = [_difference(k, done.get(k), v) for k, v in now.items() if done.get(k) != v]
    return list(dict.fromkeys(reasons))


def is_current(name: str, profile: str, data_dir: str | None = None, out_dir: str | Path | None = None,
               extra_parameters: dict | None = None) -> bool:
    """True when ``out_dir`` (default ``reports/<name>``) holds a finished report made
    from the same inputs (see :func:`stale_reasons`)."""
    return not stale_reasons(name, profile, data_dir, out_dir, extra_parameters)


def staging_folder(out_dir: Path) -> Path:
    """Where a run of the report ``out_dir`` writes until it has finished."""
    return out_dir.parent / f".{out_dir.name}.staging"


def _previous(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.previous"


def _recover(out_dir: Path) -> None:
    """Finish a swap that was killed between its two renames: the previous report is
    put back where no new one took its place, and dropped where one did."""
    prev = _previous(out_dir)
    if prev.exists():
        if out_dir.exists():
            shutil.rmtree(prev)
        else:
            os.replace(prev, out_dir)


def _publish(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` whole by ``staging`` (two renames; see :func:`_recover`)."""
    _recover(out_dir)
    prev = _previous(out_dir)
    if out_dir.exists():
        os.replace(out_dir, prev)
    os.replace(staging, out_dir)
    shutil.rmtree(prev, ignore_errors=True)


def _validate_parameters(name: str, profile: str, data_dir: str | None) -> None:
    """Check the notebook's parameter file before anything runs (a notebook without a
    parameter folder has nothing to check)."""
    from brats_lib.app import profiles as params

    if (PARAMS_DIR / name).is_dir():
        params.load(name, profile, params_dir=PARAMS_DIR, data_dir=data_dir)


def run_notebook(name: str, profile: str = "cpu", data_dir: str | None = None, out_dir: str | Path | None = None,
                 progress: bool = True, extra_parameters: dict | None = None) -> RunResult:
    """Execute ``notebooks/<name>.ipynb`` (or ``name`` itself when it is a path to an
    ``.ipynb`` file) with ``profile``; outputs under ``out_dir``
    (default ``reports/<name>``), which is replaced whole only when the notebook
    finished (it runs in :func:`staging_folder` until then). Returns a
    :class:`RunResult` (never raises for a failing notebook; raises for a notebook that
    does not exist and, before anything is written, for a parameter file that does not
    fit its schema)."""
    import papermill as pm

    src = _source(name)
    name = src.stem
    if not src.exists():
        raise FileNotFoundError(f"no notebook {src}; available: {', '.join(notebook_names())}")
    _validate_parameters(name, profile, data_dir)
    stamp = fingerprint(src, profile, data_dir, extra_parameters)
    out_dir = Path(out_dir) if out_dir is not None else REPORTS_DIR / name
    _recover(out_dir)
    stage = staging_folder(out_dir)
    shutil.rmtree(stage, ignore_errors=True)  # what a failed or killed run left
    stage.mkdir(parents=True)
    target = out_dir / f"{name}.ipynb"
    params = {"profile": profile, "data_dir": data_dir, "output_dir": str(stage.resolve())}
    params.update(extra_parameters or {})
    log_path = stage / "run.log"
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    pm_logger = logging.getLogger("papermill")
    pm_logger.addHandler(handler)
    pm_logger.setLevel(logging.INFO)
    t0, error = time.perf_counter(), None
    tmp = stage / f".{name}.running.ipynb"
    try:
        pm.execute_notebook(str(src), str(tmp), parameters=params, cwd=str(REPO_ROOT), kernel_name="python3",
                            progress_bar=progress, log_output=True, language="python")
        os.replace(tmp, stage / target.name)
    except Exception as e:  # a failing notebook is a result, not a crash of the batch
        if hasattr(e, "ename"):  # papermill's PapermillExecutionError: the notebook's own exception
            error = f"{e.ename}: {e.evalue}"
        else:
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        write_text(stage / "error.txt", traceback.format_exc())
        if tmp.exists():  # keep the partly executed notebook for inspection, under its own name
            os.replace(tmp, stage / f"{name}.failed.ipynb")
    finally:
        pm_logger.removeHandler(handler)
        handler.close()
    wall = time.perf_counter() - t0
    if error is None:
        write_text(stage / STAMP, json.dumps({"notebook": name, "wall_time_s": round(wall, 1),
                                              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                              "fingerprint": stamp}, indent=1) + "\n")
        _publish(stage, out_dir)
    return RunResult(name, profile, error is None, wall, target if error is None else stage / f"{name}.failed.ipynb",
                     error)


def _run_in_subprocess(name: str, profile: str, data_dir: str | None, out_dir: Path, gpu: int | None) -> RunResult:
    """``python -m brats_lib run`` in a child process pinned to one GPU (``--jobs``)."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    cmd = [sys.executable, "-m", "brats_lib", "run", str(NOTEBOOK_DIR / f"{name}.ipynb"), "--profile", profile, "--out", str(out_dir), "--quiet"]
    if data_dir:
        cmd += ["--data", str(data_dir)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    error = None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).strip().splitlines() if ln.strip()]
        error = lines[-1] if lines else f"exit code {r.returncode}"
    output = out_dir / f"{name}.ipynb" if error is None else staging_folder(out_dir) / f"{name}.failed.ipynb"
    return RunResult(name, profile, r.returncode == 0, time.perf_counter() - t0, output, error)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch is a dependency; be safe anyway
        return 0


def plan(profile: str = "cpu", data_dir: str | None = None, names: list[str] | None = None,
         reports_dir: str | Path | None = None, force: bool = False) -> list[tuple[str, list[str]]]:
    """``[(notebook, reasons)]``: what ``reproduce`` would do, without running anything;
    an empty list of reasons means the report is current and would be skipped."""
    root = Path(reports_dir) if reports_dir else REPORTS_DIR
    out = []
    for name in names or notebook_names():
        reasons = stale_reasons(name, profile, data_dir, root / name)
        out.append((name, reasons or (["--force"] if force else [])))
    return out


def reproduce(profile: str = "cpu", data_dir: str | None = None, names: list[str] | None = None,
              reports_dir: str | Path | None = None, force: bool = False, jobs: int = 1,
              dry_run: bool = False) -> list[RunResult]:
    """Run every notebook (or ``names``) in order; print a summary; never stop early.

    A notebook whose report is current (see :func:`stale_reasons`) is skipped unless
    ``force``. With ``jobs`` > 1 the notebooks before ``comparison`` run in parallel,
    each in its own process pinned to one GPU (GPU ``i % count``; none on a CPU machine),
    and ``comparison``, which retrains every paper's model, runs after them, alone.
    ``dry_run`` prints, per notebook, "current" or "would run" with the reasons, and
    runs nothing (the results are then all ``skipped``).
    """
    names = names or notebook_names()
    for name in names:  # every parameter file is checked before the first notebook starts
        if (NOTEBOOK_DIR / f"{name}.ipynb").exists():
            _validate_parameters(name, profile, data_dir)
    root = Path(reports_dir) if reports_dir else REPORTS_DIR
    n, results = len(names), {}
    if dry_run:
        out = []
        for i, (name, reasons) in enumerate(plan(profile, data_dir, names, root, force), 1):
            print(f"[{i}/{n}] {name}: " + (f"would run ({', '.join(reasons)})" if reasons else "current"), flush=True)
            out.append(RunResult(name, profile, True, 0.0, root / name / f"{name}.ipynb", skipped=True))
        return out

    def one(i: int, name: str, gpu: int | None = None, child: bool = False) -> RunResult:
        out = root / name
        if not force and is_current(name, profile, data_dir, out):
            done = json.loads((out / STAMP).read_text())
            r = RunResult(name, profile, True, float(done.get("wall_time_s", 0.0)), out / f"{name}.ipynb", skipped=True)
            print(f"[{i}/{n}] {name}: skipped, its report is current (run with --force to redo it)", flush=True)
            return r
        print(f"[{i}/{n}] {name} ({profile}) ... log: {staging_folder(out) / 'run.log'}", flush=True)
        r = _run_in_subprocess(name, profile, data_dir, out, gpu) if child else run_notebook(name, profile, data_dir, out)
        status = "ok" if r.ok else f"FAILED: {r.error}"
        print(f"[{i}/{n}] {name}: {status} in {r.wall_time_s:.0f} s -> {out}", flush=True)
        return r

    if jobs > 1:
        parallel = [nm for nm in names if nm != "comparison"]
        gpus = _gpu_count()
        slots: queue.Queue[int] = queue.Queue()
        for k in range(jobs):
            slots.put(k)

        def in_slot(nm: str) -> RunResult:
            k = slots.get()  # a free slot: no two running notebooks share a GPU (with >= jobs GPUs)
            try:
                return one(names.index(nm) + 1, nm, k % gpus if gpus else None, True)
            finally:
                slots.put(k)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {nm: pool.submit(in_slot, nm) for nm in parallel}
            results.update({nm: f.result() for nm, f in futures.items()})
    for i, name in enumerate(names, 1):
        if name not in results:
            results[name] = one(i, name)
    ordered = [results[nm] for nm in names]
    write_index(ordered, root)
    return ordered


#: the primer's and the comparison's headline tables (``tables/<name>.md``) and lessons; each
#: paper's come from its package (``brats_lib/papers/<paper>/paper.py``: HEADLINE, LESSON)
HEADLINES = {"00_data_and_metrics": "empty_region_rules", "comparison": "summary"}
LESSONS = {
    "00_data_and_metrics": "the BraTS task: modalities, labels vs regions, Dice and HD95 and their empty-region rules",
    "comparison": "the five papers on the same folds: ranking, significance and the cost of accuracy",
}
#: a suggested order for a course
COURSE_ORDER = ("00_data_and_metrics", "optimized_unet", "hnfnetv2", "attention_r2unet_mtds", "omnet_cga",
                "cross_modality", "comparison")


def headlines_and_lessons() -> tuple[dict[str, str], dict[str, str]]:
    """Every notebook's headline table and lesson (the papers' read from their packages)."""
    from brats_lib import papers

    return {**HEADLINES, **papers.HEADLINES}, {**LESSONS, **papers.LESSONS}


def write_index(results: list[RunResult], reports_dir: Path) -> Path:
    """``reports/README.md`` rendered from the runs and their manifests: one line per
    notebook (status, profile, data source, hardware, wall time, commit), a suggested
    course order, then each report's headline table. Notebooks not in ``results`` but
    with a finished report (``run.json``) under ``reports_dir`` are listed from it."""
    ran = {r.notebook for r in results}
    for name in notebook_names():
        stamp, man = reports_dir / name / STAMP, reports_dir / name / "manifest.json"
        if name in ran or not (reports_dir / name / f"{name}.ipynb").exists():
            continue
        if stamp.exists():
            done = json.loads(stamp.read_text())
            profile, wall = done["fingerprint"]["profile"], float(done["wall_time_s"])
        elif man.exists():  # a report executed before run.json existed: listed from its manifest
            done = json.loads(man.read_text())
            profile, wall = done.get("profile", "?"), float(done.get("wall_time_s") or 0.0)
        else:
            continue
        results = results + [RunResult(name, profile, True, wall, reports_dir / name / f"{name}.ipynb", skipped=True)]
    order = {n: i for i, n in enumerate(notebook_names())}
    results = sorted(results, key=lambda r: order.get(r.notebook, len(order)))
    lines = ["# Reports", "", "Rendered by `python -m brats_lib reproduce` (or `index`); every number comes from the run listed here.", "",
             "| notebook | status | profile | data source | hardware | wall time (s) | commit |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        man_path = r.output.parent / "manifest.json"
        man = json.loads(man_path.read_text()) if man_path.exists() else {}
        hw = man.get("hardware", {})
        hw_s = ", ".join(hw.get("gpus", [])) or f"{hw.get('cpu_count', '?')} CPU cores" if hw else "?"
        status = ("ok (earlier run)" if r.skipped else "ok") if r.ok else f"failed: {r.error}"
        rel = r.output.relative_to(reports_dir) if r.output.is_relative_to(reports_dir) else r.output
        lines.append(f"| [{r.notebook}]({rel}) | {status} | {r.profile} | {man.get('data_source', '?')} | {hw_s} | "
                     f"{r.wall_time_s:.0f} | {str(man.get('git_commit', '?'))[:12]} |")
    names = [r.notebook for r in results]
    headlines, lessons = headlines_and_lessons()
    course = [(n, lessons[n]) for n in COURSE_ORDER if n in names and n in lessons]
    if course:
        lines += ["", "## A course through the notebooks", ""]
        lines += [f"{i}. [{n}]({n}/{n}.ipynb): {what}" for i, (n, what) in enumerate(course, 1)]
    for r in results:
        table = r.output.parent / "tables" / f"{headlines.get(r.notebook, '')}.md"
        if r.ok and r.notebook in headlines and table.exists():
            lines += ["", f"## {r.notebook}: `{table.stem}`", "", table.read_text().rstrip()]
    return write_text(reports_dir / "README.md", "\n".join(lines) + "\n")
