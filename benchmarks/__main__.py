"""Run every benchmark and write ``reports/benchmarks.md``."""
import platform
import sys
import time
from pathlib import Path

from brats_lib.io import write_text
from brats_lib.report import REPO_ROOT, hardware

from . import bench_metrics

BENCHES = [bench_metrics]


def main() -> int:
    hw = hardware()
    lines = ["# Benchmarks", "", f"Run {time.strftime('%Y-%m-%d %H:%M')} on {hw['platform']}, "
             f"{hw['cpu_count']} CPU cores, {hw.get('memory_gib', '?')} GiB, CUDA: {hw['cuda']}, Python {platform.python_version()}.",
             "Ratios compare two runs made in this same process.", ""]
    ok = True
    for b in BENCHES:
        md, passed = b.run()
        lines += [md, ""]
        ok &= passed
    out = REPO_ROOT / "reports" / "benchmarks.md"
    write_text(out, "\n".join(lines))
    print(f"wrote {out}")
    return 0 if ok else 1


sys.exit(main())
