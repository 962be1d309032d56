"""The weight-averaging algorithms: Flower's server optimisers, FedProx's proximal term, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from helpers import LOCAL, TINY, small_store

from fedgan.config import AlgorithmConfig
from fedgan.errors import FedGANError
from fedgan.federation import keys
from fedgan.federation.algorithms import TAU, averaged_only, make_strategy
from fedgan.federation.recorder import RoundRecorder
from fedgan.federation.server_app import SERVER_OPTIMISER
from fedgan.federation.settings import FederationSettings
from fedgan.federation.simulate import federate, resume_federation
from fedgan.federation.weights import global_weights
from fedgan.training.checkpoint import read_checkpoint
from fedgan.training.loop import new_state
from fedgan.training.proximal import add_proximal_term

pytestmark = pytest.mark.usefixtures("flower_task")  # every test here builds Flower messages


def strategy_for(name: str, tmp_path: Path, **options: float):
    settings = FederationSettings(None, tmp_path, 2, "iid", 3, TINY, LOCAL, algorithm=AlgorithmConfig(name, **options))
    recorder = RoundRecorder(settings, 0)
    return make_strategy(settings, recorder, recorder.state), recorder


def reply(weights: dict[str, np.ndarray], examples: int, partition_id: int) -> Message:
    metrics = {
        keys.NUM_EXAMPLES: examples,
        keys.UNIT_WEIGHT: 1,
        keys.PARTITION_ID: partition_id,
        keys.D_LOSS: 1.0,
        keys.G_LOSS: 1.0,
        keys.STEPS: 1,
        keys.SECONDS: 0.1,
        **{keys.GRADE_COUNT.format(g): 0 for g in range(5)},
    }
    content = RecordDict(
        {keys.ARRAYS: ArrayRecord({k: Array(v) for k, v in weights.items()}), keys.METRICS: MetricRecord(metrics)}
    )
    message = Message(content=content, dst_node_id=0, message_type="train")
    message.metadata.__dict__["_src_node_id"] = partition_id + 1  # as the grid delivers it: from the hospital's node
    return message


def one_round(
    strategy,
    current: dict[str, np.ndarray],
    updates: list[dict[str, np.ndarray]],
    examples: list[int],
    server_round: int,
):
    arrays = ArrayRecord({k: Array(v.copy()) for k, v in current.items()})
    strategy.configure_train(server_round, arrays, ConfigRecord(), grid=FakeGrid())
    replies = [
        reply({k: current[k] + u[k] for k in current}, n, i)
        for i, (u, n) in enumerate(zip(updates, examples, strict=True))
    ]
    result, _ = strategy.aggregate_train(server_round, replies)
    return {k: v.numpy() for k, v in result.items()}


class FakeGrid:
    """Two registered nodes: all that `configure_train` asks of a grid."""

    def get_node_ids(self) -> list[int]:
        return [1, 2]


def test_fedadam_steps_parameters_by_hand_computed_adam_and_averages_the_rest(tmp_path: Path) -> None:
    strategy, recorder = strategy_for("fedadam", tmp_path, server_lr=0.01, server_momentum=0.9)
    current = {k: v.numpy().copy() for k, v in global_weights(recorder.state).items()}
    rng = np.random.default_rng(0)
    updates = [{k: rng.normal(0, 1e-3, v.shape).astype(np.float32) for k, v in current.items()} for _ in range(2)]
    result = one_round(strategy, current, updates, [30, 10], server_round=1)
    averaged = averaged_only(recorder.state)
    assert any(k.startswith("generator_ema.") for k in averaged) and any("running_var" in k for k in averaged)
    assert not any(k.endswith("weight.original") and k.startswith("discriminator.") for k in averaged)
    beta1, beta2, lr = 0.9, 0.99, 0.01
    for key in current:
        mean_update = (30 * updates[0][key] + 10 * updates[1][key]) / 40
        if key in averaged:  # moving average and buffers: the plain weighted mean
            expected = current[key] + mean_update
        else:  # Reddi et al.'s FedAdam with Flower's bias correction at round 1
            m, v = (1 - beta1) * mean_update, (1 - beta2) * mean_update**2
            expected = current[key] + lr * np.sqrt(1 - beta2**2) / (1 - beta1**2) * m / (np.sqrt(v) + TAU)
        np.testing.assert_allclose(result[key], expected, rtol=1e-4, atol=1e-7, err_msg=key)


def test_fedavgm_momentum_carries_over_rounds_and_through_its_saved_state(tmp_path: Path) -> None:
    strategy, recorder = strategy_for("fedavgm", tmp_path, server_lr=1.0, server_momentum=0.5)
    current = {k: v.numpy().copy() for k, v in global_weights(recorder.state).items()}
    parameter = next(k for k in current if k not in averaged_only(recorder.state))
    step = {k: np.full_like(v, 1e-3) for k, v in current.items()}
    first = one_round(strategy, current, [step, step], [1, 1], server_round=1)
    np.testing.assert_allclose(first[parameter], current[parameter] + 1e-3, atol=1e-7)
    saved = strategy.server_state()
    second = one_round(strategy, first, [step, step], [1, 1], server_round=2)  # momentum: 1e-3 + 0.5 x 1e-3
    np.testing.assert_allclose(second[parameter], first[parameter] + 1.5e-3, atol=1e-7)
    restarted, _ = strategy_for("fedavgm", tmp_path, server_lr=1.0, server_momentum=0.5)
    restarted.load_server_state(saved)
    again = one_round(restarted, first, [step, step], [1, 1], server_round=2)
    np.testing.assert_allclose(again[parameter], second[parameter], atol=1e-7)


def test_proximal_term_pulls_towards_the_round_start() -> None:
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimiser = torch.optim.SGD([weight], lr=0.1)
    add_proximal_term(optimiser, mu=0.5)
    for _ in range(2):
        optimiser.zero_grad()
        (weight * torch.tensor([1.0, 1.0])).sum().backward()  # gradient 1 everywhere
        optimiser.step()
    # step 1: w -= 0.1 x 1; step 2: w -= 0.1 x (1 + 0.5 x (-0.1))
    assert torch.allclose(weight.detach(), torch.tensor([1.0, -2.0]) - 0.1 - 0.1 * 0.95)


def test_unsupported_combinations_fail_before_starting(tmp_path: Path) -> None:
    from fedgan.federation.settings import SecAggSettings

    with pytest.raises(FedGANError, match="--secagg runs with --algorithm fedavg or fedprox only"):
        federate(
            tmp_path / "none", tmp_path / "x", clients=2, secagg=SecAggSettings(), algorithm=AlgorithmConfig("fedadam")
        )
    with pytest.raises(FedGANError, match="algorithm must be one of"):
        AlgorithmConfig("fedsgd")
    with pytest.raises(FedGANError, match="judges must be one of all, one"):
        AlgorithmConfig("mdgan", judges="two")
    assert not (tmp_path / "x").exists()


@pytest.mark.usefixtures("in_process")
@pytest.mark.parametrize(
    ("name", "server_state"),
    [("fedavgm", {"momentum_vector"}), ("fedadam", {"m_t", "v_t"}), ("fedyogi", {"m_t", "v_t"}), ("fedprox", set())],
)
def test_each_weight_averaging_algorithm_federates_and_resumes_exactly(
    name: str, server_state: set[str], fundus_set: Path, tmp_path: Path
) -> None:
    """The server optimiser's state (momentum, Adam's moments and bias correction, the round
    count) continues across a resume. FedAvg's resume is `test_federation.py`'s, mdgan's
    `test_split.py`'s."""
    store = small_store(fundus_set, tmp_path / "store", 16, 0.1)
    algorithm = AlgorithmConfig(name)
    straight = federate(
        store,
        tmp_path / "a",
        clients=2,
        partition_kind="label-split",
        rounds=2,
        model_config=TINY,
        train_config=LOCAL,
        algorithm=algorithm,
    )
    stopped = federate(
        store,
        tmp_path / "b",
        clients=2,
        partition_kind="label-split",
        rounds=1,
        model_config=TINY,
        train_config=LOCAL,
        algorithm=algorithm,
    )
    assert set(read_checkpoint(stopped)["extra"][SERVER_OPTIMISER]) == server_state
    resume_federation(stopped, rounds=2)
    a, b = read_checkpoint(straight), read_checkpoint(stopped)
    for net in ("generator", "discriminator", "generator_ema"):
        for key, value in a[net].items():
            if value.is_floating_point():
                assert torch.allclose(value, b[net][key], atol=1e-5), (net, key)


