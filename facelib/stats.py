"""Dataset statistics: class pixel frequency and presence per split, RGB mean/std, class weights.

Everything comes from one pass that decodes each pair once and keeps per-image sums, so the exact global
statistics and the per-image averages are both available without a second pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from facelib.data import FaceDataset, Sample, Split, load_dataset, load_or_make_split, read_image
from facelib.labels import CLASS_NAMES, NUM_CLASSES, read_mask
from facelib.metrics import ConfusionMatrix
from facelib.outputs import provenance, save_figure, write_table


@dataclass
class DatasetScan:
    """Per-image sums from one decoding pass, in the dataset's sample order."""

    stems: list[str]
    class_pixels: np.ndarray  # (N, C) int64 pixel count of each class in each mask
    rgb_sum: np.ndarray  # (N, 3) float64 sum of pixel values per channel
    rgb_sum_sq: np.ndarray  # (N, 3) float64 sum of squared pixel values per channel
    pixels: np.ndarray  # (N,) int64 pixel count of each image

    def rows(self, stems: tuple[str, ...] | list[str]) -> np.ndarray:
        index = {s: i for i, s in enumerate(self.stems)}
        return np.array([index[s] for s in stems], dtype=np.int64)


def _scan_one(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    image = read_image(sample.image).reshape(-1, 3).astype(np.float64)
    mask = read_mask(sample.mask)
    counts = np.bincount(mask.ravel(), minlength=NUM_CLASSES)
    return counts, image.sum(0), (image * image).sum(0), image.shape[0]


def scan(dataset: FaceDataset, workers: int = 4) -> DatasetScan:
    """Decode every pair once and collect per-image class counts and RGB sums."""
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(_scan_one, dataset.samples))
    return DatasetScan(
        stems=[s.stem for s in dataset.samples],
        class_pixels=np.stack([r[0] for r in results]).astype(np.int64),
        rgb_sum=np.stack([r[1] for r in results]),
        rgb_sum_sq=np.stack([r[2] for r in results]),
        pixels=np.array([r[3] for r in results], dtype=np.int64),
    )


def class_table(scan_: DatasetScan, split: Split) -> pd.DataFrame:
    """Per class and split: pixel count, pixel frequency (share of all pixels) and presence (share of images)."""
    table = pd.DataFrame(index=pd.Index(CLASS_NAMES, name="class"))
    table.insert(0, "id", range(NUM_CLASSES))
    for name, stems in (("train", split.train), ("val", split.val), ("all", split.train + split.val)):
        counts = scan_.class_pixels[scan_.rows(stems)]
        table[f"pixels_{name}"] = counts.sum(0)
        table[f"freq_{name}"] = counts.sum(0) / max(counts.sum(), 1)
        table[f"presence_{name}"] = (counts > 0).mean(0) if len(stems) else 0.0
    return table


