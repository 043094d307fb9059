"""Inference speed, measured: `facelib bench infer` (median and 90th-percentile latency per image of PyTorch
eager, `torch.compile` (inductor, frozen weights, where it works on the machine), ONNX Runtime float32 and
int8, with each backend's argmax agreement with eager on the same inputs) and ONNX Runtime latency as a
multiple of a model a reader knows (`anchor_latency`). Also the timing helpers and the table writer that
`facelib.bench` shares.

These are benchmarks, not tests; every table says which machine, libraries and commit produced it.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from facelib.checkpoint import (
    ONNX_FORMAT,
    OnnxModel,
    load_checkpoint,
    model_from_checkpoint,
    onnx_session,
)
from facelib.data import discover
from facelib.errors import ConfigError
from facelib.export import (
    calibration_batches,
    calibration_source,
    compare_with_torch,
    export_model,
    quantize_int8,
    write_metadata,
)
from facelib.infer import check_input_size, evaluate
from facelib.machine import versions
from facelib.models import build_model
from facelib.models.cost import cpu_threads, timed
from facelib.outputs import machine, provenance, write_table
from facelib.photos import read_photo

INFER_BACKENDS = ("eager", "compile", "onnx_fp32", "onnx_int8", "onnx_fp32_fixed", "onnx_int8_fixed")
"""`_fixed`: the graph exported for exactly the benchmark's batch and size (`facelib export --fixed-shape`)."""


