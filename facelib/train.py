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
import ctypes
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from facelib.errors import ConfigError
from facelib.labels import CLASS_NAMES, NUM_CLASSES
from facelib.outputs import atomic_path, exclusive, shown_paths, write_text

RUNTIME_FIELDS = ("data", "device", "workers", "compile", "channels_last", "threads", "keep_memory")
"""How and where a run happens, not what it computes: left out of the run key."""
SCHEDULES = ("cosine", "poly")
CPU = torch.device("cpu")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (plus `data`, `device`, `workers`: where it runs)."""

    model: str = "fastscnn"
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    loss: str | Mapping[str, Any] = "wce_lovasz_dice"  # a preset of facelib.losses, or a dict
    class_weights: str = "inv_sqrt_freq"  # column of facelib.stats.class_weights, for class-weighted losses
    augment: str = "full"  # a preset of facelib.augment
    iterations: int = 24_000
    batch_size: int = 8  # global: split across processes under torchrun
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.05  # linear warm-up over this share of the iterations
    schedule: str = "cosine"  # after warm-up: "cosine" to 0, or "poly" (power 0.9, as mmseg) to 0
    val_interval: int = 500
    seed: int = 0
    crop_size: int = 512  # training crop and evaluation input; data of another size is resized to it first
    amp: bool = True  # bf16 autocast (CUDA only; CPU runs in fp32 either way)
    corrected_labels: bool = False  # train on the audit's corrected left/right labels (validation: original)
    split_seed: int = 0
    val_fraction: float = 0.2
    data: str | None = None  # dataset root; None: $FACELIB_DATA, else the synthetic faces
    device: str = "auto"  # "auto": CUDA when available, else CPU
    workers: int | None = None  # DataLoader worker processes per training process; None: 0 on a CPU, 4 on CUDA
    compile: bool = False  # torch.compile the training step's model (same computation; slower on CPUs)
    channels_last: bool = True  # channels-last layout for the model and its inputs (faster convolutions)
    threads: int = 0  # CPU intra-op threads for this process; 0: torch's default (one per core)
    keep_memory: bool = True  # CPU, glibc: keep freed memory in the process instead of returning it each step

    def __post_init__(self) -> None:
        if self.data is not None and not isinstance(self.data, str):
            object.__setattr__(self, "data", str(self.data))  # a Path: stored as text, like every field
        from facelib.augment import AUGMENT_PRESETS
        from facelib.losses import loss_config
        from facelib.models import model_spec

        model_spec(self.model)
        loss_config(self.loss)
        if self.augment not in AUGMENT_PRESETS:
            raise ConfigError(f"unknown augmentation preset {self.augment!r}; valid: {', '.join(AUGMENT_PRESETS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.class_weights not in ("inv_sqrt_freq", "median_freq"):
            raise ConfigError(f"unknown class_weights {self.class_weights!r}; valid: inv_sqrt_freq, median_freq")
        for name in ("iterations", "batch_size", "val_interval", "crop_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.crop_size % 32:
            raise ConfigError(f"crop_size must be a multiple of 32 (the models' stride), got {self.crop_size}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.lr <= 0 or self.weight_decay < 0 or (self.workers or 0) < 0 or self.threads < 0:
            raise ConfigError("lr must be > 0, weight_decay, workers and threads >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, as logged and stored in every checkpoint."""
        values = dataclasses.asdict(self)
        values["model_overrides"] = dict(self.model_overrides)
        values["loss"] = self.loss if isinstance(self.loss, str) else json.loads(json.dumps(self.loss))
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {},  # the reference's Table 4 recipe: 24k iterations, batch 8, 512 crops, full augmentation
    "cpu": {  # the recipe's CPU equivalent: 40k samples at 256 px with the coarse loss (README: Training on a CPU)
        "crop_size": 256,
        "loss": "wce_lovasz_dice_coarse4",
        "lr": 2e-3,
        "iterations": 5000,
        "val_interval": 500,
    },
    "cpu-quick": {
        "crop_size": 128,
        "iterations": 300,
        "val_interval": 100,
        "batch_size": 8,
        "loss": "ce",
    },
}
"""Named starting points for `facelib train PRESET`; flags override their fields."""


