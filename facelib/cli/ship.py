"""`facelib ship`: a checkpoint as the shipped fp16 model, evaluated as shipped, with its model card."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelib.cli.common import DATA_HELP, checkpoint_path
from facelib.errors import ConfigError


def ship(args: argparse.Namespace) -> list[Path]:
    from facelib.ship import DEFAULT_MODEL, ship  # lazy: --help stays fast

    if bool(args.checkpoint) == bool(args.best):
        raise ConfigError("name a checkpoint (file, run folder or run key) or --best PROFILE, not both or neither")
    if args.best and args.why:
        raise ConfigError("--why explains a named checkpoint; with --best the card states how the run was chosen")
    if args.best:
        from facelib.report_rows import TableRows  # lazy: --help stays fast
        from facelib.selection import best_for_shipping  # lazy: --help stays fast

        rows = TableRows.open(args.best, args.data, args.device, args.out, args.checkpoints, train_missing=False)
        checkpoint, selection = best_for_shipping(rows, args.allow_missing)
    else:
        checkpoint, selection = checkpoint_path(args.checkpoint), args.why
    target = Path(args.to) if args.to else DEFAULT_MODEL
    speed = None
    if args.speed:
        from facelib.latency import checkpoint_speed  # lazy: --help stays fast

        speed = checkpoint_speed(checkpoint, args.input_size)
    written = ship(
        checkpoint,
        target,
        args.data,
        args.out,
        args.device,
        evaluate=not args.no_eval,
        card=not args.no_card,
        selection=selection,
        onnx=args.onnx,
        input_size=args.input_size,
        speed=speed,
    )
    print(f"{target}: fp16 weights of {checkpoint} ({target.stat().st_size / 1e6:.1f} MB)")
    return written


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ship",
        help="a run's best checkpoint as fp16 weights, evaluated as shipped, with a model card",
        description="Write fp16 weights of a checkpoint (default target: results/models/facelib-best.pt, the model "
        "`facelib predict` uses by default), evaluate that file on the validation split (TTA none and flip, and "
        "the audit-corrected labels) and write a model card TARGET.md beside it.",
    )
    parser.add_argument("checkpoint", nargs="?", help="a checkpoint file, a run folder, or a run key")
    parser.add_argument(
        "--best",
        metavar="PROFILE",
        help="instead: the best run under the cap among that profile's Table 4 rows and their longer runs and "
        "fine-tunes (by validation mF1; ties: fewest FLOPs)",
    )
    parser.add_argument(
        "--why",
        metavar="PHRASE",
        help="with a named checkpoint: why it was chosen, a phrase the model card prints after 'chosen as'",
    )
    parser.add_argument("--to", metavar="TARGET.pt", help="where to write (default: results/models/facelib-best.pt)")
    parser.add_argument("--data", help=DATA_HELP + " (the validation images)")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="with --best: choose among the Table 4 rows that are finished when others are not (the card names "
        "the missing ones)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also write TARGET.onnx and TARGET_int8.onnx (what `facelib predict --backend onnx` uses), the int8 "
        "file evaluated too",
    )
    parser.add_argument("--input-size", type=int, help="the shipped file's input side (default: its training crop)")
    parser.add_argument(
        "--speed",
        action="store_true",
        help="time the model in ONNX Runtime against the anchor (torchvision's LR-ASPP at 512 px) in this call, "
        "and state both times and their ratio in the card",
    )
    parser.add_argument("--no-eval", action="store_true", help="do not evaluate (the card then has no scores)")
    parser.add_argument("--no-card", action="store_true", help="write the weights only")
    parser.add_argument("--out", default="results", help="results folder: run cache and split files (default: results)")
    parser.add_argument("--checkpoints", default="checkpoints", help="checkpoints folder, for --best")
    parser.set_defaults(run=ship)
