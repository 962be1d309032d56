"""A small CNN that grades diabetic retinopathy from preprocessed images.

Used to check that the grade is visible in our data at all (the procedural generator's
benchmark and tests), and the seed of the fixed evaluator that scores generated images later.
It is deliberately small so it trains in minutes on a CPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from fedgan.config import NUM_GRADES


class GradeNet(nn.Module):
    """Four conv blocks (stride-2 downsampling) and global average pooling to `num_classes` logits."""

    def __init__(self, in_channels: int = 1, width: int = 16, num_classes: int = NUM_GRADES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for scale in (1, 2, 4, 8):
            layers += [
                nn.Conv2d(channels, width * scale, 3, stride=2, padding=1, bias=False),  # halves H and W
                nn.BatchNorm2d(width * scale),
                nn.ReLU(),
                nn.Conv2d(width * scale, width * scale, 3, padding=1, bias=False),
                nn.BatchNorm2d(width * scale),
                nn.ReLU(),
            ]
            channels = width * scale
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (N, 8*width)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@dataclasses.dataclass(frozen=True)
class GraderTraining:
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 2e-3
    seed: int = 0


def train_grader(
    images: np.ndarray, labels: np.ndarray, config: GraderTraining = GraderTraining(), device: str = "cpu"
) -> GradeNet:
    """Train with class-balanced cross-entropy (screening data is mostly grade 0) and random flips.
    The caller's global random stream is left as it was: the in-training probe trains a grader
    mid-run, and reseeding the run's stream there would make a resumed run differ."""
    with torch.random.fork_rng():
        return _train_grader(images, labels, config, device)


def saved_grader(in_channels: int, state: dict[str, torch.Tensor]) -> GradeNet:
    """A trained grader from its saved weights, in eval mode. Built inside `fork_rng` because a
    module's constructor draws initial weights from the global stream: a grader loaded from the
    cache mid-run must leave the run's stream as it is, as one trained there does (`train_grader`),
    or a resumed run, which finds the grader cached, would differ from an uninterrupted one."""
    with torch.random.fork_rng():
        model = GradeNet(in_channels=in_channels)
    model.load_state_dict(state)
    return model.eval()


def _train_grader(images: np.ndarray, labels: np.ndarray, config: GraderTraining, device: str) -> GradeNet:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = GradeNet(in_channels=images.shape[1]).to(device)
    counts = np.bincount(labels, minlength=NUM_GRADES).astype(np.float32)
    weights = torch.tensor(
        np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / NUM_GRADES, 0.0), dtype=torch.float32
    )
    loss_fn = nn.CrossEntropyLoss(weight=weights.sqrt().to(device))
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    batch_size = min(config.batch_size, len(images))  # a set smaller than one batch still trains
    steps = config.epochs * (len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate, total_steps=steps)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    model.train()
    step = 0
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            batch = order[start : start + batch_size]
            x, y = x_all[batch].to(device), y_all[batch].to(device)
            if torch.rand(1, generator=generator).item() < 0.5:
                x = x.flip(-1)  # left and right eyes are mirror images
            loss = loss_fn(model(x), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if step < steps - 1:
                schedule.step()
            step += 1
    return model.eval()


@torch.no_grad()
def predict_grades(model: GradeNet, images: np.ndarray, batch_size: int = 128, device: str = "cpu") -> np.ndarray:
    model.eval()
    outputs = [
        model(torch.from_numpy(images[i : i + batch_size]).to(device)).argmax(1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(outputs).numpy()
