"""The `facelib` command line: one module per group of subcommands, each holding its handlers beside their
arguments (`add`), each handler a thin call into the library. Handlers import the library modules they run
inside the function (marked `# lazy`), so `facelib --help` never imports torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from facelib.cli import bench, data, models, report, ship, training
from facelib.errors import ConfigError, DataError, ReportError, RunBusyError

GROUPS = (data, training, models, ship, bench, report)
"""The groups in the order `facelib --help` lists their subcommands."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facelib", description="Face parsing with models under 1.8M parameters.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = args.run(args)
    except (DataError, ConfigError, ReportError, RunBusyError) as error:
        print(f"facelib {args.command}: error: {error}", file=sys.stderr)
        return 2
    print("wrote:")
    for path in written:
        print(f"  {path}")
    return 0
