"""Shipping a trained model: its best checkpoint as weights-only fp16 (a few MB, small enough to commit),
evaluated as shipped, with a model card beside it; and the default model `facelib predict` uses.

A shipped file is an ordinary facelib checkpoint (`facelib.infer.load_checkpoint` reads it; the weights are
cast back to float32 when the model is built) with `weights_dtype: "float16"` and its source recorded. The
card's scores are measured on the fp16 file itself, never copied from the fp32 checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelib.checkpoint import load_checkpoint, model_from_checkpoint, onnx_metadata
from facelib.config import photos_note
from facelib.data import discover
from facelib.errors import ConfigError, DataError
from facelib.export import calibration_batches, calibration_source, export_checkpoint, quantize_int8
from facelib.infer import check_input_size, save_evaluation
from facelib.infer import evaluate as run_evaluation
from facelib.models import MODELS, PARAMETER_CAP, build_model, parameter_breakdown
from facelib.outputs import atomic_path, provenance, shown_path, write_text
from facelib.profiles import REFERENCE_TABLE4, get_profile
from facelib.run import init_digest
from facelib.synthetic import DONE_MARKER

MODELS_DIR = Path(__file__).resolve().parents[1] / "results" / "models"
DEFAULT_MODEL = MODELS_DIR / "facelib-best.pt"
"""What `facelib predict` uses when no checkpoint is given: the repository's shipped best model (found from the
package's own location, so it works from any folder of a clone). `FACELIB_MODEL` overrides it."""

CALIBRATION_IMAGES = 64  # training images that calibrate the int8 file's activation ranges
AGREEMENT_PHOTOS = 8  # training images on which the fp16 file must pick the fp32 checkpoint's class (99.9%)
SHIPPED_EVALUATIONS = (("none", False), ("flip", False), ("none", True))  # (TTA, audit-corrected labels)
LICENCE = (
    "Trained on CelebAMask-HQ images and masks (CelebAMask-HQ is for non-commercial research and educational "
    "use only; see its licence). These weights are derived from that data: use them under the same terms."
)


def default_model(backend: str = "auto") -> Path:
    """The checkpoint `facelib predict` uses without `--checkpoint`: $FACELIB_MODEL, else the shipped model
    (its ONNX export for `backend="onnx"`). A missing file is a ConfigError that says how to get one."""
    chosen = os.environ.get("FACELIB_MODEL")
    path = Path(chosen) if chosen else DEFAULT_MODEL.with_suffix(".onnx") if backend == "onnx" else DEFAULT_MODEL
    if not path.is_file():
        origin = "FACELIB_MODEL points to" if chosen else "the shipped model"
        raise ConfigError(
            f"no checkpoint given and {origin} {path} does not exist: pass --checkpoint (a .pt, .onnx, run folder "
            "or run key), or train a model (`facelib train`) and ship it (`facelib ship RUN`)"
        )
    return path


def half_checkpoint(content: dict[str, Any], source: str) -> dict[str, Any]:
    """The same checkpoint with floating-point weights stored as float16 (integer buffers kept)."""
    state = {
        name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in content["state_dict"].items()
    }
    return {**content, "state_dict": state, "weights_dtype": "float16", "shipped_from": source}


def weight_agreement(original: torch.nn.Module, shipped: torch.nn.Module, photos: torch.Tensor) -> float:
    """Share of pixels where the fp32 and the fp16-stored model pick the same class on real photos (random
    inputs are no test: far from any face, their logits tie often enough to flip a few tenths of a percent)."""
    with torch.no_grad():
        same = original.eval()(photos).argmax(1) == shipped.eval()(photos).argmax(1)
    return float(same.float().mean())


