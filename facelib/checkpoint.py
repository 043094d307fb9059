"""Model files: facelib checkpoints (saved by training, read with `torch.load(weights_only=True)`, so a file
from anywhere can never run code) and exported ONNX files (run by ONNX Runtime with PyTorch's call
convention), each turned back into a model that takes normalised (B, 3, H, W) images and returns logits.

A checkpoint is a plain dict of tensors and JSON-like data (model name and overrides, normalisation, class
names, input size, the training config), so a file is all `predict` needs. An `.onnx` file made by
`facelib.export` carries the same description in its metadata (`onnx_metadata`) and is accepted wherever a
checkpoint is (`load_model`); no facelib model code is built to run it (`OnnxModel`).
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelib.config import BACKENDS
from facelib.errors import ConfigError, DataError
from facelib.labels import CLASS_NAMES, NUM_CLASSES
from facelib.metrics import Metrics
from facelib.models import build_model
from facelib.outputs import atomic_path

ONNX_FORMAT = "facelib-onnx"
INPUT_NAME, OUTPUT_NAME = "image", "logits"


CHECKPOINT_FORMAT = "facelib-checkpoint"


CHECKPOINT_VERSION = 1


def inference_checkpoint(
    model: torch.nn.Module,
    config,
    mean: Sequence[float],
    std: Sequence[float],
    run_key: str,
    iteration: int,
    metrics: Metrics | None = None,
    confusion: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Everything needed to rebuild the model and its preprocessing, and nothing that could run code."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": config.model,
        "model_overrides": dict(config.model_overrides),
        "num_classes": NUM_CLASSES,
        "class_names": list(CLASS_NAMES),
        "mean": list(mean),
        "std": list(std),
        "input_size": config.input_size,
        "config": config.to_dict(),
        "run_key": run_key,
        "iteration": iteration,
        "metrics": {} if metrics is None else {k: float(v) for k, v in metrics.summary().items()},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def read_torch_file(path: str | Path, what: str = "a loadable facelib checkpoint", way_out: str = "") -> Any:
    """`torch.load` with `weights_only` (tensors and plain values, never code); a missing, truncated, corrupt or
    code-carrying file is one DataError naming it, what is wrong and `way_out`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file does not exist{way_out}")
    try:
        with warnings.catch_warnings():  # torch's note on a foreign file's pickle protocol: the error below says it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():  # damage, not content: below
            raise DataError(f"{path}: not {what}: damaged ({str(error).strip()[:200]}){way_out}") from error
        # torch's message advises an unsafe load, the one thing not to do with a file one did not make
        raise DataError(
            f"{path}: not {what}: it holds Python objects beyond tensors and plain values, which "
            f"facelib never loads (loading them can run code){way_out}"
        ) from error
    except Exception as error:  # RuntimeError (a damaged zip), EOFError, ... depending on the damage
        first = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else ""
        reason = f"{type(error).__name__}: {first}" if len(first) > 8 else type(error).__name__
        raise DataError(f"{path}: not {what}: damaged or truncated ({reason}){way_out}") from error


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a facelib checkpoint safely; anything else (missing, corrupt, foreign, code-carrying) is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file does not exist")
    content = read_torch_file(path)
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        hint = (
            " (a training-state file: use best.pt beside it)"
            if isinstance(content, dict) and "optimizer" in content
            else ""
        )
        raise DataError(f"{path}: not a facelib inference checkpoint{hint}")
    if content.get("version") != CHECKPOINT_VERSION:
        raise DataError(f"{path}: checkpoint version {content.get('version')} is not supported (expected 1)")
    return content


