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
from dataclasses import dataclass
from pathlib import Path

from facelib.checkpoint import load_checkpoint
from facelib.data import DATA_ENV, discover, resolve_root
from facelib.errors import ConfigError, ReportError
from facelib.infer import evaluation_variant, stored_evaluation
from facelib.models import PARAMETER_CAP
from facelib.outputs import commit, machine, shown_paths, write_text
from facelib.profiles import REFERENCE_TABLE4, get_profile
from facelib.runcache import lineage
from facelib.ship import DEFAULT_MODEL, FAST_MODEL

NOTEBOOKS = (
    "01_data_stats",
    "02_augmentation_ablation",
    "03_loss_ablation",
    "04_model_comparison",
    "05_inference",
    "06_levers",
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


@dataclass(frozen=True)
class ReportRequest:
    """What `facelib report` builds: a profile's notebooks (`only`: some of them, e.g. "02,03"), on `data`,
    training missing runs on `device` where the report may (`train_missing`; None: as the profile says,
    `Profile.trains_missing`), with the run cache and this report under `results` and checkpoints in
    `checkpoints`; `notebooks`: another folder of notebooks than the repository's."""

    profile: str
    data: str | Path | None = None
    device: str = "auto"
    only: str | Sequence[str] | None = None
    results: str | Path = "results"
    checkpoints: str | Path = "checkpoints"
    notebooks: str | Path | None = None
    train_missing: bool | None = None

    @property
    def source(self) -> Path:
        return Path(self.notebooks) if self.notebooks else default_notebooks_dir()


def run_report(request: ReportRequest, log: Callable[[str], None] = print) -> Path:
    """Execute the selected notebooks in order, each exported as a page; return the profile's results folder."""
    chosen, names, source = get_profile(request.profile), select(request.only), request.source
    out = Path(request.results).resolve() / chosen.name
    missing = [n for n in names if not (source / f"{n}.ipynb").exists()]
    if missing:
        raise ReportError(f"notebook(s) {', '.join(missing)} not found in {source}")
    parameters = notebook_parameters(request)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    trains = chosen.trains_missing if request.train_missing is None else request.train_missing
    source_of_runs = "training the runs missing from the cache" if trains else "from the run cache, never training"
    data_name = discover(request.data).name
    log(f"report {chosen.name} on {data_name}: {len(names)} notebook(s) -> {out}, {source_of_runs}")
    for number, name in enumerate(names, 1):
        start = time.perf_counter()
        target = execute_notebook(source / f"{name}.ipynb", out / "notebooks", {**parameters, "notebook": name})
        page = export_html(target, out / "html" / f"{name}.html")
        log(f"[{number}/{len(names)}] {name}: {time.perf_counter() - start:.0f} s -> {target.name}, html/{page.name}")
    write_index(out, chosen.name, data_name)
    write_readme(out, chosen.name, parameters)
    return out


def execute_notebook(notebook: Path, folder: Path, parameters: dict[str, object]) -> Path:
    """Run one notebook with papermill into FOLDER/NAME.ipynb (written beside, scrubbed of machine paths, then
    renamed); a failing cell is one ReportError naming it, the partial copy kept as NAME.failed.ipynb."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    target = folder / notebook.name
    partial, failed = target.with_suffix(".partial.ipynb"), target.with_suffix(".failed.ipynb")
    try:
        papermill.execute_notebook(
            str(notebook),
            str(partial),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(notebook.parent),
            progress_bar=False,
            log_output=False,
            extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not its TCP-without-encryption warning
        )
    except PapermillExecutionError as error:
        if partial.exists():
            os.replace(partial, failed)
        raise ReportError(
            f"notebook {notebook.stem} failed in cell {error.cell_index} (execution count {error.exec_count}): "
            f"{error.ename}: {error.evalue}\nthe partial executed notebook is {failed}"
        ) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    scrub_notebook(partial)
    os.replace(partial, target)
    failed.unlink(missing_ok=True)
    return target


def notebook_parameters(request: ReportRequest) -> dict[str, object]:
    """The values papermill injects: the data named explicitly (so each executed notebook shows what it read;
    None for the built-in synthetic faces), every path relative to the notebooks' folder, where they run, so
    no machine's absolute path is written into the executed copies."""
    synthetic = not request.data and not os.environ.get(DATA_ENV)
    where = request.source.resolve()
    return {
        "profile": request.profile,
        "data": None if synthetic else os.path.relpath(resolve_root(request.data).resolve(), where),
        "device": request.device,
        "results": os.path.relpath(Path(request.results).resolve(), where),
        "checkpoints": os.path.relpath(Path(request.checkpoints).resolve(), where),
        "train_missing": request.train_missing,
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
    body = STDERR_STYLE.sub("", body)  # the template's style for stderr blocks: a page carries none to style
    return write_text(target, body)


STDERR_STYLE = re.compile(r"\.jp-RenderedText\[data-mime-type='application/vnd\.jupyter\.stderr'\]\s*\{[^}]*\}")


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
    "reproduces, with honest metrics, a reference report (an AI6126 course report on face parsing) that trained mmsegmentation models on 1,000 "
    "CelebAMask-HQ pairs (800 train / 200 validation, 512x512, batch 8) and reached {reference} after 24k "
    "iterations. Its mFscore dropped classes that were never predicted; here mF1 counts every class of the "
    "ground truth, and <code>mFscore_ref</code> reproduces the reference's figure for comparison.</p>"
)


HEADER = (
    "model",
    "mIoU %",
    "mF1 %",
    "mFscore_ref %",
    "per-image F %",
    "parameters",
    "CPU ms (PyTorch, 512 px)",
    "x anchor (ONNX, 512 px)",
    "training samples",
)


def headline(out: Path, data_name: str | None = None) -> str:
    """The index's headline table: the shipped models made on this report's data and split (`shipped_rows`), the
    Table 4 model the report chose (under the cap, by validation mF1, the cheaper one when tied within noise:
    `tables.best_run`) and the reference's best; read from the report's own tables and the run cache."""
    import pandas as pd

    table = out / "tables" / "table4_models.csv"
    if not table.exists():
        return "<p>No Table 4 yet: the headline appears once notebook 04 has run.</p>"
    frame = pd.read_csv(table, index_col="model")
    longer = out / "tables" / "table4_longer_runs.csv"
    costs = pd.concat([frame, pd.read_csv(longer, index_col=0) if longer.exists() else frame.iloc[:0]])
    costs.index = [str(label).split(",")[0] for label in costs.index]  # a longer run's label starts with its model
    cells = shipped_rows(out.parent, data_name, get_profile(out.name), costs)
    eligible = frame[frame["fits_cap"].astype(bool)]
    if not eligible.empty:
        chosen = eligible.index[eligible["role"] == "chosen"]  # notebook 04's choice (tables.best_run)
        name = chosen[0] if len(chosen) else eligible["mF1"].idxmax()
        row = eligible.loc[name]
        what = f"{name}: Table 4's choice under the cap ({int(row['crop'])} px, one training run)"
        cells.append(_headline_row(what, row, f"{int(row['samples']):,}"))
    ref = REFERENCE_TABLE4["bisenetv2_xs"]
    cells.append(
        (
            "bisenetv2_xs: the reference report's best under the cap (mmsegmentation, GPU, 512 px)",
            f"{ref['mIoU']:.2f}",
            "–",
            f"{ref['mFscore']:.1f}",
            "–",
            "–",
            "–",
            "–",
            f"{24_000 * 8:,}",
        )
    )
    rows = "\n".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return (
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in HEADER) + "</tr></thead>\n" + rows + "</table>"
        "<p>Validation scores (200 validation masks at 512 px, no test-time augmentation): of the shipped file as "
        "shipped (fp16 weights), and of each run's best checkpoint. Training samples count every stage a shipped "
        "model was trained in. x anchor: ONNX Runtime latency as a multiple of torchvision's "
        "<code>lraspp_mobilenet_v3_large</code>, timed in the same run. Page 04 has every model, the longer runs "
        "and fine-tunes, their noise and their cost; each model's card is beside it in <code>results/models/</code>."
        "</p>"
    )


