"""Time one training step (forward, composite loss, backward, AdamW step) per loss preset on synthetic
tensors already on the device: how much of a step each loss term costs. A throwaway probe until
`facelib bench` exists; usage: python scripts/step_timing.py [MODEL] [BATCH] [SIZE] [PRESETS].
Environment: CHANNELS_LAST=0 turns channels_last off (CUDA), CUDNN_BENCHMARK=1 turns cudnn autotuning on."""

from __future__ import annotations

import os
import sys
import time

import torch

from facelib.losses import LOSS_PRESETS, CompositeLoss
from facelib.models import build_model


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "fastscnn"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 512
    presets = sys.argv[4].split(",") if len(sys.argv) > 4 else ["ce", "wce_dice", "wce_lovasz", "wce_lovasz_dice"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    channels_last = cuda and os.environ.get("CHANNELS_LAST", "1") == "1"
    torch.backends.cudnn.benchmark = os.environ.get("CUDNN_BENCHMARK", "0") == "1"
    images = torch.randn(batch, 3, size, size, device=device)
    masks = torch.randint(0, 19, (batch, size, size), device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    print(f"{name}, batch {batch}, {size}x{size}, {device} {torch.cuda.get_device_name() if cuda else ''}, "
          f"channels_last {channels_last}, cudnn.benchmark {torch.backends.cudnn.benchmark}")  # fmt: skip
    for preset in presets:
        torch.manual_seed(0)
        model = build_model(name).to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        weighted = LOSS_PRESETS[preset].class_weighted
        criterion = CompositeLoss(preset, torch.ones(19) if weighted else None).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        repeats = 20 if cuda else 2
        for step in range(5 + repeats):
            if step == 5:
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = criterion(model(images), masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / repeats
        print(f"{preset:>16}: {1000 * seconds:7.1f} ms/step, {batch / seconds:7.0f} images/s")


if __name__ == "__main__":
    main()
