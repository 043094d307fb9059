"""`facelib train RECIPE`: the stages of a multi-stage recipe (`facelib.config.RECIPES`) trained one after
another in one command, each stage after the first fine-tuned from the best checkpoint of the stage before.

Every stage is an ordinary run of the run cache: a finished stage is found again (and trained again only when
a later stage needs its checkpoint and it is not here), a stage cut off by `--time-limit` resumes from its
last.pt when the same command runs again. Before anything trains, the recipe's expected cost is printed,
stage by stage, from the speeds of finished runs of the same model and crop in the cache. A stage whose
`pseudo_labels` is `STAGE_BEFORE` first has the stage before's best checkpoint label the dataset's unannotated
test photos under multi-scale TTA, once, into a folder beside that checkpoint named by its content. A recipe in
`ADJUSTED_RECIPES` ends with the logit adjustment of its last stage's best checkpoint (`facelib.adjust`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from facelib.adjust import ADJUSTED_NAME, adjust
from facelib.config import (
    ADJUSTED_RECIPES,
    RECIPES,
    RUNTIME_FIELDS,
    STAGE_BEFORE,
    TrainConfig,
    photos_note,
    preset_config,
)
from facelib.data import discover
from facelib.errors import ConfigError, DataError
from facelib.infer import predict
from facelib.run import best_checkpoint, identify, init_digest, run_key
from facelib.runcache import expected_seconds, finished_summary
from facelib.train import train


def recipe_stages(name: str, runtime: Mapping[str, Any]) -> list[TrainConfig]:
    """The stages' configs (without `init_from`, known only once the stage before has trained), each with the
    `runtime` fields (data, device, threads, ...: where and how, not what) applied."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    outside = sorted(set(runtime) - set(RUNTIME_FIELDS))
    if outside:
        raise ConfigError(
            f"a recipe fixes what its stages compute; {', '.join(outside)} cannot be set for it "
            f"(only {', '.join(RUNTIME_FIELDS)})"
        )
    stages = [preset_config(preset, **changes, **runtime) for preset, changes in RECIPES[name]]
    if STAGE_BEFORE in (stages[0].pseudo_labels, stages[0].teacher):
        raise ConfigError(f"recipe {name!r}: its first stage has no stage before it to label or teach from")
    return stages


def after(config: TrainConfig, start: Path) -> TrainConfig:
    """A later stage's `config` fine-tuned from `start`, the best checkpoint of the stage before, which is also
    its teacher where the stage says `STAGE_BEFORE`."""
    config = config.replace(init_from=str(start))
    return config.replace(teacher=str(start)) if config.teacher == STAGE_BEFORE else config


def labels_folder(best: Path) -> Path:
    """Where the test photos' labels by checkpoint `best` are kept: beside it, named by its content."""
    return best.parent / f"pseudo-multiscale-{init_digest(best)}"


def stage_labels(config: TrainConfig, best: Path) -> TrainConfig:
    """`config` with `pseudo_labels` made real when it is `STAGE_BEFORE`: the dataset's test photos labelled by
    `best` under multi-scale TTA, written whole (into a staging folder, then renamed) or found again."""
    if config.pseudo_labels != STAGE_BEFORE:
        return config
    folder = labels_folder(best)
    if not folder.is_dir():
        photos = discover(config.data).test_images
        if not photos:
            raise DataError(f"{discover(config.data).root}: no test/images for the stage before's model to label")
        staging = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        predict(best, photos, staging, tta="multiscale", device=config.device)
        staging.rename(folder)
    return config.replace(pseudo_labels=str(folder))


