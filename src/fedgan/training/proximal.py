"""FedProx's proximal term (Li et al. 2020) as an optimiser hook, so the training loop needs no branch.

Adding mu/2 |w - w_start|^2 to a loss adds mu (w - w_start) to its gradient. The hook adds
that to every parameter's gradient just before the optimiser steps, which is the same update,
also under DP-SGD (Opacus' optimiser calls the wrapped one's `step`, after clipping and noise:
the term depends only on the global weights, never on a patient's image).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.hooks import RemovableHandle


def add_proximal_term(optimizer: torch.optim.Optimizer, mu: float) -> RemovableHandle:
    """Pull the optimiser's parameters towards their values now (the round's global weights)."""
    anchors = {p: p.detach().clone() for group in optimizer.param_groups for p in group["params"]}

    def pull(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for p, anchor in anchors.items():
            if p.grad is not None:
                p.grad.add_(p.detach() - anchor, alpha=mu)

    return optimizer.register_step_pre_hook(pull)
