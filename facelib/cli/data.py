"""`facelib stats`, `facelib audit`, `facelib synth`: the data's statistics, its label audit, synthetic faces."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelib.cli.common import DATA_HELP, RESULTS_HELP


def stats(args: argparse.Namespace) -> list[Path]:
    from facelib.stats import write_stats  # lazy: --help stays fast

    return write_stats(args.data, args.split, args.out, args.seed)


def audit(args: argparse.Namespace) -> list[Path]:
    from facelib.audit import write_audit  # lazy: --help stays fast

    return write_audit(args.data, args.out, args.write_corrected)


def synth(args: argparse.Namespace) -> list[Path]:
    from facelib.synthetic import write_synthetic_dataset  # lazy: --help stays fast

    return [write_synthetic_dataset(args.out, args.n_train, args.n_test, args.size, args.seed)]


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("stats", help="class frequencies, RGB mean/std, class weights, split file")
    parser.add_argument("data", nargs="?", help=DATA_HELP)
    parser.add_argument("--out", default="results", help=RESULTS_HELP)
    parser.add_argument("--split", help="split file to read or create (default: OUT/splits/NAME-seedSEED.json)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    parser.set_defaults(run=stats)

    parser = commands.add_parser("audit", help="find masks whose left/right labels are reversed")
    parser.add_argument("data", nargs="?", help=DATA_HELP)
    parser.add_argument("--out", default="results", help=RESULTS_HELP)
    parser.add_argument("--write-corrected", metavar="DIR", help="write a corrected copy of the dataset to DIR")
    parser.set_defaults(run=audit)

    parser = commands.add_parser("synth", help="write a synthetic dataset in the real data's layout")
    parser.add_argument("out", help="folder to create")
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=synth)
