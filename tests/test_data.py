from __future__ import annotations

import json
import shutil

import albumentations as A
import numpy as np
import pytest
import torch

from facelib.data import (
    SegmentationDataset,
    discover,
    load_dataset,
    load_or_make_split,
    make_split,
    resolve_root,
)
from facelib.errors import DataError
from facelib.labels import read_mask


def test_discovers_the_shipped_layout(synthetic_root):
    dataset = load_dataset(synthetic_root)
    assert dataset.name == "synthetic" and dataset.synthetic
    assert len(dataset.samples) == 24 and len(dataset.test_images) == 4
    assert [s.stem for s in dataset.samples] == sorted(s.stem for s in dataset.samples)
    assert all(s.image.stem == s.mask.stem == s.stem for s in dataset.samples)


def test_discovers_a_flat_images_masks_folder(synthetic_root, tmp_path):
    flat = tmp_path / "faces"
    shutil.copytree(synthetic_root / "train" / "images", flat / "images")
    shutil.copytree(synthetic_root / "train" / "masks", flat / "masks")
    dataset = load_dataset(flat)
    assert dataset.name == "faces" and len(dataset.samples) == 24 and dataset.test_images == ()


def test_explicit_path_then_environment_then_synthetic(tmp_path, monkeypatch, isolated_cache):
    monkeypatch.setenv("FACELIB_DATA", str(tmp_path / "from-env"))
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_root() == tmp_path / "from-env"
    monkeypatch.delenv("FACELIB_DATA")
    root = resolve_root()
    assert root.parent == isolated_cache and root.name.startswith("synthetic")
    assert discover().synthetic


def test_split_is_seeded_stable_and_order_independent():
    stems = [f"{i:04x}" for i in range(1000)]
    split = make_split(stems, 0.2, seed=0)
    assert (len(split.train), len(split.val)) == (800, 200)
    assert not set(split.train) & set(split.val)
    assert make_split(list(reversed(stems)), 0.2, seed=0) == split
    assert make_split(stems, 0.2, seed=1).val != split.val
    # adding files moves none of the existing ones across the split
    grown = make_split([*stems, *(f"new{i}" for i in range(50))], 0.2, seed=0)
    assert len(set(split.val) - set(grown.val)) < 20


def test_split_file_is_written_then_read_back(synthetic_root, tmp_path):
    dataset = discover(synthetic_root)
    split, path = load_or_make_split(dataset, out=tmp_path)
    assert path == tmp_path / "splits" / "synthetic-seed0.json"
    content = json.loads(path.read_text())
    assert content["n_train"] == 19 and content["n_val"] == 5
    content["val"], content["train"] = content["train"][:5], content["val"] + content["train"][5:]
    path.write_text(json.dumps(content))  # an edited split file is respected as written
    again, _ = load_or_make_split(dataset, out=tmp_path)
    assert again.val == tuple(content["val"]) and again != split


def test_split_file_that_does_not_match_is_an_error(synthetic_root, tmp_path):
    dataset = discover(synthetic_root)
    _, path = load_or_make_split(dataset, out=tmp_path)
    content = json.loads(path.read_text())
    content["train"] = content["train"][1:]
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match="does not match"):
        load_or_make_split(dataset, out=tmp_path)


@pytest.mark.parametrize("cache", [False, True])
def test_dataset_returns_tensors(synthetic_root, cache):
    dataset = discover(synthetic_root)
    data = SegmentationDataset(dataset.samples[:4], cache=cache)
    image, mask = data[1]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert mask.shape == (128, 128) and mask.dtype == torch.int64
    assert np.array_equal(mask.numpy(), read_mask(dataset.samples[1].mask))


def test_cache_is_shared_and_matches_decoding(synthetic_root):
    samples = discover(synthetic_root).samples[:6]
    cached, plain = SegmentationDataset(samples, cache=True), SegmentationDataset(samples)
    assert cached.cached[0].is_shared()
    loader = torch.utils.data.DataLoader(cached, batch_size=3, num_workers=2)
    images = torch.cat([batch[0] for batch in loader])
    assert torch.equal(images, torch.stack([plain[i][0] for i in range(6)]))


