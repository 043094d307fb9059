"""Every model facelib can train, by name: `build_model(name, num_classes=19, **overrides)`.

A registry maps each name to a builder and a role (see `Role`): candidates are the models facelib offers,
each under the parameter cap counting everything that is trained (a test checks it). Output convention:
see `facelib.models.common`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from facelib.errors import ConfigError
from facelib.labels import NUM_CLASSES
from facelib.models.bisenetv2 import BiSeNetV2
from facelib.models.common import Segmenter, SegOutput, count_parameters
from facelib.models.fastscnn import FastSCNN
from facelib.models.library import LRASPPMobileNetV3, SmpModel

PARAMETER_CAP = 1_821_085
"""A model must have fewer trainable parameters than this. facelib counts auxiliary heads (they are trained)."""

Role = Literal["candidate", "reference", "over_cap"]
"""candidate: fits the cap counting every trainable parameter, auxiliary heads included (facelib's rule).
reference: a reproduction of one of the reference's models exactly as it was built; it fits the cap only
as the reference counted (mmsegmentation's get_flops.py deletes the auxiliary heads before counting, so its
figures are the deployed network: backbone + decode head). over_cap: listed for comparison only."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., Segmenter]
    role: Role
    summary: str

    @property
    def candidate(self) -> bool:
        return self.role == "candidate"


_XS_WIDTHS = {
    "detail_channels": (32, 64, 96),
    "semantic_channels": (16, 32, 64, 96),
    "bga_channels": 96,
    "decode_channels": 512,
}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("fastscnn", FastSCNN, "candidate", "Fast-SCNN with two auxiliary FCN heads (Poudel et al. 2019)"),
        ModelSpec(
            "lraspp_mobilenetv3", LRASPPMobileNetV3, "candidate", "LR-ASPP on MobileNetV3-Small, torchvision parts"
        ),
        ModelSpec(
            "bisenetv2", BiSeNetV2, "over_cap", "BiSeNetV2 at the paper's widths, four auxiliary heads (Yu et al. 2021)"
        ),
        ModelSpec(
            "bisenetv2_xs",
            partial(BiSeNetV2, **_XS_WIDTHS, aux_channels=(16, 32, 64, 128)),
            "reference",
            "the reference's BiSeNetV2-XS (its Table 3 widths, auxiliary heads 16/32/64/128)",
        ),
        ModelSpec(
            "bisenetv2_xs_slimaux",
            partial(BiSeNetV2, **_XS_WIDTHS, aux_channels=(8, 8, 8, 8)),
            "candidate",
            "BiSeNetV2-XS with 8-channel auxiliary heads, so that everything trained fits the cap",
        ),
        ModelSpec(
            "bisenetv2_fast",
            partial(
                BiSeNetV2,
                **{**_XS_WIDTHS, "detail_channels": (16, 32, 96), "decode_channels": 128},
                aux_channels=(8, 8, 8, 8),
            ),
            "candidate",
            "BiSeNetV2-XS (slim aux) with a thinner detail branch (16/32/96) and a 128-channel decode head: "
            "under half its FLOPs, for the fast model",
        ),
        ModelSpec(
            "fpn_mobilenetv4",
            partial(
                SmpModel,
                "FPN",
                "tu-mobilenetv4_conv_small",
                decoder_pyramid_channels=128,
                decoder_segmentation_channels=64,
            ),
            "candidate",
            "smp FPN (pyramid 128, segmentation 64 channels) on timm MobileNetV4-Conv-Small",
        ),
        ModelSpec(
            "deeplabv3plus_mobilenetv4",
            partial(SmpModel, "DeepLabV3Plus", "tu-mobilenetv4_conv_small", decoder_channels=88),
            "candidate",
            "smp DeepLabV3+ (88 decoder channels, output stride 16) on timm MobileNetV4-Conv-Small",
        ),
        ModelSpec(
            "unet_mobilenetv3",
            partial(SmpModel, "Unet", "tu-mobilenetv3_small_100", decoder_channels=(96, 64, 32, 16, 8)),
            "candidate",
            "smp Unet (decoder 96-64-32-16-8) on timm MobileNetV3-Small",
        ),
    ]
}


def model_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; an unknown name is an error that lists the valid ones."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, num_classes: int = NUM_CLASSES, **overrides: object) -> Segmenter:
    """Build a registered model with random weights; `overrides` replace the builder's keyword defaults."""
    builder = model_spec(name).builder
    accepted = _keyword_parameters(builder)
    unknown = sorted(set(overrides) - accepted) if accepted is not None else []
    if unknown:
        raise ConfigError(
            f"model {name!r} does not accept {', '.join(unknown)}; it accepts: {', '.join(sorted(accepted))}"
        )
    return builder(num_classes=num_classes, **overrides)


def _keyword_parameters(builder: Callable[..., Segmenter]) -> set[str] | None:
    """The override names a builder takes, or None when it forwards any keyword (smp decoders)."""
    target, skip = (builder.func, len(builder.args)) if isinstance(builder, partial) else (builder, 0)
    parameters = [p for p in inspect.signature(target).parameters.values() if p.name != "self"][skip:]
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.name != "num_classes"}


def candidates() -> list[str]:
    return [name for name, spec in MODELS.items() if spec.candidate]


def fits_cap(counts: dict[str, int], counting: Literal["total", "deployed"] = "total") -> bool:
    """Whether a `parameter_breakdown` is under the cap, counting everything trained or only the deployed net."""
    return counts[counting] < PARAMETER_CAP


def parameter_breakdown(model: Segmenter) -> dict[str, int]:
    """Trainable parameters of the backbone, decode head and auxiliary heads; `deployed` is what inference
    runs (backbone + decode head, the figure mmsegmentation reports), `total` is everything trained."""
    counts = {part: count_parameters(module) for part, module in model.parts().items()}
    counts["deployed"] = counts["backbone"] + counts["decode_head"]
    counts["total"] = count_parameters(model)
    if counts["total"] != counts["deployed"] + counts["aux_heads"]:
        raise AssertionError(f"{type(model).__name__}.parts() does not cover every parameter: {counts}")
    return counts


__all__ = [
    "MODELS",
    "PARAMETER_CAP",
    "ModelSpec",
    "SegOutput",
    "Segmenter",
    "build_model",
    "candidates",
    "count_parameters",
    "fits_cap",
    "model_spec",
    "parameter_breakdown",
]
