"""The report's figures. Each function takes plain data (arrays, tables, runs) and returns a matplotlib figure;
`Report.figure` saves it. Pictures of the dataset are shown small: they are report figures, not data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from facelib.augment import preview_transform, reseed
from facelib.labels import CLASS_NAMES, PALETTE, colorize, overlay

THUMB = 160  # pixels per side of a picture in a grid


def _thumb(picture: np.ndarray, nearest: bool = False) -> np.ndarray:
    import cv2

    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(np.ascontiguousarray(picture), (THUMB, THUMB), interpolation=interpolation)


def _grid(cells: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str], column_titles: Sequence[str] = ()):
    rows, columns = len(cells), max(len(r) for r in cells)
    figure, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.7 * rows), squeeze=False)
    for r, row in enumerate(cells):
        for c in range(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c < len(row):
                axis.imshow(row[c])
            else:
                axis.axis("off")
            if c == 0:
                axis.set_ylabel(row_titles[r], fontsize=8)
            if r == 0 and c < len(column_titles):
                title = str(column_titles[c])
                axis.set_title(title if len(title) <= 14 else title[:12] + "…", fontsize=8)
    figure.tight_layout(pad=0.3)
    return figure


def legend_figure():
    """The class palette, so every mask picture can be read."""
    figure, axis = plt.subplots(figsize=(9, 0.9))
    for i, name in enumerate(CLASS_NAMES):
        axis.add_patch(plt.Rectangle((i, 0), 0.9, 0.5, color=PALETTE[i] / 255))
        axis.text(i + 0.45, -0.15, name, ha="center", va="top", fontsize=7, rotation=45)
    axis.set_xlim(0, len(CLASS_NAMES))
    axis.set_ylim(-1, 0.6)
    axis.axis("off")
    return figure


def sample_grid(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], titles: Sequence[str]):
    """Columns: samples; rows: photo, mask, overlay."""
    cells = [
        [_thumb(i) for i in images],
        [_thumb(colorize(m), nearest=True) for m in masks],
        [_thumb(overlay(i, m)) for i, m in zip(images, masks, strict=True)],
    ]
    return _grid(cells, ["photo", "mask", "overlay"], titles)


def augmentation_figure(
    image: np.ndarray, mask: np.ndarray, presets: Sequence[str], crop_size: int, draws: int = 4, seed: int = 4
):
    """One training pair through each augmentation preset (rows), random draws seeded `seed`, `seed`+1, ...
    (columns), shown as the mask over the augmented photo, so a flip that swaps left/right labels is visible
    in the colours. (The default seeds include flipped and unflipped draws.)"""
    cells = []
    for preset in presets:
        transform = preview_transform(preset, crop_size, resize=image.shape[:2] != (crop_size, crop_size))
        row = []
        for draw in range(seed, seed + draws):
            reseed(transform, draw)
            out = transform(image=image, mask=mask)
            row.append(_thumb(overlay(out["image"], out["mask"], alpha=0.45)))
        cells.append(row)
    return _grid(cells, list(presets), [f"seed {d}" for d in range(seed, seed + draws)])


def training_curves(runs: Sequence, metric: str = "mF1", title: str = ""):
    """Training loss (left) and a validation metric (right) against iterations, one line per run: the
    reference's Figure 2."""
    figure, (loss_axis, val_axis) = plt.subplots(1, 2, figsize=(11, 3.6))
    for run in runs:
        metrics = run.metrics
        loss_axis.plot(metrics["iteration"], metrics["train_loss"], label=run.label)
        valid = run.validations
        val_axis.plot(valid["iteration"], valid[metric], marker=".", label=run.label)
    loss_axis.set(xlabel="iteration", ylabel="training loss (mean over the interval)", yscale="log")
    val_axis.set(xlabel="iteration", ylabel=f"validation {metric} (%)")
    val_axis.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def samples_curve(stages: Sequence, metric: str = "mIoU", title: str = ""):
    """A validation metric against every training sample the weights had seen, one line per stage of a chained
    recipe (each `Run` counting the samples of the stages before it): where each stage's samples went."""
    figure, axis = plt.subplots(figsize=(9, 3.6))
    for run in stages:
        valid = run.validations
        seen = run.samples_before + valid["iteration"] * run.config.batch_size
        axis.plot(seen / 1000, valid[metric], marker=".", label=run.label)
    axis.set(xlabel="training samples seen (thousands)", ylabel=f"validation {metric} (%)", title=title)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def confusion_figure(confusion: np.ndarray, title: str):
    """Row-normalised confusion matrix (each row: where the ground-truth class's pixels went), in percent."""
    confusion = np.asarray(confusion, dtype=np.float64)
    rows = confusion.sum(1, keepdims=True)
    share = np.divide(100 * confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    figure, axis = plt.subplots(figsize=(12, 10.5))  # 19 cells a side: numbers readable on a 1280 px page
    image = axis.imshow(share, cmap="Blues", vmin=0, vmax=100)
    n = len(confusion)
    axis.set_xticks(range(n), CLASS_NAMES[:n], rotation=90, fontsize=11)
    axis.set_yticks(range(n), CLASS_NAMES[:n], fontsize=11)
    axis.set(xlabel="predicted", ylabel="ground truth", title=title)
    for i in range(n):
        for j in range(n):
            if share[i, j] >= 1:
                colour = "white" if share[i, j] > 60 else "black"
                axis.text(j, i, f"{share[i, j]:.0f}", ha="center", va="center", fontsize=10, color=colour)
    figure.colorbar(image, ax=axis, fraction=0.046, label="% of the row's pixels")
    figure.tight_layout()
    return figure


def per_class_bars(table: pd.DataFrame, metric: str = "IoU", title: str = ""):
    """Grouped bars of a per-class metric, one bar per model (columns named "<model> <metric>")."""
    columns = [c for c in table.columns if c.endswith(f" {metric}")]
    figure, axis = plt.subplots(figsize=(12, 3.8))
    width = 0.8 / max(len(columns), 1)
    x = np.arange(len(table))
    for k, column in enumerate(columns):
        axis.bar(x + (k - (len(columns) - 1) / 2) * width, table[column].fillna(0), width, label=column)
    axis.set_xticks(x, table.index, rotation=45, ha="right", fontsize=8)
    axis.set(ylabel=f"{metric} (%)", ylim=(0, 100), title=title)
    axis.legend(fontsize=7, ncol=min(len(columns), 4))
    figure.tight_layout()
    return figure


def prediction_grid(
    images: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    truth: Sequence[np.ndarray] | None = None,
    titles: Sequence[str] = (),
    overlays: bool = False,
):
    """Columns: images; rows: photo, ground truth (if any), then each prediction, every mask drawn the same
    way so they compare cell by cell: in the palette's colours, or over the photo with `overlays`."""

    def draw(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return _thumb(overlay(image, mask)) if overlays else _thumb(colorize(mask), nearest=True)

    cells, names = [[_thumb(i) for i in images]], ["photo"]
    rows = ({"ground truth": truth} if truth is not None else {}) | dict(predictions)
    for name, masks in rows.items():
        cells.append([draw(i, m) for i, m in zip(images, masks, strict=True)])
        names.append(name)
    return _grid(cells, names, titles)


def mask_grid(images: Sequence[np.ndarray], masks: Mapping[str, Sequence[np.ndarray]], titles: Sequence[str] = ()):
    """Columns: images; rows: photo, then each set of masks in the palette's colours."""
    cells = [[_thumb(i) for i in images]] + [[_thumb(colorize(m), nearest=True) for m in ms] for ms in masks.values()]
    return _grid(cells, ["photo", *masks], titles)
