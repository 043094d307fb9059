# Sourced by the device scripts after they set PY and out: installs the wheels the GPU image lacks (from .whl,
# see ../shared/tools/device-wheels.sh; skipped with NO_INSTALL=1), sends everything printed to OUT/log.txt as
# well, prints the machine, and defines `start`, `marker` (files newer than it were made by this command) and
# `stamp MESSAGE` (seconds since start).
if [ -z "${NO_INSTALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, os; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(), '| cores', os.cpu_count())"
echo "commit ${FACELIB_COMMIT:-unset (pass FACELIB_COMMIT=<sha>)}"
start=$(date +%s)
marker=$(mktemp); touch "$marker"
stamp() { echo "--- $(( $(date +%s) - start )) s: $*"; }
