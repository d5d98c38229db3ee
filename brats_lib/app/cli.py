"""``python -m brats_lib``: the command line.

Subcommands::

    phantoms   --out DIR --cases N --seed S [--shape X Y Z]
    evaluate   --pred P --ref R [--out CSV] [--labels brats2021|brats2023|msd] [--json] [--jobs N]
    complexity NAME [--patch X Y Z] [--in-channels C] [--json] | --list
    run        NOTEBOOK --profile {test,cpu,full} [--data DIR] [--out DIR] [--quiet]
    reproduce  [NOTEBOOK ...] --profile P [--data DIR] [--force] [--jobs N] [--dry-run]
    index      (re-render reports/README.md from the reports on disk)
    predict    --checkpoint CKPT --case DIR --out FILE.nii.gz [--tta N] [--labels CONVENTION]
    select     METHOD [--set fold:K|phantoms:SEED ...] [--try KEY=VALUE ...] [--seeds S ...] [--workers N] [--out CSV]
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np


def _cmd_phantoms(a) -> int:
    from brats_lib.phantoms import write_phantom_dataset

    ids = write_phantom_dataset(a.out, a.cases, a.seed, tuple(a.shape), progress=True)
    print(f"wrote {len(ids)} cases to {a.out} (BraTS 2021 layout)")
    return 0


def evaluate_paths(pred: str | Path, ref: str | Path, labels: str | None = None, progress: bool = True,
                   jobs: int = 1):
    """Evaluate predictions against references (files or folders); per-case DataFrame.

    A prediction folder holds ``<case_id>.nii.gz``; a reference folder is a dataset in
    any supported layout (or flat label maps). A reference case without a prediction
    is scored as an empty prediction (as the BraTS platform does), with a warning.
    ``jobs`` > 1 scores cases in that many worker processes (same values, same order).
    """
    from tqdm.auto import tqdm

    from brats_lib import data as D
    from brats_lib.metrics import to_frame

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    pred, ref = Path(pred), Path(ref)
    if not pred.exists():
        raise FileNotFoundError(f"prediction {pred} does not exist")
    if not ref.exists():
        raise FileNotFoundError(f"reference {ref} does not exist")
    if ref.is_file():
        if not pred.is_file():
            raise ValueError(f"reference {ref} is a file, so the prediction must be a file too, got folder {pred}")
        conv = labels or "brats2021"
        pairs = [(D.case_id_from_file(ref), pred, ref, conv, conv)]
    else:
        cases = [c for c in D.discover_cases(ref, convention=labels) if c.label is not None]
        if not cases:
            raise ValueError(f"reference folder {ref} holds no label maps")
        if pred.is_file():
            if len(cases) != 1:
                raise ValueError(f"prediction {pred} is one file but reference {ref} holds {len(cases)} cases")
            pairs = [(cases[0].case_id, pred, cases[0].label, labels or "brats2021", cases[0].convention)]
        else:
            preds = D.nifti_files(pred)
            pairs = [(c.case_id, preds.get(c.case_id), c.label, labels or "brats2021", c.convention) for c in cases]
            missing = [cid for cid, p, *_ in pairs if p is None]
            if missing:
                print(f"warning: no prediction for {len(missing)} case(s) ({', '.join(missing[:5])}...): "
                      "scored as empty predictions", file=sys.stderr)
            extra = sorted(set(preds) - {c.case_id for c in cases})
            if extra:
                print(f"warning: {len(extra)} prediction(s) without reference ignored ({', '.join(extra[:5])})", file=sys.stderr)
    results = {}
    if jobs > 1 and len(pairs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(jobs, len(pairs))) as pool:
            for cid, res in tqdm(pool.map(_score_pair, pairs), total=len(pairs), desc="evaluate", disable=not progress):
                results[cid] = res
    else:
        for pair in tqdm(pairs, desc="evaluate", disable=not progress):
            cid, res = _score_pair(pair)
            results[cid] = res
    return to_frame(results)


def _score_pair(pair) -> tuple[str, dict]:
    """Read one prediction / reference pair and score it (a top-level function, so
    ``--jobs`` worker processes can run it)."""
    from brats_lib import data as D
    from brats_lib.metrics import nonzero_box, evaluate_labels

    cid, p, r, pconv, rconv = pair
    ref, rimg = D.read_label_values(r, cid)
    pred = np.zeros_like(ref) if p is None else D.read_label_values(p, cid)[0]
    if pred.shape != ref.shape:
        raise D.CaseError(cid, p, f"prediction shape {pred.shape} differs from reference {ref.shape} ({r})")
    # 0 is background in every convention, so all tumour (and every value that could be
    # invalid) lies in the box of non-zero voxels: convert and score that box only
    box = nonzero_box((pred != 0) | (ref != 0)) or tuple(slice(0, 1) for _ in ref.shape)
    pred_lab = D.canonical_labels(pred[box], pconv, cid, p)
    ref_lab = D.canonical_labels(ref[box], rconv, cid, r)
    return cid, evaluate_labels(pred_lab, ref_lab, rimg.header.get_zooms()[:3], size=ref.size)


def _cmd_evaluate(a) -> int:
    from brats_lib.io import atomic_path
    from brats_lib.metrics import with_summary

    table = with_summary(evaluate_paths(a.pred, a.ref, a.labels, progress=not a.json, jobs=a.jobs))
    if a.out:
        with atomic_path(a.out) as tmp:
            table.to_csv(tmp, float_format="%.6f")
    if a.json:
        print(json.dumps(json.loads(table.to_json(orient="index")), indent=1))
    else:
        import pandas as pd

        with pd.option_context("display.max_columns", None, "display.width", 250):
            print(table.round(4).to_string())
    return 0


def _cmd_complexity(a) -> int:
    import brats_lib.papers  # noqa: F401  (registers the papers' networks)
    from brats_lib import models
    from brats_lib.complexity import complexity

    if a.list or not a.name:
        for name, desc in models.describe().items():
            print(f"{name:28s} {desc}")
        return 0
    res = complexity(a.name, tuple(a.patch), a.in_channels)
    if a.json:
        print(json.dumps(res))
    else:
        print(f"{res['model']}: input {res['input']}")
        print(f"  parameters {res['params'] / 1e6:.3f} M")
        print(f"  MACs       {res['macs'] / 1e9:.2f} G (all ops); convolutions {res['conv_macs'] / 1e9:.2f} G")
    return 0


def _cmd_predict(a) -> int:
    import time

    import brats_lib.papers  # noqa: F401  (registers the papers' networks and post-processing)
    from brats_lib import data as D
    from brats_lib.inference import load_predictor, predict_with, write_prediction

    if not str(a.out).endswith((".nii.gz", ".nii")):
        raise ValueError(f"--out {a.out} must name a .nii.gz file")
    nets, settings = load_predictor(a.checkpoint)
    folder = Path(a.case)
    if not folder.is_dir():
        raise FileNotFoundError(f"case folder {folder} does not exist")
    case = D.case_from_folder(folder, a.labels)
    lc = D.load_case(case, with_label=False)
    t = time.perf_counter()
    labels, _ = predict_with(nets, settings, lc.image, tta=a.tta)
    path = write_prediction(a.out, labels, lc.affine, lc.header, convention=a.labels or case.convention)
    counts = {name: int((labels == v).sum()) for v, name in enumerate(("background", "NCR", "ED", "ET")) if v}
    print(f"{case.case_id}: {settings['model']} x{len(nets)}, window {settings['roi_size']}, "
          f"{settings['tta'] if a.tta is None else a.tta} flips, {time.perf_counter() - t:.1f} s -> {path} "
          f"({', '.join(f'{k} {v}' for k, v in counts.items())} voxels)")
    return 0


def _cmd_run(a) -> int:
    from brats_lib.app.runner import run_notebook

    r = run_notebook(a.notebook, a.profile, a.data, a.out, progress=not a.quiet)
    print(f"{r.notebook}: {'ok' if r.ok else 'FAILED: ' + str(r.error)} in {r.wall_time_s:.0f} s -> {r.output}")
    return 0 if r.ok else 1


def _cmd_reproduce(a) -> int:
    from brats_lib.app.runner import reproduce

    if a.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {a.jobs}")
    results = reproduce(a.profile, a.data, names=a.notebooks or None, force=a.force, jobs=a.jobs, dry_run=a.dry_run)
    if a.dry_run:
        return 0
    failed = [r.notebook for r in results if not r.ok]
    skipped = sum(r.skipped for r in results)
    print(f"{len(results) - len(failed)} of {len(results)} notebooks ok" + (f" ({skipped} current, skipped)" if skipped else "")
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _cmd_select(a) -> int:
    import torch

    from brats_lib.app import profiles
    from brats_lib.app import select as SEL
    cp = profiles.load("comparison", a.profile)
    if a.method not in SEL.C.METHODS:
        raise ValueError(f"unknown method {a.method!r}; expected one of {list(SEL.C.METHODS)}")
    candidate = SEL.parse_setting(a.try_ or [])
    settings = {"profile": {}}
    if candidate:
        settings[" ".join(a.try_)] = candidate
    sets = SEL.selection_sets(cp, a.set or SEL.default_specs(cp), a.phantoms)
    print(f"{a.method} ({a.profile} profile), sets: " + ", ".join(f"{s.name} ({len(s.train)} train / {len(s.val)} val)"
                                                                   for s in sets) + f"; training seeds {list(a.seeds)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    per_case = SEL.evaluate(a.method, settings, sets, cp, a.profile, a.seeds, device=device,
                            log=None if a.quiet else functools.partial(print, flush=True), workers=a.workers)
    if a.out:
        from brats_lib.io import write_text

        write_text(a.out, per_case.to_csv(index=False))
    print(SEL.summary(per_case).to_markdown(index=False, floatfmt=".3f"))
    if candidate:
        print(f"\n{' '.join(a.try_)} minus the profile, paired over (set, seed, case):")
        print(SEL.paired_difference(per_case, " ".join(a.try_), "profile").to_markdown(index=False, floatfmt=".3g"))
    return 0


def _cmd_index(a) -> int:
    from brats_lib.app.runner import REPORTS_DIR, write_index

    print(write_index([], REPORTS_DIR))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m brats_lib", description="brats-repro command line")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("phantoms", help="write synthetic BraTS-like cases (BraTS 2021 layout)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--cases", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shape", type=int, nargs=3, default=(96, 96, 96), metavar=("X", "Y", "Z"))
    s.set_defaults(func=_cmd_phantoms)

    s = sub.add_parser("evaluate", help="BraTS metrics of predictions against references")
    s.add_argument("--pred", required=True, help="label-map file, or folder of <case_id>.nii.gz")
    s.add_argument("--ref", required=True, help="label-map file, or dataset folder (any supported layout)")
    s.add_argument("--out", help="CSV file to write")
    s.add_argument("--labels", choices=("brats2021", "brats2023", "msd"), help="label convention of the files")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--jobs", type=int, default=1, help="score cases in N parallel processes")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("complexity", help="parameters and MACs of a registered model")
    s.add_argument("name", nargs="?")
    s.add_argument("--list", action="store_true", help="list registered model names")
    s.add_argument("--patch", type=int, nargs=3, default=(128, 128, 128), metavar=("X", "Y", "Z"))
    s.add_argument("--in-channels", type=int, default=4)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_complexity)

    s = sub.add_parser("run", help="execute one notebook with papermill into reports/<notebook>/")
    s.add_argument("notebook", help="a name from notebooks/, or the path of any .ipynb file")
    s.add_argument("--profile", choices=("test", "cpu", "full"), default="cpu")
    s.add_argument("--data", help="a real BraTS folder for every data-driven step")
    s.add_argument("--out", help="output folder (default reports/<notebook>)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_run)

    s = sub.add_parser("predict", help="segment one case with a trained predictor file")
    s.add_argument("--checkpoint", required=True, help="a predictor file written by a notebook (save_predictor)")
    s.add_argument("--case", required=True, help="a case folder in the BraTS layout")
    s.add_argument("--out", required=True, help="output label map (.nii.gz), written atomically")
    s.add_argument("--tta", type=int, help="override the number of test-time flips (1, 4 or 8)")
    s.add_argument("--labels", choices=("brats2021", "brats2023", "msd"),
                   help="label convention of the output (default: the input dataset's)")
    s.set_defaults(func=_cmd_predict)

    s = sub.add_parser("reproduce", help="execute every notebook into reports/ (current reports are skipped)")
    s.add_argument("notebooks", nargs="*", help="only these notebooks (default: all, primer first, comparison last)")
    s.add_argument("--profile", choices=("test", "cpu", "full"), default="cpu")
    s.add_argument("--data", help="a real BraTS folder for every data-driven step")
    s.add_argument("--force", action="store_true", help="re-run notebooks whose report is current")
    s.add_argument("--jobs", type=int, default=1,
                   help="notebooks run in parallel, one GPU each (comparison, which retrains every paper's model, "
                        "runs after the others)")
    s.add_argument("--dry-run", action="store_true",
                   help="list every notebook as current or to run, with the reason, and run nothing")
    s.set_defaults(func=_cmd_reproduce)

    s = sub.add_parser("select", help="try a setting for one comparison method on cases no report scores")
    s.add_argument("method", help="a comparison method, e.g. 'Cross-modality fusion'")
    s.add_argument("--profile", choices=("test", "cpu", "full"), default="cpu")
    s.add_argument("--set", action="append", metavar="fold:K|phantoms:SEED",
                   help="a selection set (repeatable; default: every fold the comparison does not train, and phantoms:101)")
    s.add_argument("--try", dest="try_", nargs="+", metavar="KEY=VALUE",
                   help="values (YAML) that replace the profile's for this method; compared, paired, with the profile")
    s.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    s.add_argument("--phantoms", type=int, default=16, help="cases of each phantoms:SEED set, half train / half val")
    s.add_argument("--workers", type=int, default=None,
                   help="models trained at once, each in a process of its own (default: the comparison profile's "
                        "workers, so that a check gets the report's numerics)")
    s.add_argument("--out", help="CSV of the per-case scores")
    s.add_argument("--quiet", action="store_true", help="no line per trained model")
    s.set_defaults(func=_cmd_select)

    s = sub.add_parser("index", help="re-render reports/README.md from the reports on disk")
    s.set_defaults(func=_cmd_index)
    return p


def main(argv: list[str] | None = None) -> int:
    from brats_lib.data import CaseError
    from brats_lib.params import ParamsError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CaseError, ParamsError, FileNotFoundError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