def preset_config(name: str, **changes: Any) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown training preset {name!r}; valid presets: {', '.join(TRAIN_PRESETS)}")
    return TrainConfig(**{**TRAIN_PRESETS[name], **changes})


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


# --- run identity ---------------------------------------------------------------------------------------


def data_fingerprint(dataset, split, corrections: Mapping[str, list[str]]) -> str:
    """Hash of what the run reads: each pair's file names and sizes, the split, and any label corrections."""
    items = [
        (s.stem, s.image.name, s.image.stat().st_size, s.mask.name, s.mask.stat().st_size) for s in dataset.samples
    ]
    content = {"pairs": items, "train": split.train, "val": split.val, "corrections": dict(sorted(corrections.items()))}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def run_key(config: TrainConfig, fingerprint: str) -> str:
    """`<model>-<hash>`: the hash covers the config (minus where it runs) and the data fingerprint."""
    identity = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS}
    digest = hashlib.sha256(json.dumps({"config": identity, "data": fingerprint}, sort_keys=True).encode())
    return f"{config.model}-{digest.hexdigest()[:10]}"


# --- data ------------------------------------------------------------------------------------------------


class TrainBatches(torch.utils.data.Sampler):
    """Batches of (index, augmentation seed) for iterations `start`..`stop` - 1.

    Each epoch's order (and each process's share of it) comes from torch's DistributedSampler with the run's
    seed; iteration i reads batch i mod (batches per epoch) of epoch i div (batches per epoch), so the stream
    can start at any iteration (resume) and is the same for any worker count. Each sample's augmentation
    seed is derived from (seed, iteration, position in the global batch).
    """

    def __init__(self, size: int, batch: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        self.size, self.batch, self.seed, self.start, self.stop = size, batch, seed, start, stop
        self.rank, self.world = rank, world
        self.per_epoch = (size // world) // batch
        if self.per_epoch < 1:
            raise ConfigError(f"{size} training images cannot fill one batch of {batch} on each of {world} process(es)")

    def __len__(self) -> int:
        return self.stop - self.start

    def _epoch(self, epoch: int) -> list[int]:
        sampler = torch.utils.data.DistributedSampler(
            range(self.size), num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, []
        for iteration in range(self.start, self.stop):
            if iteration // self.per_epoch != epoch:
                epoch = iteration // self.per_epoch
                order = self._epoch(epoch)
            position = iteration % self.per_epoch
            indices = order[position * self.batch : (position + 1) * self.batch]
            offset = self.rank * self.batch
            yield [(index, _sample_seed(self.seed, iteration, offset + j)) for j, index in enumerate(indices)]


def _sample_seed(seed: int, iteration: int, slot: int) -> int:
    return int(np.random.SeedSequence([seed, iteration, slot]).generate_state(1)[0])


def collate_eval(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor | list]:
    """Stack images (all at the model input size); stack masks when they share a size, else keep a list."""
    images = torch.stack([b[0] for b in batch])
    masks = [b[1] for b in batch]
    return images, torch.stack(masks) if len({m.shape for m in masks}) == 1 else masks


def _normalization(images: torch.Tensor | list) -> tuple[list[float], list[float]]:
    """Exact global per-channel mean/std (0..255 units) of the training images, from a histogram of the
    uint8 values per channel (4x faster than summing in float64, and exact)."""
    offsets = torch.tensor([0, 256, 512], dtype=torch.int16)
    counts = torch.zeros(3 * 256, dtype=torch.int64)
    for start in range(0, len(images), 64):
        chunk = images[start : start + 64]
        chunk = (
            chunk if isinstance(chunk, torch.Tensor) else torch.cat([torch.as_tensor(a).reshape(-1, 3) for a in chunk])
        )
        counts += torch.bincount((chunk.reshape(-1, 3).to(torch.int16) + offsets).flatten(), minlength=3 * 256)
    counts = counts.reshape(3, 256).double()
    values = torch.arange(256, dtype=torch.float64)
    total = counts.sum(1)
    mean = counts @ values / total
    std = (counts @ values**2 / total - mean**2).sqrt()
    return [round(float(v), 2) for v in mean], [round(float(v), 2) for v in std]


def _class_pixels(masks: torch.Tensor | list) -> np.ndarray:
    return np.stack([np.bincount(np.asarray(m).ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES] for m in masks])


# --- distributed -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Processes:
    """This process's place in a torchrun launch (rank 0 of 1 otherwise)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> Processes:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if world > 1 and not torch.distributed.is_initialized():
            if device_type == "cuda":
                torch.cuda.set_device(local_rank)  # NCCL binds each process to its own GPU
            torch.distributed.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(int(os.environ.get("RANK", "0")), world, local_rank)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


# --- schedule, checkpoints, files ---------------------------------------------------------------------


def lr_factor(config: TrainConfig, iteration: int) -> float:
    """Multiplier of the peak rate at `iteration` (0-based): linear warm-up, then cosine or poly to zero."""
    warmup = int(config.warmup_fraction * config.iterations)
    if iteration < warmup:
        return (iteration + 1) / warmup
    progress = (iteration - warmup) / max(config.iterations - warmup, 1)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return (1 - progress) ** 0.9


def _write_json(path: Path, content: Any) -> None:
    """A run record (committed): paths in it are written relative (`shown_paths`), never as this machine's."""
    write_text(path, shown_paths(json.dumps(content, indent=1, default=_plain)) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value)}")


def _save(obj: dict[str, Any], path: Path) -> None:
    from facelib.outputs import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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
    from facelib.outputs import machine

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}); host {machine()}"
    return f"CPU: {machine()}, {torch.get_num_threads()} torch threads"


