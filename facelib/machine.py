"""The machine a run or a measurement runs on: the process-wide CPU settings of a run (intra-op threads, the
allocator, whether bf16 is native here), its data loader workers, and how records name the device and the
library versions."""

from __future__ import annotations

import ctypes
import platform
import warnings

import numpy as np
import torch

from facelib.config import TrainConfig
from facelib.outputs import machine


def versions() -> dict[str, str]:
    import albumentations
    import segmentation_models_pytorch
    import timm
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "segmentation_models_pytorch": segmentation_models_pytorch.__version__,
        "timm": timm.__version__,
        "albumentations": albumentations.__version__,
        "numpy": np.__version__,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); host {machine()}"
    return f"CPU: {machine()}, {torch.get_num_threads()} torch threads"


def loader_workers(config: TrainConfig, device: torch.device) -> int:
    """DataLoader workers: the config's, else 0 on a CPU (on 2 cores a worker process competes with the two
    compute threads and the loop gets slower; augmenting in the main process costs a few % of a step) and 4
    on CUDA (where the step waits for nothing else)."""
    if config.workers is not None:
        return config.workers
    return 4 if device.type == "cuda" else 0


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve large blocks from the heap (no mmap) and never trim it, so the tensors
    each training step frees are reused by the next step instead of being returned to the system and
    page-faulted back in (about a quarter of a CPU step at 256 px). Allocator behaviour only: every value is
    unchanged. Returns whether it applied (Linux with glibc)."""
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def prepare_cpu(config: TrainConfig, device: torch.device) -> None:
    """The process-wide CPU settings of a run: intra-op threads and the allocator (see `keep_freed_memory`)."""
    if device.type != "cpu":
        return
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.keep_memory:
        keep_freed_memory()
    if config.cpu_bf16 and not cpu_has_bf16():
        warnings.warn(
            f"cpu_bf16 is on but this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 instructions "
            "(AVX512-BF16, AMX): bf16 autocast is emulated, several times slower than float32 here; drop "
            "--cpu-bf16",
            stacklevel=2,
        )


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (without it, bf16 autocast is emulated: a 320 px run
    took 19.7 s per iteration with it against 2.6 s without on an AVX2-only EPYC)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
