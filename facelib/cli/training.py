"""`facelib train` (a run, or a multi-stage recipe) and `facelib runs` (every row of a report table)."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelib.cli.common import DATA_HELP
from facelib.config import RECIPES, TRAIN_PRESETS, TrainConfig, add_config_flags, config_from_flags
from facelib.errors import ConfigError, ReportError


def train(args: argparse.Namespace) -> list[Path]:
    from facelib.recipe import train_recipe  # lazy: --help stays fast
    from facelib.train import train  # lazy: --help stays fast

    if args.preset in RECIPES:  # every stage's settings are the recipe's: only where and how it runs are flags
        given = {name: getattr(args, name) for name in TrainConfig.__dataclass_fields__ if getattr(args, name, None)}
        summary = train_recipe(args.preset, given, args.out, args.checkpoints, args.time_limit)
    else:
        config = config_from_flags(args, args.preset)
        print("config: " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items()))
        summary = train(config, args.out, args.checkpoints, args.stop_after, True, args.time_limit, restart=args.rerun)
    run_dir, best = Path(summary["run_dir"]), summary["best"]
    if best:
        scores = (best["iteration"], best["mIoU"], best["mF1"], best["mFscore_ref"], best["per_image_F"])
        print(
            "best (iteration {}): mIoU {:.2f}, mF1 {:.2f}, mFscore (reference-style) {:.2f}, per-image F {:.2f}".format(
                *scores
            )
        )
    state = "finished" if summary["finished"] else f"stopped at iteration {summary['iterations_done']} (resumable)"
    print(f"run {summary['key']} {state}: results in {run_dir}, checkpoints in {summary['checkpoint_dir']}")
    return sorted(p for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("."))  # not the run's lock


def runs(args: argparse.Namespace) -> list[Path]:
    import pandas as pd  # lazy: --help stays fast

    from facelib.report_rows import RowsPlan, TableRows, train_rows  # lazy: --help stays fast
    from facelib.runcache import TimeLimitReached  # lazy: --help stays fast
    from facelib.tables import round_frame  # lazy: --help stays fast

    rows = TableRows.open(
        args.profile, args.data, args.device, args.out, args.checkpoints, not args.cached_only, args.time_limit
    )
    tables, only = args.table.split(","), args.rows.split(",") if args.rows else None
    if only and len(tables) > 1:
        raise ConfigError("--rows picks rows of one table; name a single --table with it")
    modes = [m for m in args.tta.split(",") if m]
    pack = Path(args.pack) if args.pack else None
    plan = RowsPlan(tables, only, modes, args.budget, pack, args.weights)
    try:
        lines, failed = train_rows(rows, plan)
    except TimeLimitReached as stopped:
        lines, failed = [], 0
        print(f"facelib runs: {stopped}")
    if lines:
        print(round_frame(pd.DataFrame(lines)).to_string(index=False))
    if failed:
        raise ReportError(f"{failed} row(s) failed (their errors are printed above); the others are done")
    return sorted(p for line in lines for p in (Path(args.out) / "runs" / line["key"]).iterdir() if p.is_file())


def add(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model (or resume it, or find it finished in the run cache)")
    parser.add_argument(
        "preset",
        nargs="?",
        choices=[*TRAIN_PRESETS, *RECIPES],
        help="a training preset (its fields are the defaults, flags override them) or a multi-stage recipe "
        "(facelib/config.py)",
    )
    add_config_flags(parser)  # one flag per TrainConfig field, its comment as the help
    parser.add_argument("--stop-after", type=int, help="stop after this many iterations, leaving a resumable run")
    parser.add_argument("--time-limit", type=float, help="stop at the first checkpoint after this many seconds")
    parser.add_argument("--rerun", action="store_true", help="discard a stopped run's last.pt and start it again")
    parser.add_argument("--out", default="results", help="results folder (default: results)")
    parser.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder (default: checkpoints)")
    parser.set_defaults(run=train)

    parser = commands.add_parser(
        "runs",
        help="train (or find in the run cache) every row of a report table, as its notebook does",
        description="The runs behind a report table for a profile, exactly as notebooks 02-04 define them "
        "(facelib.profiles.TABLES): trained where missing, then optionally scored with test-time augmentation "
        "(stored beside each run, where notebook 04 reads them). Meant for GPU leases: train here, assemble the "
        "report elsewhere with `facelib report --cached-only`.",
    )
    parser.add_argument("--profile", default="smoke", help="smoke (default), cpu, gpu-short or full")
    parser.add_argument("--table", required=True, help="augmentation, loss or comparison (comma-separated for several)")
    parser.add_argument("--rows", help="comma-separated rows of the table (default: all), e.g. fastscnn,bisenetv2_xs")
    parser.add_argument(
        "--tta",
        default="",
        help="after training, evaluate each best checkpoint with these TTA modes, e.g. none,flip (default: none of them)",
    )
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--device", default="auto", help="where missing runs train: auto (default), cpu, cuda")
    parser.add_argument("--out", default="results", help="results root: run cache in OUT/runs (default: results)")
    parser.add_argument("--checkpoints", default="checkpoints", help="checkpoint folder (default: checkpoints)")
    parser.add_argument("--cached-only", action="store_true", help="never train: fail on a run missing from the cache")
    parser.add_argument("--budget", type=float, help="seconds: start no row after this long")
    parser.add_argument(
        "--pack",
        metavar="DIR",
        help="after each row, pack the finished runs into DIR/runs.tar (with RESULTS/splits), for a machine lent "
        "for a few minutes",
    )
    parser.add_argument("--weights", action="store_true", help="with --pack: each run's best.pt as DIR/KEY.pt too")
    parser.add_argument(
        "--time-limit",
        type=float,
        help="seconds: stop at the first checkpoint after this long (the run resumes from it next time); rows not "
        "started by then are left for next time",
    )
    parser.set_defaults(run=runs)
