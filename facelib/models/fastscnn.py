"""Fast-SCNN, written from the paper because no maintained library ships it."""

from __future__ import annotations

import math

import torch
from torch import nn

from facelib.models.common import (
    FCNHead,
    Segmenter,
    conv_bn_relu,
    exporting,
    init_weights,
    resize,
    separable_conv,
)


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand, 3x3 depthwise (strided), 1x1 project; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 6) -> None:
        super().__init__()
        mid = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn_relu(cin, mid, 1),
            conv_bn_relu(mid, mid, 3, stride, groups=mid),
            conv_bn_relu(mid, cout, 1, relu=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: pool to each scale, 1x1 conv to in/4 channels, upsample, concatenate with
    the input, then a 3x3 conv back to `cout` channels (as mmsegmentation's Fast-SCNN does)."""

    def __init__(self, cin: int, cout: int, scales: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(scale), conv_bn_relu(cin, cin // 4, 1)) for scale in scales
        )
        self.project = conv_bn_relu(cin + len(scales) * (cin // 4), cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for branch in self.branches:
            pool, convolve = branch[0], branch[1:]
            small = adaptive_avg_pool(x, pool.output_size) if exporting() else pool(x)
            pooled.append(resize(convolve(small), x.shape[-2:]))
        return self.project(torch.cat([x, *pooled], dim=1))


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(x, bins)` written as two averaging matrices, for export: ONNX has no adaptive
    pooling, and the exporter would otherwise fix the pooling windows to the example's size, so the graph
    would fail (or be wrong) at any other input size. Bin i of n over L covers [floor(iL/n), ceil((i+1)L/n))."""

    def averaging(length: int) -> torch.Tensor:
        index = torch.arange(bins, device=x.device)
        start = torch.div(index * length, bins, rounding_mode="floor")
        stop = torch.div((index + 1) * length + bins - 1, bins, rounding_mode="floor")
        position = torch.arange(length, device=x.device)
        inside = (position[None] >= start[:, None]) & (position[None] < stop[:, None])
        return inside.to(x.dtype) / (stop - start)[:, None].to(x.dtype)

    rows, columns = averaging(x.shape[-2]), averaging(x.shape[-1])
    return torch.einsum("ih,bchw,jw->bcij", rows, x, columns)


class FastSCNNBackbone(nn.Module):
    """Learning-to-downsample (1/8), global feature extractor (1/32 + pyramid pooling), feature fusion."""

    def __init__(
        self,
        downsample_channels: tuple[int, int, int] = (32, 48, 64),
        block_channels: tuple[int, int, int] = (64, 96, 128),
        block_strides: tuple[int, int, int] = (2, 2, 1),
        fusion_channels: int = 128,
    ) -> None:
        super().__init__()
        c1, c2, c3 = downsample_channels
        self.downsample = nn.Sequential(
            conv_bn_relu(3, c1, 3, 2), separable_conv(c1, c2, stride=2), separable_conv(c2, c3, stride=2)
        )
        layers: list[nn.Module] = []
        cin = c3
        for cout, stride in zip(block_channels, block_strides, strict=True):
            layers += [InvertedResidual(cin, cout, stride), InvertedResidual(cout, cout, 1)]
            layers.append(InvertedResidual(cout, cout, 1))
            cin = cout
        self.global_features = nn.Sequential(*layers, PyramidPooling(cin, cin))
        # Feature fusion: the low-resolution branch is upsampled, depthwise-convolved, projected; the
        # high-resolution branch is projected; the two are added.
        self.fuse_low = nn.Sequential(
            conv_bn_relu(cin, fusion_channels, 3, groups=math.gcd(cin, fusion_channels)),  # depthwise at equal widths
            conv_bn_relu(fusion_channels, fusion_channels, 1, relu=False),
        )
        self.fuse_high = conv_bn_relu(c3, fusion_channels, 1, relu=False)
        self.channels = (c3, cin, fusion_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        high = self.downsample(x)
        low = self.global_features(high)
        fused = torch.relu(self.fuse_high(high) + self.fuse_low(resize(low, high.shape[-2:])))
        return high, low, fused


class FastSCNN(Segmenter):
    """Fast-SCNN (Poudel, Liwicki, Cipolla, "Fast-SCNN: Fast Semantic Segmentation Network", BMVC 2019).

    Built as mmsegmentation builds it (the reference's model): learning-to-downsample 32-48-64, bottlenecks
    64-96-128 (strides 2, 2, 1; expansion 6), pyramid pooling, fusion at 128 channels, a classifier of two
    depthwise-separable convs, and two auxiliary FCN heads (32 channels, loss weight set by the loss) on the
    1/8 learning-to-downsample output and on the global features. Where this differs from the paper, it
    follows mmsegmentation: the fusion module's depthwise conv is not dilated, and the pyramid pooling
    output is a 3x3 conv over the input concatenated with the pooled maps.
    """

    def __init__(
        self,
        num_classes: int = 19,
        downsample_channels: tuple[int, int, int] = (32, 48, 64),
        block_channels: tuple[int, int, int] = (64, 96, 128),
        fusion_channels: int = 128,
        aux_channels: int = 32,
    ) -> None:
        super().__init__()
        self.backbone = FastSCNNBackbone(downsample_channels, block_channels, (2, 2, 1), fusion_channels)
        high, low, fused = self.backbone.channels
        self.decode_head = FCNHead(fused, fused, num_classes, num_convs=2, separable=True)
        self.aux_heads = nn.ModuleList(
            [FCNHead(high, aux_channels, num_classes), FCNHead(low, aux_channels, num_classes)]
        )
        init_weights(self)

    def logits(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        high, low, fused = self.backbone(x)
        out = self.decode_head(fused)
        aux = (self.aux_heads[0](high), self.aux_heads[1](low)) if with_aux else ()
        return out, aux

    def parts(self) -> dict[str, nn.Module | None]:
        return {"backbone": self.backbone, "decode_head": self.decode_head, "aux_heads": self.aux_heads}
