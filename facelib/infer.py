"""Checkpoints, evaluation and prediction.

A checkpoint is a plain dict of tensors and JSON-like data (model name and overrides, normalisation, class
names, input size, the training config), so a file is all `predict` needs, and it is always read with
`torch.load(..., weights_only=True)`: a checkpoint from anywhere can never run code.

An exported `.onnx` file (`facelib.export`) is accepted wherever a checkpoint is (`load_model`): it runs in
ONNX Runtime through the same evaluation and prediction code, its metadata standing in for the checkpoint's.

Test-time augmentation averages softmax probabilities over the views: `flip` adds the mirrored image (its
left/right class channels swapped back), `multiscale` adds inputs at 0.75x and 1.25x as well (each with its
mirror). Predictions are always resized back to the original image (or mask) size before the argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from facelib.audit import audit
from facelib.augment import eval_transform
from facelib.checkpoint import load_model
from facelib.data import SegmentationDataset, collate_eval, discover, load_or_make_split
from facelib.errors import ConfigError, DataError
from facelib.labels import CLASS_NAMES, write_mask
from facelib.labels import overlay as blend
from facelib.metrics import Metrics
from facelib.outputs import atomic_path, provenance, shown_path, shown_paths, write_table, write_text
from facelib.photos import photo_paths, read_photo
from facelib.tta import confusion_over, predict_labels, probabilities, views

# --- evaluation ------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """One evaluation: the metrics, their headline summary, the per-class table and the confusion matrix."""

    metrics: Metrics
    confusion: np.ndarray
    images: int
    tta: str
    corrected_labels: bool
    input_size: int

    @property
    def summary(self) -> dict[str, float]:
        return self.metrics.summary()

    def per_class(self) -> pd.DataFrame:
        return self.metrics.per_class()

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "tta": self.tta,
            "corrected_labels": self.corrected_labels,
            "input_size": self.input_size,
            **{k: round(v, 4) for k, v in self.summary.items()},
            "per_class": {
                name: {"IoU": _finite(100 * iou), "F1": _finite(100 * f1)}
                for name, iou, f1 in zip(CLASS_NAMES, self.metrics.iou, self.metrics.f1, strict=True)
            },
            "confusion": self.confusion.tolist(),
        }


def _finite(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def evaluate(
    checkpoint: str | Path,
    data: str | Path | None = None,
    split: str = "val",
    tta: str = "none",
    corrected_labels: bool = False,
    out: str | Path = "results",
    batch_size: int = 8,
    device: str = "auto",
    workers: int = 2,
    input_size: int | None = None,
) -> Evaluation:
    """Evaluate a checkpoint on a split of a dataset (the split its run used: `out`/splits/NAME-seedN.json).

    `corrected_labels`: score against the audit's corrected left/right labels instead of the originals.
    `input_size`: the side the images are resized to for the model (default: the checkpoint's own).
    """
    views(tta)
    check_input_size(input_size)
    content, model, target = load_model(checkpoint, device)
    config = content["config"]
    dataset = discover(data)
    chosen, _ = load_or_make_split(dataset, out=out, val_fraction=config["val_fraction"], seed=config["split_seed"])
    if split not in ("train", "val"):
        raise ConfigError(f"unknown split {split!r}; valid: train, val")
    stems = chosen.val if split == "val" else chosen.train
    corrections = {}
    if corrected_labels:
        corrections = {s: [e.pair for e in ev] for s, ev in audit(dataset).flagged.items()}
    evaluation_set = SegmentationDataset(dataset.by_stem(stems), image_only=True, corrections=corrections)
    size = input_size or int(content["input_size"])
    resize = evaluation_set.image_shapes() != {(size, size, 3)}
    evaluation_set.transform = eval_transform(size, content["mean"], content["std"], resize=resize)
    loader = torch.utils.data.DataLoader(
        evaluation_set, batch_size=batch_size, num_workers=workers, collate_fn=collate_eval
    )
    matrix = confusion_over(model, loader, target, amp=target.type == "cuda", tta=tta)
    confusion = matrix.mat.cpu().numpy()
    return Evaluation(matrix.compute(), confusion, len(evaluation_set), tta, corrected_labels, size)


def check_input_size(size: int | None) -> None:
    """A model input side must be a positive multiple of 32 (the models' output stride)."""
    if size is not None and (size < 32 or size % 32):
        raise ConfigError(f"input size must be a positive multiple of 32 (the models' stride), got {size}")


def evaluation_name(split: str = "val", tta: str = "none", corrected_labels: bool = False, variant: str = "") -> str:
    """The file stem an evaluation is stored under beside its run: eval-SPLIT-tta_T[-corrected][VARIANT], the
    variant naming what was scored when it is not the run's best.pt at its own size (-in384, -adjusted,
    -onnx_int8, -fp16)."""
    return f"eval-{split}-tta_{tta}" + ("-corrected" if corrected_labels else "") + variant


def evaluation_variant(content: dict[str, Any], checkpoint: str | Path, result: Evaluation | None = None) -> str:
    """What an evaluation of `checkpoint` (described by `content`) is stored apart as: "" for a run's best.pt
    at its own size, else -inSIZE, -adjusted (facelib.adjust), -onnx_PRECISION or -fp16 (a shipped file)."""
    variant = "" if result is None or result.input_size == int(content["input_size"]) else f"-in{result.input_size}"
    variant += "-adjusted" * bool(content.get("logit_adjustment"))
    if Path(checkpoint).suffix == ".onnx":
        return variant + f"-onnx_{content['precision']}"
    return variant + "-fp16" * (content.get("weights_dtype") == "float16")


def stored_evaluation(
    results: str | Path,
    key: str,
    split: str = "val",
    tta: str = "none",
    corrected_labels: bool = False,
    variant: str = "",
) -> dict[str, Any] | None:
    """An evaluation stored beside run `key` by `save_evaluation` (`facelib eval`), or None when there is none."""
    import json

    stored = Path(results) / "runs" / key / f"{evaluation_name(split, tta, corrected_labels, variant)}.json"
    return json.loads(stored.read_text()) if stored.exists() else None


def save_evaluation(
    result: Evaluation, checkpoint: str | Path, data: str | Path | None, split: str, out: str | Path = "results"
) -> list[Path]:
    """Store an evaluation beside its run: OUT/runs/KEY/eval-SPLIT-tta_T[-corrected][-onnx_P|-fp16].json and
    a per-class table, each with its provenance (checkpoint, data, labels, commit, machine, date)."""
    import json

    checkpoint = Path(checkpoint)
    content, _, _ = load_model(checkpoint)
    key = content.get("run_key") or checkpoint.stem
    labels = "audit-corrected" if result.corrected_labels else "original"
    name = evaluation_name(split, result.tta, result.corrected_labels, evaluation_variant(content, checkpoint, result))
    folder = Path(out) / "runs" / key
    note = (
        provenance(f"{data or 'default'} ({split} split, {labels} labels)") + f" Checkpoint {shown_path(checkpoint)}."
    )
    record = {"checkpoint": shown_path(checkpoint), "split": split, **result.to_dict(), "provenance": note}
    written = [write_text(folder / f"{name}.json", shown_paths(json.dumps(record, indent=1)) + "\n")]
    written += write_table(result.per_class(), folder / f"{name}_per_class", f"Per-class scores: {key}", note)
    return written


# --- prediction on photos --------------------------------------------------------------------------


class Predictor:
    """A checkpoint's model with its preprocessing: `predict(photo)` gives a class-id mask at the photo's size."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", tta: str = "none", backend: str = "auto") -> None:
        views(tta)
        self.path = Path(checkpoint)
        self.content, self.model, self.device = load_model(checkpoint, device, backend)
        self.size = int(self.content["input_size"])
        self.mean = torch.tensor(self.content["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(self.content["std"], dtype=torch.float32).view(1, 3, 1, 1)
        self.tta = tta

    def input_tensor(self, photo: np.ndarray) -> torch.Tensor:
        """Resize to the model's input size and normalise (the checkpoint's mean/std)."""
        import cv2

        resized = cv2.resize(photo, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()[None]
        return ((x - self.mean) / self.std).to(self.device)

    def probabilities(self, photo: np.ndarray) -> torch.Tensor:
        return probabilities(self.model, self.input_tensor(photo), photo.shape[:2], self.tta)[0]

    def predict(self, photo: np.ndarray) -> np.ndarray:
        return (
            predict_labels(self.model, self.input_tensor(photo), photo.shape[:2], self.tta)[0]
            .to(torch.uint8)
            .cpu()
            .numpy()
        )


def predict(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    overlay: bool = False,
    tta: str = "none",
    device: str = "auto",
    backend: str = "auto",
) -> list[Path]:
    """Write a palette PNG mask (the dataset's format, `<stem>.png`) for each photo, and with `overlay` a
    JPEG of the mask blended over the photo (`overlays/<stem>.jpg`); return the paths written."""
    predictor = Predictor(checkpoint, device, tta, backend)
    paths = photo_paths(inputs)
    stems = [p.stem for p in paths]
    twins = sorted({s for s in stems if stems.count(s) > 1})
    if twins:
        raise DataError(f"several inputs share the name(s) {', '.join(twins)}; their masks would overwrite each other")
    out_dir = Path(out_dir)
    written = []
    for path in paths:
        photo = read_photo(path)
        mask = predictor.predict(photo)
        target = out_dir / f"{path.stem}.png"
        write_mask(mask, target)
        written.append(target)
        if overlay:
            target = out_dir / "overlays" / f"{path.stem}.jpg"
            with atomic_path(target) as tmp:
                Image.fromarray(blend(photo, mask)).save(tmp, format="JPEG", quality=90)
            written.append(target)
    return written
