#!/usr/bin/env bash
# The `asa-pretrain` loop and the masked CNN step on one CUDA machine, in one command that fits a 9-minute window
# (BENCHMARKS.md, "The asa-pretrain loop at the defaults"): installs asa from this checkout (torch left as it is;
# ASA_WHEELS=DIR for a machine without a package index, see scripts/gpu_wheels.sh), then, each part with a time
# limit and its figures in OUT_DIR as soon as it ends:
#   1. masked / dense: the masked-convolution step beside the dense one, ResEnc S (batch 8) and L (M at 160³, batch
#      4) at 160³, bf16, with the visible-only norm's earlier fp32 statistics timed beside (benchmarks.resenc --fp32-norm);
#   2. the loop at asa-pretrain's defaults (trainer=default: deterministic kernels, validation every epoch, last.pt
#      every trainer.ckpt_every steps): SW-ViT base 128³ on 192 cases (24 steps an epoch at batch 8), then the same
#      with trainer.deterministic=false, then ResEnc-L 160³ on 64 cases (benchmarks.loop).
#
#   scripts/gpu_loop_check.sh OUT_DIR [WORK_DIR]      # every log and figure in OUT_DIR/results.tgz, after each part
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/gpu_loop_check.sh OUT_DIR [WORK_DIR]}"
WORK="${2:-/tmp/asa-loop-check}"
PY="${PYTHON:-python3}"
RES="$WORK/results"
mkdir -p "$OUT" "$RES"
export PYTHONUNBUFFERED=1
start=$(date +%s)
if [ -n "${ASA_WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --find-links "$ASA_WHEELS" --no-build-isolation -e . > "$RES/install.log" 2>&1
else
    "$PY" -m pip install -q -e . > "$RES/install.log" 2>&1
fi || { echo "gpu_loop_check: install failed, see $OUT/install.log"; tail -5 "$RES/install.log"; exit 1; }
echo "gpu_loop_check: installed in $(( $(date +%s) - start )) s; $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"

part() {  # NAME LIMIT_S command...: run with a time limit, output in OUT/NAME.log
    local name="$1" limit="$2"; shift 2
    local t0=$(date +%s)
    timeout -k 10 "$limit" "$@" > "$RES/$name.log" 2>&1
    echo "gpu_loop_check: $name exit $? after $(( $(date +%s) - t0 )) s"
    tar czf "$OUT/results.tgz" -C "$WORK" results
}

masked() {  # NAME SIZE BATCH
    part "$1" 120 "$PY" -m benchmarks.resenc --crop 160 --size "$2" --batch "$3" --amp bf16 --swvit none --repeats 4 \
        --fp32-norm --json "$RES/$1.json"
    grep -h -E '"(size|batch|masked_over_dense|fp32_norm_over_dense)"' "$RES/$1.log"
}
masked masked_S S 8
masked masked_L M 4  # ResEnc-L at batch 4: at 8 it holds 70 of the 80 GiB and every step runs at a fifth of its rate
loop() {  # NAME CASES VOLUME benchmarks.loop options...
    local name="$1" cases="$2" volume="$3"; shift 3
    part "$name" 150 "$PY" -m benchmarks.loop --make-data "$WORK/data" --cases "$cases" --volume "$volume" \
        --batch 8 --workers 8 --warmup 5 --device cuda --run-dir "$WORK/runs/$name" --out "$RES/$name.json" "$@"
    [ -f "$RES/$name.txt" ] && cat "$RES/$name.txt" || tail -5 "$RES/$name.log"
}
loop swvit_defaults 192 128 --model base --crop 128 --steps 60
loop swvit_nondeterministic 192 128 --model base --crop 128 --steps 60 trainer.deterministic=false
loop resenc_L_defaults 64 160 --model resenc --size L --crop 160 --steps 16
echo "gpu_loop_check: done in $(( $(date +%s) - start )) s"
