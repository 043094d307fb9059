"""The 19 CelebAMask-HQ classes, their palette, the left/right pairs, and mask reading/writing.

Masks are stored the way the dataset ships them: palette ("P") PNGs whose pixel index is the class id, so
any image viewer shows colours and any loader reads class ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facelib.errors import DataError
from facelib.outputs import atomic_path

CLASS_NAMES: tuple[str, ...] = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255

# The dataset's own PNG palette, one RGB triple per class id.
PALETTE: np.ndarray = np.array(
    [
        (0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204),
        (0, 255, 255), (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0), (255, 255, 0),
        (0, 0, 153), (0, 0, 204), (255, 51, 153), (0, 204, 204), (0, 51, 0), (255, 153, 51),
        (0, 204, 0),
    ],
    dtype=np.uint8,
)  # fmt: skip

# (person's left, person's right) class ids; "l_" parts appear on the image's right.
LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = ((4, 5), (6, 7), (8, 9))


def _swap_table() -> np.ndarray:
    """A 256-entry lookup table mapping each class id to its mirror partner (255 stays 255)."""
    table = np.arange(256, dtype=np.uint8)
    for left, right in LEFT_RIGHT_PAIRS:
        table[left], table[right] = right, left
    return table


SWAP_LEFT_RIGHT: np.ndarray = _swap_table()


def swap_left_right(mask: np.ndarray) -> np.ndarray:
    """Exchange the left/right classes of a uint8 mask (what a horizontal flip must also do)."""
    return SWAP_LEFT_RIGHT[mask]


def _rgb_to_ids(rgb: np.ndarray, path: Path) -> np.ndarray:
    """Map an RGB colour mask to class ids; every colour must be exactly a palette colour."""
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    palette_codes = (PALETTE[:, 0].astype(np.int32) << 16) | (PALETTE[:, 1].astype(np.int32) << 8) | PALETTE[:, 2]
    colours, inverse = np.unique(codes, return_inverse=True)
    foreign = colours[~np.isin(colours, palette_codes)].tolist()
    if foreign:
        shown = ", ".join(f"({c >> 16},{(c >> 8) & 255},{c & 255})" for c in foreign[:8])
        more = f" and {len(foreign) - 8} more" if len(foreign) > 8 else ""
        raise DataError(f"{path}: RGB mask has colours that are not in the class palette: {shown}{more}")
    lookup = {code: i for i, code in enumerate(palette_codes.tolist())}
    ids = np.array([lookup[c] for c in colours.tolist()], dtype=np.uint8)
    return ids[inverse].reshape(codes.shape)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask PNG as an (H, W) uint8 array of class ids.

    Accepts palette (P) or greyscale (L) PNGs whose values are class ids, and RGB colour masks whose every
    colour is exactly a palette colour. Anything else raises DataError naming the file and the bad values.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("P", "L"):
                ids = np.array(image, dtype=np.uint8)
            elif mode in ("RGB", "RGBA"):
                ids = _rgb_to_ids(np.array(image.convert("RGB")), path)
            else:
                raise DataError(f"{path}: mask mode {mode!r} is not supported (use a palette, greyscale or RGB PNG)")
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{path}: cannot decode mask ({error})") from error
    bad = np.unique(ids[ids >= NUM_CLASSES])
    if bad.size:
        raise DataError(
            f"{path}: mask has values outside the class ids 0..{NUM_CLASSES - 1}: {', '.join(map(str, bad[:10]))}"
        )
    return ids


def write_mask(mask: np.ndarray, path: str | Path) -> None:
    """Write class ids as a palette PNG (the dataset's own format), atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
    if mask.min() < 0 or mask.max() >= NUM_CLASSES:
        raise ValueError(f"mask values must be class ids 0..{NUM_CLASSES - 1}")
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(PALETTE.flatten().tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def colorize(mask: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB picture of a class-id mask; ignored pixels (255) are white."""
    table = np.full((256, 3), 255, dtype=np.uint8)
    table[:NUM_CLASSES] = PALETTE
    return table[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised mask over an RGB image; background pixels keep the photo untouched."""
    image = np.asarray(image, dtype=np.float32)
    colours = colorize(mask).astype(np.float32)
    weight = np.where(np.asarray(mask)[..., None] == 0, 0.0, alpha)
    return np.clip(image * (1 - weight) + colours * weight, 0, 255).round().astype(np.uint8)


def correct_mask(mask: np.ndarray, reversed_pairs: list[str]) -> np.ndarray:
    """Swap the named pairs (e.g. ["l_eye/r_eye"]) back; other classes are untouched."""
    table = np.arange(256, dtype=np.uint8)
    for pair in reversed_pairs:
        left, right = (CLASS_NAMES.index(n) for n in pair.split("/"))
        table[left], table[right] = SWAP_LEFT_RIGHT[left], SWAP_LEFT_RIGHT[right]
    return table[mask]