def plan(name: str, stages: list[TrainConfig], results: str | Path, checkpoints: str | Path = "checkpoints") -> str:
    """The recipe's expected cost, one line per stage and the total left, from the run cache's measured speeds.
    A stage finished earlier costs nothing more when its best checkpoint is here for the next stage (or it is
    the last); a later stage's run is known only once the stage before it is finished and kept."""
    lines, total, known, reused = [], 0.0, True, 0
    start: Path | None = None  # the best.pt of the stage before, finished and kept
    for number, config in enumerate(stages, 1):
        key, pseudo = None, config.pseudo_labels == STAGE_BEFORE
        labelled = pseudo and start is not None and labels_folder(start).is_dir()
        if number == 1 or (start is not None and (not pseudo or labelled)):
            config = config if start is None else after(config, start)
            config = config.replace(pseudo_labels=str(labels_folder(start))) if labelled else config
            key = run_key(config, identify(config, results).fingerprint)
        made = finished_summary(results, key) if key else None
        best = best_checkpoint(Path(checkpoints) / str(key))
        start = best if made is not None and best.is_file() else None
        what = f"{config.model}, {config.iterations * config.batch_size:,} samples at {config.crop_size} px"
        what += photos_note(config.to_dict())
        what += f" and the test photos stage {number - 1}'s model labels" if pseudo else ""
        if made is not None and (start is not None or number == len(stages)):
            lines.append(f"  stage {number}: {what}: finished earlier (run {key}), reused")
            reused += 1
            continue
        seconds, source = expected_seconds(config, results, None if made is None else key)
        cost = f"about {seconds / 3600:.1f} h {source}" if seconds else source
        again = ", trained again: its checkpoint is not here" if made is not None else ""
        lines.append(f"  stage {number}: {what}: {cost}{again}")
        total, known = total + (seconds or 0.0), known and seconds is not None
    if name in ADJUSTED_RECIPES:
        lines.append(f"  then: the logit adjustment of stage {len(stages)}'s best checkpoint (minutes)")
    left = f" left ({reused} of {len(stages)} finished earlier)" if reused else " in all"
    head = f"recipe {name}: {len(stages)} stage{'s' * (len(stages) != 1)}, " + (
        f"about {total / 3600:.1f} h of training{left}"
        if known
        else "a total unknown until every stage's model and crop has a finished run here"
    )
    return "\n".join([head, *lines])


def train_recipe(
    name: str,
    runtime: Mapping[str, Any],
    out: str | Path = "results",
    checkpoints: str | Path = "checkpoints",
    time_limit_s: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the recipe's stages in order; return the last stage's summary (`"finished": False` when the time
    limit stopped a stage: the same call resumes it)."""
    stages = recipe_stages(name, runtime)
    log(plan(name, stages, out, checkpoints))
    begun, previous = time.monotonic(), None
    for number, config in enumerate(stages, 1):
        if previous is not None:
            start = best_checkpoint(previous["checkpoint_dir"])
            config = stage_labels(after(config, start), start)
        left = None if time_limit_s is None else time_limit_s - (time.monotonic() - begun)
        if previous is not None and left is not None and left <= 0:
            log(f"recipe {name}: time limit reached before stage {number}; the same command goes on from there")
            return previous
        log(f"recipe {name}, stage {number} of {len(stages)}")
        summary = train(config, out, checkpoints, time_limit_s=left, require_checkpoint=number < len(stages))
        if not summary["finished"]:
            log(f"recipe {name}: stage {number} stopped at its time limit; the same command resumes it")
            return summary
        previous = summary
    if name in ADJUSTED_RECIPES:
        adjusted(best_checkpoint(previous["checkpoint_dir"]), stages[-1], out, log)
    return previous


def adjusted(best: Path, config: TrainConfig, out: str | Path, log: Callable[[str], None]) -> Path | None:
    """adjusted.pt beside `best` (the last stage's best checkpoint), made unless it is there and newer."""
    target = best.with_name(ADJUSTED_NAME)
    if not best.is_file():
        log(f"recipe: {best} is not here, so it is not adjusted (the run finished elsewhere)")
        return None
    if target.is_file() and target.stat().st_mtime >= best.stat().st_mtime:
        log(f"recipe: {target}, its logit adjustment, made earlier")
        return target
    target, adjustment = adjust(best, data=config.data, out=out, device=config.device)
    miou = adjustment.train_miou
    log(f"recipe: {target}: tau {adjustment.tau:g} (training-photo mIoU {miou[0.0]:.2f} -> {miou[adjustment.tau]:.2f})")
    return target
