"""The training loss: a weighted sum of cross-entropy, Lovász-softmax and Dice, on the decode head and,
with a separate weight, on each auxiliary head.

Dice comes from segmentation-models-pytorch, cross-entropy from PyTorch. Lovász-softmax is smp's loss with
its gradient computed directly (`LovaszSoftmax`, same value and gradient, tested against smp): built from
autograd ops, smp's version was over half of a training step. Pixels labelled 255 are ignored by all three. Presets reproduce the rows of the reference's loss table
(its Table 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from facelib.errors import ConfigError
from facelib.labels import IGNORE_INDEX
from facelib.models.common import SegOutput

TERMS = ("ce", "lovasz", "dice")


@dataclass(frozen=True)
class LossConfig:
    """terms: weight of each loss term on one head. aux_weight: multiplies each auxiliary head's loss (the
    reference's decode:auxiliary ratio 1:aux_weight). class_weighted: cross-entropy uses per-class weights,
    which the caller computes from the training split (`facelib.stats.class_weights`)."""

    terms: Mapping[str, float] = field(default_factory=lambda: {"ce": 1.0})
    aux_weight: float = 0.4
    class_weighted: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.terms) - set(TERMS))
        if unknown:
            raise ConfigError(f"unknown loss term(s) {', '.join(unknown)}; valid terms: {', '.join(TERMS)}")
        if not any(weight > 0 for weight in self.terms.values()):
            raise ConfigError(f"a loss needs at least one term with a positive weight, got {dict(self.terms)}")
        if any(weight < 0 for weight in self.terms.values()) or self.aux_weight < 0:
            raise ConfigError(f"loss weights must be >= 0, got {dict(self.terms)}, aux_weight {self.aux_weight}")
        if self.class_weighted and self.terms.get("ce", 0) == 0:
            raise ConfigError("class_weighted applies to cross-entropy, but the loss has no 'ce' term")

    def to_dict(self) -> dict[str, object]:
        return {"terms": dict(self.terms), "aux_weight": self.aux_weight, "class_weighted": self.class_weighted}


LOSS_PRESETS: dict[str, LossConfig] = {
    "ce": LossConfig({"ce": 1.0}),
    "wce_lovasz": LossConfig({"ce": 1.0, "lovasz": 2.0}, aux_weight=0.4, class_weighted=True),
    "wce_lovasz_aux08": LossConfig({"ce": 1.0, "lovasz": 2.0}, aux_weight=0.8, class_weighted=True),
    "wce_dice": LossConfig({"ce": 0.5, "dice": 1.0}, class_weighted=True),
    "wce_lovasz_dice": LossConfig({"ce": 0.5, "lovasz": 0.3, "dice": 1.0}, class_weighted=True),
}
"""The reference's Table 2 rows: CE; weighted CE + Lovász 1:2 at decode:auxiliary 1:0.4 and 1:0.8; weighted
CE + Dice (0.5:1, the three-term row without Lovász); weighted CE + Lovász + Dice 0.5:0.3:1. The auxiliary
ratio is 1:0.4 (mmsegmentation's default for Fast-SCNN) wherever the reference does not vary it."""


def loss_config(spec: str | Mapping[str, object] | LossConfig) -> LossConfig:
    """A preset name, a LossConfig, a {"terms": ..., "aux_weight": ..., "class_weighted": ...} dict, or a
    bare terms dict such as {"ce": 0.5, "lovasz": 0.3, "dice": 1.0}."""
    if isinstance(spec, LossConfig):
        return spec
    if isinstance(spec, str):
        if spec not in LOSS_PRESETS:
            raise ConfigError(f"unknown loss preset {spec!r}; valid presets: {', '.join(LOSS_PRESETS)}")
        return LOSS_PRESETS[spec]
    if "terms" in spec:
        allowed = {"terms", "aux_weight", "class_weighted"}
        if set(spec) - allowed:
            raise ConfigError(
                f"unknown loss setting(s) {', '.join(sorted(set(spec) - allowed))}; valid: {', '.join(sorted(allowed))}"
            )
        return LossConfig(**spec)  # type: ignore[arg-type]
    return LossConfig({str(k): float(v) for k, v in spec.items()})  # type: ignore[arg-type]


class LovaszSoftmax(nn.Module):
    """Lovász-softmax over the whole batch, averaged over the classes present in the target: the value and
    gradient of `smp.losses.LovaszLoss("multiclass", ignore_index=...)` (per_image=False), tested against it.

    smp builds the loss from autograd ops, one class at a time: a (pixels, classes) copy, a boolean-mask
    copy with a host sync, a strided column per class whose backward writes a full-size zero tensor, and a
    sync per class to skip absent ones. Here `_LovaszFunction` sorts each class's errors once and writes
    the gradient with respect to the probabilities in the same pass, so backward is one multiplication.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = logits.shape[1]
        probabilities = logits.float().softmax(1).transpose(0, 1).reshape(classes, -1)  # (C, pixels)
        return _LovaszFunction.apply(probabilities, target.reshape(-1), self.ignore_index)


class _LovaszFunction(torch.autograd.Function):
    """Forward: for each class c, errors e = |[y == c] - p_c| on labelled pixels (0 on ignored ones, which
    then sort after every positive error and change no term), sorted in decreasing order; the Lovász
    extension's weights w_i = J_i - J_(i-1) of the Jaccard loss J_i = 1 - (G - F_i) / (G + i - F_i), with
    F_i the labelled-c pixels among the first i; loss_c = sum_i w_i e_(i). The loss averages loss_c over the
    classes present. Backward: d loss / d p_c = w at each pixel's rank times d e / d p_c (-1 on class-c
    pixels, +1 elsewhere, 0 where e = 0, as autograd's |x| gives), all of which the forward already has."""

    @staticmethod
    def forward(ctx, probabilities: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
        classes, pixels = probabilities.shape
        valid = target != ignore_index
        gradient = torch.empty_like(probabilities)
        losses = probabilities.new_zeros(classes)
        present = probabilities.new_zeros(classes)
        rank = torch.arange(1, pixels + 1, device=probabilities.device, dtype=probabilities.dtype)
        for c in range(classes):
            foreground = target == c
            signed = torch.where(foreground, 1.0 - probabilities[c], probabilities[c])  # >= 0: e before masking
            errors = torch.where(valid, signed, 0.0)
            errors_sorted, order = errors.sort(descending=True)
            hits = foreground[order].to(probabilities.dtype).cumsum(0)  # F_i
            total = hits[-1]  # G
            jaccard = 1.0 - (total - hits) / (total + rank - hits)
            weights = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
            losses[c] = torch.dot(errors_sorted, weights)
            present[c] = (total > 0).to(probabilities.dtype)
            slope = torch.where(foreground, -1.0, 1.0) * (errors > 0)
            gradient[c].scatter_(0, order, weights)
            gradient[c] *= slope
        count = present.sum().clamp(min=1)
        gradient *= (present / count)[:, None]
        ctx.save_for_backward(gradient)
        return (losses * present).sum() / count

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (gradient,) = ctx.saved_tensors
        return grad_output * gradient, None, None


class CompositeLoss(nn.Module):
    """sum_k w_k L_k(decode logits) + aux_weight * sum_heads sum_k w_k L_k(aux logits).

    Takes a model's output in either form (a logits tensor, or `SegOutput` in training mode). Logits are
    promoted to float32 first, so the losses behave the same under bf16 autocast.
    """

    def __init__(
        self,
        config: str | Mapping[str, object] | LossConfig = "ce",
        class_weights: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.config = loss_config(config)
        if self.config.class_weighted and class_weights is None:
            raise ConfigError("this loss uses class-weighted cross-entropy: pass class_weights (see facelib.stats)")
        if not self.config.class_weighted and class_weights is not None:
            raise ConfigError("class_weights given, but the loss config has class_weighted=False")
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.weights = {name: w for name, w in self.config.terms.items() if w > 0}
        self.ce = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
        self.lovasz = LovaszSoftmax(ignore_index)
        self.dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=ignore_index)

    def head_terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each weighted term's unweighted value on one head's logits."""
        logits = logits.float()
        return {name: getattr(self, name)(logits, target) for name in self.weights}

    def head_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = self.head_terms(logits, target)
        return sum((self.weights[name] * value for name, value in terms.items()), torch.zeros((), device=logits.device))

    def forward(self, prediction: torch.Tensor | SegOutput, target: torch.Tensor) -> torch.Tensor:
        out, aux = (prediction.out, prediction.aux) if isinstance(prediction, SegOutput) else (prediction, ())
        loss = self.head_loss(out, target)
        if self.config.aux_weight > 0:
            for logits in aux:
                loss = loss + self.config.aux_weight * self.head_loss(logits, target)
        return loss
