"""The run cache: `RESULTS/runs/<key>/` folders (config.json, metrics.csv, summary.json) of runs made by
`facelib.train.train`, and `CHECKPOINTS/<key>/` beside them. The one place a run is looked up by its settings
(`RunCache.find`), found or trained (`RunCache.run`), listed when finished, followed along its fine-tunes, packed
for a machine lent for a few minutes, and costed before anything trains. Reports, `facelib ship --best` and
`facelib runs` all read runs through it."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from facelib.checkpoint import load_checkpoint
from facelib.config import TrainConfig, photos_note
from facelib.errors import ReportError
from facelib.run import best_checkpoint, identify, run_key
from facelib.train import train

HEADLINE = ("mIoU", "mF1", "mFscore_ref", "per_image_F")
"""The scores every table shows for a run (`facelib.metrics` defines them)."""
FINAL_POINTS = 4  # validation points averaged for Tables 1-2, as the reference did


@dataclass
class Run:
    """One finished training run: its label in a table, config, stored summary and per-interval metrics;
    `samples_before`: the training samples its starting weights had seen (a fine-tune's earlier runs)."""

    label: str
    config: TrainConfig
    summary: dict[str, Any]
    metrics: pd.DataFrame
    trained_now: bool = False
    samples_before: int = 0

    @property
    def samples(self) -> int:
        """Every training sample its weights saw: its own and, for a fine-tune, those of the runs before it."""
        return self.samples_before + self.config.iterations * self.config.batch_size

    def after(self, parent: Run) -> Run:
        """This fine-tune, counting the samples of the run it started from."""
        return replace(self, samples_before=parent.samples)

    @property
    def key(self) -> str:
        return self.summary["key"]

    @property
    def checkpoint(self) -> Path:
        return best_checkpoint(self.summary["checkpoint_dir"])

    @property
    def validations(self) -> pd.DataFrame:
        return self.metrics.dropna(subset=["mIoU"]).reset_index(drop=True)

    def final_mean(self, points: int = FINAL_POINTS) -> dict[str, float]:
        """Mean of the headline metrics over the last `points` validations."""
        tail = self.validations.tail(points)
        return {name: float(tail[name].mean()) for name in HEADLINE}

    def trend(self, points: int = FINAL_POINTS) -> float | None:
        """Mean mF1 of the final `points` validations minus that of the `points` before (None: too few)."""
        values = self.validations["mF1"]
        if len(values) < 2 * points:
            return None
        return float(values.iloc[-points:].mean() - values.iloc[-2 * points : -points].mean())


class TimeLimitReached(ReportError):
    """`RunCache.deadline` passed: the run named in the message stopped at a checkpoint and resumes next time."""


def run_folder(results: str | Path, key: str) -> Path:
    return Path(results) / "runs" / key


def read_run(results: str | Path, summary: dict[str, Any], label: str | None = None) -> Run:
    """The `Run` of a finished run's summary, its metrics read from its folder."""
    config = TrainConfig.from_dict(summary["config"])
    metrics = pd.read_csv(run_folder(results, summary["key"]) / "metrics.csv")
    return Run(label or config.model, config, summary, metrics)


def finished_summary(results: str | Path, key: str | None) -> dict[str, Any] | None:
    """The stored summary of run `key` when it finished, else None (missing, or stopped part-way)."""
    summary_file = run_folder(results, str(key)) / "summary.json"
    if key is None or not summary_file.exists():
        return None
    summary = json.loads(summary_file.read_text())
    return summary if summary.get("finished") else None


def finished_runs(results: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(run folder, summary) of every finished run in the cache, in key order."""
    for summary_file in sorted((Path(results) / "runs").glob("*/summary.json")):
        summary = json.loads(summary_file.read_text())
        if summary.get("finished"):
            yield summary_file.parent, summary


def _speed_class(config: dict[str, Any]) -> tuple[Any, ...]:
    """What sets a run's training speed on one machine, among the fields of its config (as saved)."""
    return config["model"], config["crop_size"], config.get("photo_size", 0), config.get("teacher") is not None


def expected_seconds(config: TrainConfig, results: str | Path, key: str | None = None) -> tuple[float | None, str]:
    """How long training `config` should take, and where the figure comes from: run `key`'s own record when it
    was made before, else the median speed of finished runs of the same model, crop and photo size, with a
    teacher or without (a teacher's forward pass is a cost of its own); None when neither."""
    made = finished_summary(results, key) if key else None
    if made is not None:
        return made["train_wall_s"], f"on {made['device']} when it was made"
    speeds = sorted(
        (record["images_per_s"], record["device"])
        for _, record in finished_runs(results)
        if _speed_class(record["config"]) == _speed_class(config.to_dict()) and record.get("images_per_s")
    )
    if not speeds:
        like = f"{config.model} at {config.crop_size} px{photos_note(config.to_dict())}"
        like += " with a teacher" if config.teacher is not None else ""
        return None, f"no finished run of {like} to estimate its time from"
    speed, device = speeds[len(speeds) // 2]
    return config.iterations * config.batch_size / speed, f"at {speed:.1f} images/s, as on {device}"


def expected_cost(config: TrainConfig, results: str | Path, key: str) -> str:
    """What training a run will cost, said before it starts: its size and `expected_seconds`."""
    samples = config.iterations * config.batch_size
    size = (
        f"{config.iterations:,} iterations of batch {config.batch_size} at {config.crop_size} px"
        f"{photos_note(config.to_dict())} ({samples:,} samples)"
    )
    seconds, source = expected_seconds(config, results, key)
    return f"{size}; " + (f"about {seconds / 60:.0f} min {source}" if seconds is not None else source)


def pack_runs(out: Path, results: Path, checkpoints: Path, keys: Sequence[str], weights: bool) -> None:
    """OUT/runs.tar (RESULTS/splits and the run folders of `keys`), written beside and renamed; with `weights`
    each run's best checkpoint as OUT/KEY.pt: what a machine lent for a few minutes hands back."""
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".runs.tar"
    with tarfile.open(partial, "w") as archive:
        archive.add(results / "splits", arcname=f"{results.name}/splits")
        for key in keys:
            archive.add(results / "runs" / key, arcname=f"{results.name}/runs/{key}")
    os.replace(partial, out / "runs.tar")
    for key in keys if weights else ():
        best = best_checkpoint(checkpoints / key)
        if best.exists():
            shutil.copyfile(best, out / f".{key}.pt")
            os.replace(out / f".{key}.pt", out / f"{key}.pt")


def run_record(results: str | Path, key: str) -> dict[str, Any]:
    """A run folder's config.json: its key, config, data fingerprint and what it started from (`init_run_key`)
    or learnt from; empty when the folder or file is not here."""
    path = run_folder(results, key) / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def lineage(results: str | Path, key: str) -> list[dict[str, Any]]:
    """The finished summaries of run `key` and of each run it was fine-tuned from (`init_run_key` in its
    config.json), newest first; stops where a stage is not in this cache."""
    stages: list[dict[str, Any]] = []
    while key and (summary := finished_summary(results, key)) is not None and len(stages) < 100:
        stages.append(summary)
        key = run_record(results, key).get("init_run_key")
    return stages


@dataclass
class RunCache:
    """The runs of one results folder and their checkpoints, and when a run missing from them may be trained.

    `train_missing`: train a run missing from the cache (and a finished run's lost checkpoint, when its weights
    are wanted); `no_training_here`: why no run may train on this machine even so (a GPU profile on a CPU), or
    None; `deadline` (time.monotonic): no run starts after it and the one in progress stops at a checkpoint.
    A finished run is used as it is, checkpoint or not; retraining it for its checkpoint writes only the
    checkpoint, never its committed run folder."""

    results: Path
    checkpoints: Path
    train_missing: bool = False
    no_training_here: str | None = None
    deadline: float | None = None

    def fingerprint(self, config: TrainConfig) -> str:
        """The content fingerprint of the data and split `config` trains on."""
        return identify(config, self.results).fingerprint

    def key(self, config: TrainConfig) -> str:
        return run_key(config, self.fingerprint(config))

    def find(self, config: TrainConfig) -> dict[str, Any] | None:
        """The stored summary of the finished run of `config`, or None."""
        return finished_summary(self.results, self.key(config))

    def refusal(self) -> str | None:
        """Why a missing run may not be trained here, or None when it may."""
        if not self.train_missing:
            return "this report was asked to use cached runs only"
        return self.no_training_here

    def run(self, config: TrainConfig, label: str, want_checkpoint: bool = False) -> Run:
        """The finished run of `config`, labelled `label`: from the cache, or trained now where it may be.

        `want_checkpoint`: a cached run whose best.pt is not here is trained again for it where training may
        happen (into a scratch folder: the committed run folder stays as it is); elsewhere it is used without
        one, and a line says so."""
        key = self.key(config)
        cached = finished_summary(self.results, key) is not None
        retrain = cached and want_checkpoint and self.refusal() is None and not self.has_weights(key)
        if not cached and self.refusal():
            raise ReportError(f"run {key} ({label}) is not in the run cache {self.results / 'runs'}: {self.refusal()}")
        if cached and want_checkpoint and not retrain and not self.has_weights(key):
            print(
                f"{label}: run {key} is in the run cache without its checkpoint: its stored scores are shown; "
                "scores that need its weights and were never stored are left out (train_missing=True retrains it)"
            )
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left <= 0 and not (cached and not retrain):
            raise TimeLimitReached(f"time limit reached before run {key} ({label}) started")
        if not cached or retrain:
            print(f"{label}: training run {key}: {expected_cost(config, self.results, key)}")
        summary = self._train(config, retrain, left)
        if not summary["finished"]:
            stopped = f"run {key} ({label}) stopped at iteration {summary['iterations_done']} of {config.iterations}"
            if left is not None:
                raise TimeLimitReached(f"{stopped} (time limit); run the same command again to resume it")
            raise ReportError(stopped)
        metrics = pd.read_csv(Path(summary["run_dir"]) / "metrics.csv")
        trained = not cached or (retrain and best_checkpoint(self.checkpoints / key).exists())
        run = Run(label, config, summary, metrics, trained_now=trained)
        print(
            f"{label}: run {key} "
            + (f"trained in {summary['train_wall_s']:.0f} s" if trained else "found in the run cache")
        )
        return run

    def _train(self, config: TrainConfig, retrain: bool, left: float | None) -> dict[str, Any]:
        """Train (or find) one run; a retrain for a lost checkpoint writes its run folder into a scratch results
        folder, so the committed one keeps its records (timings, commit, date) and only the checkpoint is new."""
        if not retrain:
            return train(config, self.results, self.checkpoints, progress=False, time_limit_s=left)
        with tempfile.TemporaryDirectory(prefix="facelib-retrain-") as scratch:
            shutil.copytree(self.results / "splits", Path(scratch) / "splits")
            fresh = train(config, scratch, self.checkpoints, progress=False, time_limit_s=left)
        stored = finished_summary(self.results, fresh["key"])
        done = {"finished": fresh["finished"], "iterations_done": fresh["iterations_done"]}
        return {**stored, **done, "run_dir": str(run_folder(self.results, fresh["key"]))}

    def has_weights(self, key: str) -> bool:
        return best_checkpoint(self.checkpoints / key).exists() or self.shipped_weights(key) is not None

    def shipped_weights(self, key: str) -> Path | None:
        """A weights file committed under RESULTS/models/ that was made by run `key`, if there is one."""
        for path in sorted((self.results / "models").glob("*.pt")):
            if load_checkpoint(path).get("run_key") == key:
                return path
        return None

    def checkpoint(self, run: Run) -> Path:
        """The best checkpoint of a run: from checkpoints/, else shipped weights; an error names both places."""
        if run.checkpoint.exists():
            return run.checkpoint
        shipped = self.shipped_weights(run.key)
        if shipped is None:
            raise ReportError(
                f"no checkpoint for run {run.key} ({run.label}): neither {run.checkpoint} nor weights made by that "
                f"run under {self.results / 'models'}; train it here (facelib train) or bring its best.pt"
            )
        return shipped

    def finished(self, fingerprint: str | None = None) -> Iterator[Run]:
        """Every finished run in the cache (`fingerprint`: only those trained on that data and split), in key
        order, labelled by model."""
        for _, summary in finished_runs(self.results):
            if fingerprint is None or summary.get("data", {}).get("fingerprint") == fingerprint:
                yield read_run(self.results, summary)