# --- the run -------------------------------------------------------------------------------------------


@dataclass
class RunPaths:
    key: str
    run_dir: Path
    checkpoint_dir: Path

    @property
    def summary(self) -> Path:
        return self.run_dir / "summary.json"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.csv"

    @property
    def last(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoint_dir / "best.pt"


@dataclass
class RunData:
    """What a run reads: the dataset, its split, label corrections, the cached training and validation sets,
    and what is derived from the training split (normalisation, class pixel counts)."""

    dataset: Any
    split: Any
    split_file: Path
    corrections: dict[str, list[str]]
    fingerprint: str
    train_set: Any = None
    val_set: Any = None
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    class_pixels: np.ndarray | None = None  # (training images, classes) pixel counts at the data's own size


def identify(config: TrainConfig, out: str | Path, procs: Processes = Processes()) -> RunData:
    """Find the data, its split (rank 0 writes a missing split file) and corrections: enough for the run key."""
    from facelib.audit import audit
    from facelib.data import discover, load_or_make_split

    dataset = discover(config.data)
    if procs.main:  # writes the split file if it is missing; then every process reads the same file
        load_or_make_split(dataset, out=out, val_fraction=config.val_fraction, seed=config.split_seed)
    procs.barrier()
    split, split_file = load_or_make_split(dataset, out=out, val_fraction=config.val_fraction, seed=config.split_seed)
    corrections = {}
    if config.corrected_labels:
        train_stems = set(split.train)
        corrections = {s: [e.pair for e in ev] for s, ev in audit(dataset).flagged.items() if s in train_stems}
    return RunData(dataset, split, split_file, corrections, data_fingerprint(dataset, split, corrections))


def load_sets(config: TrainConfig, data: RunData, presize: bool = True) -> None:
    """Decode the training and validation pairs into memory and attach their preprocessing presets.

    `presize`: when the data is not at the working resolution, the decoded training pairs are resized to it
    once, here, with the preset's own first step (`augment.resize`), which then finds them at size and
    passes them through unchanged: the same batches, without resizing 512 px arrays at every draw."""
    from facelib.augment import eval_transform, resize, train_transform
    from facelib.data import SegmentationDataset

    data.train_set = SegmentationDataset(
        data.dataset.by_stem(data.split.train), cache=True, corrections=data.corrections
    )
    data.val_set = SegmentationDataset(data.dataset.by_stem(data.split.val), cache=True, image_only=True)
    data.mean, data.std = _normalization(data.train_set.cached[0])
    data.class_pixels = _class_pixels(data.train_set.cached[1])  # before any resizing: the class weights' source
    other_size = data.train_set.image_shapes() != {(config.crop_size, config.crop_size, 3)}
    if other_size and presize:
        data.train_set.map_cached(resize(config.crop_size))
    data.train_set.transform = train_transform(config.augment, config.crop_size, data.mean, data.std, resize=other_size)
    data.val_set.transform = eval_transform(config.crop_size, data.mean, data.std, resize=other_size)


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
    from facelib.losses import CompositeLoss, loss_config
    from facelib.stats import class_weights

    settings = loss_config(config.loss)
    weights = None
    if settings.class_weighted:
        weights = class_weights(data.class_pixels)[config.class_weights].to_numpy(copy=True)
    return CompositeLoss(settings, weights).to(device), weights


def build_training_model(config: TrainConfig, device: torch.device) -> nn.Module:
    """The run's model, seeded; in channels-last layout when the config says so (faster on CPUs and GPUs);
    on CUDA with cuDNN autotuning on (fixed input sizes)."""
    from facelib.models import build_model

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
    procs: Processes = Processes(),
    device: torch.device = CPU,
) -> torch.utils.data.DataLoader:
    """Augmented training batches for iterations `start`..`stop` - 1 (see `TrainBatches`), pinned for CUDA."""
    per_process = config.batch_size // procs.world
    workers = loader_workers(config, device)
    return torch.utils.data.DataLoader(
        data.train_set,
        batch_sampler=TrainBatches(len(data.train_set), per_process, config.seed, start, stop, procs.rank, procs.world),
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


def train_step(
    network: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    masks: torch.Tensor,
    autocast: contextlib.AbstractContextManager,
) -> torch.Tensor:
    """One optimisation step (forward under `autocast`, loss, backward, update); returns the loss tensor
    without reading it, so the GPU is never waited for. `facelib bench train` times exactly this."""
    with autocast:
        loss = criterion(network(images), masks)
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
) -> dict[str, Any]:
    """Run (or resume, or look up) one training run; return its summary (see the module docstring).

    `stop_after`: stop once that many iterations are done; `time_limit_s`: stop at the first checkpoint
    after this many seconds. Either leaves a resumable run (for splitting a run across short machine
    leases); the returned summary then has `"finished": False`. `require_checkpoint`: a finished run whose
    best.pt is not here (results are committed, checkpoints are not) is trained again from the start.
    """
    from facelib.infer import resolve_device

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
    paths = RunPaths(key, Path(out) / "runs" / key, Path(checkpoints) / key)
    stored = json.loads(paths.summary.read_text()) if paths.summary.exists() else {}
    rerun = bool(stored.get("finished")) and require_checkpoint and not paths.best.exists()
    if stored.get("finished") and not rerun:
        if procs.main and progress:
            print(f"run {key}: finished earlier, reusing {paths.run_dir}")
        return {**stored, "run_dir": str(paths.run_dir), "checkpoint_dir": str(paths.checkpoint_dir)}
    with exclusive(paths.run_dir, f"run {key}") if procs.main else contextlib.nullcontext():
        if not rerun and paths.summary.exists() and json.loads(paths.summary.read_text()).get("finished"):
            return train(config, out, checkpoints, stop_after, progress, time_limit_s, require_checkpoint)
        return _train_run(config, data, key, paths, procs, device, rerun, stop_after, progress, time_limit_s)