def rgb_table(scan_: DatasetScan, stems: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """RGB mean/std under two definitions, over the given images (train + val by convention).

    - `global`: the exact statistics of all pixels pooled together, std = sqrt(E[x^2] - E[x]^2). This is
      what `Normalize` should use: it makes the pooled pixel distribution zero-mean, unit-variance.
    - `per_image_mean`: the average over images of each image's own mean and own std. Its mean equals the
      global mean when all images have the same size, but its std leaves out the spread *between* image
      means, so it is smaller; tools that average per-image (or per-batch) std report this one.
    """
    rows = scan_.rows(stems)
    total, s1, s2 = scan_.pixels[rows].sum(), scan_.rgb_sum[rows].sum(0), scan_.rgb_sum_sq[rows].sum(0)
    global_mean = s1 / total
    global_std = np.sqrt(s2 / total - global_mean**2)
    n = scan_.pixels[rows][:, None].astype(np.float64)
    image_mean = scan_.rgb_sum[rows] / n
    image_std = np.sqrt(np.maximum(scan_.rgb_sum_sq[rows] / n - image_mean**2, 0))
    table = pd.DataFrame(
        [
            ("global", "mean", *global_mean),
            ("global", "std", *global_std),
            ("per_image_mean", "mean", *image_mean.mean(0)),
            ("per_image_mean", "std", *image_std.mean(0)),
        ],
        columns=["definition", "statistic", "R", "G", "B"],
    )
    return table


def normalization(scan_: DatasetScan, stems: tuple[str, ...] | list[str]) -> tuple[list[float], list[float]]:
    """The exact global (mean, std) over `stems` (see `rgb_table`): the definition training normalises with.
    Each run computes it over its own training split (`training_normalization`, below), so its figures
    differ slightly from these when `stems` include validation images."""
    table = rgb_table(scan_, stems).set_index(["definition", "statistic"])
    return (table.loc[("global", "mean")].round(2).tolist(), table.loc[("global", "std")].round(2).tolist())


def class_weights(class_pixels: np.ndarray) -> pd.DataFrame:
    """Class weights for weighted cross-entropy, from (N, C) per-image class pixel counts of the train split.

    - `inv_sqrt_freq`: 1 / sqrt(pixel frequency), scaled to mean 1 over the classes that occur.
    - `median_freq`: median frequency balancing (Eigen & Fergus 2015): freq(c) is c's pixels over the total
      pixels of the images where c is present; weight = median(freq) / freq(c).
    Classes that never occur get weight 0 (they cannot be learned from this split).
    """
    pixels = class_pixels.sum(0).astype(np.float64)
    present = pixels > 0
    freq = pixels / pixels.sum()
    inv_sqrt = np.where(present, 1 / np.sqrt(np.where(present, freq, 1)), 0.0)
    inv_sqrt = inv_sqrt / inv_sqrt[present].mean()
    image_pixels = class_pixels.sum(1, keepdims=True).astype(np.float64)
    pixels_where_present = ((class_pixels > 0) * image_pixels).sum(0)
    balanced_freq = np.where(present, pixels / np.where(present, pixels_where_present, 1), np.nan)
    median = np.nanmedian(balanced_freq)
    median_freq = np.where(present, median / np.where(present, balanced_freq, 1), 0.0)
    return pd.DataFrame(
        {"id": range(NUM_CLASSES), "inv_sqrt_freq": inv_sqrt, "median_freq": median_freq},
        index=pd.Index(CLASS_NAMES, name="class"),
    )


def resolution_ceiling(masks: Sequence[np.ndarray], sides: Sequence[int], worst: int = 3) -> pd.DataFrame:
    """The best scores any model working at `side` x `side` px can reach on these masks: a perfect model's
    class probabilities there are the mask's one-hot classes averaged over each low-resolution pixel; they are
    resized back bilinearly (as predictions are) and scored against the original mask. It separates what a
    training resolution costs from what a model fails to learn; the `worst` classes show where the cost falls."""
    rows = []
    for side in sides:
        confusion = ConfusionMatrix()
        for mask in masks:
            target = torch.from_numpy(np.asarray(mask, dtype=np.int64))
            onehot = F.one_hot(target.clamp(0, NUM_CLASSES - 1), NUM_CLASSES).permute(2, 0, 1)[None].float()
            onehot *= (target < NUM_CLASSES).float()  # ignored pixels vote for no class
            low = F.interpolate(onehot, size=(side, side), mode="area")
            scores = F.interpolate(low, size=target.shape, mode="bilinear", align_corners=False)
            confusion.update(target, scores.argmax(1)[0])
        scored = confusion.compute()
        iou = scored.per_class()["IoU"].dropna().sort_values()
        lowest = ", ".join(f"{name} {value:.1f}" for name, value in iou.head(worst).items())
        summary = scored.summary()
        rows.append((side, summary["mIoU"], summary["mF1"], summary["per_image_F"], lowest))
    return pd.DataFrame(rows, columns=["side (px)", "mIoU", "mF1", "per_image_F", f"lowest {worst} IoU"])


def class_frequency_figure(table: pd.DataFrame, title: str):
    """Bar charts of pixel frequency (log scale) and per-image presence for train and val."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    x = np.arange(len(table))
    for offset, split in ((-0.2, "train"), (0.2, "val")):
        axes[0].bar(x + offset, table[f"freq_{split}"], width=0.4, label=split)
        axes[1].bar(x + offset, table[f"presence_{split}"], width=0.4, label=split)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("share of pixels")
    axes[1].set_ylabel("share of images")
    axes[1].set_xticks(x, table.index, rotation=45, ha="right")
    axes[0].legend()
    axes[0].set_title(title)
    figure.tight_layout()
    return figure


def write_stats(data: str | Path | None, split_file: str | Path | None, out: str | Path, seed: int = 0) -> list[Path]:
    """`facelib stats`: print and write the class, colour and weight tables and the frequency figure."""

    dataset = load_dataset(data)
    split, split_file = load_or_make_split(dataset, split_file, out=out, seed=seed)
    print(
        f"dataset {dataset.name}: {len(dataset.samples)} pairs ({len(split.train)} train / {len(split.val)} val), "
        f"{len(dataset.test_images)} test images, split {split_file}"
    )
    scanned = scan(dataset)
    classes = class_table(scanned, split)
    rgb = rgb_table(scanned, split.train + split.val)
    weights = class_weights(scanned.class_pixels[scanned.rows(split.train)])
    mean, std = normalization(scanned, split.train + split.val)
    print(
        f"global mean {mean}, std {std} over train+val (each run normalises with this definition over its "
        "own training split)"
    )
    print(rgb.round(2).to_string(index=False))
    print(classes[["freq_train", "freq_val", "presence_train", "presence_val"]].round(4).to_string())
    tables, figures = Path(out) / "tables", Path(out) / "figures"
    name, note = dataset.name, provenance(f"{dataset.root} ({len(dataset.samples)} pairs, split {split_file.name})")
    rgb_note = f"Normalisation uses the global definition (see docs/guide.md). {note}"
    written = [split_file]
    written += write_table(
        classes, tables / f"{name}_class_stats", f"Class pixel frequency and presence ({name})", note
    )
    written += write_table(rgb, tables / f"{name}_rgb_stats", f"RGB mean/std over train+val ({name})", rgb_note, ".2f")
    written += write_table(
        weights, tables / f"{name}_class_weights", f"Class weights from the train split ({name})", note
    )
    figure = class_frequency_figure(classes, f"Class frequency and presence: {name}")
    written.append(save_figure(figure, figures / f"{name}_class_frequency.png"))
    return written


# --- a run's training statistics ------------------------------------------------------------------


def training_normalization(images: torch.Tensor | list) -> tuple[list[float], list[float]]:
    """Exact global per-channel mean/std (0..255 units) of the training images, from a histogram of the
    uint8 values per channel (4x faster than summing in float64, and exact)."""
    offsets = torch.tensor([0, 256, 512], dtype=torch.int16)
    counts = torch.zeros(3 * 256, dtype=torch.int64)
    for start in range(0, len(images), 64):
        chunk = images[start : start + 64]
        chunk = (
            chunk if isinstance(chunk, torch.Tensor) else torch.cat([torch.as_tensor(a).reshape(-1, 3) for a in chunk])
        )
        counts += torch.bincount((chunk.reshape(-1, 3).to(torch.int16) + offsets).flatten(), minlength=3 * 256)
    counts = counts.reshape(3, 256).double()
    values = torch.arange(256, dtype=torch.float64)
    total = counts.sum(1)
    mean = counts @ values / total
    std = (counts @ values**2 / total - mean**2).sqrt()
    return [round(float(v), 2) for v in mean], [round(float(v), 2) for v in std]


def class_pixels(masks: torch.Tensor | list) -> np.ndarray:
    """Pixels of each class in each mask, (masks, classes): the source of a run's class weights."""
    return np.stack([np.bincount(np.asarray(m).ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES] for m in masks])
