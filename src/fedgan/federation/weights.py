"""Both networks as one flat set of float tensors, the unit that FedAvg averages.

Keys are prefixed `generator.` / `discriminator.` so the two networks can travel in one
ArrayRecord (Flower's aggregation merges records by key). Batch-norm running means and
variances are averaged with the weights, as the paper did: the global model then carries
statistics of all hospitals' data, which is what its generator is evaluated with. The integer
`num_batches_tracked` counters are not sent: they are unused with a fixed momentum, and integer
buffers cannot be averaged (or quantised by secure aggregation) meaningfully.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from fedgan.models.dcgan import Discriminator, Generator
from fedgan.training.loop import GANState

NETWORKS = ("generator", "discriminator")


def flat_weights(generator: Generator, discriminator: Discriminator) -> OrderedDict[str, torch.Tensor]:
    """The float tensors of both networks in a fixed order (the order SecAgg+'s lists travel in)."""
    flat: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, module in zip(NETWORKS, (generator, discriminator), strict=True):
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                flat[f"{name}.{key}"] = value.detach().cpu()
    return flat


def global_weights(state: GANState) -> OrderedDict[str, torch.Tensor]:
    return flat_weights(state.generator, state.discriminator)


def load_global_weights(state: GANState, flat: dict[str, torch.Tensor]) -> None:
    """Load averaged weights into both networks; every float entry must be present."""
    for name in NETWORKS:
        module = getattr(state, name)
        current = module.state_dict()
        prefix = f"{name}."
        update = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
        missing = [k for k, v in current.items() if v.is_floating_point() and k not in update]
        if missing:
            raise ValueError(f"global weights lack {name}.{missing[0]}")
        current.update({k: v.to(current[k].dtype) for k, v in update.items()})
        module.load_state_dict(current)
