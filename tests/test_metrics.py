from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facelib.metrics import ConfusionMatrix, metrics_from_confusion


def matrix(target, prediction, n):
    cm = ConfusionMatrix(n)
    cm.update(torch.as_tensor(target), torch.as_tensor(prediction))
    return cm


def test_hand_computed_case_with_never_predicted_and_absent_classes():
    # 4 classes. Class 2 is in the ground truth but never predicted; class 3 occurs nowhere.
    target = [[0, 0, 1, 1], [0, 1, 2, 2]]
    pred = [[0, 0, 1, 0], [0, 1, 1, 1]]
    m = matrix(target, pred, 4).compute()
    # class 0: tp 3, gt 3, pred 4 -> IoU 3/4, F1 6/7; class 1: tp 2, gt 3, pred 4 -> IoU 2/5, F1 4/7
    assert m.iou[:3] == pytest.approx([3 / 4, 2 / 5, 0.0])
    assert m.f1[:3] == pytest.approx([6 / 7, 4 / 7, 0.0])
    assert math.isnan(m.iou[3]) and math.isnan(m.f1[3])
    assert m.miou == pytest.approx((3 / 4 + 2 / 5 + 0) / 3)
    assert m.mf1 == pytest.approx((6 / 7 + 4 / 7 + 0) / 3)  # the never-predicted class counts as 0
    assert m.mfscore_ref == pytest.approx((6 / 7 + 4 / 7) / 2)  # the reference's tool drops it
    assert m.mfscore_ref > m.mf1
    assert m.precision[2] == 0 and m.recall[2] == 0
    assert m.pixel_accuracy == pytest.approx(5 / 8)


def test_pixels_labelled_255_are_ignored():
    with_ignore = matrix([[0, 1, 255, 255]], [[0, 1, 1, 0]], 3).compute()
    without = matrix([[0, 1]], [[0, 1]], 3).compute()
    assert with_ignore.miou == without.miou == 1.0
    assert with_ignore.gt_pixels.sum() == 2


def test_per_image_f_uses_each_image_s_ground_truth_classes():
    target = torch.tensor([[[0, 0, 1, 1]], [[0, 0, 0, 2]]])
    pred = torch.tensor([[[0, 0, 1, 1]], [[0, 0, 0, 0]]])
    m = matrix(target, pred, 3).compute()
    # image 1: classes 0, 1 both perfect -> 1.0; image 2: class 0 F1 = 6/7, class 2 F1 = 0 -> 3/7
    assert m.per_image_f == pytest.approx((1.0 + 3 / 7) / 2)


def test_matches_an_independent_computation_on_random_maps():
    rng = np.random.default_rng(0)
    n = 6
    target = rng.integers(0, n, (3, 20, 30))
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, n, target.shape))
    target[0, :2] = 255
    target[target == 5] = 4  # class 5 appears only in predictions
    cm = ConfusionMatrix(n)
    for t, p in zip(target, pred, strict=True):  # accumulate one image at a time
        cm.update(torch.from_numpy(t), torch.from_numpy(p))
    m = cm.compute()
    valid = target != 255
    ious, f1s, image_f = [], [], []
    for c in range(n):
        t, p = (target == c) & valid, (pred == c) & valid
        tp, fp, fn = (t & p).sum(), (~t & p & valid).sum(), (t & ~p).sum()
        ious.append(tp / (tp + fp + fn))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    for t_img, p_img in zip(target, pred, strict=True):
        keep = t_img != 255
        scores = []
        for c in np.unique(t_img[keep]):
            t, p = (t_img == c) & keep, (p_img == c) & keep
            scores.append(2 * (t & p).sum() / (t.sum() + p.sum()))
        image_f.append(np.mean(scores))
    assert m.iou == pytest.approx(ious)
    assert m.f1 == pytest.approx(f1s)
    assert m.miou == pytest.approx(np.mean(ious)) and m.mf1 == pytest.approx(np.mean(f1s))
    assert m.per_image_f == pytest.approx(np.mean(image_f))
    # the same data in one batch gives the same matrix
    batched = matrix(target, pred, n)
    assert torch.equal(batched.mat, cm.mat) and batched.compute().per_image_f == pytest.approx(m.per_image_f)


def test_reference_fscore_drops_classes_without_true_positives():
    mat = np.array([[5, 1, 0], [2, 0, 0], [0, 0, 0]])  # class 1 predicted once, never correctly
    m = metrics_from_confusion(mat)
    assert m.f1[1] == 0 and math.isnan(m.f1[2])
    assert m.mfscore_ref == pytest.approx(m.f1[0])
    assert m.mf1 == pytest.approx(m.f1[0] / 2)


def test_summary_and_per_class_table():
    m = matrix([[0, 1]], [[0, 1]], 19).compute()
    assert m.summary()["mIoU"] == 100.0
    table = m.per_class()
    assert list(table.index[:2]) == ["background", "skin"] and len(table) == 19
