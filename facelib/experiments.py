"""What the report's notebooks call: a `Report` (profile, data, output folders) that trains or finds each
table row's run in the run cache (the rows of every table are defined here, in `TABLES`) and writes tables
and figures with their provenance. The table builders are `facelib.tables`."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facelib.checkpoint import load_checkpoint, resolve_device
from facelib.config import RUNTIME_FIELDS, TrainConfig
from facelib.data import discover, keep_decoded, load_or_make_split, read_image
from facelib.errors import ReportError
from facelib.infer import evaluate, save_evaluation
from facelib.labels import read_mask
from facelib.outputs import provenance, save_figure, shown_path, write_table
from facelib.profiles import LOSS_ROWS, NOISE_SEED, TABLES, chosen_rows, get_profile, table_rows
from facelib.run import identify, run_key
from facelib.runcache import expected_cost, finished_runs, finished_summary, pack_runs, run_folder
from facelib.tables import AUGMENTATION_COMPARISONS, HEADLINE, LOSS_COMPARISONS, Noise, Run, best_run, choice, styled
from facelib.train import train


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
    laptop never starts hours of training by accident. `train_missing`: train the runs missing from the cache
    (and a finished run's lost checkpoint, when a page needs its weights); None: as the profile says
    (`Profile.trains_missing`: the smoke profile trains, the others never do unless asked). A finished run found
    in the cache is used as it is, checkpoint or not; retraining it for its checkpoint writes only the checkpoint,
    never its committed run folder.
    """

    def __init__(
        self,
        profile: str,
        data: str | None = None,
        device: str = "auto",
        results: str | Path = "results",
        checkpoints: str | Path = "checkpoints",
        notebook: str = "",
        train_missing: bool | None = None,
        time_limit_s: float | None = None,
    ) -> None:
        keep_decoded(True)
        self.profile = get_profile(profile)
        self.data, self.device, self.notebook = data, device, notebook
        self.train_missing = self.profile.trains_missing if train_missing is None else bool(train_missing)
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

        `want_checkpoint`: a cached run whose best.pt is not here is trained again for it where this report may
        train (into a scratch folder: the committed run folder stays as it is); elsewhere it is used without one,
        and the page says so."""
        config = self.config(table, **row)
        key = run_key(config, identify(config, self.results).fingerprint)
        cached = finished_summary(self.results, key) is not None
        retrain = bool(cached) and want_checkpoint and self.refusal() is None and not self._has_weights(key)
        if not cached and self.refusal():
            raise ReportError(f"run {key} ({label}) is not in the run cache {self.results / 'runs'}: {self.refusal()}")
        if cached and want_checkpoint and not retrain and not self._has_weights(key):
            print(
                f"{label}: run {key} is in the run cache without its checkpoint: its stored scores are shown; "
                "scores that need its weights and were never stored are left out (train_missing=True retrains it)"
            )
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left <= 0 and not (cached and not retrain):
            raise TimeLimitReached(f"time limit reached before run {key} ({label}) started")
        if not cached or retrain:
            print(f"{label}: training run {key}: {expected_cost(config, self.results, key)}")
        summary = self._train(config, retrain, left)
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

    def _train(self, config: TrainConfig, retrain: bool, left: float | None) -> dict[str, Any]:
        """Train (or find) one run; a retrain for a lost checkpoint writes its run folder into a scratch results
        folder, so the committed one keeps its records (timings, commit, date) and only the checkpoint is new."""
        if not retrain:
            return train(config, self.results, self.checkpoints, progress=False, time_limit_s=left)
        with tempfile.TemporaryDirectory(prefix="facelib-retrain-") as scratch:
            shutil.copytree(self.results / "splits", Path(scratch) / "splits")
            fresh = train(config, scratch, self.checkpoints, progress=False, time_limit_s=left)
        stored, run_dir = finished_summary(self.results, fresh["key"]), str(run_folder(self.results, fresh["key"]))
        return {
            **stored,
            "finished": fresh["finished"],
            "iterations_done": fresh["iterations_done"],
            "run_dir": run_dir,
        }

    def refusal(self) -> str | None:
        """Why this report may not train a missing run here, or None when it may."""
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
        for path in sorted((self.results / "models").glob("*.pt")):
            if load_checkpoint(path).get("run_key") == key:
                return path
        return None

    def inference_model(self) -> tuple[Run, Path, str]:
        """The model notebook 05 shows, as (its run, the file, a sentence): the shipped default model
        (RESULTS/models/facelib-best.pt, what `facelib predict` uses) when one of this profile's Table 4 runs
        made it, or another run trained on this profile's data and split (a longer run of Table 4's choice, say);
        else the best checkpoint of the Table 4 run `best_run` chooses."""
        shipped = self.results / "models" / "facelib-best.pt"
        if shipped.exists():
            key, field = load_checkpoint(shipped).get("run_key"), TABLES["comparison"][0]
            for label in table_rows(self.profile.name, "comparison"):
                config = self.config("comparison", **{field: label})
                if run_key(config, identify(config, self.results).fingerprint) == key:
                    run = self.run("comparison", label, **{field: label})
                    return run, shipped, (
                        f"Model: the shipped `{shipped.name}` (what `facelib predict` uses without `--checkpoint`): "
                        f"`{label}`, run `{key}`, fp16 weights of its best checkpoint."
                    )  # fmt: skip
            other = self._run_on_this_data(key)
            if other is not None:
                config = other.config
                return other, shipped, (
                    f"Model: the shipped `{shipped.name}` (what `facelib predict` uses without `--checkpoint`): "
                    f"`{config.model}`, run `{key}`, trained on this profile's data and split but not one of its "
                    f"Table 4 rows ({config.iterations:,} iterations of batch {config.batch_size} at "
                    f"{config.crop_size} px, loss `{config.loss}`), fp16 weights of its best checkpoint."
                )  # fmt: skip
        runs = self.table_rows("comparison", want_checkpoint=True)
        noise = self.measured_noise("comparison", runs)
        winner = best_run(runs, noise)
        return winner, self.checkpoint(winner), f"Model: {choice(runs, noise)}; run `{winner.key}`."

    def _run_on_this_data(self, key: str | None) -> Run | None:
        """The finished run `key` from the run cache when it trained on this profile's data and split (so the
        validation photos notebook 05 shows were never its training photos), else None."""
        summary = finished_summary(self.results, key)
        if summary is None:
            return None
        config = TrainConfig.from_dict(summary["config"])
        mine = identify(self.config("comparison", model=config.model), self.results).fingerprint
        if summary.get("data", {}).get("fingerprint") != mine:
            return None
        return Run(config.model, config, summary, pd.read_csv(run_folder(self.results, str(key)) / "metrics.csv"))

    def longer_runs(self) -> list[Run]:
        """Finished runs on this profile's data and split that follow Table 4's recipe with more iterations (any
        model, CPU bf16 or not), each followed by the runs fine-tuned from it (`FINE_TUNE_FIELDS` may differ too):
        what more samples buy, shown beside Table 4 by notebook 04. Found, never trained; labels say samples."""
        field, _, fixed = TABLES["comparison"]
        base = self.config("comparison", **{field: table_rows(self.profile.name, "comparison")[0]}, **fixed)
        mine, found, tunes = identify(base, self.results).fingerprint, [], {}
        for folder, summary in finished_runs(self.results):
            config = TrainConfig.from_dict(summary["config"])
            if summary.get("data", {}).get("fingerprint") != mine:
                continue
            differs = {k for k, v in config.to_dict().items() if v != base.to_dict()[k]} - set(RUNTIME_FIELDS)
            metrics, samples = pd.read_csv(folder / "metrics.csv"), config.iterations * config.batch_size
            if config.iterations > base.iterations and differs <= set(LONGER_RUN_FIELDS):
                label = f"{config.model}, {samples:,} samples" + (", CPU bf16" if config.cpu_bf16 else "")
                found.append(Run(label, config, summary, metrics))
            elif config.init_from and differs <= {*LONGER_RUN_FIELDS, *FINE_TUNE_FIELDS}:
                parent = str(json.loads((folder / "config.json").read_text()).get("init_run_key"))
                label = f"{config.model}, +{samples:,} samples at {config.crop_size} px from {parent.split('-')[-1]}"
                label += f", repeat factors {config.repeat_threshold:g}" * bool(config.repeat_threshold)
                tunes.setdefault(parent, []).append(Run(label, config, summary, metrics))

        def family(run: Run) -> list[Run]:  # a run, then its fine-tunes (counting its samples), and so on
            return [run, *(later for tune in tunes.get(run.key, []) for later in family(tune.after(run)))]

        return [member for run in found for member in family(run)]

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
        fraction = self.profile.common.get("val_fraction", TrainConfig.val_fraction)
        return load_or_make_split(self.dataset, out=self.results, val_fraction=fraction)[0]

    def pairs(self, stems: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Decoded photos and masks of the given stems (for figures)."""
        samples = self.dataset.by_stem(stems)
        return [read_image(s.image) for s in samples], [read_mask(s.mask) for s in samples]

    def masks(self, stems: Sequence[str]) -> list[np.ndarray]:
        """Decoded masks of the given stems (for statistics that need no photo)."""
        return [read_mask(sample.mask) for sample in self.dataset.by_stem(stems)]

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

    def measured_noise(self, table: str, runs: Sequence[Run]) -> Noise | None:
        """`noise`, or None when its repeat run is missing and this report may not train it (choosing a model
        among finished rows then falls back to the highest score)."""
        try:
            return self.noise(table, runs)
        except ReportError:
            return None

    def finished_rows(self, table: str) -> tuple[list[Run], list[str]]:
        """The table's rows whose runs are finished in the run cache (never training), and the labels of the
        rows that are not there yet: for choosing among what exists while the rest still trains."""
        field, _, fixed = TABLES[table]
        found, missing = [], []
        for label in table_rows(self.profile.name, table):
            config = self.config(table, **{field: label}, **fixed)
            key = run_key(config, identify(config, self.results).fingerprint)
            if finished_summary(self.results, key) is not None:
                found.append(self.run(table, label, **{field: label}, **fixed))
            else:
                missing.append(label)
        return found, missing

    # --- outputs ---------------------------------------------------------------------------------------

    def note(self, runs: Sequence[Run] = ()) -> str:
        """The provenance paragraph under a table: profile, data, where the runs were trained, who assembled it."""
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
        note = (explain + "\n\n" if explain else "") + self.note(runs)
        write_table(frame, self.out / "tables" / name, title, note, ".2f")
        return styled(frame)

    def figure(self, figure, name: str, photo: bool = False):
        """Save `figures/NAME.png` (`.jpg` when `photo`: grids of photographs compress 6x better) and return it
        as an image to display (embedded in the notebook's output, so the HTML page stands alone)."""
        from IPython.display import Image

        path = save_figure(figure, self.out / "figures" / f"{name}.{'jpg' if photo else 'png'}", dpi=100)
        return Image(filename=str(path))

    def describe(self) -> str:
        """This page's parameters (the notebook's only parameters block a reader sees); the profile's settings are
        described once, on the report's index page (`facelib.runner.write_index`)."""
        data = f"`{shown_path(self.dataset.root)}` ({self.dataset.name}, {len(self.dataset.samples)} pairs)"
        trains = "yes" if self.train_missing else "no (finished runs from the cache only)"
        return (
            f"**Profile `{self.profile.name}`** (its settings: the report's index page). **Parameters of this page**: "
            f"data {data}; device for missing runs `{self.device}`; run cache `{shown_path(self.results / 'runs')}`; "
            f"trains missing runs: {trains}."
        )


