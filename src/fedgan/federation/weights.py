"""Both networks (and the generator's moving average) as one flat set of float tensors, the unit
that FedAvg averages.

Keys are prefixed `generator.` / `discriminator.` / `generator_ema.` so the networks can travel
in one ArrayRecord (Flower's aggregation merges records by key). The moving average travels
too: every hospital starts the round from the same average and updates it linearly, so the
mean of their averages is exactly the moving average of the mean trajectory. Batch-norm running means and
variances are averaged with the weights, as the paper did: the global model then carries
statistics of all hospitals' data, which is what its generator is evaluated with. The integer
`num_batches_tracked` counters are not sent: they are unused with a fixed momentum, and integer
buffers cannot be averaged (or quantised by secure aggregation) meaningfully.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fedgan.training.loop import TrainingState


def networks(state: TrainingState) -> dict[str, nn.Module]:
    """The modules whose weights the federation averages, by key prefix, in a fixed order."""
    modules = dict(state.networks())
    if state.generator_ema is not None:
        modules["generator_ema"] = state.generator_ema.module
    return modules


def global_weights(state: TrainingState) -> OrderedDict[str, torch.Tensor]:
    """The float tensors of every network in a fixed order (the order SecAgg+'s lists travel in)."""
    flat: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, module in networks(state).items():
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                flat[f"{name}.{key}"] = value.detach().cpu()
    return flat


def load_global_weights(state: TrainingState, flat: dict[str, torch.Tensor]) -> None:
    """Load averaged weights into every network; every float entry must be present."""
    for name, module in networks(state).items():
        current = module.state_dict()
        prefix = f"{name}."
        update = {k[len(prefix) :]: v for k, v in flat.items() if k.startswith(prefix)}
        missing = [k for k, v in current.items() if v.is_floating_point() and k not in update]
        if missing:
            raise ValueError(f"global weights lack {name}.{missing[0]}")
        current.update({k: v.to(current[k].dtype) for k, v in update.items()})
        module.load_state_dict(current)
