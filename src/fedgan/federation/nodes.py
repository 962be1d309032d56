"""Waiting for hospitals: Flower's own sampling waits for nodes without a limit, so a dead
hospital would stall a federation silently; every wait here has a deadline and says so."""

from __future__ import annotations

import time

from flwr.serverapp import Grid

from fedgan.federation.failures import RoundFailed


def connected_nodes(grid: Grid, count: int, timeout: float = 600.0) -> list[int]:
    """The node ids once `count` hospitals are connected."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise RoundFailed(f"only {len(nodes)} of {count} hospitals connected within {timeout:g} s")
        time.sleep(0.5)
    return nodes
