#!/usr/bin/env bash
# One GPU window in one command (BENCHMARKS.md, "The GPU window"): installs asa from this checkout (torch left as it
# is; ASA_WHEELS=DIR for a machine without a package index, scripts/gpu_wheels.sh fetches them), then runs each part
# under its own time limit, the parts least measured first, and writes its figures to OUT_DIR as JSON the moment it ends:
#   masked_S.json, masked_L.json       the masked ResEnc pretraining step against the dense one, 160³, bf16
#                                      (benchmarks.resenc): S at batch 8, ResEnc-L (M at 160³) at batch 4, with the
#                                      visible-only norm's earlier (autograd) gradient timed beside (--autograd-norm)
#   loop_swvit.json, loop_resenc.json  the real asa-pretrain loop against its step at the defaults (benchmarks.loop):
#                                      SW-ViT base 128³ (fp16, batch 8, 8 workers), ResEnc-L 160³ (batch 8), with
#                                      the validation round's loader wait apart (validation_loader_ms_per_step)
#   (logs.tgz: known_costs.log)        the checkpoint writes alone and what the loop waits for when the thread writes
#                                      them (benchmarks.loop --known-costs, SW-ViT base on the device: the copies to
#                                      the CPU, python_rate_while_writing): its JSON printed in its log (OUT's files
#                                      are eight at most)
#   precision.json                     the SW-ViT base step with the residual stream in the autocast dtype against
#                                      the earlier fp32 stream, fp16, and 200 same-seed steps' losses of each
#                                      (benchmarks.compile_ab --variants fp32_stream)
#   study.json                         the wall time of asa-study's units at --scale cpu on this device: the pilot (a
#                                      fine-tuning unit), the mae arm's pretraining units, then fine-tuning runs until
#                                      the part's time budget (the study's times.json)
#   window.json                        every part's exit code and seconds, the device, the total (after each part)
#   logs.tgz                           every part's log (after each part)
#
#   scripts/gpu_window.sh OUT_DIR               # on the GPU machine: within WINDOW seconds (default 540) on one H100
#   scripts/gpu_window.sh OUT_DIR --dry-run     # the same parts at toy sizes on the CPU (tests/scripts/test_gpu_window.py;
#                                               # masked_L, at toy sizes masked_S's command, runs once as masked_S)
#
# PYTHON picks the interpreter; WORK (default /tmp/asa-window) holds the data and the runs; PARTS="install loop_swvit ..."
# runs only the parts it names (a short window).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: scripts/gpu_window.sh OUT_DIR [--dry-run]}"
DRY="${2:-}"
[ -z "$DRY" ] || [ "$DRY" = "--dry-run" ] || { echo "gpu_window: unknown option $DRY (expected --dry-run)" >&2; exit 2; }
PY="${PYTHON:-python3}"
WORK="${WORK:-/tmp/asa-window}"
LOGS="$WORK/logs"
mkdir -p "$OUT" "$LOGS" || { echo "gpu_window: cannot write $OUT or $WORK" >&2; exit 2; }
export PYTHONUNBUFFERED=1
start=$(date +%s)

record() {  # PART EXIT SECONDS: window.json gains the part (written whole each time), logs.tgz is renewed
    "$PY" - "$OUT/window.json" "$1" "$2" "$3" "$start" "${DRY:-}" <<'EOF'
import json, os, subprocess, sys, time
path, part, code, seconds, start, dry = sys.argv[1:]
try:
    doc = json.load(open(path))
except (OSError, ValueError):
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        gpu = "no nvidia-smi"
    import torch
    doc = {"device": gpu or "cpu", "torch": torch.__version__, "dry_run": dry == "--dry-run",
           "commit": os.environ.get("ASA_COMMIT", ""), "parts": {}}
doc["parts"][part] = {"exit": int(code), "seconds": int(seconds)}
doc["total_seconds"] = int(time.time()) - int(start)
tmp = path + ".tmp"
json.dump(doc, open(tmp, "w"), indent=1)
os.replace(tmp, path)
EOF
    tar czf "$OUT/logs.tgz" -C "$WORK" logs
}

part() {  # NAME LIMIT_S command...: run with a time limit, its output in LOGS/NAME.log, then recorded
    local name="$1" limit="$2"; shift 2
    local t0=$(date +%s) code
    case " ${PARTS:-$name} " in *" $name "*) ;; *) return 0 ;; esac  # PARTS="a b": only those parts
    timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    code=$?
    record "$name" "$code" "$(( $(date +%s) - t0 ))"
    echo "gpu_window: $name exit $code after $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - start )) s)"
}

if [ -n "${ASA_WHEELS:-}" ]; then  # offline: the wheels folder and what is installed; no build isolation
    part install 120 "$PY" -m pip install -q --no-index --find-links "$ASA_WHEELS" --no-build-isolation -e .
elif [ -z "$DRY" ]; then
    part install 120 "$PY" -m pip install -q -e .
fi

