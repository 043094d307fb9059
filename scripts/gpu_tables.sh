#!/usr/bin/env bash
# Train the runs behind report tables on one GPU, in one device command, and bring them back: `comparison`
# (Table 4, with none/flip TTA scores and each best checkpoint) or `augmentation,loss` (run folders only).
# Every row is exactly the run its notebook would train (facelib.profiles.TABLES); `facelib runs` trains
# them one after another in one process and repacks OUT after each, so a command stopped at its limit still
# returns every finished row:
#   OUT/runs.tar     results/runs/KEY/ of every run trained or scored here, and results/splits
#   OUT/KEY.pt       each of those runs' best checkpoint (fp32; `facelib ship` makes the fp16 file on the CPU)
#   OUT/log.txt      everything printed
# Back on the CPU: see docs/guide.md, "The report" (tar xf, checkpoints/KEY/best.pt, facelib ship --best, facelib report).
#
# Usage (repository root): scripts/gpu_tables.sh TABLES DATA OUT
#   PROFILE=gpu-short  ROWS=a,b (one table: these rows, in this order)  TTA=none,flip  WEIGHTS=1
#   BUDGET_S=400: no row starts after this many seconds; LIMIT_S=480: the training is stopped then (a row
#   still training is lost; finished ones are already in OUT).
# Wheels the device lacks come from .whl (../shared/tools/device-wheels.sh). Pass the source commit as
# FACELIB_COMMIT=<sha>: the device's copy of the tree has stale git metadata.
# Dry run here (CPU, tiny; about two minutes): mkdir -p /tmp/dry/results && cp -r results/splits /tmp/dry/results/
#   NO_INSTALL=1 PY=.venv/bin/python PROFILE=smoke DEVICE=cpu RESULTS=/tmp/dry/results \
#   CHECKPOINTS=/tmp/dry/checkpoints scripts/gpu_tables.sh comparison data/celebamask-dev /tmp/dry/out
set -uo pipefail
tables=${1:?tables, e.g. comparison or augmentation,loss}; data=${2:?dataset root}; out=${3:?output folder}
PY=${PY:-python3}
profile=${PROFILE:-gpu-short}; device=${DEVICE:-cuda}; budget=${BUDGET_S:-400}; limit=${LIMIT_S:-480}
case "$tables" in *comparison*) tta=${TTA-none,flip}; weights=${WEIGHTS:-1} ;; *) tta=${TTA-}; weights=${WEIGHTS:-0} ;; esac
source "$(dirname "$0")/device_setup.sh"
echo "profile $profile, tables $tables, TTA '$tta', budget $budget s, limit $limit s"
options=(--table "$tables" --data "$data" --profile "$profile" --device "$device" --tta "$tta" --budget "$budget"
         --pack "$out" --out "${RESULTS:-results}" --checkpoints "${CHECKPOINTS:-checkpoints}")
[ -n "${ROWS:-}" ] && options+=(--rows "$ROWS")
[ "$weights" = 1 ] && options+=(--weights)
timeout "$limit" $PY -m facelib runs "${options[@]}" 2>&1 | grep -v -i "warn"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && stamp "stopped at the ${limit} s limit: the row in progress is lost"
stamp "done (exit $status)"
ls -la "$out"
