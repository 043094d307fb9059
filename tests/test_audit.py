from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from facelib.audit import MIN_PART_PIXELS, audit, write_corrected_copy
from facelib.cli import main
from facelib.data import discover
from facelib.errors import DataError
from facelib.labels import CLASS_NAMES, LEFT_RIGHT_PAIRS, correct_mask, read_mask, write_mask
from facelib.synthetic import draw_face, write_synthetic_dataset

N, SIZE, SEED = 60, 128, 3
PAIRS = [f"{CLASS_NAMES[a]}/{CLASS_NAMES[b]}" for a, b in LEFT_RIGHT_PAIRS]


def visible_pairs(mask: np.ndarray) -> set[str]:
    return {
        name
        for name, (a, b) in zip(PAIRS, LEFT_RIGHT_PAIRS, strict=True)
        if (mask == a).sum() >= MIN_PART_PIXELS or (mask == b).sum() >= MIN_PART_PIXELS
    }


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A synthetic dataset where some masks have all pairs reversed and some only the ears."""
    root = write_synthetic_dataset(tmp_path_factory.mktemp("audit") / "synthetic", N, 0, SIZE, SEED)
    dataset = discover(root)
    yaws = [draw_face(SIZE, np.random.default_rng([SEED, i]))[2].yaw for i in range(N)]
    originals, expected = {}, {}
    for i, sample in enumerate(dataset.samples):
        mask = read_mask(sample.mask)
        originals[sample.stem] = mask
        if i % 5 == 0:  # every measurable pair reversed (specks under MIN_PART_PIXELS carry no evidence)
            write_mask(correct_mask(mask, sorted(visible_pairs(mask))), sample.mask)
            expected[sample.stem] = visible_pairs(mask)
        elif i % 7 == 0 and "l_ear/r_ear" in visible_pairs(mask):  # only the ears reversed
            write_mask(correct_mask(mask, ["l_ear/r_ear"]), sample.mask)
            expected[sample.stem] = {"l_ear/r_ear"}
    return dataset, originals, expected, yaws


def test_all_planted_reversals_are_found_with_no_false_alarm(planted):
    dataset, _, expected, yaws = planted
    report = audit(dataset)
    assert report.convention == 1
    found = {stem: {e.pair for e in items} for stem, items in report.flagged.items()}
    assert found == expected
    profiles = [i for i, yaw in enumerate(yaws) if abs(yaw) > 0.75]
    clean_profiles = [i for i in profiles if dataset.samples[i].stem not in expected]
    reversed_profiles = [i for i in profiles if dataset.samples[i].stem in expected]
    assert len(clean_profiles) >= 3 and len(reversed_profiles) >= 1  # profiles are really exercised
    single = [e for e in report.evidence if e.method == "single vs nose"]
    assert any(e.verdict == "reversed" for e in single) and any(e.verdict == "ok" for e in single)


def test_corrected_copy_restores_the_originals_and_leaves_the_source(planted, tmp_path):
    dataset, originals, expected, _ = planted
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in dataset.root.rglob("*") if p.is_file()}
    target, corrected = write_corrected_copy(dataset, audit(dataset), tmp_path / "fixed")
    assert corrected == len(expected)
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in dataset.root.rglob("*") if p.is_file()}
    assert before == after
    fixed = discover(target)
    assert [s.stem for s in fixed.samples] == [s.stem for s in dataset.samples]
    for sample in fixed.samples:
        assert np.array_equal(read_mask(sample.mask), originals[sample.stem]), sample.stem
    assert audit(fixed).flagged == {}
    assert [p.name for p in tmp_path.iterdir()] == ["fixed"]  # no staging folder left behind


def test_corrected_copy_refuses_unsafe_targets(planted, tmp_path):
    dataset, *_ = planted
    report = audit(dataset)
    with pytest.raises(DataError, match="outside the source"):
        write_corrected_copy(dataset, report, dataset.root / "inside")
    with pytest.raises(DataError, match="outside the source"):
        write_corrected_copy(dataset, report, dataset.root)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        write_corrected_copy(dataset, report, tmp_path / "busy")


def test_audit_command_prints_evidence_and_writes_tables(planted, tmp_path, capsys):
    dataset, _, expected, _ = planted
    out = tmp_path / "results"
    assert main(["audit", str(dataset.root), "--out", str(out), "--write-corrected", str(tmp_path / "fixed")]) == 0
    printed = capsys.readouterr().out
    assert f"{len(expected)} of {N} masks have reversed left/right labels" in printed
    stem = sorted(expected)[0]
    assert f"{stem}: reversed" in printed and "face widths" in printed
    table = pd.read_csv(out / "tables" / "synthetic_audit.csv")
    assert set(table.stem) == set(expected) and (table.verdict == "reversed").all()
    assert (table.offset_face_widths < 0).all()
    assert (out / "tables" / "synthetic_audit_summary.md").exists()
    assert (out / "figures" / "synthetic_audit_offsets.png").stat().st_size > 0
    assert (tmp_path / "fixed" / "train" / "masks").is_dir()
