"""What the report's notebooks call: a `Report` (profile, data, output folders) that trains or finds each
table row's run in the run cache, writes tables and figures with their provenance, and the table builders.

Tables 1-2 average the final four validation points of each run, as the reference did; Table 4 takes each
run's best checkpoint (by validation mF1), as the reference did.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facelib.errors import ReportError
from facelib.profiles import AUGMENTATION_ROWS, LOSS_ROWS, NOISE_SEED, REFERENCE_TABLE4, get_profile
from facelib.train import TrainConfig, identify, run_key, train

# smp and timm import tqdm.auto, which warns in a notebook kernel without ipywidgets; facelib draws no widget bars.
warnings.filterwarnings("ignore", message="IProgress not found")

HEADLINE = ("mIoU", "mF1", "mFscore_ref", "per_image_F")
FINAL_POINTS = 4  # validation points averaged for Tables 1-2, as the reference did
TABLES = {
    "augmentation": ("augment", AUGMENTATION_ROWS, {"model": "fastscnn"}),
    "loss": ("loss", LOSS_ROWS, {"model": "fastscnn"}),  # the profile's `losses` (LOSS_ROWS or their twins)
    "comparison": ("model", None, {}),  # None: the profile's models
}
"""Each table's rows: the TrainConfig field they vary, its values, and what every row fixes (Tables 1 and 2
are Fast-SCNN ablations, as in the reference). The notebooks and `facelib runs` both read this."""


@dataclass
class Run:
    """One finished training run: its label in a table, config, stored summary and per-interval metrics."""

    label: str
    config: TrainConfig
    summary: dict[str, Any]
    metrics: pd.DataFrame
    trained_now: bool = False

    @property
    def key(self) -> str:
        return self.summary["key"]

    @property
    def checkpoint(self) -> Path:
        return Path(self.summary["checkpoint_dir"]) / "best.pt"

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


@dataclass(frozen=True)
class Noise:
    """Run-to-run noise of a table, measured: one row trained with two seeds, and how far apart its headline
    metrics landed. A difference between rows no larger than that is not a finding."""

    row: str
    spread: dict[str, float]  # per headline metric: |seed 0 - seed NOISE_SEED|, in points
    original: Run
    repeat: Run

    def note(self) -> str:
        values = ", ".join(f"{self.spread[m]:.2f} {m}" for m in HEADLINE)
        return (
            f"Run-to-run noise: row `{self.row}` trained again with seed {NOISE_SEED} (runs {self.original.key}, "
            f"{self.repeat.key}) lands {values} points away. A difference between rows no larger than that is "
            "within noise."
        )


AUGMENTATION_COMPARISONS = (
    ("flip_swap", "flip"), ("flip_swap", "baseline"), ("geometric", "baseline"), ("photometric", "baseline"),
    ("full", "baseline"),
)  # fmt: skip
LOSS_COMPARISONS = (
    ("wce_lovasz", "ce"),
    ("wce_lovasz_aux08", "wce_lovasz"),
    ("wce_dice", "ce"),
    ("wce_lovasz_dice", "ce"),
)
"""The comparisons the reference's Tables 1 and 2 were made for (Table 2's by the reference's row names; a profile
whose rows are their `_coarse4` twins compares those)."""


def compare(frame: pd.DataFrame, a: str, b: str, metric: str, noise: Noise, column: str | None = None) -> str:
    """One comparison in words: the difference, and whether it exceeds the measured noise."""
    difference = float(frame.loc[a, column or metric] - frame.loc[b, column or metric])
    spread = noise.spread[metric]
    verdict = (
        f"larger than the seed spread ({spread:.2f}): `{a if difference > 0 else b}` is ahead"
        if abs(difference) > spread
        else f"within noise (seed spread {spread:.2f})"
    )
    return f"`{a}` vs `{b}`: {difference:+.2f} {metric}, {verdict}."


def leader(frame: pd.DataFrame, metric: str, noise: Noise, column: str | None = None) -> str:
    """Which row leads, said only when it leads every other row by more than the measured noise."""
    values = frame[column or metric].dropna().sort_values(ascending=False)
    if len(values) < 2:
        return "Fewer than two rows: nothing to rank."
    gap, spread = float(values.iloc[0] - values.iloc[1]), noise.spread[metric]
    if gap > spread:
        return f"`{values.index[0]}` leads every other row by more than the seed spread ({gap:.2f} > {spread:.2f} {metric})."
    return (
        f"No row leads: the top two (`{values.index[0]}`, `{values.index[1]}`) are {gap:.2f} {metric} apart, within "
        f"noise (seed spread {spread:.2f})."
    )


def findings(frame: pd.DataFrame, pairs: Sequence[tuple[str, str]], noise: Noise, metric: str = "mF1",
             column: str | None = None) -> str:  # fmt: skip
    """The table's comparisons and its leader as a Markdown list, each measured against the noise."""
    lines = [compare(frame, a, b, metric, noise, column) for a, b in pairs if a in frame.index and b in frame.index]
    return "\n".join(f"- {line}" for line in [*lines, leader(frame, metric, noise, column)])


