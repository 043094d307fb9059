"""Notebook 06's lever table: the proxy run with one lever changed per row (the profile's `lever_rows`), each
scored at its best checkpoint against the proxy's own run-to-run spread (`lever_noise`: one proxy, two seeds).

A run that keeps a moving average of its weights (`ema_decay`) also gives a row for its trained weights, read
from the `trained_*` columns its metrics.csv logs beside the average's: the update draws no random numbers, so
those are the weights the same run without the average would have had, and a seed-1 proxy with the average is
also the proxy's second seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from facelib.checkpoint import load_checkpoint
from facelib.config import photos_note
from facelib.errors import ReportError
from facelib.infer import stored_evaluation
from facelib.report_rows import TableRows
from facelib.runcache import Run, finished_summary, lineage, read_run

RARE = {"neck_l": "necklace", "ear_r": "earrings", "hat": "hat", "cloth": "cloth"}
"""The thin and rare classes whose IoU the table shows beside the means."""
TRAINED = ": trained weights"
SCORES = ("mIoU", "mF1", "per_image_F")
"""The scores each row shows (the ones an averaged run logs for its trained weights too)."""


@dataclass(frozen=True)
class Spread:
    """The proxy's run-to-run spread: how far apart its two seeds' best scores landed, per headline metric."""

    rows: tuple[str, str]
    points: dict[str, float]

    def note(self) -> str:
        values = ", ".join(f"{self.points[m]:.2f} {m}" for m in SCORES)
        return (
            f"Spread: the proxy's two seeds (rows `{self.rows[0]}` and `{self.rows[1]}`) land {values} points apart; "
            "a lever whose effect is no larger is within noise."
        )


def lever_runs(rows: TableRows) -> list[Run]:
    """The runs of the profile's lever rows, each found in the run cache (or trained where the report may), then
    its recorded rows (`lever_recorded`: runs whose training data is not committed, read by key)."""
    runs = [rows.run("levers", label, **changes) for label, changes in rows.profile.lever_rows]
    return runs + [recorded_run(rows.cache.results, label, key) for label, key in rows.profile.lever_recorded]


def recorded_run(results: Path, label: str, key: str) -> Run:
    """The finished run `key` of the run cache as a lever row, found by its key alone (never trained)."""
    summary = finished_summary(results, key)
    if summary is None:
        raise ReportError(
            f"lever row {label!r}: run {key} is not finished in the run cache {results / 'runs'}; it is read by its "
            "key and never trained by a report (its training data is not committed): restore its folder from git"
        )
    return read_run(results, summary, label)


def model_stages(results: Path, model: str = "facelib-best.pt", name: str = "") -> list[Run]:
    """The stages that trained a model file under `RESULTS/models/` (default: the shipped one), oldest first,
    each counting the samples of the stages before it and labelled after `name`; empty when there is no such
    file or its first run is not in this cache."""
    path = results / "models" / model
    if not path.exists():
        return []
    summaries = lineage(results, str(load_checkpoint(path).get("run_key")))[::-1]
    if not summaries or summaries[0]["config"].get("init_from"):
        return []
    stages, seen = [], 0
    for number, summary in enumerate(summaries, 1):
        run = read_run(results, summary)
        note = photos_note(run.config.to_dict()) or ", whole photos resized"
        run.label = f"{name}{', ' * bool(name)}stage {number}: {run.config.crop_size} px{note}" + (
            f", repeat factors {run.config.repeat_threshold:g}" if run.config.repeat_threshold else ""
        )
        stages.append(replace(run, samples_before=seen))
        seen = stages[-1].samples
    return stages


def _trained_scores(run: Run) -> dict[str, float | int]:
    """The trained weights' best validation (by mF1) of a run that validated a moving average instead."""
    rows = run.validations.dropna(subset=["trained_mF1"])
    best = rows.loc[rows["trained_mF1"].idxmax()]
    return {"iteration": int(best["iteration"]), **{m: float(best[f"trained_{m}"]) for m in SCORES}}


def held_out_scores(results: Path, run: Run) -> dict[str, float | None]:
    """The best checkpoint's mIoU on the training photos, on validation against the audit-corrected labels, and
    on validation after its logit adjustment, where `facelib eval KEY --split train`, `facelib eval KEY
    --corrected-labels` and `facelib adjust KEY` stored them (else None)."""
    train = stored_evaluation(results, run.key, "train")
    corrected = stored_evaluation(results, run.key, "val", corrected_labels=True)
    adjusted = stored_evaluation(results, run.key, "val", variant="-adjusted")
    return {
        "train mIoU": train and train["mIoU"],
        "corrected mIoU": corrected and corrected["mIoU"],
        "adjusted mIoU": adjusted and adjusted["mIoU"],
    }


def _row(label: str, run: Run, scores: dict, per_class: dict | None, held_out: dict) -> dict[str, object]:
    config = run.config
    return {
        "lever": label,
        "run": run.key,
        "seed": config.seed,
        "precision": "bf16" if config.cpu_bf16 else "float32",
        "best at": scores["iteration"],
        **{m: scores[m] for m in SCORES},
        **held_out,
        **{f"{name} IoU": (per_class or {}).get(cls, {}).get("IoU") for cls, name in RARE.items()},
        "images/s": run.summary["images_per_s"],
        "trained on": run.summary["device"].split(";")[0],
    }


def lever_table(rows: TableRows, runs: Sequence[Run]) -> tuple[pd.DataFrame, Spread | None]:
    """One row per lever run (and per averaged run's trained weights), with each headline metric's change from
    the mean of the profile's two seed rows (`lever_noise`); and the spread between those two (None when either
    is missing). The best checkpoint's stored train-split, corrected-label and adjusted scores sit beside them."""
    noise_rows, lines = rows.profile.lever_noise, []
    for run in runs:
        best = run.summary["best"]
        lines.append(_row(run.label, run, best, best.get("per_class"), held_out_scores(rows.cache.results, run)))
        if run.config.ema_decay and "trained_mF1" in run.metrics:
            unscored = dict.fromkeys(("train mIoU", "corrected mIoU", "adjusted mIoU"))  # best.pt holds the average
            lines.append(_row(run.label + TRAINED, run, _trained_scores(run), None, unscored))
    table = pd.DataFrame(lines).set_index("lever")
    if not set(noise_rows) <= set(table.index):
        return table, None
    pair = table.loc[list(noise_rows), list(SCORES)]
    spread = Spread(noise_rows, {m: float(abs(pair[m].iloc[0] - pair[m].iloc[1])) for m in SCORES})
    for metric in SCORES:
        table.insert(table.columns.get_loc(metric) + 1, f"Δ {metric}", table[metric] - pair[metric].mean())
    return table, spread


def lever_findings(table: pd.DataFrame, spread: Spread | None) -> str:
    """One sentence per lever: its change in mIoU and mF1 from the seeds' mean, beyond the spread or within it."""
    if spread is None:
        return "No spread is measured for these rows (one of the two seed rows is missing): no lever is judged."
    lines = []
    for label, row in table.drop(index=list(spread.rows)).iterrows():
        beyond = [m for m in ("mIoU", "mF1") if abs(row[f"Δ {m}"]) > spread.points[m]]
        change = ", ".join(f"{row[f'Δ {m}']:+.2f} {m}" for m in ("mIoU", "mF1"))
        verdict = f"beyond the spread in {' and '.join(beyond)}" if beyond else "within noise"
        lines.append(f"- **{label}**: {change} against the seeds' mean: {verdict}.")
    return "\n".join(lines)
