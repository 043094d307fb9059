"""Speed, measured: `facelib bench train` and `facelib bench infer`.

Training: the data pipeline alone (decode cache + the run's augmentation in N workers), the training step
alone (forward, composite loss, backward, update on one real batch kept on the device), and the real loop
(both, as `facelib.train` runs them), each as images/s over a window after a warm-up; the loop also reports
the share of its time spent waiting for data. When the loss has a Lovász term, the step is timed again
without it and with smp's per-class implementation, which gives the term's share of the step.

Inference: median and 90th-percentile latency per image of PyTorch eager, `torch.compile` (inductor,
frozen weights, where it works on the machine), ONNX Runtime float32 and ONNX Runtime int8, with each
backend's argmax agreement with eager on the same inputs.

These are benchmarks, not tests; every table says which machine, libraries and commit produced it.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from facelib.errors import ConfigError

INFER_BACKENDS = ("eager", "compile", "onnx_fp32", "onnx_int8", "onnx_fp32_fixed", "onnx_int8_fixed")
"""`_fixed`: the graph exported for exactly the benchmark's batch and size (`facelib export --fixed-shape`)."""


def _timed(run: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Wall time in seconds of each of `repeats` calls after `warmup` untimed ones (synchronised)."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


# --- training ----------------------------------------------------------------------------------------------


def bench_train(config, steps: int = 20, warmup: int = 5, out: str | Path = "results") -> pd.DataFrame:
    """One row per stage (data, step, loop, and the Lovász variants of step) for the run `config` describes.

    The window is `steps` batches after `warmup` batches (see the comments for `data` and `loop`, whose
    warm-ups also cover the workers' start and prefetch queue). Nothing is written to the run cache.
    """
    from segmentation_models_pytorch.losses import LovaszLoss

    from facelib import train as engine
    from facelib.infer import resolve_device
    from facelib.losses import CompositeLoss, LossConfig

    device = resolve_device(config.device)
    cuda = device.type == "cuda"
    sync = _sync(device)
    engine.prepare_cpu(config, device)
    data = engine.identify(config, out)
    engine.load_sets(config, data)
    batch = config.batch_size
    if len(data.train_set) < batch:
        raise ConfigError(f"batch_size {batch} is larger than the {len(data.train_set)} training images")
    base = {"model": config.model, "device": _device_label(device), "crop": config.crop_size, "batch": batch,
            "workers": engine.loader_workers(config, device),
            "loss": config.loss if isinstance(config.loss, str) else "custom",
            "augment": config.augment, "bf16": cuda and config.amp, "channels_last": config.channels_last,
            "compiled": config.compile}  # fmt: skip
    rows = []

    # The data pipeline alone: batches as the training loop receives them (pinned when on CUDA). All workers
    # start together, so the first `workers` batches arrive in a burst; the window starts after them.
    workers = engine.loader_workers(config, device)
    data_warmup, data_steps = warmup + workers, max(steps, 3 * workers)
    loader = iter(engine.train_loader(config, data, 0, data_warmup + data_steps + 1, device=device))
    first = next(loader)
    times = _timed(lambda: next(loader), data_steps, data_warmup, lambda: None)
    rows.append(_row(base, "data", sum(times) / len(times), batch))  # the mean: batches arrive in bursts

    # The training step alone, on one real batch already on the device.
    criterion, weights = engine.build_criterion(config, data, device)
    model = engine.build_training_model(config, device).train()
    optimizer, _ = engine.build_optimizer(config, model)
    network = torch.compile(model) if config.compile else model
    images, masks = engine.to_device(*first, device, config.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and config.amp else contextlib.nullcontext()

    def step_with(loss: torch.nn.Module) -> Callable[[], Any]:
        return lambda: engine.train_step(network, loss, optimizer, images, masks, autocast)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step_times = _timed(step_with(criterion), steps, warmup, sync)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    rows.append({**_row(base, "step", statistics.median(step_times), batch), "peak_memory_gib": peak})

    # The real loop: fetch, copy, step, exactly as facelib.train does (without validation and checkpoints).
    # The workers prefetch `4 * workers` batches. When the pipeline alone is slower than the step, the
    # window starts once that queue has been drawn down, so waiting shows instead of hiding behind it.
    data_rate, step_rate = rows[0]["images_per_s"], batch / statistics.median(step_times)
    loop_warmup = warmup + (4 * workers if data_rate < 1.2 * step_rate else 0)
    loader = engine.train_loader(config, data, 0, loop_warmup + steps, device=device)
    loop_iteration = _LoopIteration(config, loader, network, criterion, optimizer, device, autocast)
    for _ in range(loop_warmup):
        loop_iteration()
    sync()
    loop_iteration.wait, start = 0.0, time.perf_counter()
    for _ in range(steps):
        loop_iteration()
    sync()
    total = time.perf_counter() - start
    rows.append({**_row(base, "loop", total / steps, batch), "data_wait_share": loop_iteration.wait / total})

    # The Lovász term's share of the step, and what smp's per-class implementation costs in its place.
    settings = criterion.config
    if settings.terms.get("lovasz", 0) > 0:
        without = {k: v for k, v in settings.terms.items() if k != "lovasz"}
        variants: dict[str, torch.nn.Module] = {}
        if without:
            variants["step_without_lovasz"] = CompositeLoss(
                LossConfig(without, settings.aux_weight, settings.class_weighted), weights
            )
        smp_loss = CompositeLoss(settings, weights)
        smp_loss.lovasz = LovaszLoss(mode="multiclass", ignore_index=smp_loss.ce.ignore_index)
        variants["step_smp_lovasz"] = smp_loss
        for stage, loss in variants.items():
            times = _timed(step_with(loss.to(device)), steps, warmup, sync)
            rows.append(_row(base, stage, statistics.median(times), batch))
    table = pd.DataFrame(rows).set_index("stage")
    step_ms = table.loc["step", "ms_per_batch"]
    if "step_without_lovasz" in table.index:
        table["lovasz_share_of_step"] = np.nan
        table.loc["step", "lovasz_share_of_step"] = 1 - table.loc["step_without_lovasz", "ms_per_batch"] / step_ms
    return table


# --- CPU training levers --------------------------------------------------------------------------------------

BEFORE = {"workers": 1, "channels_last": False, "presize": False, "keep_memory": False, "loss_impl": "before"}
"""The CPU training settings before the levers existed: one worker, contiguous layout, 512 px pairs resized at
every draw, glibc's default allocator, and the loss implementations of that time (Lovász sorting floats for
every class, smp's Dice)."""

LEVER_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    # (row, loss, changes from all levers on); rows without keep_memory come first (see bench_cpu_levers)
    ("before", "ce", BEFORE),
    ("before", "wce_lovasz_dice", BEFORE),
    ("all but keep_memory", "ce", {"keep_memory": False}),
    ("all levers", "ce", {}),
    ("all but channels_last", "ce", {"channels_last": False}),
    ("all but presize", "ce", {"presize": False}),
    ("1 worker", "ce", {"workers": 1}),
    ("1 worker, 1 thread", "ce", {"workers": 1, "threads": 1}),
    ("torch.compile", "ce", {"compile": True}),
    ("all but the loss code", "wce_lovasz_dice", {"loss_impl": "before"}),
    ("all levers", "wce_lovasz_dice", {}),
    ("all levers", "wce_lovasz_dice_coarse4", {}),
)


def bench_cpu_levers(
    config,
    steps: int = 10,
    warmup: int = 3,
    out: str | Path = "results",
    compile: bool = True,
    models: Sequence[str] = (),
) -> pd.DataFrame:
    """The real training loop's images/s on the CPU, with every lever on and with each one off, for `models`
    (default: the config's) in one process, so the ratios compare like with like on whatever machine runs it. Levers: `workers` (0: augment in the
    main process), `channels_last`, `presize` (decoded pairs resized to the working resolution once),
    `keep_memory` (`train.keep_freed_memory`; it cannot be undone in a process, so the rows without it run
    first), the loss implementations (`loss_impl`), threads, and torch.compile (its compile time is a column).
    Also the recipe's loss, exact and coarse (`wce_lovasz_dice_coarse4`). `vs_before_ce` and `vs_ce` divide
    each row's images/s by the same model's `before` and `all levers` CE rows."""
    from segmentation_models_pytorch.losses import DiceLoss as SmpDice

    from facelib import train as engine
    from facelib.data import keep_decoded
    from facelib.losses import LovaszSoftmax

    device = torch.device("cpu")
    config = config.replace(device="cpu")
    keep_decoded(True)
    try:
        runs = {}
        for presize in (True, False):
            runs[presize] = engine.identify(config, out)
            engine.load_sets(config, runs[presize], presize=presize)
    finally:
        keep_decoded(False)
    default_threads = torch.get_num_threads()
    plan = [(position, model, name, loss, {"workers": 0, "channels_last": True, "presize": True, "keep_memory": True,
                                 "loss_impl": "facelib", "threads": default_threads, "compile": False, **changes})
            for position, (model, (name, loss, changes)) in enumerate(itertools.product(models or [config.model],
                                                                                        LEVER_ROWS))
            if compile or name != "torch.compile"]  # fmt: skip
    plan.sort(key=lambda row: row[4]["keep_memory"])  # stable: every model's rows without it come first
    rows, memory_kept = [], False
    for position, model, name, loss, levers in plan:
        if levers["keep_memory"] and not memory_kept:
            memory_kept = engine.keep_freed_memory()
        run_config = config.replace(model=model, loss=loss, workers=levers["workers"], compile=levers["compile"],
                                    channels_last=levers["channels_last"], threads=levers["threads"])  # fmt: skip
        criterion, _ = engine.build_criterion(run_config, runs[levers["presize"]], device)
        if levers["loss_impl"] == "before":
            criterion.lovasz = LovaszSoftmax(criterion.ce.ignore_index, cpu_shortcuts=False)
            criterion.dice = SmpDice("multiclass", from_logits=True, ignore_index=criterion.ce.ignore_index)
        torch.set_num_threads(levers["threads"])
        try:
            seconds, wait, compile_s = _loop_seconds(run_config, runs[levers["presize"]], criterion, steps, warmup)
        finally:
            torch.set_num_threads(default_threads)
        rows.append({"position": position, "row": name, "model": model, "loss": loss, "crop": config.crop_size,
                     "batch": config.batch_size, **{k: v for k, v in levers.items()},
                     "keep_memory": levers["keep_memory"] and memory_kept,
                     "images_per_s": steps * config.batch_size / seconds, "data_wait_share": wait / seconds,
                     "compile_s": compile_s})  # fmt: skip
    table = pd.DataFrame(rows).sort_values("position", kind="stable").drop(columns="position")
    for reference, column in (("before", "vs_before_ce"), ("all levers", "vs_ce")):
        ce = table[(table["row"] == reference) & (table["loss"] == "ce")].set_index("model")["images_per_s"]
        table[column] = table["images_per_s"] / table["model"].map(ce)
    return table.set_index("row")


def _loop_seconds(config, data, criterion, steps: int, warmup: int) -> tuple[float, float, float | None]:
    """Seconds for `steps` iterations of the training loop (fetch, copy, step) after `warmup` ones, the part
    of them spent waiting for data, and the first iteration's time when the model is compiled."""
    from facelib import train as engine

    device = torch.device("cpu")
    model = engine.build_training_model(config, device).train()
    optimizer, _ = engine.build_optimizer(config, model)
    network = torch.compile(model) if config.compile else model
    loader = engine.train_loader(config, data, 0, warmup + steps)
    iteration = _LoopIteration(config, loader, network, criterion, optimizer, device, contextlib.nullcontext())
    first = time.perf_counter()
    iteration()
    compile_s = time.perf_counter() - first if config.compile else None
    for _ in range(warmup - 1):
        iteration()
    iteration.wait, start = 0.0, time.perf_counter()
    for _ in range(steps):
        iteration()
    return time.perf_counter() - start, iteration.wait, compile_s


class _LoopIteration:
    """One iteration of the training loop as `facelib.train` runs it (fetch, copy, step; no validation or
    checkpoints), adding the time spent waiting for the batch to `wait`."""

    def __init__(self, config, loader, network, criterion, optimizer, device, autocast) -> None:
        from facelib import train as engine

        self.engine, self.batches, self.wait = engine, iter(loader), 0.0
        self.config, self.network, self.criterion, self.optimizer = config, network, criterion, optimizer
        self.device, self.autocast = device, autocast

    def __call__(self) -> None:
        fetch = time.perf_counter()
        images, masks = next(self.batches)
        self.wait += time.perf_counter() - fetch
        images, masks = self.engine.to_device(images, masks, self.device, self.config.channels_last)
        self.engine.train_step(self.network, self.criterion, self.optimizer, images, masks, self.autocast)


def _row(base: dict[str, Any], stage: str, seconds_per_batch: float, batch: int) -> dict[str, Any]:
    return {"stage": stage, **base, "images_per_s": batch / seconds_per_batch, "ms_per_batch": 1000 * seconds_per_batch}


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


# --- inference ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _inputs(size: int, batch: int, data: str | Path | None, mean, std, count: int) -> list[torch.Tensor]:
    """`count` normalised batches of real (or synthetic) photos: latency and agreement on images, not noise."""
    import cv2

    from facelib.data import discover
    from facelib.infer import read_photo

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
    base = {"model": description["model"], "weights": description["weights"], "size": size, "batch": batch,
            "threads": threads}  # fmt: skip
    with contextlib.ExitStack() as stack:
        scratch = None if onnx_dir else stack.enter_context(tempfile.TemporaryDirectory(prefix="facelib-bench-"))
        folder = Path(onnx_dir or scratch)
        paths = _onnx_paths(folder, description["model"], size)
        with _threads(threads):
            for backend in backends:
                rows.append({"backend": backend, **base, **_measure(backend, model, description, paths, inputs,
                            size, batch, repeats, warmup, data, calibration_images, out, threads)})  # fmt: skip
        table = pd.DataFrame(rows).set_index("backend")
        if accuracy:
            _add_accuracy(table, checkpoint, paths, data, out, threads)
    return table


def _onnx_paths(folder: Path, model: str, size: int) -> dict[str, Path]:
    return {backend: folder / f"{model}_{size}{'_fixed' if backend.endswith('_fixed') else ''}"
                              f"{'_int8' if 'int8' in backend else ''}.onnx"
            for backend in INFER_BACKENDS if backend.startswith("onnx")}  # fmt: skip


def _add_accuracy(table: pd.DataFrame, checkpoint, paths: dict[str, Path], data, out, threads: int) -> None:
    """mIoU and mF1 on the checkpoint's validation split per backend (compile: the same graph as eager)."""
    from facelib.infer import evaluate

    sources = {"eager": checkpoint, **paths}
    with _threads(threads):
        for backend in table.index:
            if backend in sources and table.loc[backend, "status"] == "ok":
                summary = evaluate(sources[backend], data, "val", out=out, device="cpu").summary
                table.loc[backend, "val_mIoU"], table.loc[backend, "val_mF1"] = summary["mIoU"], summary["mF1"]
    if "eager" in table.index and "val_mIoU" in table.columns:
        table["val_mIoU_drop"] = table.loc["eager", "val_mIoU"] - table["val_mIoU"]


def _measure(backend, model, description, paths, inputs, size, batch, repeats, warmup, data, calibration_images,
             out, threads) -> dict[str, Any]:  # fmt: skip
    """One backend's latency and agreement with eager; a backend that cannot run here is a status, not a crash."""
    from facelib.export import compare_with_torch

    try:
        runner = _backend(backend, model, description, paths, size, batch, data, calibration_images, out, threads)
    except Exception as error:
        return {"status": f"failed: {str(error).splitlines()[0][:160]}"}
    cycle = iter(inputs * (repeats + warmup))
    times_ms = [1000 * t / batch for t in _timed(lambda: runner(next(cycle)), repeats, warmup, lambda: None)]
    parity = compare_with_torch(model, runner, inputs=inputs) if backend != "eager" else None
    return {"status": "ok", "median_ms": statistics.median(times_ms), "p90_ms": float(np.percentile(times_ms, 90)),
            "images_per_s": 1000 / statistics.median(times_ms),
            "argmax_agreement": 1.0 if parity is None else parity.argmax_agreement,
            "max_abs_logit_diff": 0.0 if parity is None else parity.max_abs_diff}  # fmt: skip


def _bench_model(model_name: str | None, checkpoint: str | Path | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    from facelib.infer import load_checkpoint, model_from_checkpoint
    from facelib.models import build_model

    if checkpoint is not None:
        content = load_checkpoint(checkpoint)
        return model_from_checkpoint(content, checkpoint), {**content, "weights": f"trained ({Path(checkpoint)})"}
    torch.manual_seed(0)
    model = build_model(model_name).eval()
    config = {"val_fraction": 0.2, "split_seed": 0}
    description = {"model": model_name, "mean": [127.5] * 3, "std": [64.0] * 3, "config": config,
                   "weights": "untrained (random)", "model_overrides": {}, "num_classes": 19}  # fmt: skip
    return model, description


def _backend(backend, model, description, paths, size, batch, data, calibration_images, out, threads):
    """A callable (normalised batch tensor -> logits) for one backend; exports/quantizes on first need."""
    from facelib.export import (
        OnnxModel,
        calibration_batches,
        calibration_source,
        export_model,
        quantize_int8,
        write_metadata,
    )  # fmt: skip

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
    from facelib.export import ONNX_FORMAT

    return {"format": ONNX_FORMAT, "version": 1, "precision": precision, "model": description["model"],
            "mean": description["mean"], "std": description["std"], "input_size": size,
            "config": description["config"], "weights": description["weights"]}  # fmt: skip


def _no_grad(model: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return run


# --- files -------------------------------------------------------------------------------------------------


def write_bench(
    table: pd.DataFrame, stem: str, title: str, data: str | Path | None = None, out: str | Path = "results"
) -> list[Path]:
    """results/bench/STEM.{csv,md}, the note naming command, data, machine, library versions and commit."""
    import os

    from facelib.outputs import provenance, write_table
    from facelib.train import versions

    libraries = ", ".join(f"{k} {v}" for k, v in {**versions(), **_onnx_versions()}.items())
    source = data or os.environ.get("FACELIB_DATA") or "the built-in synthetic faces"
    note = f"{provenance(str(source))} Libraries: {libraries}."
    return write_table(table, Path(out) / "bench" / stem, title, note, ".4g")


def _onnx_versions() -> dict[str, str]:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__}


# --- speed against a known model -----------------------------------------------------------------------

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
    from facelib.export import export_model, onnx_session

    with tempfile.TemporaryDirectory() as folder:
        path = export_model(model.eval(), Path(folder) / "model.onnx", example_size=size, fixed_batch=1)
        session = onnx_session(path, threads)
        name = session.get_inputs()[0].name
        x = {name: np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)}
        times = _timed(lambda: session.run(None, x), repeats, warmup, lambda: None)
    return statistics.median(times) * 1000


def anchor_latency(names: Sequence[str], size: int = 512, threads: int = 2, repeats: int = 10) -> pd.DataFrame:
    """ONNX Runtime float32 latency of each named model and of the anchor, measured in this one call (one
    process, one machine), and each model's time as a multiple of the anchor's: a speed a reader can carry to
    their own machine, unlike milliseconds from ours."""
    from facelib.models import build_model

    anchor = onnx_latency_ms(anchor_model(), size, threads, repeats)
    rows = [{"model": ANCHOR, "onnx_ms": anchor, "vs_anchor": 1.0}]
    for name in names:
        torch.manual_seed(0)
        ms = onnx_latency_ms(build_model(name), size, threads, repeats)
        rows.append({"model": name, "onnx_ms": ms, "vs_anchor": ms / anchor})
    return pd.DataFrame(rows).set_index("model")
