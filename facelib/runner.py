"""`facelib report`: execute the notebook series with papermill, export each to a standalone HTML page, and
write an index page and a README for the profile's results folder.

Layout under RESULTS/PROFILE/: notebooks/ (executed copies), html/ (one page per notebook, figures embedded,
plus index.html), tables/ (CSV + Markdown, written by the notebooks), figures/ (PNG), README.md. A notebook
that fails stops the report; its partial executed copy is kept as notebooks/NAME.failed.ipynb.
"""

from __future__ import annotations

import datetime
import html
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from facelib.data import DATA_ENV, resolve_root
from facelib.errors import ConfigError, ReportError
from facelib.models import PARAMETER_CAP
from facelib.outputs import commit, machine, shown_paths, write_text
from facelib.profiles import REFERENCE_TABLE4, get_profile

NOTEBOOKS = (
    "01_data_stats",
    "02_augmentation_ablation",
    "03_loss_ablation",
    "04_model_comparison",
    "05_inference",
)


def default_notebooks_dir() -> Path:
    """The repository's notebooks/ folder (facelib is installed from a checkout, editable)."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def select(only: str | Sequence[str] | None) -> list[str]:
    """Notebook names picked by number or name ("02,03" or "02_augmentation_ablation"); all when None."""
    if not only:
        return list(NOTEBOOKS)
    wanted = only.split(",") if isinstance(only, str) else list(only)
    chosen = []
    for item in (w.strip() for w in wanted if w.strip()):
        match = [n for n in NOTEBOOKS if n == item or n.split("_")[0] == item.zfill(2)]
        if not match:
            raise ConfigError(f"unknown notebook {item!r}; valid: {', '.join(NOTEBOOKS)} (or their numbers)")
        chosen += [m for m in match if m not in chosen]
    return [n for n in NOTEBOOKS if n in chosen]


def run_report(
    profile: str,
    data: str | Path | None = None,
    device: str = "auto",
    only: str | Sequence[str] | None = None,
    results: str | Path = "results",
    checkpoints: str | Path = "checkpoints",
    notebooks: str | Path | None = None,
    cached_only: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Execute the selected notebooks in order; return the profile's results folder."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    chosen = get_profile(profile)
    names = select(only)
    source = Path(notebooks) if notebooks else default_notebooks_dir()
    out = Path(results).resolve() / chosen.name
    missing = [n for n in names if not (source / f"{n}.ipynb").exists()]
    if missing:
        raise ReportError(f"notebook(s) {', '.join(missing)} not found in {source}")
    parameters = notebook_parameters(chosen.name, data, device, results, checkpoints, source, cached_only)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    log(f"report {chosen.name}: {len(names)} notebook(s) -> {out}")
    for number, name in enumerate(names, 1):
        target = out / "notebooks" / f"{name}.ipynb"
        partial, failed = target.with_suffix(".partial.ipynb"), target.with_suffix(".failed.ipynb")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source / f"{name}.ipynb"),
                str(partial),
                parameters={**parameters, "notebook": name},
                kernel_name="python3",
                cwd=str(source),
                progress_bar=False,
                log_output=False,
                extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not its TCP-without-encryption warning
            )
        except PapermillExecutionError as error:
            if partial.exists():
                os.replace(partial, failed)
            raise ReportError(
                f"notebook {name} failed in cell {error.cell_index} (execution count {error.exec_count}): "
                f"{error.ename}: {error.evalue}\nthe partial executed notebook is {failed}"
            ) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        scrub_notebook(partial)
        os.replace(partial, target)
        failed.unlink(missing_ok=True)
        page = export_html(target, out / "html" / f"{name}.html")
        log(f"[{number}/{len(names)}] {name}: {time.perf_counter() - start:.0f} s -> {target.name}, html/{page.name}")
    write_index(out, chosen.name)
    write_readme(out, chosen.name, parameters)
    return out


def notebook_parameters(
    profile: str,
    data: str | Path | None,
    device: str,
    results: str | Path,
    checkpoints: str | Path,
    notebooks: Path,
    cached_only: bool,
) -> dict[str, object]:
    """The values papermill injects: the data named explicitly (so each executed notebook shows what it read;
    None for the built-in synthetic faces), every path relative to the notebooks' folder, where they run, so
    no machine's absolute path is written into the executed copies."""
    synthetic = not data and not os.environ.get(DATA_ENV)
    where = notebooks.resolve()
    return {
        "profile": profile,
        "data": None if synthetic else os.path.relpath(resolve_root(data).resolve(), where),
        "device": device,
        "results": os.path.relpath(Path(results).resolve(), where),
        "checkpoints": os.path.relpath(Path(checkpoints).resolve(), where),
        "train_missing": not cached_only,
    }


