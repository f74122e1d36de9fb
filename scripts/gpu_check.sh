#!/usr/bin/env bash
# Check a CUDA machine in one command, from a fresh clone with torch already installed:
# installs asa from this checkout (pip install -e ".[test]", torch left as it is) and runs
# `python -m benchmarks.gpu`: the CUDA tests, the 128³ benchmarks (fp16, bf16), a torchrun (NCCL)
# pretraining killed and resumed, asa-predict of a full-size BraTS case and the fine-tuning step
# against MONAI's UNETR and SwinUNETR, within 9 minutes on one H100. docs/gpu-check.md.
#
#   scripts/gpu_check.sh OUT_DIR                 # writes OUT_DIR/{gpu_check.json,benchmarks_row.md,gpu_check.log}
#   scripts/gpu_check.sh OUT_DIR --dry-run       # toy sizes on the CPU (what CI runs)
#   ASA_WHEELS=.wheels scripts/gpu_check.sh OUT  # no package index: the missing packages from .wheels
#                                                # (scripts/gpu_wheels.sh .wheels fetches them elsewhere)
#
# Extra arguments go to python -m benchmarks.gpu (--budget S, --parts ...). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/gpu_check.sh OUT_DIR [--dry-run] [--budget SECONDS] [--parts PART ...]}"
shift
PY="${PYTHON:-python3}"
"$PY" -c "import torch" 2>/dev/null || { echo "gpu_check: install torch first (this script keeps the installed one)" >&2; exit 2; }
start=$(date +%s)
if [ -n "${ASA_WHEELS:-}" ]; then  # offline: the wheels folder and what is installed; no build isolation
    "$PY" -m pip install -q --no-index --find-links "$ASA_WHEELS" --no-build-isolation -e ".[test]"
else
    "$PY" -m pip install -q -e ".[test]"
fi
echo "gpu_check: asa installed from $(pwd) in $(( $(date +%s) - start )) s (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
exec "$PY" -m benchmarks.gpu --out "$OUT" "$@"
