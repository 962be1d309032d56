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

import torch
from flwr.app import Context

from fedgan.data.partition import partition
from fedgan.data.store import Store
from fedgan.federation import keys


@functools.lru_cache(maxsize=4)
def hospital_data(
    store: str, kind: str, num_clients: int, partition_id: int, seed: int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """This hospital's share of the store's training split (cached across rounds in one process)."""
    data = Store(Path(store))
    indices = partition(data.labels("train"), num_clients, kind, seed, alpha=alpha)[partition_id]
    images, labels = data.load("train", indices)
    return torch.from_numpy(images), torch.from_numpy(labels)


def local_data(config: Mapping[str, Any], context: Context, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    node = context.node_config
    if "data-dir" in node:  # deployment: the SuperNode's own store, all of it
        images, labels = hospital_data(str(node["data-dir"]), "iid", 1, 0, seed, 1.0)
        return images, labels, int(node.get(keys.PARTITION_ID, 0))
    partition_id = int(node[keys.PARTITION_ID])
    images, labels = hospital_data(
        str(config[keys.STORE]),
        str(config[keys.PARTITION]),
        int(config[keys.NUM_CLIENTS]),
        partition_id,
        seed,
        float(config[keys.ALPHA]),
    )
    return images, labels, partition_id
