#!/usr/bin/env bash
# One GPU window in one command (BENCHMARKS.md, "The GPU window"): installs asa from this checkout (torch left as it
# is; ASA_WHEELS=DIR for a machine without a package index, scripts/gpu_wheels.sh fetches them), then runs each part
# under its own time limit, sized to what it measures (on one H100 the whole window, installs included, fits in
# 9 minutes: the limits add up to 530 s), and writes its figures to OUT_DIR as JSON the moment it ends:
#   masked_S.json, masked_L.json  the masked ResEnc pretraining step against the dense one, 160³, bf16
#                                 (benchmarks.resenc): S at batch 8, ResEnc-L (M at 160³) at batch 4, with the step as
#                                 before 2026-11-27 timed beside (--previous: previous_over_dense)
#   loops.json                    the real asa-pretrain loop (benchmarks.loop --cohort) for a 64-case and a 2,000-case
#                                 cohort, each modelled from 64 synthetic brains, SW-ViT base 128³ (fp16, batch 8,
#                                 8 workers) and ResEnc-L 160³ (batch 8): loop / step at the configured cadence
#                                 (trainer=default: a round at most every 400 steps) and at a round every epoch's end,
#                                 one JSON per part under its name
#   swvit_step.json               the SW-ViT base step (fp16, batch 24) against its earlier copies (variant
#                                 copies) and its fp32 residual stream (fp32_stream), each step's CUDA time by kernel
#                                 family for eager and copies, and 200 same-seed steps' losses of each
#                                 (benchmarks.compile_ab)
#   side_by_side.json, study_plan.txt, study.json
#                                 only with PARTS="install side_by_side study_plan study", a window of its own: the gpu
#                                 scale's units side by side, the study's plan on the device and asa-study --scale gpu
#                                 on the planted bed at the units at once measured best (its report.json; its
#                                 times.json where its budget ended first); FUSED="4 14 14x4" adds those units trained
#                                 as one to side_by_side (--fused K[xP]: K units a process, P processes at once) and
#                                 runs the study --fused
#   fusion_probe.json, fusion_probe.md
#                                 only with PARTS="install fusion_probe", a window of its own (under 5 minutes):
#                                 grouped against dense Conv3d / ConvTranspose3d at the gpu scale's unit's shapes, bf16
#                                 and fp16, K 1 4 14 56 112 (benchmarks.fusion_probe), measuring for PROBE_SECONDS
#                                 (default 270)
#   fusion_profile.json           only with PARTS="install fusion_profile" (about 2 minutes): the gpu scale's whole
#                                 unit-step alone and 4 and 14 units fused, its wall time and its device time by kernel
#                                 family (benchmarks.fusion_host --profile)
#   stream_units.json             only with PARTS="install stream_units" (2-3 minutes): K = 4 and 14 of the gpu
#                                 scale's units in one process, each its own dense kernels, one after another, on
#                                 streams of their own, as CUDA graphs, and as graphs on streams: unit-steps/s, peak
#                                 memory and each unit's weights against its copy trained alone
#                                 (benchmarks.stream_units)
#   window.json                   every part's exit code and seconds, the device, the total (after each part)
#   logs.tgz                      every part's log (after each part)
#
#   scripts/gpu_window.sh OUT_DIR               # on the GPU machine, about 8 minutes on one H100
#   scripts/gpu_window.sh OUT_DIR --dry-run     # the same parts at toy sizes on the CPU (tests/scripts/test_gpu_window.py;
#                                               # masked_L, at toy sizes masked_S's command, runs once as masked_S;
#                                               # the loops for the 64-case cohort alone)
#
# PYTHON picks the interpreter; WORK (default /tmp/asa-window) holds the data and the runs; PARTS="install masked_S ..."
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

chosen() {  # NAME: whether the part runs (PARTS="a b": only those parts)
    case " ${PARTS:-$1} " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}

part() {  # NAME LIMIT_S command...: run with a time limit, its output in LOGS/NAME.log, then recorded
    local name="$1" limit="$2"; shift 2
    local t0=$(date +%s) code
    chosen "$name" || return 0
    timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
    code=$?
    record "$name" "$code" "$(( $(date +%s) - t0 ))"
    echo "gpu_window: $name exit $code after $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - start )) s)"
}

if [ -n "${ASA_WHEELS:-}" ]; then  # offline: the wheels folder and what is installed; no build isolation
    part install 50 "$PY" -m pip install -q --no-index --find-links "$ASA_WHEELS" --no-build-isolation -e ".[anatomy]"
elif [ -z "$DRY" ]; then
    part install 50 "$PY" -m pip install -q -e ".[anatomy]"
fi

