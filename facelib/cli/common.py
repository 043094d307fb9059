"""What several subcommands share: help texts, and how a checkpoint argument names a file."""

from __future__ import annotations

from pathlib import Path

DATA_HELP = (
    "dataset root (train/images + train/masks, or images/ + masks/); default: $FACELIB_DATA, else the built-in "
    "synthetic faces"
)
TRAIN_MISSING_HELP = (
    "train runs missing from the run cache (default: only the smoke profile does; others use the cache)"
)
CHECKPOINT_HELP = "a checkpoint file, a run folder, a run key, or an exported .onnx file"
RESULTS_HELP = "results folder (default: results)"


def checkpoint_path(value: str) -> Path:
    """A checkpoint file, or a run folder / run key whose best checkpoint is meant."""
    path = Path(value)
    if path.is_dir():
        return Path("checkpoints") / path.name / "best.pt"
    if not path.exists() and not path.suffix and (Path("checkpoints") / value / "best.pt").exists():
        return Path("checkpoints") / value / "best.pt"
    return path
