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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from facelib.errors import ConfigError, DataError
from facelib.labels import CLASS_NAMES, NUM_CLASSES, SWAP_LEFT_RIGHT, write_mask
from facelib.metrics import ConfusionMatrix, Metrics

CHECKPOINT_FORMAT = "facelib-checkpoint"
CHECKPOINT_VERSION = 1
TTA_MODES = ("none", "flip", "multiscale")
BACKENDS = ("auto", "torch", "onnx")  # auto: by the file's suffix (.onnx: ONNX Runtime, else PyTorch)
MULTISCALE = (0.75, 1.0, 1.25)
MIRROR_CHANNELS = torch.as_tensor(SWAP_LEFT_RIGHT[:NUM_CLASSES].astype(np.int64))


# --- checkpoints ---------------------------------------------------------------------------------------


def inference_checkpoint(
    model: torch.nn.Module,
    config,
    mean: Sequence[float],
    std: Sequence[float],
    run_key: str,
    iteration: int,
    metrics: Metrics | None = None,
    confusion: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Everything needed to rebuild the model and its preprocessing, and nothing that could run code."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": config.model,
        "model_overrides": dict(config.model_overrides),
        "num_classes": NUM_CLASSES,
        "class_names": list(CLASS_NAMES),
        "mean": list(mean),
        "std": list(std),
        "input_size": config.crop_size,
        "config": config.to_dict(),
        "run_key": run_key,
        "iteration": iteration,
        "metrics": {} if metrics is None else {k: float(v) for k, v in metrics.summary().items()},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a facelib checkpoint safely; anything else (missing, corrupt, foreign, code-carrying) is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... depending on damage
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: not a loadable facelib checkpoint ({reason})") from error
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        hint = (
            " (a training-state file: use best.pt beside it)"
            if isinstance(content, dict) and "optimizer" in content
            else ""
        )
        raise DataError(f"{path}: not a facelib inference checkpoint{hint}")
    if content.get("version") != CHECKPOINT_VERSION:
        raise DataError(f"{path}: checkpoint version {content.get('version')} is not supported (expected 1)")
    return content


def model_from_checkpoint(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> torch.nn.Module:
    """Rebuild the checkpoint's model and load its weights; a mismatch names the file and the model."""
    from facelib.models import build_model

    try:
        model = build_model(checkpoint["model"], num_classes=checkpoint["num_classes"], **checkpoint["model_overrides"])
    except ConfigError as error:
        raise DataError(f"{path}: cannot rebuild its model: {error}") from error
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise DataError(
            f"{path}: its weights do not fit model {checkpoint['model']!r} with overrides "
            f"{checkpoint['model_overrides']} ({' '.join(first[:3])[:300]})"
        ) from error
    return model.eval()


def load_model(
    path: str | Path, device: str = "auto", backend: str = "auto", threads: int | None = None
) -> tuple[dict[str, Any], torch.nn.Module, torch.device]:
    """A checkpoint (.pt, run by PyTorch) or an ONNX export (.onnx, run by ONNX Runtime on the CPU), as
    (its description: mean, std, input_size, config, ...; a model called the same way; the device)."""
    path = Path(path)
    onnx = path.suffix == ".onnx"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "onnx" and not onnx:
        raise ConfigError(
            f"{path}: --backend onnx needs an .onnx file; make one with `facelib export {path} --onnx OUT.onnx`"
        )
    if backend == "torch" and onnx:
        raise ConfigError(f"{path}: an ONNX file runs with --backend onnx (or auto), not torch")
    if onnx:
        from facelib.export import OnnxModel

        if device not in ("auto", "cpu"):
            raise ConfigError(f"{path}: ONNX files run on the CPU (onnxruntime's CPU provider), not on {device!r}")
        model = OnnxModel(path, threads)
        return model.metadata, model, torch.device("cpu")
    content = load_checkpoint(path)
    target = resolve_device(device)
    return content, model_from_checkpoint(content, path).to(target), target


# --- prediction core -------------------------------------------------------------------------------


def _views(tta: str) -> list[tuple[float, bool]]:
    if tta not in TTA_MODES:
        raise ConfigError(f"unknown test-time augmentation {tta!r}; valid: {', '.join(TTA_MODES)}")
    scales = MULTISCALE if tta == "multiscale" else (1.0,)
    return [(scale, flip) for scale in scales for flip in ((False, True) if tta != "none" else (False,))]


@torch.no_grad()
def probabilities(
    model: torch.nn.Module, images: torch.Tensor, size: tuple[int, int], tta: str = "none", amp: bool = False
) -> torch.Tensor:
    """Softmax probabilities (B, C, *size) of normalised model-size inputs, averaged over the TTA views."""
    return _scores(model, images, size, tta, amp, softmax=True)


def predict_labels(
    model: torch.nn.Module, images: torch.Tensor, size: tuple[int, int], tta: str = "none", amp: bool = False
) -> torch.Tensor:
    """Class ids (B, *size): the argmax of `probabilities`. With one view the softmax is skipped (it does not
    change the argmax), and `max(1)` is used because CPU `argmax` over channels is about 4x slower."""
    return _scores(model, images, size, tta, amp, softmax=len(_views(tta)) > 1).max(1).indices


def _scores(
    model: torch.nn.Module, images: torch.Tensor, size: tuple[int, int], tta: str, amp: bool, softmax: bool
) -> torch.Tensor:
    """Logits resized to `size` (bilinear), each view's softmax averaged when `softmax`."""
    model.eval()
    views = _views(tta)
    height, width = images.shape[-2:]
    total = None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and images.device.type == "cuda")
    for scale, flip in views:
        x = images
        if scale != 1.0:
            side = (max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32))
            x = F.interpolate(x, size=side, mode="bilinear", align_corners=False)
        if flip:
            x = x.flip(-1)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)  # as in training: the faster layout for convs
        with autocast:
            logits = model(x)
        logits = logits.float()
        if flip:
            logits = logits.flip(-1)[:, MIRROR_CHANNELS.to(logits.device)]
        scores = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if softmax:
            scores = scores.softmax(1)
        total = scores if total is None else total + scores
    return total / len(views) if len(views) > 1 else total


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module, loader: Iterable, device: torch.device, amp: bool = False, tta: str = "none"
) -> ConfusionMatrix:
    """Confusion matrix of a model over a loader of (normalised images, original-size masks); all-reduced
    across processes when running distributed, so every process holds the same totals."""
    was_training = model.training
    matrix = ConfusionMatrix(NUM_CLASSES)
    for images, masks in loader:
        images = images.to(device, non_blocking=True)
        if isinstance(masks, torch.Tensor):
            masks = masks.to(device, non_blocking=True)
            prediction = predict_labels(model, images, masks.shape[-2:], tta, amp)
            matrix.update(masks, prediction)
        else:  # masks of different sizes: one image at a time
            for image, mask in zip(images, masks, strict=True):
                mask = mask.to(device)
                matrix.update(mask, predict_labels(model, image[None], mask.shape[-2:], tta, amp)[0])
    if matrix.mat is None:  # an empty shard (more processes than validation images)
        matrix.mat = torch.zeros((NUM_CLASSES, NUM_CLASSES), dtype=torch.int64, device=device)
    matrix.all_reduce()
    model.train(was_training)
    return matrix