if [ -n "$DRY" ]; then  # toy sizes on the CPU: every part, its command and its JSON, in a few CPU-minutes
    DEVICE=cpu; AMP=off; COHORTS=(64)  # one cohort: the cadence model of another is arithmetic (test_loop_profile)
    LOOP_SWVIT=(--model tiny --crop 32 --volume 32 --cases 8 --batch 1 --workers 0 --steps 2 --warmup 1)
    LOOP_RESENC=(--model resenc --size tiny --crop 32 --volume 32 --cases 8 --batch 1 --workers 0 --steps 2 --warmup 1)
    MASKED_S=(--crop 32 --size tiny --batch 1 --repeats 1)
    STEP=(--size 32 --batch 1 --preset tiny --steps 1 --loss-steps 2)
    LIMIT_MASKED=300; LIMIT_LOOP=300; LIMIT_STEP=300
else  # the limits: what each part took on an H100 / H200 (BENCHMARKS.md) and about a third more
    DEVICE=cuda; AMP=fp16; COHORTS=(64 2000)
    LOOP_SWVIT=(--model base --crop 128 --volume 128 --cases 64 --batch 8 --workers 8 --steps 30 --warmup 5)
    LOOP_RESENC=(--model resenc --size L --crop 160 --volume 160 --cases 64 --batch 8 --workers 8 --steps 12 --warmup 3)
    MASKED_S=(--crop 160 --size S --batch 8 --repeats 4); MASKED_L=(--crop 160 --size M --batch 4 --repeats 4)
    # 3 variants × 200 same-seed steps at about 0.1 s, the batches drawn on the device: about 90 s in all
    STEP=(--size 128 --batch 24 --preset base --steps 5 --loss-steps 200)
    LIMIT_MASKED=70; LIMIT_LOOP=55; LIMIT_STEP=120
fi

masked() {  # NAME benchmarks.resenc options...: masked / dense, the steps alternated round by round
    local name="$1"; shift
    part "$name" "$LIMIT_MASKED" "$PY" -m benchmarks.resenc --amp "${AMP/fp16/bf16}" --swvit none --device "$DEVICE" \
        --previous --json "$OUT/$name.json" "$@"
}
masked masked_S "${MASKED_S[@]}"
[ -n "$DRY" ] || masked masked_L "${MASKED_L[@]}"

loop() {  # NAME DATA benchmarks.loop options...: the loop against its step for a cohort model (--cohort)
    local name="$1" data="$2"; shift 2
    chosen "$name" || return 0
    part "$name" "$LIMIT_LOOP" "$PY" -m benchmarks.loop --make-data "$WORK/$data" --device "$DEVICE" \
        --run-dir "$WORK/runs/$name" --out "$WORK/$name.json" "$@"
    # one loops.json for every loop part (OUT holds eight files), each under its name; a part that failed: absent
    "$PY" - "$OUT/loops.json" "$name" "$WORK/$name.json" <<'EOF3'
import json, os, sys
path, name, result = sys.argv[1:]
doc = json.load(open(path)) if os.path.isfile(path) else {}
if os.path.isfile(result):
    doc[name] = json.load(open(result))
json.dump(doc, open(path, "w"), indent=1)
EOF3
}
for cases in "${COHORTS[@]}"; do
    loop "loop_swvit_$cases" data_swvit "${LOOP_SWVIT[@]}" --cohort "$cases"
    loop "loop_resenc_$cases" data_resenc "${LOOP_RESENC[@]}" --cohort "$cases"
done

part swvit_step "$LIMIT_STEP" "$PY" -m benchmarks.compile_ab --amp "$AMP" --variants copies fp32_stream \
    --device "$DEVICE" --json "$OUT/swvit_step.json" "${STEP[@]}"

if [[ " ${PARTS:-} " == *" fusion_probe "* ]]; then  # its own window: stops measuring at 270 s, writes by 300 s
    part fusion_probe $(( ${PROBE_SECONDS:-270} + 30 )) "$PY" -m benchmarks.fusion_probe --device "$DEVICE" \
        --budget-s "${PROBE_SECONDS:-270}" --json "$OUT/fusion_probe.json" --markdown "$OUT/fusion_probe.md" \
        ${DRY:+--dry-run}
fi

if [[ " ${PARTS:-} " == *" fusion_profile "* ]]; then  # where a fused group's step spends its device time
    if [ -n "$DRY" ]; then PROFILE=(--ks 2 --size tiny --crop 16 --repeats 1); else PROFILE=(--ks 4 14 --repeats 5); fi
    part fusion_profile 150 "$PY" -m benchmarks.fusion_host --profile --device "$DEVICE" \
        --json "$OUT/fusion_profile.json" "${PROFILE[@]}"
fi

if [[ " ${PARTS:-} " == *" stream_units "* ]]; then  # the bit-preserving route's rate, before it is built in
    if [ -n "$DRY" ]; then STREAMS=(--ks 2 --size tiny --crop 16 --seconds 1); else STREAMS=(--ks 4 14 --seconds 8); fi
    part stream_units 210 "$PY" -m benchmarks.stream_units --device "$DEVICE" --json "$OUT/stream_units.json" \
        "${STREAMS[@]}"
