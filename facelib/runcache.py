"""The run cache as the report and shipping read it: `RESULTS/runs/<key>/` folders (config.json, metrics.csv,
summary.json) of runs made by `facelib.train.train`, found by key, listed when finished, packed for a machine
lent for a few minutes, and the cost of a run that is not there yet, said before anything trains."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from facelib.config import TrainConfig, photos_note


def run_folder(results: str | Path, key: str) -> Path:
    return Path(results) / "runs" / key


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


def expected_seconds(config: TrainConfig, results: str | Path, key: str | None = None) -> tuple[float | None, str]:
    """How long training `config` should take, and where the figure comes from: run `key`'s own record when it
    was made before, else the median speed of finished runs of the same model and crop; None when neither."""
    made = finished_summary(results, key) if key else None
    if made is not None:
        return made["train_wall_s"], f"on {made['device']} when it was made"
    speeds = sorted(
        (record["images_per_s"], record["device"])
        for _, record in finished_runs(results)
        if (record["config"]["model"], record["config"]["crop_size"], record["config"].get("photo_size", 0))
        == (config.model, config.crop_size, config.photo_size)
        and record.get("images_per_s")
    )
    if not speeds:
        return None, f"no finished run of {config.model} at {config.crop_size} px to estimate its time from"
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
        best = checkpoints / key / "best.pt"
        if best.exists():
            shutil.copyfile(best, out / f".{key}.pt")
            os.replace(out / f".{key}.pt", out / f"{key}.pt")


def lineage(results: str | Path, key: str) -> list[dict[str, Any]]:
    """The finished summaries of run `key` and of each run it was fine-tuned from (`init_run_key` in its
    config.json), newest first; stops where a stage is not in this cache."""
    stages: list[dict[str, Any]] = []
    while key and (summary := finished_summary(results, key)) is not None and len(stages) < 100:
        stages.append(summary)
        record = json.loads((run_folder(results, key) / "config.json").read_text())
        key = record.get("init_run_key")
    return stages