# --- evaluation ------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """One evaluation: the metrics, their headline summary, the per-class table and the confusion matrix."""

    metrics: Metrics
    confusion: np.ndarray
    images: int
    tta: str
    corrected_labels: bool

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
            **{k: round(v, 4) for k, v in self.summary.items()},
            "per_class": {
                name: {"IoU": _finite(100 * iou), "F1": _finite(100 * f1)}
                for name, iou, f1 in zip(CLASS_NAMES, self.metrics.iou, self.metrics.f1, strict=True)
            },
            "confusion": self.confusion.tolist(),
        }


def _finite(value: float) -> float | None:
    return round(float(value), 4) if np.isfinite(value) else None


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """ "auto" is CUDA when torch sees a GPU, else the CPU; a bare "cuda" means this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but torch sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


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
) -> Evaluation:
    """Evaluate a checkpoint on a split of a dataset (the split its run used: `out`/splits/NAME-seedN.json).

    `corrected_labels`: score against the audit's corrected left/right labels instead of the originals.
    """
    from facelib.audit import audit
    from facelib.augment import eval_transform
    from facelib.data import SegmentationDataset, discover, load_or_make_split
    from facelib.train import collate_eval

    _views(tta)
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
    size = content["input_size"]
    resize = evaluation_set.image_shapes() != {(size, size, 3)}
    evaluation_set.transform = eval_transform(size, content["mean"], content["std"], resize=resize)
    loader = torch.utils.data.DataLoader(
        evaluation_set, batch_size=batch_size, num_workers=workers, collate_fn=collate_eval
    )
    matrix = evaluate_model(model, loader, target, amp=target.type == "cuda", tta=tta)
    confusion = matrix.mat.cpu().numpy()
    return Evaluation(matrix.compute(), confusion, len(evaluation_set), tta, corrected_labels)


def save_evaluation(
    result: Evaluation, checkpoint: str | Path, data: str | Path | None, split: str, out: str | Path = "results"
) -> list[Path]:
    """Store an evaluation beside its run: OUT/runs/KEY/eval-SPLIT-tta_T[-corrected][-onnx_P|-fp16].json and
    a per-class table, each with its provenance (checkpoint, data, labels, commit, machine, date)."""
    import json

    from facelib.outputs import provenance, shown_path, shown_paths, write_table, write_text

    checkpoint = Path(checkpoint)
    content, _, _ = load_model(checkpoint)
    key = content.get("run_key") or checkpoint.stem
    labels = "audit-corrected" if result.corrected_labels else "original"
    variant = f"eval-{split}-tta_{result.tta}" + ("-corrected" if result.corrected_labels else "")
    if checkpoint.suffix == ".onnx":
        variant += f"-onnx_{content['precision']}"
    elif content.get("weights_dtype") == "float16":  # a shipped file (facelib.ship): scored apart from best.pt
        variant += "-fp16"
    folder = Path(out) / "runs" / key
    note = (
        provenance(f"{data or 'default'} ({split} split, {labels} labels)") + f" Checkpoint {shown_path(checkpoint)}."
    )
    record = {"checkpoint": shown_path(checkpoint), "split": split, **result.to_dict(), "provenance": note}
    written = [write_text(folder / f"{variant}.json", shown_paths(json.dumps(record, indent=1)) + "\n")]
    written += write_table(result.per_class(), folder / f"{variant}_per_class", f"Per-class scores: {key}", note)
    return written


# --- prediction on photos --------------------------------------------------------------------------


def read_photo(path: str | Path) -> np.ndarray:
    """Any photo as (H, W, 3) uint8 RGB: EXIF rotation applied; greyscale, palette, RGBA (alpha dropped),
    16-bit and 32-bit integer images converted. Unreadable files raise DataError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                values = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
                grey = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if image.mode == "F":
                values = np.asarray(image, dtype=np.float64)
                grey = np.clip(values * (255.0 if values.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.array(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: cannot read image ({error})") from error


class Predictor:
    """A checkpoint's model with its preprocessing: `predict(photo)` gives a class-id mask at the photo's size."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", tta: str = "none", backend: str = "auto") -> None:
        _views(tta)
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


def photo_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (their images, sorted) into a list of photo paths."""
    from facelib.data import IMAGE_SUFFIXES

    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, ".tif",
                                                                                              ".tiff", ".bmp", ".webp"))  # fmt: skip
        elif item.is_file():
            found.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not found:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    return found


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
    from facelib.labels import overlay as blend
    from facelib.outputs import atomic_path

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
