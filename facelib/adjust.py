"""Logit adjustment: undo the class weights' push towards rare classes, once training is over.

A class-weighted cross-entropy trains the model to over-predict the classes it weights up: the weighted loss
is lowest when the model's scores carry log w_c on top of the unweighted ones (Menon et al., "Long-tail
learning via logit adjustment", ICLR 2021). Boundaries of eyes, brows and lips then sit outside the labelled
ones, which costs IoU. `adjust` subtracts tau * log w_c from the classifier's bias, with tau in `TAUS` (0:
unchanged, 1: the weights undone in full) chosen where the model scores the highest mIoU on its own
*training* photos (whole photos at its input size, original labels); validation photos play no part. The
result is an ordinary checkpoint, as fast as before (only a bias changes), that records what was done under
`logit_adjustment`. A bias adds the same offset to every pixel of a class's scores (bilinear resizing keeps
it), so each photo's scores are computed once and every tau is scored from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facelib.augment import eval_transform
from facelib.checkpoint import load_checkpoint, model_from_checkpoint, resolve_device, save_checkpoint
from facelib.data import SegmentationDataset, collate_eval, discover, load_or_make_split
from facelib.errors import ConfigError
from facelib.labels import NUM_CLASSES, read_mask
from facelib.losses import loss_config
from facelib.metrics import ConfusionMatrix
from facelib.models.common import upsample_logits
from facelib.stats import class_pixels, class_weights

TAUS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
ADJUSTED_NAME = "adjusted.pt"  # beside a run's best.pt in its checkpoint folder


@dataclass
class Adjustment:
    """The chosen tau, every tau's mIoU on the training photos, and the offsets added to the classifier's bias."""

    tau: float
    train_miou: dict[float, float]
    offsets: list[float]
    class_weights: list[float]
    photos: int

    def record(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "train_mIoU_by_tau": {f"{t:g}": round(v, 4) for t, v in self.train_miou.items()},
            "offsets": [round(o, 6) for o in self.offsets],
            "class_weights": [round(w, 4) for w in self.class_weights],
            "train_photos": self.photos,
        }


def classifier(model: nn.Module) -> nn.Conv2d:
    """The decode head's last convolution with one output per class and a bias: where the offsets go."""
    head = model.parts()["decode_head"]
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d) and m.out_channels == NUM_CLASSES]
    convs = [m for m in convs if m.bias is not None]
    if not convs:
        raise ConfigError(f"{type(model).__name__}: no classifier convolution with a bias to adjust")
    return convs[-1]


def offsets_for(weights: np.ndarray, tau: float) -> torch.Tensor:
    """-tau * log w per class; 0 for a class weighted 0 (absent from the training photos)."""
    logs = np.log(np.where(weights > 0, weights, 1.0))
    return torch.tensor(-tau * logs, dtype=torch.float32)


def training_photos(content: dict[str, Any], data: str | Path | None, out: str | Path) -> SegmentationDataset:
    """The run's training photos, whole, preprocessed as its validation photos are (no augmentation)."""
    config, dataset = content["config"], discover(data)
    split, _ = load_or_make_split(dataset, out=out, val_fraction=config["val_fraction"], seed=config["split_seed"])
    photos = SegmentationDataset(dataset.by_stem(split.train), image_only=True)
    size = int(content["input_size"])
    resize = photos.image_shapes() != {(size, size, 3)}
    photos.transform = eval_transform(size, content["mean"], content["std"], resize=resize)
    return photos


def run_weights(content: dict[str, Any], photos: SegmentationDataset) -> np.ndarray:
    """The class weights of the run's loss, recomputed from its training masks (original labels: a run that
    trained on corrected or pseudo-labels too weighted its classes slightly differently; tau absorbs that)."""
    config = content["config"]
    if not loss_config(config["loss"]).class_weighted:
        raise ConfigError(f"run {content.get('run_key')}: its loss has no class weights, so there is nothing to undo")
    masks = [read_mask(sample.mask) for sample in photos.samples]
    return class_weights(class_pixels(masks))[config["class_weights"]].to_numpy(copy=True)


def fit(model: nn.Module, photos: SegmentationDataset, weights: np.ndarray, device: torch.device) -> Adjustment:
    """Every tau scored on `photos`; the best (the smallest of equals) chosen."""
    matrices = {tau: ConfusionMatrix(NUM_CLASSES) for tau in TAUS}
    shifts = {tau: offsets_for(weights, tau).to(device).view(1, -1, 1, 1) for tau in TAUS}
    loader = torch.utils.data.DataLoader(photos, batch_size=8, num_workers=0, collate_fn=collate_eval)
    model.eval()
    with torch.no_grad():
        for images, masks in loader:
            scores = upsample_logits(model(images.to(device)), masks.shape[-2:])  # as evaluation resizes them
            for tau, matrix in matrices.items():
                matrix.update(masks.to(device), (scores + shifts[tau]).max(1).indices)
    train_miou = {tau: 100 * matrix.compute().miou for tau, matrix in matrices.items()}
    tau = max(TAUS, key=lambda t: (round(train_miou[t], 6), -t))
    return Adjustment(tau, train_miou, offsets_for(weights, tau).tolist(), weights.tolist(), len(photos))


def adjust(
    checkpoint: str | Path,
    target: str | Path | None = None,
    data: str | Path | None = None,
    out: str | Path = "results",
    device: str = "auto",
) -> tuple[Path, Adjustment]:
    """Write `target` (default: adjusted.pt beside `checkpoint`): `checkpoint` with its logit adjustment."""
    checkpoint = Path(checkpoint)
    content = load_checkpoint(checkpoint)
    if content.get("logit_adjustment"):
        raise ConfigError(f"{checkpoint}: already adjusted (tau {content['logit_adjustment']['tau']}); adjust best.pt")
    if content.get("weights_dtype") == "float16":
        raise ConfigError(f"{checkpoint}: a shipped fp16 file; adjust the run's best.pt, then ship that")
    model = model_from_checkpoint(content, checkpoint).to(resolve_device(device))
    photos = training_photos(content, data, out)
    adjustment = fit(model, photos, run_weights(content, photos), next(model.parameters()).device)
    bias = classifier(model).bias
    with torch.no_grad():
        bias += torch.tensor(adjustment.offsets, device=bias.device)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    target = Path(target) if target else checkpoint.with_name(ADJUSTED_NAME)
    save_checkpoint({**content, "state_dict": state, "logit_adjustment": adjustment.record()}, target)
    return target, adjustment