def _train_run(
    config: TrainConfig,
    data: RunData,
    key: str,
    paths: RunPaths,
    procs: Processes,
    device: torch.device,
    rerun: bool,
    stop_after: int | None,
    progress: bool,
    time_limit_s: float | None,
) -> dict[str, Any]:
    """The training loop of `train`, run while this process holds the run's lock."""
    from facelib.infer import evaluate_model, inference_checkpoint
    from facelib.losses import loss_config

    load_sets(config, data)
    loss_settings = loss_config(config.loss)
    criterion, weights = build_criterion(config, data, device)
    model = build_training_model(config, device)
    cuda = device.type == "cuda"
    if cuda and procs.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer, scheduler = build_optimizer(config, model)

    # Progress so far: empty for a new run, restored from last.pt for an interrupted one.
    start, history, elapsed, best, final = 0, [], 0.0, None, None
    if rerun and procs.main and progress:
        print(f"run {key}: finished earlier but {paths.best} is missing; training it again")
    if paths.last.exists() and not rerun:
        state = torch.load(paths.last, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, history, elapsed, best, final = (
            state[k] for k in ("iteration", "history", "elapsed_s", "best", "final")
        )
        if procs.main and progress:
            print(f"run {key}: resuming at iteration {start} from {paths.last}")
    stop = config.iterations if stop_after is None else min(stop_after, config.iterations)
    if procs.main:
        _write_json(paths.run_dir / "config.json", {"key": key, "config": config.to_dict(), "data": data.fingerprint})

    network = model
    if procs.world > 1:
        network = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if cuda else None,
            find_unused_parameters=loss_settings.aux_weight == 0,  # aux heads then run but get no gradient
        )
    if config.compile:
        network = torch.compile(network)  # validation and checkpoints use `model`, the eager module
    per_process = config.batch_size // procs.world
    loader = train_loader(config, data, start, stop, procs, device)
    val_loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(data.val_set, range(procs.rank, len(data.val_set), procs.world)),
        batch_size=per_process,
        num_workers=min(loader_workers(config, device), 2),
        collate_fn=collate_eval,
        pin_memory=cuda,
        generator=torch.Generator().manual_seed(config.seed),
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and config.amp else contextlib.nullcontext()

    from tqdm import tqdm  # plain text bar: tqdm.auto warns in notebooks without ipywidgets

    bar = tqdm(total=config.iterations, initial=start, disable=not (progress and procs.main), desc=key)
    last_miou = next((row["mIoU"] for row in reversed(history) if "mIoU" in row), float("nan"))
    loss_sum, steps, images_seen, wait = torch.zeros((), device=device), 0, 0, 0.0
    window_start = session_start = time.perf_counter()
    network.train()
    batches = iter(loader)
    for iteration in range(start, stop):
        fetch = time.perf_counter()
        images, masks = next(batches)
        wait += time.perf_counter() - fetch
        images, masks = to_device(images, masks, device, config.channels_last)
        loss = train_step(network, criterion, optimizer, images, masks, autocast)
        scheduler.step()
        loss_sum += loss.detach()
        steps += 1
        images_seen += images.shape[0] * procs.world
        done = iteration + 1
        bar.update(1)
        if done % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", mIoU=f"{last_miou:.1f}")
        at_interval = done % config.val_interval == 0 or done == config.iterations
        if not (at_interval or done == stop):
            continue

        # End of an interval: log throughput, validate, keep the best and the last checkpoint.
        if cuda:
            torch.cuda.synchronize(device)
        window = time.perf_counter() - window_start
        mean_loss = float(loss_sum) / steps
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"run {key}: training loss became {mean_loss} before iteration {done}")
        elapsed += window
        row = {"iteration": done, "lr": scheduler.get_last_lr()[0], "train_loss": mean_loss,
               "images_per_s": images_seen / window, "data_wait_share": wait / window}  # fmt: skip
        if at_interval:
            val_start = time.perf_counter()
            matrix = evaluate_model(model, val_loader, device, amp=config.amp)
            metrics = matrix.compute()
            row.update(metrics.summary(), val_s=time.perf_counter() - val_start)
            last_miou = row["mIoU"]
            network.train()
            final = _scores(done, metrics, matrix.mat.cpu())
            if best is None or final["mF1"] > best["mF1"]:
                best = final
                if procs.main:
                    _save(inference_checkpoint(model, config, data.mean, data.std, key, done, metrics), paths.best)
        history.append(row)
        if procs.main:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "iteration": done,
                     "history": history, "elapsed_s": elapsed, "best": best, "final": final,
                     "config": config.to_dict()}  # fmt: skip
            _save(state, paths.last)
            with atomic_path(paths.metrics) as tmp:
                pd.DataFrame(history).to_csv(tmp, index=False, float_format="%.6g")
        loss_sum.zero_()
        steps, images_seen, wait, window_start = 0, 0, 0.0, time.perf_counter()
        if time_limit_s is not None and _agree(time.perf_counter() - session_start > time_limit_s, procs, device):
            stop = done
            break
    bar.close()
    del batches

    summary = _summary(config, data, key, paths, stop, history, elapsed, best, final, weights, device, procs)
    summary["session_wall_s"] = time.perf_counter() - session_start
    if procs.main:
        _write_json(paths.summary if summary["finished"] else paths.run_dir / "progress.json", summary)
        if summary["finished"]:
            (paths.run_dir / "progress.json").unlink(missing_ok=True)

            write_text(paths.run_dir / "README.md", _run_readme(summary))
    procs.barrier()
    return summary


