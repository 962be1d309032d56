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
) -> Iterator[Out]:
    """Yield `function(item)` for each item, in order, using `workers` processes."""
    bar = tqdm(total=total, desc=description, unit="img", disable=not progress, leave=False, dynamic_ncols=True)
    try:
        if workers <= 1:
            for item in items:
                yield function(item)
                bar.update()
            return
        # fork is cheap and shares the read-only inputs; spawn where fork is unavailable.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers, initializer=_one_thread_per_worker) as pool:
            for result in pool.imap(function, items, chunksize=chunksize):
                yield result
                bar.update()
    finally:
        bar.close()
