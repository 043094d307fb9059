"""An exponential moving average of a model's weights (Polyak averaging, as timm's `ModelEmaV3`).

After each optimiser step every floating-point tensor of the averaged copy moves a share `1 - d` of the way to
the trained model's: d = min(decay, (1 + n) / (10 + n)) after n updates, so the copy follows the model closely
while it changes fast and averages over about 1 / (1 - decay) steps later on. BatchNorm's running statistics are
averaged the same way; integer buffers (BatchNorm's step counters) are copied. The averaged copy is what a run
with `ema_decay` validates, keeps as best.pt and ships; the update reads no random numbers, so the trained
weights follow exactly the path they would follow without it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The averaged copy (`module`, in eval mode) of a model, updated with `update(model)` after each step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - self.current_decay()
        averaged, current = self.module.state_dict(), model.state_dict()
        floats = [name for name, tensor in averaged.items() if tensor.is_floating_point()]
        torch._foreach_lerp_([averaged[n] for n in floats], [current[n].detach() for n in floats], weight)
        for name, tensor in averaged.items():
            if not tensor.is_floating_point():
                tensor.copy_(current[name])

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