fi

# the study's window of its own (PARTS="install side_by_side study_plan study"; docs/studies.md, "The planted yes to
# plateau"): the planted bed written; side_by_side: UNITS (default 1 4 8 16) of its fine-tuning units at once, then
# each of FUSED (default none) trained as one (benchmarks.side_by_side), each for SBS_SECONDS (default 60),
# side_by_side.json in OUT; study_plan: the dry run's plan on this device (study_plan.txt); study: asa-study --scale
# gpu (--fused with FUSED) with STUDY_JOBS units at once, else as many as gave the greatest total (else its own
# choice), within what is left of WINDOW seconds (default 540), its report.json (else its times.json) in OUT; a study
# its budget stopped resumes in a later call of PARTS="study" (the same FUSED and STUDY_JOBS) on the bed it began on
if [[ " ${PARTS:-} " == *" side_by_side "* || " ${PARTS:-} " == *" study "* ]]; then
    FUSED="${FUSED:-}"
    if [ -n "$DRY" ]; then BED="--cases 6 --size 32"; LABELED="--cases 10 --size 32"; SCALE="--quick"; LIMIT_STUDY=1800
        UNITS="${UNITS:-1 2}"; SBS=(--size tiny --seconds "${SBS_SECONDS:-3}" --warmup 3); LIMIT_SBS=300
    else BED="--cases 40 --size 48"; LABELED="--cases 40 --size 48"; SCALE="--scale gpu"; LIMIT_STUDY=560
        UNITS="${UNITS:-1 4 8 16}"; SBS=(--seconds "${SBS_SECONDS:-60}")
        # a row of processes reaches its window in under 45 s, a fused row in up to 90 (14x8: 71.5 s on one H200)
        LIMIT_SBS=$(( $(wc -w <<< "$UNITS") * (${SBS_SECONDS:-60} + 45)
                      + $(wc -w <<< "$FUSED") * (${SBS_SECONDS:-60} + 90) ))
    fi
    # the window's own folders: a rerun on the same machine writes them afresh, but for a call of the study alone
    # on a bed already written (PARTS="study": the study resumes where its time budget ended, on its bed)
    if chosen side_by_side || [ ! -f "$WORK/bed/written" ]; then
        PARTS="$PARTS bed"  # what side_by_side and study both need
        rm -rf "$WORK/bed"
    fi
    rm -rf "$WORK/side_by_side"
    planted=(--anatomy --lesions --placement planted)
    part bed 120 bash -c "\"$PY\" -m asa.cli.demo_data --layout bids ${planted[*]} --contrasts t1 t1ce t2 flair \
        --out \"$WORK/bed/cohort\" $BED & \"$PY\" -m asa.cli.demo_data --layout msd ${planted[*]} \
        --out \"$WORK/bed/labeled\" $LABELED & wait -n && wait -n && touch \"$WORK/bed/written\""
    part side_by_side "$LIMIT_SBS" "$PY" -m benchmarks.side_by_side --data "$WORK/bed/labeled" --units $UNITS \
        ${FUSED:+--fused $FUSED} --device "$DEVICE" --json "$OUT/side_by_side.json" --work "$WORK/side_by_side" \
        "${SBS[@]}"
    JOBS=()  # STUDY_JOBS, else the units at once of the greatest total, from side_by_side.json
    if [ -n "${STUDY_JOBS:-}" ]; then JOBS=(--jobs "$STUDY_JOBS")
    elif [ -f "$OUT/side_by_side.json" ]; then JOBS=(--jobs "$("$PY" -c 'import json, sys
print(json.load(open(sys.argv[1]))["best_units"])' "$OUT/side_by_side.json")")
    fi
    study=(--pretrain-data "$WORK/bed/cohort" --data msd --root "$WORK/bed/labeled" $SCALE --device "$DEVICE"
           --arms mae asa noise supervised --lesion-classes heterotopia --threads 1 "${JOBS[@]}" ${FUSED:+--fused}
           --out "$WORK/study")
    part study_plan 120 bash -c '"$0" -m asa.cli.study "$@" --dry-run > "'"$OUT"'/study_plan.txt" 2>&1' \
        "$PY" "${study[@]}"
    left=$(( ${WINDOW:-540} - ($(date +%s) - start) - 30 ))
    if [ "$left" -gt 30 ] || [ -n "$DRY" ]; then
        [ -n "$DRY" ] || study+=(--time-budget "$left")
        part study "$LIMIT_STUDY" bash -c '"$0" -m asa.cli.study "$@"; code=$?
            cp "'"$WORK"'/study/report/report.json" "'"$OUT"'/study.json" 2>/dev/null ||
                cp "'"$WORK"'/study/times.json" "'"$OUT"'/study.json"; exit $code' "$PY" "${study[@]}"
    fi
fi
echo "gpu_window: done in $(( $(date +%s) - start )) s; figures in $OUT"
