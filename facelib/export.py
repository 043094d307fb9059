"""ONNX export of a checkpoint, int8 static quantization, and ONNX Runtime models with PyTorch's call convention.

An exported graph takes (B, 3, H, W) normalised float32 images (any batch; H and W multiples of 32) and
returns (B, 19, H, W) logits, as the PyTorch model does in eval mode. What a user needs around it travels in
the file's metadata (`onnx_metadata`): model name, class names, palette, mean/std, input size, the training
config and the run it came from. So an .onnx file alone is enough for `facelib predict --backend onnx` and
`facelib eval`, and no facelib model code is built to run it (`OnnxModel`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelib.checkpoint import (
    INPUT_NAME,
    ONNX_FORMAT,
    OUTPUT_NAME,
    OnnxModel,
    load_checkpoint,
    model_from_checkpoint,
    onnx_metadata,
)
from facelib.data import discover, load_or_make_split
from facelib.errors import ConfigError, DataError
from facelib.labels import PALETTE
from facelib.outputs import atomic_path, commit, shown_path
from facelib.photos import read_photo

OPSET = 18  # the dynamo exporter's native opset; onnxruntime's CPU provider runs it (>= 1.16)
PARITY_TOLERANCE = 1e-3  # max |logit difference| accepted between ONNX Runtime and PyTorch


@dataclass(frozen=True)
class Parity:
    """How an ONNX graph's logits compare with PyTorch's on the same inputs."""

    max_abs_diff: float
    argmax_agreement: float  # share of pixels whose predicted class is the same

    def ok(self, tolerance: float = PARITY_TOLERANCE, agreement: float = 0.999) -> bool:
        return self.max_abs_diff < tolerance and self.argmax_agreement >= agreement


# --- export ------------------------------------------------------------------------------------------------


def export_model(
    model: torch.nn.Module,
    target: str | Path,
    example_size: int = 512,
    opset: int = OPSET,
    fixed_batch: int | None = None,
) -> Path:
    """Export an eval-mode facelib model to ONNX with dynamic batch, height and width (multiples of 32); with
    `fixed_batch`, a graph for exactly (fixed_batch, 3, example_size, example_size) inputs instead, for
    runtimes and converters that need static shapes (in ONNX Runtime on our 2-core CPU it was no faster)."""
    model = model.eval()
    shapes = None
    if fixed_batch is None:
        example = torch.randn(2, 3, example_size, example_size)  # batch 2: a size-1 example would be fixed at 1
        steps = torch.export.Dim("height_steps", min=1, max=256), torch.export.Dim("width_steps", min=1, max=256)
        shapes = ({0: torch.export.Dim("batch", min=1, max=1024), 2: 32 * steps[0], 3: 32 * steps[1]},)
    else:
        example = torch.randn(fixed_batch, 3, example_size, example_size)
    with atomic_path(target) as tmp, warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes,
            verbose=False,
            optimize=True,
        )
        program.save(str(tmp))
    return Path(target)


class _quiet:
    """Silence progress lines on stdout (the exporter prints them even with verbose=False; the quantizer's
    calibration too) and the quantizer's root-logger warnings."""

    def __enter__(self) -> None:
        import contextlib
        import io
        import logging

        self._redirect = contextlib.redirect_stdout(io.StringIO())
        self._redirect.__enter__()
        self._level = logging.root.manager.disable
        logging.disable(logging.WARNING)  # onnxruntime.quantization warns through the root logger

    def __exit__(self, *exc: object) -> None:
        import logging

        logging.disable(self._level)
        self._redirect.__exit__(*exc)