def scrub_notebook(path: Path) -> None:
    """Rewrite an executed notebook without machine paths: papermill's input/output paths and any absolute
    path in a text output become relative (`facelib.outputs.shown_paths`); images are left alone."""
    import nbformat

    book = nbformat.read(path, as_version=4)
    meta = book.metadata.get("papermill", {})
    for field in ("input_path", "output_path"):
        if meta.get(field):
            meta[field] = shown_paths(meta[field]).replace(".partial.ipynb", ".ipynb")
    for cell in book.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = shown_paths(output["text"])
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    output["data"][kind] = shown_paths(value)
    write_text(path, nbformat.writes(book) + "\n")


def export_html(notebook: Path, target: Path) -> Path:
    """A standalone page of an executed notebook for readers: prose, tables and figures (embedded as data
    URIs), no code (it stays in the notebook, linked from the index, where it can be run), the notebook's
    heading as the page title and a link back to the index."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    title = _notebook_title(notebook)
    body, _ = exporter.from_notebook_node(
        nbformat.read(notebook, as_version=4), resources={"metadata": {"name": f"facelib: {title}"}}
    )
    back = f'<nav style="{NAV_STYLE}"><a href="index.html">&larr; report index</a></nav>'
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + "\n" + back, body, count=1)
    return write_text(target, body)


NAV_STYLE = "max-width: 1200px; margin: 1em auto 0; font-family: sans-serif;"


def _title(markdown: str) -> str:
    first = markdown.strip().splitlines()[0] if markdown.strip() else ""
    return first.lstrip("# ").strip()


def _notebook_title(notebook: Path) -> str:
    import nbformat

    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "markdown" and cell.source.strip():
            return _title(cell.source)
    return notebook.stem


ABOUT = (
    "<p><b>facelib</b> parses faces: it labels every pixel of a face photo with one of the 19 CelebAMask-HQ "
    "classes (skin, nose, eyes, brows, ears, lips, hair, hat, earrings, necklace, neck, cloth, ...), with models "
    "trained from scratch and small enough to run anywhere (under {cap:,} trainable parameters). This report "
    "reproduces, with honest metrics, a reference report that trained mmsegmentation models on 1,000 "
    "CelebAMask-HQ pairs (800 train / 200 validation, 512x512, batch 8) and reached {reference} after 24k "
    "iterations. Its mFscore dropped classes that were never predicted; here mF1 counts every class of the "
    "ground truth, and <code>mFscore_ref</code> reproduces the reference's figure for comparison.</p>"
)


def headline(out: Path) -> str:
    """The index's headline table: the Table 4 model the report chose (under the cap, by validation mF1, the
    cheaper one when tied within noise: `tables.best_run`), the longer runs of its recipe under the cap (notebook
    04's `table4_longer_runs`, when there are some) and the reference's best, read from the report's own tables
    (empty until notebook 04 has written them)."""
    table = out / "tables" / "table4_models.csv"
    if not table.exists():
        return "<p>No Table 4 yet: the headline appears once notebook 04 has run.</p>"
    import pandas as pd

    frame = pd.read_csv(table, index_col="model")
    eligible = frame[frame["fits_cap"].astype(bool)]
    if eligible.empty:
        return "<p>No Table 4 model is under the parameter cap.</p>"
    chosen = eligible.index[eligible["role"] == "chosen"]  # notebook 04's choice (tables.best_run)
    name = chosen[0] if len(chosen) else eligible["mF1"].idxmax()
    ref = REFERENCE_TABLE4["bisenetv2_xs"]
    cells = [_headline_row(f"{name} (this report, chosen under the cap)", eligible.loc[name])]
    longer_table = out / "tables" / "table4_longer_runs.csv"  # notebook 04's longer runs, when there are some
    if longer_table.exists():
        longer = pd.read_csv(longer_table, index_col=0)
        for label, row in longer[longer["fits_cap"].astype(bool)].iterrows():
            cells.append(_headline_row(f"{label} (this report, a longer run or fine-tune of Table 4's recipe)", row))
    cells.append(("bisenetv2_xs (the reference, GPU)", f"{ref['mIoU']:.2f}", "–", f"{ref['mFscore']:.1f}", "–",
                  "–", "–", "–", f"{24_000 * 8:,}"))  # fmt: skip
    header = ("model", "mIoU %", "mF1 %", "mFscore_ref %", "per-image F %", "parameters", "CPU ms (PyTorch, 512 px)",
              "x anchor (ONNX)", "training samples")  # fmt: skip
    rows = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return (
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>\n" + rows + "</table>"
        "<p>Validation scores of the best checkpoint (200 validation masks at 512 px, no test-time augmentation). "
        "The chosen model has the highest validation mF1 under the parameter cap, or, where others lie within the "
        "measured seed spread of it, the fewest inference FLOPs among them. "
        "x anchor: ONNX Runtime latency as a multiple of torchvision's <code>lraspp_mobilenet_v3_large</code>, "
        "timed in the same run. See page 04 for every model, its noise and its cost.</p>"
    )


def _headline_row(label: str, row) -> tuple[str, ...]:
    """One headline row from a Table 4 (or longer-runs) table row."""
    speed = f"{row['x anchor']:.2f}" if "x anchor" in row and row["x anchor"] == row["x anchor"] else "–"  # not NaN
    return (label, f"{row['mIoU']:.2f}", f"{row['mF1']:.2f}", f"{row['mFscore_ref']:.2f}", f"{row['per_image_F']:.2f}",
            f"{int(row['params']):,}", f"{row['CPU ms']:.0f}", speed,
            f"{int(row['samples'] if 'samples' in row else row['iterations'] * row['batch']):,}")  # fmt: skip


def write_index(out: Path, profile: str) -> Path:
    """html/index.html: what this is, the profile, the headline, and a link to every page and notebook."""
    from nbconvert.filters.markdown import markdown2html

    pages = sorted((out / "html").glob("[0-9][0-9]_*.html"))
    items = "\n".join(
        f'<li><a href="{p.name}">{html.escape(_notebook_title(out / "notebooks" / (p.stem + ".ipynb")))}</a> '
        f'(<a href="../notebooks/{p.stem}.ipynb">executed notebook</a>)</li>'
        for p in pages
        if (out / "notebooks" / f"{p.stem}.ipynb").exists()
    )
    reference = ", ".join(f"{m} {v['mIoU']} mIoU" for m, v in REFERENCE_TABLE4.items())
    reference += f" (BiSeNetV2-XS: {REFERENCE_TABLE4['bisenetv2_xs']['mFscore']} mFscore)"
    description = markdown2html(get_profile(profile).describe())
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>facelib report: profile {html.escape(profile)}</title>
<style>body {{ font-family: sans-serif; max-width: 1200px; margin: 2em auto; line-height: 1.5; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}</style></head>
<body><h1>facelib report: profile {html.escape(profile)}</h1>
{ABOUT.format(cap=PARAMETER_CAP, reference=html.escape(reference))}
<h2>Headline</h2>
{headline(out)}
<h2>Pages</h2>
<ol>
{items}
</ol>
<h2>This profile</h2>
{description}
<p>Assembled at commit {html.escape(commit())} on {html.escape(machine())}, {date}. Each page stands alone
(figures embedded); the code that made it is in its executed notebook.</p>
</body></html>
"""
    return write_text(out / "html" / "index.html", page)


def write_readme(out: Path, profile: str, parameters: dict) -> Path:
    """README.md: the profile, the notebooks, and every table with its provenance line (profile, data,
    devices and commits of its runs, the commit and machine that assembled it, the date)."""
    lines = [f"# Report: profile `{profile}`", "", get_profile(profile).describe(), ""]
    lines += [
        f"Assembled by `facelib report --profile {profile}` at commit {commit()} on {machine()}, "
        f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}; data "
        + (f"`{parameters['data']}` (relative to notebooks/)" if parameters["data"] else "the built-in synthetic faces")
        + ". Open `html/index.html` to read it.",
        "",
        "## Notebooks",
        "",
        "| notebook | executed | page |",
        "|---|---|---|",
    ]
    for notebook in sorted((out / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        if notebook.name.endswith((".failed.ipynb", ".partial.ipynb")):
            continue
        lines.append(f"| {_notebook_title(notebook)} | `notebooks/{notebook.name}` | `html/{notebook.stem}.html` |")
    lines += ["", "## Tables", ""]
    for table in sorted((out / "tables").glob("*.md"), key=lambda p: p.stat().st_mtime):  # notebook order
        text = table.read_text(encoding="utf-8").strip().splitlines()
        provenance = next((line for line in reversed(text) if line.startswith("Profile `")), "")
        lines += [f"### {_title(text[0]) if text else table.stem}", "", f"`tables/{table.name}` (+ `.csv`).", ""]
        lines += [provenance, ""] if provenance else []
    figures = sorted(p for p in (out / "figures").iterdir() if p.suffix in (".png", ".jpg"))
    lines += ["## Figures", "", *[f"- `figures/{f.name}`" for f in figures], ""]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return write_text(out / "README.md", text)
