"""Training: one flat config, one visible iteration loop, and a run cache keyed by what the run computes.

A run's identity (`run_key`) is a hash of its config and a fingerprint of its data (file names and sizes,
the split, the label corrections), leaving out where it runs (device, process count, data path, workers),
so a run made on a GPU machine is found again by a report assembled on a CPU. Results live in
`results/runs/<key>/` (config.json, metrics.csv, summary.json), checkpoints in `checkpoints/<key>/`
(last.pt to resume, best.pt by validation mF1). `train(config)` returns the stored summary when the run has
finished, resumes it from last.pt when it has not, and starts it otherwise.

Multi-GPU: the same entry point under `torchrun --nproc_per_node N` uses DistributedDataParallel;
`batch_size` is the global batch, split evenly across processes, and confusion matrices are all-reduced,
so every process reports the same metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm  # the plain text bar: tqdm.auto warns in notebooks without ipywidgets

from facelib.averaging import WeightAverage
from facelib.checkpoint import inference_checkpoint, read_torch_file, resolve_device, save_checkpoint, start_from
from facelib.config import TrainConfig
from facelib.data import collate_eval
from facelib.distill import Teacher
from facelib.errors import ConfigError, DataError
from facelib.labels import NUM_CLASSES
from facelib.losses import CompositeLoss, loss_config
from facelib.machine import loader_workers, prepare_cpu
from facelib.models import build_model
from facelib.outputs import atomic_path, commit, exclusive, write_text
from facelib.run import (
    ONE_PROCESS,
    Processes,
    Progress,
    RunContext,
    RunData,
    RunPaths,
    Window,
    identify,
    init_record,
    load_sets,
    run_key,
    run_readme,
    scores_at,
    summarize,
    write_json,
)
from facelib.sampling import TrainBatches, repeat_factors
from facelib.stats import class_weights
from facelib.tta import confusion_over

CPU = torch.device("cpu")


# --- schedule, checkpoints, files ---------------------------------------------------------------------


def lr_factor(config: TrainConfig, iteration: int) -> float:
    """Multiplier of the peak rate at `iteration` (0-based): linear warm-up, then cosine or poly to zero, or the
    peak held (a weight average's schedule: the averaged weights, not the last ones, are the result)."""
    warmup = int(config.warmup_fraction * config.iterations)
    if iteration < warmup:
        return (iteration + 1) / warmup
    progress = (iteration - warmup) / max(config.iterations - warmup, 1)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "constant":
        return 1.0
    return (1 - progress) ** 0.9


# --- the run -------------------------------------------------------------------------------------------


def build_optimizer(config: TrainConfig, model: nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no weight decay on norms and biases) and the warm-up + decay schedule, stepped per iteration."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(config, i))


def build_criterion(config: TrainConfig, data: RunData, device: torch.device) -> tuple[nn.Module, np.ndarray | None]:
    """The run's composite loss, with class weights from the training split's pixel counts when it uses them."""
    settings = loss_config(config.loss)
    weights = None
    if settings.class_weighted:
        weights = class_weights(data.class_pixels)[config.class_weights].to_numpy(copy=True)
    return CompositeLoss(settings, weights).to(device), weights


def build_training_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """The run's model, seeded; in channels-last layout when the config says so (faster on CPUs and GPUs);
    on CUDA with cuDNN autotuning on (fixed input sizes)."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, num_classes=NUM_CLASSES, **config.model_overrides).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def train_loader(
    config: TrainConfig,
    data: RunData,
    start: int,
    stop: int,
    procs: Processes = ONE_PROCESS,
    device: torch.device = CPU,
) -> torch.utils.data.DataLoader:
    """Augmented training batches for iterations `start`..`stop` - 1 (see `TrainBatches`), pinned for CUDA."""
    per_process = config.batch_size // procs.world
    workers = loader_workers(config, device)
    factors = repeat_factors(data.class_pixels, config.repeat_threshold)
    batches = TrainBatches(len(data.train_set), per_process, config.seed, start, stop, procs.rank, procs.world, factors)
    return torch.utils.data.DataLoader(
        data.train_set,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG (dropout) resumable
    )


def to_device(
    images: torch.Tensor, masks: torch.Tensor, device: torch.device, channels_last: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch on the training device, images channels-last when the model is."""
    images = images.to(device, non_blocking=True)
    masks = masks.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, masks


def training_autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for the training step: on CUDA with `amp`, on a CPU only with `cpu_bf16` (it pays only on
    CPUs with bf16 instructions, and it changes the run's numbers, so it is part of the run key)."""
    if (device.type == "cuda" and config.amp) or (device.type == "cpu" and config.cpu_bf16):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    network: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    masks: torch.Tensor,
    autocast: contextlib.AbstractContextManager,
    teacher: Teacher | None = None,
) -> torch.Tensor:
    """One optimisation step (forward under `autocast`, loss plus any `teacher`'s distillation term,
    backward, update); returns the loss tensor without reading it, so the GPU is never waited for. `facelib
    bench train` times exactly this."""
    with autocast:
        prediction = network(images)
        loss = criterion(prediction, masks)
        if teacher is not None:
            loss = loss + teacher.loss(prediction, images, masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train(
    config: TrainConfig,
    out: str | Path = "results",
    checkpoints: str | Path = "checkpoints",
    stop_after: int | None = None,
    progress: bool = True,
    time_limit_s: float | None = None,
    require_checkpoint: bool = False,
    restart: bool = False,
) -> dict[str, Any]:
    """Run (or resume, or look up) one training run; return its summary (see the module docstring).

    `stop_after`: stop once that many iterations are done; `time_limit_s`: stop at the first checkpoint
    after this many seconds. Either leaves a resumable run (for splitting a run across short machine
    leases); the returned summary then has `"finished": False`. `require_checkpoint`: a finished run whose
    best.pt is not here (results are committed, checkpoints are not) is trained again from the start. `restart`:
    a run stopped part-way starts again from its first iteration, its last.pt discarded (the way out of a
    damaged one).
    """
    commit()  # read now: the run records the code it started with
    device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    procs = Processes.from_env(device.type)
    if config.batch_size % procs.world or config.batch_size // procs.world < 2:
        raise ConfigError(
            f"batch_size {config.batch_size} must split evenly over {procs.world} process(es), at least 2 per "
            "process (BatchNorm after global pooling needs 2 samples in training)"
        )
    prepare_cpu(config, device)
    data = identify(config, out, procs)
    key = run_key(config, data.fingerprint)
    paths = RunPaths.of(key, out, checkpoints)
    stored = json.loads(paths.summary.read_text()) if paths.summary.exists() else {}
    rerun = bool(stored.get("finished")) and require_checkpoint and not paths.best.exists()
    if stored.get("finished") and not rerun:
        if procs.main and progress:
            print(f"run {key}: finished earlier, reusing {paths.run_dir}")
        return {**stored, "run_dir": str(paths.run_dir), "checkpoint_dir": str(paths.checkpoint_dir)}
    with exclusive(paths.run_dir, f"run {key}") if procs.main else contextlib.nullcontext():
        if not rerun and paths.summary.exists() and json.loads(paths.summary.read_text()).get("finished"):
            return train(config, out, checkpoints, stop_after, progress, time_limit_s, require_checkpoint, restart)
        if restart:
            paths.last.unlink(missing_ok=True)
        ctx = RunContext(config, data, paths, procs, device)
        return _train_run(ctx, rerun, stop_after, progress, time_limit_s)


@dataclass
class Parts:
    """What one run trains: the model (`network` wraps it for DDP or compile), loss, optimiser, schedule."""

    model: nn.Module
    network: nn.Module
    criterion: nn.Module
    weights: np.ndarray | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    average: WeightAverage | None = None  # with `ema_decay`: the averaged weights, validated and kept instead
    teacher: Teacher | None = None  # with `teacher`: the frozen model distilled from

    def scored(self) -> nn.Module:
        """The weights a validation scores and best.pt keeps: the average when the run keeps one."""
        return self.model if self.average is None else self.average.module


def build_parts(ctx: RunContext) -> Parts:
    """The model, loss, optimiser and schedule of a run (and its moving average and teacher, when it has them)."""
    config, data, device, procs = ctx.config, ctx.data, ctx.device, ctx.procs
    criterion, weights = build_criterion(config, data, device)
    model = build_training_model(config, device)
    if device.type == "cuda" and procs.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer, scheduler = build_optimizer(config, model)
    network = model
    if procs.world > 1:
        network = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=loss_config(config.loss).aux_weight == 0,  # aux heads run, get no gradient
        )
    if config.compile:
        network = torch.compile(network)  # validation and checkpoints use `model`, the eager module
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    teacher = Teacher(config, data.mean, data.std, device) if config.teacher else None
    return Parts(model, network, criterion, weights, optimizer, scheduler, average, teacher)


def resume(path: Path, parts: Parts, device: torch.device) -> Progress:
    """Weights, optimiser, schedule and RNG from last.pt, and the run's progress; a damaged or foreign last.pt is
    one DataError that says how to start the run again."""
    way_out = "; start the run again with the same command and --rerun (its last.pt is then discarded)"
    state = read_torch_file(path, "a readable training state", way_out)
    try:
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if parts.average is not None:
            parts.average.load_state_dict(state["average"])
        return Progress(*(state[k] for k in ("iteration", "history", "elapsed_s", "best", "final")))
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        first = " ".join(str(error).split())[:160]  # torch's load_state_dict message spans lines
        raise DataError(f"{path}: not this run's training state ({type(error).__name__}: {first}){way_out}") from error


def save_progress(ctx: RunContext, parts: Parts, progress: Progress) -> None:
    """last.pt (everything a resume needs) and metrics.csv, after every interval."""
    state = {
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        **({} if parts.average is None else {"average": parts.average.state_dict()}),
        **dataclasses.asdict(progress),
        "config": ctx.config.to_dict(),
    }
    save_checkpoint(state, ctx.paths.last)
    with atomic_path(ctx.paths.metrics) as tmp:
        pd.DataFrame(progress.history).to_csv(tmp, index=False, float_format="%.6g")


def validation_loader(ctx: RunContext) -> torch.utils.data.DataLoader:
    """This process's share of the validation pairs, at the masks' own size (`collate_eval`)."""
    config, procs, val_set = ctx.config, ctx.procs, ctx.data.val_set
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(val_set, range(procs.rank, len(val_set), procs.world)),
        batch_size=config.batch_size // procs.world,
        num_workers=min(loader_workers(config, ctx.device), 2),
        collate_fn=collate_eval,
        pin_memory=ctx.device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),
    )


