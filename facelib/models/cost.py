"""Size and cost of each registered model: parameters, FLOPs and CPU latency, as one table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from facelib.models import MODELS, PARAMETER_CAP, Segmenter, build_model, fits_cap, model_spec, parameter_breakdown
from facelib.outputs import provenance, write_table


def inference_flops(model: Segmenter, size: int = 512) -> int:
    """FLOPs of one eval-mode forward pass on a 1x3xSxS input, counted by `torch.utils.flop_counter`.

    The counter charges 2 FLOPs per multiply-accumulate of convolutions and matrix products and ignores
    element-wise ops, pooling and resizing; mmsegmentation's get_flops (the reference) reports
    multiply-accumulates under the name FLOPs, so its figures compare with half of these.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


@contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run the block with this many torch intra-op threads, restoring the number before."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def timed(run: Callable[[], Any], repeats: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Wall time in seconds of each of `repeats` calls after `warmup` untimed ones (synchronised): the one clock
    every latency and speed in facelib is read from (eager and ONNX inference, the anchor, training steps)."""
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return times


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What `timed` waits on after each call: the GPU's queue on CUDA, nothing on a CPU."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def cpu_latency_ms(model: Segmenter, size: int = 512, threads: int = 2, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of an eval-mode forward pass on a 1x3xSxS input (PyTorch eager, float32)."""
    model.eval()
    x = torch.randn(1, 3, size, size)
    with cpu_threads(threads), torch.inference_mode():
        times = timed(lambda: model(x), repeats, warmup, lambda: None)
    return 1000 * statistics.median(times)


def model_table(
    names: Sequence[str] | None = None, size: int = 512, threads: int = 2, repeats: int = 5, latency: bool = True
) -> pd.DataFrame:
    """One row per model: role, parameter counts (total, deployed, by part), cap checks, GFLOPs, latency."""
    rows = []
    for name in names or list(MODELS):
        torch.manual_seed(0)
        model = build_model(name)
        counts = parameter_breakdown(model)
        flops = inference_flops(model, size)
        row = {
            "model": name,
            "role": MODELS[name].role,
            "params": counts["total"],
            "params_deployed": counts["deployed"],
            "backbone": counts["backbone"],
            "decode_head": counts["decode_head"],
            "aux_heads": counts["aux_heads"],
            "fits_cap": fits_cap(counts),
            "fits_cap_deployed": fits_cap(counts, "deployed"),
            "gflops": flops / 1e9,
            "gmacs": flops / 2e9,
        }
        if latency:
            row["cpu_ms"] = cpu_latency_ms(model, size, threads, repeats)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def table_note(size: int, threads: int, repeats: int, deployed_cap: bool = True) -> str:
    """What the columns of `model_table` mean, for the table's footer (`deployed_cap`: the table has the
    fits_cap_deployed column)."""
    deployed = f"; fits_cap_deployed: params_deployed < {PARAMETER_CAP:,}" if deployed_cap else ""
    return (
        f"params: every trainable parameter, auxiliary heads included; params_deployed: backbone + decode head, "
        f"what inference runs and what the reference's tool (mmsegmentation get_flops) reports. fits_cap: params "
        f"< {PARAMETER_CAP:,}{deployed}. gflops: torch.utils."
        f"flop_counter on 1x3x{size}x{size}, eval mode (2 FLOPs per multiply-accumulate; gmacs = gflops / 2 is "
        f"the unit mmsegmentation calls FLOPs). cpu_ms: median of {repeats} eval-mode forward passes at "
        f"{size}x{size}, batch 1, {threads} threads, PyTorch eager float32, untrained weights."
    )


def write_models_table(
    only: str | None, size: int, threads: int, repeats: int, latency: bool, out: str | Path
) -> list[Path]:
    """`facelib models`: print the table and write it to OUT/tables/models*.{csv,md} with its provenance."""
    names = [model_spec(name).name for name in only.split(",")] if only else list(MODELS)
    table = model_table(names, size, threads, repeats, latency=latency)
    print(table.to_string(float_format="{:.2f}".format, line_width=200))
    print(
        f"cap: fewer than {PARAMETER_CAP:,} trainable parameters (fits_cap counts auxiliary heads, as facelib "
        f"does; fits_cap_deployed counts backbone + decode head, as the reference did)"
    )
    stem = "models" if size == 512 and not only else f"models_{size}px" + ("_subset" if only else "")
    note = f"{table_note(size, threads, repeats)} {provenance('none (untrained models, random weights)')}"
    title = f"Models: parameters, FLOPs and CPU latency at {size}x{size}"
    return write_table(table, Path(out) / "tables" / stem, title, note, ".4g")
