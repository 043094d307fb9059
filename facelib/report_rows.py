"""The runs behind a report's tables: each row of a profile's table (`facelib.profiles.TABLES`) as a finished
run from the run cache (or trained where the report may), the table's measured run-to-run noise, the pairs of
rows it was made to compare, the validation scores of a row's checkpoint under test-time augmentation, and
`facelib runs`, which trains a table's rows one after another."""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from facelib.checkpoint import load_checkpoint, resolve_device
from facelib.config import TrainConfig
from facelib.data import FaceDataset, Split, discover, load_or_make_split
from facelib.errors import ReportError
from facelib.infer import evaluate, evaluation_variant, save_evaluation, stored_evaluation
from facelib.profiles import LOSS_ROWS, NOISE_SEED, TABLES, Profile, chosen_rows, get_profile, table_rows
from facelib.runcache import HEADLINE, Run, RunCache, TimeLimitReached, pack_runs
from facelib.tables import AUGMENTATION_COMPARISONS, LOSS_COMPARISONS, Noise


def gpu_refusal(profile: Profile, device: str) -> str | None:
    """Why a profile meant for a GPU may not train a missing run here: none is here and `device` is not an
    explicit "cpu" (so assembling a GPU report on a laptop never starts hours of training by accident)."""
    if profile.device == "cuda" and device != "cpu" and resolve_device(device).type != "cuda":
        return (
            f"profile {profile.name} trains on a GPU and none is here. Run `facelib report --profile "
            f"{profile.name}` on a GPU machine, or pass --device cpu to train here anyway (slow)"
        )
    return None


@dataclass
class TableRows:
    """A profile's tables as runs: `data` and `device` are where missing runs train (see `RunCache`)."""

    profile: Profile
    data: str | None
    device: str
    cache: RunCache

    @classmethod
    def open(
        cls,
        profile: str,
        data: str | None = None,
        device: str = "auto",
        results: str | Path = "results",
        checkpoints: str | Path = "checkpoints",
        train_missing: bool | None = None,
        time_limit_s: float | None = None,
    ) -> TableRows:
        """The rows of `profile` over the run cache in `results`; `train_missing` None: as the profile says
        (`Profile.trains_missing`); `time_limit_s`: no run starts after it (see `RunCache.deadline`)."""
        chosen = get_profile(profile)
        deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        trains = chosen.trains_missing if train_missing is None else bool(train_missing)
        cache = RunCache(Path(results), Path(checkpoints), trains, gpu_refusal(chosen, device), deadline)
        return cls(chosen, data, device, cache)

    @cached_property
    def dataset(self) -> FaceDataset:
        return discover(self.data)

    def config(self, table: str, **row: Any) -> TrainConfig:
        """The TrainConfig of one row; a row's `teacher` names a file under the results root."""
        if row.get("teacher"):
            row["teacher"] = str(self.cache.results / row["teacher"])
        return self.profile.config(table, self.data, self.device, **row)

    def run(self, table: str, label: str, want_checkpoint: bool = False, **row: Any) -> Run:
        """The finished run of one row, `row` being its changes to the table's settings (`RunCache.run`)."""
        return self.cache.run(self.config(table, **row), label, want_checkpoint)

    def table_rows(self, table: str, only: Sequence[str] | None = None, want_checkpoint: bool = False) -> list[Run]:
        """The runs of a report table, as defined in TABLES (`only`: a subset of its rows, in that order)."""
        field, _, fixed = TABLES[table]
        chosen = chosen_rows(self.profile.name, table, only)  # checks the table and the rows
        return [self.run(table, str(value), want_checkpoint, **{field: value}, **fixed) for value in chosen]

    def finished_rows(self, table: str) -> tuple[list[Run], list[str]]:
        """The table's rows whose runs are finished in the run cache (never training), and the labels of the
        rows that are not there yet: for choosing among what exists while the rest still trains."""
        field, _, fixed = TABLES[table]
        found, missing = [], []
        for label in table_rows(self.profile.name, table):
            if self.cache.find(self.config(table, **{field: label}, **fixed)) is None:
                missing.append(label)
            else:
                found.append(self.run(table, label, **{field: label}, **fixed))
        return found, missing

    def comparisons(self, table: str) -> tuple[tuple[str, str], ...]:
        """The pairs of rows a table was made to compare, named as this profile names its rows."""
        if table == "augmentation":
            return AUGMENTATION_COMPARISONS
        if table == "loss":
            named = dict(zip(LOSS_ROWS, self.profile.losses, strict=True))
            return tuple((named[a], named[b]) for a, b in LOSS_COMPARISONS)
        return ()

    def noise_repeat(self, table: str) -> Run:
        """The table's noise row trained again with seed NOISE_SEED."""
        row = self.profile.noise_rows[table]
        field, _, fixed = TABLES[table]
        return self.run(table, f"{row} (seed {NOISE_SEED})", **{field: row, **fixed, "seed": NOISE_SEED})

    def noise(self, table: str, runs: Sequence[Run]) -> Noise | None:
        """The table's noise: its profile's noise row trained again with seed NOISE_SEED (found in the run cache
        or trained now), against that row among `runs`; Tables 1-2 compare the final-validation means, Table 4
        the best checkpoints. None when the profile repeats no row of the table or `runs` lacks it."""
        row = self.profile.noise_rows.get(table)
        original = next((run for run in runs if run.label == row), None)
        if original is None:
            return None
        repeat = self.noise_repeat(table)

        def scores(run: Run) -> dict[str, float]:
            return run.final_mean() if table != "comparison" else {m: run.summary["best"][m] for m in HEADLINE}

        a, b = scores(original), scores(repeat)
        return Noise(row, {m: abs(a[m] - b[m]) for m in HEADLINE}, original, repeat)

    def measured_noise(self, table: str, runs: Sequence[Run]) -> Noise | None:
        """`noise`, or None when its repeat run is missing and may not be trained (choosing a model among
        finished rows then falls back to the highest score)."""
        try:
            return self.noise(table, runs)
        except ReportError:
            return None

    def split(self) -> Split:
        """The train/val split the profile's runs use."""
        fraction = self.profile.common.get("val_fraction", TrainConfig.val_fraction)
        return load_or_make_split(self.dataset, out=self.cache.results, val_fraction=fraction)[0]

    def tta_scores(self, run: Run, tta: str, checkpoint: Path | None = None) -> dict[str, float] | None:
        """Validation scores of a run's best checkpoint (or of `checkpoint`, e.g. the run's shipped fp16 weights)
        under a TTA mode: read from the run folder when evaluated before, else evaluated now (when the
        checkpoint is here) and stored there; None when neither."""
        if checkpoint is None:
            with contextlib.suppress(ReportError):
                checkpoint = self.cache.checkpoint(run)
        variant = "" if checkpoint is None else evaluation_variant(load_checkpoint(checkpoint), checkpoint)
        results = self.cache.results
        stored = stored_evaluation(results, run.key, "val", tta, variant=variant)
        if stored:
            return {name: stored[name] for name in (*HEADLINE, "aAcc")}
        if checkpoint is None:
            return None
        result = evaluate(checkpoint, self.data, "val", tta, out=results, device=self.device)
        save_evaluation(result, checkpoint, self.data, "val", results)
        return result.summary


