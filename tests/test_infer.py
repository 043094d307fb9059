"""Evaluation and prediction: checkpoint safety, evaluation consistency, TTA, photos of every kind, CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facelib.checkpoint import load_checkpoint
from facelib.cli import main
from facelib.data import discover, load_or_make_split
from facelib.errors import ConfigError, DataError
from facelib.infer import Predictor, evaluate, predict
from facelib.labels import CLASS_NAMES, NUM_CLASSES, correct_mask, read_mask, write_mask
from facelib.photos import read_photo
from facelib.tta import MIRROR_CHANNELS, predict_labels, probabilities


@pytest.fixture(scope="module")
def best(quick_run) -> Path:
    return Path(quick_run["checkpoint_dir"]) / "best.pt"


def test_evaluate_reproduces_the_validation_score_recorded_in_training(quick_run, best, synthetic_root):
    result = evaluate(best, data=synthetic_root, out=quick_run["base"] / "results", device="cpu", workers=0)
    assert result.summary["mIoU"] == pytest.approx(quick_run["best"]["mIoU"], abs=1e-3)
    assert result.summary["mF1"] == pytest.approx(quick_run["best"]["mF1"], abs=1e-3)
    assert result.confusion.sum() == result.images * 128 * 128  # scored at the masks' own size (128), not 64
    assert result.summary["mFscore_ref"] >= result.summary["mF1"] - 1e-9  # the reference-style figure is kinder
    table = result.per_class()
    assert len(table) == NUM_CLASSES and {"IoU", "F1"} <= set(table.columns)


def test_evaluate_with_tta_and_corrected_labels_runs(quick_run, best, synthetic_root):
    for tta in ("flip", "multiscale"):
        result = evaluate(
            best,
            data=synthetic_root,
            out=quick_run["base"] / "results",
            tta=tta,
            device="cpu",
            workers=0,
            corrected_labels=True,
        )
        assert result.tta == tta and result.corrected_labels and 0 < result.summary["mIoU"] <= 100
    with pytest.raises(ConfigError, match="multiscale"):
        evaluate(best, data=synthetic_root, tta="rotate")


def test_corrected_labels_score_against_the_restored_masks(quick_run, best, synthetic_root, tmp_path):
    """Validation masks with planted left/right reversals: scored as they are, the model loses; scored with
    the audit's corrections, exactly the confusion matrix of the untouched dataset comes back."""
    copy = tmp_path / "synthetic"  # same name: the run's split file applies
    shutil.copytree(synthetic_root, copy)
    results = quick_run["base"] / "results"
    plain = evaluate(best, data=synthetic_root, out=results, device="cpu", workers=0)
    dataset = discover(copy)
    split, _ = load_or_make_split(dataset, out=results, val_fraction=quick_run["config"]["val_fraction"])
    planted = 0
    for sample in dataset.by_stem(split.val):
        mask = read_mask(sample.mask)
        if (mask == CLASS_NAMES.index("l_eye")).sum() >= 20 and (mask == CLASS_NAMES.index("r_eye")).sum() >= 20:
            write_mask(correct_mask(mask, ["l_eye/r_eye"]), sample.mask)  # swapping a correct pair reverses it
            planted += 1
    assert planted >= 2
    reversed_ = evaluate(best, data=copy, out=results, device="cpu", workers=0)
    corrected = evaluate(best, data=copy, out=results, device="cpu", workers=0, corrected_labels=True)
    assert (corrected.confusion == plain.confusion).all()
    assert not (reversed_.confusion == plain.confusion).all()


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_predicted_labels_are_the_argmax_of_the_probabilities(best, tta):
    model = Predictor(best, device="cpu").model
    x = torch.randn(2, 3, 64, 64)
    expected = probabilities(model, x, (96, 80), tta).argmax(1)
    assert torch.equal(predict_labels(model, x, (96, 80), tta), expected)


def test_flip_tta_is_mirror_equivariant(best):
    """Flip TTA of a mirrored photo is the mirrored, left/right-swapped flip TTA of the photo."""
    predictor = Predictor(best, device="cpu")
    x = torch.randn(1, 3, 64, 64)
    plain = probabilities(predictor.model, x, (64, 64), "flip")
    mirrored = probabilities(predictor.model, x.flip(-1), (64, 64), "flip")
    torch.testing.assert_close(mirrored, plain.flip(-1)[:, MIRROR_CHANNELS], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(plain, probabilities(predictor.model, x, (64, 64), "none"), atol=1e-4)


def write_photo(path: Path, kind: str, size: tuple[int, int] = (97, 131)) -> Path:
    rng = np.random.default_rng(0)
    height, width = size
    if kind == "grey":
        Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8), "L").save(path)
    elif kind == "rgba":
        Image.fromarray(rng.integers(0, 255, (height, width, 4), dtype=np.uint8), "RGBA").save(path)
    elif kind == "grey16":
        Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16)).save(path)
    elif kind == "palette":
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert("P").save(path)
    else:
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba", "grey16", "palette"])
def test_read_photo_gives_rgb_uint8(tmp_path, kind):
    photo = read_photo(write_photo(tmp_path / f"{kind}.png", kind))
    assert photo.shape == (97, 131, 3) and photo.dtype == np.uint8
    if kind == "grey16":
        assert photo.max() > 200 and photo.min() < 50  # scaled from 16 bits, not clipped to white


