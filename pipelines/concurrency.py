"""Bounded fan-out over a thread pool: results in input order, a fixed number of tasks queued."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], threads: int, *, name: str = "lake") -> Iterator[R]:
    """Like ``ThreadPoolExecutor.map``, but with at most ``4 * threads`` tasks submitted at once.

    ``Executor.map`` submits every item up front: for 20,000 objects that is 20,000 futures
    (~2 KiB each) before the first result, so memory grew with the number of objects.
    """
    window = max(1, threads) * 4
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix=name) as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:  # an error or an abandoned generator: do not start the rest
                f.cancel()