# --- `facelib runs`: a table's rows trained in one command ----------------------------------------------------


def row_runs(
    rows: TableRows, table: str, only: Sequence[str] | None = None, tta: Sequence[str] = ()
) -> Iterator[tuple[Run, dict[str, Any]]]:
    """The runs of a table's rows, trained (or found in the run cache) one at a time, each best checkpoint
    scored under the `tta` modes (stored beside the run); yields (run, a summary line) as each row is done,
    so a caller can save it before the next one starts. Unknown rows are an error before anything trains."""
    labels = chosen_rows(rows.profile.name, table, only)

    def lines() -> Iterator[tuple[Run, dict[str, Any]]]:
        for label in labels:
            (run,) = rows.table_rows(table, [label], want_checkpoint=bool(tta))
            line = summary_line(table, run)
            for mode in tta:
                scores = rows.tta_scores(run, mode)
                line[f"mIoU tta_{mode}"] = None if scores is None else scores["mIoU"]
                line[f"mF1 tta_{mode}"] = None if scores is None else scores["mF1"]
            yield run, line
        if rows.profile.noise_rows.get(table) in labels:  # the noise row's second seed, after the rows
            run = rows.noise_repeat(table)
            yield run, summary_line(table, run)

    return lines()


def summary_line(table: str, run: Run) -> dict[str, Any]:
    """What `facelib runs` prints of a finished row."""
    best, config = run.summary["best"], run.config
    return {
        "table": table,
        "row": run.label,
        "key": run.key,
        "iterations": config.iterations,
        "batch": config.batch_size,
        "train s": run.summary["train_wall_s"],
        "images/s": run.summary["images_per_s"],
        "best at": best["iteration"],
        **{name: best[name] for name in HEADLINE},
    }


@dataclass(frozen=True)
class RowsPlan:
    """What `facelib runs` trains: tables, their rows (None: all), TTA modes to score each with, a budget in
    seconds after which no row starts, and where to pack finished runs (with their weights or not)."""

    tables: Sequence[str]
    only: Sequence[str] | None = None
    tta: Sequence[str] = ()
    budget_s: float | None = None
    pack: Path | None = None
    weights: bool = False


def train_rows(rows: TableRows, plan: RowsPlan) -> tuple[list[dict[str, Any]], int]:
    """`facelib runs`: every row of the plan's tables (and its noise row) trained or found, one after another in
    this process (data and device stay warm), as (summary lines, rows that failed). A failing row is reported
    and the next one goes on; no row starts after the budget; with `pack`, finished runs are packed after each
    row (`pack_runs`); the cache's deadline stops the run in progress at a checkpoint (it resumes next time)."""
    steps = [(table, label) for table in plan.tables for label in chosen_rows(rows.profile.name, table, plan.only)]
    start, lines, failed, keys = time.monotonic(), [], 0, []
    for number, (table, label) in enumerate(steps):
        if plan.budget_s is not None and time.monotonic() - start > plan.budget_s:
            left = ", ".join(f"{t}/{r}" for t, r in steps[number:])
            print(f"budget of {plan.budget_s:.0f} s spent; not started: {left}")
            break
        try:
            for run, line in row_runs(rows, table, [label], plan.tta):
                lines.append(line)
                keys.append(run.key)
        except TimeLimitReached:
            raise
        except Exception:  # one failing row must not lose the others: report it and go on
            failed += 1
            print(f"{table}/{label} failed:\n{traceback.format_exc()}")
            continue
        if plan.pack is not None:
            pack_runs(plan.pack, rows.cache.results, rows.cache.checkpoints, keys, plan.weights)
        print(f"{time.monotonic() - start:.0f} s: {table}/{label} done{', packed' if plan.pack else ''}")
    return lines, failed
