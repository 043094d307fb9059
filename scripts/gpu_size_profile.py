"""Size the gpu-short profile from measurements: train each kind of row it holds for a few iterations on
this GPU, take the steady images/s (second logged window) and the validation time, and estimate what each
table of the profile costs at its stated iterations. A probe for sizing, not a benchmark (see `facelib bench`
when it exists). Usage: python scripts/gpu_size_profile.py DATA OUT [ITERATIONS] [PROFILE]"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from facelib.data import keep_decoded
from facelib.profiles import LOSS_ROWS, get_profile
from facelib.train import train


def main() -> None:
    data, out = sys.argv[1], Path(sys.argv[2])
    iterations = int(sys.argv[3]) if len(sys.argv) > 3 else 120
    profile = get_profile(sys.argv[4] if len(sys.argv) > 4 else "gpu-short")
    keep_decoded(True)
    rows = [("comparison", {"model": m}) for m in profile.models]
    rows += [("augmentation", {"augment": a}) for a in ("baseline", "full")]
    rows += [("loss", {"loss": loss}) for loss in LOSS_ROWS if loss != "wce_lovasz_aux08"]
    found, measured = [], {}
    for table, row in rows:
        config = profile.config(table, data, "auto", **row)
        probe = config.replace(iterations=iterations, val_interval=iterations // 2)
        identity = json.dumps(probe.to_dict(), sort_keys=True)
        if identity not in measured:  # the same probe as an earlier row (loss "ce" = augmentation "full") is reused
            measured[identity] = _measure(probe, out)
        speed = measured[identity]
        points = config.iterations // config.val_interval
        estimate = config.iterations * config.batch_size / speed["steady images/s"] + points * speed["val s"]
        found.append({"table": table, "row": next(iter(row.values())), "batch": config.batch_size,
                      "crop": config.crop_size, **speed, "profile iterations": config.iterations,
                      "estimated s at profile size": round(estimate + speed["setup s"])})  # fmt: skip
        print(found[-1], flush=True)
    frame = pd.DataFrame(found)
    print(frame.to_string(index=False))
    for table in ("comparison", "augmentation", "loss"):
        part = frame[frame.table == table]
        total = part["estimated s at profile size"].sum()
        if table == "augmentation":  # 6 rows: CE step, data cost between baseline and full
            total = part["estimated s at profile size"].mean() * 6
        if table == "loss":  # aux08 costs what wce_lovasz costs; "ce" is Table 1's "full" run when the two agree
            total += float(part.loc[part.row == "wce_lovasz", "estimated s at profile size"].iloc[0])
            same = profile.config("loss", data, loss="ce") == profile.config("augmentation", data, augment="full")
            total -= float(part.loc[part.row == "ce", "estimated s at profile size"].iloc[0]) if same else 0.0
        print(f"{table}: estimated {total:.0f} s for the whole table at profile size")
    frame.to_csv(out / "sizing.csv", index=False)


def _measure(probe, out: Path) -> dict[str, float | None]:
    """Train the probe; its steady images/s (last logged window), data wait, validation and setup seconds."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    summary = train(probe, out=out / "results", checkpoints=out / "checkpoints", progress=False)
    wall = time.perf_counter() - start
    metrics = pd.read_csv(Path(summary["run_dir"]) / "metrics.csv")
    steady = float(metrics["images_per_s"].iloc[-1])
    return {
        "steady images/s": round(steady, 1),
        "step ms": round(1000 * probe.batch_size / steady, 1),
        "data wait": round(float(metrics["data_wait_share"].iloc[-1]), 3),
        "val s": round(float(metrics["val_s"].mean()), 2),
        "setup s": round(float(wall - summary["train_wall_s"] - metrics["val_s"].sum()), 1),
        "peak GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
    }


if __name__ == "__main__":
    main()
