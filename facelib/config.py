"""The settings a user chooses, in a module that imports no model or data code (so the command line builds
its flags from it and `facelib --help` stays fast): the training config, its presets, and the inference
options (test-time augmentation modes, backends).

`TrainConfig` is one flat, typed config (nanoGPT's style): logged, saved into every checkpoint, and hashed
into the run key (`facelib.run.run_key`) except for the fields that say where a run happens. The command
line's training flags are generated from its fields, with the comment beside each field as the flag's help.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from facelib.errors import ConfigError

TTA_MODES = ("none", "flip", "multiscale")
BACKENDS = ("auto", "torch", "onnx")  # auto: by the file's suffix (.onnx: ONNX Runtime, else PyTorch)


RUNTIME_FIELDS = ("data", "device", "workers", "compile", "channels_last", "threads", "keep_memory")
"""How and where a run happens, not what it computes: left out of the run key."""
KEYED_WHEN_SET = {
    "cpu_bf16": False,
    "init_from": None,
    "repeat_threshold": 0.0,
    "ema_decay": 0.0,
    "photo_size": 0,
    "teacher": None,
    "distill_weight": 1.0,
    "teacher_tta": "none",
    "pseudo_labels": None,
}
"""Fields added after runs were cached: a run key counts them only when they differ from this default, so the
keys (and cached results) of every run that predates them stay valid."""


SCHEDULES = ("cosine", "poly", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes (plus `data`, `device`, `workers`: where it runs)."""

    model: str = "fastscnn"  # a registered model (`facelib models` lists them)
    model_overrides: Mapping[str, Any] = field(default_factory=dict)  # model builder keyword arguments, as JSON
    loss: str | Mapping[str, Any] = "wce_lovasz_dice"  # a preset of facelib.losses, or a dict
    class_weights: str = "inv_sqrt_freq"  # column of facelib.stats.class_weights, for class-weighted losses
    augment: str = "full"  # a preset of facelib.augment
    iterations: int = 24_000  # training steps (one batch each)
    batch_size: int = 8  # global: split across processes under torchrun
    lr: float = 1e-3  # AdamW peak learning rate
    weight_decay: float = 1e-2  # AdamW weight decay
    warmup_fraction: float = 0.05  # linear warm-up over this share of the iterations
    schedule: str = "cosine"  # after warm-up: "cosine" to 0, "poly" (power 0.9, as mmseg) to 0, or "constant"
    val_interval: int = 500  # validate (and checkpoint) every this many iterations
    seed: int = 0  # initialisation, batch order and augmentation
    crop_size: int = 512  # training crop and evaluation input; data of another size is resized to it first
    amp: bool = True  # bf16 autocast on CUDA
    cpu_bf16: bool = False  # bf16 autocast on a CPU too: faster where it has AVX512-BF16/AMX, a different computation
    corrected_labels: bool = False  # train on the audit's corrected left/right labels (validation: original)
    init_from: str | None = None  # start from this inference checkpoint's weights (fine-tuning); keyed by content
    repeat_threshold: float = 0.0  # repeat-factor sampling: photos with a class in a share f < this of the training photos are drawn sqrt(this/f) times as often; 0: uniform
    ema_decay: float = 0.0  # validate, keep and ship an exponential moving average of the weights with this decay (e.g. 0.999); 0: the trained weights
    photo_size: int = 0  # photos are resized to this side, cropped to crop_size for training and seen whole by validation and inference (512: crops at the native scale); 0: crop_size
    teacher: str | None = (
        None  # distil from this inference checkpoint (any model and size): its class probabilities on each training crop, seen at its own input scale, join the loss; keyed by content
    )
    distill_weight: float = (
        1.0  # weight of the distillation term (KL divergence from the teacher's probabilities, on the loss's grid)
    )
    teacher_tta: str = "none"  # the teacher's test-time augmentation on each crop: "flip" averages its probabilities with those of the mirrored crop, "multiscale" adds 0.75x and 1.25x
    pseudo_labels: str | None = (
        None  # a folder of label PNGs for the dataset's unannotated test photos (as facelib predict writes them), trained on beside the training pairs; keyed by content
    )

    @property
    def input_size(self) -> int:
        """The side of the whole photo the model sees in validation and inference."""
        return self.photo_size or self.crop_size

    split_seed: int = 0  # the train/val split
    val_fraction: float = 0.2  # share of the annotated pairs held out for validation
    data: str | None = None  # dataset root; None: $FACELIB_DATA, else the synthetic faces
    device: str = "auto"  # "auto": CUDA when available, else CPU
    workers: int | None = None  # DataLoader worker processes per training process; None: 0 on a CPU, 4 on CUDA
    compile: bool = False  # torch.compile the training step's model (same computation; slower on CPUs)
    channels_last: bool = True  # channels-last layout for the model and its inputs (faster convolutions)
    threads: int = 0  # CPU intra-op threads for this process; 0: torch's default (one per core)
    keep_memory: bool = True  # CPU, glibc: keep freed memory in the process instead of returning it each step

    def __post_init__(self) -> None:
        if self.data is not None and not isinstance(self.data, str):
            object.__setattr__(self, "data", str(self.data))  # a Path: stored as text, like every field
        # lazy: the registries import torch, and this module must not (the CLI builds its flags from it)
        from facelib.augment import AUGMENT_PRESETS, CROPPING_PRESETS
        from facelib.losses import loss_config
        from facelib.models import model_spec

        model_spec(self.model)
        loss_config(self.loss)
        if self.augment not in AUGMENT_PRESETS:
            raise ConfigError(f"unknown augmentation preset {self.augment!r}; valid: {', '.join(AUGMENT_PRESETS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.class_weights not in ("inv_sqrt_freq", "median_freq"):
            raise ConfigError(f"unknown class_weights {self.class_weights!r}; valid: inv_sqrt_freq, median_freq")
        for name in ("iterations", "batch_size", "val_interval", "crop_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.crop_size % 32 or self.photo_size % 32:
            raise ConfigError(
                f"crop_size and photo_size must each be a multiple of 32 (the models' stride), got {self.crop_size}, "
                f"{self.photo_size}"
            )
        if self.photo_size and (self.photo_size < self.crop_size or self.augment not in CROPPING_PRESETS):
            raise ConfigError(
                f"photo_size {self.photo_size} needs crop_size <= photo_size and an augmentation that crops "
                f"({', '.join(CROPPING_PRESETS)}); got crop_size {self.crop_size}, augment {self.augment!r}"
            )
        if not 0 <= self.repeat_threshold <= 1:
            raise ConfigError(f"repeat_threshold must be in [0, 1], got {self.repeat_threshold}")
        if self.distill_weight < 0 or (self.distill_weight != 1.0 and self.teacher is None):
            raise ConfigError(f"distill_weight must be >= 0 and needs a teacher, got {self.distill_weight}")
        if self.teacher_tta not in TTA_MODES or (self.teacher_tta != "none" and self.teacher is None):
            raise ConfigError(
                f"teacher_tta must be one of {', '.join(TTA_MODES)} and needs a teacher, got {self.teacher_tta!r}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.lr <= 0 or self.weight_decay < 0 or (self.workers or 0) < 0 or self.threads < 0:
            raise ConfigError("lr must be > 0, weight_decay, workers and threads >= 0")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, as logged and stored in every checkpoint."""
        values = dataclasses.asdict(self)
        values["model_overrides"] = dict(self.model_overrides)
        values["loss"] = self.loss if isinstance(self.loss, str) else json.loads(json.dumps(self.loss))
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {},  # the reference's Table 4 recipe: 24k iterations, batch 8, 512 crops, full augmentation
    "cpu": {  # the recipe's CPU equivalent: 40k samples at 256 px with the coarse loss (docs/guide.md: Training on a CPU)
        "crop_size": 256,
        "loss": "wce_lovasz_dice_coarse4",
        "lr": 2e-3,
        "iterations": 5000,
        "val_interval": 500,
    },
    "cpu-long": {  # the cpu recipe for the reference's own sample count: 24k iterations of batch 8 = 192k samples
        "crop_size": 256,
        "loss": "wce_lovasz_dice_coarse4",
        "lr": 2e-3,
        "iterations": 24000,
        "val_interval": 1000,
    },
    "cpu-quick": {
        "crop_size": 128,
        "iterations": 300,
        "val_interval": 100,
        "batch_size": 8,
        "loss": "ce",
    },
}
"""Named starting points for `facelib train PRESET`; flags override their fields."""


STAGE_BEFORE = "stage-before"
"""A recipe stage's `pseudo_labels` value: the unannotated test photos labelled by the best checkpoint of the
stage before, under multi-scale TTA (what `facelib predict --tta multiscale` writes), kept beside that checkpoint;
as its `teacher`: that checkpoint itself."""

_SLIM, _FAST = {"model": "bisenetv2_xs_slimaux"}, {"model": "bisenetv2_fast"}
_NATIVE = {**_SLIM, "cpu_bf16": True, "photo_size": 512}  # crops of the photos at the masks' own 512 px
RECIPES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "cpu-shipped": (  # the 384 px model shipped before: 192k samples at 256 px, then 320, 384 and 384 px (repeat factors)
        ("cpu-long", {**_SLIM, "cpu_bf16": True}),
        ("cpu-long", {**_SLIM, "crop_size": 320, "lr": 5e-4, "iterations": 2000, "val_interval": 400}),
        ("cpu-long", {**_SLIM, "crop_size": 384, "lr": 5e-4, "iterations": 1200, "val_interval": 300}),
        (
            "cpu-long",
            {**_SLIM, "crop_size": 384, "lr": 5e-4, "iterations": 1200, "val_interval": 300, "repeat_threshold": 0.3},
        ),
    ),
    "cpu-native": (  # 192k samples as 256 px crops of the 512 px photos (stages after it gained nothing: experiments.md)
        ("cpu-long", _NATIVE),
    ),
    "cpu-fast": (  # the fast model: bisenetv2_fast, the cpu preset's 40k samples at 256 px, then 64k more at lr 1e-3
        ("cpu", {**_FAST, "cpu_bf16": True}),
        ("cpu", {**_FAST, "cpu_bf16": True, "lr": 1e-3, "iterations": 8000, "val_interval": 800}),
    ),
}
"""Multi-stage recipes for `facelib train RECIPE`: each stage a training preset and its changes; every stage
after the first starts from the best checkpoint of the stage before it (`init_from`); `STAGE_BEFORE` as a stage's
`pseudo_labels` trains it on that checkpoint's labels of the test photos too, as its `teacher` distils from it."""

ADJUSTED_RECIPES = ("cpu-native",)
"""Recipes whose last step is the logit adjustment of the last stage's best checkpoint (`facelib adjust`: the
class weights' bias towards rare classes undone as far as the training photos say), written as adjusted.pt beside
it; `facelib ship --best` ships that file when it is there."""


def photos_note(config: Mapping[str, Any]) -> str:
    """ " crops of N px photos" for a run config (as saved) that crops photos of another size, else ""."""
    return f" crops of {config['photo_size']} px photos" if config.get("photo_size") else ""


def preset_config(name: str, **changes: Any) -> TrainConfig:
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown training preset {name!r}; valid presets: {', '.join(TRAIN_PRESETS)}")
    return TrainConfig(**{**TRAIN_PRESETS[name], **changes})


# --- command-line flags from the config ------------------------------------------------------------------

SHORT_FLAGS = {"crop_size": "--crop", "batch_size": "--batch"}
"""Shorter spellings accepted beside the generated flags (`facelib bench train --crop 256 --batch 8`)."""


def field_help() -> dict[str, str]:
    """Each TrainConfig field's help text: the comment written beside it in this file."""
    source = inspect.getsource(TrainConfig)
    one_line = re.findall(r"^    (\w+): [^\n=]+= [^\n#]+#\s*(.+)$", source, flags=re.M)
    wrapped = re.findall(r"^    (\w+): [^\n=]+= \(\n\s+[^\n#]+#\s*(.+)$", source, flags=re.M)  # "= (", value  # text
    return dict(one_line + wrapped)


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (`--crop-size` for crop_size; booleans take --x / --no-x), each
    defaulting to None, so only what the user typed overrides the preset or the defaults."""
    helps = field_help()
    for item in dataclasses.fields(TrainConfig):
        if item.name in skip:
            continue
        flags = [f"--{item.name.replace('_', '-')}"] + ([SHORT_FLAGS[item.name]] if item.name in SHORT_FLAGS else [])
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        text = helps.get(item.name, "")
        if isinstance(default, bool):
            parser.add_argument(
                *flags,
                dest=item.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{text} (default: {'on' if default else 'off'})",
            )
        elif item.name in ("model_overrides", "loss"):
            parser.add_argument(
                *flags,
                dest=item.name,
                default=None,
                metavar="NAME_OR_JSON" if item.name == "loss" else "JSON",
                help=f"{text} (default: {json.dumps(default)})",
            )
        else:
            annotation = str(item.type)  # a string (postponed annotations): "int", "int | None", ...
            kind = float if annotation.startswith("float") else int if annotation.startswith("int") else str
            choices = SCHEDULES if item.name == "schedule" else None
            parser.add_argument(
                *flags, dest=item.name, type=kind, default=None, choices=choices, help=f"{text} (default: {default})"
            )


def config_from_flags(args: argparse.Namespace, preset: str | None = None) -> TrainConfig:
    """The TrainConfig the flags describe: the preset's (or the defaults), overridden by every flag given."""
    changes: dict[str, Any] = {}
    for item in dataclasses.fields(TrainConfig):
        value = getattr(args, item.name, None)
        if value is None:
            continue
        if item.name in ("model_overrides", "loss") and isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ConfigError(f"--{item.name.replace('_', '-')} {value!r} is not valid JSON ({error})") from error
        elif item.name == "model_overrides":
            raise ConfigError(
                f"--model-overrides takes a JSON object such as '{{\"decoder_channels\": 64}}', got {value!r}"
            )
        changes[item.name] = value
    return preset_config(preset, **changes) if preset else TrainConfig(**changes)
