from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facelib.data import discover, make_split
from facelib.labels import write_mask
from facelib.stats import class_table, class_weights, normalization, resolution_ceiling, rgb_table, scan


@pytest.fixture
def tiny(tmp_path):
    """Three 4x4 images with known pixels (PNG, lossless) and masks with known class counts."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (4, 4, 3)).astype(np.uint8) for _ in range(3)]
    masks = [np.zeros((4, 4), np.uint8) for _ in range(3)]
    masks[0][:2] = 1  # 8 skin, 8 background
    masks[1][:, :1] = 13  # 4 hair, 12 background
    masks[2][:] = 1  # 16 skin
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(image).save(tmp_path / "images" / f"p{i}.png")
        write_mask(mask, tmp_path / "masks" / f"p{i}.png")
    return discover(tmp_path), images


def test_rgb_statistics_under_both_definitions(tiny):
    dataset, images = tiny
    scanned = scan(dataset)
    stems = [s.stem for s in dataset.samples]
    table = rgb_table(scanned, stems).set_index(["definition", "statistic"])
    pooled = np.concatenate([i.reshape(-1, 3) for i in images]).astype(np.float64)
    assert table.loc[("global", "mean")].to_numpy() == pytest.approx(pooled.mean(0))
    assert table.loc[("global", "std")].to_numpy() == pytest.approx(pooled.std(0))
    per_image_std = np.mean([i.reshape(-1, 3).std(0) for i in images], axis=0)
    assert table.loc[("per_image_mean", "std")].to_numpy() == pytest.approx(per_image_std)
    mean, std = normalization(scanned, stems)
    assert mean == pytest.approx(pooled.mean(0), abs=0.005) and std == pytest.approx(pooled.std(0), abs=0.005)


def test_class_frequency_and_presence(tiny):
    dataset, _ = tiny
    split = make_split([s.stem for s in dataset.samples], val_fraction=1 / 3, seed=0)
    table = class_table(scan(dataset), split)
    assert table.loc["skin", "pixels_all"] == 24 and table.loc["hair", "pixels_all"] == 4
    assert table.loc["skin", "freq_all"] == pytest.approx(24 / 48)
    assert table.loc["skin", "presence_all"] == pytest.approx(2 / 3)
    assert table.loc["background", "presence_all"] == pytest.approx(2 / 3)
    assert table["pixels_train"].sum() == 32 and table["pixels_val"].sum() == 16


def test_class_weights_by_hand():
    counts = np.zeros((2, 19), np.int64)
    counts[0, [0, 1]] = [90, 10]
    counts[1, [0, 2]] = [60, 40]
    weights = class_weights(counts)
    freq = np.array([150, 10, 40]) / 200
    inv = 1 / np.sqrt(freq)
    assert weights["inv_sqrt_freq"].to_numpy()[:3] == pytest.approx(inv / inv.mean())
    balanced = np.array([150 / 200, 10 / 100, 40 / 100])  # pixels over pixels of images containing the class
    assert weights["median_freq"].to_numpy()[:3] == pytest.approx(np.median(balanced) / balanced)
    assert (weights["inv_sqrt_freq"].to_numpy()[3:] == 0).all()


def test_resolution_ceiling_is_perfect_at_full_size_and_loses_thin_parts_below():
    """A 1 px necklace line survives at the mask's own size and vanishes at a quarter of it, where it still
    counts (IoU 0) because it is in the ground truth; ignored pixels are never scored."""
    mask = np.ones((16, 16), np.uint8)  # skin
    mask[:, :8] = 0  # background
    mask[:, 11] = 16  # neck_l, 1 px wide
    mask[:2, :2] = 255  # ignored
    table = resolution_ceiling([mask], (16, 4)).set_index("side (px)")
    assert table.loc[16, ["mIoU", "mF1", "per_image_F"]].tolist() == pytest.approx([100, 100, 100])
    assert table.loc[4, "lowest 3 IoU"].startswith("neck_l 0.0")
    assert table.loc[4, "mIoU"] < 100 * 2 / 3 + 1e-6  # neck_l scores 0 of the three classes
