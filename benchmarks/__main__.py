"""Run every benchmark and write ``reports/benchmarks.md`` (``benchmarks-cuda.md`` with
``--device cuda``). Each section compares against a reference run in this process."""
import argparse
import platform
import sys
import time

from brats_lib.io import write_text
from brats_lib.manifest import hardware
from brats_lib.paths import REPO_ROOT

from . import bench_data, bench_inference, bench_layout, bench_metrics, bench_training, bench_workers
from .report import merge


def gpu_section(cuda_report, gpus: str) -> str:
    """Point to the GPU run's report, quoting its throughput table, or say how to make one."""
    how = ("`bash benchmarks/gpu.sh` (one call, about 8 minutes on one H100) runs `python -m benchmarks --device cuda "
           "--only inference training`, which measures the inference and training sections with AMP and adds "
           "NVIDIA's throughput table (final model, batch 2, 128^3, images per second; NVIDIA reports 27.5 img/s "
           "training and 68.5 img/s inference on an A100) to `reports/benchmarks-cuda.md`, then "
           "`python -m benchmarks.full_profiles --device cuda` (`reports/full-profiles-cuda.md`).")
    head = ["## GPU", ""]
    if not cuda_report.exists():
        return "\n".join(head + ["Not measured (device cpu" + ("; no GPU on this machine" if gpus == "none" else "")
                                 + "). On a GPU machine " + how])
    text = cuda_report.read_text()
    run_line = next((ln for ln in text.splitlines() if ln.startswith("Run ")), "")
    table = text.split("## Throughput", 1)[1].split("\n## ", 1)[0] if "## Throughput" in text else ""
    table = "\n".join(ln for ln in table.splitlines() if ln.startswith("|"))
    stale = []
    if "| setting |" not in text:
        stale.append("the throughput of channels-last layouts, fused Adam and torch.compile")
    if "uint8 label maps encoded to regions on the GPU" not in text:
        stale.append("the training loop's overhead and data wait with the GPU data path (uint8 targets encoded on "
                     "the device, fused Adam, no per-step host synchronisation)")
    note = (["Not measured yet, since the code changed after that run: " + "; ".join(stale) + ". "
             "They need a GPU machine."] if stale else [])
    return "\n".join(head + [f"Measured on a GPU machine in a separate run, [benchmarks-cuda.md](benchmarks-cuda.md) "
                             f"({run_line[4:].rstrip('.')}). Its throughput table:", "", table, ""] + note
                      + ([""] if note else []) + [how])


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true", help="small sizes only (no full-size case, no 128^3 training)")
    ap.add_argument("--only", nargs="*", choices=("metrics", "inference", "training", "precision", "layout", "workers", "data"),
                    help="re-run these sections; the others are kept from the existing report")
    a = ap.parse_args()
    only = set(a.only or ("metrics", "inference", "training", "precision", "layout", "workers", "data"))
    sizes = ("64^3",) if a.quick else ("64^3", "128^3", "full")
    hw = hardware()
    gpus = ", ".join(hw.get("gpus", [])) or "none"
    lines = ["# Benchmarks", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M')} by `python -m benchmarks {' '.join(sys.argv[1:])}` on "
             f"{hw['platform']}, {hw['cpu_count']} CPU cores ({hw['torch_threads']} torch threads), "
             f"{hw.get('memory_gib', '?')} GiB, GPUs: {gpus}, Python {platform.python_version()}.",
             "Every ratio compares two runs made in this same process on this machine.", ""]
    t0 = time.perf_counter()
    out = REPO_ROOT / "reports" / ("benchmarks-cuda.md" if a.device == "cuda" else "benchmarks.md")
    earlier = out.read_text() if a.only and out.exists() else None
    if earlier:  # keep the earlier header: the kept sections were measured then
        lines = earlier.split("\n## ", 1)[0].rstrip().split("\n") + [""]
    new = {}
    if "metrics" in only:
        new["metrics"] = bench_metrics.run(sizes)
    if "inference" in only:
        new["inference"] = bench_inference.run(sizes, a.device)
    if "training" in only:
        patches = ((64, 64, 64),) if a.quick else ((64, 64, 64), (128, 128, 128))
        new["training"] = bench_training.run(patches, a.device)
    if "precision" in only:
        new["precision"] = bench_training.run_precision(a.device)
    if "layout" in only:
        new["layout"] = bench_layout.run(a.device)
    if "workers" in only and a.device == "cpu":
        new["workers"] = bench_workers.run(a.device)
    if "data" in only:
        new["data"] = bench_data.run(sizes)
    stamp = f"{time.strftime('%Y-%m-%d %H:%M')} by `python -m benchmarks {' '.join(sys.argv[1:])}`"
    sections, ok = merge(new, earlier, stamp)
    for md in sections:
        lines += [md, ""]
    if a.device == "cuda":
        lines += [bench_training.run_gpu_throughput("cuda"), ""]
    else:
        lines += [gpu_section(out.with_name("benchmarks-cuda.md"), gpus), ""]
    rerun = f" (re-run: {', '.join(sorted(new))})" if earlier else ""
    lines.append(f"Total benchmark time {time.perf_counter() - t0:.0f} s{rerun}; all targets met: {'yes' if ok else 'NO'}.")
    write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {out}; all targets met: {ok}")
    return 0 if ok else 1


sys.exit(main())
