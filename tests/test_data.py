"""What a training epoch reads: in memory below the budget, streamed from the shards above it."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import TINY

from fedgan.config import PreprocessConfig, StoreConfig, TrainConfig
from fedgan.data.partition import partition
from fedgan.data.prepare import prepare_store
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.federation.local_data import held_bytes, hospital_data
from fedgan.training.data import InMemory, Streamed, training_data
from fedgan.training.run import resume_centralised, train_centralised

IMAGE_MB = 16 * 16 * 4 / 2**20  # one decoded 16 px image


@pytest.fixture(scope="module")
def store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "sharded"
    prepare_store(
        fundus_set,
        out,
        preprocess_config=PreprocessConfig(size=16),
        store_config=StoreConfig(shard_size=6, heldout_fraction=0.25),
        workers=1,
        progress=False,
    )
    return out


def test_a_split_above_the_budget_streams_every_record_once_per_epoch_in_a_seeded_order(store: Path) -> None:
    data = Store(store)
    everything, labels = data.load("train")
    streamed = training_data(data, None, memory_mb=10 * IMAGE_MB)  # blocks of two 6-record shards
    assert isinstance(streamed, Streamed) and streamed.block_images == 10 and len(data.shard_ranges("train")) >= 5
    assert isinstance(training_data(data, None, memory_mb=len(everything) * IMAGE_MB), InMemory)

    def epoch(number: int) -> list[int]:
        seen = []
        for images, grades in streamed.batches(seed=1, epoch=number, batch=4):
            assert images.shape == (4, 1, 16, 16)
            for image, grade in zip(images, grades, strict=True):
                match = np.flatnonzero((everything == image.numpy()).all(axis=(1, 2, 3)))
                assert labels[match[0]] == grade
                seen.append(int(match[0]))
        return seen

    first = epoch(0)
    assert len(first) == len(set(first)) > len(everything) - 4  # all but the last partial batch, none twice
    assert epoch(0) == first and epoch(1) != first


def test_a_streamed_run_resumes_exactly(store: Path, tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, batch_size=4, seed=4, sample_count=10, memory_mb=10 * IMAGE_MB)
    straight = train_centralised(store, tmp_path / "a", model_config=TINY, train_config=config, progress=False)
    train_centralised(
        store, tmp_path / "b", model_config=TINY, train_config=config, progress=False, stop_after_epochs=1
    )
    resumed = resume_centralised(tmp_path / "b", progress=False)
    for key, value in straight.generator.state_dict().items():
        assert torch.equal(value, resumed.generator.state_dict()[key]), key
    losses = [
        [json.loads(x)["g_loss"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab"
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 3 * (len(Store(store).labels("train")) // 4)


def test_a_hospital_streams_only_its_own_partition(store: Path) -> None:
    labels = Store(store).labels("train")
    parts = partition(labels, 3, "label-split", 0)
    data = hospital_data(str(store), "label-split", 3, 1, 0, 0.5, 6 * IMAGE_MB, 6 * IMAGE_MB)
    assert isinstance(data, Streamed) and data.count == len(parts[1])
    assert np.array_equal(data.labels, labels[np.sort(parts[1])])
    seen = torch.cat([grades for _, grades in data.batches(seed=0, epoch=0, batch=2)])
    assert len(seen) == data.count // 2 * 2  # its images, each once, but a last odd one
    assert not Counter(seen.tolist()) - Counter(labels[parts[1]].tolist())


def test_a_worker_keeps_every_hospital_it_serves_while_they_fit_its_budget(store: Path) -> None:
    """Ten hospitals served in turn by one process: each decoded once while all fit the budget;
    past it, the least recently used ones are dropped and decoded again when next asked for."""

    def serve(seed: int, cache_mb: float) -> list[Any]:
        return [hospital_data(str(store), "label-split", 10, p, seed, 0.5, math.inf, cache_mb) for p in range(10)]

    first = serve(7, cache_mb=100.0)
    assert all(isinstance(d, InMemory) for d in first)
    assert all(a is b for a, b in zip(serve(7, cache_mb=100.0), first, strict=True))  # none decoded again
    largest = max(held_bytes(d) for d in first) / 2**20
    small = serve(8, cache_mb=largest)  # room for about one hospital: each new one evicts the oldest
    again = serve(8, cache_mb=largest)
    assert again[0] is not small[0] and torch.equal(again[0].images, small[0].images)
    assert serve(7, cache_mb=100.0)[0] is not first[0]  # the first set was evicted too


def test_balanced_batches_draw_every_grade_about_equally_and_repeat_with_the_seed() -> None:
    grades = torch.repeat_interleave(torch.arange(5), torch.tensor([700, 200, 50, 30, 20]))
    data = InMemory(torch.arange(1000, dtype=torch.float32).view(-1, 1, 1, 1), grades)

    def epoch(number: int, balanced: bool) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = list(data.batches(seed=3, epoch=number, batch=50, balanced=balanced))
        return torch.cat([images.flatten() for images, _ in drawn]), torch.cat([g for _, g in drawn])

    images, drawn = epoch(0, balanced=True)
    assert len(drawn) == 1000 and torch.equal(grades[images.long()], drawn)  # each image keeps its grade
    shares = torch.bincount(drawn, minlength=5) / len(drawn)
    assert torch.all((shares - 0.2).abs() < 0.04), shares  # against 0.70 ... 0.02 in the data
    assert torch.equal(epoch(0, balanced=True)[0], images) and not torch.equal(epoch(1, balanced=True)[0], images)
    assert torch.equal(torch.bincount(epoch(0, balanced=False)[1], minlength=5), torch.tensor([700, 200, 50, 30, 20]))


def test_balanced_batches_need_the_split_in_memory(store: Path) -> None:
    streamed = training_data(Store(store), None, memory_mb=10 * IMAGE_MB)
    with pytest.raises(FedGANError, match="sharded: balance-grades .* raise --memory-mb"):
        next(streamed.batches(seed=0, epoch=0, batch=4, balanced=True))
