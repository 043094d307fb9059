"""Forward + backward time of the Lovász-softmax term alone: smp's LovaszLoss, a one-sort autograd version
(a (classes, pixels) row sort), and facelib's `LovaszSoftmax` (per-class sort, gradient written in the
forward pass); with each one's value and gradient difference from smp on the same logits.

Usage: python scripts/lovasz_timing.py [BATCH] [SIZE] [DEVICE]   (defaults 64 512 cuda)
Logits are random, targets are real-looking: blobs of classes with 2% ignored pixels.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from segmentation_models_pytorch.losses import LovaszLoss

from facelib.labels import IGNORE_INDEX, NUM_CLASSES
from facelib.losses import LovaszSoftmax


class OneSortLovasz(torch.nn.Module):
    """The one-sort autograd formulation (facelib's first attempt), kept here for comparison."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = logits.shape[1]
        probabilities = logits.softmax(1).transpose(0, 1).reshape(classes, -1)
        target = target.reshape(1, -1)
        foreground = target == torch.arange(classes, device=logits.device)[:, None]
        valid = target != IGNORE_INDEX
        errors = torch.where(valid, (foreground.to(probabilities.dtype) - probabilities).abs(), 0.0)
        errors_sorted, order = errors.sort(dim=1, descending=True)
        foreground_sorted = foreground.gather(1, order).to(probabilities.dtype)
        with torch.no_grad():
            totals = foreground_sorted.sum(1, keepdim=True)
            jaccard = 1 - (totals - foreground_sorted.cumsum(1)) / (totals + (1 - foreground_sorted).cumsum(1))
            weights = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
        per_class = (errors_sorted * weights).sum(1)
        present = (totals[:, 0] > 0).to(per_class.dtype)
        return (per_class * present).sum() / present.sum().clamp(min=1)


def targets(batch: int, size: int, device: torch.device) -> torch.Tensor:
    coarse = torch.randint(0, NUM_CLASSES, (batch, 1, size // 32, size // 32), device=device).float()
    target = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].long()
    target[torch.rand(target.shape, device=device) < 0.02] = IGNORE_INDEX
    return target


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    device = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    logits = torch.randn(batch, NUM_CLASSES, size, size, device=device, requires_grad=True)
    target = targets(batch, size, device)
    reference_value, reference_grad = None, None
    print(f"Lovász-softmax forward + backward, logits {tuple(logits.shape)} float32 on {device}")
    for name, loss in (("smp", LovaszLoss("multiclass", ignore_index=IGNORE_INDEX)), ("one_sort", OneSortLovasz()),
                       ("facelib", LovaszSoftmax(IGNORE_INDEX))):  # fmt: skip
        times = []
        for i in range(5):
            logits.grad = None
            sync()
            start = time.perf_counter()
            value = loss(logits, target)
            value.backward()
            sync()
            if i:
                times.append(time.perf_counter() - start)
        if reference_value is None:
            reference_value, reference_grad = value.detach(), logits.grad.clone()
        value_diff = (value.detach() - reference_value).abs().item()
        grad_diff = (logits.grad - reference_grad).abs().max().item()
        memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        print(f"{name:9s} {1000 * statistics.median(times):8.1f} ms  value {value.item():.6f}  |dvalue| {value_diff:.1e}"
              f"  max|dgrad| {grad_diff:.1e}  peak {memory:.1f} GiB")  # fmt: skip
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)


if __name__ == "__main__":
    main()