def test_albumentations_transform_hook(synthetic_root):
    samples = discover(synthetic_root).samples[:2]
    transform = A.Compose([A.CenterCrop(64, 64), A.Normalize(mean=(0.5,) * 3, std=(0.25,) * 3)])
    image, mask = SegmentationDataset(samples, transform=transform)[0]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64)
    assert image.min() < 0  # normalised


@pytest.mark.parametrize("cache", [False, True])
def test_corrections_swap_the_named_pairs_on_load(synthetic_root, cache):
    samples = discover(synthetic_root).samples[:3]
    stem = samples[1].stem
    data = SegmentationDataset(samples, cache=cache, corrections={stem: ["l_eye/r_eye"]})
    original = read_mask(samples[1].mask)
    _, mask = data.load(1)
    expected = original.copy()
    expected[original == 4], expected[original == 5] = 5, 4
    assert (original == 4).any() or (original == 5).any()
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(data.load(0)[1], read_mask(samples[0].mask))  # others untouched


def test_image_only_transform_keeps_the_mask_and_seeded_index_is_reproducible(synthetic_root):
    samples = discover(synthetic_root).samples[:2]
    data = SegmentationDataset(samples, transform=A.Compose([A.Resize(64, 64)]), image_only=True)
    image, mask = data[0]
    assert image.shape == (3, 64, 64) and mask.shape == (128, 128)
    noisy = SegmentationDataset(samples, transform=A.Compose([A.GaussNoise(p=1.0)]))
    assert torch.equal(noisy[(0, 7)][0], noisy[(0, 7)][0]) and not torch.equal(noisy[(0, 7)][0], noisy[(0, 8)][0])


def test_split_file_names_its_validation_share_and_refuses_a_mismatch(synthetic_root, tmp_path):
    dataset = discover(synthetic_root)
    _, default = load_or_make_split(dataset, out=tmp_path)
    small, path = load_or_make_split(dataset, out=tmp_path, val_fraction=0.1)
    assert path == tmp_path / "splits" / "synthetic-seed0-val0.1.json" and path != default
    assert len(small.val) == 2 and small.val_fraction == 0.1
    path.rename(default.with_name("synthetic-seed1.json"))  # a file whose content says seed 0, share 0.1
    with pytest.raises(DataError, match=r"seed 0, val_fraction 0\.1"):
        load_or_make_split(dataset, out=tmp_path, seed=1)


def test_kept_decoded_files_are_read_once_and_read_again_when_changed(dataset_copy, monkeypatch):
    import facelib.data as data_module

    dataset = discover(dataset_copy)
    reads = []

    def counting(path):
        reads.append(path)
        return data_module.read_image(path)

    data_module.keep_decoded(True)
    try:
        first = data_module.DECODED.get(dataset.samples[0].image, counting)
        again = data_module.DECODED.get(dataset.samples[0].image, counting)
        assert again is first and len(reads) == 1 and not first.flags.writeable
        shutil.copy(dataset.samples[1].image, dataset.samples[0].image)  # new content, new size/mtime
        changed = data_module.DECODED.get(dataset.samples[0].image, counting)
        assert len(reads) == 2 and not np.array_equal(changed, first)
        cached = SegmentationDataset(dataset.samples[:3], cache=True)
        fresh = SegmentationDataset(dataset.samples[:3], cache=True)
        assert torch.equal(cached.cached[0], fresh.cached[0])
    finally:
        data_module.keep_decoded(False)
    assert not data_module.DECODED.items


def test_kept_decoded_files_give_writable_tensors_without_warnings(synthetic_root):
    import warnings

    import facelib.data as data_module

    data_module.keep_decoded(True)
    try:
        dataset = SegmentationDataset(discover(synthetic_root).samples[:2], image_only=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dataset[0], dataset[0]  # the second read comes from the kept (read-only) arrays
    finally:
        data_module.keep_decoded(False)
