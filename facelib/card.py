"""A shipped model's card (`TARGET.md` beside the weights): one Markdown template (`CARD`) whose sections are
filled from what shipping knows (`CardFacts`): the checkpoint, the run that trained it, the evaluations of the
shipped file, how it was chosen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelib.config import photos_note
from facelib.models import MODELS, PARAMETER_CAP, build_model, parameter_breakdown
from facelib.outputs import provenance, shown_path
from facelib.profiles import REFERENCE_TABLE4, get_profile

CARD = """\
# Model card: `{name}`

Face parsing into the 19 CelebAMask-HQ classes ({classes}).

## Model
- architecture: `{model}`{role}{overrides}
- parameters: {total:,} trained, {deployed:,} run at inference (cap {cap:,}: {under})
- trained from scratch (no pretrained weights); input {side}x{side} {trained_side}RGB normalised with mean {mean}, \
std {std}
- file: weights stored as float16 ({size_mb:.1f} MB), run in float32; the fp16 weights pick the same class as the \
fp32 checkpoint on {agreement:.3f}% of pixels ({photos} training photos)
{speed}- from run `{run_key}`, best checkpoint by validation mF1 at iteration {iteration}
{adjusted}{chosen}
## Training
{start}- recipe: {iterations} iterations of batch {batch} at {crop} px{photos_note}, AdamW lr {lr} ({schedule}, \
warm-up {warmup}), weight decay {weight_decay}, loss `{loss}`, augmentation `{augment}`, seed {seed}{corrected}
{run}

## Validation scores of this file

{scores}

## Use
- `{predict}`{default} writes palette PNG masks; add `--overlay` for overlays, `--tta flip` for flip test-time \
augmentation
{onnx}

## Data and licence
- {licence}