def ship(
    checkpoint: str | Path,
    target: str | Path = DEFAULT_MODEL,
    data: str | Path | None = None,
    out: str | Path = "results",
    device: str = "auto",
    evaluate: bool = True,
    card: bool = True,
    selection: str | None = None,
    onnx: bool = False,
    input_size: int | None = None,
) -> list[Path]:
    """Write `target` (fp16 weights of `checkpoint`), then with `evaluate` score it on the validation split
            (TTA none and flip on the original labels, none on the audit-corrected ones; stored beside its run as
            eval-val-*-fp16.json), and with `card` write `target`.md (`selection`: how the checkpoint was chosen, a
        phrase for the card). `onnx`: also write `target`.onnx (float32, parity-checked against the shipped weights)
    and `target`_int8.onnx (calibrated on training images), the int8 file evaluated too. `input_size`: the side
    the shipped file resizes photos to, when not the training crop (its scores are measured with it). Returns the
    paths written."""
    check_input_size(input_size)
    checkpoint, target = Path(checkpoint), Path(target)
    if target.suffix != ".pt":
        raise ConfigError(f"{target}: a shipped model is a .pt file")
    content = load_checkpoint(checkpoint)
    if content.get("weights_dtype") == "float16":
        raise DataError(f"{checkpoint}: already a shipped fp16 file; ship the run's best.pt instead")
    shipped = half_checkpoint(content, str(checkpoint))
    if input_size is not None and input_size != int(content["input_size"]):
        shipped = {**shipped, "input_size": input_size, "trained_input_size": int(content["input_size"])}
    start = starting_point(content, out)  # read before `target` is written: it may be the file fine-tuned from
    original = model_from_checkpoint(content, checkpoint)
    photos = torch.from_numpy(np.concatenate(calibration_batches(content, data, AGREEMENT_PHOTOS, out)))
    agreement = weight_agreement(original, model_from_checkpoint(shipped, target), photos)
    if agreement < 0.999:
        raise DataError(
            f"{checkpoint}: fp16 weights change {100 * (1 - agreement):.2f}% of predicted pixels; not shipped"
        )
    with atomic_path(target) as tmp:
        torch.save(shipped, tmp)
    written = [target]
    evaluated = [(target, tta, corrected) for tta, corrected in SHIPPED_EVALUATIONS]
    if onnx:
        fp32, _ = export_checkpoint(target, target.with_suffix(".onnx"))
        batches = calibration_batches(onnx_metadata(fp32), data, CALIBRATION_IMAGES, out)
        described = f"{len(batches)} training images of {calibration_source(data)} (percentile calibration)"
        int8 = quantize_int8(fp32, target.with_name(target.stem + "_int8.onnx"), batches, described)
        written += [fp32, int8]
        evaluated.append((int8, "none", False))
    evaluations: dict[str, dict[str, Any]] = {}
    if evaluate:
        for path, tta, corrected in evaluated:
            result = run_evaluation(path, data, "val", tta, corrected, out, device="cpu" if path != target else device)
            paths = save_evaluation(result, path, data, "val", out)
            evaluations[paths[0].stem] = {**json.loads(paths[0].read_text()), "file": path.name}
            written += paths
    if card:
        summary_file = Path(out) / "runs" / content["run_key"] / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
        text = model_card(shipped, target, agreement, evaluations, summary, data, _is_synthetic(data), selection, start)
        written.append(write_text(target.with_suffix(".md"), text))
    return written


def starting_point(content: dict[str, Any], out: str | Path = "results") -> str | None:
    """For a fine-tuned checkpoint, the card's line on the weights it started from: their digest (as its run
    recorded it) and the runs that trained them, back to a run from scratch, with what each cost. The first is
    the one its config.json names (`init_run_key`), else the one named by the file it started from while that
    file still holds those weights; each earlier one is named by its own config.json."""
    start = content["config"].get("init_from")
    if not start:
        return None
    record = _run_record(out, content["run_key"])
    digest = record.get("init_weights_sha256")
    line = f"- fine-tuned from the weights then in `{start}` (sha256 {digest or 'not recorded'})"
    parent = record.get("init_run_key")
    if parent is None:
        if digest is None or not Path(start).is_file() or init_digest(start) != digest:
            return line + "; that file has changed since, so its training is not described here"
        parent = load_checkpoint(start).get("run_key")
    links, samples, seconds = [], 0, 0.0
    while parent is not None:
        summary_file = Path(out) / "runs" / str(parent) / "summary.json"
        if not summary_file.exists():
            return line + ": " + "; before it ".join([*links, f"run `{parent}` (its summary.json is not here)"])
        earlier = json.loads(summary_file.read_text())
        config = earlier["config"]
        links.append(
            f"run `{parent}`, {config['iterations']} iterations of batch {config['batch_size']} at "
            f"{config['crop_size']}px{photos_note(config)} ({config['iterations'] * config['batch_size']:,} samples), "
            f"{earlier['train_wall_s']:.0f} s ({earlier['images_per_s']:.1f} images/s) on {earlier['device']}, "
            f"commit {earlier['commit']}"
        )
        samples, seconds = samples + config["iterations"] * config["batch_size"], seconds + earlier["train_wall_s"]
        if not config.get("init_from"):
            break
        parent = _run_record(out, str(parent)).get("init_run_key")
        if parent is None:
            links.append("itself fine-tuned from weights its record does not trace to a run")
            samples = None
    text = line + ": " + "; before it ".join(links)
    if samples is not None and len(links) > 1:
        text += f" ({samples:,} samples and {seconds:.0f} s of training before this fine-tuning)"
    return text + "; the recipe and time below are the fine-tuning's alone"


