"""Augmentation: the label-swapping flip, the cat_max_ratio crop, rotation, presets and seeding."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from facelib.augment import (
    AUGMENT_PRESETS,
    CatMaxRatioCrop,
    FlipSwapLeftRight,
    eval_transform,
    reseed,
    train_transform,
)
from facelib.errors import ConfigError
from facelib.labels import CLASS_NAMES, IGNORE_INDEX, LEFT_RIGHT_PAIRS, read_mask
from facelib.synthetic import draw_face

C = {name: i for i, name in enumerate(CLASS_NAMES)}
MEAN, STD = [120.0, 100.0, 90.0], [70.0, 65.0, 60.0]


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, np.ndarray]:
    """A synthetic face with both eyes visible, so the swap has something to move."""
    rng = np.random.default_rng(3)
    while True:
        image, mask, params = draw_face(128, rng)
        if abs(params.yaw) < 0.3 and (mask == C["l_eye"]).sum() > 10 and (mask == C["r_eye"]).sum() > 10:
            return image, mask


def flip_swap(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = A.Compose([FlipSwapLeftRight(p=1.0)])(image=image, mask=mask)
    return out["image"], out["mask"]


def test_flip_swap_twice_is_identity(face):
    image, mask = face
    once = flip_swap(image, mask)
    twice = flip_swap(*once)
    assert not np.array_equal(once[1], mask)
    np.testing.assert_array_equal(twice[0], image)
    np.testing.assert_array_equal(twice[1], mask)


def test_flip_swap_moves_left_labels_to_mirrored_right_positions(face):
    image, mask = face
    flipped_image, flipped_mask = flip_swap(image, mask)
    np.testing.assert_array_equal(flipped_image, image[:, ::-1])
    for left, right in LEFT_RIGHT_PAIRS:
        np.testing.assert_array_equal(flipped_mask == left, (mask == right)[:, ::-1])
        np.testing.assert_array_equal(flipped_mask == right, (mask == left)[:, ::-1])
    others = ~np.isin(mask, [c for pair in LEFT_RIGHT_PAIRS for c in pair])
    np.testing.assert_array_equal(flipped_mask[others[:, ::-1]], mask[:, ::-1][others[:, ::-1]])
    # after the flip the person's left eye is still on the image's right, as the dataset's convention says
    columns = np.arange(mask.shape[1])
    assert columns @ (flipped_mask == C["l_eye"]).sum(0) / (flipped_mask == C["l_eye"]).sum() > mask.shape[1] / 2


def test_plain_flip_keeps_labels(face):
    image, mask = face
    out = A.Compose([A.HorizontalFlip(p=1.0)])(image=image, mask=mask)
    np.testing.assert_array_equal(out["mask"], mask[:, ::-1])


def dominated_mask() -> np.ndarray:
    """96x96, background except a 40x40 block of skin with a nose in it in the top-left corner."""
    mask = np.zeros((96, 96), np.uint8)
    mask[:40, :40] = C["skin"]
    mask[10:30, 10:30] = C["nose"]
    return mask


def largest_share(mask: np.ndarray) -> float:
    counts = np.bincount(mask[mask != 255].ravel())
    return counts.max() / counts.sum()


def test_cat_max_ratio_crop_retries_until_no_class_dominates():
    mask, image = dominated_mask(), np.zeros((96, 96, 3), np.uint8)
    shares = {}
    for retries in (1, 10):
        crop = A.Compose([CatMaxRatioCrop(48, cat_max_ratio=0.75, retries=retries)], seed=0)
        found = []
        for seed in range(200):
            reseed(crop, seed)
            out = crop(image=image, mask=mask)
            assert out["mask"].shape == (48, 48) and out["image"].shape == (48, 48, 3)
            found.append(largest_share(out["mask"]) < 0.75)
        shares[retries] = np.mean(found)
    # one draw is balanced about a fifth of the time; ten draws almost always find a balanced crop
    assert shares[1] < 0.5
    assert shares[10] > 0.85


def test_cat_max_ratio_crop_keeps_last_draw_when_nothing_qualifies_and_pads_small_images():
    mask = np.zeros((40, 40), np.uint8)  # one class everywhere: no crop can qualify
    out = A.Compose([CatMaxRatioCrop(64)])(image=np.full((40, 40, 3), 7, np.uint8), mask=mask)
    assert out["mask"].shape == (64, 64)
    assert set(np.unique(out["mask"])) == {0, 255}  # padding is ignored, never labelled background
    assert (out["mask"] == 0).sum() == 40 * 40 and (out["image"] == 7).all(axis=2).sum() == 40 * 40


def test_geometric_never_invents_class_ids(face, real_data_or_none):
    image, mask = face
    pairs = [(image, mask)]
    if real_data_or_none is not None:
        pairs.append(real_data_or_none)
    transform = train_transform("geometric", 128, MEAN, STD, resize=True)
    for image, mask in pairs:
        allowed = set(np.unique(mask).tolist()) | {0}
        for seed in range(30):
            reseed(transform, seed)
            out = transform(image=image, mask=mask)
            assert set(np.unique(out["mask"]).tolist()) <= allowed
            assert out["mask"].shape == (128, 128)


@pytest.fixture(scope="module")
def real_data_or_none():
    """The first real pair when FACELIB_DATA is set (CI), else None."""
    import os

    from facelib.data import discover, read_image

    if not os.environ.get("FACELIB_DATA"):
        return None
    sample = discover().samples[0]
    return read_image(sample.image), read_mask(sample.mask)


@pytest.mark.parametrize("preset", list(AUGMENT_PRESETS))
def test_every_preset_gives_normalised_crops(face, preset):
    image, mask = face
    transform = train_transform(preset, 64, MEAN, STD, resize=True)
    reseed(transform, 1)
    out = transform(image=image, mask=mask)
    assert out["image"].shape == (64, 64, 3) and out["image"].dtype == np.float32
    assert out["mask"].shape == (64, 64) and out["mask"].dtype == np.uint8
    assert abs(float(out["image"].mean())) < 3  # normalised, not 0..255


def test_baseline_and_eval_only_normalise(face):
    image, mask = face
    expected = (image.astype(np.float32) - np.float32(MEAN)) / np.float32(STD)
    out = train_transform("baseline", 128, MEAN, STD, resize=False)(image=image, mask=mask)
    np.testing.assert_allclose(out["image"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["mask"], mask)
    np.testing.assert_allclose(eval_transform(128, MEAN, STD, resize=False)(image=image)["image"], expected, atol=1e-5)


def test_photometric_never_touches_the_mask(face):
    image, mask = face
    transform = train_transform("photometric", 128, MEAN, STD, resize=False)
    changed = 0
    for seed in range(20):
        reseed(transform, seed)
        out = transform(image=image, mask=mask)
        np.testing.assert_array_equal(out["mask"], mask)
        changed += not np.allclose(out["image"], (image - np.float32(MEAN)) / np.float32(STD), atol=1e-4)
    assert 3 <= changed <= 18  # applied about half the time


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="flip_swap"):
        train_transform("mixup", 64, MEAN, STD)


def test_reseed_is_reproducible_and_gives_each_transform_its_own_stream(face):
    image, mask = face
    transform = train_transform("full", 64, MEAN, STD, resize=True)
    reseed(transform, 5)
    first = transform(image=image, mask=mask)
    reseed(transform, 5)
    again = transform(image=image, mask=mask)
    np.testing.assert_array_equal(first["image"], again["image"])
    np.testing.assert_array_equal(first["mask"], again["mask"])
    # albumentations' own set_random_seed gives every transform the same stream, so two p=0.5 transforms
    # always fire together; ours must not
    pair = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    probe = np.arange(16, dtype=np.uint8).reshape(4, 4)
    agreement = []
    for seed in range(100):
        reseed(pair, seed)
        out = pair(image=probe)["image"]
        agreement.append(bool(out[0, 0] in (probe[0, 3], probe[3, 3])) == bool(out[0, 0] in (probe[3, 0], probe[3, 3])))
    assert 0.3 < np.mean(agreement) < 0.7


def test_wide_scale_shrinks_photos_below_the_crop_and_erasing_and_colour_leave_the_mask(face):
    image, mask = face
    names = ("full", "full_wide", "full_mid", "full_down", "full_erase", "full_color")
    runs = {name: train_transform(name, 64, MEAN, STD, resize=True) for name in names}
    padded, erased, recoloured = {"full": 0, "full_wide": 0, "full_mid": 0, "full_down": 0}, 0, 0
    for seed in range(24):
        out = {}
        for name, transform in runs.items():
            reseed(transform, seed)
            out[name] = transform(image=image, mask=mask)
        for name in padded:
            padded[name] += bool((out[name]["mask"] == IGNORE_INDEX).any())
        for name in ("full_erase", "full_color"):  # same draws, mask kept
            np.testing.assert_array_equal(out[name]["mask"], out["full"]["mask"])
        erased += not np.array_equal(out["full_erase"]["image"], out["full"]["image"])
        recoloured += not np.array_equal(out["full_color"]["image"], out["full"]["image"])
    # x0.5-1.0 of x0.5-2.0 and x0.75-1.0 of x0.75-1.5: a third of draws each; x0.5-1.0 of x0.5-1.2: 5 in 7
    assert padded["full"] == 0 and 3 <= padded["full_wide"] <= 18 and 3 <= padded["full_mid"] <= 18
    assert 11 <= padded["full_down"] <= 22
    assert 4 <= recoloured <= 20  # the distortion fires half the time, with twice the range when it does
    assert 4 <= erased <= 20  # erasing fires about half the time
