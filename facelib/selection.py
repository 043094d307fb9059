"""Which model a profile stands for: its Table 4 rows and, beside them, the longer runs of the same recipe and
the runs fine-tuned from those (`longer_runs`: a lineage of stages); the best of them under the parameter cap
by validation mF1, runs within Table 4's measured seed spread of the top counted as tied and the cheapest of
those winning (`tables.best_run`). `facelib ship --best` ships that choice (`best_for_shipping`, with the
sentence its model card prints); notebook 05 shows the shipped model (`inference_model`)."""

from __future__ import annotations

from pathlib import Path

from facelib.adjust import ADJUSTED_NAME
from facelib.checkpoint import load_checkpoint
from facelib.config import RUNTIME_FIELDS, photos_note
from facelib.errors import ConfigError
from facelib.profiles import TABLES, table_rows
from facelib.report_rows import TableRows
from facelib.runcache import Run, finished_summary, read_run, run_record
from facelib.tables import best_run, choice

LONGER_RUN_FIELDS = ("model", "iterations", "val_interval", "cpu_bf16", "photo_size")
"""What a longer run of Table 4's recipe may change (`longer_runs`); everything else must match."""
FINE_TUNE_FIELDS = ("crop_size", "lr", "seed", "init_from", "repeat_threshold")  # and for a run fine-tuned from one
SHIPPED = "what `facelib predict` uses without `--checkpoint`"


def longer_runs(rows: TableRows) -> list[Run]:
    """Finished runs on this profile's data and split that follow Table 4's recipe with more iterations (any
    model, CPU bf16 or not), each followed by the runs fine-tuned from it (`FINE_TUNE_FIELDS` may differ too):
    what more samples buy, shown beside Table 4 by notebook 04. Found, never trained; labels say samples."""
    field, _, fixed = TABLES["comparison"]
    base = rows.config("comparison", **{field: table_rows(rows.profile.name, "comparison")[0]}, **fixed)
    found, tunes = [], {}
    for run in rows.cache.finished(rows.cache.fingerprint(base)):
        config, samples = run.config, run.config.iterations * run.config.batch_size
        differs = {k for k, v in config.to_dict().items() if v != base.to_dict()[k]} - set(RUNTIME_FIELDS)
        if config.iterations > base.iterations and differs <= set(LONGER_RUN_FIELDS):
            native = f" at {config.crop_size} px{photos_note(config.to_dict())}" if config.photo_size else ""
            run.label = f"{config.model}, {samples:,} samples{native}"
            run.label += ", CPU bf16" * config.cpu_bf16
            found.append(run)
        elif config.init_from and differs <= {*LONGER_RUN_FIELDS, *FINE_TUNE_FIELDS}:
            parent = str(run_record(rows.cache.results, run.key).get("init_run_key"))
            run.label = f"{config.model}, +{samples:,} samples at {config.crop_size} px{photos_note(config.to_dict())}"
            run.label += f" from {parent.split('-')[-1]}"
            run.label += f", repeat factors {config.repeat_threshold:g}" * bool(config.repeat_threshold)
            tunes.setdefault(parent, []).append(run)

    def family(run: Run) -> list[Run]:  # a run, then its fine-tunes (counting its samples), and so on
        return [run, *(later for tune in tunes.get(run.key, []) for later in family(tune.after(run)))]

    return [member for run in found for member in family(run)]


def inference_model(rows: TableRows) -> tuple[Run, Path, str]:
    """The model notebook 05 shows, as (its run, the file, a sentence): the shipped default model
    (RESULTS/models/facelib-best.pt, what `facelib predict` uses) when one of this profile's Table 4 runs
    made it, or another run trained on this profile's data and split (a longer run of Table 4's choice, say);
    else the best checkpoint of the Table 4 run `best_run` chooses."""
    shipped = rows.cache.results / "models" / "facelib-best.pt"
    key = load_checkpoint(shipped).get("run_key") if shipped.exists() else None
    field = TABLES["comparison"][0]
    for label in table_rows(rows.profile.name, "comparison") if key else ():
        if rows.cache.key(rows.config("comparison", **{field: label})) == key:
            run = rows.run("comparison", label, **{field: label})
            made = f"`{label}`, run `{key}`"
            return (
                run,
                shipped,
                f"Model: the shipped `{shipped.name}` ({SHIPPED}): {made}, fp16 weights of its best checkpoint.",
            )
    mine = rows.cache.fingerprint(rows.config("comparison", **{field: table_rows(rows.profile.name, "comparison")[0]}))
    summary = finished_summary(rows.cache.results, key)
    if summary is not None and summary.get("data", {}).get("fingerprint") == mine:
        other = read_run(rows.cache.results, summary)
        config = other.config
        recipe = f"{config.iterations:,} iterations of batch {config.batch_size} at {config.crop_size} px, loss `{config.loss}`"
        return (
            other,
            shipped,
            (
                f"Model: the shipped `{shipped.name}` ({SHIPPED}): `{config.model}`, run `{key}`, trained on this "
                f"profile's data and split but not one of its Table 4 rows ({recipe}), fp16 weights of its best checkpoint."
            ),
        )
    runs = rows.table_rows("comparison", want_checkpoint=True)
    noise = rows.measured_noise("comparison", runs)
    winner = best_run(runs, noise)
    return winner, rows.cache.checkpoint(winner), f"Model: {choice(runs, noise)}; run `{winner.key}`."


def best_for_shipping(rows: TableRows, allow_missing: bool) -> tuple[Path, str]:
    """(the chosen run's best checkpoint, or its adjusted.pt when there is one, and how it was chosen) among the profile's finished Table 4 rows and the
    longer runs beside them; an error when Table 4 is not complete in the run cache, unless `allow_missing`
    (then the sentence names the missing rows)."""
    profile = rows.profile.name
    runs, missing = rows.finished_rows("comparison")
    if not runs:
        raise ConfigError(
            f"profile {profile} has no finished Table 4 run yet (facelib runs --profile {profile} "
            "--table comparison trains them)"
        )
    if missing and not allow_missing:
        raise ConfigError(
            f"profile {profile}'s Table 4 rows {', '.join(missing)} are not in the run cache "
            f"{rows.cache.results / 'runs'}; train them (facelib runs --profile {profile} --table "
            "comparison), or pass --allow-missing to choose among the finished rows"
        )
    noise, longer = rows.measured_noise("comparison", runs), longer_runs(rows)
    winner = best_run([*runs, *longer], noise)
    selection = f"{choice([*runs, *longer], noise)}, among profile `{profile}`'s Table 4 rows {_named(runs)}"
    selection += f" and the longer runs and fine-tunes beside them {_named(longer)}" if longer else ""
    if missing:
        selection += f" (rows {', '.join(f'`{m}`' for m in missing)} were not trained yet)"
    best = rows.cache.checkpoint(winner)
    if best.with_name(ADJUSTED_NAME).is_file():  # its logit adjustment (facelib.adjust), made after training
        best, selection = best.with_name(ADJUSTED_NAME), f"{selection}; its logit adjustment shipped"
    print(f"{winner.label} ({winner.key}): {selection}")
    return best, selection


def _named(runs: list[Run]) -> str:
    return ", ".join(f"`{run.label}`" for run in runs)
