"""BiSeNetV2 and the reference's slimmed BiSeNetV2-XS, written from the paper (no maintained library has it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facelib.errors import ConfigError
from facelib.models.common import FCNHead, Segmenter, conv_bn_relu, init_weights, resize


class DetailBranch(nn.Sequential):
    """Wide and shallow: three stages of 3x3 conv-BN-ReLU (2, 3, 3 layers), each starting with stride 2."""

    def __init__(self, channels: tuple[int, int, int]) -> None:
        c1, c2, c3 = channels
        super().__init__(
            conv_bn_relu(3, c1, 3, 2), conv_bn_relu(c1, c1),
            conv_bn_relu(c1, c2, 3, 2), conv_bn_relu(c2, c2), conv_bn_relu(c2, c2),
            conv_bn_relu(c2, c3, 3, 2), conv_bn_relu(c3, c3), conv_bn_relu(c3, c3),
        )  # fmt: skip


class StemBlock(nn.Module):
    """1/4 resolution from two paths: a strided conv pair and a max pool, concatenated and fused."""

    def __init__(self, cout: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(3, cout, 3, 2)
        self.convs = nn.Sequential(conv_bn_relu(cout, cout // 2, 1), conv_bn_relu(cout // 2, cout, 3, 2))
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fuse = conv_bn_relu(2 * cout, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.convs(x), self.pool(x)], dim=1))


class GatherExpand(nn.Module):
    """Gather-and-expansion layer: 3x3 conv, depthwise expansion (two depthwise convs when strided),
    1x1 projection; residual (with a depthwise-separable shortcut when strided), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 6) -> None:
        super().__init__()
        mid = cin * expand
        self.conv = conv_bn_relu(cin, cin)
        if stride == 1:
            self.expand: nn.Module = conv_bn_relu(cin, mid, 3, groups=cin)
            self.shortcut: nn.Module | None = None
        else:
            self.expand = nn.Sequential(
                conv_bn_relu(cin, mid, 3, 2, groups=cin, relu=False), conv_bn_relu(mid, mid, 3, groups=mid, relu=False)
            )
            self.shortcut = nn.Sequential(
                conv_bn_relu(cin, cin, 3, 2, groups=cin, relu=False), conv_bn_relu(cin, cout, 1, relu=False)
            )
        self.project = conv_bn_relu(mid, cout, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.project(self.expand(self.conv(x))) + identity)


class ContextEmbedding(nn.Module):
    """Global average pooling + BN, a 1x1 conv, broadcast-added to the input, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(channels))
        self.conv_pool = conv_bn_relu(channels, channels, 1)
        self.conv = conv_bn_relu(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x + self.conv_pool(self.pool(x)))


class SemanticBranch(nn.Module):
    """Narrow and deep: stem (1/4), then gather-expand stages at 1/8, 1/16, 1/32 (2, 2, 4 layers), then
    context embedding. Returns every stage's output; the auxiliary heads read the first four."""

    def __init__(self, channels: tuple[int, int, int, int], expand: int = 6) -> None:
        super().__init__()
        stages: list[nn.Module] = [StemBlock(channels[0])]
        for i in range(1, len(channels)):
            layers = [
                GatherExpand(channels[i - 1], channels[i], 2, expand),
                GatherExpand(channels[i], channels[i], 1, expand),
            ]
            if i == len(channels) - 1:
                layers += [GatherExpand(channels[i], channels[i], 1, expand) for _ in range(2)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.context = ContextEmbedding(channels[-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        outputs.append(self.context(x))
        return outputs


class BilateralGuidedAggregation(nn.Module):
    """Each branch gates the other: detail (1/8) x sigmoid(semantic upsampled), and detail downsampled to
    1/32 x sigmoid(semantic); the second product is upsampled, the two are summed and fused by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()

        def depthwise_then_pointwise() -> nn.Sequential:
            return nn.Sequential(
                conv_bn_relu(channels, channels, 3, groups=channels, relu=False), nn.Conv2d(channels, channels, 1)
            )

        self.detail_keep = depthwise_then_pointwise()
        self.detail_down = nn.Sequential(conv_bn_relu(channels, channels, 3, 2, relu=False), nn.AvgPool2d(3, 2, 1))
        self.semantic_up = conv_bn_relu(channels, channels, relu=False)
        self.semantic_keep = depthwise_then_pointwise()
        self.fuse = conv_bn_relu(channels, channels)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        high = self.detail_keep(detail) * torch.sigmoid(resize(self.semantic_up(semantic), detail.shape[-2:]))
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.fuse(high + resize(low, high.shape[-2:]))


class BiSeNetV2Backbone(nn.Module):
    def __init__(
        self,
        detail_channels: tuple[int, int, int],
        semantic_channels: tuple[int, int, int, int],
        bga_channels: int,
        expand: int = 6,
    ) -> None:
        super().__init__()
        if detail_channels[-1] != bga_channels or semantic_channels[-1] != bga_channels:
            raise ConfigError(
                f"the detail branch's last width ({detail_channels[-1]}) and the semantic branch's last width "
                f"({semantic_channels[-1]}) must both equal the aggregation width ({bga_channels})"
            )
        self.detail = DetailBranch(detail_channels)
        self.semantic = SemanticBranch(semantic_channels, expand)
        self.aggregate = BilateralGuidedAggregation(bga_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        semantic = self.semantic(x)
        return self.aggregate(self.detail(x), semantic[-1]), semantic[:-1]


class BiSeNetV2(Segmenter):
    """BiSeNetV2 (Yu, Gao, Wang, Yu, Shen, Sang, "BiSeNet V2: Bilateral Network with Guided Aggregation
    for Real-time Semantic Segmentation", IJCV 2021).

    Detail branch, semantic branch (stem, gather-and-expansion layers, context embedding), bilateral guided
    aggregation, an FCN decode head and four auxiliary FCN heads (two convs each) on the semantic stages,
    as in the paper's booster training. The default widths are mmsegmentation's config of the paper's
    model (branches 64-64-128 and 16-32-64-128, decode head 1024, auxiliary heads 16/64/256/1024);
    `bisenetv2_xs` in the registry is the reference's slimmed build of it.
    """

    def __init__(
        self,
        num_classes: int = 19,
        detail_channels: tuple[int, int, int] = (64, 64, 128),
        semantic_channels: tuple[int, int, int, int] = (16, 32, 64, 128),
        bga_channels: int = 128,
        decode_channels: int = 1024,
        aux_channels: tuple[int, int, int, int] = (16, 64, 256, 1024),
        expand: int = 6,
    ) -> None:
        super().__init__()
        self.backbone = BiSeNetV2Backbone(detail_channels, semantic_channels, bga_channels, expand)
        self.decode_head = FCNHead(bga_channels, decode_channels, num_classes, num_convs=1)
        self.aux_heads = nn.ModuleList(
            FCNHead(cin, width, num_classes, num_convs=2)
            for cin, width in zip(semantic_channels, aux_channels, strict=True)
        )
        init_weights(self)

    def logits(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        fused, stages = self.backbone(x)
        aux = tuple(head(feature) for head, feature in zip(self.aux_heads, stages, strict=True)) if with_aux else ()
        return self.decode_head(fused), aux

    def parts(self) -> dict[str, nn.Module | None]:
        return {"backbone": self.backbone, "decode_head": self.decode_head, "aux_heads": self.aux_heads}