def export_checkpoint(
    checkpoint: str | Path, target: str | Path, opset: int = OPSET, check: bool = True, fixed_shape: bool = False
) -> tuple[Path, Parity | None]:
    """Export a facelib checkpoint to `target` (.onnx) with its preprocessing and labels in the metadata;
    with `check`, compare ONNX Runtime's logits with PyTorch's on random inputs at two sizes and refuse to
    leave a file that disagrees (a DataError naming the checkpoint). `fixed_shape`: one image at the
    checkpoint's input size only (what `predict` feeds it, except multiscale TTA)."""
    content = load_checkpoint(checkpoint)
    model = model_from_checkpoint(content, checkpoint)
    target = Path(target)
    if target.suffix != ".onnx":
        raise ConfigError(f"{target}: the exported file must end in .onnx")
    size = int(content["input_size"])
    export_model(model, target, size, opset, fixed_batch=1 if fixed_shape else None)
    metadata = checkpoint_metadata(content, checkpoint, opset)
    if fixed_shape:
        metadata["shape"] = f"fixed: 1x3x{size}x{size} (larger batches run one image at a time)"
    write_metadata(target, metadata)
    parity = None
    if check:
        sizes = ((1, size, size),) if fixed_shape else ((1, size, size), (2, size // 2, size))
        parity = compare_with_torch(model, OnnxModel(target), sizes=sizes)
        if not parity.ok():
            target.unlink()
            raise DataError(
                f"{checkpoint}: its ONNX export disagrees with PyTorch (max |diff| {parity.max_abs_diff:.2e}, "
                f"argmax agreement {parity.argmax_agreement:.5f}); nothing was written"
            )
    return target, parity


def checkpoint_metadata(content: dict[str, Any], checkpoint: str | Path, opset: int) -> dict[str, Any]:
    """What a deployed file must say about itself: preprocessing, labels, and where it came from."""
    import datetime

    return {
        "format": ONNX_FORMAT,
        "version": 1,
        "precision": "float32",
        "model": content["model"],
        "model_overrides": dict(content["model_overrides"]),
        "num_classes": int(content["num_classes"]),
        "class_names": list(content["class_names"]),
        "palette": PALETTE[: int(content["num_classes"])].tolist(),
        "mean": list(content["mean"]),
        "std": list(content["std"]),
        "input": "RGB float32 NCHW, (pixel in 0..255 - mean) / std, height and width multiples of 32",
        "input_size": int(content["input_size"]),
        "shape": "dynamic: any batch, height and width multiples of 32",
        "output": "logits (batch, num_classes, height, width) at the input resolution",
        "config": content["config"],
        "run_key": content.get("run_key"),
        "iteration": content.get("iteration"),
        "metrics": content.get("metrics", {}),
        **({"logit_adjustment": content["logit_adjustment"]} if content.get("logit_adjustment") else {}),
        "source_checkpoint": shown_path(checkpoint),
        "opset": opset,
        "exported_by_commit": commit(),
        "exported_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_metadata(path: str | Path, values: dict[str, Any]) -> None:
    """Store `values` as the model's metadata_props (each value JSON-encoded), rewriting the file atomically."""
    import onnx

    graph = onnx.load(str(path))
    for node in graph.graph.node:  # the exporter's debugging notes: stack traces with this machine's paths
        keep = [p for p in node.metadata_props if not p.key.startswith("pkg.torch.onnx.")]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    del graph.metadata_props[:]
    for key, value in values.items():
        graph.metadata_props.add(key=key, value=json.dumps(value))
    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))


# --- running -----------------------------------------------------------------------------------------------


@torch.no_grad()
def compare_with_torch(
    model: torch.nn.Module,
    onnx_model: torch.nn.Module,
    sizes: Sequence[tuple[int, int, int]] = ((1, 512, 512),),
    inputs: Sequence[torch.Tensor] | None = None,
    seed: int = 0,
) -> Parity:
    """Max |logit difference| and argmax agreement between two eval-mode models over `inputs` (default:
    standard-normal batches of each (batch, height, width) in `sizes`, which is what normalised images are)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    batches = inputs if inputs is not None else [torch.randn(b, 3, h, w, generator=generator) for b, h, w in sizes]
    worst, same, total = 0.0, 0, 0
    for x in batches:
        expected, got = model(x).float(), onnx_model(x).float()
        worst = max(worst, (expected - got).abs().max().item())
        same += (expected.argmax(1) == got.argmax(1)).sum().item()
        total += expected[:, 0].numel()
    return Parity(worst, same / total)


# --- int8 --------------------------------------------------------------------------------------------------


CALIBRATION_PERCENTILE = 99.999
QUANTIZED_OPS = ("Conv",)
"""Only convolutions are quantized (int8 weights per channel, uint8 activations): they are nearly all of the
arithmetic. The final upsampling of the logits stays in float32, so class scores keep their precision."""


def calibration_batches(
    metadata: dict[str, Any], data: str | Path | None, count: int, out: str | Path
) -> list[np.ndarray]:
    """`count` training images of the model's own split (evenly spaced through it), preprocessed as for
    inference: resized to the input size, normalised with the checkpoint's mean/std; each (1, 3, S, S)."""
    import cv2

    config = metadata["config"]
    dataset = discover(data)
    split, _ = load_or_make_split(dataset, out=out, val_fraction=config["val_fraction"], seed=config["split_seed"])
    stems = split.train[:: max(1, len(split.train) // count)][:count]
    size = int(metadata["input_size"])
    mean = np.asarray(metadata["mean"], dtype=np.float32)
    std = np.asarray(metadata["std"], dtype=np.float32)
    batches = []
    for sample in dataset.by_stem(stems):
        photo = cv2.resize(read_photo(sample.image), (size, size), interpolation=cv2.INTER_LINEAR)
        batches.append(((photo.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None].copy())
    return batches


def calibration_source(data: str | Path | None) -> str:
    """Where calibration images come from, in words: the dataset's root (explicit, $FACELIB_DATA or synthetic)."""
    dataset = discover(data)
    return f"{dataset.name} ({dataset.root})"


def quantize_int8(source: str | Path, target: str | Path, calibration: Sequence[np.ndarray], described_as: str) -> Path:
    """ONNX Runtime static quantization (QDQ, per-channel weights) of a facelib float32 export, activation
    ranges calibrated on `calibration` at the 99.999th percentile of each tensor's values (MinMax let a few
    extreme activations stretch the ranges: 0.5 mIoU lost on a trained DeepLabV3+ where this loses 0.1);
    the metadata is carried over with `precision: int8` and how it was calibrated."""
    from onnxruntime import quantization as q

    metadata = onnx_metadata(source)
    if metadata["precision"] != "float32":
        raise ConfigError(f"{source}: already quantized ({metadata['precision']}); quantize the float32 export")
    if not calibration:
        raise ConfigError("int8 calibration needs at least one image")

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with atomic_path(target) as tmp, warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        q.quantize_static(
            str(source),
            str(tmp),
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZED_OPS),
            calibrate_method=q.CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
        )
    write_metadata(
        target, {**metadata, "precision": "int8", "calibration": described_as, "quantized_from": shown_path(source)}
    )
    return Path(target)
