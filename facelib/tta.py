"""Running a model on normalised images: class scores and labels at any output size, averaged over
test-time augmentation views, and the confusion matrix of a model over a loader (what training validates
with and what `facelib eval` scores with).

Test-time augmentation averages softmax probabilities over the views: `flip` adds the mirrored image (its
left/right class channels swapped back), `multiscale` adds inputs at 0.75x and 1.25x as well (each with its
mirror). Predictions are always resized back to the original image (or mask) size before the argmax.
"""

from __future__ import annotations

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


def predict_labels(
    model: torch.nn.Module, images: torch.Tensor, size: tuple[int, int], tta: str = "none", amp: bool = False
) -> torch.Tensor:
    """Class ids (B, *size): the argmax of `probabilities`. With one view the softmax is skipped (it does not
    change the argmax), and `max(1)` is used because CPU `argmax` over channels is about 4x slower."""
    return _scores(model, images, size, tta, amp, softmax=len(views(tta)) > 1).max(1).indices


def _scores(
    model: torch.nn.Module, images: torch.Tensor, size: tuple[int, int], tta: str, amp: bool, softmax: bool
) -> torch.Tensor:
    """Logits resized to `size` (bilinear), each view's softmax averaged when `softmax`."""
    model.eval()
    chosen = views(tta)
    height, width = images.shape[-2:]
    total = None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and images.device.type == "cuda")
    for scale, flip in chosen:
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
    return total / len(chosen) if len(chosen) > 1 else total


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
