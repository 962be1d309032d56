"""A Flower Grid that calls the real ClientApp in this process, with optional faults per hospital.

The ServerApp's logic (`server_app.run_rounds`) only needs Flower's Grid contract: node ids and
`send_and_receive`. Running it against the real ClientApp in one process lets a test or the
fault harness (`benchmarks/faults.py`) see every message that crosses the wire, and replace one
hospital's behaviour with a faulty or hostile one, without an engine's start-up time.

A fault is a function of (the message to the hospital, a function that runs the honest
hospital) returning the reply, or None for a hospital that never answers. Hospitals answer one
after another; a reply that took longer than the call's timeout is dropped, as Flower's grid
drops what has not arrived by the deadline.
"""

from __future__ import annotations

import copy
import time
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS as SECAGG_CONFIGS
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

from fedgan.federation import keys
from fedgan.federation.server_app import run_rounds
from fedgan.federation.settings import FederationSettings

Fault = Callable[[Message, Callable[[], Message]], Message | None]


class InProcessGrid:
    """`hospitals` virtual nodes 1..N holding partitions 0..N-1 of the store in the round config."""

    def __init__(self, hospitals: int, faults: dict[int, Fault] | None = None) -> None:
        from fedgan.federation.client_app import app  # noqa: PLC0415 (the ClientApp imports the training stack)

        self.app = app
        self.contexts = {
            node: Context(1, node, {keys.PARTITION_ID: node - 1, keys.NODE_NUM_PARTITIONS: hospitals}, RecordDict(), {})
            for node in range(1, hospitals + 1)
        }
        self.faults = faults or {}
        self.replies: list[Message] = []
        self.run = types.SimpleNamespace(run_id=1)  # Flower's legacy (SecAgg+) compatibility layer reads the run id

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: list[Message], timeout: float | None = None) -> list[Message]:
        replies = []
        for message in messages:
            message = copy.deepcopy(message)  # as if it crossed the wire: the hospital may change what it received
            node = message.metadata.dst_node_id
            message.metadata.__dict__["_src_node_id"] = 0

            def honest(message: Message = message, node: int = node) -> Message:
                try:
                    return self.app(message, self.contexts[node])
                except Exception as exc:  # noqa: BLE001 - what the engines turn a hospital's exception into
                    return Message(Error(code=0, reason=f"Message: {exc}"), reply_to=message)

            started = time.monotonic()
            reply = self.faults[node](message, honest) if node in self.faults else honest()
            if reply is None or (timeout is not None and time.monotonic() - started > timeout):
                continue  # as Flower's grid: what has not arrived by the deadline is not returned
            reply.metadata.__dict__["_src_node_id"] = node
            replies.append(reply)
        self.replies += replies
        return replies


def run_in_process(
    settings: FederationSettings,
    initial: OrderedDict[str, torch.Tensor],
    start_round: int,
    resumed: dict[str, Any] | None = None,
    faults: dict[int, Fault] | None = None,
) -> InProcessGrid:
    """The ServerApp's rounds against the real ClientApp in this process: what
    `fedgan.federation.simulate.start_engine` runs on Flower's engine, without its start-up time.
    Flower's task identity must be set, as its engines set it (tests: the `flower_task` fixture)."""
    grid = InProcessGrid(settings.clients, faults)
    run_rounds(grid, Context(1, 0, {}, RecordDict(), {}), settings, initial, start_round, resumed)  # type: ignore[arg-type]
    return grid


def with_arrays(
    reply: Message, change: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], None], sent: Message
) -> Message:
    """The reply with its arrays changed in place by `change(arrays, the model that was sent)`."""
    if reply.has_error():
        return reply
    arrays = {k: v.numpy().copy() for k, v in reply.content[keys.ARRAYS].items()}
    change(arrays, {k: v.numpy() for k, v in sent.content[keys.ARRAYS].items()})
    reply.content[keys.ARRAYS] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    return reply


def _first_float(arrays: dict[str, np.ndarray]) -> str:
    return next(k for k, v in arrays.items() if v.size > 1)


def _nan(arrays: dict[str, np.ndarray], _: dict[str, np.ndarray]) -> None:
    arrays[_first_float(arrays)][...] = np.nan


def _scaled(factor: float) -> Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], None]:
    def scale(arrays: dict[str, np.ndarray], sent: dict[str, np.ndarray]) -> None:
        for k in arrays:
            arrays[k] = sent[k] + factor * (arrays[k] - sent[k])

    return scale


def _wrong_shape(arrays: dict[str, np.ndarray], _: dict[str, np.ndarray]) -> None:
    arrays[_first_float(arrays)] = np.ones(1, np.float32)


def _extra_key(arrays: dict[str, np.ndarray], _: dict[str, np.ndarray]) -> None:
    arrays["generator.backdoor"] = np.zeros(3, np.float32)


def _inflated(reply: Message) -> Message:
    if not reply.has_error():
        metrics = reply.content[keys.METRICS]
        metrics[keys.NUM_EXAMPLES] = 10**9
    return reply


def _slow(message: Message, honest: Callable[[], Message]) -> Message:
    time.sleep(SLOW_SECONDS)
    return honest()


def _crash_mid_round(message: Message, honest: Callable[[], Message]) -> Message:
    """Fails while training: in a SecAgg+ round, after the key exchange (its hardest case)."""
    stage = message.content.config_records.get(SECAGG_CONFIGS, {}).get(Key.STAGE, Stage.COLLECT_MASKED_VECTORS)
    if stage == Stage.COLLECT_MASKED_VECTORS:
        return Message(Error(code=0, reason="Message: hospital crashed mid-round"), reply_to=message)
    return honest()


#: seconds the "slow" fault waits before answering (a harness sets its round timeout below it)
SLOW_SECONDS = 6.0

#: the faults of the harness, by name: each turns an honest hospital into a faulty or hostile one
FAULTS: dict[str, Fault] = {
    "crash": _crash_mid_round,
    "slow": _slow,
    "silent": lambda message, honest: None,
    "nan": lambda message, honest: with_arrays(honest(), _nan, message),
    "scaled-1e6": lambda message, honest: with_arrays(honest(), _scaled(1e6), message),
    "scaled-5x": lambda message, honest: with_arrays(honest(), _scaled(5), message),  # inside the norm bound
    "wrong-shape": lambda message, honest: with_arrays(honest(), _wrong_shape, message),
    "extra-key": lambda message, honest: with_arrays(honest(), _extra_key, message),
    "inflated-weight": lambda message, honest: _inflated(honest()),
}
