"""A training run's identity and records: one flat config, its presets, the run key, where the run's files
live, its data (found, split, fingerprinted, decoded) and the summary written when it ends.

A run's identity (`run_key`) is a hash of its config and a fingerprint of its data (file names and sizes,
the split, the label corrections), leaving out where it runs (device, process count, data path, workers),
so a run made on a GPU machine is found again by a report assembled on a CPU. Results live in
`results/runs/<key>/` (config.json, metrics.csv, summary.json), checkpoints in `checkpoints/<key>/`
(last.pt to resume, best.pt by validation mF1).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelib.audit import audit
from facelib.augment import eval_transform, resize, train_transform
from facelib.checkpoint import load_checkpoint
from facelib.config import KEYED_WHEN_SET, RUNTIME_FIELDS, TrainConfig, photos_note
from facelib.data import Sample, SegmentationDataset, discover, load_or_make_split, pseudo_samples
from facelib.errors import ConfigError
from facelib.labels import CLASS_NAMES
from facelib.machine import device_name, versions
from facelib.outputs import commit, shown_paths, write_text
from facelib.stats import class_pixels, training_normalization


def data_fingerprint(dataset, split, corrections: Mapping[str, list[str]], pseudo: Sequence[Sample] = ()) -> str:
    """Hash of what the run reads: each pair's file names and sizes, the split, any label corrections and, when
    there are any, the pseudo-labels' photo names and mask contents."""
    items = [
        (s.stem, s.image.name, s.image.stat().st_size, s.mask.name, s.mask.stat().st_size) for s in dataset.samples
    ]
    content = {"pairs": items, "train": split.train, "val": split.val, "corrections": dict(sorted(corrections.items()))}
    if pseudo:
        content["pseudo"] = [(s.image.name, init_digest(s.mask, "pseudo_labels")) for s in pseudo]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def init_digest(path: str | Path, field: str = "init_from") -> str:
    """Content hash of a file a run starts from or learns from (`field`: starting weights, a teacher, a
    pseudo-label): its run key follows what the file holds, so the same path holding other weights (a newly
    shipped model) is another run."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{field} {path}: file does not exist")
    return hashlib.sha256(file.read_bytes()).hexdigest()[:16]


def init_record(config: TrainConfig) -> dict[str, str]:
    """What a run's config.json records of the weights it starts from and learns from: their digests (its key
    follows them) and the runs that trained them (as their checkpoints name them), so a model's whole training
    can be traced."""
    record = {}
    for name, prefix in (("init_from", "init"), ("teacher", "teacher")):
        path = getattr(config, name)
        if path is not None:
            digest = "init_weights_sha256" if name == "init_from" else "teacher_sha256"
            record[digest] = init_digest(path, name)
            record[f"{prefix}_run_key"] = str(load_checkpoint(path).get("run_key"))
    return record


def run_key(config: TrainConfig, fingerprint: str, init_weights: str | None = None, teacher: str | None = None) -> str:
    """`<model>-<hash>`: the hash covers the config (minus where it runs), the data fingerprint and the content
    (not the path) of the weights a run starts from or distils from: `init_weights` and `teacher`, the digests
    a run folder's config.json recorded, else `init_digest` of the files the config names. Pseudo-labels are
    data: the fingerprint holds their content."""
    identity = {
        k: v
        for k, v in config.to_dict().items()
        if k not in RUNTIME_FIELDS and not (k in KEYED_WHEN_SET and v == KEYED_WHEN_SET[k])
    }
    if config.init_from is not None:
        identity["init_from"] = init_weights or init_digest(config.init_from)
    if config.teacher is not None:
        identity["teacher"] = teacher or init_digest(config.teacher, "teacher")
    identity.pop("pseudo_labels", None)
    digest = hashlib.sha256(json.dumps({"config": identity, "data": fingerprint}, sort_keys=True).encode())
    return f"{config.model}-{digest.hexdigest()[:10]}"


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


ONE_PROCESS = Processes()
"""A run in a single process (no torchrun)."""


def write_json(path: Path, content: Any) -> None:
    """A run record (committed): paths in it are written relative (`shown_paths`), never as this machine's."""
    write_text(path, shown_paths(json.dumps(content, indent=1, default=_plain)) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value)}")


def best_checkpoint(checkpoint_dir: str | Path) -> Path:
    """The checkpoint a run keeps by validation mF1 in its checkpoint folder (`checkpoints/<key>`)."""
    return Path(checkpoint_dir) / "best.pt"


@dataclass
class RunPaths:
    key: str
    run_dir: Path
    checkpoint_dir: Path

    @classmethod
    def of(cls, key: str, out: str | Path, checkpoints: str | Path) -> RunPaths:
        """Run `key`'s folders under the results folder `out` and the checkpoints folder."""
        return cls(key, Path(out) / "runs" / key, Path(checkpoints) / key)

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
        return best_checkpoint(self.checkpoint_dir)


@dataclass
class RunData:
    """What a run reads: the dataset, its split, label corrections, the cached training and validation sets,
    and what is derived from the training split (normalisation, class pixel counts)."""

    dataset: Any
    split: Any
    split_file: Path
    corrections: dict[str, list[str]]
    fingerprint: str
    pseudo: list = field(default_factory=list)  # pseudo-labelled test photos (`Sample`s), trained on beside the pairs
    train_set: Any = None
    val_set: Any = None
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    class_pixels: np.ndarray | None = None  # (training images, classes) pixel counts at the data's own size


