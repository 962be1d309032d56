"""Ordered parallel map with a progress bar, shared by the generators and `prepare`.

Work items are small (an index, a path) and results are streamed back in order, so memory does
not grow with the dataset. With `workers <= 1` everything runs in-process, which keeps tests and
debugging simple and gives the same results.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import cv2
from tqdm import tqdm

In = TypeVar("In")
Out = TypeVar("Out")


def default_workers() -> int:
    """One worker per core the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _context() -> multiprocessing.context.BaseContext:
    """forkserver where available, never plain fork.

    A process that has already used OpenCV (or torch) holds thread pools that a forked child
    inherits in a broken state: the child hangs on its first parallel OpenCV call. forkserver
    forks workers from a clean server process and costs a fraction of a second per pool.
    """
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["numpy", "cv2", "fedgan.data.prepare", "fedgan.data.sources.synth_sets"])
        return context
    return multiprocessing.get_context("spawn")


def _one_thread_per_worker() -> None:
    """Processes already use every core; OpenCV's own threads would only oversubscribe them."""
    cv2.setNumThreads(1)


def ordered_map(
    function: Callable[[In], Out],
    items: Iterable[In],
    *,
    total: int,
    workers: int,
    description: str,
    progress: bool = True,
    chunksize: int = 8,
    advance: Callable[[Out], int] = lambda result: 1,
) -> Iterator[Out]:
    """Yield `function(item)` for each item, in order, using `workers` processes.

    The progress bar counts `total` units; each result advances it by `advance(result)`
    (e.g. the images in a shard when an item is a whole shard).
    """
    bar = tqdm(total=total, desc=description, unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        if workers <= 1:
            for item in items:
                result = function(item)
                bar.update(advance(result))
                yield result
            return
        with _context().Pool(workers, initializer=_one_thread_per_worker) as pool:
            for result in pool.imap(function, items, chunksize=chunksize):
                bar.update(advance(result))
                yield result
    finally:
        bar.close()
