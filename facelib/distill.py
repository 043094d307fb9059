"""Knowledge distillation from a teacher checkpoint, online: the teacher sees each augmented training crop.

The teacher is any inference checkpoint (a run's best.pt or a shipped file), of any registered model and
size, so a model over the parameter cap, or one trained longer, can teach a student under it. Each batch is
brought to the teacher's own normalisation and scale (its `input_size` over the student's), the teacher's
logits are resized back to the crop, and the student is pulled towards its class probabilities by
`losses.Distillation` (weight `distill_weight`). With `teacher_tta` the teacher's probabilities are averaged
over test-time augmentation views of the crop (`facelib.tta`: `flip` adds the mirrored crop), a teacher
stronger than its weights alone. Seeing the crop itself keeps every augmentation - flips,
rotations, erasing - consistent between the two; nothing is stored between steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from facelib.checkpoint import load_checkpoint, model_from_checkpoint
from facelib.config import TrainConfig
from facelib.errors import ConfigError
from facelib.labels import NUM_CLASSES
from facelib.losses import Distillation, loss_config
from facelib.models.common import SegOutput
from facelib.tta import probabilities as view_probabilities


class Teacher(nn.Module):
    """A frozen teacher and the distillation term it adds to a training step's loss (`loss`)."""

    def __init__(self, config: TrainConfig, mean: Sequence[float], std: Sequence[float], device: torch.device):
        super().__init__()
        content = load_checkpoint(config.teacher)
        if content["num_classes"] != NUM_CLASSES:
            raise ConfigError(f"teacher {config.teacher}: predicts {content['num_classes']} classes, not {NUM_CLASSES}")
        self.model = model_from_checkpoint(content, config.teacher).float().to(device).requires_grad_(False)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.scale = content["input_size"] / config.input_size
        self.weight = config.distill_weight
        self.tta = config.teacher_tta
        self.term = Distillation(loss_config(config.loss).coarse_stride)

        def channels(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, 1, 1)

        # x_teacher = (x * std + mean - teacher_mean) / teacher_std = x * gain + shift
        self.register_buffer("gain", channels(std) / channels(content["std"]))
        self.register_buffer("shift", (channels(mean) - channels(content["mean"])) / channels(content["std"]))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's class probabilities for a normalised batch, at the batch's own size (float32)."""
        inputs = images.float() * self.gain + self.shift
        size = images.shape[-2:]
        if self.scale != 1:
            side = [max(32, round(s * self.scale / 32) * 32) for s in size]
            inputs = F.interpolate(inputs, size=side, mode="bilinear", align_corners=False)
        return view_probabilities(self.model, inputs.contiguous(memory_format=torch.channels_last), size, self.tta)

    def loss(self, prediction: torch.Tensor | SegOutput, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`distill_weight` x the distillation term of the student's decode head against the teacher."""
        logits = prediction.out if isinstance(prediction, SegOutput) else prediction
        return self.weight * self.term(logits, self.probabilities(images), target)
