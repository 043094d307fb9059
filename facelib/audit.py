"""Left/right label audit: find masks whose l_/r_ classes (eyes, brows, ears) are reversed.

The dataset's convention is that the person's left parts appear on the image's right. For each mask and
each left/right pair the audit measures, in face widths (the skin's horizontal extent):

- when both parts are visible: how far the left part's centroid lies to the image-right of the right part's;
- when only one is visible (a profile, a hidden ear): how far that part lies on its expected side of the
  nose (a visible ear or near eye sits well away from the nose, on the side its label says).

The expected sign is the dataset's majority convention, measured over all pairs where both parts are
visible. A pair is reversed when its offset has the wrong sign by more than a margin; offsets inside the
margin (e.g. a single eye right next to the nose) give no verdict rather than a false alarm.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from facelib.data import FaceDataset, load_dataset
from facelib.errors import DataError
from facelib.labels import CLASS_NAMES, LEFT_RIGHT_PAIRS, correct_mask, read_mask, write_mask
from facelib.outputs import provenance, save_figure, write_table

MIN_PART_PIXELS = 20  # smaller fragments are annotation specks, not evidence
PAIR_MARGIN = 0.1  # face widths; real reversed pairs are 0.2-1.2 face widths off
SINGLE_MARGIN = 0.1  # face widths from the nose for a lone part
NOSE, SKIN = CLASS_NAMES.index("nose"), CLASS_NAMES.index("skin")


@dataclass(frozen=True)
class PairEvidence:
    """One pair in one mask: signed offset (positive = the convention), how it was measured, the verdict."""

    stem: str
    pair: str  # e.g. "l_eye/r_eye"
    method: str  # "both visible" | "single vs nose"
    offset_px: float  # positive when the parts sit as the documented convention says
    offset_face_widths: float
    verdict: str  # "ok" | "reversed" | "uncertain"


@dataclass
class AuditReport:
    """Every measured pair, the convention found, and the flagged (mask, pairs)."""

    convention: int  # +1: the person's left appears on the image's right (documented); -1: the opposite
    agreeing: int  # both-visible pairs that agree with the convention
    both_visible: int
    evidence: list[PairEvidence] = field(default_factory=list)

    @property
    def flagged(self) -> dict[str, list[PairEvidence]]:
        """Stem -> its reversed pairs, for every mask with at least one."""
        found: dict[str, list[PairEvidence]] = {}
        for item in self.evidence:
            if item.verdict == "reversed":
                found.setdefault(item.stem, []).append(item)
        return found

    def table(self) -> pd.DataFrame:
        """One row per reversed pair."""
        rows = [vars(e) for items in self.flagged.values() for e in items]
        columns = list(PairEvidence.__dataclass_fields__)
        return pd.DataFrame(rows, columns=columns)

    def summary(self) -> pd.DataFrame:
        """Per pair and method: how many were checked, ok, reversed, uncertain."""
        frame = pd.DataFrame([vars(e) for e in self.evidence], columns=list(PairEvidence.__dataclass_fields__))
        counts = frame.groupby(["pair", "method", "verdict"]).size().unstack(fill_value=0)
        for verdict in ("ok", "reversed", "uncertain"):
            if verdict not in counts:
                counts[verdict] = 0
        counts = counts[["ok", "reversed", "uncertain"]]
        counts.insert(0, "checked", counts.sum(axis=1))
        return counts.reset_index()


def _centroid_x(mask: np.ndarray, class_id: int) -> float | None:
    columns = (mask == class_id).sum(0)
    total = columns.sum()
    return float(columns @ np.arange(mask.shape[1]) / total) if total >= MIN_PART_PIXELS else None


def measure(mask: np.ndarray) -> list[tuple[str, str, float, float]]:
    """Raw measurements of one mask: (pair, method, offset_px, face_width_px) with the documented sign."""
    skin_columns = np.flatnonzero((mask == SKIN).any(0))
    face_width = float(skin_columns[-1] - skin_columns[0] + 1) if skin_columns.size else float(mask.shape[1])
    reference = _centroid_x(mask, NOSE)
    if reference is None:
        reference = _centroid_x(mask, SKIN)
    found = []
    for left, right in LEFT_RIGHT_PAIRS:
        name = f"{CLASS_NAMES[left]}/{CLASS_NAMES[right]}"
        x_left, x_right = _centroid_x(mask, left), _centroid_x(mask, right)
        if x_left is not None and x_right is not None:
            found.append((name, "both visible", x_left - x_right, face_width))
        elif reference is not None and (x_left is not None or x_right is not None):
            offset = x_left - reference if x_left is not None else reference - x_right
            found.append((name, "single vs nose", offset, face_width))
    return found


def audit(dataset: FaceDataset, workers: int = 4) -> AuditReport:
    """Measure every mask, find the majority convention, and give each pair a verdict."""

    def one(sample):
        return sample.stem, measure(read_mask(sample.mask))

    with ThreadPoolExecutor(workers) as pool:
        measured = list(pool.map(one, dataset.samples))
    both = [offset for _, items in measured for _, method, offset, _ in items if method == "both visible"]
    votes = int(np.sum(np.sign(both))) if both else 0
    convention = -1 if votes < 0 else 1
    report = AuditReport(convention, int(np.sum(np.sign(both) == convention)), len(both))
    for stem, items in measured:
        for pair, method, offset, width in items:
            offset *= convention
            relative = offset / width
            margin = PAIR_MARGIN if method == "both visible" else SINGLE_MARGIN
            verdict = "reversed" if relative < -margin else "ok" if relative > margin else "uncertain"
            report.evidence.append(PairEvidence(stem, pair, method, round(offset, 1), round(relative, 3), verdict))
    return report


def write_corrected_copy(dataset: FaceDataset, report: AuditReport, target: str | Path) -> tuple[Path, int]:
    """Copy the dataset to a new folder with the flagged pairs swapped back; the source is never touched.

    The copy is built in a temporary folder beside the target and renamed into place when complete.
    Returns the target and the number of masks corrected.
    """
    target = Path(target).expanduser()
    source = dataset.root.resolve()
    resolved = target.resolve()
    if resolved == source or source in resolved.parents or resolved in source.parents:
        raise DataError(f"{target}: the corrected copy must go to a folder outside the source dataset {source}")
    if target.exists() and any(target.iterdir()):
        raise DataError(f"{target}: folder exists and is not empty; choose a new folder for the corrected copy")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    flagged = report.flagged
    try:
        for path in [s.image for s in dataset.samples] + list(dataset.test_images):
            destination = staging / path.relative_to(dataset.root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        for sample in dataset.samples:
            destination = staging / sample.mask.relative_to(dataset.root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            if sample.stem in flagged:
                pairs = [e.pair for e in flagged[sample.stem]]
                write_mask(correct_mask(read_mask(sample.mask), pairs), destination)
            else:
                shutil.copy2(sample.mask, destination)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, len(flagged)


def offsets_figure(report: AuditReport, title: str):
    """Histogram of each pair's offset in face widths: reversed labels form a separate mode below zero."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    frame = pd.DataFrame([vars(e) for e in report.evidence], columns=list(PairEvidence.__dataclass_fields__))
    pairs = [f"{CLASS_NAMES[a]}/{CLASS_NAMES[b]}" for a, b in LEFT_RIGHT_PAIRS]
    figure, axes = plt.subplots(1, len(pairs), figsize=(12, 3.2), sharey=True)
    for axis, pair in zip(axes, pairs, strict=True):
        for method, colour in (("both visible", "tab:blue"), ("single vs nose", "tab:orange")):
            values = frame.loc[(frame.pair == pair) & (frame.method == method), "offset_face_widths"]
            axis.hist(values, bins=np.linspace(-1.5, 1.5, 61), color=colour, alpha=0.7, label=method)
        axis.axvspan(-PAIR_MARGIN, PAIR_MARGIN, color="grey", alpha=0.2)
        axis.set_yscale("log")
        axis.set_title(pair)
        axis.set_xlabel("offset (face widths; < 0 = reversed)")
    axes[0].set_ylabel("pairs")
    axes[0].legend()
    figure.suptitle(f"Left/right label audit: {title}")
    figure.tight_layout()
    return figure


