"""Train the rows of report tables in one process (the decoded data and CUDA stay warm between rows) and,
after each row, pack every finished run into OUT so that a command stopped by its time limit still returns
them. Called by scripts/gpu_tables.sh, which installs the wheels and keeps the log.

usage: gpu_tables.py TABLES DATA OUT --profile P --device D [--rows a,b] [--tta none,flip] [--weights]
       [--budget S] [--results results] [--checkpoints checkpoints]
OUT/runs.tar: RESULTS/runs/KEY/ of each finished run this command trained or scored, and RESULTS/splits;
OUT/KEY.pt: each such run's best checkpoint (fp32), with --weights.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tarfile
import time
import traceback
from pathlib import Path


def pack(out: Path, results: Path, checkpoints: Path, keys: list[str], weights: bool) -> None:
    """runs.tar (splits + the finished runs in `keys`), written beside and renamed, and each KEY.pt."""
    partial = out / ".runs.tar"
    with tarfile.open(partial, "w") as archive:
        archive.add(results / "splits", arcname=f"{results.name}/splits")
        for key in keys:
            archive.add(results / "runs" / key, arcname=f"{results.name}/runs/{key}")
    os.replace(partial, out / "runs.tar")
    for key in keys if weights else ():
        best = checkpoints / key / "best.pt"
        if best.exists():
            shutil.copyfile(best, out / f".{key}.pt")
            os.replace(out / f".{key}.pt", out / f"{key}.pt")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables")
    parser.add_argument("data")
    parser.add_argument("out", type=Path)
    parser.add_argument("--profile", default="gpu-short")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rows", help="rows of the (single) table, in this order")
    parser.add_argument("--tta", default="", help="TTA modes to score each best checkpoint with, e.g. none,flip")
    parser.add_argument("--weights", action="store_true", help="bring back each run's best.pt")
    parser.add_argument("--budget", type=float, default=480, help="start no row after this many seconds")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    args = parser.parse_args()

    import pandas as pd

    from facelib.experiments import Report, chosen_rows, round_frame, row_runs

    start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.profile, args.data, args.device, args.results, args.checkpoints, "scripts/gpu_tables.py")
    only = args.rows.split(",") if args.rows else None
    modes = [m for m in args.tta.split(",") if m]
    plan = [(table, label) for table in args.tables.split(",") for label in chosen_rows(args.profile, table, only)]
    done, lines, failed = [], [], 0
    for number, (table, label) in enumerate(plan):
        elapsed = time.time() - start
        if elapsed > args.budget:
            print(f"--- {elapsed:.0f} s: budget of {args.budget:.0f} s spent; not started: {plan[number:]}")
            break
        print(f"--- {elapsed:.0f} s: {table}/{label}")
        try:
            ((run, line),) = row_runs(report, table, [label], modes)
        except Exception:  # one failing row must not lose the others: report it and go on
            failed += 1
            print(f"--- {time.time() - start:.0f} s: {table}/{label} failed:\n{traceback.format_exc()}")
            continue
        done.append(run.key)
        lines.append(line)
        pack(args.out, args.results, args.checkpoints, done, args.weights)
        print(
            f"--- {time.time() - start:.0f} s: {table}/{label} done ({run.key}, {line['train s']:.0f} s of "
            f"training, best mIoU {line['mIoU']:.2f}, mF1 {line['mF1']:.2f}), packed"
        )
    if lines:
        print(round_frame(pd.DataFrame(lines)).to_string(index=False))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
