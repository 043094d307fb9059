"""Models assembled from maintained libraries: torchvision's LR-ASPP on MobileNetV3-Small, and
segmentation-models-pytorch decoders on timm encoders. All start from random weights (no download)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small
from torchvision.models.segmentation.lraspp import LRASPPHead

from facelib.models.common import Float32Upsample, Segmenter


class LRASPPMobileNetV3(Segmenter):
    """LR-ASPP (Howard et al., "Searching for MobileNetV3", ICCV 2019) on a MobileNetV3-Small backbone.

    Built as torchvision builds its LR-ASPP MobileNetV3-Large: the backbone's `features` with the last
    stage dilated (output stride 16), the low-level tap at the last 1/8 block (24 channels) and the high-
    level tap at the end (576 channels), and torchvision's `LRASPPHead` with 128 inner channels. The paper's
    segmentation head pools with a large stride-(16, 20) window; torchvision's head (used here) uses global
    pooling instead. No auxiliary heads.
    """

    def __init__(self, num_classes: int = 19, inter_channels: int = 128) -> None:
        super().__init__()
        features = mobilenet_v3_small(weights=None, dilated=True).features
        strided = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
        stage_ends = [0, *strided, len(features) - 1]
        self.low_index, high_index = stage_ends[-4], stage_ends[-1]
        self.backbone = features[: high_index + 1]
        low_channels = features[self.low_index].out_channels
        high_channels = features[high_index].out_channels
        self.decode_head = LRASPPHead(low_channels, high_channels, num_classes, inter_channels)

    def logits(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        taps: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.backbone):
            x = block(x)
            if i == self.low_index:
                taps["low"] = x
        taps["high"] = x
        return self.decode_head(taps), ()

    def parts(self) -> dict[str, nn.Module | None]:
        return {"backbone": self.backbone, "decode_head": self.decode_head, "aux_heads": None}


class SmpModel(Segmenter):
    """A segmentation-models-pytorch architecture on a timm encoder (`tu-` names), random weights.

    smp already returns logits at the input resolution; this wrapper adds facelib's output convention and
    the parameter breakdown, and runs the segmentation head's upsampling in float32 (`upsample_logits`
    says why). No auxiliary heads.
    """

    def __init__(self, arch: str, encoder: str, num_classes: int = 19, **decoder: object) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=num_classes, **decoder)
        head = self.net.segmentation_head  # conv, upsampling (or Identity), activation
        if isinstance(head[1], nn.Upsample):
            head[1] = Float32Upsample(head[1])  # the logits' upsampling in float32, as `Segmenter` does

    def logits(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return self.net(x), ()

    def parts(self) -> dict[str, nn.Module | None]:
        head = nn.ModuleList([self.net.decoder, self.net.segmentation_head])
        return {"backbone": self.net.encoder, "decode_head": head, "aux_heads": None}
