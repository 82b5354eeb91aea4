"""WATCH: find new landing objects by listing, with a durable cursor (buckets without notifications).

A tick lists the landing bucket and decides which objects are new without listing the ledger.
A cursor that only kept "the newest LastModified seen" would miss objects: S3 stamps a multipart
upload with the time it was *initiated*, so a large object becomes visible minutes after objects
stamped later than it, and the producers' and S3's clocks differ. So the cursor keeps

- ``wm``, the watermark: the newest LastModified seen (S3's clock, never ours);
- ``seen``, every object version (digest of key + ETag) stamped within ``lookback`` of the
  watermark that was already requested or found landed, with its LastModified and when it
  was requested (our clock; 0 when found landed);

and a tick checks only the *candidates*: listed objects stamped at or after ``wm - lookback`` that
``seen`` does not hold. Each candidate costs a HEAD of its ledger record (the per-key path,
then the pre-index one), not a listing of the ledger. A new ETag under a known key is a new digest,
so a re-put with new content is a candidate too.

A *full scan* (every listed object against one listing of the whole ledger, as
:func:`pipelines.land.pending`) runs when the cursor is missing, unreadable or for another
prefix; after a tick that had more new objects than it may request (``backlog``); and every
``full_every`` seconds, which catches what the window cannot (a clock off by more than the
lookback, an upload longer than it) and requests again objects whose landing run failed (those
requested within ``full_every`` are left to the run that has them). So a lost cursor costs one
full scan, never a missed or a wrong object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines import layout
from pipelines.concurrency import bounded_map
from pipelines.lake import Lake
from pipelines.land import is_landed, landed_digests
from pipelines.storage import ObjectInfo

CURSOR_VERSION = 1
#: how far before the watermark a LastModified may be and its object still be found by the window:
#: longer than the slowest multipart upload plus the clock skew between writers and S3
LOOKBACK_SECONDS = 3600.0
#: a full scan at least this often (our clock); also how long a requested object is left to its run
FULL_SCAN_SECONDS = 3600.0
#: objects one tick may request; more make the next tick a full scan (the backlog)
MAX_OBJECTS = 10_000


@dataclass
class ScanResult:
    """What one tick found: objects to land (oldest first) and the cursor to store."""

    objects: list[ObjectInfo]
    cursor: str
    #: why the tick was a full scan ("no cursor", "unreadable cursor", "periodic", ...), or None
    full_scan: str | None = None
    listed: int = 0
    #: candidates whose ledger record was looked up (HEAD); 0 on a full scan
    checked: int = 0
    #: new objects left for the next tick (over ``max_objects``)
    backlog: int = 0
    #: the time (our clock) of the cursor's last full scan: a retry after it is a new request
    generation: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Cursor:
    prefix: str
    wm: float
    full_at: float
    backlog: bool
    seen: dict[str, list[float]]  # digest -> [LastModified, requested at (0: found landed)]

    def dumps(self) -> str:
        return orjson.dumps({"v": CURSOR_VERSION, "prefix": self.prefix, "wm": self.wm,
                             "full_at": self.full_at, "backlog": self.backlog,
                             "seen": dict(sorted(self.seen.items()))}).decode()


def _parse(cursor: str | None) -> tuple[_Cursor | None, str]:
    """The cursor, or None and why it cannot be used (then the tick is a full scan)."""
    if not cursor:
        return None, "no cursor"
    try:
        doc = orjson.loads(cursor)
        if not isinstance(doc, dict) or doc.get("v") != CURSOR_VERSION:
            return None, "cursor of another version"
        seen = {}
        for digest, entry in doc["seen"].items():
            mtime, requested = entry
            if not isinstance(digest, str) or layout.ledger_digest(f"{digest}.json") != digest:
                raise ValueError(digest)
            seen[digest] = [float(mtime), float(requested)]
        return _Cursor(str(doc["prefix"]), float(doc["wm"]), float(doc["full_at"]),
                       bool(doc["backlog"]), seen), ""
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None, "unreadable cursor"


def scan(lake: Lake, cursor: str | None, now: float, *, prefix: str = "",
         lookback: float = LOOKBACK_SECONDS, full_every: float = FULL_SCAN_SECONDS,
         max_objects: int = MAX_OBJECTS) -> ScanResult:
    """One tick: the landing objects under ``prefix`` to land now, and the new cursor.

    ``cursor`` is what the previous tick returned (or None); ``now`` is the caller's clock (Unix
    seconds), used only to schedule full scans and to age requests, never compared with
    LastModified. Objects come oldest first, at most ``max_objects``. Pure: reads the lake,
    writes nothing.
    """
    if max_objects < 1:
        raise ValueError("max_objects must be at least 1")
    state, why = _parse(cursor)
    if state is not None and state.prefix != prefix:
        state, why = None, "cursor of another prefix"
    if state is not None:
        if state.backlog:
            why = "backlog"
        elif not 0 <= now - state.full_at < full_every:
            why = "periodic"
    listing = list(lake.storage.list("landing", prefix))
    digests = {id(o): layout.object_digest(o.key, o.etag) for o in listing}
    wm = max([o.mtime for o in listing] + ([state.wm] if state else []), default=0.0)
    seen = dict(state.seen) if state else {}
    checked = 0
    if why:
        done = landed_digests(lake)
        # requested within full_every: a run has them (a landing run that failed is retried after)
        busy = {d for d, (_, requested) in seen.items() if requested and now - requested < full_every}
        new = []
        for o in listing:
            d = digests[id(o)]
            if d in done:
                seen.setdefault(d, [o.mtime, 0.0])
            elif d not in busy:
                new.append(o)
    else:
        assert state is not None
        floor = state.wm - lookback
        candidates = [o for o in listing if o.mtime >= floor and digests[id(o)] not in seen]
        landed = list(bounded_map(lambda o: is_landed(lake, o.key, o.etag), candidates,
                                  lake.settings.io_threads, name="lake-watch"))
        checked = len(candidates)
        new = []
        for o, done in zip(candidates, landed, strict=True):
            if done:
                seen[digests[id(o)]] = [o.mtime, 0.0]  # landed by another run (`lake land`)
            else:
                new.append(o)
    new.sort(key=lambda o: (o.mtime, o.key))
    take, rest = new[:max_objects], new[max_objects:]
    for o in take:
        seen[digests[id(o)]] = [o.mtime, now]
    # what the window can no longer see and no run is busy with needs no memory
    seen = {d: e for d, e in seen.items()
            if e[0] >= wm - lookback or (e[1] and now - e[1] < full_every)}
    full_at = now if why else state.full_at
    new_cursor = _Cursor(prefix, wm, full_at, bool(rest), seen)
    take.sort(key=lambda o: o.key)
    return ScanResult(take, new_cursor.dumps(), full_scan=why or None, listed=len(listing),
                      checked=checked, backlog=len(rest), generation=int(full_at))


def batches(objects: list[ObjectInfo], size: int) -> list[list[ObjectInfo]]:
    """``objects`` in runs of at most ``size`` (landing runs of a bounded number of keys)."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [objects[i:i + size] for i in range(0, len(objects), size)]


def run_key(objects: list[ObjectInfo], generation: int) -> str:
    """A run key naming exactly these object versions (keys + ETags) in this full-scan generation:
    the same objects requested again by the same tick's cursor state make no second run, and a
    retry after a full scan is a new run."""
    h = hashlib.blake2b(digest_size=12)
    for o in sorted(objects, key=lambda o: (o.key, o.etag)):
        h.update(f"{o.key}\n{o.etag}\n".encode("utf-8", "surrogateescape"))
    return f"inbox-{generation}-{h.hexdigest()}"
