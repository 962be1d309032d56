"""Who holds which image: the held-out split and the partitions across hospitals.

All functions are pure functions of (labels, number of clients, seed) that return index arrays:
every index lands in exactly one part, no part is empty (a clear error says when that is
impossible), and the same inputs always give the same result.

- `label_split` is the paper's non-IID setting: hospitals specialise, each holding only a few
  grades. Grades and hospitals are laid side by side on [0, 1) as equal intervals; a hospital
  holds the grades whose interval overlaps its own, and a grade's images are shared among its
  hospitals in proportion to the overlap. With 5 hospitals each holds exactly one grade; with 3,
  one or three grades each; with 10, each grade is split between two hospitals.
- `dirichlet_split` draws each grade's share per hospital from Dirichlet(alpha): small alpha is
  very skewed, large alpha approaches IID.
- `iid_split` shuffles and deals evenly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgan.config import PARTITIONS
from fedgan.errors import FedGANError


def _check(labels: np.ndarray, clients: int) -> None:
    if clients < 1:
        raise FedGANError(f"number of clients must be at least 1, got {clients}")
    if len(labels) < clients:
        raise FedGANError(f"cannot give {clients} clients at least one image each: only {len(labels)} images")


def stratified_holdout(labels: Sequence[int] | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out items: `fraction` of each grade (rounded), chosen by `seed`."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), bool)
    if fraction <= 0:
        return mask
    rng = np.random.default_rng([seed, 1])
    for grade in np.unique(labels):
        members = np.flatnonzero(labels == grade)
        take = int(round(len(members) * fraction))
        mask[rng.permutation(members)[:take]] = True
    return mask


def label_split(labels: Sequence[int] | np.ndarray, clients: int, seed: int) -> list[np.ndarray]:
    """The paper's non-IID split: each grade's images go to the few hospitals that hold that grade."""
    labels = np.asarray(labels)
    _check(labels, clients)
    if (labels < 0).any():
        raise FedGANError(
            "label-split needs graded images; this store is unlabelled (use --partition iid or dirichlet)"
        )
    grades = np.unique(labels)
    rng = np.random.default_rng([seed, 2])
    parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
    held: list[list[int]] = [[] for _ in range(clients)]
    for g_index, grade in enumerate(grades):
        lo, hi = g_index / len(grades), (g_index + 1) / len(grades)
        holders = [c for c in range(clients) if min(hi, (c + 1) / clients) - max(lo, c / clients) > 1e-12]
        overlap = np.array([min(hi, (c + 1) / clients) - max(lo, c / clients) for c in holders])
        members = rng.permutation(np.flatnonzero(labels == grade))
        cuts = np.round(np.cumsum(overlap / overlap.sum())[:-1] * len(members)).astype(int)
        for client, share in zip(holders, np.split(members, cuts), strict=True):
            parts[client].append(share)
            held[client].append(int(grade))
    result = [np.sort(np.concatenate(p)) for p in parts]
    for client, part in enumerate(result):
        if part.size == 0:
            raise FedGANError(
                f"label-split leaves client {client} empty: its grade(s) {held[client]} have too few images "
                f"for {clients} clients (use fewer clients, or --partition dirichlet/iid)"
            )
    return result


def dirichlet_split(
    labels: Sequence[int] | np.ndarray, clients: int, seed: int, alpha: float = 0.5, max_tries: int = 100
) -> list[np.ndarray]:
    """Per grade, hospital shares ~ Dirichlet(alpha); redrawn (bounded) until no hospital is empty."""
    labels = np.asarray(labels)
    _check(labels, clients)
    if alpha <= 0:
        raise FedGANError(f"dirichlet alpha must be > 0, got {alpha}")
    rng = np.random.default_rng([seed, 3])
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for grade in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == grade))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = np.round(np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, share in enumerate(np.split(members, cuts)):
                parts[client].append(share)
        result = [np.sort(np.concatenate(p)) for p in parts]
        if all(part.size for part in result):
            return result
    raise FedGANError(
        f"dirichlet(alpha={alpha}) left a client empty in {max_tries} draws for {len(labels)} images "
        f"and {clients} clients (raise alpha or use fewer clients)"
    )


def iid_split(labels: Sequence[int] | np.ndarray, clients: int, seed: int) -> list[np.ndarray]:
    labels = np.asarray(labels)
    _check(labels, clients)
    order = np.random.default_rng([seed, 4]).permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, clients)]


def partition(
    labels: Sequence[int] | np.ndarray, clients: int, kind: str, seed: int, alpha: float = 0.5
) -> list[np.ndarray]:
    """Dispatch by name (the `--partition` choices)."""
    if kind == "label-split":
        return label_split(labels, clients, seed)
    if kind == "dirichlet":
        return dirichlet_split(labels, clients, seed, alpha)
    if kind == "iid":
        return iid_split(labels, clients, seed)
    raise FedGANError(f"unknown partition {kind!r}; choose one of {', '.join(PARTITIONS)}")


def partition_table(labels: Sequence[int] | np.ndarray, parts: list[np.ndarray]) -> str:
    """Images per grade per client as a printable table."""
    labels = np.asarray(labels)
    grades = [int(g) for g in np.unique(labels)]
    names = ["unlab." if g < 0 else f"grade {g}" for g in grades]
    header = f"{'client':>6} " + " ".join(f"{n:>8}" for n in names) + f" {'total':>7}"
    lines = [header, "-" * len(header)]
    for client, part in enumerate(parts):
        counts = [int((labels[part] == g).sum()) for g in grades]
        lines.append(f"{client:>6} " + " ".join(f"{c:>8}" for c in counts) + f" {part.size:>7}")
    totals = [int((labels == g).sum()) for g in grades]
    lines.append(f"{'all':>6} " + " ".join(f"{c:>8}" for c in totals) + f" {len(labels):>7}")
    return "\n".join(lines)