def write_audit(data: str | Path | None, out: str | Path, corrected: str | Path | None = None) -> list[Path]:
    """`facelib audit`: print the evidence, write its tables and figure, and optionally a corrected copy."""

    dataset = load_dataset(data)
    report = audit(dataset)
    side = "the image's right" if report.convention > 0 else "the image's left (opposite to the documentation)"
    print(
        f"convention: the person's left parts appear on {side} "
        f"({report.agreeing} of {report.both_visible} pairs with both parts visible agree)"
    )
    flagged = report.flagged
    for stem, items in flagged.items():
        evidence = "; ".join(
            f"{e.pair} {e.method}: {e.offset_px:+.0f} px ({e.offset_face_widths:+.2f} face widths)" for e in items
        )
        print(f"{stem}: reversed {evidence}")
    print(f"{len(flagged)} of {len(dataset.samples)} masks have reversed left/right labels")
    summary = report.summary()
    print(summary.to_string(index=False))
    tables, name = Path(out) / "tables", dataset.name
    note = provenance(f"{dataset.root} ({len(dataset.samples)} pairs)")
    title = f"Masks with reversed left/right labels ({name}): {len(flagged)} of {len(dataset.samples)}"
    written = write_table(report.table(), tables / f"{name}_audit", title, note)
    written += write_table(summary, tables / f"{name}_audit_summary", f"Left/right label audit by pair ({name})", note)
    written.append(save_figure(offsets_figure(report, name), Path(out) / "figures" / f"{name}_audit_offsets.png"))
    if corrected:
        target, corrected = write_corrected_copy(dataset, report, corrected)
        print(f"corrected copy: {target} ({corrected} masks corrected, source untouched)")
        written.append(target)
    return written
