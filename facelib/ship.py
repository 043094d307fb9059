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

from facelib.card import CardFacts, model_card
from facelib.checkpoint import load_checkpoint, model_from_checkpoint, onnx_metadata
from facelib.config import photos_note
from facelib.data import discover
from facelib.errors import ConfigError, DataError
from facelib.export import calibration_batches, calibration_source, export_checkpoint, quantize_int8
from facelib.infer import check_input_size, save_evaluation
from facelib.infer import evaluate as run_evaluation
from facelib.outputs import atomic_path, shown_path, write_text
from facelib.run import init_digest
from facelib.runcache import finished_summary, run_record
from facelib.synthetic import DONE_MARKER

MODELS_DIR = Path(__file__).resolve().parents[1] / "results" / "models"
DEFAULT_MODEL = MODELS_DIR / "facelib-best.pt"
"""What `facelib predict` uses when no checkpoint is given: the repository's shipped best model (found from the
package's own location, so it works from any folder of a clone). `FACELIB_MODEL` overrides it."""

FAST_MODEL = MODELS_DIR / "facelib-fast.pt"
"""What `facelib predict --model fast` uses: the shipped fast model, at most 0.3x the anchor's ONNX time."""

CALIBRATION_IMAGES = 64  # training images that calibrate the int8 file's activation ranges
AGREEMENT_PHOTOS = 8  # training images on which the fp16 file must pick the fp32 checkpoint's class (99.9%)
SHIPPED_EVALUATIONS = (("none", False), ("flip", False), ("none", True))  # (TTA, audit-corrected labels)
LICENCE = (
    "Trained on CelebAMask-HQ images and masks (CelebAMask-HQ is for non-commercial research and educational "
    "use only; see its licence). These weights are derived from that data: use them under the same terms."
)
SYNTHETIC_LICENCE = "Trained and evaluated on facelib's synthetic faces: no dataset licence applies."


def default_model(backend: str = "auto", which: str = "best") -> Path:
    """The checkpoint `facelib predict` uses without `--checkpoint`: for `which="best"` $FACELIB_MODEL, else
    the shipped model; for "fast" the shipped fast model (`FAST_MODEL`); each as its ONNX export for
    `backend="onnx"`. A missing file is a ConfigError that says how to get one."""
    shipped = {"best": DEFAULT_MODEL, "fast": FAST_MODEL}
    if which not in shipped:
        raise ConfigError(f"unknown shipped model {which!r}; valid: {', '.join(shipped)}")
    chosen = os.environ.get("FACELIB_MODEL") if which == "best" else None
    path = Path(chosen) if chosen else shipped[which]
    path = path.with_suffix(".onnx") if backend == "onnx" and not chosen else path
    if not path.is_file():
        origin = "FACELIB_MODEL points to" if chosen else f"the shipped {which} model"
        to = "" if which == "best" else f" --to {shown_path(FAST_MODEL)}"
        raise ConfigError(
            f"no checkpoint given and {origin} {path} does not exist: pass --checkpoint (a .pt, .onnx, run folder "
            f"or run key), or train a model (`facelib train`) and ship it (`facelib ship RUN{to}`)"
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
    speed: dict[str, Any] | None = None,
) -> list[Path]:
    """Write `target` (fp16 weights of `checkpoint`), then with `evaluate` score it on the validation split
            (TTA none and flip on the original labels, none on the audit-corrected ones; stored beside its run as
            eval-val-*-fp16.json), and with `card` write `target`.md (`selection`: how the checkpoint was chosen, a
        phrase for the card). `onnx`: also write `target`.onnx (float32, parity-checked against the shipped weights)
    and `target`_int8.onnx (calibrated on training images), the int8 file evaluated too. `input_size`: the side
    the shipped file resizes photos to, when not the training crop (its scores are measured with it). `speed`: its
    time against the anchor's (`facelib.latency.checkpoint_speed`), for the card. Returns the paths written."""
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
        summary = finished_summary(out, content["run_key"])
        facts = CardFacts(
            content=shipped,
            target=target,
            agreement=agreement,
            evaluations=evaluations,
            summary=summary,
            data_root=_dataset_root(data),
            licence=SYNTHETIC_LICENCE if _is_synthetic(data) else LICENCE,
            default_model=DEFAULT_MODEL,
            fast_model=FAST_MODEL,
            agreement_photos=AGREEMENT_PHOTOS,
            selection=selection,
            start=start,
            speed=speed,
        )
        text = model_card(facts)
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
    record = run_record(out, content["run_key"])
    digest = record.get("init_weights_sha256")
    line = f"- fine-tuned from the weights then in `{start}` (sha256 {digest or 'not recorded'})"
    parent = record.get("init_run_key")
    if parent is None:
        if digest is None or not Path(start).is_file() or init_digest(start) != digest:
            return line + "; that file has changed since, so its training is not described here"
        parent = load_checkpoint(start).get("run_key")
    links, samples, seconds = [], 0, 0.0
    while parent is not None:
        earlier = finished_summary(out, str(parent))
        if earlier is None:
            return line + ": " + "; before it ".join([*links, f"run `{parent}` (its summary.json is not here)"])
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
        parent = run_record(out, str(parent)).get("init_run_key")
        if parent is None:
            links.append("itself fine-tuned from weights its record does not trace to a run")
            samples = None
    text = line + ": " + "; before it ".join(links)
    if samples is not None and len(links) > 1:
        text += f" ({samples:,} samples and {seconds:.0f} s of training before this fine-tuning)"
    return text + "; the recipe and time below are the fine-tuning's alone"


def _dataset_root(data: str | Path | None) -> Path:
    return Path(discover(data).root)


def _is_synthetic(data: str | Path | None) -> bool:
    """Whether the dataset is facelib's generated faces (which carry no licence terms), not real photos."""
    return (_dataset_root(data) / DONE_MARKER).exists()
