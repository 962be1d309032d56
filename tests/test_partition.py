"""Partitions are pure, complete, disjoint, non-empty, and label-split makes hospitals specialise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgan.data.partition import label_split, partition, partition_table, stratified_holdout
from fedgan.errors import FedGANError

#: Label vectors where every grade has at least 10 images, so every size up to 10 is feasible.
labels_strategy = st.lists(st.integers(10, 60), min_size=5, max_size=5).map(
    lambda counts: np.repeat(np.arange(5), counts)
)


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))
    assert all(len(p) > 0 for p in parts)


@settings(max_examples=60, deadline=None)
@given(
    labels=labels_strategy,
    clients=st.sampled_from([1, 2, 3, 5, 7, 10]),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["label-split", "dirichlet", "iid"]),
)
def test_every_image_in_exactly_one_nonempty_partition(labels: np.ndarray, clients: int, seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(labels)
    parts = partition(shuffled, clients, kind, seed, alpha=1.0)
    assert len(parts) == clients
    assert_exact_cover(parts, len(shuffled))
    again = partition(shuffled, clients, kind, seed, alpha=1.0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@settings(max_examples=40, deadline=None)
@given(labels=labels_strategy, clients=st.sampled_from([3, 5, 7, 10]), seed=st.integers(0, 1000))
def test_label_split_hospitals_specialise(labels: np.ndarray, clients: int, seed: int) -> None:
    parts = label_split(labels, clients, seed)
    grades_held = [set(np.unique(labels[p]).tolist()) for p in parts]
    assert all(len(g) <= 3 for g in grades_held)  # a few grades each, never all five
    holders = [sum(grade in g for g in grades_held) for grade in range(5)]
    assert all(1 <= h <= 3 for h in holders)  # each grade held by a small set of hospitals


def test_label_split_with_five_hospitals_is_one_grade_each() -> None:
    labels = np.repeat(np.arange(5), [50, 10, 20, 5, 5])
    parts = label_split(labels, 5, seed=0)
    assert [np.unique(labels[p]).tolist() for p in parts] == [[0], [1], [2], [3], [4]]


def test_impossible_partitions_say_why() -> None:
    labels = np.repeat(np.arange(5), [50, 10, 10, 10, 1])  # one grade-4 image for two hospitals
    with pytest.raises(FedGANError, match=r"client \d+ empty.*grade\(s\) \[4\]"):
        label_split(labels, 10, seed=0)
    with pytest.raises(FedGANError, match="only 3 images"):
        partition(np.array([0, 1, 2]), 5, "iid", 0)
    with pytest.raises(FedGANError, match="unlabelled"):
        label_split(np.full(20, -1), 3, 0)
    with pytest.raises(FedGANError, match="unknown partition"):
        partition(np.zeros(4, int), 2, "round-robin", 0)


def test_dirichlet_small_alpha_is_more_skewed_than_large() -> None:
    labels = np.repeat(np.arange(5), 200)

    def skew(alpha: float) -> float:
        parts = partition(labels, 5, "dirichlet", seed=3, alpha=alpha)
        shares = np.array([[np.mean(labels[p] == g) for g in range(5)] for p in parts])
        return float(shares.max(axis=1).mean())

    assert skew(0.1) > skew(100.0) + 0.3


def test_stratified_holdout_fraction_per_grade() -> None:
    labels = np.repeat(np.arange(5), [100, 20, 40, 10, 5])
    mask = stratified_holdout(labels, 0.2, seed=1)
    assert [int(mask[labels == g].sum()) for g in range(5)] == [20, 4, 8, 2, 1]
    assert np.array_equal(mask, stratified_holdout(labels, 0.2, seed=1))
    assert not np.array_equal(mask, stratified_holdout(labels, 0.2, seed=2))


def test_partition_table_counts() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    table = partition_table(labels, [np.array([0, 1, 2]), np.array([3, 4, 5])])
    lines = table.splitlines()
    assert lines[2].split() == ["0", "2", "1", "0", "3"]
    assert lines[3].split() == ["1", "0", "0", "3", "3"]
    assert lines[4].split() == ["all", "2", "1", "3", "6"]
