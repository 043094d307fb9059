"""Augmentation presets: the one place where training and evaluation preprocessing is defined.

Everything is albumentations except two transforms no maintained library has: a horizontal flip that swaps
the left/right classes in the mask (`FlipSwapLeftRight`), and a random crop that retries while one class
fills most of the crop (`CatMaxRatioCrop`, mmsegmentation's `cat_max_ratio`). Presets reproduce the rows of
the reference's augmentation table (its Table 1); evaluation always normalises only.

Seeding: albumentations' `Compose.set_random_seed` hands every transform the same seed, so two `p=0.5`
transforms would always fire together. `reseed` gives each transform its own stream instead; the training
loader reseeds the pipeline per sample, so augmentation depends on (seed, iteration, sample) only — not on
worker count or process, which is what makes a resumed run identical to an uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from facelib.errors import ConfigError
from facelib.labels import IGNORE_INDEX, SWAP_LEFT_RIGHT


class FlipSwapLeftRight(A.DualTransform):
    """Mirror image and mask horizontally and exchange the left/right classes (l_eye <-> r_eye, ...), so the
    person's left stays labelled left. A plain flip would teach the model that left and right are the same."""

    def __init__(self, p: float = 0.5):
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return np.ascontiguousarray(img[:, ::-1])

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return SWAP_LEFT_RIGHT[mask[:, ::-1]]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


class CatMaxRatioCrop(A.DualTransform):
    """Random `size` x `size` crop, redrawn (up to `retries` times) while a single class covers more than
    `cat_max_ratio` of the crop's labelled pixels; the last draw is kept if none qualifies (as mmseg does).
    Images smaller than the crop are padded first (image with 0, mask with the ignore index)."""

    def __init__(self, size: int, cat_max_ratio: float = 0.75, retries: int = 10, p: float = 1.0):
        super().__init__(p=p)
        self.size, self.cat_max_ratio, self.retries = size, cat_max_ratio, retries

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data["mask"]
        height, width = mask.shape[:2]
        pad = (max(self.size - height, 0), max(self.size - width, 0))
        full_h, full_w = height + pad[0], width + pad[1]
        top = left = 0
        for _ in range(self.retries):
            top = self.py_random.randint(0, full_h - self.size)
            left = self.py_random.randint(0, full_w - self.size)
            if self.cat_max_ratio >= 1 or self._balanced(_pad(mask, pad, IGNORE_INDEX), top, left):
                break
        return {"pad": pad, "top": top, "left": left}

    def _balanced(self, mask: np.ndarray, top: int, left: int) -> bool:
        crop = mask[top : top + self.size, left : left + self.size]
        counts = np.bincount(crop.ravel(), minlength=256)[:IGNORE_INDEX]
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def _crop(self, array: np.ndarray, fill: int, pad: tuple[int, int], top: int, left: int) -> np.ndarray:
        return np.ascontiguousarray(_pad(array, pad, fill)[top : top + self.size, left : left + self.size])

    def apply(self, img: np.ndarray, pad: tuple[int, int], top: int, left: int, **params: Any) -> np.ndarray:
        return self._crop(img, 0, pad, top, left)

    def apply_to_mask(self, mask: np.ndarray, pad: tuple[int, int], top: int, left: int, **params: Any) -> np.ndarray:
        return self._crop(mask, IGNORE_INDEX, pad, top, left)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "cat_max_ratio", "retries")


def _pad(array: np.ndarray, pad: tuple[int, int], fill: int) -> np.ndarray:
    if pad == (0, 0):
        return array
    widths = [(0, pad[0]), (0, pad[1])] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, constant_values=fill)


def photometric(strength: float = 0.5, p: float = 0.5) -> A.BasicTransform:
    """mmseg's PhotoMetricDistortion scaled by `strength` (1: its defaults; 0.5, the presets' usual: brightness
    +-16 (additive), contrast and saturation x0.75-1.25, hue +-9 OpenCV units, i.e. +-18 degrees)."""
    return A.Sequential(
        [
            A.RandomBrightnessContrast(
                brightness_limit=32 * strength / 255, contrast_limit=0.5 * strength, brightness_by_max=True, p=0.5
            ),
            A.ColorJitter(
                brightness=(1, 1),
                contrast=(1, 1),
                saturation=(1 - 0.5 * strength, 1 + 0.5 * strength),
                hue=(-0.1 * strength, 0.1 * strength),
                p=0.5,
            ),
        ],
        p=p,
    )


def geometric(crop_size: int, scale: tuple[float, float] = (1.0, 1.2)) -> list[A.BasicTransform]:
    """Rotate +-25 degrees (p=0.5, mask filled with background, nearest), random resize by a factor in `scale`
    (the reference's x1.0-1.2 unless told), and a crop back to `crop_size` that avoids crops dominated by one
    class (padded with the ignore label where the resized photo is smaller than the crop)."""
    return [
        A.Rotate(
            limit=25, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, mask_interpolation=cv2.INTER_NEAREST, p=0.5
        ),
        A.RandomScale(scale_limit=(scale[0] - 1, scale[1] - 1), mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        CatMaxRatioCrop(crop_size, cat_max_ratio=0.75, retries=10),
    ]


def erasing(p: float = 0.5) -> A.BasicTransform:
    """Random erasing (Zhong et al. 2017) on the image alone: 1-3 rectangles, each 10-30% of the crop's height
    and width, set to black (0, before normalising); the mask keeps the labels under them, so the model learns
    to infer occluded parts from their context."""
    return A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.3), hole_width_range=(0.1, 0.3), p=p)


