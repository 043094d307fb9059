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
