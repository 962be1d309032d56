"""Choosing where to train and whether to use mixed precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fedgan.errors import FedGANError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when a GPU is visible, else CPU; asking for CUDA without one is an error."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise FedGANError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FedGANError("--device cuda was asked for but no CUDA GPU is visible to PyTorch")
    return torch.device(name)


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bfloat16 autocast on CUDA (no loss scaling needed); full precision on the CPU.

    On the CPU bfloat16 is slower than float32 on most processors, so we do not use it there.
    """
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield
