"""Which run `facelib ship --best` ships: among a profile's finished Table 4 rows and the longer runs and
fine-tunes beside them (`Report.longer_runs`), the best under the parameter cap by validation mF1, runs within
Table 4's measured seed spread of the top counted as tied and the cheapest of those winning (`tables.best_run`);
with the sentence the model card prints about how it was chosen."""

from __future__ import annotations

from pathlib import Path

from facelib.errors import ConfigError
from facelib.experiments import Report
from facelib.tables import Run, best_run, choice


def best_for_shipping(
    profile: str, data: str | None, device: str, out: str | Path, checkpoints: str | Path, allow_missing: bool
) -> tuple[Path, str]:
    """(the chosen run's best checkpoint, how it was chosen); an error when the profile's Table 4 is not complete
    in the run cache, unless `allow_missing` (then the sentence names the missing rows)."""
    report = Report(profile, data, device, out, checkpoints, train_missing=False)
    runs, missing = report.finished_rows("comparison")
    if not runs:
        raise ConfigError(
            f"profile {profile} has no finished Table 4 run yet (facelib runs --profile {profile} "
            "--table comparison trains them)"
        )
    if missing and not allow_missing:
        raise ConfigError(
            f"profile {profile}'s Table 4 rows {', '.join(missing)} are not in the run cache "
            f"{Path(out) / 'runs'}; train them (facelib runs --profile {profile} --table "
            "comparison), or pass --allow-missing to choose among the finished rows"
        )
    noise, longer = report.measured_noise("comparison", runs), report.longer_runs()
    winner = best_run([*runs, *longer], noise)
    selection = f"{choice([*runs, *longer], noise)}, among profile `{profile}`'s Table 4 rows {_named(runs)}"
    selection += f" and the longer runs and fine-tunes beside them {_named(longer)}" if longer else ""
    if missing:
        selection += f" (rows {', '.join(f'`{m}`' for m in missing)} were not trained yet)"
    print(f"{winner.label} ({winner.key}): {selection}")
    return report.checkpoint(winner), selection


def _named(runs: list[Run]) -> str:
    return ", ".join(f"`{run.label}`" for run in runs)
