#!/usr/bin/env bash
# Issue 6 speed check on one GPU, in one command: `facelib bench train` for the smp MobileNetV4 builds at
# 512x512 with the full augmentation and the composite loss (weighted CE + Lovász + Dice), bf16 autocast and
# channels_last, eager and torch.compile; then two short training runs whose best checkpoints come back for
# the int8 accuracy check on the CPU (`facelib export --int8`, `facelib eval`). Everything lands in
# OUT/results.tar (results/bench, the new runs), OUT/KEY.pt (each new best checkpoint) and OUT/log.txt.
#
# Usage (repository root): scripts/gpu_speed.sh DATA OUT
# Parts: LOVASZ=0, SMALL_BATCH=0, COMPILE=0, TRAIN=0 skip the Lovász timing, the batch-16 bench, the compiled bench, the training runs.
# On the device machine the wheels it lacks come from .whl (../shared/tools/device-wheels.sh). Dry run here:
#   NO_INSTALL=1 PY=.venv/bin/python DEVICE=cpu CROP=128 BATCH=4 WORKERS=2 ITERATIONS=8 scripts/gpu_speed.sh DATA /tmp/out
# Pass the source commit as FACELIB_COMMIT=<sha>: the device's copy of the tree has stale git metadata.
set -uo pipefail
data=${1:?dataset root}; out=${2:?output folder}
PY=${PY:-python3}
device=${DEVICE:-cuda}; crop=${CROP:-512}; batch=${BATCH:-64}; workers=${WORKERS:-15}
iterations=${ITERATIONS:-1000}; limit=${TRAIN_LIMIT:-45}
source "$(dirname "$0")/device_setup.sh"

bench() {  # TIMEOUT_S, then `facelib bench train` flags
  local limit_s=$1; shift
  stamp "bench train $*"
  timeout "$limit_s" $PY -m facelib bench train --data "$data" --device "$device" --crop "$crop" --workers "$workers" \
    --steps "${STEPS:-15}" --warmup 5 "$@" 2>&1 | grep -v -i "warn" | tail -9
}
if [ "${LOVASZ:-1}" = 1 ]; then
  stamp "Lovász term alone"
  timeout 60 $PY scripts/lovasz_timing.py "$batch" "$crop" "$device"
  timeout 30 $PY scripts/lovasz_timing.py 16 "$crop" "$device"
fi
bench 120 --model deeplabv3plus_mobilenetv4 --batch "$batch"
bench 100 --model fpn_mobilenetv4 --batch "$batch"
[ "${SMALL_BATCH:-1}" = 1 ] && bench 80 --model deeplabv3plus_mobilenetv4 --batch 16
[ "${COMPILE:-1}" = 1 ] && bench 160 --model deeplabv3plus_mobilenetv4 --batch "$batch" --compile

train() {  # MODEL LOSS ITERATIONS: a short run, stopped at the first validation after $limit s
  stamp "train $*"
  timeout $(( limit + 60 )) $PY -m facelib train --data "$data" --device "$device" --model "$1" --loss "$2" \
    --iterations "$3" --val-interval $(( $3 / 5 )) --batch-size 16 --lr 2e-3 --crop-size "$crop" \
    --workers "$workers" --time-limit "$limit" 2>&1 | tr '\r' '\n' | grep -v -E 'it/s|s/it|warn' | tail -4
}
if [ "${TRAIN:-1}" = 1 ]; then
  train deeplabv3plus_mobilenetv4 wce_lovasz_dice "$iterations"
  train bisenetv2_xs_slimaux wce_dice "$iterations"
fi

stamp "packing"
tar cf "$out/results.tar" results/bench $(find results/runs results/splits -mindepth 1 -maxdepth 1 -newer "$marker")
for best in $(find checkpoints -name best.pt -newer "$marker"); do cp "$best" "$out/$(basename "$(dirname "$best")").pt"; done
ls -la "$out"
stamp "done"
