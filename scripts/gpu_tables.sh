#!/usr/bin/env bash
# Train the runs behind report tables on one GPU, in one device command, and bring them back: the Table 4
# issue runs `comparison` (with flip-TTA scores and the best checkpoints), the ablation issue
# `augmentation,loss` (run folders only). Each row is `facelib runs --profile P --table T --rows R`, exactly
# the run its notebook would train (facelib.experiments.TABLES); rows run one after another, and after each
# one OUT is repacked, so a command stopped at its time limit still returns every finished row:
#   OUT/runs.tar     results/runs/KEY/ of every run trained here, and results/splits
#   OUT/KEY.pt       each new best checkpoint (fp32; `facelib ship` makes the fp16 file on the CPU), with WEIGHTS=1
#   OUT/log.txt      everything printed
# Then on the CPU: `tar xf runs.tar`, `facelib report --profile P --cached-only --only 02,03,04,05`.
#
# Usage (repository root): scripts/gpu_tables.sh TABLES DATA OUT
#   PROFILE=gpu-short  ROWS=a,b (one table: these rows, in this order)  TTA=none,flip  WEIGHTS=1  BUDGET_S=480
# BUDGET_S: no row starts after this many seconds, and a row still running then is stopped (its partial run is
# lost: only finished rows come back). Wheels the device lacks come from .whl (../shared/tools/device-wheels.sh).
# Pass the source commit as FACELIB_COMMIT=<sha>: the device's copy of the tree has stale git metadata.
# Dry run here (CPU, tiny): NO_INSTALL=1 PY=.venv/bin/python PROFILE=smoke DEVICE=cpu RESULTS=/tmp/dry/results \
#   CHECKPOINTS=/tmp/dry/checkpoints scripts/gpu_tables.sh comparison data/celebamask-dev /tmp/dry/out
set -uo pipefail
tables=${1:?tables, e.g. comparison or augmentation,loss}; data=${2:?dataset root}; out=${3:?output folder}
PY=${PY:-python3}
profile=${PROFILE:-gpu-short}; device=${DEVICE:-cuda}; budget=${BUDGET_S:-480}
results=${RESULTS:-results}; checkpoints=${CHECKPOINTS:-checkpoints}
case "$tables" in *comparison*) tta=${TTA-none,flip}; weights=${WEIGHTS:-1} ;; *) tta=${TTA-}; weights=${WEIGHTS:-0} ;; esac
source "$(dirname "$0")/device_setup.sh"
echo "profile $profile, tables $tables, TTA '${tta}', budget ${budget} s"

pack() {  # every finished run so far into OUT (replaced each time, so a stopped command still returns them)
  local new=() dir key
  for dir in $(find "$results/runs" -mindepth 1 -maxdepth 1 -type d -newer "$marker" 2>/dev/null); do
    [ -f "$dir/summary.json" ] || continue  # written when a run finishes; a stopped one stays behind
    key=$(basename "$dir"); new+=("$(basename "$results")/runs/$key")
    if [ "$weights" = 1 ] && [ -f "$checkpoints/$key/best.pt" ]; then cp "$checkpoints/$key/best.pt" "$out/$key.pt"; fi
  done
  tar cf "$out/.runs.tar" -C "$results/.." "$(basename "$results")/splits" "${new[@]}" && mv "$out/.runs.tar" "$out/runs.tar"
}

for table in ${tables//,/ }; do
  rows=${ROWS:-$($PY -c "from facelib.experiments import table_rows; print(','.join(table_rows('$profile', '$table')))")}
  for row in ${rows//,/ }; do
    left=$(( budget - ($(date +%s) - start) ))
    if [ "$left" -le 10 ]; then stamp "budget spent: $table/$row not started"; continue; fi
    stamp "$table/$row (at most $left s)"
    timeout "$left" $PY -m facelib runs --profile "$profile" --table "$table" --rows "$row" --tta "$tta" \
      --data "$data" --device "$device" --out "$results" --checkpoints "$checkpoints" 2>&1 \
      | tr '\r' '\n' | grep -v -E 'it/s\]|s/it\]|[Ww]arn|^  .*(runs|checkpoints)/'
    status=${PIPESTATUS[0]}
    [ "$status" = 124 ] && stamp "$table/$row stopped at the budget (not brought back)"
    [ "$status" != 0 ] && [ "$status" != 124 ] && stamp "$table/$row failed (exit $status)"
    pack
  done
done
stamp "done"
ls -la "$out"
