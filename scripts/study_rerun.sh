#!/usr/bin/env bash
# The study's headline contrasts read again on the synthetic test bed without shortcuts (docs/studies.md,
# "Rerun with crops at any voxel"): three asa-study runs side by side on one machine, over data written by
# asa-demo-data (template subjects, 48^3 grids, lesions drawn with no location prior unless said):
#
#   free   T1 cohort (40) -> labeled set with free lesions: mae, asa, asa-coord, the noise and supervised controls, N 2 8
#   fixed  the same cohort -> labeled set with the lesions at fixed places: asa, asa-coord (the coordinate channel
#          where lesions have a location prior), N 2
#   skull  whole heads (skull, scalp, neck, a noisy background) in the cohort and the labeled set: mae, asa, N 2
#
#   scripts/study_rerun.sh DATA_DIR STUDY_DIR [asa-study options for every study, e.g. --scale quick]
#
# Every study is resumable (rerun the same command to continue). The data are written once (a folder per set,
# moved into place when complete). JOBS (default 4) runs per study at a time; JOBS_FREE those of the first study.
set -euo pipefail
DATA="${1:?usage: scripts/study_rerun.sh DATA_DIR STUDY_DIR [asa-study options]}"
OUT="${2:?usage: scripts/study_rerun.sh DATA_DIR STUDY_DIR [asa-study options]}"
shift 2
JOBS="${JOBS:-4}"
mkdir -p "$DATA" "$OUT"

make_set() {  # NAME asa-demo-data options...: written into NAME.partial, renamed when complete
    local name="$1"; shift
    [ -d "$DATA/$name" ] && return 0
    rm -rf "$DATA/$name.partial"
    asa-demo-data --anatomy --size 48 --cases 40 --out "$DATA/$name.partial" "$@" > "$DATA/$name.log" 2>&1
    mv "$DATA/$name.partial" "$DATA/$name"
}

study() {  # NAME COHORT LABELED asa-study options...
    local name="$1" cohort="$2" labeled="$3"; shift 3
    asa-study --pretrain-data "$DATA/$cohort" --data msd --root "$DATA/$labeled" --out "$OUT/$name" \
        --threads 1 "$@" > "$OUT/$name.log" 2>&1 \
        && echo "study_rerun: $name done" || { echo "study_rerun: $name failed (see $OUT/$name.log)"; return 1; }
}

make_set cohort --layout bids --seed 11 &
make_set labeled --layout msd --lesions --placement free --seed 2 &
wait
study free cohort labeled --jobs "${JOBS_FREE:-$JOBS}" --arms mae asa asa-coord noise supervised \
    --lesion-classes heterotopia grey_enlargement "$@" &
free=$!
( make_set labeled-fixed --layout msd --lesions --placement fixed --seed 2
  study fixed cohort labeled-fixed --jobs "$JOBS" --arms asa asa-coord --cases 2 \
      --lesion-classes heterotopia deep_grey_enlargement "$@" ) &
fixed=$!
( make_set cohort-skull --layout bids --skull --seed 11 &
  make_set labeled-skull --layout msd --lesions --placement free --skull --seed 2 &
  wait
  study skull cohort-skull labeled-skull --jobs "$JOBS" --arms mae asa --cases 2 \
      --lesion-classes heterotopia grey_enlargement "$@" ) &
skull=$!
status=0
for pid in $free $fixed $skull; do wait "$pid" || status=1; done
exit $status
