#!/usr/bin/env bash
# Every GPU measurement the reports need, in one call (about 8 minutes on one H100):
#   1. python -m benchmarks --device cuda --only inference training
#      (sliding-window inference; fit's overhead over a bare loop and its data wait; NVIDIA's
#       throughput table for eager / channels-last + fused Adam / + torch.compile)
#   2. python -m benchmarks.full_profiles --device cuda
#      (measured AMP step time, peak memory and hours of every notebook's full profile)
# and copies the two reports to OUTDIR (default: reports/ only).
#
# On a machine whose Python lacks the project's lighter dependencies (monai, nibabel, ...),
# put their wheels in .whl/ first: this script installs whatever it finds there into
# /tmp/site without touching the machine's torch.
#   bash benchmarks/gpu.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv || true
"$PY" -m benchmarks --device cuda --only inference training
"$PY" -m benchmarks.full_profiles --device cuda
if [ $# -ge 1 ]; then
  mkdir -p "$1"
  cp reports/benchmarks-cuda.md reports/full-profiles-cuda.md "$1"/ 2>/dev/null || true
fi
