"""facelib's modules form one-way layers: each imports only from layers below it (so no import cycle can
exist), imports its facelib dependencies at the top (the CLI's handlers excepted: lazy, to keep `--help`
fast), and stays small enough to read. `python -m pytest tests/test_layers.py -q` checks it; the graph it
walks is printed by `python tests/test_layers.py`."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "facelib"
LAYERS = [
    ["facelib", "facelib.errors"],
    ["facelib.outputs"],
    ["facelib.labels"],
    ["facelib.synthetic", "facelib.augment", "facelib.metrics", "facelib.models.common"],
    ["facelib.data", "facelib.models.fastscnn", "facelib.models.bisenetv2", "facelib.models.library"],
    ["facelib.models", "facelib.photos"],
    [
        "facelib.audit",
        "facelib.stats",
        "facelib.losses",
        "facelib.models.cost",
        "facelib.sampling",
        "facelib.averaging",
    ],
    ["facelib.config"],
    ["facelib.checkpoint", "facelib.tta", "facelib.machine"],
    ["facelib.distill", "facelib.adjust"],
    ["facelib.run"],
    ["facelib.train"],
    ["facelib.runcache"],
    ["facelib.infer"],
    ["facelib.recipe"],
    ["facelib.export"],
    ["facelib.profiles"],
    ["facelib.card"],
    ["facelib.latency", "facelib.ship"],
    ["facelib.bench"],
    ["facelib.tables"],
    ["facelib.report_rows", "facelib.figures"],
    ["facelib.selection", "facelib.levers", "facelib.report", "facelib.report_build"],
    ["facelib.cli.common"],
    ["facelib.cli.data", "facelib.cli.training", "facelib.cli.models", "facelib.cli.ship", "facelib.cli.bench"],
    ["facelib.cli.report"],
    ["facelib.cli"],
    ["facelib.cli.__main__"],
    ["facelib.__main__"],
]
"""Bottom to top: errors and records, labels, data and models, losses and metrics, the user's settings
(config), model files and running them, a run's identity, the training loop, the run cache, inference, recipes,
export, the report's profiles, benchmarks and shipping, the report's tables, the runs behind them, the
choice of a model and what notebooks render, the command line. A module may import from any layer below its own, never from its own or above."""
MAX_LINES = 450
MAX_FUNCTION_LINES, MAX_CLASS_LINES = 100, 150
MAX_FMT_SKIPS = 5  # only where a literal table reads better aligned; the formatter owns everything else
FORMATTER_OFF = re.compile(r"#\s*fmt:\s*(skip|off)")
RUN_FILES = ("summary.json", "config.json", "metrics.csv")
RUN_CACHE_WRITERS = {"facelib.run", "facelib.train"}  # a run's own records, written while it trains
LAZY = {
    "facelib.config",
    *(f"facelib.cli.{name}" for name in ("data", "training", "models", "ship", "bench", "report")),
}
"""Modules allowed facelib imports inside functions, to keep `facelib --help` from importing torch: the
CLI's handlers import what they run; the config checks names against the registries when it is built."""


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> list[tuple[str, bool]]:
    """The facelib modules a file imports, each with whether the import is at the module's top level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "facelib":
            known = modules()  # `from PACKAGE import module` imports the module, not the package
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module for a in node.names
            ]
            found += [(name, id(node) in top) for name in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names if a.name.split(".")[0] == "facelib"]
    return found


def layer_of() -> dict[str, int]:
    return {name: level for level, names in enumerate(LAYERS) for name in names}


def test_every_module_has_a_layer():
    assert set(modules()) == set(layer_of()), "a module was added or removed: place it in LAYERS"


def test_imports_only_point_down():
    level = layer_of()
    upward = [
        f"{source} (layer {level[source]}) imports {target} (layer {level[target]})"
        for source, path in modules().items()
        for target, _ in imports(path)
        if level[target] >= level[source]
    ]
    assert not upward, "\n".join(upward)


def test_facelib_imports_are_at_the_top_of_each_module():
    lazy = [
        f"{name} imports {target} inside a function"
        for name, path in modules().items()
        if name not in LAZY
        for target, at_top in imports(path)
        if not at_top
    ]
    assert not lazy, "\n".join(lazy)


def test_no_module_is_too_long():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_function_or_class_is_too_long():
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.end_lineno - node.lineno + 1
        > (MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES)
    ]
    assert not long, f"over {MAX_FUNCTION_LINES} lines (a function) or {MAX_CLASS_LINES} (a class): {long}"


def test_the_formatter_owns_the_code():
    markers = [
        f"{name}:{number}"
        for name, path in modules().items()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if FORMATTER_OFF.search(line)
    ]
    assert len(markers) <= MAX_FMT_SKIPS, f"{len(markers)} formatter markers (at most {MAX_FMT_SKIPS}): {markers}"


def test_only_the_run_cache_opens_run_folders():
    """A run folder's files are joined to a path in `facelib.runcache` (readers) and by the run that writes
    them; every other module asks the run cache."""
    opened = [
        f"{name} opens {node.right.value}"
        for name, path in modules().items()
        if name != "facelib.runcache" and name not in RUN_CACHE_WRITERS
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and isinstance(node.right, ast.Constant)
        and node.right.value in RUN_FILES
    ]
    assert not opened, "\n".join(opened)


@pytest.mark.slow
def test_help_starts_fast():
    """`facelib --help` imports no model, data or training code (measured in a fresh process)."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "facelib", "--help"], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    assert "train" in result.stdout and seconds < 2.0, f"facelib --help took {seconds:.2f} s"
    probe = "import sys, facelib.cli; print(sorted(m for m in sys.modules if m in ('torch', 'pandas', 'cv2')))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", f"importing facelib.cli loads {loaded.strip()}"


if __name__ == "__main__":
    for name, path in modules().items():
        print(f"{name} -> {', '.join(sorted({t for t, _ in imports(path)})) or '-'}")