def shipped_rows(results: Path, data_name: str | None, profile, costs) -> list[tuple[str, ...]]:
    """Headline rows of the models shipped under RESULTS/models/ by runs on this report's data and split: the
    shipped file's own validation scores (`eval-val-tta_none[-adjusted]-fp16.json` beside its run), the training samples of
    every stage (`runcache.lineage`), and the size and latency `costs` lists for its model."""
    split = (profile.common.get("split_seed", 0), profile.common.get("val_fraction", 0.2))
    rows = []
    for weights in sorted((results / "models").glob("*.pt")):
        meta = load_checkpoint(weights)
        stages = lineage(results, str(meta.get("run_key")))
        scores = stored_evaluation(results, str(meta.get("run_key")), variant=evaluation_variant(meta, weights))
        if not stages or not scores or stages[0]["data"]["name"] != data_name:
            continue
        if (stages[0]["config"]["split_seed"], stages[0]["config"]["val_fraction"]) != split:
            continue
        samples = sum(stage["config"]["iterations"] * stage["config"]["batch_size"] for stage in stages)
        uses = {DEFAULT_MODEL.name: " (facelib predict's default)", FAST_MODEL.name: " (facelib predict --model fast)"}
        default = uses.get(weights.name, "")
        what = f"{weights.name}{default}: {meta['model']} at {meta['input_size']} px, {len(stages)} training stage(s)"
        cost = costs.loc[[meta["model"]]].iloc[0] if meta["model"] in costs.index else None
        rows.append(_headline_row(what, scores if cost is None else {**cost, **scores}, f"{samples:,}"))
    return rows


def _headline_row(label: str, row, samples: str) -> tuple[str, ...]:
    """One headline row from scores and (where known) a Table 4 row's size and latency."""
    known = {k: row[k] for k in ("params", "CPU ms", "x anchor") if k in row and row[k] == row[k]}  # not NaN
    return (
        label,
        f"{row['mIoU']:.2f}",
        f"{row['mF1']:.2f}",
        f"{row['mFscore_ref']:.2f}",
        f"{row['per_image_F']:.2f}",
        f"{int(known['params']):,}" if "params" in known else "–",
        f"{known['CPU ms']:.0f}" if "CPU ms" in known else "–",
        f"{known['x anchor']:.2f}" if "x anchor" in known else "–",
        samples,
    )


def write_index(out: Path, profile: str, data_name: str | None = None) -> Path:
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
{headline(out, data_name)}
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
