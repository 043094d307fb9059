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
from facelib.runcache import expected_seconds
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


def plan(name: str, stages: list[TrainConfig], results: str | Path) -> str:
    """The recipe's expected cost, one line per stage and the total, from the run cache's measured speeds."""
    lines, total, known = [], 0.0, True
    for number, config in enumerate(stages, 1):
        seconds, source = expected_seconds(config, results)
        samples = config.iterations * config.batch_size
        what = f"{config.model}, {samples:,} samples at {config.crop_size} px{photos_note(config.to_dict())}"
        lines.append(f"  stage {number}: {what}: " + (f"about {seconds / 3600:.1f} h {source}" if seconds else source))
        total, known = total + (seconds or 0.0), known and seconds is not None
    head = f"recipe {name}: {len(stages)} stages, " + (
        f"about {total / 3600:.1f} h of training in all"
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
    log(plan(name, stages, out))
    start, previous = time.monotonic(), None
    for number, config in enumerate(stages, 1):
        if previous is not None:
            config = config.replace(init_from=str(Path(previous["checkpoint_dir"]) / "best.pt"))
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
