"""`facelib bench train | anchor | infer`: training throughput, the anchor latency ratio, inference latency."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelib.cli.common import DATA_HELP
from facelib.config import add_config_flags, config_from_flags
from facelib.errors import ConfigError

BENCH_OUT_HELP = "results folder: writes OUT/bench/ (default: results)"


def anchor(args: argparse.Namespace) -> list[Path]:
    from facelib.latency import anchor_bench_names, anchor_latency, write_bench  # lazy: --help stays fast

    models = args.model.split(",")
    table = anchor_latency(models, args.size, args.threads, args.repeats)
    print(table.to_string(float_format="{:.3g}".format))
    stem, title = anchor_bench_names(models, args.size, args.threads)
    return write_bench(table, stem, title, "none (untrained models, random inputs)", args.out)


def train(args: argparse.Namespace) -> list[Path]:
    from facelib.bench import LEVER_COLUMNS, bench_cpu_levers, bench_train, lever_bench_names, train_bench_names  # lazy
    from facelib.checkpoint import resolve_device  # lazy: --help stays fast
    from facelib.latency import SHOWN_COLUMNS, write_bench  # lazy: --help stays fast

    models = (args.model or "fastscnn").split(",")
    args.model = models[0]
    config = config_from_flags(args)
    levers = resolve_device(config.device).type == "cpu" and not args.stages
    if len(models) > 1 and not levers:
        raise ConfigError("several --model names make one CPU lever table; the stage table takes one model")
    if levers:
        table = bench_cpu_levers(config, args.steps, args.warmup, args.out, args.compile is not False, models)
        print(table[list(LEVER_COLUMNS)].reset_index().to_string(index=False, float_format="{:.3g}".format))
        return write_bench(table, *lever_bench_names(config, models), args.data, args.out)
    table = bench_train(config, args.steps, args.warmup, args.out)
    _print_shown(table, SHOWN_COLUMNS)
    return write_bench(table, *train_bench_names(config, table), args.data, args.out)


def infer(args: argparse.Namespace) -> list[Path]:
    from facelib.latency import INFER_BACKENDS, SHOWN_COLUMNS, bench_infer, infer_bench_names, write_bench  # lazy

    backends = tuple(args.backends.split(",")) if args.backends else INFER_BACKENDS
    table = bench_infer(
        args.model,
        args.checkpoint,
        args.threads,
        args.size,
        args.batch,
        args.repeats,
        backends=backends,
        data=args.data,
        out=args.out,
        onnx_dir=args.keep_onnx,
        accuracy=args.accuracy,
    )
    _print_shown(table, SHOWN_COLUMNS)
    stem, title = infer_bench_names(table, bool(args.checkpoint), args.size, args.threads, args.batch)
    return write_bench(table, stem, title, args.data, args.out)


def _print_shown(table, columns) -> None:
    shown = [c for c in columns if c in table.columns]
    print(table[shown].reset_index().to_string(index=False, float_format="{:.4g}".format))


def add(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="measure speed: training throughput or inference latency")
    targets = bench.add_subparsers(dest="target", required=True, metavar="WHAT")

    parser = targets.add_parser("train", help="images/s of the data pipeline, the training step and the loop")
    add_config_flags(parser)  # the run being timed, as `facelib train` takes it (--crop, --batch: short forms)
    parser.set_defaults(batch_size=16, run=train)
    parser.add_argument(
        "--stages",
        action="store_true",
        help="on a CPU: the data/step/loop stage table instead of the lever table (the stage table is what CUDA "
        "always gives)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed batches per stage (default: 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (default: 5)")
    parser.add_argument("--out", default="results", help=BENCH_OUT_HELP)

    parser = targets.add_parser("anchor", help="ONNX Runtime latency as a multiple of torchvision's LR-ASPP")
    parser.add_argument("--model", default="fastscnn,lraspp_mobilenetv3", help="comma-separated; NAME@320: at 320 px")
    parser.add_argument("--size", type=int, default=512, help="square input side (default: 512)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: 2)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per model (default: 20)")
    parser.add_argument("--out", default="results", help=BENCH_OUT_HELP)
    parser.set_defaults(run=anchor)

    parser = targets.add_parser("infer", help="CPU latency per backend: eager, compile, ONNX fp32 and int8")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a registered model name (untrained weights)")
    which.add_argument("--checkpoint", help="a checkpoint file (trained weights)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    parser.add_argument("--size", type=int, default=512, help="square input side (default: 512)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (default: 1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per backend (default: 30)")
    parser.add_argument(
        "--backends",
        help="comma-separated subset of eager,compile,onnx_fp32,onnx_int8,onnx_fp32_fixed,onnx_int8_fixed (_fixed: "
        "exported for exactly this batch and size)",
    )
    parser.add_argument("--keep-onnx", metavar="DIR", help="keep the exported ONNX files in DIR")
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="with --checkpoint: each backend's mIoU on the validation split (int8's cost)",
    )
    parser.add_argument("--data", help=DATA_HELP + " (inputs and int8 calibration)")
    parser.add_argument("--out", default="results", help=BENCH_OUT_HELP)
    parser.set_defaults(run=infer)