def table_rows(profile: str, table: str) -> tuple[str, ...]:
    """The row labels of a table in a profile (see TABLES)."""
    if table not in TABLES:
        raise ReportError(f"unknown table {table!r}; valid: {', '.join(TABLES)}")
    values, chosen = TABLES[table][1], get_profile(profile)
    if table == "loss":
        return chosen.losses
    return tuple(chosen.models if values is None else values)


def chosen_rows(profile: str, table: str, only: Sequence[str] | None = None) -> tuple[str, ...]:
    """`only` (in that order) when every one is a row of the table, else all its rows; an unknown row is an error."""
    rows = table_rows(profile, table)
    unknown = [row for row in only or () if row not in rows]
    if unknown:
        raise ReportError(f"table {table} has no row(s) {', '.join(unknown)}; its rows: {', '.join(rows)}")
    return tuple(only) if only else rows


def row_runs(
    report: Report, table: str, only: Sequence[str] | None = None, tta: Sequence[str] = ()
) -> Iterator[tuple[Run, dict[str, Any]]]:
    """The runs of a table's rows, trained (or found in the run cache) one at a time, each best checkpoint
    scored under the `tta` modes (stored beside the run); yields (run, a summary line) as each row is done,
    so a caller can save it before the next one starts. Unknown rows are an error before anything trains."""
    labels = chosen_rows(report.profile.name, table, only)

    def rows() -> Iterator[tuple[Run, dict[str, Any]]]:
        for label in labels:
            (run,) = report.table_rows(table, [label], want_checkpoint=bool(tta))
            line = _summary_line(table, run)
            for mode in tta:
                scores = tta_scores(report, run, mode)
                line[f"mIoU tta_{mode}"] = None if scores is None else scores["mIoU"]
                line[f"mF1 tta_{mode}"] = None if scores is None else scores["mF1"]
            yield run, line
        repeated = report.profile.noise_rows.get(table)
        if repeated in labels:  # the noise row's second seed, after the rows
            field, _, fixed = TABLES[table]
            run = report.run(table, f"{repeated} (seed {NOISE_SEED})", **{field: repeated, **fixed, "seed": NOISE_SEED})
            yield run, _summary_line(table, run)

    return rows()


def _summary_line(table: str, run: Run) -> dict[str, Any]:
    best = run.summary["best"]
    return {"table": table, "row": run.label, "key": run.key, "iterations": run.config.iterations,
            "batch": run.config.batch_size, "train s": run.summary["train_wall_s"],
            "images/s": run.summary["images_per_s"], "best at": best["iteration"],
            **{name: best[name] for name in HEADLINE}}  # fmt: skip


class TimeLimitReached(ReportError):
    """`Report.time_limit_s` ran out: the run named in the message stopped at a checkpoint and resumes next time."""


