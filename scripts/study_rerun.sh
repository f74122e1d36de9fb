#!/usr/bin/env bash
# The study's headline contrasts on three test beds without shortcuts (docs/studies.md, "asa-study at --scale cpu"),
# run from any folder: asa-study runs at --scale cpu, two at a time, over data written two ways:
#
#   free     asa-demo-data: a 4-contrast cohort of 40 template subjects (48^3) -> 40 labeled cases whose lesions have
#            no location prior; mae, asa, the noise and supervised controls; the lesion Dice is the heterotopia's
#            (the free grey-matter enlargement is a rim about one voxel thick at this grid, which no arm learns)
#   outside  benchmarks.outside_data, built without asa's generator: 40 healthy T1 subjects and 40 lesion cases, each
#            nilearn's MNI152 template under its own affine and smooth warp, bias field, noise and orientation, 3 mm;
#            the same arms, seeds 0 and 1
#   heads    the free test bed as whole heads (asa-demo-data --skull: skull, scalp and neck in air with Rician noise,
#            64^3 holding the head, about 3.6 mm), not skull-stripped: what a study reads on scans given as acquired;
#            the same arms, seeds 0 and 1, after the free study
#
#   scripts/study_rerun.sh DATA_DIR STUDY_DIR [asa-study options for every study]
#
# Every study is resumable (rerun the same command to continue). The data are written once (a folder per set,
# moved into place when complete). The free and heads studies run their units two at a time, the outside one one
# at a time.
set -euo pipefail
DATA="${1:?usage: scripts/study_rerun.sh DATA_DIR STUDY_DIR [asa-study options]}"
OUT="${2:?usage: scripts/study_rerun.sh DATA_DIR STUDY_DIR [asa-study options]}"
shift 2
HERE="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$DATA" "$OUT"
export OMP_NUM_THREADS=1

make_set() {  # NAME command...: written into NAME.partial, renamed when complete
    local name="$1"; shift
    [ -d "$DATA/$name" ] && return 0
    rm -rf "$DATA/$name.partial"
    "$@" "$DATA/$name.partial" > "$DATA/$name.log" 2>&1
    mv "$DATA/$name.partial" "$DATA/$name"
}

study() {  # NAME COHORT LABELED asa-study options...
    local name="$1" cohort="$2" labeled="$3"; shift 3
    asa-study --pretrain-data "$cohort" --data msd --root "$labeled" --out "$OUT/$name" --scale cpu --threads 1 \
        --arms mae asa noise supervised "$@" > "$OUT/$name.log" 2>&1 \
        && echo "study_rerun: $name done" || { echo "study_rerun: $name failed (see $OUT/$name.log)"; return 1; }
}

make_set cohort4 asa-demo-data --anatomy --size 48 --cases 40 --layout bids --seed 11 --contrasts t1 t1ce t2 flair --out
make_set labeled asa-demo-data --anatomy --size 48 --cases 40 --layout msd --lesions --placement free --seed 2 --out
make_set heads-cohort asa-demo-data --anatomy --skull --size 64 --cases 40 --layout bids --seed 11 \
    --contrasts t1 t1ce t2 flair --out
make_set heads-labeled asa-demo-data --anatomy --skull --size 64 --cases 40 --layout msd --lesions --placement free \
    --seed 2 --out
make_set outside bash -c 'cd "$0" && python -m benchmarks.outside_data --healthy 40 --lesions 40 --spacing 3 --seed 100 --out "$1"' "$HERE"
{ study free "$DATA/cohort4" "$DATA/labeled" --lesion-classes heterotopia "$@"
  study heads "$DATA/heads-cohort" "$DATA/heads-labeled" --lesion-classes heterotopia --seeds 0 1 --jobs 2 "$@"; } &
free=$!
study outside "$DATA/outside/cohort" "$DATA/outside/labeled" --seeds 0 1 --jobs 1 "$@" &
outside=$!
status=0
for pid in $free $outside; do wait "$pid" || status=1; done
exit $status
