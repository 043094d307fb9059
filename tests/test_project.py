"""The project's own promises: one environment description, the pinned versions, the CLI."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import yaml

from facelib.cli import main

ROOT = Path(__file__).resolve().parents[1]


def normalise(requirement: str) -> str:
    name, rest = re.match(r"([A-Za-z0-9_.\-]+)(.*)", requirement.replace(" ", "")).groups()
    return re.sub(r"[-_.]+", "-", name).lower() + rest


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {normalise(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in environment["dependencies"]
    assert any(line.startswith("-e .") for line in pip)
    assert {normalise(r) for r in pip if not r.startswith("-e")} == wanted


def test_constraints_pin_the_local_torch_and_every_dependency():
    pins = dict(
        normalise(line).split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = re.match(r"[a-z0-9\-]+", normalise(requirement)).group()
        assert name in pins, f"{name} is not pinned in constraints.txt"


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "facelib.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "stats" in result.stdout and "audit" in result.stdout
    for command in ("stats", "audit", "train", "eval"):
        result = subprocess.run(
            [sys.executable, "-m", "facelib.cli", command, "--help"], capture_output=True, text=True
        )
        assert result.returncode == 0 and "FACELIB_DATA" in result.stdout
    result = subprocess.run([sys.executable, "-m", "facelib", "predict", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--checkpoint" in result.stdout  # `python -m facelib` is the same CLI


def test_commands_run_on_the_synthetic_default(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FACELIB_DATA", raising=False)
    out = tmp_path / "results"
    assert main(["stats", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dataset synthetic: 200 pairs (160 train / 40 val)" in printed
    table = pd.read_csv(out / "tables" / "synthetic_class_stats.csv", index_col="class")
    assert len(table) == 19 and table["presence_all"]["skin"] == 1.0
    for name in ("synthetic_rgb_stats.md", "synthetic_class_weights.csv"):
        assert (out / "tables" / name).exists()
    assert (out / "figures" / "synthetic_class_frequency.png").exists()
    assert (out / "splits" / "synthetic-seed0.json").exists()
    footer = (out / "tables" / "synthetic_class_stats.md").read_text().splitlines()[-1]
    assert footer.startswith("Made by `facelib") and "commit " in footer and "cores" in footer
    assert main(["audit", "--out", str(out)]) == 0
    assert "0 of 200 masks have reversed left/right labels" in capsys.readouterr().out
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_readme_is_a_short_guide_and_every_docs_link_resolves():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250, "the README is a user's guide: experiments belong in docs/"
    hashes = [w for w in re.findall(r"\b[0-9a-f]{7,12}\b", readme) if re.search(r"\d", w) and re.search("[a-f]", w)]
    assert not hashes, f"commit hashes or run keys in the README (they belong in docs/experiments.md): {hashes[:5]}"
    for page in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not target.startswith(("http:", "https:", "mailto:")):
                assert (page.parent / target).exists(), f"{page.name}: link {target} does not resolve"


def test_every_facelib_name_the_docs_cite_exists():
    """`facelib.module` or `facelib.module.name` in the README, CONTRIBUTING and docs/ names real code."""
    missing = []
    for page in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for cited in re.findall(r"`(facelib(?:\.[A-Za-z_]+)+)`", page.read_text(encoding="utf-8")):
            target = importlib.import_module("facelib")
            for name in cited.split(".")[1:]:  # a submodule, else an attribute, one name at a time
                attribute = getattr(target, name, None)
                module = f"{getattr(target, '__name__', '')}.{name}"
                if attribute is None and hasattr(target, "__path__") and importlib.util.find_spec(module):
                    attribute = importlib.import_module(module)
                target = attribute
            if target is None:
                missing.append(f"{page.name}: {cited}")
    assert not missing, missing


def test_a_provenance_line_quotes_the_command_so_it_pastes_into_a_shell(monkeypatch):
    from facelib.outputs import provenance

    monkeypatch.setattr(sys, "argv", ["/x/.venv/bin/facelib", "ship", "run.pt", "--why", "the fast model, 256 px"])
    assert provenance("data").startswith("Made by `facelib ship run.pt --why 'the fast model, 256 px'` on data `data`")
