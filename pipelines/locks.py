"""Per-partition publish locks, for catalogs that cannot compare-and-set themselves.

Glue has no conditional partition update: two runs publishing the same day could both read the
old version and both write, and the first write would be lost. Holding a lock object, created by
a conditional PUT (``If-None-Match: *``, atomic on S3 and on the local folder), around
read-check-write makes the compare-and-set real. Locks expire, so a killed run holds a day for
at most ``ttl`` seconds.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import orjson

from pipelines import layout
from pipelines.errors import TransientError
from pipelines.lake import Lake

#: longer than any publish step takes (a batch call and a re-read), short enough that a day
#: held by a killed run frees itself soon
LOCK_TTL_SECONDS = 120


def lock_key(lake: Lake, dt: str) -> str:
    """Where the lock object of a partition lives (curated bucket, outside the table's prefix)."""
    return f"_locks/{layout.table_prefix(lake.spec)}/{lake.spec.partition_key}={layout.parse_dt(dt).isoformat()}.lock"


@contextmanager
def partition_locks(lake: Lake, dts: Sequence[str], *, wait_seconds: float = 60.0,
                    ttl: int = LOCK_TTL_SECONDS) -> Iterator[None]:
    """Hold the publish locks of ``dts`` (taken in date order, so two batches cannot deadlock)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    held: list[str] = []
    try:
        for dt in sorted(set(dts)):
            key = lock_key(lake, dt)
            _acquire(lake, key, owner, wait_seconds, ttl)
            held.append(key)
        yield
    finally:
        if held:
            lake.storage.delete("curated", held)


def _acquire(lake: Lake, key: str, owner: str, wait_seconds: float, ttl: int) -> None:
    deadline = time.monotonic() + wait_seconds
    delay = 0.02
    while True:
        body = orjson.dumps({"owner": owner, "expires_at": time.time() + ttl})
        if lake.storage.put_if_absent("curated", key, body):
            return
        _break_if_expired(lake, key)
        if time.monotonic() > deadline:
            raise TransientError(f"partition lock {key} is held by another publisher; retry later")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _break_if_expired(lake: Lake, key: str) -> None:
    try:
        doc = orjson.loads(lake.storage.get("curated", key))
    except Exception:  # gone already, or unreadable: the next conditional PUT decides
        return
    if float(doc.get("expires_at", 0)) < time.time():
        # A killed holder's lock. Known gap: two contenders that both saw this expired lock can
        # race, and the slower one's delete can remove the lock the faster one just took. It
        # needs a killed holder and two waiting publishers of the same day at once; closing it
        # needs a conditional delete, which not every S3-compatible store offers.
        lake.storage.delete("curated", [key])