def _agree(flag: bool, procs: Processes, device: torch.device) -> bool:
    """True when any process says so (so every process stops at the same iteration)."""
    if procs.world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def _summary(config, data, key, paths, stop, history, elapsed, best, final, weights, device, procs) -> dict[str, Any]:
    from facelib.outputs import commit

    return {
        "key": key,
        "finished": stop >= config.iterations,
        "iterations_done": stop,
        "config": config.to_dict(),
        "data": {
            "name": data.dataset.name,
            "fingerprint": data.fingerprint,
            "n_train": len(data.split.train),
            "n_val": len(data.split.val),
            "split_file": data.split_file.name,
            "corrected_masks": len(data.corrections),
        },
        "normalization": {"mean": data.mean, "std": data.std},
        "class_weights": None if weights is None else [round(float(w), 4) for w in weights],
        "best": best,
        "final": final,
        "train_wall_s": elapsed,
        "images_per_s": _mean_of(history, "images_per_s"),
        "data_wait_share": _mean_of(history, "data_wait_share"),
        "device": device_name(device),
        "processes": procs.world,
        "workers": loader_workers(config, device),
        "commit": commit(),
        "versions": versions(),
        "written_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run_dir": str(paths.run_dir),
        "checkpoint_dir": str(paths.checkpoint_dir),
    }


