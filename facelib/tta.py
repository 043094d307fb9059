"""Running a model on normalised images: class scores and labels at any output size, averaged over
test-time augmentation views, and the confusion matrix of a model over a loader (what training validates
with and what `facelib eval` scores with).

Test-time augmentation averages softmax probabilities over the views: `flip` adds the mirrored image (its
left/right class channels swapped back), `multiscale` adds inputs at 0.75x and 1.25x as well (each with its
mirror). Predictions are always resized back to the original image (or mask) size before the argmax.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from facelib.config import TTA_MODES
from facelib.errors import ConfigError
from facelib.labels import NUM_CLASSES, SWAP_LEFT_RIGHT
from facelib.metrics import ConfusionMatrix

MULTISCALE = (0.75, 1.0, 1.25)


MIRROR_CHANNELS = torch.as_tensor(SWAP_LEFT_RIGHT[:NUM_CLASSES].astype(np.int64))


def views(tta: str) -> list[tuple[float, bool]]:
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


LARGE_OUTPUT = 4096 * 1024
"""Outputs above this many pixels are resized and labelled in strips of rows (`predict_labels`), so that a
6000x6000 photo never holds its 19 class scores at full size at once (2.7 GB in float32)."""


def predict_labels(
    model: torch.nn.Module, images: torch.Tensor, size: tuple[int, int], tta: str = "none", amp: bool = False
) -> torch.Tensor:
    """Class ids (B, *size) as uint8: the argmax of `probabilities`. With one view the softmax is skipped (it
    does not change the argmax), and `max(1)` is used because CPU `argmax` over channels is about 4x slower.
    Above `LARGE_OUTPUT` pixels the scores are resized strip by strip (`F.grid_sample` at the same sampling
    points as `F.interpolate`), so memory stays about one strip's scores whatever the photo's size."""
    logits = view_logits(model, images, tta, amp)
    softmax = len(logits) > 1
    if size[0] * size[1] <= LARGE_OUTPUT:
        return _resized(logits, size, softmax).max(1).indices.to(torch.uint8)
    labels = torch.empty((images.shape[0], *size), dtype=torch.uint8, device=images.device)
    rows = max(1, LARGE_OUTPUT // 4 // size[1])
    for top in range(0, size[0], rows):
        strip = _resized_rows(logits, size, top, min(top + rows, size[0]), softmax)
        labels[:, top : top + strip.shape[-2]] = strip.max(1).indices.to(torch.uint8)
    return labels


def view_logits(model: torch.nn.Module, images: torch.Tensor, tta: str, amp: bool) -> list[torch.Tensor]:
    """Each TTA view's float32 logits at the model's output size, a mirrored view mirrored back (and its
    left/right class channels swapped back)."""
    model.eval()
    height, width = images.shape[-2:]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and images.device.type == "cuda")
    found = []
    for scale, flip in views(tta):
        x = images
        if scale != 1.0:
            side = (max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32))
            x = F.interpolate(x, size=side, mode="bilinear", align_corners=False)
        if flip:
            x = x.flip(-1)
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)  # as in training: the faster layout for convs
        with torch.no_grad(), autocast:
            logits = model(x).float()
        found.append(logits.flip(-1)[:, MIRROR_CHANNELS.to(logits.device)] if flip else logits)
    return found


def _scores(
    model: torch.nn.Module, images: torch.Tensor, size: tuple[int, int], tta: str, amp: bool, softmax: bool
) -> torch.Tensor:
    """Logits resized to `size` (bilinear), each view's softmax averaged when `softmax`."""
    return _resized(view_logits(model, images, tta, amp), size, softmax)


def _resized(logits: list[torch.Tensor], size: tuple[int, int], softmax: bool) -> torch.Tensor:
    return _averaged((F.interpolate(view, size=size, mode="bilinear", align_corners=False) for view in logits), softmax)


def _resized_rows(logits: list[torch.Tensor], size: tuple[int, int], top: int, bottom: int, softmax: bool):
    """Rows top..bottom - 1 of `_resized(logits, size, softmax)`: the same bilinear sampling points (pixel
    centres, edges clamped), computed for those rows alone."""
    height, width = size
    ys = (torch.arange(top, bottom, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # (1, rows, width, 2): x, y
    points = grid.to(logits[0].device).expand(logits[0].shape[0], -1, -1, -1)
    sample = functools.partial(F.grid_sample, grid=points, mode="bilinear", padding_mode="border", align_corners=False)
    return _averaged((sample(view) for view in logits), softmax)


def _averaged(resized: Iterable[torch.Tensor], softmax: bool) -> torch.Tensor:
    """The views' scores (each softmaxed when `softmax`) averaged, one view held at a time."""
    total, count = None, 0
    for scores in resized:
        scores = scores.softmax(1) if softmax else scores
        total, count = (scores if total is None else total + scores), count + 1
    return total / count if count > 1 else total


@torch.no_grad()
def confusion_over(
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