class Report:
    """The state one notebook shares with facelib: profile, data, where runs, tables and figures go.

    `device`: where missing runs train ("auto": CUDA when present). A profile meant for a GPU refuses to train
    a missing run on a CPU unless `device="cpu"` is asked for explicitly, so assembling a GPU report on a
    laptop never starts hours of training by accident. `train_missing=False` refuses to train at all.
    """

    def __init__(
        self,
        profile: str,
        data: str | None = None,
        device: str = "auto",
        results: str | Path = "results",
        checkpoints: str | Path = "checkpoints",
        notebook: str = "",
        train_missing: bool = True,
        time_limit_s: float | None = None,
    ) -> None:
        from facelib.data import discover, keep_decoded

        keep_decoded(True)
        self.profile = get_profile(profile)
        self.data, self.device, self.notebook, self.train_missing = data, device, notebook, train_missing
        self.results, self.checkpoints = Path(results), Path(checkpoints)
        self.out = self.results / self.profile.name
        self.dataset = discover(data)
        self.runs: list[Run] = []
        self.deadline = None if time_limit_s is None else time.monotonic() + time_limit_s

    # --- runs ------------------------------------------------------------------------------------------

    def config(self, table: str, **row: Any) -> TrainConfig:
        return self.profile.config(table, self.data, self.device, **row)

    def run(self, table: str, label: str, want_checkpoint: bool = False, **row: Any) -> Run:
        """The finished run of one table row: from the run cache, or trained now (see the class note).

        `want_checkpoint`: a cached run whose best.pt is not here is trained again, where this machine may
        train (the run folder is committed, checkpoints are not); elsewhere it is used without one."""
        config = self.config(table, **row)
        key = run_key(config, identify(config, self.results).fingerprint)
        summary_file = self.results / "runs" / key / "summary.json"
        cached = summary_file.exists() and json.loads(summary_file.read_text()).get("finished")
        retrain = bool(cached) and want_checkpoint and self.refusal() is None and not self._has_weights(key)
        if not cached and self.refusal():
            raise ReportError(f"run {key} ({label}) is not in the run cache {self.results / 'runs'}: {self.refusal()}")
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left <= 0 and not (cached and not retrain):
            raise TimeLimitReached(f"time limit reached before run {key} ({label}) started")
        summary = train(config, self.results, self.checkpoints, progress=False, require_checkpoint=retrain,
                        time_limit_s=left)  # fmt: skip
        if not summary["finished"]:
            stopped = f"run {key} ({label}) stopped at iteration {summary['iterations_done']} of {config.iterations}"
            if left is not None:
                raise TimeLimitReached(f"{stopped} (time limit); run the same command again to resume it")
            raise ReportError(stopped)
        metrics = pd.read_csv(Path(summary["run_dir"]) / "metrics.csv")
        trained = not cached or (retrain and (self.checkpoints / key / "best.pt").exists())
        run = Run(label, config, summary, metrics, trained_now=trained)
        state = f"trained in {summary['train_wall_s']:.0f} s" if trained else "found in the run cache"
        print(f"{label}: run {key} {state}")
        self.runs.append(run)
        return run

    def refusal(self) -> str | None:
        """Why this report may not train a missing run here, or None when it may."""
        from facelib.infer import resolve_device

        if not self.train_missing:
            return "this report was asked to use cached runs only"
        if self.profile.device == "cuda" and self.device != "cpu" and resolve_device(self.device).type != "cuda":
            return (
                f"profile {self.profile.name} trains on a GPU and none is here. Run `facelib report --profile "
                f"{self.profile.name}` on a GPU machine, or pass --device cpu to train here anyway (slow)"
            )
        return None

    def _has_weights(self, key: str) -> bool:
        return (self.checkpoints / key / "best.pt").exists() or self.shipped_weights(key) is not None

    def shipped_weights(self, key: str) -> Path | None:
        """A weights file committed under RESULTS/models/ that was made by run `key`, if there is one."""
        from facelib.infer import load_checkpoint

        for path in sorted((self.results / "models").glob("*.pt")):
            if load_checkpoint(path).get("run_key") == key:
                return path
        return None

    def inference_model(self) -> tuple[Run, Path, str]:
        """The model notebook 05 shows, as (its run, the file, a sentence): the shipped default model
        (RESULTS/models/facelib-best.pt, what `facelib predict` uses) when one of this profile's Table 4 runs
        made it, else the best Table 4 run's best checkpoint."""
        shipped = self.results / "models" / "facelib-best.pt"
        if shipped.exists():
            from facelib.infer import load_checkpoint

            key, field = load_checkpoint(shipped).get("run_key"), TABLES["comparison"][0]
            for label in table_rows(self.profile.name, "comparison"):
                config = self.config("comparison", **{field: label})
                if run_key(config, identify(config, self.results).fingerprint) == key:
                    run = self.run("comparison", label, **{field: label})
                    return run, shipped, (
                        f"Model: the shipped `{shipped.name}` (what `facelib predict` uses without `--checkpoint`): "
                        f"`{label}`, run `{key}`, fp16 weights of its best checkpoint."
                    )  # fmt: skip
        winner = best_run(self.table_rows("comparison", want_checkpoint=True))
        checkpoint = self.checkpoint(winner)
        return winner, checkpoint, f"Model: `{winner.label}` (run `{winner.key}`), the best of Table 4 by mF1."

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

    def split(self):
        """The train/val split the profile's runs use."""
        from facelib.data import load_or_make_split
        from facelib.train import TrainConfig

        fraction = self.profile.common.get("val_fraction", TrainConfig.val_fraction)
        return load_or_make_split(self.dataset, out=self.results, val_fraction=fraction)[0]

    def pairs(self, stems: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Decoded photos and masks of the given stems (for figures)."""
        from facelib.data import read_image
        from facelib.labels import read_mask

        samples = self.dataset.by_stem(stems)
        return [read_image(s.image) for s in samples], [read_mask(s.mask) for s in samples]

    def table_runs(self, table: str, field: str, values: Sequence[Any], **fixed: Any) -> list[Run]:
        """One run per value of `field` (e.g. augment over the augmentation presets)."""
        return [self.run(table, str(value), **{field: value}, **fixed) for value in values]

    def table_rows(self, table: str, only: Sequence[str] | None = None, want_checkpoint: bool = False) -> list[Run]:
        """The runs of a report table, as defined in TABLES (`only`: a subset of its rows, in that order)."""
        chosen = chosen_rows(self.profile.name, table, only)  # checks the table and the rows
        field, _, fixed = TABLES[table]
        return self.table_runs(table, field, chosen, want_checkpoint=want_checkpoint, **fixed)

    def comparisons(self, table: str) -> tuple[tuple[str, str], ...]:
        """The pairs of rows a table was made to compare, named as this profile names its rows."""
        if table == "augmentation":
            return AUGMENTATION_COMPARISONS
        if table == "loss":
            named = dict(zip(LOSS_ROWS, self.profile.losses, strict=True))
            return tuple((named[a], named[b]) for a, b in LOSS_COMPARISONS)
        return ()

    def noise(self, table: str, runs: Sequence[Run]) -> Noise | None:
        """The table's noise: its profile's noise row trained again with seed NOISE_SEED (found in the run cache
        or trained now), against that row among `runs`; Tables 1-2 compare the final-validation means, Table 4
        the best checkpoints. None when the profile repeats no row of the table or `runs` lacks it."""
        row = self.profile.noise_rows.get(table)
        original = next((run for run in runs if run.label == row), None)
        if original is None:
            return None
        field, _, fixed = TABLES[table]
        repeat = self.run(table, f"{row} (seed {NOISE_SEED})", **{field: row, **fixed, "seed": NOISE_SEED})

        def scores(run: Run) -> dict[str, float]:
            return run.final_mean() if table != "comparison" else {m: run.summary["best"][m] for m in HEADLINE}

        a, b = scores(original), scores(repeat)
        return Noise(row, {m: abs(a[m] - b[m]) for m in HEADLINE}, original, repeat)

    def finished_rows(self, table: str) -> tuple[list[Run], list[str]]:
        """The table's rows whose runs are finished in the run cache (never training), and the labels of the
        rows that are not there yet: for choosing among what exists while the rest still trains."""
        field, _, fixed = TABLES[table]
        found, missing = [], []
        for label in table_rows(self.profile.name, table):
            config = self.config(table, **{field: label}, **fixed)
            key = run_key(config, identify(config, self.results).fingerprint)
            summary_file = self.results / "runs" / key / "summary.json"
            if summary_file.exists() and json.loads(summary_file.read_text()).get("finished"):
                found.append(self.run(table, label, **{field: label}, **fixed))
            else:
                missing.append(label)
        return found, missing

    # --- outputs ---------------------------------------------------------------------------------------

    def note(self, runs: Sequence[Run] = ()) -> str:
        """The provenance paragraph under a table: profile, data, where the runs were trained, who assembled it."""
        from facelib.outputs import provenance

        parts = [f"Profile `{self.profile.name}`."]
        if runs:
            devices = sorted({r.summary["device"].split(";")[0].split(" (CUDA")[0] for r in runs})
            commits = sorted({r.summary["commit"] for r in runs})
            dates = sorted(r.summary["written_at"] for r in runs)
            parts.append(
                f"Runs ({', '.join(r.key for r in runs)}) trained on {'; '.join(devices)} at commit(s) "
                f"{', '.join(commits)}, {dates[0]} to {dates[-1]}."
            )
        command = f"facelib report --profile {self.profile.name}" + (
            f" (notebook {self.notebook})" if self.notebook else ""
        )
        data = f"{self.dataset.name} ({len(self.dataset.samples)} pairs)"
        parts.append(provenance(data, command=command))
        return " ".join(parts)

    def table(self, frame: pd.DataFrame, name: str, title: str, runs: Sequence[Run] = (), explain: str = ""):
        """Write `tables/NAME.csv` and `.md` (title, table, explanation, provenance); return the table styled
        for display (`styled`)."""
        from facelib.outputs import write_table

        note = (explain + "\n\n" if explain else "") + self.note(runs)
        write_table(frame, self.out / "tables" / name, title, note, ".2f")
        return styled(frame)

    def figure(self, figure, name: str, photo: bool = False):
        """Save `figures/NAME.png` (`.jpg` when `photo`: grids of photographs compress 6x better) and return it
        as an image to display (embedded in the notebook's output, so the HTML page stands alone)."""
        from IPython.display import Image

        from facelib.outputs import save_figure

        path = save_figure(figure, self.out / "figures" / f"{name}.{'jpg' if photo else 'png'}", dpi=100)
        return Image(filename=str(path))

    def describe(self) -> str:
        """The profile, then this page's parameters (the notebook's only parameters block a reader sees)."""
        from facelib.outputs import shown_path

        data = f"`{shown_path(self.dataset.root)}` ({self.dataset.name}, {len(self.dataset.samples)} pairs)"
        trains = "yes" if self.train_missing else "no (cached runs only)"
        return (
            f"{self.profile.describe()}\n\n**Parameters of this page**: data {data}; device for missing runs "
            f"`{self.device}`; run cache `{shown_path(self.results / 'runs')}`; may train missing runs: {trains}."
        )


# --- tables --------------------------------------------------------------------------------------------


def overfitting(trend: float | None, noise: Noise | None) -> str:
    """The reference's Overfitting column, said only beyond the noise: `yes` when validation mF1 fell by more
    than the seed spread at the end, `no` when it rose by more, else `within noise` (`n/a`: too few points)."""
    if trend is None:
        return "n/a"
    if noise is None:
        return "yes" if trend < 0 else "no"
    spread = noise.spread["mF1"]
    return "yes" if trend < -spread else "no" if trend > spread else "within noise"


def ablation_table(runs: Sequence[Run], row_name: str, noise: Noise | None = None) -> pd.DataFrame:
    """Tables 1-2: per row the iterations, the mean of the final four validations of each headline metric,
    the best single validation, and whether validation was still improving at the end (against `noise`)."""
    rows = []
    for run in runs:
        final, trend = run.final_mean(), run.trend()
        validations = run.validations
        best = validations.loc[validations["mF1"].idxmax()]
        rows.append(
            {
                row_name: run.label,
                "iterations": run.config.iterations,
                "batch": run.config.batch_size,
                "val_points": len(validations),
                **{f"{name} (final {FINAL_POINTS})": final[name] for name in HEADLINE},
                "best mF1": float(best["mF1"]),
                "best at": int(best["iteration"]),
                "trend mF1": trend,
                "overfitting": overfitting(trend, noise),
                "train s": run.summary["train_wall_s"],
            }
        )
    return pd.DataFrame(rows).set_index(row_name)


ABLATION_EXPLAIN = (
    f"Metrics (%) are the mean of the final {FINAL_POINTS} validation points of each run (as the reference "
    "averaged them). mF1 is honest (a class in the ground truth that is never predicted counts as 0); "
    "mFscore_ref is the reference's tool's figure, which drops such classes. `trend mF1`: mean mF1 of the final "
    f"{FINAL_POINTS} validations minus that of the {FINAL_POINTS} before, in points; `overfitting` is `yes` when "
    "that fell by more than the seed spread (validation got worse while training went on: the reference's "
    "Overfitting column, defined here this way because its own definition is not given), `no` when it rose by "
    f"more, `within noise` otherwise, `n/a` with fewer than {2 * FINAL_POINTS} validations. The reference's "
    "per-row figures for Tables 1-2 were not available to this project."
)


def comparison_table(
    runs: Sequence[Run], latency: pd.DataFrame, tta: dict[str, dict] | None = None, speed: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Table 4: size and cost (from `facelib.models.profile.model_table`), ONNX Runtime latency as a multiple of
    a known model's measured in the same call (`facelib.bench.anchor_latency`, when given), training cost, and
    the scores of each run's best checkpoint; flip-TTA scores where they were evaluated; the reference's."""
    rows = []
    for run in runs:
        best, model = run.summary["best"], run.config.model
        size = latency.loc[model]
        flip = (tta or {}).get(run.key) or {}
        reference = REFERENCE_TABLE4.get(model, {})
        rows.append(
            {
                "model": model,
                "role": size["role"],
                "params": int(size["params"]),
                "params_deployed": int(size["params_deployed"]),
                "fits_cap": bool(size["fits_cap"]),
                "GFLOPs": float(size["gflops"]),
                "CPU ms": float(size["cpu_ms"]),
                **(
                    {"ONNX ms": float(speed.loc[model, "onnx_ms"]), "x anchor": float(speed.loc[model, "vs_anchor"])}
                    if speed is not None
                    else {}
                ),
                "iterations": run.config.iterations,
                "batch": run.config.batch_size,
                "best at": best["iteration"],
                **{name: best[name] for name in HEADLINE},
                "aAcc": best["aAcc"],
                "mIoU flip-TTA": flip.get("mIoU"),
                "mF1 flip-TTA": flip.get("mF1"),
                "train s": run.summary["train_wall_s"],
                "train images/s": run.summary["images_per_s"],
                "reference mIoU": reference.get("mIoU"),
                "reference mFscore": reference.get("mFscore"),
            }
        )
    return pd.DataFrame(rows).set_index("model")


ACCURACY_COLUMNS = ("iterations", "batch", "best at", *HEADLINE, "aAcc", "mIoU flip-TTA", "mF1 flip-TTA",
                    "reference mIoU", "reference mFscore")  # fmt: skip
"""Table 4 is shown in two parts that fit a page: accuracy (these columns) and cost (the rest)."""


def split_comparison(table4: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 4's accuracy part and its cost part (size, speed, training time), for display."""
    accuracy = [c for c in ACCURACY_COLUMNS if c in table4.columns]
    return table4[accuracy], table4[[c for c in table4.columns if c not in accuracy]]


PERCENT = ("mIoU", "mF1", "mFscore", "per_image_F", "aAcc", "best mF1", "reference m")


def styled(frame: pd.DataFrame):
    """A table as a reader sees it: units in the headers (% for scores, points for differences), thousands
    separators, two decimals, "–" for a missing value (a pandas Styler; the CSV keeps the raw frame)."""

    def header(column: str) -> str:
        if column.startswith("trend ") or column == "seed spread":
            return f"{column} (pts)"
        if column.startswith(PERCENT) or column.endswith((" IoU", " F1")):
            return f"{column} (%)"
        return column

    return frame.rename(columns=header).style.format(precision=2, thousands=",", na_rep="–")


def per_class_table(runs: Sequence[Run]) -> pd.DataFrame:
    """IoU and F1 of every class at each run's best checkpoint (NaN: the class occurs in neither the
    validation ground truth nor the prediction)."""
    columns = {}
    for run in runs:
        per_class = run.summary["best"]["per_class"]
        for metric in ("IoU", "F1"):
            values = {name: scores[metric] for name, scores in per_class.items()}
            columns[f"{run.label} {metric}"] = pd.Series(values, dtype=float)
    frame = pd.DataFrame(columns)
    frame.index.name = "class"
    return frame


def widths_table() -> pd.DataFrame:
    """Table 3: the BiSeNetV2 builds' widths (from the registry) and the parameter counts they give."""
    from facelib.models import MODELS, build_model, fits_cap, parameter_breakdown
    from facelib.models.bisenetv2 import BiSeNetV2

    defaults = {n: p.default for n, p in inspect.signature(BiSeNetV2.__init__).parameters.items()}
    rows = []
    for name, spec in MODELS.items():
        if not name.startswith("bisenetv2"):
            continue
        widths = {**defaults, **getattr(spec.builder, "keywords", {})}
        counts = parameter_breakdown(build_model(name))
        rows.append(
            {
                "model": name,
                "role": spec.role,
                "detail": "-".join(map(str, widths["detail_channels"])),
                "semantic": "-".join(map(str, widths["semantic_channels"])),
                "aggregation": widths["bga_channels"],
                "decode": widths["decode_channels"],
                "auxiliary": "-".join(map(str, widths["aux_channels"])),
                **{k: counts[k] for k in ("backbone", "decode_head", "aux_heads", "deployed", "total")},
                "fits_cap": fits_cap(counts),
                "fits_cap_deployed": fits_cap(counts, "deployed"),
            }
        )
    return pd.DataFrame(rows).set_index("model")


def under_cap(run: Run) -> bool:
    """Whether the run's model, counting every trained parameter (auxiliary heads too), is under the cap."""
    from facelib.models import build_model, fits_cap, parameter_breakdown

    return fits_cap(parameter_breakdown(build_model(run.config.model, **run.config.model_overrides)))


def best_run(runs: Sequence[Run]) -> Run:
    """The run under the parameter cap whose best checkpoint has the highest validation mF1 (a model over the
    cap, such as the reference's BiSeNetV2-XS by facelib's count, is compared in Table 4 but never chosen)."""
    eligible = [run for run in runs if under_cap(run)]
    if not eligible:
        raise ReportError(f"no run under the parameter cap among {', '.join(run.label for run in runs)}")
    return max(eligible, key=lambda r: r.summary["best"]["mF1"])


def against_reference(run: Run) -> str:
    """A sentence putting a run's best checkpoint beside the reference's best model under the cap."""
    best, ref, full = run.summary["best"], REFERENCE_TABLE4["bisenetv2_xs"], get_profile("full").config("comparison")
    return (
        f"Best under the cap here by mF1: `{run.label}`, mIoU {best['mIoU']:.2f}, honest mF1 {best['mF1']:.2f} "
        f"(reference-style mFscore {best['mFscore_ref']:.2f}) after {run.config.iterations:,} iterations of batch "
        f"{run.config.batch_size} at {run.config.crop_size} px; the reference's best under the cap, BiSeNetV2-XS, "
        f"reached {ref['mIoU']} mIoU and an {ref['mFscore']} mFscore after {full.iterations:,} iterations of batch "
        f"{full.batch_size} at {full.crop_size} px."
    )


def tta_scores(report: Report, run: Run, tta: str, checkpoint: Path | None = None) -> dict[str, float] | None:
    """Validation scores of a run's best checkpoint (or of `checkpoint`, e.g. the run's shipped fp16 weights)
    under a TTA mode: read from the run folder when evaluated before, else evaluated now (when the checkpoint
    is here) and stored there; None when neither."""
    from facelib.infer import evaluate, load_checkpoint, save_evaluation

    if checkpoint is None:
        with contextlib.suppress(ReportError):
            checkpoint = report.checkpoint(run)
    shipped = checkpoint is not None and load_checkpoint(checkpoint).get("weights_dtype") == "float16"
    stored = report.results / "runs" / run.key / f"eval-val-tta_{tta}{'-fp16' if shipped else ''}.json"
    if stored.exists():
        content = json.loads(stored.read_text())
        return {name: content[name] for name in (*HEADLINE, "aAcc")}
    if checkpoint is None:
        return None
    result = evaluate(checkpoint, report.data, "val", tta, out=report.results, device=report.device)
    save_evaluation(result, checkpoint, report.data, "val", report.results)
    return result.summary


def round_frame(frame: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Rounded for display (the CSV keeps full precision)."""
    return frame.apply(lambda c: c.round(digits) if c.dtype.kind == "f" else c)


def confusion_matrix(run: Run) -> np.ndarray:
    return np.asarray(run.summary["best"]["confusion"], dtype=np.int64)
