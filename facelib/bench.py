"""Training speed, measured: `facelib bench train`.

Training: the data pipeline alone (decode cache + the run's augmentation in N workers), the training step
alone (forward, composite loss, backward, update on one real batch kept on the device), and the real loop
(both, as `facelib.train` runs them), each as images/s over a window after a warm-up; the loop also reports
the share of its time spent waiting for data. When the loss has a Lovász term, the step is timed again
without it and with smp's per-class implementation, which gives the term's share of the step.
Inference speed is `facelib.latency`'s.

These are benchmarks, not tests; every table says which machine, libraries and commit produced it.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from facelib.checkpoint import (
    resolve_device,
)
from facelib.data import keep_decoded
from facelib.errors import ConfigError
from facelib.losses import CompositeLoss, LossConfig, LovaszSoftmax
from facelib.machine import keep_freed_memory, loader_workers, prepare_cpu
from facelib.models.cost import synchronizer, timed
from facelib.run import identify, load_sets
from facelib.train import (
    build_criterion,
    build_optimizer,
    build_training_model,
    to_device,
    train_loader,
    train_step,
    training_autocast,
)

# --- training ----------------------------------------------------------------------------------------------


def bench_train(config, steps: int = 20, warmup: int = 5, out: str | Path = "results") -> pd.DataFrame:
    """One row per stage (data, step, loop, and the Lovász variants of step) for the run `config` describes.

    The window is `steps` batches after `warmup` batches (see the comments for `data` and `loop`, whose
    warm-ups also cover the workers' start and prefetch queue). Nothing is written to the run cache.
    """
    from segmentation_models_pytorch.losses import LovaszLoss

    device = resolve_device(config.device)
    cuda = device.type == "cuda"
    sync = synchronizer(device)
    prepare_cpu(config, device)
    data = identify(config, out)
    load_sets(config, data)
    batch = config.batch_size
    if len(data.train_set) < batch:
        raise ConfigError(f"batch_size {batch} is larger than the {len(data.train_set)} training images")
    base = {
        "model": config.model,
        "device": _device_label(device),
        "crop": config.crop_size,
        "batch": batch,
        "workers": loader_workers(config, device),
        "loss": config.loss if isinstance(config.loss, str) else "custom",
        "augment": config.augment,
        "bf16": (cuda and config.amp) or (not cuda and config.cpu_bf16),
        "channels_last": config.channels_last,
        "compiled": config.compile,
    }
    rows = []

    # The data pipeline alone: batches as the training loop receives them (pinned when on CUDA). All workers
    # start together, so the first `workers` batches arrive in a burst; the window starts after them.
    workers = loader_workers(config, device)
    data_warmup, data_steps = warmup + workers, max(steps, 3 * workers)
    loader = iter(train_loader(config, data, 0, data_warmup + data_steps + 1, device=device))
    first = next(loader)
    times = timed(lambda: next(loader), data_steps, data_warmup, lambda: None)
    rows.append(_row(base, "data", sum(times) / len(times), batch))  # the mean: batches arrive in bursts

    # The training step alone, on one real batch already on the device.
    criterion, weights = build_criterion(config, data, device)
    model = build_training_model(config, device).train()
    optimizer, _ = build_optimizer(config, model)
    network = torch.compile(model) if config.compile else model
    images, masks = to_device(*first, device, config.channels_last)
    autocast = training_autocast(config, device)

    def step_with(loss: torch.nn.Module) -> Callable[[], Any]:
        return lambda: train_step(network, loss, optimizer, images, masks, autocast)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step_times = timed(step_with(criterion), steps, warmup, sync)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    rows.append({**_row(base, "step", statistics.median(step_times), batch), "peak_memory_gib": peak})

    # The real loop: fetch, copy, step, exactly as facelib.train does (without validation and checkpoints).
    # The workers prefetch `4 * workers` batches. When the pipeline alone is slower than the step, the
    # window starts once that queue has been drawn down, so waiting shows instead of hiding behind it.
    data_rate, step_rate = rows[0]["images_per_s"], batch / statistics.median(step_times)
    loop_warmup = warmup + (4 * workers if data_rate < 1.2 * step_rate else 0)
    loader = train_loader(config, data, 0, loop_warmup + steps, device=device)
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
            times = timed(step_with(loss.to(device)), steps, warmup, sync)
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
    ("cpu_bf16", "wce_lovasz_dice_coarse4", {"cpu_bf16": True}),
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
    first), the loss implementations (`loss_impl`), threads, torch.compile (its compile time is a column) and
    bf16 autocast (`cpu_bf16`, with the coarse recipe: it pays only on CPUs with bf16 instructions).
    Also the recipe's loss, exact and coarse (`wce_lovasz_dice_coarse4`). `vs_before_ce` and `vs_ce` divide
    each row's images/s by the same model's `before` and `all levers` CE rows."""
    from segmentation_models_pytorch.losses import DiceLoss as SmpDice

    device = torch.device("cpu")
    config = config.replace(device="cpu")
    keep_decoded(True)
    try:
        runs = {}
        for presize in (True, False):
            runs[presize] = identify(config, out)
            load_sets(config, runs[presize], presize=presize)
    finally:
        keep_decoded(False)
    default_threads = torch.get_num_threads()
    plan = [
        (
            position,
            model,
            name,
            loss,
            {
                "workers": 0,
                "channels_last": True,
                "presize": True,
                "keep_memory": True,
                "loss_impl": "facelib",
                "threads": default_threads,
                "compile": False,
                "cpu_bf16": False,
                **changes,
            },
        )
        for position, (model, (name, loss, changes)) in enumerate(
            itertools.product(models or [config.model], LEVER_ROWS)
        )
        if compile or name != "torch.compile"
    ]
    plan.sort(key=lambda row: row[4]["keep_memory"])  # stable: every model's rows without it come first
    rows, memory_kept = [], False
    for position, model, name, loss, levers in plan:
        if levers["keep_memory"] and not memory_kept:
            memory_kept = keep_freed_memory()
        run_config = config.replace(
            model=model,
            loss=loss,
            workers=levers["workers"],
            compile=levers["compile"],
            channels_last=levers["channels_last"],
            threads=levers["threads"],
            cpu_bf16=levers["cpu_bf16"],
        )
        criterion, _ = build_criterion(run_config, runs[levers["presize"]], device)
        if levers["loss_impl"] == "before":
            criterion.lovasz = LovaszSoftmax(criterion.ce.ignore_index, cpu_shortcuts=False)
            criterion.dice = SmpDice("multiclass", from_logits=True, ignore_index=criterion.ce.ignore_index)
        torch.set_num_threads(levers["threads"])
        try:
            seconds, wait, compile_s = _loop_seconds(run_config, runs[levers["presize"]], criterion, steps, warmup)
        finally:
            torch.set_num_threads(default_threads)
        rows.append(
            {
                "position": position,
                "row": name,
                "model": model,
                "loss": loss,
                "crop": config.crop_size,
                "batch": config.batch_size,
                **{k: v for k, v in levers.items()},
                "keep_memory": levers["keep_memory"] and memory_kept,
                "images_per_s": steps * config.batch_size / seconds,
                "data_wait_share": wait / seconds,
                "compile_s": compile_s,
            }
        )
    table = pd.DataFrame(rows).sort_values("position", kind="stable").drop(columns="position")
    for reference, column in (("before", "vs_before_ce"), ("all levers", "vs_ce")):
        ce = table[(table["row"] == reference) & (table["loss"] == "ce")].set_index("model")["images_per_s"]
        table[column] = table["images_per_s"] / table["model"].map(ce)
    return table.set_index("row")


def _loop_seconds(config, data, criterion, steps: int, warmup: int) -> tuple[float, float, float | None]:
    """Seconds for `steps` iterations of the training loop (fetch, copy, step) after `warmup` ones, the part
    of them spent waiting for data, and the first iteration's time when the model is compiled."""
    device = torch.device("cpu")
    model = build_training_model(config, device).train()
    optimizer, _ = build_optimizer(config, model)
    network = torch.compile(model) if config.compile else model
    loader = train_loader(config, data, 0, warmup + steps)
    iteration = _LoopIteration(config, loader, network, criterion, optimizer, device, training_autocast(config, device))
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
        self.batches, self.wait = iter(loader), 0.0
        self.config, self.network, self.criterion, self.optimizer = config, network, criterion, optimizer
        self.device, self.autocast = device, autocast

    def __call__(self) -> None:
        fetch = time.perf_counter()
        images, masks = next(self.batches)
        self.wait += time.perf_counter() - fetch
        images, masks = to_device(images, masks, self.device, self.config.channels_last)
        train_step(self.network, self.criterion, self.optimizer, images, masks, self.autocast)


def _row(base: dict[str, Any], stage: str, seconds_per_batch: float, batch: int) -> dict[str, Any]:
    return {"stage": stage, **base, "images_per_s": batch / seconds_per_batch, "ms_per_batch": 1000 * seconds_per_batch}


def _device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


# --- inference ---------------------------------------------------------------------------------------------


# --- files -------------------------------------------------------------------------------------------------


# --- speed against a known model -----------------------------------------------------------------------


LEVER_COLUMNS = (
    "model",
    "loss",
    "workers",
    "threads",
    "channels_last",
    "presize",
    "keep_memory",
    "loss_impl",
    "compile",
    "cpu_bf16",
    "images_per_s",
    "data_wait_share",
    "compile_s",
    "vs_before_ce",
    "vs_ce",
)
"""The columns `facelib bench train` prints of the CPU lever table (the file keeps them all)."""


def lever_bench_names(config, models: Sequence[str]) -> tuple[str, str]:
    """The file stem and title of a CPU lever table (`bench_cpu_levers`)."""
    size = f"{config.batch_size} at {config.crop_size}px"
    stem = f"train_levers_{'_'.join(models)}_cpu_{config.crop_size}px_b{config.batch_size}"
    title = f"CPU training loop with and without each lever: {', '.join(models)}, batch {size}, " + (
        f"{torch.get_num_threads()} threads"
    )
    return stem, title


def train_bench_names(config, table: pd.DataFrame) -> tuple[str, str]:
    """The file stem and title of a training stage table (`bench_train`)."""
    device = "cpu" if table["device"].iloc[0].startswith("cpu") else "cuda"
    stem = f"train_{config.model}_{device}_{config.crop_size}px_b{config.batch_size}_{table['loss'].iloc[0]}"
    stem += "_compiled" if config.compile else ""
    return stem, f"Training throughput: {config.model}, batch {config.batch_size} at {config.crop_size}px"
