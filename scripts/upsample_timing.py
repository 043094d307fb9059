"""Forward + backward time of the logits' bilinear upsampling at training shapes, bf16 vs float32 (why
`facelib.models.common.upsample_logits` casts to float32 first). About 10 s on a GPU; also runs on the CPU.

usage: python scripts/upsample_timing.py [BATCH=16] [SIZE=512] [DEVICE=cuda] [REPEATS=20]
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F


def timed(x: torch.Tensor, size: int, float32: bool, align_corners: bool, repeats: int) -> float:
    """Median ms of upsample + a reduction + backward."""
    times = []
    for _ in range(repeats + 3):
        leaf = x.detach().clone().requires_grad_()
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        source = leaf.float() if float32 else leaf
        out = F.interpolate(source, size=(size, size), mode="bilinear", align_corners=align_corners)
        out.float().logsumexp(1).mean().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - start))
    return sorted(times[3:])[len(times[3:]) // 2]


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    device = sys.argv[3] if len(sys.argv) > 3 else "cuda"
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(f"upsampling 19 logit channels to {size}x{size}, batch {batch}, on {name}; median of {repeats}, ms")
    print("factor | align_corners | bf16 | float32 | bf16 / float32")
    for factor, align in ((4, False), (8, False), (32, False), (4, True)):
        x = torch.randn(batch, 19, size // factor, size // factor, device=device, dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last)
        bf16, fp32 = (timed(x, size, f32, align, repeats) for f32 in (False, True))
        print(f"x{factor} | {align} | {bf16:.2f} | {fp32:.2f} | {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
