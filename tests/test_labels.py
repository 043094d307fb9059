from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facelib.errors import DataError
from facelib.labels import (
    CLASS_NAMES,
    LEFT_RIGHT_PAIRS,
    NUM_CLASSES,
    PALETTE,
    SWAP_LEFT_RIGHT,
    colorize,
    overlay,
    read_mask,
    swap_left_right,
    write_mask,
)


def test_classes_and_palette_match_the_dataset():
    assert NUM_CLASSES == 19 and len(PALETTE) == 19
    assert CLASS_NAMES[4:10] == ("l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear")
    assert tuple(PALETTE[CLASS_NAMES.index("skin")]) == (204, 0, 0)
    assert tuple(PALETTE[CLASS_NAMES.index("cloth")]) == (0, 204, 0)
    assert len({tuple(c) for c in PALETTE}) == 19  # colours are unambiguous


def test_swap_table_exchanges_exactly_the_pairs():
    assert LEFT_RIGHT_PAIRS == ((4, 5), (6, 7), (8, 9))
    moved = {i: int(SWAP_LEFT_RIGHT[i]) for i in range(256) if SWAP_LEFT_RIGHT[i] != i}
    assert moved == {4: 5, 5: 4, 6: 7, 7: 6, 8: 9, 9: 8}
    mask = np.random.default_rng(0).integers(0, 19, (8, 8)).astype(np.uint8)
    assert np.array_equal(swap_left_right(swap_left_right(mask)), mask)


def test_mask_round_trip_is_a_palette_png(tmp_path):
    mask = np.random.default_rng(1).integers(0, 19, (16, 20)).astype(np.uint8)
    path = tmp_path / "m.png"
    write_mask(mask, path)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[: 3 * 19] == PALETTE.flatten().tolist()
    assert np.array_equal(read_mask(path), mask)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_greyscale_and_exact_rgb_masks_are_accepted(tmp_path):
    mask = np.arange(19, dtype=np.uint8).repeat(2).reshape(2, 19)
    Image.fromarray(mask, mode="L").save(tmp_path / "grey.png")
    Image.fromarray(PALETTE[mask]).save(tmp_path / "rgb.png")
    assert np.array_equal(read_mask(tmp_path / "grey.png"), mask)
    assert np.array_equal(read_mask(tmp_path / "rgb.png"), mask)


def test_out_of_range_value_names_file_and_value(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = 42
    Image.fromarray(mask, mode="L").save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad\.png.*42"):
        read_mask(tmp_path / "bad.png")


def test_rgb_mask_with_foreign_colour_is_rejected(tmp_path):
    rgb = PALETTE[np.zeros((4, 4), np.uint8)].copy()
    rgb[1, 1] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "foreign.png")
    with pytest.raises(DataError, match=r"foreign\.png.*\(1,2,3\)"):
        read_mask(tmp_path / "foreign.png")


def test_colorize_and_overlay():
    mask = np.array([[0, 1], [13, 255]], dtype=np.uint8)
    colours = colorize(mask)
    assert colours.shape == (2, 2, 3)
    assert tuple(colours[0, 1]) == (204, 0, 0) and tuple(colours[1, 1]) == (255, 255, 255)
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, mask, alpha=0.5)
    assert tuple(blended[0, 0]) == (100, 100, 100)  # background keeps the photo
    assert tuple(blended[0, 1]) == (152, 50, 50)
