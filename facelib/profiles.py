"""The report's profiles: how big each experiment of the notebook series is, in one place.

A profile fixes, for every table, the training settings shared by its rows; the rows then vary one thing
(augmentation for Table 1, loss for Table 2, model for Table 4). Every report prints its profile, and every
table states its iterations, so a reduced budget is never mistaken for the reference's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from facelib.config import TrainConfig
from facelib.errors import ConfigError, ReportError

AUGMENTATION_ROWS = ("baseline", "flip_swap", "flip", "geometric", "photometric", "full")
LOSS_ROWS = ("ce", "wce_lovasz", "wce_lovasz_aux08", "wce_dice", "wce_lovasz_dice")
COARSE_LOSS_ROWS = tuple(row if row == "ce" else f"{row}_coarse4" for row in LOSS_ROWS)
MODEL_ROWS = ("fastscnn", "lraspp_mobilenetv3", "bisenetv2_xs", "deeplabv3plus_mobilenetv4")

NOISE_SEED = 1
NOISE_ROWS = {"augmentation": "full", "loss": "ce", "comparison": "lraspp_mobilenetv3"}
"""The row of each table that is trained a second time with seed NOISE_SEED: the difference between the two
runs is the run-to-run noise a comparison between rows must exceed to be called a finding. (Table 1's `full`
row and Table 2's `ce` row are the same run, so one repeat measures both.)"""

REFERENCE_TABLE4 = {
    "fastscnn": {"mIoU": 68.78, "mFscore": None},
    "lraspp_mobilenetv3": {"mIoU": 69.73, "mFscore": None},
    "bisenetv2_xs": {"mIoU": 71.61, "mFscore": 85.6},
}
"""The reference's Table 4 figures (24k iterations of batch 8 at 512x512; its mFscore drops classes without a
true positive, so it compares with our `mFscore_ref`, not with the honest mF1). Its per-row figures for
Tables 1 and 2 were not available to this project; those tables leave the reference column empty."""


CPU_PROXY = {
    "model": "bisenetv2_xs_slimaux",
    "iterations": 5000,
    "val_interval": 500,
    "loss": "wce_lovasz_dice_coarse4",
}
"""The lever proxy on a CPU: `facelib train cpu --model bisenetv2_xs_slimaux` (40k samples at 256 px, about 50 min
on an AVX512-BF16 machine in bf16), the `cpu-long` stage both shipped recipes start from, cut to a fifth of its
samples."""


OHEM_LOSS = {
    "terms": {"ce": 0.5, "lovasz": 0.3, "dice": 1.0},
    "class_weighted": True,
    "coarse_stride": 4,
    "hard_share": 0.25,
}
"""The proxy's loss (`wce_lovasz_dice_coarse4`) with its cross-entropy on only the hardest quarter of the labelled
pixels (online hard-example mining)."""


SMOOTHED_LOSS = {
    "terms": {"ce": 0.5, "lovasz": 0.3, "dice": 1.0},
    "class_weighted": True,
    "coarse_stride": 4,
    "label_smoothing": 0.1,
}
"""The proxy's loss (`wce_lovasz_dice_coarse4`) with its cross-entropy's targets smoothed by 0.1."""


_NATIVE_LEVER = {"cpu_bf16": True, "photo_size": 512}
"""The native-crop proxy (`native-scale crops` below): the levers measured after it start from it."""


LEVER_TEACHER = "models/teacher-384px.pt"
"""The distillation lever's teacher: the model shipped before the native-crop one (BiSeNetV2-XS with slim
auxiliary heads at 384 px, 65.27 mIoU), kept byte for byte. Named under the results root (`TableRows.config`
resolves it) and keyed by its content, so another file there leaves the row to be trained again."""


PSEUDO_LEVER_RUN = "bisenetv2_xs_slimaux-7e51909be6"
"""The pseudo-label lever: the proxy with native-scale crops, trained also on the 100 test photos as the
native-crop model (66.60 mIoU) labels them under multi-scale TTA. Those labels are derived from the dataset
and never committed, so no report can key or train the run again: the lever table reads its committed folder
by key (a profile's `lever_recorded`)."""


@dataclass(frozen=True)
class Profile:
    """Sizes of one report. `common` holds TrainConfig fields shared by every run; each table adds its own."""

    name: str
    purpose: str
    common: Mapping[str, Any]
    augmentation: Mapping[str, Any]  # Table 1: rows vary `augment`
    loss: Mapping[str, Any]  # Table 2: rows vary `loss`
    comparison: Mapping[str, Any]  # Table 4: rows vary `model`
    levers: Mapping[str, Any] = field(default_factory=dict)  # notebook 06's proxy run: every lever row starts from it
    lever_rows: tuple[
        tuple[str, Mapping[str, Any]], ...
    ] = ()  # (label, changes to the proxy run); the first: none; a teacher under the results root
    lever_noise: tuple[tuple[str, str], ...] = ()  # (proxy row, its second seed's row): its spread
    lever_recorded: tuple[tuple[str, str], ...] = ()  # (label, run key): read from the cache, never trained (below)
    models: tuple[str, ...] = MODEL_ROWS
    losses: tuple[str, ...] = LOSS_ROWS  # Table 2's rows
    noise_rows: Mapping[str, str] = field(default_factory=lambda: dict(NOISE_ROWS))
    device: str = "cuda"  # where missing runs are meant to train
    trains_missing: bool = False  # a report trains runs missing from the cache unless told otherwise (smoke only)
    latency_size: int = 512
    latency_repeats: int = 10
    figure_images: int = 8  # images per sample / prediction grid
    notes: tuple[str, ...] = field(default_factory=tuple)

    def config(self, table: str, data: str | None = None, device: str = "auto", **row: Any) -> TrainConfig:
        """The TrainConfig of one row of `table` ("augmentation", "loss", "comparison" or "levers")."""
        if table not in ("augmentation", "loss", "comparison", "levers"):
            raise ConfigError(f"unknown table {table!r}; valid: augmentation, loss, comparison, levers")
        return TrainConfig(**{**self.common, **getattr(self, table), **row, "data": data, "device": device})

    def describe(self) -> str:
        """A Markdown paragraph with every setting, printed at the top of each report."""
        lines = [f"**Profile `{self.name}`**: {self.purpose}", ""]
        lines.append("- shared by every run: " + ", ".join(f"`{k}={v}`" for k, v in self.common.items()))
        for table, label in (("augmentation", "Table 1"), ("loss", "Table 2"), ("comparison", "Table 4")):
            settings = ", ".join(f"`{k}={v}`" for k, v in getattr(self, table).items())
            lines.append(f"- {label} ({table}): {settings}")
        lines.append(f"- Table 2 losses: {', '.join(f'`{m}`' for m in self.losses)}")
        lines.append(f"- Table 4 models: {', '.join(f'`{m}`' for m in self.models)}")
        if self.lever_rows:
            settings = ", ".join(f"`{k}={v}`" for k, v in self.levers.items())
            rows = ", ".join(label for label, _ in (*self.lever_rows, *self.lever_recorded))
            lines.append(f"- levers (notebook 06): the proxy run {settings}; rows: {rows}")
        lines.append(f"- CPU latency at {self.latency_size}x{self.latency_size}, median of {self.latency_repeats}")
        repeated = ", ".join(f"{table} `{row}`" for table, row in self.noise_rows.items())
        lines.append(f"- run-to-run noise: one row per table trained again with seed {NOISE_SEED} ({repeated})")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile(
            name="smoke",
            purpose="checks that the whole series runs (CPU, a few minutes); its numbers say nothing about the "
            "models, only that every step works.",
            common={
                "crop_size": 128,
                "batch_size": 4,
                "lr": 5e-3,
                "warmup_fraction": 0.1,
                "val_fraction": 0.05,
                "workers": 2,
            },
            augmentation={"iterations": 32, "val_interval": 8, "loss": "ce"},
            loss={"iterations": 32, "val_interval": 8, "augment": "full"},
            comparison={"iterations": 32, "val_interval": 8},
            levers={"iterations": 32, "val_interval": 8},
            lever_rows=(
                ("baseline", {}),
                ("moving average 0.9, seed 1", {"seed": 1, "ema_decay": 0.9}),
                ("resize x0.5-2.0", {"augment": "full_wide"}),
                ("random erasing", {"augment": "full_erase"}),
                ("native-scale crops", {"photo_size": 256}),
                ("native-scale crops, seed 1", {"photo_size": 256, "seed": 1}),
                ("audit-corrected labels", {"corrected_labels": True}),
            ),
            lever_noise=(
                ("baseline", "moving average 0.9, seed 1: trained weights"),
                ("native-scale crops", "native-scale crops, seed 1"),
            ),
            device="cpu",
            trains_missing=True,
            latency_repeats=3,
            figure_images=4,
            notes=(
                "5% of the pairs are held out for validation (50 of the real data's 1000) so that validating "
                "at the masks' full resolution stays cheap; four validation points per run, so the tables' "
                "`overfitting` column (which compares the final four with the four before) reads n/a;",
            ),
        ),
        Profile(
            name="cpu",
            purpose="the real data, trained on a 2-core CPU with the fast CPU recipe (256 px training, the "
            "`_coarse4` losses; docs/guide.md: Training on a CPU), scored on the 200 validation masks at 512 px. Table 4: "
            "40k training samples per model (the reference: 192k at 512 px); Tables 1-2: 12k per row.",
            common={"crop_size": 256, "batch_size": 8, "lr": 2e-3},
            augmentation={"iterations": 1500, "val_interval": 150, "loss": "ce"},
            loss={"iterations": 1500, "val_interval": 150, "augment": "full"},
            comparison={"iterations": 5000, "val_interval": 500, "loss": "wce_lovasz_dice_coarse4"},
            losses=COARSE_LOSS_ROWS,
            levers=CPU_PROXY,
            lever_rows=(
                ("baseline", {"cpu_bf16": True}),
                ("moving average 0.999, seed 1", {"cpu_bf16": True, "seed": 1, "ema_decay": 0.999}),
                ("resize x0.5-2.0", {"cpu_bf16": True, "augment": "full_wide"}),
                ("random erasing", {"cpu_bf16": True, "augment": "full_erase"}),
                ("native-scale crops: 256 px of the 512 px photos", dict(_NATIVE_LEVER)),
                ("native-scale crops, seed 1", {**_NATIVE_LEVER, "seed": 1}),
                ("audit-corrected labels", {"cpu_bf16": True, "corrected_labels": True}),
                ("distillation from the 384 px model (65.27)", {"cpu_bf16": True, "teacher": LEVER_TEACHER}),
                (
                    "repeat factors 0.3 (photos with rare classes drawn more often)",
                    {"cpu_bf16": True, "repeat_threshold": 0.3},
                ),
                ("hard-pixel mining: cross-entropy on the hardest quarter", {"cpu_bf16": True, "loss": OHEM_LOSS}),
                ("label smoothing 0.1", {"cpu_bf16": True, "loss": SMOOTHED_LOSS}),
                ("native-scale crops, weight decay 0.05", {**_NATIVE_LEVER, "weight_decay": 0.05}),
                ("native-scale crops, resize x0.75-1.5", {**_NATIVE_LEVER, "augment": "full_mid"}),
                ("native-scale crops, resize x0.5-1.2", {**_NATIVE_LEVER, "augment": "full_down"}),
                ("photometric distortion at full strength", {"cpu_bf16": True, "augment": "full_color"}),
            ),
            lever_noise=(
                ("baseline", "moving average 0.999, seed 1: trained weights"),
                ("native-scale crops: 256 px of the 512 px photos", "native-scale crops, seed 1"),
            ),
            lever_recorded=(("native-scale crops and pseudo-labels from the native-crop model", PSEUDO_LEVER_RUN),),
            device="cpu",
            notes=(
                "Table 4's settings are `facelib train cpu`'s; Table 2's losses are the reference's rows with "
                "everything but the decode head's cross-entropy on every 4th pixel (`_coarse4`), which cost "
                "2-4x less on a CPU and scored like the exact loss (docs/experiments.md);",
                "time on the 2-core machine that trains them, measured in these runs: Table 1 about 7 min a row "
                "(27-30 images/s) and its seed-1 repeat; Table 2 7-10 min for each of its 4 coarse rows (21-29 "
                "images/s; its CE row is Table 1's `full` run); Table 4 22 min for LR-ASPP (31 images/s) and 21 min "
                "for its seed-1 repeat, about 34 min for Fast-SCNN (18.5-23 images/s while it had the cores alone), "
                "46 min for DeepLabV3+ (14.7 images/s) and 66 min for BiSeNetV2-XS (10.1 images/s, in three "
                "parts). In all about 4.5 hours of the 2-core machine; a run over an hour trains in "
                "parts (`facelib runs --time-limit`), resuming from its checkpoint;",
            ),
        ),
        Profile(
            name="gpu-short",
            purpose="the real data at 512x512, sized for short GPU leases: Table 4 in one command of about 8 "
            "minutes on one H100, Tables 1-2 in another. Far fewer iterations than the reference: compare rows "
            "with each other, and with the reference only with that in mind.",
            common={"crop_size": 512, "batch_size": 16, "lr": 2e-3, "workers": 12},
            augmentation={"iterations": 320, "val_interval": 40, "loss": "ce"},
            loss={"iterations": 320, "val_interval": 40, "augment": "full"},
            comparison={"iterations": 600, "val_interval": 100},
            notes=(
                "sized from steps measured on one H100 (a probe script since folded into `facelib bench`, "
                "results/device-checks/issue5_gpu_short_sizing.csv; batch 16 at 512: Fast-SCNN 64 ms with CE, "
                "176 ms with the three-term loss; BiSeNetV2-XS 285 ms; LR-ASPP 79 ms; DeepLabV3+ 82 ms): about "
                "440 s for Table 4 and 450 s for Tables 1-2 (Table 2's CE row is Table 1's `full` run), plus start-up;",
                "the speed issue may make steps cheaper and the profile bigger;",
            ),
        ),
        Profile(
            name="full",
            purpose="the reference's settings: batch 8 at 512x512, Table 4 at 24k iterations, validation every "
            "500. Meant for a GPU (days on a CPU).",
            common={"crop_size": 512, "batch_size": 8, "workers": 8},
            augmentation={"iterations": 40_000, "val_interval": 500, "loss": "ce"},
            loss={"iterations": 80_000, "val_interval": 500, "augment": "full"},
            comparison={"iterations": 24_000, "val_interval": 500},
            notes=(
                "the reference ran its ablations at 40k-80k iterations without saying which table took which; "
                "this profile gives Table 1 40k and Table 2 80k;",
            ),
        ),
    ]
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ConfigError(f"unknown report profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


TABLES = {
    "augmentation": ("augment", AUGMENTATION_ROWS, {"model": "fastscnn"}),
    "loss": ("loss", LOSS_ROWS, {"model": "fastscnn"}),  # the profile's `losses` (LOSS_ROWS or their twins)
    "comparison": ("model", None, {}),  # None: the profile's models
}
"""Each table's rows: the TrainConfig field they vary, its values, and what every row fixes (Tables 1 and 2
are Fast-SCNN ablations, as in the reference). The notebooks and `facelib runs` both read this."""


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
