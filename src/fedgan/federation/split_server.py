"""`mdgan`: the conditional generator at the server, one discriminator per hospital.

Why: averaging adversaries that each saw one or two grades is FedAvg-GAN's known failure under
label skew, and a weight average moves the model by one hospital's worth of steps per round.
Here the generator takes every step itself (as many as centralised training on the pooled
images), and every image it makes is judged by the discriminators of the hospitals holding that
image's grade, weighted by how many images of it each holds (UA-GAN's per-grade weighting), or,
with `judges = "one"`, by one of them drawn with that weight from the server's noise stream (the
same expected gradient; each image costs one discriminator step, not one per holder).

A round is `epochs` passes over the pooled training images in generator steps of `batch-size`
images, in exchanges of `pack` steps. Per exchange and hospital, one message each way: the
images of its grades (float32) and back the gradients of the generator's loss with respect to
them. No discriminator weight ever reaches the server (the first exchange of a run sends each
hospital the starting discriminator). metrics.jsonl reports each hospital's bytes per round.

Every reply is checked for shape and finiteness (a failing hospital is left out for the rest of
the round and rejoins at the next). A reply whose per-image gradient norm exceeds `NORM_FACTOR`
times the exchange's median is scaled down to that bound rather than left out: under label skew
an honest hospital's discriminator, trained on a handful of images, answered with 16 times the
median (the demo store over 10 hospitals), and leaving it out would leave its grades unjudged.
The bound still limits how hard a hostile hospital can push the generator.

SecAgg+ does not apply (the server needs each image's gradient, not a sum of model updates),
nor does client-level DP (there is no model update to clip). The server's checkpoint holds G, its
moving average and optimiser, and the *starting* discriminator; the trained ones stay at the
hospitals (`fedgan.federation.split_client`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedgan.config import NUM_GRADES
from fedgan.federation import keys
from fedgan.federation.failures import RoundFailed, short_reason
from fedgan.federation.nodes import connected_nodes
from fedgan.federation.screening import NORM_FACTOR, reference_median, weight_problem
from fedgan.federation.weights import global_weights, load_global_weights
from fedgan.training.checkpoint import read_checkpoint, restore_state
from fedgan.training.split import combine, draw_fakes, generator_step, grade_weights, one_judge_each

if TYPE_CHECKING:
    from fedgan.federation.recorder import RoundRecorder
    from fedgan.federation.settings import FederationSettings

log = logging.getLogger(__name__)


def hospital_grades(grid: Grid, nodes: list[int], settings: FederationSettings) -> dict[int, dict[str, Any]]:
    """Each node's partition id, images and images per grade."""
    config = settings.round_config()
    queries = [
        Message(RecordDict({keys.CONFIG: config}), dst_node_id=node, message_type=f"{MessageType.QUERY}.{keys.GRADES}")
        for node in nodes
    ]
    replies = list(grid.send_and_receive(queries, timeout=settings.round_timeout))
    failed = [short_reason(r.error.reason) for r in replies if r.has_error()]
    if failed:
        raise RoundFailed(f"a hospital could not report its grades: {failed[0]}")
    hospitals = {r.metadata.src_node_id: dict(r.content[keys.METRICS]) for r in replies}
    for (
        node,
        info,
    ) in hospitals.items():  # the per-grade weights come from these counts: they must add up to the server's
        grades = [int(info.get(keys.GRADE_COUNT.format(g), -1)) for g in range(NUM_GRADES)]
        problem = weight_problem(info, "examples", settings.images)
        if problem is None and (min(grades) < 0 or sum(grades) != int(info[keys.NUM_EXAMPLES])):
            problem = f"grade counts {grades} do not add up to its {info[keys.NUM_EXAMPLES]} images"
        if problem is not None:
            raise RoundFailed(f"hospital on node {node}: {problem}")
    return hospitals


