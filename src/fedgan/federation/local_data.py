"""Which images are a hospital's own: its partition of the store in simulation, its store in deployment.

In simulation the engine sets `partition-id` per virtual node and the round's config names the
store and the partition; in deployment the SuperNode's node config names its own store
(`data-dir`), all of whose training split is that hospital's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context

from fedgan.config import TrainConfig
from fedgan.data.partition import partition
from fedgan.data.store import Store
from fedgan.federation import keys
from fedgan.training.data import EpochData, InMemory, Streamed, training_data

#: this process's hospitals' data, least recently used first (see `hospital_data`)
_HELD: OrderedDict[tuple[Any, ...], EpochData] = OrderedDict()


def held_bytes(data: EpochData) -> int:
    """Memory a cached partition holds: its decoded images, or a stream's record index."""
    if isinstance(data, InMemory):
        return data.images.numel() * data.images.element_size() + data.grades.numel() * data.grades.element_size()
    assert isinstance(data, Streamed)
    return data.indices.nbytes


def hospital_data(
    store: str,
    kind: str,
    num_clients: int,
    partition_id: int,
    seed: int,
    alpha: float,
    memory_mb: float,
    cache_mb: float,
) -> EpochData:
    """This hospital's share of the store's training split: only its own records are decoded, held in
    memory up to `memory_mb` and streamed from the shards beyond it.

    One worker process serves many hospitals in turn (on a 2-core machine the engine runs one), so
    the partitions it has decoded stay cached, least recently used dropped first, while together
    they hold at most `cache_mb` (the run's memory budget). Why bytes and not a count: a cache of
    four partitions made ten mdgan hospitals, served round robin, decode their images again at every
    exchange (0.16 s each on the demo store), while all ten together hold 11 MB."""
    key = (store, kind, num_clients, partition_id, seed, alpha, memory_mb)
    if key in _HELD:
        _HELD.move_to_end(key)
        return _HELD[key]
    data = Store(Path(store))
    indices = partition(data.labels("train"), num_clients, kind, seed, alpha=alpha)[partition_id]
    held = _HELD[key] = training_data(data, indices, memory_mb)
    while len(_HELD) > 1 and sum(map(held_bytes, _HELD.values())) > cache_mb * 2**20:
        _HELD.popitem(last=False)
    return held


def local_data(
    config: Mapping[str, Any], context: Context, train_config: TrainConfig, memory_mb: float | None = None
) -> tuple[EpochData, int]:
    """This hospital's data and id. `memory_mb` overrides the run's budget (mdgan needs its images at hand)."""
    budget = train_config.memory_mb if memory_mb is None else memory_mb
    node = context.node_config
    if "data-dir" in node:  # deployment: the SuperNode's own store, all of it
        data = hospital_data(str(node["data-dir"]), "iid", 1, 0, train_config.seed, 1.0, budget, train_config.memory_mb)
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
        train_config.memory_mb,
    )
    return data, partition_id