def _inputs(size: int, batch: int, data: str | Path | None, mean, std, count: int) -> list[torch.Tensor]:
    """`count` normalised batches of real (or synthetic) photos: latency and agreement on images, not noise."""
    import cv2

    dataset = discover(data)
    samples = dataset.samples[: count * batch]
    photos = [cv2.resize(read_photo(s.image), (size, size), interpolation=cv2.INTER_LINEAR) for s in samples]
    while len(photos) < count * batch:
        photos += photos[: count * batch - len(photos)]
    array = (np.stack(photos).astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    tensor = torch.from_numpy(array.transpose(0, 3, 1, 2).copy())
    return list(tensor.split(batch))


def bench_infer(
    model_name: str | None = None,
    checkpoint: str | Path | None = None,
    threads: int = 2,
    size: int = 512,
    batch: int = 1,
    repeats: int = 30,
    warmup: int = 5,
    backends: tuple[str, ...] = INFER_BACKENDS,
    data: str | Path | None = None,
    calibration_images: int = 32,
    out: str | Path = "results",
    onnx_dir: str | Path | None = None,
    accuracy: bool = False,
) -> pd.DataFrame:
    """One row per backend: median and p90 ms per image, images/s, argmax agreement with eager and the
    largest logit difference. A model name benchmarks untrained weights; a checkpoint, its trained ones
    (then int8 is calibrated on its own training split). `onnx_dir` keeps the exported files. `accuracy`
    (a checkpoint only) adds each backend's mIoU / mF1 on the checkpoint's validation split and its mIoU
    drop from eager PyTorch: what int8 costs, beside what it saves."""
    unknown = sorted(set(backends) - set(INFER_BACKENDS))
    if unknown:
        raise ConfigError(f"unknown backend(s) {', '.join(unknown)}; valid: {', '.join(INFER_BACKENDS)}")
    if (model_name is None) == (checkpoint is None):
        raise ConfigError("give a model name or a checkpoint (not both)")
    if size % 32:
        raise ConfigError(f"size must be a multiple of 32, got {size}")
    if accuracy and checkpoint is None:
        raise ConfigError("accuracy needs trained weights: pass a checkpoint, not a model name")
    model, description = _bench_model(model_name, checkpoint)
    inputs = _inputs(size, batch, data, description["mean"], description["std"], count=4)
    rows: list[dict[str, Any]] = []
    base = {
        "model": description["model"],
        "weights": description["weights"],
        "size": size,
        "batch": batch,
        "threads": threads,
    }
    with contextlib.ExitStack() as stack:
        scratch = None if onnx_dir else stack.enter_context(tempfile.TemporaryDirectory(prefix="facelib-bench-"))
        folder = Path(onnx_dir or scratch)
        paths = _onnx_paths(folder, description["model"], size)
        with cpu_threads(threads):
            for backend in backends:
                rows.append(
                    {
                        "backend": backend,
                        **base,
                        **_measure(
                            backend,
                            model,
                            description,
                            paths,
                            inputs,
                            size,
                            batch,
                            repeats,
                            warmup,
                            data,
                            calibration_images,
                            out,
                            threads,
                        ),
                    }
                )
        table = pd.DataFrame(rows).set_index("backend")
        if accuracy:
            _add_accuracy(table, checkpoint, paths, data, out, threads)
    return table


def _onnx_paths(folder: Path, model: str, size: int) -> dict[str, Path]:
    return {
        backend: folder / f"{model}_{size}{'_fixed' if backend.endswith('_fixed') else ''}"
        f"{'_int8' if 'int8' in backend else ''}.onnx"
        for backend in INFER_BACKENDS
        if backend.startswith("onnx")
    }


def _add_accuracy(table: pd.DataFrame, checkpoint, paths: dict[str, Path], data, out, threads: int) -> None:
    """mIoU and mF1 on the checkpoint's validation split per backend (compile: the same graph as eager)."""
    sources = {"eager": checkpoint, **paths}
    with cpu_threads(threads):
        for backend in table.index:
            if backend in sources and table.loc[backend, "status"] == "ok":
                summary = evaluate(sources[backend], data, "val", out=out, device="cpu").summary
                table.loc[backend, "val_mIoU"], table.loc[backend, "val_mF1"] = summary["mIoU"], summary["mF1"]
    if "eager" in table.index and "val_mIoU" in table.columns:
        table["val_mIoU_drop"] = table.loc["eager", "val_mIoU"] - table["val_mIoU"]


def _measure(
    backend, model, description, paths, inputs, size, batch, repeats, warmup, data, calibration_images, out, threads
) -> dict[str, Any]:
    """One backend's latency and agreement with eager; a backend that cannot run here is a status, not a crash."""
    try:
        runner = _backend(backend, model, description, paths, size, batch, data, calibration_images, out, threads)
    except Exception as error:
        return {"status": f"failed: {str(error).splitlines()[0][:160]}"}
    cycle = iter(inputs * (repeats + warmup))
    times_ms = [1000 * t / batch for t in timed(lambda: runner(next(cycle)), repeats, warmup, lambda: None)]
    parity = compare_with_torch(model, runner, inputs=inputs) if backend != "eager" else None
    return {
        "status": "ok",
        "median_ms": statistics.median(times_ms),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "images_per_s": 1000 / statistics.median(times_ms),
        "argmax_agreement": 1.0 if parity is None else parity.argmax_agreement,
        "max_abs_logit_diff": 0.0 if parity is None else parity.max_abs_diff,
    }


def _bench_model(model_name: str | None, checkpoint: str | Path | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    if checkpoint is not None:
        content = load_checkpoint(checkpoint)
        return model_from_checkpoint(content, checkpoint), {**content, "weights": f"trained ({Path(checkpoint)})"}
    torch.manual_seed(0)
    model = build_model(model_name).eval()
    config = {"val_fraction": 0.2, "split_seed": 0}
    description = {
        "model": model_name,
        "mean": [127.5] * 3,
        "std": [64.0] * 3,
        "config": config,
        "weights": "untrained (random)",
        "model_overrides": {},
        "num_classes": 19,
    }
    return model, description


def _backend(backend, model, description, paths, size, batch, data, calibration_images, out, threads):
    """A callable (normalised batch tensor -> logits) for one backend; exports/quantizes on first need."""
    if backend == "eager":
        return _no_grad(model)
    if backend == "compile":
        import torch._inductor.config as inductor

        runner = _no_grad(torch.compile(model, dynamic=False))
        with inductor.patch(freezing=True):  # weights folded into the graph: inductor's inference setting
            runner(torch.zeros(1, 3, size, size))  # compiles now, not inside the timed window
        return runner
    fixed_batch = batch if backend.endswith("_fixed") else None
    fp32_path = paths["onnx_fp32_fixed" if fixed_batch else "onnx_fp32"]
    if not fp32_path.exists():
        export_model(model, fp32_path, size, fixed_batch=fixed_batch)
        write_metadata(fp32_path, _bench_metadata(description, size, "float32"))
    if "int8" not in backend:
        return OnnxModel(fp32_path, threads)
    int8_path = paths[backend]
    if not int8_path.exists():
        batches = calibration_batches({**description, "input_size": size}, data, calibration_images, out)
        if fixed_batch:  # a fixed-shape graph is calibrated with batches of its own size
            batches = [np.concatenate(batches[i : i + fixed_batch]) for i in range(0, len(batches), fixed_batch)]
            batches = [b for b in batches if len(b) == fixed_batch]
        quantize_int8(fp32_path, int8_path, batches, f"{len(batches)} training images of {calibration_source(data)}")
    return OnnxModel(int8_path, threads)


def _bench_metadata(description: dict[str, Any], size: int, precision: str) -> dict[str, Any]:
    return {
        "format": ONNX_FORMAT,
        "version": 1,
        "precision": precision,
        "model": description["model"],
        "mean": description["mean"],
        "std": description["std"],
        "input_size": size,
        "config": description["config"],
        "weights": description["weights"],
    }


def _no_grad(model: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


SHOWN_COLUMNS = (
    "status",
    "images_per_s",
    "ms_per_batch",
    "median_ms",
    "p90_ms",
    "data_wait_share",
    "peak_memory_gib",
    "lovasz_share_of_step",
    "argmax_agreement",
    "max_abs_logit_diff",
    "val_mIoU",
    "val_mIoU_drop",
)
"""The columns `facelib bench` prints of a stage or latency table, where present (the file keeps them all)."""


def anchor_bench_names(models: Sequence[str], size: int, threads: int) -> tuple[str, str]:
    """The file stem and title of an anchor table (`anchor_latency`)."""
    stem = f"anchor_{'_'.join(m.replace('@', '-at') for m in models)}_{size}px_t{threads}"
    return stem, f"ONNX Runtime float32 latency as a multiple of {ANCHOR}, {size}px, batch 1, {threads} threads"


def infer_bench_names(table: pd.DataFrame, trained: bool, size: int, threads: int, batch: int) -> tuple[str, str]:
    """The file stem and title of a latency table (`bench_infer`)."""
    name, weights = table["model"].iloc[0], "trained" if trained else "untrained"
    stem = f"infer_{name}_{weights}_{size}px_t{threads}_b{batch}"
    return stem, f"CPU inference latency: {name} ({weights}), {size}px, batch {batch}, {threads} threads"


def write_bench(
    table: pd.DataFrame, stem: str, title: str, data: str | Path | None = None, out: str | Path = "results"
) -> list[Path]:
    """results/bench/STEM.{csv,md}, the note naming command, data, machine, library versions and commit."""
    import os

    libraries = ", ".join(f"{k} {v}" for k, v in {**versions(), **_onnx_versions()}.items())
    source = data or os.environ.get("FACELIB_DATA") or "the built-in synthetic faces"
    note = f"{provenance(str(source))} Libraries: {libraries}."
    return write_table(table, Path(out) / "bench" / stem, title, note, ".4g")


def _onnx_versions() -> dict[str, str]:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__}


ANCHOR = "torchvision lraspp_mobilenet_v3_large"
"""The yardstick for CPU speed: a model a reader knows and can time on their own machine (3.2M parameters with
19 classes; untrained weights time the same as trained ones)."""


class _LogitsOnly(torch.nn.Module):
    """torchvision's segmentation models return {"out": logits}; the exporter and the timing want the tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def anchor_model() -> torch.nn.Module:
    """The anchor, untrained, with facelib's 19 classes."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    return _LogitsOnly(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=19))


def onnx_latency_ms(model: torch.nn.Module, size: int, threads: int, repeats: int, warmup: int = 3) -> float:
    """Median ONNX Runtime float32 latency of one (1, 3, size, size) image, exported to a temporary file."""
    with tempfile.TemporaryDirectory() as folder:
        path = export_model(model.eval(), Path(folder) / "model.onnx", example_size=size, fixed_batch=1)
        session = onnx_session(path, threads)
        name = session.get_inputs()[0].name
        x = {name: np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)}
        times = timed(lambda: session.run(None, x), repeats, warmup, lambda: None)
    return statistics.median(times) * 1000


def anchor_latency(names: Sequence[str], size: int = 512, threads: int = 2, repeats: int = 10) -> pd.DataFrame:
    """ONNX Runtime float32 latency of each named model and of the anchor, measured in this one call (one
    process, one machine), and each model's time as a multiple of the anchor's: a speed a reader can carry to
    their own machine, unlike milliseconds from ours. A name may carry its own input side, `NAME@320`: the cost
    of a model that resizes a `size` photo to 320 px first, beside the anchor at `size`."""
    sides = {}
    for spec in names:
        name, _, side = spec.partition("@")
        if side and not (side.isdigit() and int(side) >= 32 and int(side) % 32 == 0):
            raise ConfigError(f"{spec!r}: the input side after @ must be a multiple of 32 (the models' stride)")
        sides[spec] = (name, int(side or size))
    anchor = onnx_latency_ms(anchor_model(), size, threads, repeats)
    rows = [{"model": ANCHOR, "input_px": size, "onnx_ms": anchor, "vs_anchor": 1.0}]
    for spec, (name, side) in sides.items():
        torch.manual_seed(0)
        ms = onnx_latency_ms(build_model(name), side, threads, repeats)
        rows.append({"model": spec, "input_px": side, "onnx_ms": ms, "vs_anchor": ms / anchor})
    return pd.DataFrame(rows).set_index("model")


def checkpoint_speed(
    checkpoint: str | Path, input_size: int | None = None, threads: int = 2, repeats: int = 10, size: int = 512
) -> dict[str, Any]:
    """What a model card states as the speed: the checkpoint's ONNX Runtime float32 time per photo at its input
    side (`input_size` when given) and the anchor's at `size`, both measured in this one call, and their ratio."""
    check_input_size(input_size)
    content = load_checkpoint(checkpoint)
    side = input_size or int(content["input_size"])
    anchor_ms = onnx_latency_ms(anchor_model(), size, threads, repeats)
    model_ms = onnx_latency_ms(model_from_checkpoint(content, checkpoint), side, threads, repeats)
    return {
        "onnx_ms": model_ms,
        "input_px": side,
        "anchor": ANCHOR,
        "anchor_ms": anchor_ms,
        "anchor_px": size,
        "vs_anchor": model_ms / anchor_ms,
        "threads": threads,
        "machine": machine(),
    }