{provenance}
"""

SCORES = """\
`facelib eval` of the shipped file on the {images}-image validation split (percent; mIoU and mF1 count every class \
present in the ground truth or prediction, mFscore_ref drops classes never predicted, as the reference's tool did):

| file | evaluation | mIoU | mF1 | mFscore_ref | per-image F | aAcc |
|---|---|---|---|---|---|---|
{rows}{reference}{at_training}

Evaluation provenance: {provenance}"""

REFERENCE = """

The reference's best under the cap, BiSeNetV2-XS, reached {mIoU} mIoU and an {mFscore} mFscore after \
{iterations:,} iterations of batch {batch}. This file, without TTA: {plain_mIoU:.2f} mIoU, honest mF1 \
{plain_mF1:.2f} (reference-style {plain_ref:.2f}): {verdict} the reference on both."""

AT_TRAINING = """

The fp32 checkpoint at training time{before} (validation during the run, on {device}): mIoU {mIoU:.2f}, mF1 {mF1:.2f}, \
mFscore_ref {mFscore_ref:.2f}."""

SPEED = """\
- speed: {onnx_ms:.1f} ms per photo at {input_px} px in ONNX Runtime float32 ({threads} threads), {vs_anchor:.3f}x \
the time of {anchor} at {anchor_px} px ({anchor_ms:.1f} ms), both measured in one call on {machine}
"""

ROW = "| `{file}` | TTA {tta}, {labels} | {mIoU:.2f} | {mF1:.2f} | {mFscore_ref:.2f} | {per_image_F:.2f} | {aAcc:.2f} |"


@dataclass(frozen=True)
class CardFacts:
    """What a card states: the shipped checkpoint's content and file, how often its fp16 weights agree with the
    fp32 ones, the evaluations of the shipped files (by name), the training run's summary (None: not found),
    the data, how the run was chosen and what it started from, and its speed against the anchor
    (`facelib.latency.checkpoint_speed`) (None: not said)."""

    content: dict[str, Any]
    target: Path
    agreement: float
    evaluations: dict[str, dict[str, Any]]
    summary: dict[str, Any] | None
    data_root: Path
    licence: str
    default_model: Path
    agreement_photos: int
    selection: str | None = None
    start: str | None = None
    speed: dict[str, Any] | None = None
    fast_model: Path | None = None  # the file `facelib predict --model fast` runs


def model_card(facts: CardFacts) -> str:
    """The Markdown model card: what the model is, how it was trained, how it scores, how to use it."""
    content, target = facts.content, facts.target
    is_default = target.resolve() == facts.default_model.resolve()
    is_fast = facts.fast_model is not None and target.resolve() == facts.fast_model.resolve()
    choose = "" if is_default else " --model fast" if is_fast else f" --checkpoint {shown_path(target)}"
    return CARD.format(
        **_model_fields(facts),
        **_training_fields(content["config"], facts.summary, facts.start),
        scores=_scores(facts) if facts.evaluations else "Not evaluated (shipped with --no-eval).",
        predict=f"facelib predict PHOTO...{choose}",
        default=" (this file is the default model)" if is_default else " (the shipped fast model)" if is_fast else "",
        onnx=_onnx_line(target, is_default, is_fast),
        licence=facts.licence,
        provenance=provenance(shown_path(facts.data_root), command=None),
    )


def _model_fields(facts: CardFacts) -> dict[str, Any]:
    content = facts.content
    counts = parameter_breakdown(build_model(content["model"], **content["model_overrides"]))
    role = MODELS[content["model"]].role if content["model"] in MODELS else ""
    overrides = content["model_overrides"]
    trained = content.get("trained_input_size")
    return {
        "name": facts.target.name,
        "classes": ", ".join(content["class_names"]),
        "model": content["model"],
        "role": f" ({role})" if role else "",
        "overrides": f", overrides {overrides}" if overrides else "",
        "total": counts["total"],
        "deployed": counts["deployed"],
        "cap": PARAMETER_CAP,
        "under": "under" if counts["total"] < PARAMETER_CAP else "OVER",
        "side": content["input_size"],
        "trained_side": (
            f"(trained on {trained} px crops; this input side chosen on the validation split) " if trained else ""
        ),
        "mean": [round(v, 2) for v in content["mean"]],
        "std": [round(v, 2) for v in content["std"]],
        "size_mb": facts.target.stat().st_size / 1e6,
        "agreement": 100 * facts.agreement,
        "photos": facts.agreement_photos,
        "run_key": content["run_key"],
        "iteration": content["iteration"],
        "adjusted": _adjustment_line(content.get("logit_adjustment")),
        "chosen": f"- chosen as {facts.selection}\n" if facts.selection else "",
        "speed": SPEED.format_map(facts.speed) if facts.speed else "",
    }


def _adjustment_line(record: dict[str, Any] | None) -> str:
    if not record:
        return ""
    by_tau = ", ".join(f"{tau}: {miou:.2f}" for tau, miou in record["train_mIoU_by_tau"].items())
    return (
        f"- logit adjustment (`facelib adjust`): the classifier's bias moved by -tau x log(class weight), tau "
        f"{record['tau']:g} chosen on the {record['train_photos']} training photos (their mIoU by tau: {by_tau}); "
        "the validation photos played no part in it\n"
    )


def _training_fields(config: dict[str, Any], summary: dict[str, Any] | None, start: str | None) -> dict[str, Any]:
    if summary is None:
        run = "- the run's summary.json was not found beside it: training time and device unknown here"
    else:
        data, note = summary["data"], f" ({summary['commit_note']})" if summary.get("commit_note") else ""
        run = (
            f"- data: `{data['name']}`, {data['n_train']} training and {data['n_val']} validation pairs (split "
            f"{data['split_file']})\n- {summary['train_wall_s']:.0f} s of training ({summary['images_per_s']:.0f} "
            f"images/s) on {summary['device']}, commit {summary['commit']}, {summary['written_at']}{note}"
        )
    return {
        "start": f"{start}\n" if start else "",
        "iterations": config["iterations"],
        "batch": config["batch_size"],
        "crop": config["crop_size"],
        "photos_note": photos_note(config),
        "lr": config["lr"],
        "schedule": config["schedule"],
        "warmup": config["warmup_fraction"],
        "weight_decay": config["weight_decay"],
        "loss": config["loss"],
        "augment": config["augment"],
        "seed": config["seed"],
        "corrected": ", audit-corrected labels" if config.get("corrected_labels") else "",
        "run": run,
    }


def _scores(facts: CardFacts) -> str:
    """The scores section: one row per evaluation, the plain one against the reference, the run's own."""
    name, evaluations, summary = facts.target.name, facts.evaluations, facts.summary
    first = next(iter(evaluations.values()))
    rows = "\n".join(
        ROW.format_map({**scores, "file": scores.get("file", name), "labels": _labels(scores)})
        for scores in evaluations.values()
    )
    plain = next(
        (
            s
            for s in evaluations.values()
            if s["tta"] == "none" and not s["corrected_labels"] and s.get("file", name) == name
        ),
        None,
    )
    reference = ""
    if plain is not None:
        ref, full = REFERENCE_TABLE4["bisenetv2_xs"], get_profile("full").config("comparison")
        beats = plain["mIoU"] > ref["mIoU"] and plain["mF1"] > ref["mFscore"]
        reference = REFERENCE.format(
            **ref,
            iterations=full.iterations,
            batch=full.batch_size,
            plain_mIoU=plain["mIoU"],
            plain_mF1=plain["mF1"],
            plain_ref=plain["mFscore_ref"],
            verdict="above" if beats else "not above",
        )
    at_training = ""
    if summary is not None and summary.get("best"):
        before = ", before its logit adjustment" if facts.content.get("logit_adjustment") else ""
        at_training = AT_TRAINING.format(device=summary["device"], before=before, **summary["best"])
    return SCORES.format(
        images=first["images"],
        rows=rows,
        reference=reference,
        at_training=at_training,
        provenance=first["provenance"],
    )


def _labels(scores: dict[str, Any]) -> str:
    return "audit-corrected labels" if scores["corrected_labels"] else "original labels"


def _onnx_line(target: Path, is_default: bool, is_fast: bool) -> str:
    fp32, int8 = target.with_suffix(".onnx"), target.with_name(target.stem + "_int8.onnx")
    if not (fp32.exists() and int8.exists()):
        return f"- `facelib export {shown_path(target)} --onnx model.onnx [--int8]` for ONNX Runtime"
    default = ", the default of `--backend onnx`" if is_default else ""
    checkpoint = "" if is_default else " --model fast" if is_fast else f" --checkpoint {shown_path(fp32)}"
    return (
        f"- ONNX Runtime: `{fp32.name}` (float32{default}) and `{int8.name}` (int8) beside this file: `facelib "
        f"predict PHOTO... --backend onnx{checkpoint}`"
    )