def _scores(iteration: int, metrics, matrix: torch.Tensor) -> dict[str, Any]:
    """The validation scores stored per checkpoint: summary, per class IoU/F1, confusion matrix."""
    return {
        "iteration": iteration,
        **{k: round(v, 4) for k, v in metrics.summary().items()},
        "per_class": {
            name: {"IoU": _round(100 * iou), "F1": _round(100 * f1)}
            for name, iou, f1 in zip(CLASS_NAMES, metrics.iou, metrics.f1, strict=True)
        },
        "confusion": matrix.tolist(),
    }


def _round(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 4)


def _mean_of(history: list[dict[str, Any]], column: str) -> float | None:
    values = [row[column] for row in history if column in row]
    return float(np.mean(values)) if values else None


def _run_readme(summary: dict[str, Any]) -> str:
    best, final, config = summary["best"], summary["final"], summary["config"]
    line = "| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |"
    rows = [line.format(name, s["iteration"], s["mIoU"], s["mF1"], s["mFscore_ref"], s["per_image_F"])
            for name, s in (("best (by mF1)", best), ("final", final)) if s]  # fmt: skip
    return "\n".join(
        [
            f"# Run {summary['key']}",
            "",
            f"{config['model']} on {summary['data']['name']} ({summary['data']['n_train']} train / "
            f"{summary['data']['n_val']} val), {config['iterations']} iterations of batch {config['batch_size']} at "
            f"{config['crop_size']}x{config['crop_size']}, loss `{config['loss']}`, augmentation `{config['augment']}`.",
            "",
            "| checkpoint | iteration | mIoU | mF1 | mFscore (reference-style) | per-image F |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Trained on {summary['device']} ({summary['processes']} process(es)) in {summary['train_wall_s']:.0f} s, "
            f"{summary['images_per_s']:.1f} images/s, {100 * summary['data_wait_share']:.1f}% of loop time waiting "
            f"for data; commit {summary['commit']}, {summary['written_at']}.",
            "",
        ]
    )