def test_predict_writes_palette_masks_at_each_photo_size(best, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    kinds = {
        "odd": ("rgb", (97, 131)),
        "grey": ("grey", (64, 64)),
        "rgba": ("rgba", (130, 90)),
        "deep": ("grey16", (70, 70)),
    }
    for name, (kind, size) in kinds.items():
        write_photo(folder / f"{name}.png", kind, size)
    written = predict(best, [folder], tmp_path / "out", overlay=True, tta="flip", device="cpu")
    assert len(written) == 2 * len(kinds)
    for name, (_, size) in kinds.items():
        with Image.open(tmp_path / "out" / f"{name}.png") as mask:
            assert mask.mode == "P" and mask.size == (size[1], size[0])
            assert np.asarray(mask).max() < NUM_CLASSES
        with Image.open(tmp_path / "out" / "overlays" / f"{name}.jpg") as overlay:
            assert overlay.size == (size[1], size[0])
    assert not list((tmp_path / "out").rglob(".*tmp*"))


def test_bad_checkpoints_are_refused_with_the_file_named(best, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError, match=r"garbage\.pt"):
        load_checkpoint(garbage)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "facelib-checkpoint", "payload": Payload()}))
    with pytest.raises(DataError, match=r"evil\.pt.*never loads") as refused:
        load_checkpoint(evil)
    assert "weights_only" not in str(refused.value)  # torch's advice to load it unsafely is not passed on

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(DataError, match="not a facelib inference checkpoint"):
        load_checkpoint(foreign)

    content = torch.load(best, weights_only=True)
    content["model"] = "lraspp_mobilenetv3"
    mismatched = tmp_path / "mismatched.pt"
    torch.save(content, mismatched)
    with pytest.raises(DataError, match=r"mismatched\.pt.*lraspp_mobilenetv3"):
        Predictor(mismatched, device="cpu")
    with pytest.raises(DataError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_training_state_file_gets_a_hint(quick_run):
    with pytest.raises(DataError, match=r"best\.pt"):
        load_checkpoint(Path(quick_run["checkpoint_dir"]) / "last.pt")


def test_cli_train_eval_predict(synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(synthetic_root), "--model", "fastscnn", "--crop-size", "64", "--iterations", "4"]
    args += ["--val-interval", "2", "--batch-size", "4", "--loss", "ce", "--workers", "0"]
    assert main(["train", *args]) == 0
    output = capsys.readouterr().out
    key = next(line.split()[1] for line in output.splitlines() if line.startswith("run fastscnn-"))
    assert (tmp_path / "results" / "runs" / key / "summary.json").exists()
    assert (tmp_path / "checkpoints" / key / "best.pt").exists()
    assert main(["train", *args]) == 0 and "finished earlier" in capsys.readouterr().out

    assert main(["eval", key, "--data", str(synthetic_root), "--tta", "flip", "--device", "cpu"]) == 0
    record = json.loads((tmp_path / "results" / "runs" / key / "eval-val-tta_flip.json").read_text())
    assert record["tta"] == "flip" and "mIoU" in record and "commit" in record["provenance"]

    photo = write_photo(tmp_path / "face.jpg", "rgb")
    assert main(["predict", str(photo), "--checkpoint", key, "--out", "masks", "--overlay"]) == 0
    assert (tmp_path / "masks" / "face.png").exists() and (tmp_path / "masks" / "overlays" / "face.jpg").exists()

    assert main(["predict", str(photo), "--checkpoint", "nothing.pt"]) == 2
    assert "nothing.pt" in capsys.readouterr().err
    assert main(["train", "--model", "resnet", "--data", str(synthetic_root)]) == 2
    assert "fastscnn" in capsys.readouterr().err
    assert main(["train", "--model-overrides", "{bad", "--data", str(synthetic_root)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["eval", key, "--device", "tpu9", "--data", str(synthetic_root)]) == 2
    assert "unknown device 'tpu9'" in capsys.readouterr().err


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_strips_label_a_large_output_as_one_resize_does(tta, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, NUM_CLASSES, 3, padding=1)
    images = torch.randn(2, 3, 24, 32)
    whole = predict_labels(model, images, (97, 131), tta)
    monkeypatch.setattr("facelib.tta.LARGE_OUTPUT", 500)  # strips of a few rows
    strips = predict_labels(model, images, (97, 131), tta)
    assert whole.dtype == strips.dtype == torch.uint8 and torch.equal(whole, strips)


@pytest.mark.slow
def test_a_6000_pixel_photo_is_predicted_in_bounded_memory(tmp_path):
    """A 36 MP photo: its 19 class scores at full size would be 2.7 GB; predicted in strips, the whole process
    (torch and the model included, about 1 GB on its own) stays under 1.5 GB."""
    import subprocess
    import sys

    import cv2

    from facelib.synthetic import draw_face

    photo = cv2.resize(draw_face(512, np.random.default_rng(3))[0], (6000, 6000), interpolation=cv2.INTER_LINEAR)
    Image.fromarray(photo).save(tmp_path / "huge.jpg", quality=90)
    measure = (
        "import resource, subprocess, sys; "
        "done = subprocess.run([sys.executable, '-m', 'facelib', 'predict', sys.argv[1], '--out', sys.argv[2]]); "
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", measure, str(tmp_path / "huge.jpg"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    code, peak_kib = map(int, result.stdout.split()[-2:])
    assert code == 0 and read_mask(tmp_path / "out" / "huge.png").shape == (6000, 6000)
    assert peak_kib < 1.5 * 1024**2, f"peak resident memory {peak_kib / 1024**2:.2f} GiB"
