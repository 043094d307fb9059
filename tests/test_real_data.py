"""Checks on the real CelebAMask-HQ subset; they run where FACELIB_DATA points at it (CI does)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from facelib.audit import audit
from facelib.data import load_dataset, make_split
from facelib.stats import rgb_table, scan

pytestmark = pytest.mark.skipif(not os.environ.get("FACELIB_DATA"), reason="FACELIB_DATA is not set")


@pytest.fixture(scope="module")
def real():
    return load_dataset(os.environ["FACELIB_DATA"])  # decodes and validates every file


def test_real_data_validates_and_splits_800_200(real):
    assert len(real.samples) == 1000 and len(real.test_images) == 100
    split = make_split([s.stem for s in real.samples])
    assert (len(split.train), len(split.val)) == (800, 200)


def test_reference_figures_are_the_per_image_definition(real):
    table = rgb_table(scan(real), [s.stem for s in real.samples]).set_index(["definition", "statistic"]).round(2)
    reference_mean, reference_std = [130.41, 104.75, 91.30], [68.62, 61.36, 59.27]
    assert np.allclose(table.loc[("global", "mean")], reference_mean, atol=0.011)
    assert np.allclose(table.loc[("per_image_mean", "std")], reference_std, atol=0.011)
    assert (table.loc[("global", "std")] > table.loc[("per_image_mean", "std")] + 5).all()


def test_audit_separates_reversed_masks_cleanly(real):
    report = audit(real)
    assert report.convention == 1
    both = [e for e in report.evidence if e.method == "both visible"]
    assert all(abs(e.offset_face_widths) > 0.2 for e in both)  # two clean modes, nothing near the margin
    assert 0 < len(report.flagged) < 0.1 * len(real.samples)
