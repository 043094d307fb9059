"""What is committed under results/ is what a reader gets: every report page parses, has a title, links that
resolve and no missing-value noise; every report is current (assembled from a clean tree, its notebooks'
sources equal notebooks/); no file anywhere in results/ holds a machine's absolute path."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from facelib.report_build import NOTEBOOKS, default_notebooks_dir

RESULTS = Path(__file__).resolve().parents[1] / "results"
REPORTS = sorted(p.parent.parent for p in RESULTS.glob("*/html/index.html"))
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:home|root|tmp|work|Users|mnt|var|opt|srv|private|data)/[\w.@+-]")
DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")


class Page(HTMLParser):
    """The parts of a page the checks need: title, table cells, links, headings."""

    def __init__(self) -> None:
        super().__init__()
        self.title, self.cells, self.links, self.headings = "", [], [], []
        self._in: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("href", "src"):
            if values.get(name):
                self.links.append(values[name])
        if tag in ("title", "td", "th", "h1", "h2", "h3"):
            self._in, self._text = tag, ""

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            text = self._text.strip()
            if tag == "title":
                self.title = text
            elif tag in ("td", "th"):
                self.cells.append(text)
            else:
                self.headings.append(text)
            self._in = None


def parse(path: Path) -> Page:
    page = Page()
    page.feed(DATA_URI.sub("data:", path.read_text(encoding="utf-8")))
    return page


def test_there_is_a_committed_report():
    assert RESULTS / "smoke" in REPORTS


@pytest.mark.parametrize("report", REPORTS, ids=lambda p: p.name)
def test_every_page_has_a_title_links_that_resolve_and_no_missing_value_noise(report: Path):
    pages = sorted((report / "html").glob("*.html"))
    assert {p.stem for p in pages} >= {*NOTEBOOKS, "index"}
    for path in pages:
        page = parse(path)
        assert page.title and page.title != "Notebook", f"{path}: no title of its own"
        noise = [cell for cell in page.cells if cell in ("NaN", "nan", "None", "<NA>")]
        assert not noise, f"{path}: table cells {noise[:5]}"
        local = [link for link in page.links if not link.startswith(("http:", "https:", "data:", "#", "mailto:"))]
        for link in local:
            assert (path.parent / link.split("#")[0]).exists(), f"{path}: link {link} does not resolve"
        if path.stem != "index":
            assert "index.html" in page.links, f"{path}: no link back to the index"


@pytest.mark.parametrize("report", REPORTS, ids=lambda p: p.name)
def test_every_report_is_current(report: Path):
    """Assembled from a clean tree at a recorded commit, from the notebooks as they are now: a change to a
    notebook's source (or a report assembled with uncommitted changes) fails here until the report is
    regenerated (`facelib report --profile NAME`)."""
    index = (report / "html" / "index.html").read_text(encoding="utf-8")
    (assembled,) = re.findall(r"Assembled at commit (\S+) on", index)
    assert assembled != "unknown" and "dirty" not in assembled, f"{report}: assembled at {assembled}"
    source = default_notebooks_dir()
    for name in NOTEBOOKS:
        executed = nbformat.read(report / "notebooks" / f"{name}.ipynb", as_version=4)
        original = nbformat.read(source / f"{name}.ipynb", as_version=4)
        cells = [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        assert [(c.cell_type, c.source) for c in cells] == [(c.cell_type, c.source) for c in original.cells], (
            f"{report.name}/{name}: the committed report's notebook differs from notebooks/{name}.ipynb; "
            f"regenerate it with `facelib report --profile {report.name}`"
        )


def _text_without_images(path: Path) -> str:
    if path.suffix == ".onnx":  # binary: its metadata and node notes are what could hold a path
        return path.read_bytes().decode("latin-1")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        book = json.loads(text)
        for cell in book["cells"]:
            for output in cell.get("outputs", []):
                for kind in [k for k in output.get("data", {}) if k.startswith("image/")]:
                    del output["data"][kind]
        text = json.dumps(book)
    return DATA_URI.sub("data:", text)


def test_no_file_in_results_holds_a_machine_path():
    offenders = []
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".md", ".csv", ".ipynb", ".html", ".txt", ".onnx"):
            found = MACHINE_PATH.search(_text_without_images(path))
            if found:
                offenders.append(f"{path.relative_to(RESULTS)}: ...{found.group()}...")
    assert not offenders, "absolute paths in results/:\n" + "\n".join(offenders[:20])


NOISE_TEXT = re.compile(r"Warning|warnings\.warn|Traceback|IProgress|site-packages|\d+%\|")
"""What a reader must never see in a page: a warning, a stack trace, a progress bar, a library's path."""


@pytest.mark.parametrize("report", REPORTS, ids=lambda p: p.name)
def test_no_page_shows_stderr_warnings_or_progress_bars(report: Path):
    found = []
    for path in sorted((report / "notebooks").glob("*.ipynb")):
        for number, cell in enumerate(nbformat.read(path, as_version=4).cells):
            for output in cell.get("outputs", []):
                text = output.get("text", "") if output.output_type == "stream" else ""
                text += "".join(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
                if output.output_type == "stream" and output.name == "stderr":
                    found.append(f"{path.name} cell {number}: stderr {text[:120]!r}")
                elif output.output_type == "error" or NOISE_TEXT.search(text):
                    found.append(f"{path.name} cell {number}: {output.output_type} {text[:120]!r}")
    for path in sorted((report / "html").glob("*.html")):
        html_text = DATA_URI.sub("data:", path.read_text(encoding="utf-8"))
        if "application/vnd.jupyter.stderr" in html_text:
            found.append(f"{path.name}: a stderr block (or its style)")
    assert not found, f"{report.name}: pages show noise:\n" + "\n".join(found[:20])
