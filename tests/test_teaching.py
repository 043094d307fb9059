"""Learning beyond the annotated pairs: distillation from a teacher checkpoint and pseudo-labelled test photos
(CPU, synthetic data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from facelib.checkpoint import load_checkpoint
from facelib.config import TrainConfig
from facelib.distill import Teacher
from facelib.errors import ConfigError, DataError
from facelib.infer import predict
from facelib.labels import IGNORE_INDEX
from facelib.losses import Distillation
from facelib.run import identify, load_sets, run_key
from facelib.train import train
from facelib.tta import MIRROR_CHANNELS
from tests.conftest import QUICK_RUN


def test_distillation_is_zero_at_the_teacher_positive_elsewhere_and_skips_ignored_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 19, 8, 8)
    target = torch.randint(0, 19, (2, 8, 8))
    term = Distillation()
    assert term(logits, logits.softmax(1), target).item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(2, 19, 8, 8).softmax(1)
    assert term(logits, other, target).item() > 0.1
    ignored = target.clone()
    ignored[:, :4] = IGNORE_INDEX
    scrambled = other.clone()
    scrambled[:, :, :4] = torch.randn(2, 19, 4, 8).softmax(1)  # the teacher's view of padding does not count
    assert term(logits, scrambled, ignored).item() == pytest.approx(term(logits, other, ignored).item(), rel=1e-5)
    student = logits.clone().requires_grad_(True)
    term(student, other, target).backward()
    step = student - 5 * student.grad
    assert term(step, other, target) < term(logits, other, target)  # gradient descent moves towards the teacher
    coarse = Distillation(stride=4)(logits, other, target)
    assert torch.isfinite(coarse) and coarse.item() > 0


def test_teacher_sees_the_crop_in_its_own_normalisation_and_scale(quick_run):
    best = str(Path(quick_run["checkpoint_dir"]) / "best.pt")
    content = load_checkpoint(best)
    config = quick_run["config_object"].replace(teacher=best, crop_size=32)
    teacher = Teacher(config, content["mean"], content["std"], torch.device("cpu"))
    assert teacher.scale == 2.0 and torch.allclose(teacher.gain, torch.ones(1, 3, 1, 1))
    assert torch.allclose(teacher.shift, torch.zeros(1, 3, 1, 1), atol=1e-6)
    images = torch.randn(2, 3, 32, 32)
    probabilities = teacher.probabilities(images)
    assert probabilities.shape == (2, 19, 32, 32)
    assert torch.allclose(probabilities.sum(1), torch.ones(2, 32, 32), atol=1e-5)
    shifted = Teacher(config, [m + 10 for m in content["mean"]], content["std"], torch.device("cpu"))
    expected = (10 / torch.tensor(content["std"])).view(1, 3, 1, 1)
    assert torch.allclose(shifted.shift, expected, atol=1e-5)  # a student normalised otherwise is brought back


def test_a_teacher_under_flip_tta_averages_the_crop_and_its_mirror_with_left_and_right_swapped(quick_run):
    best = str(Path(quick_run["checkpoint_dir"]) / "best.pt")
    content = load_checkpoint(best)
    config = quick_run["config_object"].replace(teacher=best)
    plain = Teacher(config, content["mean"], content["std"], torch.device("cpu"))
    flipped = Teacher(config.replace(teacher_tta="flip"), content["mean"], content["std"], torch.device("cpu"))
    images = torch.randn(2, 3, 64, 64)
    mirrored = plain.probabilities(images.flip(-1)).flip(-1)[:, MIRROR_CHANNELS]
    expected = (plain.probabilities(images) + mirrored) / 2
    assert torch.allclose(flipped.probabilities(images), expected, atol=1e-5)
    assert not torch.allclose(flipped.probabilities(images), plain.probabilities(images), atol=1e-3)
    with pytest.raises(ConfigError, match="teacher_tta must be one of"):
        config.replace(teacher=None, teacher_tta="flip")
    with pytest.raises(ConfigError, match="teacher_tta must be one of"):
        config.replace(teacher_tta="mirror")
    assert run_key(config.replace(teacher_tta="flip"), "d") != run_key(config, "d")


def test_a_distilled_run_is_keyed_by_the_teachers_content_and_records_it(quick_run, synthetic_root, tmp_path):
    best = Path(quick_run["checkpoint_dir"]) / "best.pt"
    teacher = str(shutil.copy(best, tmp_path / "teacher.pt"))
    config = TrainConfig(data=str(synthetic_root), **{**QUICK_RUN, "iterations": 4, "val_interval": 4}, teacher=teacher)
    key = run_key(config, "d")
    assert key != run_key(config.replace(teacher=None), "d")
    assert run_key(config.replace(teacher=str(best)), "d") == key  # the same weights under another path
    assert run_key(config.replace(distill_weight=0.5), "d") != key
    with pytest.raises(ConfigError, match="needs a teacher"):
        TrainConfig(distill_weight=0.5).validate()
    with pytest.raises(ConfigError, match=r"missing\.pt: file does not exist"):
        run_key(config.replace(teacher=str(tmp_path / "missing.pt")), "d")
    summary = train(config, out=tmp_path / "r", checkpoints=tmp_path / "c", progress=False)
    record = json.loads((Path(summary["run_dir"]) / "config.json").read_text())
    assert record["teacher_run_key"] == quick_run["key"] and record["teacher_sha256"]
    assert run_key(config, record["data"], teacher=record["teacher_sha256"]) == summary["key"]
    assert summary["finished"] and summary["final"]["mIoU"] > 0


def test_pseudo_labelled_test_photos_join_the_training_set_and_the_fingerprint(quick_run, dataset_copy, tmp_path):
    best = Path(quick_run["checkpoint_dir"]) / "best.pt"
    photos = sorted((dataset_copy / "test" / "images").iterdir())
    labels = tmp_path / "pseudo"
    predict(best, photos, labels, device="cpu")
    base = TrainConfig(data=str(dataset_copy), **QUICK_RUN)
    config = base.replace(pseudo_labels=str(labels))
    plain, taught = identify(base, tmp_path / "out"), identify(config, tmp_path / "out")
    assert len(taught.pseudo) == len(photos) and plain.fingerprint != taught.fingerprint
    assert run_key(config.replace(pseudo_labels=str(shutil.copytree(labels, tmp_path / "elsewhere"))), "d") == run_key(
        config, "d"
    )  # the folder's path is not part of the key; its content is part of the data fingerprint
    load_sets(config, taught)
    assert len(taught.train_set) == len(plain.split.train) + len(photos)
    assert {s.stem for s in taught.pseudo}.isdisjoint(taught.split.val)
    (labels / f"{photos[0].stem}.png").unlink()
    with pytest.raises(DataError, match=f"no <stem>.png for 1 of {len(photos)} test photos"):
        identify(config, tmp_path / "out")
    with pytest.raises(DataError, match="folder does not exist"):
        identify(base.replace(pseudo_labels=str(tmp_path / "none")), tmp_path / "out")
