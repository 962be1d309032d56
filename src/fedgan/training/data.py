"""What a training epoch reads: images held in memory, or streamed from the store's shards.

Why two: a split that fits the memory budget (`TrainConfig.memory_mb`, decoded float32) is held
in memory and read in the exact order `epoch_order` gives, as always. A larger one (full
EyePACS is 2.3 GB at 128 px, 9 GB at 256) is read shard by shard, so the memory a run needs does
not grow with the store: each epoch visits the shards in a seeded order, decodes a block of them
(the budget, plus the shard being read), shuffles the block and trains on it, carrying a partial batch over to the
next block. Both give an order that depends only on (seed, epoch), so a resumed run repeats it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from fedgan.data.store import Store
from fedgan.errors import FedGANError

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_draws(seed: int, epoch: int) -> torch.Generator:
    """The random draws of an epoch's data order, a function of (seed, epoch) only."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of an epoch held in memory."""
    return torch.randperm(count, generator=epoch_draws(seed, epoch))


def balanced_order(grades: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """As many draws as images, with replacement, each grade equally likely (`balance_grades`).

    Why: EyePACS's grades 3 and 4 are 2 % of the images each, so in ordinary batches the
    discriminator and the generator meet them about once a batch and a conditional generator
    barely learns what sets them apart. Drawing grades evenly changes how often each grade is
    practised, not what it should look like: the generator still learns images given their grade,
    and samples and evaluation still draw grades at the data's frequencies."""
    _, inverse, counts = torch.unique(grades, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse].double()
    return torch.multinomial(weights, len(grades), replacement=True, generator=epoch_draws(seed, epoch))


class EpochData(Protocol):
    @property
    def count(self) -> int: ...

    @property
    def labels(self) -> np.ndarray: ...  # every image's grade, without its pixels

    @property
    def image_shape(self) -> tuple[int, ...]: ...

    def batches(self, seed: int, epoch: int, batch: int, balanced: bool = False) -> Iterator[Batch]:
        """Full batches of (images in [-1, 1], grades); the last partial batch is dropped.
        `balanced`: drawn with every grade equally likely (`balanced_order`)."""
        ...


@dataclasses.dataclass
class InMemory:
    images: torch.Tensor
    grades: torch.Tensor

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def labels(self) -> np.ndarray:
        return self.grades.numpy()

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def batches(self, seed: int, epoch: int, batch: int, balanced: bool = False) -> Iterator[Batch]:
        order = balanced_order(self.grades, seed, epoch) if balanced else epoch_order(self.count, seed, epoch)
        batch = min(batch, self.count)
        for start in range(0, len(order) - batch + 1, batch):
            index = order[start : start + batch]
            yield self.images[index], self.grades[index]


@dataclasses.dataclass
class Streamed:
    """The records at `indices` of a store's split, read a block of shards at a time."""

    store: Store
    split: str
    indices: np.ndarray  # sorted record indices within the split
    block_images: int  # decoded images held at once (besides one partial batch)

    @property
    def count(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.store.labels(self.split)[self.indices]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.store.image_shape)

    def batches(self, seed: int, epoch: int, batch: int, balanced: bool = False) -> Iterator[Batch]:
        """Shards in a seeded order into one preallocated block; each time the block holds
        `block_images`, its images are shuffled and served in full batches, and the partial batch
        left over stays for the next block. Memory: the block and one shard being read.
        Balanced draws need every image of a grade at hand, so they need the split in memory."""
        if balanced:
            raise FedGANError(
                f"{self.store.path}: balance-grades draws from the whole split in memory, and its {self.count} "
                f"images exceed memory-mb; raise --memory-mb or leave out --balance-grades"
            )
        batch = min(batch, self.count)
        draws = epoch_draws(seed, epoch)
        ranges = self.store.shard_ranges(self.split)
        capacity = self.block_images + max(stop - start for start, stop in ranges) + batch
        images = np.empty((capacity, *self.image_shape), np.float32)
        grades = np.empty(capacity, np.int64)
        held = 0
        order = torch.randperm(len(ranges), generator=draws).tolist()
        for position, shard in enumerate(order):
            start, stop = ranges[shard]
            inside = self.indices[(self.indices >= start) & (self.indices < stop)]
            if len(inside):
                new_images, new_grades = self.store.read_shard(self.split, shard, inside - start)
                images[held : held + len(inside)], grades[held : held + len(inside)] = new_images, new_grades
                held += len(inside)
            if held >= self.block_images or (position == len(order) - 1 and held):
                shuffled = torch.randperm(held, generator=draws).numpy()
                full = held - held % batch
                for first in range(0, full, batch):
                    index = shuffled[first : first + batch]
                    yield torch.from_numpy(images[index]), torch.from_numpy(grades[index])
                rest = shuffled[full:]  # fewer than a batch: they open the next block
                images[: len(rest)], grades[: len(rest)] = images[rest], grades[rest]
                held = len(rest)


def training_data(store: Store, indices: np.ndarray | None, memory_mb: float, split: str = "train") -> EpochData:
    """In memory when the images fit `memory_mb` (decoded float32), else streamed in blocks of that size."""
    chosen = np.arange(len(store.labels(split))) if indices is None else np.sort(np.asarray(indices))
    image_bytes = 4 * int(np.prod(store.image_shape))
    if len(chosen) * image_bytes <= memory_mb * 2**20:
        images, labels = store.load(split, chosen)
        return InMemory(torch.from_numpy(images), torch.from_numpy(labels))
    return Streamed(store, split, chosen, max(1, int(memory_mb * 2**20 // image_bytes)))
