"""Reading the torch files FedGAN writes (checkpoints, releases, evaluator caches, hospital state).

Every file is read with `weights_only=True`, so a file from elsewhere cannot run code when it
is loaded. How a broken file fails to load depends on how it is broken: a truncated archive
raises one exception, a text file or an image passed by mistake others (the unpickler's
`UnpicklingError`, with a paragraph about PyTorch 2.6's defaults that says nothing about the
file, or a bare `KeyError` for some bytes). Loading is parsing an untrusted file, so every
failure of it becomes one line naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fedgan.errors import FedGANError

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6


def load_torch_file(path: Path, what: str) -> Any:
    """`torch.load(path)` on the CPU, tensors and plain containers only; an unreadable file raises
    `FedGANError("PATH: not a readable WHAT, truncated or corrupt (why)")`, a missing one
    `FedGANError("PATH: WHAT not found")`."""
    if not Path(path).is_file():
        raise FedGANError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - see the module's docstring
        try:
            with open(path, "rb") as file:
                foreign = file.read(len(ZIP_MAGIC)) != ZIP_MAGIC
        except OSError:  # a disk error or no permission: the exception says so
            foreign = False
        why = "not a torch file" if foreign else (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise FedGANError(f"{path}: not a readable {what}, truncated or corrupt ({why})") from None