def identify(config: TrainConfig, out: str | Path, procs: Processes = ONE_PROCESS) -> RunData:
    """Find the data, its split (rank 0 writes a missing split file) and corrections: enough for the run key."""
    dataset = discover(config.data)
    if procs.main:  # writes the split file if it is missing; then every process reads the same file
        load_or_make_split(dataset, out=out, val_fraction=config.val_fraction, seed=config.split_seed)
    procs.barrier()
    split, split_file = load_or_make_split(dataset, out=out, val_fraction=config.val_fraction, seed=config.split_seed)
    corrections = {}
    if config.corrected_labels:
        train_stems = set(split.train)
        corrections = {s: [e.pair for e in ev] for s, ev in audit(dataset).flagged.items() if s in train_stems}
    pseudo = pseudo_samples(dataset, config.pseudo_labels) if config.pseudo_labels else []
    fingerprint = data_fingerprint(dataset, split, corrections, pseudo)
    return RunData(dataset, split, split_file, corrections, fingerprint, pseudo)


def load_sets(config: TrainConfig, data: RunData, presize: bool = True) -> None:
    """Decode the training and validation pairs into memory and attach their preprocessing presets.

    `presize`: when the data is not at the working resolution (`config.input_size`: the crop, or the photo
    size crops are taken from), the decoded training pairs are resized to it once, here, with the preset's own
    first step (`augment.resize`), which then finds them at size and passes them through unchanged: the same
    batches, without resizing 512 px arrays at every draw."""
    data.train_set = SegmentationDataset(
        data.dataset.by_stem(data.split.train) + list(data.pseudo), cache=True, corrections=data.corrections
    )
    data.val_set = SegmentationDataset(data.dataset.by_stem(data.split.val), cache=True, image_only=True)
    data.mean, data.std = training_normalization(data.train_set.cached[0])
    data.class_pixels = class_pixels(data.train_set.cached[1])  # before any resizing: the class weights' source
    side = config.input_size
    other_size = data.train_set.image_shapes() != {(side, side, 3)}
    if other_size and presize:
        data.train_set.map_cached(resize(side))
    data.train_set.transform = train_transform(
        config.augment, config.crop_size, data.mean, data.std, resize=other_size, photo_size=side
    )
    data.val_set.transform = eval_transform(side, data.mean, data.std, resize=other_size)


@dataclass
class Progress:
    """Where a run stands (what last.pt stores besides the weights and optimiser): empty for a new run."""

    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    best: dict[str, Any] | None = None
    final: dict[str, Any] | None = None


@dataclass
class RunContext:
    """What every step of one run shares: its settings, its data, where its files go, the processes that train
    it and the device."""

    config: TrainConfig
    data: RunData
    paths: RunPaths
    procs: Processes
    device: torch.device

    @property
    def key(self) -> str:
        return self.paths.key


@dataclass
class Window:
    """What the loop counts between two interval ends: loss, steps, images, time waiting for data."""

    loss: torch.Tensor
    steps: int = 0
    images: int = 0
    wait_s: float = 0.0
    start: float = field(default_factory=time.perf_counter)

    def row(self, key: str, done: int, lr: float) -> dict[str, Any]:
        """The interval's line of metrics.csv (before validation adds its scores)."""
        seconds, mean_loss = time.perf_counter() - self.start, float(self.loss) / self.steps
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"run {key}: training loss became {mean_loss} before iteration {done}")
        speed = {"images_per_s": self.images / seconds, "data_wait_share": self.wait_s / seconds}
        return {"iteration": done, "lr": lr, "train_loss": mean_loss, **speed, "window_s": seconds}


def summarize(
    ctx: RunContext, progress: Progress, stop: int, weights: np.ndarray | None, workers: int
) -> dict[str, Any]:
    """The run's summary.json: what it trained on, where, how fast, and its best and final validations."""
    config, data, paths = ctx.config, ctx.data, ctx.paths
    return {
        "key": paths.key,
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
        "best": progress.best,
        "final": progress.final,
        "train_wall_s": progress.elapsed_s,
        "images_per_s": _mean_of(progress.history, "images_per_s"),
        "data_wait_share": _mean_of(progress.history, "data_wait_share"),
        "device": device_name(ctx.device),
        "processes": ctx.procs.world,
        "workers": workers,
        "commit": commit(),
        "versions": versions(),
        "written_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "run_dir": str(paths.run_dir),
        "checkpoint_dir": str(paths.checkpoint_dir),
    }


def scores_at(iteration: int, metrics, matrix: torch.Tensor) -> dict[str, Any]:
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


def run_readme(summary: dict[str, Any]) -> str:
    best, final, config = summary["best"], summary["final"], summary["config"]
    line = "| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |"
    rows = [
        line.format(name, s["iteration"], s["mIoU"], s["mF1"], s["mFscore_ref"], s["per_image_F"])
        for name, s in (("best (by mF1)", best), ("final", final))
        if s
    ]
    return "\n".join(
        [
            f"# Run {summary['key']}",
            "",
            f"{config['model']} on {summary['data']['name']} ({summary['data']['n_train']} train / "
            f"{summary['data']['n_val']} val), {config['iterations']} iterations of batch {config['batch_size']} at "
            f"{config['crop_size']}x{config['crop_size']}{photos_note(config)}, loss `{config['loss']}`, augmentation "
            f"`{config['augment']}`.",
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