AUGMENT_PRESETS: dict[str, str] = {
    "baseline": "no augmentation: normalise only",
    "flip_swap": "horizontal flip (p=0.5) with the left/right classes swapped",
    "flip": "plain horizontal flip (p=0.5), left/right labels left as they are",
    "geometric": "rotate +-25 deg (p=0.5), resize x1.0-1.2, crop with cat_max_ratio 0.75",
    "photometric": "brightness, contrast, saturation and hue at half mmseg's strength (p=0.5)",
    "full": "flip with swap, then geometric, then photometric (on uint8 pixels, before normalising)",
    "full_wide": "full with the resize range of mmseg's standard pipelines, x0.5-2.0, instead of x1.0-1.2",
    "full_erase": "full, then random erasing (p=0.5): 1-3 rectangles of 10-30% of each side set to 0, mask kept",
    "full_mid": "full with a resize of x0.75-1.5 instead of x1.0-1.2",
    "full_color": "full with the photometric distortion at mmseg's full strength (brightness +-32, x0.5-1.5, hue +-18)",
    "full_down": "full with a resize of x0.5-1.2 instead of x1.0-1.2 (crops of 512 px photos from a whole face to its parts)",
}
CROPPING_PRESETS = ("geometric", "full", "full_wide", "full_erase", "full_mid", "full_color", "full_down")
"""The presets that end in a crop to `crop_size`, so they can train on photos larger than the crop."""


def _full(
    crop_size: int, scale: tuple[float, float] = (1.0, 1.2), strength: float = 0.5, erase: bool = False
) -> list[A.BasicTransform]:
    """The `full` pipeline (flip with swap, geometric with a resize in `scale`, photometric at `strength`), then
    random erasing if `erase`: what every `full*` preset is, with one of these changed."""
    return [FlipSwapLeftRight(p=0.5), *geometric(crop_size, scale), photometric(strength)] + (
        [erasing()] if erase else []
    )


def _augmentations(preset: str, crop_size: int) -> list[A.BasicTransform]:
    if preset not in AUGMENT_PRESETS:
        raise ConfigError(f"unknown augmentation preset {preset!r}; valid presets: {', '.join(AUGMENT_PRESETS)}")
    return {
        "baseline": [],
        "flip_swap": [FlipSwapLeftRight(p=0.5)],
        "flip": [A.HorizontalFlip(p=0.5)],
        "geometric": geometric(crop_size),
        "photometric": [photometric()],
        "full": _full(crop_size),
        "full_wide": _full(crop_size, scale=(0.5, 2.0)),
        "full_erase": _full(crop_size, erase=True),
        "full_mid": _full(crop_size, scale=(0.75, 1.5)),
        "full_color": _full(crop_size, strength=1.0),
        "full_down": _full(crop_size, scale=(0.5, 1.2)),
    }[preset]


def resize(crop_size: int) -> A.Resize:
    """Bring an image (bilinear) and its mask (nearest) to the working resolution; a pair already at that
    size passes through unchanged, which is what lets training resize its decoded pairs once, up front."""
    return A.Resize(crop_size, crop_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)


def _resize(crop_size: int | None) -> list[A.BasicTransform]:
    """The presets' first step (left out when the data already has the working resolution)."""
    return [] if crop_size is None else [resize(crop_size)]


def train_transform(
    preset: str,
    crop_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize: bool = True,
    photo_size: int | None = None,
) -> A.Compose:
    """Resize to `photo_size` (default `crop_size`; if `resize`), the preset's augmentations (a cropping preset
    crops to `crop_size`), then normalise with the dataset's mean/std (in 0..255 units)."""
    steps = _resize((photo_size or crop_size) if resize else None) + _augmentations(preset, crop_size)
    return A.Compose([*steps, A.Normalize(mean=mean, std=std, max_pixel_value=1.0)])


def preview_transform(preset: str, crop_size: int, resize: bool = True) -> A.Compose:
    """The preset's geometry and colour changes without normalising, to look at (the report's figure)."""
    return A.Compose(_resize(crop_size if resize else None) + _augmentations(preset, crop_size))


def eval_transform(crop_size: int, mean: Sequence[float], std: Sequence[float], resize: bool = True) -> A.Compose:
    """Evaluation preprocessing of the image alone: resize to the model's input (if `resize`), normalise. Masks
    are never resized for evaluation; predictions are resized back to the mask instead."""
    return A.Compose([*_resize(crop_size if resize else None), A.Normalize(mean=mean, std=std, max_pixel_value=1.0)])


def reseed(transform: A.BasicTransform | A.BaseCompose, seed: int) -> None:
    """Give every transform in the tree its own random stream derived from `seed` (see the module note)."""
    children = getattr(transform, "transforms", None)
    streams = np.random.SeedSequence(seed).spawn(1 + (len(children) if children else 0))
    state = int(streams[0].generate_state(1)[0])
    transform.random_generator = np.random.default_rng(state)
    transform.py_random = random.Random(state)
    if children:
        for child, stream in zip(children, streams[1:], strict=True):
            reseed(child, int(stream.generate_state(1)[0]))
