"""`facelib report`: the notebook series executed with papermill and exported as the report."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelib.cli.common import DATA_HELP, TRAIN_MISSING_HELP


def report(args: argparse.Namespace) -> list[Path]:
    from facelib.report_build import ReportRequest, run_report  # lazy: --help stays fast

    fields = ("profile", "data", "device", "only", "out", "checkpoints", "notebooks", "train_missing")
    out = run_report(ReportRequest(*(getattr(args, name) for name in fields)))
    return [out / "README.md", out / "html" / "index.html"]


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="execute the notebook series with papermill and export the report (HTML, tables, figures) to "
        "RESULTS/PROFILE/",
    )
    parser.add_argument("--profile", default="smoke", help="smoke (default), cpu, gpu-short or full")
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--device", default="auto", help="where missing runs train: auto (default), cpu, cuda")
    parser.add_argument("--only", help="comma-separated notebook numbers or names, e.g. 02,03 (default: all)")
    parser.add_argument("--out", default="results", help="results root: run cache in OUT/runs (default: results)")
    parser.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder (default: checkpoints)")
    parser.add_argument("--notebooks", help="folder of the notebooks (default: the repository's notebooks/)")
    parser.add_argument("--train-missing", action=argparse.BooleanOptionalAction, help=TRAIN_MISSING_HELP)
    parser.add_argument("--cached-only", dest="train_missing", action="store_false", help="--no-train-missing")
    parser.set_defaults(run=report)
