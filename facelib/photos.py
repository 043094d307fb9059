"""The photos a user gives `facelib predict` (and the report's figures): any format, size, mode or EXIF
rotation read as RGB, and files and folders expanded into a list of photos."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from facelib.data import IMAGE_SUFFIXES
from facelib.errors import DataError

PHOTO_SUFFIXES = (*IMAGE_SUFFIXES, ".tif", ".tiff", ".bmp", ".webp")  # what a folder of photos is read for


def read_photo(path: str | Path) -> np.ndarray:
    """Any photo as (H, W, 3) uint8 RGB: EXIF rotation applied; greyscale, palette, RGBA (alpha dropped),
    16-bit and 32-bit integer images converted. Unreadable files raise DataError naming the file."""
    try:
        with Image.open(path) as image:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: a 48 MP photo is not held twice
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                values = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
                grey = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if image.mode == "F":
                values = np.asarray(image, dtype=np.float64)
                grey = np.clip(values * (255.0 if values.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.array(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: cannot read image ({error})") from error


def photo_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (their images, sorted) into a list of photo paths."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        elif item.is_file():
            found.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not found:
        raise DataError(f"no images found in {', '.join(map(str, inputs))}")
    return found