def _run_record(out: str | Path, key: str) -> dict[str, Any]:
    """A run folder's config.json (empty when the folder or file is not here)."""
    path = Path(out) / "runs" / key / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _dataset_root(data: str | Path | None) -> Path:
    return Path(discover(data).root)


def _is_synthetic(data: str | Path | None) -> bool:
    """Whether the dataset is facelib's generated faces (which carry no licence terms), not real photos."""
    return (_dataset_root(data) / DONE_MARKER).exists()


def _scores_row(name: str, scores: dict[str, Any]) -> str:
    return (
        f"| {name} | {scores['mIoU']:.2f} | {scores['mF1']:.2f} | {scores['mFscore_ref']:.2f} | "
        f"{scores['per_image_F']:.2f} | {scores['aAcc']:.2f} |"
    )


def model_card(
    content: dict[str, Any],
    target: Path,
    agreement: float,
    evaluations: dict[str, dict[str, Any]],
    summary: dict[str, Any] | None,
    data: str | Path | None,
    synthetic: bool = False,
    selection: str | None = None,
    start: str | None = None,
) -> str:
    """A short Markdown model card: what the model is, how it was trained, how it scores, how to use it."""
    config = content["config"]
    counts = parameter_breakdown(build_model(content["model"], **content["model_overrides"]))
    role = MODELS[content["model"]].role if content["model"] in MODELS else ""
    size_mb = target.stat().st_size / 1e6
    lines = [
        f"# Model card: `{target.name}`",
        "",
        f"Face parsing into the 19 CelebAMask-HQ classes ({', '.join(content['class_names'])}).",
        "",
        "## Model",
        f"- architecture: `{content['model']}`"
        + (f" ({role})" if role else "")
        + (f", overrides {content['model_overrides']}" if content["model_overrides"] else ""),
        f"- parameters: {counts['total']:,} trained, {counts['deployed']:,} run at inference "
        f"(cap {PARAMETER_CAP:,}: {'under' if counts['total'] < PARAMETER_CAP else 'OVER'})",
        f"- trained from scratch (no pretrained weights); input {content['input_size']}x{content['input_size']} "
        + (
            f"(trained on {content['trained_input_size']} px crops; this input side chosen on the validation split) "
            if "trained_input_size" in content
            else ""
        )
        + f"RGB normalised with mean {[round(v, 2) for v in content['mean']]}, std {[round(v, 2) for v in content['std']]}",
        f"- file: weights stored as float16 ({size_mb:.1f} MB), run in float32; the fp16 weights pick the same "
        f"class as the fp32 checkpoint on {100 * agreement:.3f}% of pixels ({AGREEMENT_PHOTOS} training photos)",
        f"- from run `{content['run_key']}`, best checkpoint by validation mF1 at iteration {content['iteration']}",
        *([f"- chosen as {selection}"] if selection else []),
        "",
        "## Training",
        *([start] if start else []),
        f"- recipe: {config['iterations']} iterations of batch {config['batch_size']} at {config['crop_size']}px "
        f"crops{photos_note(config)}, AdamW lr {config['lr']} ({config['schedule']}, warm-up {config['warmup_fraction']}), weight decay "
        f"{config['weight_decay']}, loss `{config['loss']}`, augmentation `{config['augment']}`, seed {config['seed']}"
        + (", audit-corrected labels" if config.get("corrected_labels") else ""),
    ]
    if summary is not None:
        trained_on = summary["data"]
        lines.append(
            f"- data: `{trained_on['name']}`, {trained_on['n_train']} training and {trained_on['n_val']} validation "
            f"pairs (split {trained_on['split_file']})"
        )
        lines.append(
            f"- {summary['train_wall_s']:.0f} s of training ({summary['images_per_s']:.0f} images/s) on "
            f"{summary['device']}, commit {summary['commit']}, {summary['written_at']}"
            + (f" ({summary['commit_note']})" if summary.get("commit_note") else "")
        )
    else:
        lines.append("- the run's summary.json was not found beside it: training time and device unknown here")
    lines += ["", "## Validation scores of this file", ""]
    if evaluations:
        first = next(iter(evaluations.values()))
        lines += [
            f"`facelib eval` of the shipped file on the {first['images']}-image validation split (percent; mIoU "
            "and mF1 count every class present in the ground truth or prediction, mFscore_ref drops classes "
            "never predicted, as the reference's tool did):",
            "",
            "| file | evaluation | mIoU | mF1 | mFscore_ref | per-image F | aAcc |",
            "|---|---|---|---|---|---|---|",
        ]
        for scores in evaluations.values():
            labels = "audit-corrected labels" if scores["corrected_labels"] else "original labels"
            file = scores.get("file", target.name)
            lines.append(_scores_row(f"`{file}` | TTA {scores['tta']}, {labels}", scores))
        plain = next(
            (
                s
                for s in evaluations.values()
                if s["tta"] == "none" and not s["corrected_labels"] and s.get("file", target.name) == target.name
            ),
            None,
        )
        if plain is not None:
            ref, full = REFERENCE_TABLE4["bisenetv2_xs"], get_profile("full").config("comparison")
            beats = plain["mIoU"] > ref["mIoU"] and plain["mF1"] > ref["mFscore"]
            lines += [
                "",
                f"The reference's best under the cap, BiSeNetV2-XS, reached {ref['mIoU']} mIoU and an "
                f"{ref['mFscore']} mFscore after {full.iterations:,} iterations of batch {full.batch_size}. This "
                f"file, without TTA: {plain['mIoU']:.2f} mIoU, honest mF1 {plain['mF1']:.2f} (reference-style "
                f"{plain['mFscore_ref']:.2f}): {'above' if beats else 'not above'} the reference on both.",
            ]
        if summary is not None and summary.get("best"):
            best = summary["best"]
            lines += [
                "",
                f"The fp32 checkpoint at training time (validation during the run, on {summary['device']}): mIoU "
                f"{best['mIoU']:.2f}, mF1 {best['mF1']:.2f}, mFscore_ref {best['mFscore_ref']:.2f}.",
            ]
        lines += ["", "Evaluation provenance: " + first["provenance"]]
    else:
        lines.append("Not evaluated (shipped with --no-eval).")
    is_default = target.resolve() == DEFAULT_MODEL.resolve()
    predict = "facelib predict PHOTO..." + ("" if is_default else f" --checkpoint {shown_path(target)}")
    fp32, int8 = target.with_suffix(".onnx"), target.with_name(target.stem + "_int8.onnx")
    licence = (
        "Trained and evaluated on facelib's synthetic faces: no dataset licence applies." if synthetic else LICENCE
    )
    lines += [
        "",
        "## Use",
        f"- `{predict}`"
        + (" (this file is the default model)" if is_default else "")
        + " writes palette PNG masks; add `--overlay` for overlays, `--tta flip` for flip test-time augmentation",
        (
            f"- ONNX Runtime: `{fp32.name}` (float32{', the default of `--backend onnx`' if is_default else ''}) and "
            f"`{int8.name}` (int8) beside this file: `facelib predict PHOTO... --backend onnx"
            + ("" if is_default else f" --checkpoint {shown_path(fp32)}")
            + "`"
            if fp32.exists() and int8.exists()
            else f"- `facelib export {shown_path(target)} --onnx model.onnx [--int8]` for ONNX Runtime"
        ),
        "",
        "## Data and licence",
        f"- {licence}",
        "",
        provenance(shown_path(_dataset_root(data)), command=None),
        "",
    ]
    return "\n".join(lines)