class Tally:
    """One hospital's figures over a round, in the shape `RoundRecorder.clients` writes."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.d_losses: list[float] = []
        self.g_losses: list[float] = []
        self.steps = 0
        self.seconds = 0.0
        self.received = 0  # by the hospital
        self.sent = 0
        self.clips = 0  # exchanges whose gradients were scaled down to the norm bound

    def metrics(self) -> dict[str, Any]:
        return {
            **self.info,
            keys.STEPS: self.steps,
            keys.SECONDS: self.seconds,
            keys.D_LOSS: float(np.mean(self.d_losses)),
            keys.G_LOSS: float(np.mean(self.g_losses)),
            keys.BYTES_RECEIVED: self.received,
            keys.BYTES_SENT: self.sent,
            keys.GRADIENT_CLIPS: self.clips,
        }


def run_split(
    grid: Grid,
    settings: FederationSettings,
    recorder: RoundRecorder,
    initial: OrderedDict[str, torch.Tensor],
    resumed: dict[str, Any],
) -> None:
    """Rounds start_round+1 .. settings.rounds of mdgan."""
    if recorder.start_round:  # the generator's optimiser and noise stream continue exactly
        recorder.state, _ = restore_state(read_checkpoint(recorder.folder.latest), torch.device("cpu"))
    else:
        load_global_weights(recorder.state, dict(initial))
    state, train = recorder.state, settings.train_config
    nodes = connected_nodes(grid, settings.clients, settings.round_timeout)
    hospitals = hospital_grades(grid, nodes, settings)
    counts = {
        node: [int(info[keys.GRADE_COUNT.format(g)]) for g in range(NUM_GRADES)] for node, info in hospitals.items()
    }
    images = sum(int(info[keys.NUM_EXAMPLES]) for info in hospitals.values())
    conditional = state.model_config.conditional
    pooled = torch.tensor(np.sum(list(counts.values()), axis=0), dtype=torch.float64) if conditional else None
    if pooled is not None and train.balance_grades:  # every grade some hospital holds, equally often
        pooled = (pooled > 0).double()
    batch = min(train.batch_size, images)
    one_judge = settings.algorithm.judges == "one"
    steps = max(1, train.epochs * (images // batch))
    starting = {
        f"{keys.DISCRIMINATOR_PREFIX}{k}": Array(v.detach().cpu().numpy())
        for k, v in state.discriminator.state_dict().items()
    }
    log.info(
        "mdgan: %d hospitals, %d images, %d generator steps per round in exchanges of %d",
        len(nodes),
        images,
        steps,
        settings.algorithm.pack,
    )
    base = dict(settings.round_config())  # built once: the model and training configs travel as JSON in every exchange
    recorder.end_round(0, {})
    previous_median: float | None = (
        None  # per-image gradient norm of the last exchange: the reference for a bound when few answer
    )
    for server_round in range(1, settings.rounds - recorder.start_round + 1):
        global_round = recorder.start_round + server_round
        tallies = {node: Tally(hospitals[node]) for node in nodes}
        failed: list[tuple[int | None, str]] = []
        for exchange, first in enumerate(range(0, steps, settings.algorithm.pack)):
            draws = [
                draw_fakes(state, batch, pooled, own_step=j == 0)
                for j in range(min(settings.algorithm.pack, steps - first))
            ]
            config = ConfigRecord({**base, keys.GLOBAL_ROUND: global_round, keys.EXCHANGE: exchange})
            config[keys.LAST_EXCHANGE] = first + settings.algorithm.pack >= steps
            if one_judge:
                drawn = [one_judge_each({n: counts[n] for n in tallies}, d.labels, batch, state.noise) for d in draws]
                chosen = {node: [picks[node] for picks in drawn] for node in tallies}
            else:
                chosen = {node: [judged_by(counts[node], d.labels, batch) for d in draws] for node in tallies}
            messages = []
            for node, picks in chosen.items():
                arrays = {
                    keys.FAKES: Array(torch.cat([d.fakes[p] for d, p in zip(draws, picks, strict=True)]).numpy()),
                    keys.FAKE_GRADES: Array(
                        np.concatenate(
                            [
                                (d.labels[p].numpy() if d.labels is not None else np.zeros(len(p), np.int64))
                                for d, p in zip(draws, picks, strict=True)
                            ]
                        )
                    ),
                    keys.STEP_INDEX: Array(np.concatenate([np.full(len(p), j, np.int64) for j, p in enumerate(picks)])),
                }
                if global_round == 1 and exchange == 0:
                    arrays |= starting
                tallies[node].received += sum(a.numpy().nbytes for a in arrays.values())
                messages.append(
                    Message(
                        RecordDict({keys.ARRAYS: ArrayRecord(arrays), keys.CONFIG: config}),
                        dst_node_id=node,
                        message_type=f"{MessageType.TRAIN}.{keys.JUDGE}",
                    )
                )
            replies = list(grid.send_and_receive(messages, timeout=settings.round_timeout))
            answered = {}
            for reply in replies:
                node = reply.metadata.src_node_id
                if reply.has_error():
                    failed.append((node, short_reason(reply.error.reason)))
                    tallies.pop(node, None)
                    continue
                tally, metrics = tallies[node], reply.content[keys.METRICS]
                gradients = torch.from_numpy(reply.content[keys.ARRAYS][keys.GRADIENTS].numpy())
                expected = (sum(len(p) for p in chosen[node]), *draws[0].fakes.shape[1:])
                if tuple(gradients.shape) != expected or not torch.isfinite(gradients).all():
                    failed.append(
                        (
                            node,
                            f"rejected: gradients of shape {tuple(gradients.shape)} (expected {expected}) or not "
                            "finite",
                        )
                    )
                    tallies.pop(node)
                    continue
                tally.sent += gradients.numpy().nbytes
                tally.steps += int(metrics[keys.STEPS])
                tally.seconds += float(metrics[keys.SECONDS])
                tally.d_losses.append(float(metrics[keys.D_LOSS]))
                tally.g_losses.append(float(metrics[keys.G_LOSS]))
                answered[node] = gradients
            for node in [node for node in tallies if node not in answered]:
                failed.append((node, f"no reply within the round timeout ({settings.round_timeout:g} s)"))
                tallies.pop(node)
            norms = {node: float(g.norm()) / max(len(g), 1) ** 0.5 for node, g in answered.items()}  # per image
            median = reference_median(norms, previous_median)
            for node, norm in norms.items():
                if median is not None and norm > NORM_FACTOR * median:  # scaled down, not left out: see module doc
                    answered[node] = answered[node] * (NORM_FACTOR * median / norm)
                    tallies[node].clips += 1
            previous_median = median  # reference_median already falls back to the previous one
            if len(tallies) < settings.min_successful:
                raise RoundFailed(
                    f"round {global_round}: only {len(tallies)} hospital(s) answered, {settings.min_successful} "
                    "required"
                )
            shares = grade_weights({node: counts[node] for node in answered}, NUM_GRADES) if conditional else None
            total_images = sum(int(hospitals[node][keys.NUM_EXAMPLES]) for node in answered)
            offsets = dict.fromkeys(answered, 0)
            for j, draw in enumerate(draws):
                answers = []
                for node, gradients in answered.items():
                    pick = chosen[node][j]
                    if one_judge:  # its only judge: the draw did the weighting
                        weight = torch.ones(len(pick))
                    elif shares is not None:
                        weight = shares[node][draw.labels[pick]]
                    else:
                        weight = torch.full((len(pick),), int(hospitals[node][keys.NUM_EXAMPLES]) / total_images)
                    answers.append((pick, weight, gradients[offsets[node] : offsets[node] + len(pick)]))
                    offsets[node] += len(pick)
                generator_step(state, draw, combine(batch, answers, tuple(draw.fakes.shape[1:])))
        recorder.clients(global_round, [(node, t.metrics()) for node, t in tallies.items()], failed, 0, 0)
        recorder.end_round(server_round, global_weights(state))


def judged_by(holding: list[int], labels: torch.Tensor | None, count: int) -> torch.Tensor:
    """Indices of a batch's images that a hospital judges: those of the grades it holds (all of
    them for an unconditional model)."""
    if labels is None:
        return torch.arange(count)
    held = torch.tensor([g for g, n in enumerate(holding) if n > 0], dtype=labels.dtype)
    return torch.isin(labels, held).nonzero().flatten()
