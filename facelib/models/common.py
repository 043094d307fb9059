"""The one output convention every facelib model follows, and the conv blocks the hand-written models share.

Convention: `model(x)` takes a (B, 3, H, W) batch whose sides are multiples of 32. In eval mode it returns
the main logits, a (B, C, H, W) tensor at the input resolution (what inference, export and evaluation
use). In training mode it returns `SegOutput(out, aux)`: the same main logits plus a tuple of auxiliary
logits, each also at the input resolution; `aux` is empty for models without auxiliary heads, so a
training loop never needs to know which model it trains. Logits always come out in float32: under bf16
autocast the upsampling to the input size runs in float32 (`upsample_logits`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 32  # every registered model downsamples by at most 32, so sides must be multiples of it


class SegOutput(NamedTuple):
    """What a model returns in training mode: main logits and auxiliary logits, all at input resolution."""

    out: torch.Tensor
    aux: tuple[torch.Tensor, ...] = ()


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of logits or features (align_corners=False, as torchvision and smp do). Skipped when
    the size already matches, except while exporting: there that test would fix the graph to the example's
    shapes (a resize to the same size is an exact copy)."""
    if not exporting() and tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample_logits(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """`resize` in float32. Under bf16 autocast the logits would otherwise be upsampled in bf16, and the CUDA
    backward of bilinear upsampling scatters with atomic adds that are many times slower in bf16/fp16 than in
    float32 (pytorch/pytorch#140096, #48163; NVIDIA apex ran interpolation in float32 for this reason); the
    losses take float32 logits anyway. On float32 inputs (the CPU, eval without autocast) nothing changes."""
    return resize(x.float(), size)


class Float32Upsample(nn.Module):
    """`nn.Upsample` run in float32 (see `upsample_logits`); the same arguments, no parameters."""

    def __init__(self, upsample: nn.Upsample) -> None:
        super().__init__()
        self.scale_factor, self.mode, self.align_corners = upsample.scale_factor, upsample.mode, upsample.align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(
            x.float(), scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners
        )


def exporting() -> bool:
    """Whether the model is being traced for export (ONNX), where shape-dependent Python branches must not run."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


class Segmenter(nn.Module):
    """Base class: subclasses implement `logits(x, with_aux)` at any resolution and list their parts.

    The base checks the input, upsamples every output to the input size and applies the convention above,
    so auxiliary heads cost nothing at inference (they are not even run in eval mode).
    """

    def logits(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        raise NotImplementedError

    def parts(self) -> dict[str, nn.Module | None]:
        """The modules whose parameters make up the backbone, decode head and auxiliary heads."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor | SegOutput:
        if not torch.compiler.is_compiling() and not exporting():
            check_input(x)
        size = x.shape[-2:]
        out, aux = self.logits(x, with_aux=self.training)
        out = upsample_logits(out, size)
        if not self.training:
            return out
        return SegOutput(out, tuple(upsample_logits(a, size) for a in aux))


def check_input(x: torch.Tensor) -> None:
    """A clear error instead of a shape mismatch deep inside a fusion layer."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (batch, 3, height, width) tensor, got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % STRIDE or width % STRIDE:
        raise ValueError(f"input is {height}x{width}: both sides must be multiples of {STRIDE} (resize or pad first)")


def conv_bn_relu(
    cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True
) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ ReLU): the ConvModule of mmsegmentation's configs."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def separable_conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, stride, groups=cin), conv_bn_relu(cin, cout, 1))


class FCNHead(nn.Sequential):
    """`num_convs` 3x3 conv-BN-ReLU layers, dropout 0.1, then a 1x1 classifier (mmseg's FCNHead without
    `concat_input`). With `separable=True` the convs are depthwise-separable (Fast-SCNN's classifier)."""

    def __init__(self, cin: int, channels: int, num_classes: int, num_convs: int = 1, separable: bool = False) -> None:
        layers: list[nn.Module] = []
        for i in range(num_convs):
            width_in = cin if i == 0 else channels
            layers.append(separable_conv(width_in, channels) if separable else conv_bn_relu(width_in, channels))
        layers += [nn.Dropout2d(0.1), nn.Conv2d(channels if num_convs else cin, num_classes, 1)]
        super().__init__(*layers)


def init_weights(model: nn.Module) -> None:
    """From-scratch initialisation for the hand-written models, as torchvision initialises its MobileNets
    and mmsegmentation its heads: He-normal (fan-out) convolutions, BatchNorm at identity, and classifier
    convolutions (`FCNHead`'s last layer) at N(0, 0.01) so that training starts near uniform predictions."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, FCNHead):
            nn.init.normal_(module[-1].weight, std=0.01)
            nn.init.zeros_(module[-1].bias)


def count_parameters(module: nn.Module | None) -> int:
    """Trainable parameters (those with requires_grad), the figure the cap is about."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
