"""The standard FID, when the user supplies the Inception weights (FedGAN never downloads them).

Published FIDs use the TensorFlow Inception-v3 of Heusel et al. FedGAN accepts it as the
TorchScript port that NVIDIA distributes with its GAN metrics (`inception-2015-12-05.pt`, the
same network torch-fidelity and clean-fid reproduce): called as `model(x, return_features=True)`
on RGB images in the 0-255 range, any size (it resizes to 299 px itself), it returns the 2048
pool features. Grayscale medical images are repeated over the three channels, as is usual.
Numbers from it sit beside published FIDs only as far as a 64-128 px grayscale fundus is like
ImageNet; the domain evaluator's metrics stay the primary ones.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from fedgan.errors import FedGANError


def load_inception(path: Path) -> tuple[torch.jit.ScriptModule, str]:
    """The TorchScript detector and its file's sha256; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FedGANError(f"{path}: Inception weights file not found (FedGAN does not download it)")
    data = path.read_bytes()
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format the reference weights ship in
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(path, map_location="cpu").eval()
    except (RuntimeError, ValueError) as exc:
        raise FedGANError(f"{path}: not a TorchScript Inception file ({str(exc).splitlines()[0][:100]})") from None
    return model, hashlib.sha256(data).hexdigest()


@torch.no_grad()
def inception_features(model: torch.jit.ScriptModule, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Pool features of images in [-1, 1] (N x C x H x W, C = 1 or 3)."""
    out = []
    for start in range(0, len(images), batch_size):
        x = (torch.from_numpy(images[start : start + batch_size]) + 1) * 127.5
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out.append(model(x.clamp(0, 255), return_features=True).double().numpy())
    return np.concatenate(out)
