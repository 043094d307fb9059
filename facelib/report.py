"""What the report's notebooks render: a `Report` (a profile's tables as runs, `rows`; the data; where this
report's tables and figures go) that writes each table and figure with its provenance and describes the page.
The runs behind the tables are `facelib.report_rows`; the tables themselves `facelib.tables`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from facelib.data import keep_decoded
from facelib.outputs import provenance, save_figure, shown_path, write_table
from facelib.report_rows import TableRows
from facelib.runcache import Run
from facelib.tables import styled


class Report:
    """The state one notebook shares with facelib: its profile's table rows (`rows`, over the run cache; see
    `facelib.runcache.RunCache` for when a missing run trains), the data, and where tables and figures go."""

    def __init__(
        self,
        profile: str,
        data: str | None = None,
        device: str = "auto",
        results: str | Path = "results",
        checkpoints: str | Path = "checkpoints",
        notebook: str = "",
        train_missing: bool | None = None,
    ) -> None:
        keep_decoded(True)
        self.rows = TableRows.open(profile, data, device, results, checkpoints, train_missing)
        self.profile, self.notebook, self.dataset = self.rows.profile, notebook, self.rows.dataset
        self.out = Path(results) / self.profile.name

    # --- outputs ---------------------------------------------------------------------------------------

    def note(self, runs: Sequence[Run] = ()) -> str:
        """The provenance paragraph under a table: profile, data, where the runs were trained, who assembled it."""
        parts = [f"Profile `{self.profile.name}`."]
        if runs:
            devices = sorted({r.summary["device"].split(";")[0].split(" (CUDA")[0] for r in runs})
            commits = sorted({r.summary["commit"] for r in runs})
            dates = sorted(r.summary["written_at"] for r in runs)
            parts.append(
                f"Runs ({', '.join(r.key for r in runs)}) trained on {'; '.join(devices)} at commit(s) "
                f"{', '.join(commits)}, {dates[0]} to {dates[-1]}."
            )
        command = f"facelib report --profile {self.profile.name}" + (
            f" (notebook {self.notebook})" if self.notebook else ""
        )
        data = f"{self.dataset.name} ({len(self.dataset.samples)} pairs)"
        parts.append(provenance(data, command=command))
        return " ".join(parts)

    def table(self, frame: pd.DataFrame, name: str, title: str, runs: Sequence[Run] = (), explain: str = ""):
        """Write `tables/NAME.csv` and `.md` (title, table, explanation, provenance); return the table styled
        for display (`styled`)."""
        note = (explain + "\n\n" if explain else "") + self.note(runs)
        write_table(frame, self.out / "tables" / name, title, note, ".2f")
        return styled(frame)

    def figure(self, figure, name: str, photo: bool = False):
        """Save `figures/NAME.png` (`.jpg` when `photo`: grids of photographs compress 6x better) and return it
        as an image to display (embedded in the notebook's output, so the HTML page stands alone)."""
        from IPython.display import Image

        path = save_figure(figure, self.out / "figures" / f"{name}.{'jpg' if photo else 'png'}", dpi=100)
        return Image(filename=str(path))

    def describe(self) -> str:
        """This page's parameters (the notebook's only parameters block a reader sees); the profile's settings are
        described once, on the report's index page (`facelib.report_build.write_index`)."""
        data = f"`{shown_path(self.dataset.root)}` ({self.dataset.name}, {len(self.dataset.samples)} pairs)"
        trains = "yes" if self.rows.cache.train_missing else "no (finished runs from the cache only)"
        return (
            f"**Profile `{self.profile.name}`** (its settings: the report's index page). **Parameters of this page**: "
            f"data {data}; device for missing runs `{self.rows.device}`; run cache `{shown_path(self.rows.cache.results / 'runs')}`; "
            f"trains missing runs: {trains}."
        )
