"""Which images are a hospital's own: its partition of the store in simulation, its store in deployment.

In simulation the engine sets `partition-id` per virtual node and the round's config names the
store and the partition; in deployment the SuperNode's node config names its own store
(`data-dir`), all of whose training split is that hospital's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context

from fedgan.config import TrainConfig
from fedgan.data.partition import partition
from fedgan.data.store import Store
from fedgan.federation import keys
from fedgan.training.data import EpochData, training_data


@functools.lru_cache(maxsize=4)
def hospital_data(
    store: str, kind: str, num_clients: int, partition_id: int, seed: int, alpha: float, memory_mb: float
) -> EpochData:
    """This hospital's share of the store's training split: only its own records are decoded, held in
    memory up to `memory_mb` and streamed from the shards beyond it (cached across rounds in one process)."""
    data = Store(Path(store))
    indices = partition(data.labels("train"), num_clients, kind, seed, alpha=alpha)[partition_id]
    return training_data(data, indices, memory_mb)


def local_data(
    config: Mapping[str, Any], context: Context, train_config: TrainConfig, memory_mb: float | None = None
) -> tuple[EpochData, int]:
    """This hospital's data and id. `memory_mb` overrides the run's budget (mdgan needs its images at hand)."""
    budget = train_config.memory_mb if memory_mb is None else memory_mb
    node = context.node_config
    if "data-dir" in node:  # deployment: the SuperNode's own store, all of it
        data = hospital_data(str(node["data-dir"]), "iid", 1, 0, train_config.seed, 1.0, budget)
        return data, int(node.get(keys.PARTITION_ID, 0))
    partition_id = int(node[keys.PARTITION_ID])
    data = hospital_data(
        str(config[keys.STORE]),
        str(config[keys.PARTITION]),
        int(config[keys.NUM_CLIENTS]),
        partition_id,
        train_config.seed,
        float(config[keys.ALPHA]),
        budget,
    )
    return data, partition_id