# --- tables --------------------------------------------------------------------------------------------


def tta_scores(report: Report, run: Run, tta: str, checkpoint: Path | None = None) -> dict[str, float] | None:
    """Validation scores of a run's best checkpoint (or of `checkpoint`, e.g. the run's shipped fp16 weights)
    under a TTA mode: read from the run folder when evaluated before, else evaluated now (when the checkpoint
    is here) and stored there; None when neither."""
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


LONGER_RUN_FIELDS = ("model", "iterations", "val_interval", "cpu_bf16")
"""What a longer run of Table 4's recipe may change (`Report.longer_runs`); everything else must match."""
FINE_TUNE_FIELDS = ("crop_size", "lr", "seed", "init_from", "repeat_threshold")  # and for a run fine-tuned from one


# --- training a table's rows in one command ---------------------------------------------------------------


def train_rows(
    report: Report,
    tables: Sequence[str],
    only: Sequence[str] | None = None,
    tta: Sequence[str] = (),
    budget_s: float | None = None,
    pack: Path | None = None,
    weights: bool = False,
) -> tuple[list[dict[str, Any]], int]:
    """`facelib runs`: every row of `tables` (and its noise row) trained or found, one after another in this
    process (data and device stay warm), as (summary lines, rows that failed). A failing row is reported and
    the next one goes on; no row starts after `budget_s`; with `pack`, finished runs are packed after each row
    (`pack_runs`); `report.time_limit_s` stops the run in progress at a checkpoint (it resumes next time)."""
    for table in tables:
        chosen_rows(report.profile.name, table, only)  # every row checked before anything trains
    start, lines, failed, keys = time.monotonic(), [], 0, []
    plan = [(table, label) for table in tables for label in chosen_rows(report.profile.name, table, only)]
    for number, (table, label) in enumerate(plan):
        if budget_s is not None and time.monotonic() - start > budget_s:
            print(f"budget of {budget_s:.0f} s spent; not started: {', '.join(f'{t}/{r}' for t, r in plan[number:])}")
            break
        try:
            for run, line in row_runs(report, table, [label], tta):
                lines.append(line)
                keys.append(run.key)
        except TimeLimitReached:
            raise
        except Exception:  # one failing row must not lose the others: report it and go on
            failed += 1
            print(f"{table}/{label} failed:\n{traceback.format_exc()}")
            continue
        if pack is not None:
            pack_runs(pack, report.results, report.checkpoints, keys, weights)
        print(f"{time.monotonic() - start:.0f} s: {table}/{label} done{', packed' if pack else ''}")
    return lines, failed