def _start(ctx: RunContext, rerun: bool, talk: bool) -> tuple[Parts, Progress]:
    """The run's data, model and optimiser, resumed from last.pt or started (from `init_from`'s weights when
    set); its config.json written."""
    config, paths = ctx.config, ctx.paths
    load_sets(config, ctx.data)
    parts, progress = build_parts(ctx), Progress()
    if rerun and talk:
        print(f"run {ctx.key}: finished earlier but {paths.best} is missing; training it again")
    if paths.last.exists() and not rerun:
        progress = resume(paths.last, parts, ctx.device)
        if talk:
            print(f"run {ctx.key}: resuming at iteration {progress.iteration} from {paths.last}")
    elif config.init_from is not None:
        start_from(config.init_from, parts.model, config.model)
        if parts.average is not None:
            parts.average = WeightAverage(parts.model, config.ema_decay)
        if talk:
            print(f"run {ctx.key}: starting from the weights of {config.init_from}")
    if ctx.procs.main:
        record = {"key": ctx.key, "config": config.to_dict(), "data": ctx.data.fingerprint, **init_record(config)}
        write_json(paths.run_dir / "config.json", record)
    return parts, progress


def _validate(ctx: RunContext, parts: Parts, progress: Progress, loader, row: dict[str, Any]) -> None:
    """Score the kept weights (and, with a moving average, the trained ones) on the validation split into
    `row`; the best by mF1 becomes best.pt."""
    config, start = ctx.config, time.perf_counter()
    matrix = confusion_over(parts.scored(), loader, ctx.device, amp=config.amp)
    metrics = matrix.compute()
    row.update(metrics.summary(), val_s=time.perf_counter() - start)
    if parts.average is not None:  # the trained weights too, for the average's paired effect
        trained = confusion_over(parts.model, loader, ctx.device, amp=config.amp).compute().summary()
        row.update({f"trained_{k}": trained[k] for k in ("mIoU", "mF1", "per_image_F")})
    parts.network.train()
    progress.final = scores_at(row["iteration"], metrics, matrix.mat.cpu())
    if progress.best is None or progress.final["mF1"] > progress.best["mF1"]:
        progress.best = progress.final
        if ctx.procs.main:
            data, done = ctx.data, row["iteration"]
            best = inference_checkpoint(parts.scored(), config, data.mean, data.std, ctx.key, done, metrics)
            save_checkpoint(best, ctx.paths.best)


