"""Per-partition publish locks, for catalogs that cannot compare-and-set themselves.

Glue has no conditional partition update: two runs publishing the same day could both read the
old version and both write, and the first write would be lost. Holding a lock object, created by
a conditional PUT (``If-None-Match: *``, atomic on S3 and on the local folder), around
read-check-write makes the compare-and-set real; on the local catalog it makes the second
publisher wait its turn instead of failing its compare-and-set. Locks expire, so a killed run
holds a day for at most ``ttl`` seconds; they are released with a conditional DELETE, so a
publisher whose lock expired never removes the next holder's.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import orjson

from pipelines import layout
from pipelines.errors import LakeError, TransientError
from pipelines.lake import Lake

#: longer than any publish step takes (a batch call and a re-read), short enough that a day
#: held by a killed run frees itself soon
LOCK_TTL_SECONDS = 60
log = logging.getLogger(__name__)
#: how long a publisher waits for a day: longer than the TTL, so a lock a killed run left
#: behind expires while the next publisher waits, instead of failing it
LOCK_WAIT_SECONDS = 90.0


def lock_key(lake: Lake, dt: str) -> str:
    """Where the lock object of a partition lives (curated bucket, outside the table's prefix)."""
    return f"_locks/{layout.table_prefix(lake.spec)}/{lake.spec.partition_key}={layout.parse_dt(dt).isoformat()}.lock"


@contextmanager
def partition_locks(lake: Lake, dts: Sequence[str], *, wait_seconds: float = LOCK_WAIT_SECONDS,
                    ttl: int = LOCK_TTL_SECONDS) -> Iterator[None]:
    """Hold the publish locks of ``dts`` (taken in date order, so two batches cannot deadlock)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    held: list[tuple[str, str]] = []
    try:
        for dt in sorted(set(dts)):
            key = lock_key(lake, dt)
            held.append((key, _acquire(lake, key, owner, wait_seconds, ttl)))
        yield
    finally:
        for key, etag in held:
            # only our own lock: if ours expired and another publisher took the day over,
            # its lock stays
            try:
                lake.storage.delete_if("curated", key, etag)
            except LakeError as exc:
                # the publish itself is done; a lock not released expires after its TTL, so a
                # store refusing conditional deletes costs the next publisher a wait, not an error
                log.warning("could not release publish lock %s (it expires in %ss): %s", key, ttl, exc)


def _acquire(lake: Lake, key: str, owner: str, wait_seconds: float, ttl: int) -> str:
    deadline = time.monotonic() + wait_seconds
    delay = 0.02
    while True:
        body = orjson.dumps({"owner": owner, "expires_at": time.time() + ttl})
        created = lake.storage.put_if_absent("curated", key, body)
        if created is not None:
            return created.etag
        _break_if_expired(lake, key)
        if time.monotonic() > deadline:
            raise TransientError(f"partition lock {key} is held by another publisher; retry later")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _break_if_expired(lake: Lake, key: str) -> None:
    info = lake.storage.head("curated", key)
    if info is None:
        return
    try:
        doc = orjson.loads(lake.storage.get("curated", key))
    except Exception:  # gone already, or unreadable: the next conditional PUT decides
        return
    if float(doc.get("expires_at", 0)) < time.time():
        # A killed holder's lock. The delete is conditional on the version we looked at: if a
        # contender broke it first and took the day, the lock now is a new version and stays.
        # (If the body read above is a newer lock than the head's, it has not expired, so we
        # never get here with a stale ETag and a live lock.)
        lake.storage.delete_if("curated", key, info.etag)