def model_from_checkpoint(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> torch.nn.Module:
    """Rebuild the checkpoint's model and load its weights; a mismatch names the file and the model."""
    try:
        model = build_model(checkpoint["model"], num_classes=checkpoint["num_classes"], **checkpoint["model_overrides"])
    except ConfigError as error:
        raise DataError(f"{path}: cannot rebuild its model: {error}") from error
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise DataError(
            f"{path}: its weights do not fit model {checkpoint['model']!r} with overrides "
            f"{checkpoint['model_overrides']} ({' '.join(first[:3])[:300]})"
        ) from error
    return model.eval()


def start_from(path: str | Path, model: torch.nn.Module, model_name: str) -> None:
    """Fine-tuning: the weights of an inference checkpoint (best.pt or a shipped file, fp16 weights cast to
    the model's dtype) as the starting point; the optimiser and schedule start fresh."""
    content = load_checkpoint(path)
    if content["model"] != model_name:
        raise ConfigError(f"init_from {path}: holds model {content['model']!r}, but this run trains {model_name!r}")
    try:
        model.load_state_dict(content["state_dict"])
    except RuntimeError as error:
        first = " ".join(str(error).strip().splitlines()[:2])[:300]
        raise ConfigError(f"init_from {path}: its weights do not fit this run's model ({first})") from error


def load_model(
    path: str | Path, device: str = "auto", backend: str = "auto", threads: int | None = None
) -> tuple[dict[str, Any], torch.nn.Module, torch.device]:
    """A checkpoint (.pt, run by PyTorch) or an ONNX export (.onnx, run by ONNX Runtime on the CPU), as
    (its description: mean, std, input_size, config, ...; a model called the same way; the device)."""
    path = Path(path)
    onnx = path.suffix == ".onnx"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "onnx" and not onnx:
        raise ConfigError(
            f"{path}: --backend onnx needs an .onnx file; make one with `facelib export {path} --onnx OUT.onnx`"
        )
    if backend == "torch" and onnx:
        raise ConfigError(f"{path}: an ONNX file runs with --backend onnx (or auto), not torch")
    if onnx:
        if device not in ("auto", "cpu"):
            raise ConfigError(f"{path}: ONNX files run on the CPU (onnxruntime's CPU provider), not on {device!r}")
        model = OnnxModel(path, threads)
        return model.metadata, model, torch.device("cpu")
    content = load_checkpoint(path)
    target = resolve_device(device)
    return content, model_from_checkpoint(content, path).to(target), target


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """ "auto" is CUDA when torch sees a GPU, else the CPU; a bare "cuda" means this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but torch sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a facelib ONNX file; anything else (missing, corrupt, foreign) is a DataError."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ONNX file does not exist")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise DataError(f"{path}: not a loadable ONNX model ({str(error).splitlines()[0][:200]})") from error
    raw = session.get_modelmeta().custom_metadata_map
    try:
        values = {key: json.loads(value) for key, value in raw.items()}
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: its metadata is not facelib's ({error})") from error
    if values.get("format") != ONNX_FORMAT:
        raise DataError(f"{path}: not a facelib ONNX export (no facelib metadata); make one with `facelib export`")
    return values


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation on; `threads` intra-op threads (None: ORT's
    default, one per core), run sequentially (one image's graph uses all of them)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(torch.nn.Module):
    """An exported facelib model run by ONNX Runtime on the CPU, called like the PyTorch model in eval mode
    (normalised (B, 3, H, W) tensor in, logits out), so evaluation, TTA and prediction code is shared."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.metadata = onnx_metadata(path)
        self.session = onnx_session(path, threads)
        shape = self.session.get_inputs()[0].shape
        self.fixed = shape if all(isinstance(d, int) for d in shape) else None  # a --fixed-shape export

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        if self.fixed is None:
            return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])
        if list(array.shape[1:]) != list(self.fixed[1:]):
            raise ConfigError(
                f"{self.path}: a fixed-shape export for {'x'.join(map(str, self.fixed))} inputs got "
                f"{'x'.join(map(str, array.shape))}; export without --fixed-shape for other sizes (multiscale TTA)"
            )
        step, parts = self.fixed[0], []
        for start in range(0, len(array), step):  # the graph's batch at a time; a short last chunk is padded
            chunk = array[start : start + step]
            padded = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            parts.append(self.session.run([OUTPUT_NAME], {INPUT_NAME: padded})[0][: len(chunk)])
        return torch.from_numpy(np.concatenate(parts))


def save_checkpoint(obj: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
