"""mdgan: the generator at the server, a discriminator per hospital."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message
from helpers import CONDITIONAL, LOCAL, TINY, small_store

from fedgan.config import AlgorithmConfig, TrainConfig
from fedgan.data.store import Store
from fedgan.errors import FedGANError
from fedgan.federation import keys
from fedgan.federation.inprocess import Fault, InProcessGrid, run_in_process
from fedgan.federation.recorder import RoundRecorder
from fedgan.federation.settings import FederationSettings
from fedgan.federation.simulate import federate
from fedgan.federation.split_server import judged_by, run_split
from fedgan.federation.weights import global_weights
from fedgan.training.checkpoint import read_checkpoint
from fedgan.training.data import InMemory
from fedgan.training.loop import DiscriminatorSide, new_state, train_epoch
from fedgan.training.split import Judge, combine, draw_fakes, generator_step, grade_weights, one_judge_each


def test_one_hospital_one_step_per_exchange_is_the_centralised_step() -> None:
    images = torch.rand(12, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.zeros(12, dtype=torch.long)
    train = TrainConfig(batch_size=4, seed=3)
    central = new_state(TINY, train, torch.device("cpu"))
    split = new_state(TINY, train, torch.device("cpu"))
    hospital = Judge(
        DiscriminatorSide(split.discriminator, split.opt_discriminator),
        images,
        labels,
        train,
        split.augment,
        conditional=False,
    )
    for _ in range(2):
        train_epoch(central, InMemory(images, labels), train)
    for _ in range(6):  # 2 epochs of 3 steps
        draw = draw_fakes(split, 4, None, own_step=True)  # one G forward a step, as the centralised loop
        gradient, _ = hospital.judge(draw.fakes, draw.labels)
        generator_step(
            split, draw, combine(4, [(torch.arange(4), torch.ones(4), gradient)], tuple(draw.fakes.shape[1:]))
        )
    assert split.step == central.step == 6
    for name in ("generator", "discriminator"):
        for (key, a), b in zip(
            getattr(central, name).state_dict().items(), getattr(split, name).state_dict().values(), strict=True
        ):
            if a.is_floating_point():
                assert torch.allclose(a, b, atol=1e-5), (name, key)
    for a, b in zip(central.generator_ema.parameters(), split.generator_ema.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_reusing_the_draws_forward_pass_changes_nothing_and_serves_only_its_own_step() -> None:
    """An exchange's first G step backpropagates through the forward pass that made its images:
    the weights, batch-norm statistics and moving average are those of a second forward pass."""
    assert CONDITIONAL.norm == "batch"  # running statistics that a second forward pass would update
    counts = torch.tensor([2.0, 1, 1, 0, 3])  # images per grade, as the hospitals report them
    states = [new_state(CONDITIONAL, LOCAL, torch.device("cpu")) for _ in range(2)]
    for reuse, state in zip((False, True), states, strict=True):
        for _ in range(2):  # exchanges of 2 steps: the first may reuse its pass, the second may not
            draws = [draw_fakes(state, 4, counts, own_step=reuse and j == 0) for j in range(2)]
            for draw in draws:
                generator_step(state, draw, draw.fakes.sign() * 0.1)  # any fixed gradient of the images
    for name in ("generator", "generator_ema"):
        for (key, a), b in zip(
            getattr(states[0], name).state_dict().items(), getattr(states[1], name).state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), (name, key)
    norms = [m for m in states[1].generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert {int(m.num_batches_tracked) for m in norms} == {states[1].step}  # only the G steps' own passes count
    stale = draw_fakes(states[1], 4, counts, own_step=True)
    generator_step(states[1], draw_fakes(states[1], 4, counts), torch.zeros_like(stale.fakes))
    with pytest.raises(RuntimeError, match="G has changed"):
        generator_step(states[1], stale, torch.zeros_like(stale.fakes))


def test_a_grade_held_by_one_hospital_is_judged_by_that_hospital_only() -> None:
    holdings = {"a": [4, 2, 0, 0, 0], "b": [0, 2, 4, 0, 0]}
    labels = torch.tensor([0, 1, 2, 1])
    picks = {h: judged_by(holdings[h], labels, 4) for h in holdings}
    assert picks["a"].tolist() == [0, 1, 3] and picks["b"].tolist() == [1, 2, 3]
    shares = grade_weights(holdings, 5)
    gradients = {"a": torch.full((3, 1, 2, 2), 1.0), "b": torch.full((3, 1, 2, 2), 10.0)}
    total = combine(4, [(picks[h], shares[h][labels[picks[h]]], gradients[h]) for h in holdings], (1, 2, 2))
    # each hospital's gradient is of its mean over the 3 images it judged: x 3/4 gives the batch mean's
    assert torch.allclose(total[0], torch.tensor(0.75))  # grade 0: hospital a alone
    assert torch.allclose(total[2], torch.tensor(7.5))  # grade 2: hospital b alone
    assert torch.allclose(total[1], torch.tensor(0.5 * 0.75 + 0.5 * 7.5))  # grade 1: both, by their images of it


def test_one_judge_each_draws_every_image_one_holder_of_its_grade_by_share() -> None:
    holdings = {"a": [3, 2, 0, 0, 0], "b": [1, 2, 4, 0, 0]}
    labels = torch.tensor([0, 1, 2, 3] * 1000)
    picks = one_judge_each(holdings, labels, len(labels), torch.Generator().manual_seed(0))
    judged = torch.cat(list(picks.values())).sort().values
    assert judged.tolist() == [i for i in range(len(labels)) if labels[i] != 3]  # once each; grade 3: no holder
    assert int((labels[picks["b"]] == 2).sum()) == 1000  # grade 2: its only holder
    assert float((labels[picks["a"]] == 0).sum()) / 1000 == pytest.approx(0.75, abs=0.04)  # a holds 3 of 4
    assert float((labels[picks["a"]] == 1).sum()) / 1000 == pytest.approx(0.5, abs=0.04)
    unconditional = one_judge_each(holdings, None, 4000, torch.Generator().manual_seed(1))
    assert len(unconditional["a"]) + len(unconditional["b"]) == 4000
    assert len(unconditional["a"]) / 4000 == pytest.approx(5 / 12, abs=0.03)  # by images held


def split_run(
    store: Path,
    run: Path,
    rounds: int,
    start_round: int = 0,
    judges: str = "all",
    faults: dict[int, Fault] | None = None,
) -> InProcessGrid:
    settings = FederationSettings(
        store,
        run,
        3,
        "label-split",
        rounds,
        CONDITIONAL,
        LOCAL,
        algorithm=AlgorithmConfig("mdgan", pack=3, judges=judges),
    )
    run.mkdir(exist_ok=True)
    grid = InProcessGrid(3, faults)
    recorder = RoundRecorder(settings, start_round)
    run_split(grid, settings, recorder, global_weights(new_state(CONDITIONAL, LOCAL, torch.device("cpu"))), {})  # type: ignore[arg-type]
    return grid


@pytest.mark.parametrize("judges", ["all", "one"])
def test_split_rounds_keep_discriminators_at_the_hospitals_and_resume_exactly(
    fundus_set: Path, tmp_path: Path, flower_task: None, judges: str
) -> None:
    store = small_store(fundus_set, tmp_path / "store", 16, 0.1)
    straight = split_run(store, tmp_path / "a", rounds=2, judges=judges)
    discriminator_keys = set(new_state(CONDITIONAL, LOCAL, torch.device("cpu")).discriminator.state_dict())
    judged = [r for r in straight.replies if r.content.array_records]
    assert len(judged) == 3 * 2 * 3  # 3 hospitals, 2 rounds, 9 steps a round in exchanges of 3
    images = sum(len(r.content[keys.ARRAYS][keys.GRADIENTS].numpy()) for r in judged)
    # label-split over 3 gives some grade two holders: all of them judge its images, or one
    assert (images == 2 * 9 * LOCAL.batch_size) == (judges == "one") and images >= 2 * 9 * LOCAL.batch_size
    for reply in straight.replies:  # only gradients (and scalar metrics) ever reach the server
        assert list(reply.content.array_records) in ([], [keys.ARRAYS])
        assert list(reply.content.array_records.get(keys.ARRAYS, {keys.GRADIENTS: None})) == [keys.GRADIENTS]
        assert not discriminator_keys & set(reply.content.metric_records[keys.METRICS])
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    hospitals = [x for x in lines if "client" in x]
    assert len(hospitals) == 6 and all(x["bytes_received"] > x["bytes_sent"] > 0 for x in hospitals if x["round"] == 1)
    assert sorted(p.name for p in (tmp_path / "a" / "hospitals" / "hospital-0").iterdir()) == [
        "current.pt",
        "round-0001.pt",
        "round-0002.pt",
    ]

    split_run(store, tmp_path / "b", rounds=1, judges=judges)
    from fedgan.federation import split_client

    split_client.JUDGES.clear()  # a restarted hospital process: its discriminator comes back from its disk
    split_run(store, tmp_path / "b", rounds=2, start_round=1, judges=judges)
    a, b = read_checkpoint(tmp_path / "a"), read_checkpoint(tmp_path / "b")
    assert b["extra"]["round"] == 2
    for net in ("generator", "generator_ema"):
        for key, value in a[net].items():
            if value.is_floating_point():
                assert torch.allclose(value, b[net][key], atol=1e-6), (net, key)
    for hospital in range(3):
        ours, theirs = (
            torch.load(run / "hospitals" / f"hospital-{hospital}" / "current.pt", weights_only=True)
            for run in (tmp_path / "a", tmp_path / "b")
        )
        for key, value in ours["discriminator"].items():
            assert torch.allclose(value.float(), theirs["discriminator"][key].float(), atol=1e-6), key


def test_hospitals_that_change_process_between_exchanges_continue_from_their_disk_exactly(
    fundus_set: Path, tmp_path: Path, flower_task: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one engine worker for every hospital (the simulation's default) a hospital's state stays
    in memory within a round and only round snapshots are written; with several workers
    (`--client-cpus`) the next exchange may land in another process, so every exchange's state
    goes to disk and is read back. Both must train the same models."""
    from fedgan.federation import split_client

    store = small_store(fundus_set, tmp_path / "store", 16, 0.1)
    told: dict[str, list[bool]] = {"memory": [], "disk": []}

    def same_process(message: Message, honest: Callable[[], Message]) -> Message:
        told["memory"].append(keys.IN_MEMORY in message.content[keys.CONFIG])
        return honest()

    def new_process(message: Message, honest: Callable[[], Message]) -> Message:
        del message.content[keys.CONFIG][keys.IN_MEMORY]  # as under --client-cpus, without its thread count
        told["disk"].append(keys.IN_MEMORY in message.content[keys.CONFIG])
        split_client.JUDGES.clear()  # this exchange's process has never served the hospital
        return honest()

    writes: list[Path] = []
    save = split_client.save_judge

    def counted(folder: Path, *args: object, **kwargs: object) -> None:  # the real write, counted
        writes.append(folder)
        save(folder, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(split_client, "save_judge", counted)
    split_client.JUDGES.clear()
    split_run(store, tmp_path / "memory", rounds=2, faults=dict.fromkeys((1, 2, 3), same_process))
    in_memory_writes = len(writes)
    split_run(store, tmp_path / "disk", rounds=2, faults=dict.fromkeys((1, 2, 3), new_process))
    assert len(told["memory"]) == len(told["disk"]) > 3 * 2
    # in memory: each hospital writes after the run's first exchange and at each round's end (3 x 3);
    # on disk: after every exchange (3 hospitals x 2 rounds x 3 exchanges)
    assert in_memory_writes == 9 and len(writes) - in_memory_writes == 18
    assert all(told["memory"]) and not any(told["disk"])
    several_workers = FederationSettings(store, tmp_path, 3, "label-split", 2, CONDITIONAL, LOCAL, client_cpus=1)
    assert keys.IN_MEMORY not in several_workers.round_config()
    a, b = read_checkpoint(tmp_path / "memory"), read_checkpoint(tmp_path / "disk")
    for net in ("generator", "generator_ema"):
        for key, value in a[net].items():
            assert torch.equal(value, b[net][key]), (net, key)
    for hospital in range(3):
        ours, theirs = (
            torch.load(run / "hospitals" / f"hospital-{hospital}" / "current.pt", weights_only=True)
            for run in (tmp_path / "memory", tmp_path / "disk")
        )
        assert ours["position"] == theirs["position"] == [2, 2]
        for key, value in ours["discriminator"].items():
            assert torch.equal(value, theirs["discriminator"][key]), key


def test_a_hospital_whose_worker_dies_in_the_first_round_rejoins_at_the_next(
    fundus_set: Path, tmp_path: Path, flower_task: None
) -> None:
    """In memory, only the run's first exchange and each round's snapshot reach a hospital's disk. A
    hospital whose state is lost mid-round (its engine worker died) fails its next exchange, sits out
    the rest of the round, and rejoins at the next round from the state its first exchange wrote."""
    from fedgan.federation import split_client

    store = small_store(fundus_set, tmp_path / "store", 16, 0.1)

    def worker_dies(message: Message, honest: Callable[[], Message]) -> Message:
        config = message.content[keys.CONFIG]
        if keys.EXCHANGE in config and (int(config[keys.GLOBAL_ROUND]), int(config[keys.EXCHANGE])) == (1, 2):
            for folder in [f for f in split_client.JUDGES if f.name == "hospital-1"]:
                del split_client.JUDGES[folder]
        return honest()

    split_client.JUDGES.clear()
    split_run(store, tmp_path / "run", rounds=2, faults={2: worker_dies})
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rounds = {x["round"]: x for x in lines if x.get("aggregate")}
    assert rounds[1]["failed"] == 1 and rounds[2]["failed"] == 0
    rejoined = [x for x in lines if x.get("client") == 1 and x["round"] == 2]
    assert len(rejoined) == 1 and rejoined[0]["steps"] == 9  # every exchange of round 2 (9 steps, packs of 3)
    state = torch.load(tmp_path / "run" / "hospitals" / "hospital-1" / "current.pt", weights_only=True)
    assert state["position"] == [2, 2]


def test_mdgan_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    from fedgan.federation.settings import SecAggSettings

    with pytest.raises(FedGANError, match="mdgan exchanges per-image gradients"):
        federate(tmp_path, tmp_path / "x", clients=3, secagg=SecAggSettings(), algorithm=AlgorithmConfig("mdgan"))
    with pytest.raises(FedGANError, match="--fraction must be 1"):
        federate(tmp_path, tmp_path / "x", clients=3, fraction=0.5, algorithm=AlgorithmConfig("mdgan"))


def test_balanced_grades_send_every_held_grade_equally_often(
    fundus_set: Path, tmp_path: Path, flower_task: None
) -> None:
    """--balance-grades under mdgan: the server draws its fakes' grades uniformly over the grades
    some hospital holds, not in proportion to the pooled images (40 % grade 0 in this store)."""
    store = small_store(fundus_set, tmp_path / "store", 16, 0.1)
    shares = {}
    for balanced in (False, True):
        sent: list[np.ndarray] = []

        def record(message: Message, honest: Callable[[], Message], sent: list[np.ndarray] = sent) -> Message:
            if message.metadata.message_type.endswith(keys.JUDGE):
                sent.append(message.content[keys.ARRAYS][keys.FAKE_GRADES].numpy())
            return honest()

        train = TrainConfig(epochs=6, batch_size=4, seed=2, balance_grades=balanced)
        settings = FederationSettings(
            store,
            tmp_path / f"run-{balanced}",
            1,
            "label-split",
            1,
            CONDITIONAL,
            train,
            algorithm=AlgorithmConfig("mdgan"),
        )
        settings.run.mkdir()
        run_in_process(
            settings, global_weights(new_state(CONDITIONAL, train, torch.device("cpu"))), 0, faults={1: record}
        )
        grades = np.concatenate(sent)  # one hospital holding every grade judges every fake once
        shares[balanced] = np.bincount(grades, minlength=5) / len(grades)
        assert len(grades) == 6 * (len(Store(store).labels("train")) // 4) * 4
    real = np.bincount(Store(store).labels("train"), minlength=5) / len(Store(store).labels("train"))
    assert np.abs(shares[False] - real).max() < 0.1  # in proportion to the images...
    assert np.abs(shares[True] - 0.2).max() < 0.08  # ...or every grade alike
    assert shares[True][0] < real[0] - 0.1


def test_a_hospital_left_out_mid_round_rejoins_and_oversized_gradients_are_scaled_down(
    fundus_set: Path, tmp_path: Path, flower_task: None
) -> None:
    """Hospital 1 misses an exchange of round 1 (left out for the rest of it) and judges again in
    round 2, from the last exchange it judged. Hospital 2 answers with 1e6 times its gradients:
    they are scaled down to 10x the median every exchange, and it stays in the run."""
    store = small_store(fundus_set, tmp_path / "store", 16, 0.1)

    def silent_once(message: Message, honest: Callable[[], Message]) -> Message | None:
        config = message.content[keys.CONFIG]
        if message.metadata.message_type.endswith(keys.JUDGE) and (
            int(config[keys.GLOBAL_ROUND]),
            int(config[keys.EXCHANGE]),
        ) == (1, 2):
            honest()  # it judged, but its answer never arrived
            return None
        return honest()

    def loud(message: Message, honest: Callable[[], Message]) -> Message:
        reply = honest()
        if message.metadata.message_type.endswith(keys.JUDGE):
            louder = reply.content[keys.ARRAYS][keys.GRADIENTS].numpy() * np.float32(1e6)
            reply.content[keys.ARRAYS] = ArrayRecord({keys.GRADIENTS: Array(louder)})
        return reply

    settings = FederationSettings(
        store, tmp_path / "run", 3, "iid", 2, CONDITIONAL, LOCAL, algorithm=AlgorithmConfig("mdgan", pack=1)
    )
    settings.run.mkdir()
    run_in_process(
        settings,
        global_weights(new_state(CONDITIONAL, LOCAL, torch.device("cpu"))),
        0,
        faults={2: silent_once, 3: loud},
    )
    lines = [json.loads(x) for x in (settings.run / "metrics.jsonl").read_text().splitlines()]
    hospitals = {(x["round"], x["client"]): x for x in lines if "client" in x}
    assert sorted(hospitals) == [(1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]  # hospital 1 back in round 2
    assert [x["failed"] for x in lines if "failed" in x and not x.get("aggregate")] == [
        "no reply within the round timeout (3600 s)"
    ]
    steps = len(Store(store).labels("train")) // LOCAL.batch_size  # one exchange per step
    assert hospitals[(1, 2)]["gradient_clips"] == hospitals[(2, 2)]["gradient_clips"] == steps
    assert all("gradient_clips" not in hospitals[key] for key in ((1, 0), (2, 0), (2, 1)))
    generator = read_checkpoint(settings.run)["generator"]
    assert all(bool(torch.isfinite(v.float()).all()) for v in generator.values())


def test_a_hospital_continues_from_an_earlier_round_but_never_from_ahead_of_the_server(tmp_path: Path) -> None:
    from fedgan.federation.split_client import load_judge, new_judge, save_judge

    images, labels = torch.rand(8, 1, 16, 16) * 2 - 1, torch.arange(8) % 5
    start = new_state(CONDITIONAL, LOCAL, torch.device("cpu")).discriminator.state_dict()
    saved = new_judge(CONDITIONAL, LOCAL, images, labels, start)
    saved.steps = 7
    save_judge(tmp_path, saved, (3, 2), keep=2, snapshot=False)
    behind = new_judge(CONDITIONAL, LOCAL, images, labels, None)
    load_judge(tmp_path / "current.pt", behind, 5, 0)  # missed round 4: rejoins with what it had
    assert behind.steps == 7
    for position in ((2, 0), (3, 1), (3, 4)):  # the server resumed from before it, or skipped an exchange
        with pytest.raises(ValueError, match=r"at round/exchange \(3, 2\)"):
            load_judge(tmp_path / "current.pt", new_judge(CONDITIONAL, LOCAL, images, labels, None), *position)
