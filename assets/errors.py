"""Map engine errors onto Dagster: transient ones are retried, terminal ones fail once, clearly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from pipelines.errors import TerminalError, TransientError

#: Retries apply to transient errors only: terminal errors raise Failure(allow_retries=False).
RETRY = dg.RetryPolicy(max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


@contextmanager
def engine_errors() -> Iterator[None]:
    """Turn engine exceptions into Dagster failures that say whether a retry can help."""
    try:
        yield
    except TransientError as exc:
        raise dg.Failure(description=f"transient: {exc} (will be retried)", allow_retries=True) from exc
    except TerminalError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
