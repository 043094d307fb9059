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

from facelib.errors import ConfigError, ReportError
from facelib.profiles import get_profile

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
    from facelib.data import resolve_root

    parameters = {
        "profile": chosen.name,
        "data": str(resolve_root(data).resolve()),  # explicit, so each executed notebook shows what it read
        "device": device,
        "results": str(Path(results).resolve()),
        "checkpoints": str(Path(checkpoints).resolve()),
        "train_missing": not cached_only,
    }
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
        os.replace(partial, target)
        failed.unlink(missing_ok=True)
        page = export_html(target, out / "html" / f"{name}.html")
        log(f"[{number}/{len(names)}] {name}: {time.perf_counter() - start:.0f} s -> {target.name}, html/{page.name}")
    write_index(out, chosen.name)
    write_readme(out, chosen.name, parameters)
    return out


def export_html(notebook: Path, target: Path) -> Path:
    """A standalone HTML page of an executed notebook: figures are embedded as data URIs."""
    import nbformat
    from nbconvert import HTMLExporter

    from facelib.outputs import write_text

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    return write_text(target, body)


def _title(markdown: str) -> str:
    first = markdown.strip().splitlines()[0] if markdown.strip() else ""
    return first.lstrip("# ").strip()


def _notebook_title(notebook: Path) -> str:
    import nbformat

    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "markdown" and cell.source.strip():
            return _title(cell.source)
    return notebook.stem


def write_index(out: Path, profile: str) -> Path:
    """html/index.html: the profile, then a link to every executed notebook's page."""
    from facelib.outputs import commit, write_text

    pages = sorted((out / "html").glob("[0-9][0-9]_*.html"))
    items = "\n".join(
        f'<li><a href="{p.name}">{html.escape(p.stem)}</a>: '
        f"{html.escape(_notebook_title(out / 'notebooks' / (p.stem + '.ipynb')))}</li>"
        for p in pages
        if (out / "notebooks" / f"{p.stem}.ipynb").exists()
    )
    from nbconvert.filters.markdown import markdown2html

    description = markdown2html(get_profile(profile).describe())
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>facelib report: {profile}</title>
<style>body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.5; }}</style></head>
<body><h1>facelib report: profile {html.escape(profile)}</h1>
{description}
<ol>
{items}
</ol>
<p>Index written {date}, commit {html.escape(commit())}. Each page stands alone (figures embedded).</p>
</body></html>
"""
    return write_text(out / "html" / "index.html", page)


def write_readme(out: Path, profile: str, parameters: dict) -> Path:
    """README.md: the profile, the notebooks, and every table with its provenance line (profile, data,
    devices and commits of its runs, the commit and machine that assembled it, the date)."""
    from facelib.outputs import commit, machine, write_text

    lines = [f"# Report: profile `{profile}`", "", get_profile(profile).describe(), ""]
    lines += [
        f"Assembled by `facelib report --profile {profile}` at commit {commit()} on {machine()}, "
        f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}; data "
        f"`{parameters['data']}`.",
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
    figures = sorted((out / "figures").glob("*.png"))
    lines += ["## Figures", "", *[f"- `figures/{f.name}`" for f in figures], ""]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return write_text(out / "README.md", text)
