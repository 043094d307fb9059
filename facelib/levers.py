"""Notebook 06's lever table: the proxy run with one lever changed per row (the profile's `lever_rows`), each
scored at its best checkpoint against the run-to-run spread of the proxy it changes (`lever_noise`: pairs of rows,
one proxy and two seeds each; a row changes the proxy of the pair whose first row it agrees with in every field
that row sets, the most specific such proxy when several do).

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
    """One proxy's run-to-run spread: how far apart its two seeds' best scores landed, per headline metric."""

    rows: tuple[str, str]
    points: dict[str, float]

    def note(self) -> str:
        values = ", ".join(f"{self.points[m]:.2f} {m}" for m in SCORES)
        return (
            f"Spread of the proxy `{self.rows[0]}`: its two seeds (rows `{self.rows[0]}` and `{self.rows[1]}`) land "
            f"{values} points apart; a lever on it whose effect is no larger is within noise."
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


def _proxy_of(rows: TableRows, runs: Sequence[Run]) -> dict[str, str]:
    """Each run's proxy: the first row of the `lever_noise` pair it agrees with in every field that row sets
    apart from the profile's lever settings (the pair whose first row sets the most, where several agree). A
    proxy's own first row is a lever on the proxy below it, where there is one."""
    default = rows.config("levers").to_dict()
    configs = {run.label: run.config.to_dict() for run in runs}
    firsts = [first for first, _ in rows.profile.lever_noise if first in configs]
    own = {first: {k: v for k, v in configs[first].items() if v != default[k]} for first in firsts}
    proxy = {}
    for label, config in configs.items():
        fits = [first for first in firsts if first != label and all(config[k] == v for k, v in own[first].items())]
        if fits or label in own:
            proxy[label] = max(fits, key=lambda first: len(own[first])) if fits else label
    return proxy


def lever_table(rows: TableRows, runs: Sequence[Run]) -> tuple[pd.DataFrame, list[Spread]]:
    """One row per lever run (and per averaged run's trained weights), with each headline metric's change from
    the mean of the two seed rows of the proxy it changes (`against`; empty where that proxy's pair is not
    complete); and the spread of each proxy with both seed rows. The best checkpoint's stored train-split,
    corrected-label and adjusted scores sit beside them."""
    lines, proxy = [], _proxy_of(rows, runs)
    for run in runs:
        best, against = run.summary["best"], proxy.get(run.label)
        held_out = held_out_scores(rows.cache.results, run)
        lines.append({**_row(run.label, run, best, best.get("per_class"), held_out), "against": against})
        if run.config.ema_decay and "trained_mF1" in run.metrics:
            unscored = dict.fromkeys(("train mIoU", "corrected mIoU", "adjusted mIoU"))  # best.pt holds the average
            lines.append({**_row(run.label + TRAINED, run, _trained_scores(run), None, unscored), "against": against})
    table = pd.DataFrame(lines).set_index("lever")
    pairs = [pair for pair in rows.profile.lever_noise if set(pair) <= set(table.index)]
    spreads = [_spread(table.loc[list(pair), list(SCORES)], pair) for pair in pairs]
    means = pd.DataFrame({pair[0]: table.loc[list(pair), list(SCORES)].mean() for pair in pairs}, index=SCORES).T
    base = means.reindex(table["against"]).set_axis(table.index)  # each row's proxy's seed mean; NaN: none
    for metric in SCORES:
        table.insert(table.columns.get_loc(metric) + 1, f"Δ {metric}", table[metric] - base[metric])
    return table, spreads


def _spread(pair: pd.DataFrame, rows: tuple[str, str]) -> Spread:
    return Spread(rows, {m: float(abs(pair[m].iloc[0] - pair[m].iloc[1])) for m in SCORES})


def lever_findings(table: pd.DataFrame, spreads: Sequence[Spread]) -> str:
    """One sentence per lever: its change in mIoU and mF1 from its proxy's seeds' mean, beyond that proxy's
    spread or within it."""
    by_proxy = {spread.rows[0]: spread for spread in spreads}
    seed_rows = {row for first, spread in by_proxy.items() for row in spread.rows if table.loc[row, "against"] == first}
    lines = []
    for label, row in table.drop(index=list(seed_rows)).iterrows():
        spread = by_proxy.get(row["against"])
        if spread is None:
            lines.append(f"- **{label}**: no spread is measured for its proxy (a seed row is missing): not judged.")
            continue
        beyond = [m for m in ("mIoU", "mF1") if abs(row[f"Δ {m}"]) > spread.points[m]]
        change = ", ".join(f"{row[f'Δ {m}']:+.2f} {m}" for m in ("mIoU", "mF1"))
        verdict = f"beyond the spread in {' and '.join(beyond)}" if beyond else "within noise"
        lines.append(f"- **{label}**: {change} against the seeds' mean of `{spread.rows[0]}`: {verdict}.")
    return "\n".join(lines)
