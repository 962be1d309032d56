"""Faulty and hostile hospitals: every reply is screened before it counts, and a round that
cannot be committed leaves nothing behind (the real ServerApp logic and ClientApp, in process)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Message
from helpers import LOCAL, TINY, small_store

from fedgan.config import AlgorithmConfig, GANConfig, TrainConfig
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.federation import keys
from fedgan.federation.algorithms import check_algorithm
from fedgan.federation.failures import RoundFailed
from fedgan.federation.inprocess import FAULTS, Fault, InProcessGrid, run_in_process
from fedgan.federation.registry import read_registry
from fedgan.federation.screening import form_problem, oversized, update_norm, weight_problem
from fedgan.federation.settings import ClientDP, FederationSettings
from fedgan.federation.simulate import with_partition_sizes
from fedgan.federation.weights import global_weights
from fedgan.training.checkpoint import read_checkpoint
from fedgan.training.loop import new_state


@pytest.fixture(scope="module")
def store(fundus_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_store(fundus_set, tmp_path_factory.mktemp("screening") / "store", 16, 0.1)


def federation(
    store: Path, run: Path, hospitals: int, faults: dict[int, Fault], rounds: int = 2, train=LOCAL, **options
) -> InProcessGrid:
    settings = FederationSettings(store, run, hospitals, "iid", rounds, TINY, train, **options)
    settings = with_partition_sizes(Store(store), settings, None)
    run.mkdir(parents=True)
    return run_in_process(settings, global_weights(new_state(TINY, LOCAL, torch.device("cpu"))), 0, faults=faults)


def lines(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_form_checks_name_the_problem() -> None:
    reference = {"g.w": np.zeros((2, 3), np.float32), "g.b": np.zeros(3, np.float32)}
    assert form_problem(dict(reference), reference) is None
    assert "lacks g.b" in form_problem({"g.w": reference["g.w"]}, reference)
    assert "unknown array g.x" in form_problem({**reference, "g.x": np.zeros(1, np.float32)}, reference)
    assert "shape (1,)" in form_problem({**reference, "g.b": np.zeros(1, np.float32)}, reference)  # never broadcast
    assert "dtype int64" in form_problem({**reference, "g.b": np.zeros(3, np.int64)}, reference)
    assert "NaN" in form_problem({**reference, "g.b": np.array([0, np.inf, 0], np.float32)}, reference)


def test_update_bound_is_relative_to_the_median_and_falls_back_to_the_last_round() -> None:
    assert set(oversized({1: 1.0, 2: 2.0, 3: 1e6}, None)) == {3}
    assert oversized({1: 1.0, 2: 9.0, 3: 3.0}, None) == {}
    assert oversized({1: 1.0, 2: 1e6}, None) == {}  # two alone cannot say which is wrong...
    assert set(oversized({1: 1.0, 2: 1e6}, previous_median=1.5)) == {2}  # ...the last round's median can


def test_update_norms_match_float64_and_an_absurd_update_is_refused() -> None:
    rng = np.random.default_rng(0)
    reference = {"a": rng.normal(size=(64, 300)).astype(np.float32), "b": rng.normal(size=7).astype(np.float32)}
    honest = {k: v + rng.normal(scale=0.01, size=v.shape).astype(np.float32) for k, v in reference.items()}
    exact = np.sqrt(sum(np.square(honest[k].astype(np.float64) - reference[k]).sum() for k in reference))
    assert update_norm(honest, reference) == pytest.approx(exact, rel=1e-5)
    huge = {k: v * np.float32(1e30) for k, v in honest.items()}  # finite, but its squares overflow float32
    norms = {1: update_norm(honest, reference), 2: 1.1 * exact, 3: update_norm(huge, reference)}
    assert norms[3] == np.inf and set(oversized(norms, None)) == {3}


def test_weights_are_the_servers_not_the_hospitals() -> None:
    metrics = {keys.PARTITION_ID: 1, keys.NUM_EXAMPLES: 10**9, keys.UNIT_WEIGHT: 1}
    assert "claims weight 1e+09; the server's registry says 12" in weight_problem(metrics, "examples", {0: 5, 1: 12})
    assert weight_problem(metrics, "unweighted", {0: 5, 1: 12}) is None
    assert "claims weight 0" in weight_problem(
        {**metrics, keys.UNIT_WEIGHT: 0}, "unweighted", {1: 12}
    )  # no zero-sum weights
    assert "not registered" in weight_problem({**metrics, keys.PARTITION_ID: 7}, "examples", {1: 12})


def test_registry_errors_are_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hospitals.toml"
    path.write_text("[hospitals]\n0 = 120\n1 = 80\n")
    assert read_registry(path) == {0: 120, 1: 80}
    for text, problem in (
        ("[hospitals]\n0 = -3\n", "positive integer"),
        ("0 = 1\n", "[hospitals] table"),
        ("[hosp", "not a TOML"),
    ):
        path.write_text(text)
        with pytest.raises(FedGANError, match=f"^{re.escape(str(path))}: .*{re.escape(problem)}"):
            read_registry(path)
    with pytest.raises(FedGANError, match="not found"):
        read_registry(tmp_path / "missing.toml")


def test_hostile_replies_are_dropped_and_the_model_equals_the_honest_hospitals_alone(
    store: Path, tmp_path: Path, flower_task: None
) -> None:
    hostile = ["nan", "scaled-1e6", "wrong-shape", "extra-key", "inflated-weight", "silent"]
    faults = {node: FAULTS[name] for node, name in enumerate(hostile, start=4)}  # nodes 1-3 honest
    federation(store, tmp_path / "hostile", 9, faults)
    federation(store, tmp_path / "crashed", 9, dict.fromkeys(faults, FAULTS["crash"]))
    poisoned, crashed = read_checkpoint(tmp_path / "hostile"), read_checkpoint(tmp_path / "crashed")
    assert poisoned["extra"]["round"] == 2
    for name in ("generator", "discriminator"):
        for key, value in poisoned[name].items():
            assert torch.isfinite(value.float()).all()
            torch.testing.assert_close(value, crashed[name][key], rtol=0, atol=1e-6)  # float summation order aside
    records = lines(tmp_path / "hostile")
    reasons = {r["node"]: r["failed"] for r in records if r["round"] == 2 and "node" in r and "failed" in r}
    assert "NaN" in reasons[4] and "above 10x the round's median" in reasons[5] and "shape (1,)" in reasons[6]
    assert "unknown array generator.backdoor" in reasons[7] and "claims weight 1e+09" in reasons[8]
    assert "no reply within the round timeout" in reasons[9]
    assert [r["clients"] for r in records if r.get("aggregate")] == [3, 3]


def test_a_round_without_enough_usable_replies_leaves_nothing_behind(
    store: Path, tmp_path: Path, flower_task: None
) -> None:
    def zero_weight(message: Message, honest) -> Message:
        reply = honest()
        reply.content[keys.METRICS][keys.UNIT_WEIGHT] = 0
        return reply

    with pytest.raises(RoundFailed, match="round 1: only 0 hospital"):  # weights summing to 0 never reach a division
        federation(store, tmp_path / "zero", 3, dict.fromkeys((1, 2, 3), zero_weight), weighting="unweighted")
    assert lines(tmp_path / "zero") == [] and not (tmp_path / "zero" / "checkpoints").exists()


def test_client_dp_round_with_a_failed_hospital_is_not_checkpointed(
    store: Path, tmp_path: Path, flower_task: None
) -> None:
    with pytest.raises(RoundFailed, match="round 1: not aggregated"):
        federation(
            store,
            tmp_path / "dp",
            3,
            {2: FAULTS["crash"]},
            weighting="unweighted",
            client_dp=ClientDP(noise=0.5, clip=1.0),
        )
    assert lines(tmp_path / "dp") == [] and not (tmp_path / "dp" / "checkpoints").exists()


def test_half_precision_updates_halve_the_replies_and_move_the_model_by_their_rounding_only(
    store: Path, tmp_path: Path, flower_task: None
) -> None:
    federation(store, tmp_path / "fp32", 3, {}, rounds=1)
    federation(store, tmp_path / "fp16", 3, {}, rounds=1, algorithm=AlgorithmConfig(wire="fp16"))
    start = global_weights(new_state(TINY, LOCAL, torch.device("cpu")))
    exact, half = read_checkpoint(tmp_path / "fp32"), read_checkpoint(tmp_path / "fp16")
    for name in ("generator", "discriminator"):
        for key, value in exact[name].items():
            if value.is_floating_point() and f"{name}.{key}" in start:
                update = (value - start[f"{name}.{key}"]).abs().max()
                # each hospital's update rounds to fp16 (relative 2^-11); their mean errs by no more
                assert (half[name][key] - value).abs().max() <= update * 2**-10 + 1e-7, key
    hospitals = [r for r in lines(tmp_path / "fp16") if "client" in r]
    assert hospitals and all(r["bytes_sent"] * 2 == r["bytes_received"] for r in hospitals)
    with pytest.raises(FedGANError, match="--wire fp16 applies to plain weight averaging"):
        check_algorithm(AlgorithmConfig(wire="fp16"), True, False, LOCAL, 1.0)


def test_hospitals_above_the_memory_budget_stream_their_partition(
    store: Path, tmp_path: Path, flower_task: None
) -> None:
    streaming = dataclasses.replace(LOCAL, memory_mb=4 * 16 * 16 * 4 / 2**20)  # four 16 px images at a time
    federation(store, tmp_path / "streamed", 2, {}, rounds=1, train=streaming)
    hospitals = [r for r in lines(tmp_path / "streamed") if "client" in r]
    assert len(hospitals) == 2 and all(r["steps"] == r["examples"] // LOCAL.batch_size for r in hospitals)


def test_robust_aggregation_keeps_a_within_bound_attack_out(store: Path, tmp_path: Path, flower_task: None) -> None:
    """A hostile update 5x an honest one passes the norm bound; the median of five ignores it."""
    median = AlgorithmConfig(aggregation="median")
    federation(store, tmp_path / "median", 5, {5: FAULTS["scaled-5x"]}, rounds=1, algorithm=median)
    federation(store, tmp_path / "mean", 5, {5: FAULTS["scaled-5x"]}, rounds=1)
    federation(store, tmp_path / "honest", 5, {}, rounds=1, algorithm=median)
    start = global_weights(new_state(TINY, LOCAL, torch.device("cpu")))

    def distance(run: str) -> float:
        weights = read_checkpoint(tmp_path / run)["generator"]
        return float(
            sum(
                (weights[k] - start[f"generator.{k}"]).float().norm() ** 2 for k in weights if f"generator.{k}" in start
            )
            ** 0.5
        )

    assert [r["clients"] for r in lines(tmp_path / "median") if r.get("aggregate")] == [5]  # the bound let it through
    assert distance("median") < 1.5 * distance("honest") < distance("mean")


def test_dp_steps_a_failed_round_released_are_remembered(store: Path, tmp_path: Path, flower_task: None) -> None:
    """Hospitals spent privacy on updates the server received, even if the round is never committed."""
    from fedgan.federation.recorder import read_ledger

    grouped = GANConfig(**{**TINY.__dict__, "norm": "group", "spectral_norm": False})
    private = TrainConfig(epochs=1, batch_size=4, seed=2, sample_count=10, dp_epsilon=3.0, dp_delta=1e-3)
    settings = FederationSettings(store, tmp_path / "run", 3, "iid", 2, grouped, private, min_successful=3)
    settings = with_partition_sizes(Store(store), settings, None)
    settings.run.mkdir()
    with pytest.raises(RoundFailed, match="round 1: only 2"):
        run_in_process(
            settings, global_weights(new_state(grouped, private, torch.device("cpu"))), 0, faults={3: FAULTS["crash"]}
        )
    assert sorted(read_ledger(settings.run)) == ["0", "1"] and lines(settings.run) == []


def test_hospitals_reveal_only_what_the_federation_asked_for(store: Path, tmp_path: Path, flower_task: None) -> None:
    grade_keys = {keys.GRADE_COUNT.format(g) for g in range(5)}
    for disclose, revealed in (
        ((), set()),
        (("losses",), {keys.D_LOSS, keys.G_LOSS, keys.STEPS, keys.SECONDS}),
        (("grades",), grade_keys),
    ):
        grid = federation(store, tmp_path / f"run-{'-'.join(disclose)}", 2, {}, rounds=1, disclose=disclose)
        for reply in grid.replies:
            assert (
                set(reply.content[keys.METRICS]) == {keys.NUM_EXAMPLES, keys.UNIT_WEIGHT, keys.PARTITION_ID} | revealed
            )


def test_secure_aggregation_retries_a_halted_round_without_the_hospitals_that_dropped_out(
    store: Path, tmp_path: Path, flower_task: None
) -> None:
    """Three neighbours crashing mid-round leave a hospital below SecAgg+'s threshold: the round
    halts, then runs without them."""
    from fedgan.federation.settings import SecAggSettings

    settings = FederationSettings(store, tmp_path / "run", 10, "iid", 2, TINY, LOCAL)
    settings = with_partition_sizes(Store(store), settings, SecAggSettings())
    settings.run.mkdir()
    run_in_process(
        settings,
        global_weights(new_state(TINY, LOCAL, torch.device("cpu"))),
        0,
        faults=dict.fromkeys((8, 9, 10), FAULTS["crash"]),
    )
    records = lines(settings.run)
    assert [r["clients"] for r in records if r.get("aggregate")] == [7, 7]
    assert sorted(r["node"] for r in records if "node" in r and "failed" in r) == [
        8,
        9,
        10,
    ]  # recorded once, with the round
    assert read_checkpoint(settings.run)["extra"]["round"] == 2


def test_deployment_weights_and_the_secagg_range_come_from_the_operators_registry(tmp_path: Path) -> None:
    import tomllib

    from fedgan.federation.deployment import deployment_settings

    app = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    config = {
        f"{section}.{key}": value for section, values in app.items() for key, value in values.items()
    }  # as Flower flattens it
    config |= {
        "federation.run-dir": str(tmp_path / "run"),
        "federation.secagg": True,
        "model.resolution": 16,
        "model.generator-width": 32,
        "model.discriminator-width": 8,
        "model.latent-dim": 8,
    }
    with pytest.raises(FedGANError, match="federation.registry is required"):
        deployment_settings({**config, "federation.registry": ""})
    (tmp_path / "hospitals.toml").write_text("[hospitals]\n0 = 1200\n1 = 80\n")
    settings, *_ = deployment_settings({**config, "federation.registry": str(tmp_path / "hospitals.toml")})
    assert settings.images == {0: 1200, 1: 80} and settings.secagg is not None and settings.secagg.max_weight == 1200
