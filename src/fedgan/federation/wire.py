"""How a hospital's trained model travels back to the server (`--wire`).

`fp32` sends the trained weights as they are. `fp16` sends the *update* (trained minus the
round's starting model) in half precision, and the server adds it back to the starting model it
sent, in float32. Why the update and not the weights: a weight rounded to fp16 keeps about three
significant digits, which is coarser than one round's change of many weights, while the update
is small, so its relative rounding error of 2^-11 is an absolute error far below the change
itself. Half the bytes of every reply; the server's broadcast stays float32.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

FP32, FP16 = "fp32", "fp16"


def encode(
    trained: Mapping[str, torch.Tensor], start: Mapping[str, torch.Tensor], wire: str
) -> dict[str, torch.Tensor]:
    """What a hospital sends: its weights (fp32), or its update in float16."""
    if wire == FP32:
        return dict(trained)
    return {k: (v.float() - start[k].float()).to(torch.float16) for k, v in trained.items()}


def decode(arrays: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray], wire: str) -> dict[str, np.ndarray]:
    """The hospital's weights in float32, from what it sent and the model the server sent it."""
    if wire == FP32:
        return dict(arrays)
    return {k: (sent[k].astype(np.float32) + v.astype(np.float32)) for k, v in arrays.items()}
