"""Shared fixtures: small synthetic datasets written to temporary folders, never to the user's cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facelib.synthetic import write_synthetic_dataset


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Generated data goes to a temporary cache, so tests never touch ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "facelib-cache"
    monkeypatch.setenv("FACELIB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset (read-only by convention: copy it with `dataset_copy` to modify)."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "synthetic", n_train=24, n_test=4, size=128)


@pytest.fixture
def dataset_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the small synthetic dataset."""
    target = tmp_path / "synthetic-copy"
    shutil.copytree(synthetic_root, target)
    return target


QUICK_RUN = {
    "model": "fastscnn",
    "crop_size": 64,
    "iterations": 60,
    "val_interval": 20,
    "batch_size": 8,
    "loss": "ce",
    "lr": 1e-2,
    "augment": "baseline",
    "workers": 0,
    "device": "cpu",
}
"""A run that learns something in seconds on the small synthetic set (2 cores); on the CPU even where a GPU
exists, since the resume test compares weights bit for bit."""


@pytest.fixture(scope="session")
def quick_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One finished short training run on synthetic data: its summary (run_dir, checkpoint_dir, metrics)."""
    from facelib.config import TrainConfig
    from facelib.train import train

    base = tmp_path_factory.mktemp("quick-run")
    config = TrainConfig(data=str(synthetic_root), **QUICK_RUN)
    summary = train(config, out=base / "results", checkpoints=base / "checkpoints", progress=False)
    return {**summary, "base": base, "config_object": config}


SLOW_FIXTURES = {"quick_run", "smoke", "shipped", "tiny_profile", "real"}
"""Tests that use these fixtures train, export or run the notebook series: seconds to minutes each."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark as `slow` every test that uses a slow fixture (others carry the mark themselves), so that
    `pytest -m "not slow"` is a loop of about 2 minutes; `make test` runs everything."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