if [ -n "$DRY" ]; then  # toy sizes on the CPU: every part, its command and its JSON, in a few CPU-minutes
    DEVICE=cpu; AMP=off; LOOP_SWVIT=(--model tiny --crop 32 --volume 32 --cases 4 --batch 1 --workers 0 --steps 2 --warmup 1)
    LOOP_RESENC=(--model resenc --size tiny --crop 32 --volume 32 --cases 4 --batch 1 --workers 0 --steps 2 --warmup 1)
    MASKED_S=(--crop 32 --size tiny --batch 1 --repeats 1)
    PRECISION=(--size 32 --batch 1 --preset tiny --steps 1 --loss-steps 2); KNOWN_COSTS=(--model tiny --crop 32 --repeats 1)
    # the study's budget ends it during its pilot: the part checks the plumbing and its times.json
    STUDY=(--quick --arms mae --seeds 0 --pretrain-steps 2 --pilot-steps 4 --time-budget 30); STUDY_CASES=(8 6 32)
    LIMIT=300
else
    DEVICE=cuda; AMP=fp16
    LOOP_SWVIT=(--model base --crop 128 --volume 128 --cases 192 --batch 8 --workers 8 --steps 60 --warmup 5)
    LOOP_RESENC=(--model resenc --size L --crop 160 --volume 160 --cases 64 --batch 8 --workers 8 --steps 16 --warmup 3)
    MASKED_S=(--crop 160 --size S --batch 8 --repeats 4); MASKED_L=(--crop 160 --size M --batch 4 --repeats 4)
    PRECISION=(--size 128 --batch 24 --preset base --steps 5 --loss-steps 200); KNOWN_COSTS=(--model base --crop 128 --repeats 3)
    STUDY=(--scale cpu --arms mae --seeds 0 --jobs 1); STUDY_CASES=(32 16 48)
    LIMIT=120
fi

masked() {  # NAME benchmarks.resenc options...: masked / dense, the steps alternated round by round
    local name="$1"; shift
    part "$name" "$LIMIT" "$PY" -m benchmarks.resenc --amp "${AMP/fp16/bf16}" --swvit none --device "$DEVICE" \
        --autograd-norm --json "$OUT/$name.json" "$@"
}
masked masked_S "${MASKED_S[@]}"
[ -n "$DRY" ] || masked masked_L "${MASKED_L[@]}"

loop() {  # NAME benchmarks.loop options...: the defaults (trainer=default), the loop against its step
    local name="$1"; shift
    part "$name" "$LIMIT" "$PY" -m benchmarks.loop --make-data "$WORK/data_$name" --device "$DEVICE" \
        --run-dir "$WORK/runs/$name" --out "$WORK/$name.json" "$@"
    cp "$WORK/$name.json" "$OUT/" 2>/dev/null  # its .txt table stays behind: OUT holds eight files
}
loop loop_swvit "${LOOP_SWVIT[@]}"
loop loop_resenc "${LOOP_RESENC[@]}"
part known_costs "$LIMIT" "$PY" -m benchmarks.loop --known-costs "$WORK/known_costs" --device "$DEVICE" "${KNOWN_COSTS[@]}"

part precision "$LIMIT" "$PY" -m benchmarks.compile_ab --amp "$AMP" --variants fp32_stream \
    --device "$DEVICE" --json "$OUT/precision.json" "${PRECISION[@]}"

if [[ " ${PARTS:-study} " == *" study "* ]]; then
    # the study's units at --scale cpu on this device: the labeled set and the cohort written first (not timed)
    DATA="$WORK/study_data"
    [ -d "$DATA/labeled" ] || "$PY" -m asa.cli.demo_data --layout msd --cases "${STUDY_CASES[0]}" --size "${STUDY_CASES[2]}" --seed 2 \
        --out "$DATA/labeled" > "$LOGS/study_data.log" 2>&1
    [ -d "$DATA/cohort" ] || "$PY" -m asa.cli.demo_data --layout bids --cases "${STUDY_CASES[1]}" --size "${STUDY_CASES[2]}" --seed 11 \
        --out "$DATA/cohort" >> "$LOGS/study_data.log" 2>&1
    # exit 3 is expected: the study's --time-budget ends it in its transfer stage (the part times units, not a study);
    # on the GPU the budget is what the window has left (WINDOW seconds in all, default 540), at most 230 s
    if [ -z "$DRY" ]; then
        left=$(( ${WINDOW:-540} - ($(date +%s) - start) - 30 ))
        STUDY+=(--time-budget $(( left < 230 ? left : 230 )))
    fi
    part study $(( LIMIT + 120 )) "$PY" -m asa.cli.study --pretrain-data "$DATA/cohort" --data msd --root "$DATA/labeled" \
        --out "$WORK/study" --device "$DEVICE" "${STUDY[@]}"
    "$PY" - "$WORK/study" "$OUT/study.json" "${STUDY[*]}" <<'EOF2'
import json, pathlib, sys
study, out, options = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
read = lambda name: json.loads((study / name).read_text()) if (study / name).is_file() else None
times, settings = read("times.json") or {}, read("study.json") or {}
doc = {"options": options, "scale": settings.get("scale"), "units_seconds": times.get("runs", {}),
       "stages_seconds": times.get("stages", {}), "pilot": read("pilot.json")}
json.dump(doc, open(out, "w"), indent=1)
EOF2
    record study_summary $? 0
fi
echo "gpu_window: done in $(( $(date +%s) - start )) s; figures in $OUT"
