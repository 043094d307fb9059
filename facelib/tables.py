"""The report's tables and the sentences written about them: Tables 1-2 (ablations, averaged over the final
validations), Table 3 (BiSeNetV2 widths), Table 4 (models: accuracy, size, cost), per-class scores; the
run-to-run noise of a table and the comparisons stated only beyond it; how a table is shown to a reader.

Tables 1-2 average the final four validation points of each run, as the reference did; Table 4 takes each
run's best checkpoint (by validation mF1), as the reference did.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from facelib.errors import ReportError
from facelib.models import MODELS, build_model, fits_cap, parameter_breakdown
from facelib.models.bisenetv2 import BiSeNetV2
from facelib.models.cost import inference_flops
from facelib.profiles import NOISE_SEED, REFERENCE_TABLE4, get_profile
from facelib.runcache import FINAL_POINTS, HEADLINE, Run


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


def findings(
    frame: pd.DataFrame, pairs: Sequence[tuple[str, str]], noise: Noise, metric: str = "mF1", column: str | None = None
) -> str:
    """The table's comparisons and its leader as a Markdown list, each measured against the noise."""
    lines = [compare(frame, a, b, metric, noise, column) for a, b in pairs if a in frame.index and b in frame.index]
    return "\n".join(f"- {line}" for line in [*lines, leader(frame, metric, noise, column)])


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
    runs: Sequence[Run],
    latency: pd.DataFrame,
    tta: dict[str, dict] | None = None,
    speed: pd.DataFrame | None = None,
    chosen: str | None = None,
) -> pd.DataFrame:
    """Table 4: size and cost (from `facelib.models.cost.model_table`), ONNX Runtime latency as a multiple of
    a known model's measured in the same call (`facelib.bench.anchor_latency`, when given), training cost, and
    the scores of each run's best checkpoint; flip-TTA scores where they were evaluated; the reference's. The
    `chosen` row (`best_run`'s label) gets the role "chosen", which the report's headline shows."""
    rows = []
    for run in runs:
        best, model = run.summary["best"], run.config.model
        size = latency.loc[model]
        flip = (tta or {}).get(run.key) or {}
        reference = REFERENCE_TABLE4.get(model, {})
        rows.append(
            {
                "model": model,
                "role": "chosen" if run.label == chosen else size["role"],
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
                "crop": run.config.crop_size,
                "samples": run.samples,
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


ACCURACY_COLUMNS = (
    "iterations",
    "batch",
    "best at",
    *HEADLINE,
    "aAcc",
    "mIoU flip-TTA",
    "mF1 flip-TTA",
    "reference mIoU",
    "reference mFscore",
)
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

    shown = frame.rename(columns=lambda column: header(column).replace("_", " "))  # headers may wrap: narrower
    return shown.style.format(precision=2, thousands=",", na_rep="–")


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
    return fits_cap(parameter_breakdown(build_model(run.config.model, **run.config.model_overrides)))


def best_run(runs: Sequence[Run], noise: Noise | None = None) -> Run:
    """The run under the parameter cap whose best checkpoint has the highest validation mF1 (a model over the
    cap, such as the reference's BiSeNetV2-XS by facelib's count, is compared in Table 4 but never chosen).

    With the table's measured `noise`, runs whose mF1 lies within its seed spread of the top are tied, and the
    tied run whose model costs the fewest inference FLOPs at its own input side (its training crop) wins: a
    faster model is not given up for a lead that a second seed could undo."""
    eligible = [run for run in runs if under_cap(run)]
    if not eligible:
        raise ReportError(f"no run under the parameter cap among {', '.join(run.label for run in runs)}")
    top = max(eligible, key=_best_mf1)
    tied = [run for run in eligible if noise is not None and _best_mf1(top) - _best_mf1(run) <= noise.spread["mF1"]]
    if len(tied) < 2:
        return top
    return min(tied, key=lambda run: (_input_flops(run), -_best_mf1(run)))


def _input_flops(run: Run) -> int:
    """What one photo costs the run's model at the side it was trained and is shipped at."""
    return inference_flops(build_model(run.config.model, **run.config.model_overrides), run.config.input_size)


def choice(runs: Sequence[Run], noise: Noise | None) -> str:
    """How `best_run` chose among these runs, in a sentence (for the model card and the report)."""
    winner = best_run(runs, noise)
    top = max((run for run in runs if under_cap(run)), key=_best_mf1)
    if winner is top:
        return f"`{winner.label}`: the highest validation mF1 under the parameter cap ({_best_mf1(winner):.2f})"
    return (
        f"`{winner.label}` ({_best_mf1(winner):.2f} mF1): `{top.label}` scored {_best_mf1(top) - _best_mf1(winner):.2f} "
        f"mF1 more, within the seed spread ({noise.spread['mF1']:.2f}), so the cheaper run (fewer inference "
        "FLOPs at its input side) was chosen"
    )


def _best_mf1(run: Run) -> float:
    return float(run.summary["best"]["mF1"])


def against_reference(run: Run) -> str:
    """A sentence putting a run's best checkpoint beside the reference's best model under the cap."""
    best, ref, full = run.summary["best"], REFERENCE_TABLE4["bisenetv2_xs"], get_profile("full").config("comparison")
    return (
        f"The chosen model here, `{run.label}`: mIoU {best['mIoU']:.2f}, honest mF1 {best['mF1']:.2f} "
        f"(reference-style mFscore {best['mFscore_ref']:.2f}) after {run.config.iterations:,} iterations of batch "
        f"{run.config.batch_size} at {run.config.crop_size} px; the reference's best under the cap, BiSeNetV2-XS, "
        f"reached {ref['mIoU']} mIoU and an {ref['mFscore']} mFscore after {full.iterations:,} iterations of batch "
        f"{full.batch_size} at {full.crop_size} px."
    )


def round_frame(frame: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Rounded for display (the CSV keeps full precision)."""
    return frame.apply(lambda c: c.round(digits) if c.dtype.kind == "f" else c)


def confusion_matrix(run: Run) -> np.ndarray:
    return np.asarray(run.summary["best"]["confusion"], dtype=np.int64)
