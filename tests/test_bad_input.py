"""Every kind of bad input gives one clear error naming the file(s), a non-zero exit, and no output."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelib.cli import main
from facelib.labels import PALETTE


def first(root: Path, kind: str) -> Path:
    return sorted((root / "train" / kind).iterdir())[0]


def missing_folder(root: Path) -> tuple[Path, str]:
    return root / "nowhere", r"nowhere: dataset folder does not exist"


def empty_folder(root: Path) -> tuple[Path, str]:
    empty = root.parent / "empty"
    (empty / "train" / "images").mkdir(parents=True)
    (empty / "train" / "masks").mkdir(parents=True)
    return empty, r"empty: no images .* found; folder is empty"


def folder_without_layout(root: Path) -> tuple[Path, str]:
    bare = root.parent / "bare"
    bare.mkdir()
    return bare, r"bare: no train/images \+ train/masks"


def image_without_mask(root: Path) -> tuple[Path, str]:
    mask = first(root, "masks")
    mask.unlink()
    return root, rf"{mask.stem}\.jpg: image has no mask"


def two_images_one_name(root: Path) -> tuple[Path, str]:
    image = first(root, "images")
    image.with_suffix(".png").write_bytes(b"")
    return root, rf"{image.stem}\.\*: several images share this name"


def truncated_jpeg(root: Path) -> tuple[Path, str]:
    image = first(root, "images")
    image.write_bytes(image.read_bytes()[:600])
    return root, rf"{image.name}: cannot decode image"


def mask_of_wrong_size(root: Path) -> tuple[Path, str]:
    mask = first(root, "masks")
    Image.open(mask).resize((64, 100), Image.NEAREST).save(mask)
    return root, rf"{mask.name}: mask is 64x100 but its image is 128x128"


def mask_with_value_42(root: Path) -> tuple[Path, str]:
    mask = first(root, "masks")
    ids = np.array(Image.open(mask))
    ids[0, 0] = 42
    Image.fromarray(ids, mode="L").save(mask)
    return root, rf"{mask.name}: mask has values outside the class ids 0..18: 42"


def rgb_mask_with_foreign_colour(root: Path) -> tuple[Path, str]:
    mask = first(root, "masks")
    rgb = PALETTE[np.array(Image.open(mask))].copy()
    rgb[5, 5] = (10, 20, 30)
    Image.fromarray(rgb).save(mask)
    return root, rf"{mask.name}: RGB mask has colours that are not in the class palette: \(10,20,30\)"


CASES = [
    missing_folder,
    empty_folder,
    folder_without_layout,
    image_without_mask,
    two_images_one_name,
    truncated_jpeg,
    mask_of_wrong_size,
    mask_with_value_42,
    rgb_mask_with_foreign_colour,
]


@pytest.mark.parametrize("command", ["stats", "audit"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_bad_input_is_one_clear_error_and_writes_nothing(case, command, dataset_copy, tmp_path, capsys):
    data, message = case(dataset_copy)
    out = tmp_path / "results"
    assert main([command, str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"facelib {command}: error: ")
    assert re.search(message, err), err
    assert not out.exists()


def test_all_offending_files_are_listed_at_once(dataset_copy, capsys):
    masks = sorted((dataset_copy / "train" / "masks").iterdir())
    images = sorted((dataset_copy / "train" / "images").iterdir())
    images[1].write_bytes(b"not a jpeg")
    ids = np.array(Image.open(masks[2]))
    ids[0, 0] = 42
    Image.fromarray(ids, mode="L").save(masks[2])
    Image.open(masks[3]).resize((10, 10)).save(masks[3])
    assert main(["stats", str(dataset_copy), "--out", str(dataset_copy / "out")]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert images[1].name in err and masks[2].name in err and masks[3].name in err


def test_unmatched_files_are_all_listed(dataset_copy, capsys):
    masks = sorted((dataset_copy / "train" / "masks").iterdir())
    masks[0].unlink()
    masks[1].unlink()
    (dataset_copy / "train" / "masks" / "stray.png").write_bytes(masks[2].read_bytes())
    assert main(["audit", str(dataset_copy), "--out", str(dataset_copy.parent / "out")]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err and "stray.png: mask has no image" in err
    assert f"{masks[0].stem}.jpg: image has no mask" in err


def _quick_train_args(root: Path, tmp_path: Path) -> list[str]:
    return [
        "train",
        "cpu-quick",
        "--model",
        "fastscnn",
        "--crop-size",
        "64",
        "--iterations",
        "4",
        "--val-interval",
        "2",
        "--data",
        str(root),
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "results"),
        "--checkpoints",
        str(tmp_path / "checkpoints"),
    ]


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_last_checkpoint_is_one_line_naming_it_and_rerun_starts_again(
    damage, synthetic_root, tmp_path, capsys
):
    args = _quick_train_args(synthetic_root, tmp_path)
    assert main([*args, "--stop-after", "2"]) == 0
    (last,) = (tmp_path / "checkpoints").glob("*/last.pt")
    content = last.read_bytes()
    if damage == "truncated":
        last.write_bytes(content[: len(content) // 2])
    else:
        import torch

        torch.save({"model": {"weight": torch.zeros(2)}}, last)  # readable, but not this run's training state
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(last) in err and "--rerun" in err and "Traceback" not in err
    assert main([*args, "--rerun"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and ".lock" not in out  # the run's lock is not listed as something it wrote
