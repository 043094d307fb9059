"""`facelib train RECIPE`: the stages of a multi-stage recipe (`facelib.config.RECIPES`) trained one after
another in one command, each stage after the first fine-tuned from the best checkpoint of the stage before.

Every stage is an ordinary run of the run cache: a finished stage is found again (and trained again only when
a later stage needs its checkpoint and it is not here), a stage cut off by `--time-limit` resumes from its
last.pt when the same command runs again. Before anything trains, the recipe's expected cost is printed,
stage by stage, from the speeds of finished runs of the same model and crop in the cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from facelib.config import RECIPES, RUNTIME_FIELDS, TrainConfig, photos_note, preset_config
from facelib.errors import ConfigError
from facelib.run import best_checkpoint, identify, run_key
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
    return [preset_config(preset, **changes, **runtime) for preset, changes in RECIPES[name]]


def plan(name: str, stages: list[TrainConfig], results: str | Path, checkpoints: str | Path = "checkpoints") -> str:
    """The recipe's expected cost, one line per stage and the total left, from the run cache's measured speeds.
    A stage finished earlier costs nothing more when its best checkpoint is here for the next stage (or it is
    the last); a later stage's run is known only once the stage before it is finished and kept."""
    lines, total, known, reused = [], 0.0, True, 0
    start: Path | None = None  # the best.pt of the stage before, finished and kept
    for number, config in enumerate(stages, 1):
        key = None
        if number == 1 or start is not None:
            config = config if start is None else config.replace(init_from=str(start))
            key = run_key(config, identify(config, results).fingerprint)
        made = finished_summary(results, key) if key else None
        best = best_checkpoint(Path(checkpoints) / str(key))
        start = best if made is not None and best.is_file() else None
        what = f"{config.model}, {config.iterations * config.batch_size:,} samples at {config.crop_size} px"
        what += photos_note(config.to_dict())
        if made is not None and (start is not None or number == len(stages)):
            lines.append(f"  stage {number}: {what}: finished earlier (run {key}), reused")
            reused += 1
            continue
        seconds, source = expected_seconds(config, results, None if made is None else key)
        cost = f"about {seconds / 3600:.1f} h {source}" if seconds else source
        again = ", trained again: its checkpoint is not here" if made is not None else ""
        lines.append(f"  stage {number}: {what}: {cost}{again}")
        total, known = total + (seconds or 0.0), known and seconds is not None
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
    start, previous = time.monotonic(), None
    for number, config in enumerate(stages, 1):
        if previous is not None:
            config = config.replace(init_from=str(best_checkpoint(previous["checkpoint_dir"])))
        left = None if time_limit_s is None else time_limit_s - (time.monotonic() - start)
        if previous is not None and left is not None and left <= 0:
            log(f"recipe {name}: time limit reached before stage {number}; the same command goes on from there")
            return previous
        log(f"recipe {name}, stage {number} of {len(stages)}")
        summary = train(config, out, checkpoints, time_limit_s=left, require_checkpoint=number < len(stages))
        if not summary["finished"]:
            log(f"recipe {name}: stage {number} stopped at its time limit; the same command resumes it")
            return summary
        previous = summary
    return previous
