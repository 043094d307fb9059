"""Honest segmentation metrics from a confusion matrix.

mIoU and mF1 average over every class that occurs in the ground truth or the prediction; a class that is in
the ground truth but never predicted scores 0 and counts. The reference's tool (mmsegmentation) computed
F-score as (1 + b^2) P R / (b^2 P + R) and took a NaN-skipping mean, so a class with no true positive
(never predicted, or predicted only in the wrong place) became NaN and silently left its mFscore; that
figure is reported beside ours as `mfscore_ref` so the two can be compared, never instead of ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from facelib.labels import CLASS_NAMES, NUM_CLASSES


class ConfusionMatrix:
    """Accumulates a (C, C) matrix, rows = ground truth, columns = prediction; labels outside 0..C-1
    (255 = ignore) are dropped by range. Also keeps the per-image F-score sum for `per_image_f`."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        self.num_classes = num_classes
        self.mat: torch.Tensor | None = None
        self.image_f_sum = 0.0
        self.images = 0

    def update(self, target: torch.Tensor, prediction: torch.Tensor) -> None:
        """Add a batch of (B, H, W) or (H, W) integer label maps."""
        n = self.num_classes
        if target.dim() == 2:
            target, prediction = target[None], prediction[None]
        batch = target.shape[0]
        target, prediction = target.reshape(batch, -1).long(), prediction.reshape(batch, -1).long()
        keep = (target >= 0) & (target < n)
        image_index = torch.arange(batch, device=target.device)[:, None].expand_as(target)
        flat = image_index[keep] * n * n + target[keep] * n + prediction[keep]
        per_image = torch.bincount(flat, minlength=batch * n * n).reshape(batch, n, n)
        if self.mat is None:
            self.mat = torch.zeros((n, n), dtype=torch.int64, device=target.device)
        self.mat += per_image.sum(0)
        self.image_f_sum += float(_per_image_f(per_image).sum())
        self.images += batch

    def reset(self) -> None:
        self.mat, self.image_f_sum, self.images = None, 0.0, 0

    def all_reduce(self) -> None:
        """Sum across distributed ranks (a no-op when not running distributed)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or self.mat is None:
            return
        totals = torch.tensor([self.image_f_sum, float(self.images)], dtype=torch.float64, device=self.mat.device)
        torch.distributed.all_reduce(self.mat)
        torch.distributed.all_reduce(totals)
        self.image_f_sum, self.images = float(totals[0]), int(totals[1])

    def compute(self) -> Metrics:
        if self.mat is None:
            raise ValueError("no predictions were added to the confusion matrix")
        return metrics_from_confusion(self.mat.cpu().numpy(), self.image_f_sum / max(self.images, 1))


def _per_image_f(per_image: torch.Tensor) -> torch.Tensor:
    """(B, C, C) matrices -> (B,) mean F1 over the classes present in each image's ground truth."""
    tp = per_image.diagonal(dim1=1, dim2=2).double()
    gt, pred = per_image.sum(2).double(), per_image.sum(1).double()
    present = gt > 0
    f1 = torch.where(present, 2 * tp / (gt + pred).clamp(min=1), torch.zeros_like(tp))
    return f1.sum(1) / present.sum(1).clamp(min=1)


@dataclass(frozen=True)
class Metrics:
    """Per-class arrays (NaN where a class occurs in neither ground truth nor prediction) and summaries."""

    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray
    pixel_accuracy: float
    miou: float
    mf1: float
    mfscore_ref: float
    per_image_f: float

    def summary(self) -> dict[str, float]:
        """The headline numbers, in percent as papers print them."""
        return {
            "mIoU": 100 * self.miou,
            "mF1": 100 * self.mf1,
            "mFscore_ref": 100 * self.mfscore_ref,
            "per_image_F": 100 * self.per_image_f,
            "aAcc": 100 * self.pixel_accuracy,
        }

    def per_class(self, names: tuple[str, ...] = CLASS_NAMES) -> pd.DataFrame:
        """Per-class scores in percent, with the pixel counts that explain them."""
        return pd.DataFrame(
            {
                "IoU": 100 * self.iou,
                "F1": 100 * self.f1,
                "precision": 100 * self.precision,
                "recall": 100 * self.recall,
                "gt_pixels": self.gt_pixels,
                "pred_pixels": self.pred_pixels,
            },
            index=pd.Index(names[: len(self.iou)], name="class"),
        )


def metrics_from_confusion(mat: np.ndarray, per_image_f: float = float("nan")) -> Metrics:
    """All metrics from a (C, C) confusion matrix (rows = ground truth, columns = prediction)."""
    mat = np.asarray(mat, dtype=np.float64)
    tp = np.diag(mat)
    gt, pred = mat.sum(1), mat.sum(0)
    occurs = (gt + pred) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(occurs, tp / (gt + pred - tp), np.nan)
        f1 = np.where(occurs, 2 * tp / (gt + pred), np.nan)
        precision = np.where(pred > 0, tp / pred, np.where(occurs, 0.0, np.nan))
        recall = np.where(gt > 0, tp / gt, np.where(occurs, 0.0, np.nan))
        # The reference's F-score: NaN whenever precision or recall is undefined, or both are zero.
        ref_p, ref_r = tp / pred, tp / gt
        ref_f = 2 * ref_p * ref_r / (ref_p + ref_r)
    return Metrics(
        iou=iou,
        precision=precision,
        recall=recall,
        f1=f1,
        gt_pixels=gt.astype(np.int64),
        pred_pixels=pred.astype(np.int64),
        pixel_accuracy=float(tp.sum() / max(mat.sum(), 1)),
        miou=float(np.nanmean(iou)) if occurs.any() else float("nan"),
        mf1=float(np.nanmean(f1)) if occurs.any() else float("nan"),
        mfscore_ref=float(np.nanmean(ref_f)) if np.isfinite(ref_f).any() else float("nan"),
        per_image_f=per_image_f,
    )