def test_a_fedprox_hospital_stays_nearer_the_global_model(fundus_set: Path, tmp_path: Path) -> None:
    """The real ClientApp's local training, called in this process, with and without mu."""
    import dataclasses
    import json

    from flwr.app import Context, RecordDict

    from fedgan.federation.client_app import train_locally

    store = small_store(fundus_set, tmp_path / "store", 16, 0.1)
    start = global_weights(new_state(TINY, LOCAL, torch.device("cpu")))
    context = Context(1, 1, {keys.PARTITION_ID: 0, keys.NODE_NUM_PARTITIONS: 2}, RecordDict(), {})
    config = {
        keys.STORE: str(store),
        keys.PARTITION: "iid",
        keys.NUM_CLIENTS: 2,
        keys.ALPHA: 0.5,
        keys.GLOBAL_ROUND: 1,
        keys.MODEL_CONFIG: json.dumps(dataclasses.asdict(TINY)),
        keys.TRAIN_CONFIG: json.dumps(dataclasses.asdict(LOCAL)),
    }
    moved = {}
    for mu in (0.0, 5.0):
        trained, _ = train_locally(dict(start), {**config, keys.PROXIMAL_MU: mu}, context)
        moved[mu] = sum(
            float((trained[k] - v).square().sum()) for k, v in start.items() if not k.startswith("generator_ema")
        )
    assert 0 < moved[5.0] < moved[0.0]
