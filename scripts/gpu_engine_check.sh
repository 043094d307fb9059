#!/usr/bin/env bash
# Engine check on a CUDA machine: the CUDA test, then one 512x512 training run on the real data with the
# reference recipe (full augmentation, weighted CE + Lovász + Dice), bf16 autocast, channels_last, pinned
# memory and DataLoader workers, then `facelib eval` of its best checkpoint with and without flip TTA.
# Prints images/s and the share of loop time spent waiting for data; packs the run folder into OUT.
#
# Usage (repository root): scripts/gpu_engine_check.sh DATA OUT [ITERATIONS] [TIME_LIMIT_S] [BATCH] [WORKERS]
# On the device machine the wheels it lacks come from .whl (../shared/tools/device-wheels.sh); set
# NO_INSTALL=1 to dry-run it here with PY=.venv/bin/python. The device's copy of the tree carries stale git
# metadata: pass the source commit as FACELIB_COMMIT=<sha> so the run records the right one.
set -uo pipefail
data=${1:?dataset root}; out=${2:?output folder}
iterations=${3:-3000}; limit=${4:-300}; batch=${5:-16}; workers=${6:-14}
PY=${PY:-python3}
if [ -z "${NO_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
mkdir -p "$out"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, albumentations, segmentation_models_pytorch as smp; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(), '| albumentations', albumentations.__version__, '| smp', smp.__version__, '| cores', __import__('os').cpu_count())"
timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_train.py -k cuda 2>&1 | tail -25
start=$(date +%s)
$PY -m facelib train --data "$data" --model fastscnn --iterations "$iterations" --val-interval 500 \
  --batch-size "$batch" --workers "$workers" --time-limit "$limit" 2>&1 | tr '\r' '\n' | grep -v -E 'it/s|s/it' | tail -12
echo "train command: $(( $(date +%s) - start )) s"
run=$(ls -td results/runs/fastscnn-* | head -1)
key=$(basename "$run")
for tta in none flip; do
  $PY -m facelib eval "checkpoints/$key/best.pt" --data "$data" --tta "$tta" 2>&1 | head -1  # the headline line
done
$PY - "$run" <<'PY'
import json, sys, pathlib
run = pathlib.Path(sys.argv[1])
s = json.loads(((run / "summary.json") if (run / "summary.json").exists() else (run / "progress.json")).read_text())
print(f"run {s['key']} finished={s['finished']} iterations={s['iterations_done']} train_wall_s={s['train_wall_s']:.0f} "
      f"images/s={s['images_per_s']:.0f} data_wait={100 * s['data_wait_share']:.1f}% device={s['device']}")
print(open(run / "metrics.csv").read())
PY
tar czf "$out/run.tar.gz" "$run"
cp "checkpoints/$key/best.pt" "$out/best.pt"
