"""Which photos each training iteration reads: a resumable, process-sharded batch order, optionally drawn with
repeat factors so that photos with rare classes come up more often."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from facelib.errors import ConfigError


class TrainBatches(torch.utils.data.Sampler):
    """Batches of (index, augmentation seed) for iterations `start`..`stop` - 1.

    Each epoch's order (and each process's share of it) comes from torch's DistributedSampler with the run's
    seed; iteration i reads batch i mod (batches per epoch) of epoch i div (batches per epoch), so the stream
    can start at any iteration (resume) and is the same for any worker count. Each sample's augmentation
    seed is derived from (seed, iteration, position in the global batch). With `weights` (repeat factors), each
    epoch instead draws its photos with replacement in proportion to them, seeded by (seed, epoch).
    """

    def __init__(
        self,
        size: int,
        batch: int,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        world: int = 1,
        weights: np.ndarray | None = None,
    ):
        self.size, self.batch, self.seed, self.start, self.stop = size, batch, seed, start, stop
        self.rank, self.world, self.weights = rank, world, weights
        self.per_epoch = (size // world) // batch
        if self.per_epoch < 1:
            raise ConfigError(f"{size} training images cannot fill one batch of {batch} on each of {world} process(es)")

    def __len__(self) -> int:
        return self.stop - self.start

    def _epoch(self, epoch: int) -> list[int]:
        if self.weights is not None:  # drawn with replacement in proportion to the weights; processes interleave
            rng = np.random.default_rng([self.seed, epoch])
            draws = rng.choice(self.size, self.per_epoch * self.batch * self.world, p=self.weights / self.weights.sum())
            return draws[self.rank :: self.world].tolist()
        sampler = torch.utils.data.DistributedSampler(
            range(self.size), num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, []
        for iteration in range(self.start, self.stop):
            if iteration // self.per_epoch != epoch:
                epoch = iteration // self.per_epoch
                order = self._epoch(epoch)
            position = iteration % self.per_epoch
            indices = order[position * self.batch : (position + 1) * self.batch]
            offset = self.rank * self.batch
            yield [(index, _sample_seed(self.seed, iteration, offset + j)) for j, index in enumerate(indices)]


def _sample_seed(seed: int, iteration: int, slot: int) -> int:
    return int(np.random.SeedSequence([seed, iteration, slot]).generate_state(1)[0])


def repeat_factors(class_pixels: np.ndarray, threshold: float) -> np.ndarray | None:
    """Repeat-factor sampling (LVIS, Gupta et al. 2019) over photos: a class present in a share f of the training
    photos gets r = max(1, sqrt(threshold / f)), and a photo is drawn in proportion to the largest r among its
    classes. Photos with glasses, hats or necklaces come up more often while every loss weight stays as it is.
    None (uniform epochs) when the threshold is 0."""
    if threshold <= 0:
        return None
    present = class_pixels > 0
    per_class = np.maximum(1.0, np.sqrt(threshold / np.maximum(present.mean(0), 1e-12)))
    return np.where(present, per_class, 1.0).max(1)