def _train_run(
    ctx: RunContext, rerun: bool, stop_after: int | None, show: bool, time_limit_s: float | None
) -> dict[str, Any]:
    """The training loop of `train`, run while this process holds the run's lock."""
    config, device, procs, talk = ctx.config, ctx.device, ctx.procs, show and ctx.procs.main
    parts, progress = _start(ctx, rerun, talk)
    stop = config.iterations if stop_after is None else min(stop_after, config.iterations)
    loader = train_loader(config, ctx.data, progress.iteration, stop, procs, device)
    val_loader, autocast = validation_loader(ctx), training_autocast(config, device)
    bar = tqdm(total=config.iterations, initial=progress.iteration, disable=not talk, desc=ctx.key)
    last_miou = next((row["mIoU"] for row in reversed(progress.history) if "mIoU" in row), float("nan"))
    window, session_start = Window(torch.zeros((), device=device)), time.perf_counter()
    parts.network.train()
    batches = iter(loader)
    for iteration in range(progress.iteration, stop):
        fetch = time.perf_counter()
        images, masks = next(batches)
        window.wait_s += time.perf_counter() - fetch
        images, masks = to_device(images, masks, device, config.channels_last)
        loss = train_step(parts.network, parts.criterion, parts.optimizer, images, masks, autocast, parts.teacher)
        parts.scheduler.step()
        if parts.average is not None:
            parts.average.update(parts.model)
        window.loss += loss.detach()
        window.steps, window.images, done = (
            window.steps + 1,
            window.images + images.shape[0] * procs.world,
            iteration + 1,
        )
        bar.update(1)
        if done % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", mIoU=f"{last_miou:.1f}")
        at_interval = done % config.val_interval == 0 or done == config.iterations
        if at_interval or done == stop:  # end of an interval: log, validate, keep best and last checkpoints
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            row = window.row(ctx.key, done, parts.scheduler.get_last_lr()[0])
            progress.elapsed_s += row.pop("window_s")
            if at_interval:
                _validate(ctx, parts, progress, val_loader, row)
                last_miou = row["mIoU"]
            progress.iteration = done
            progress.history.append(row)
            if procs.main:
                save_progress(ctx, parts, progress)
            window = Window(window.loss.zero_())
            over = time_limit_s is not None and time.perf_counter() - session_start > time_limit_s
            if _agree(over, procs, device):
                stop = done
                break
    bar.close()
    del batches
    return finish(ctx, parts, progress, stop, time.perf_counter() - session_start)


def finish(ctx: RunContext, parts: Parts, progress: Progress, stop: int, session_s: float) -> dict[str, Any]:
    """The run's summary, written as summary.json (finished) or progress.json (stopped early, resumable)."""
    summary = summarize(ctx, progress, stop, parts.weights, loader_workers(ctx.config, ctx.device))
    summary["session_wall_s"] = session_s
    run_dir = ctx.paths.run_dir
    if ctx.procs.main:
        write_json(ctx.paths.summary if summary["finished"] else run_dir / "progress.json", summary)
        if summary["finished"]:
            (run_dir / "progress.json").unlink(missing_ok=True)
            write_text(run_dir / "README.md", run_readme(summary))
    ctx.procs.barrier()
    return summary


def _agree(flag: bool, procs: Processes, device: torch.device) -> bool:
    """True when any process says so (so every process stops at the same iteration)."""
    if procs.world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())
