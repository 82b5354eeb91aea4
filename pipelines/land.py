"""LAND: inbox objects -> raw ``dt=/hour=`` objects by event time, bad records -> quarantine.

Each landing object is read once, each line parsed once. Raw and quarantine object names derive
from the landing object's identity (key + ETag), and a ledger record written last marks the object
as landed, so landing the same inbox again writes nothing.
"""

from __future__ import annotations

import base64
import gzip
import io
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipelines import layout
from pipelines.concurrency import bounded_map
from pipelines.errors import LakeError, NotFoundError
from pipelines.lake import Lake
from pipelines.normalize import Normalizer, Reject, partition_of
from pipelines.storage import ARRIVED_AT, LANDED, STATE_TAG, ObjectInfo

GZIP_MAGIC = b"\x1f\x8b"
log = logging.getLogger(__name__)


@dataclass
class FileResult:
    """What happened to one landing object. ``lines == landed + quarantined`` always."""

    source_key: str
    etag: str
    size: int
    digest: str
    lines: int = 0
    landed: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    file_reason: str | None = None
    quarantine_key: str | None = None
    #: what tagging the landing object ``lake-state=landed`` did after the ledger record (see
    #: :func:`mark_landed`); not part of the record, which is written before it
    landing_tag: str | None = field(default=None, compare=False)

    @property
    def balanced(self) -> bool:
        return self.lines == self.landed + self.quarantined


@dataclass
class LandReport:
    """Totals of one landing pass; ``touched`` maps each event day written to its new rows."""

    files: list[FileResult] = field(default_factory=list)
    touched: dict[str, int] = field(default_factory=dict)
    already_landed: int = 0  # objects of the inbox (or of ``keys``) landed by an earlier pass

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    @property
    def reasons(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for f in self.files:
            c.update(f.reasons)
            if f.file_reason:
                c[f.file_reason] += 1
        return dict(c)

    @property
    def quarantined_files(self) -> int:
        return sum(1 for f in self.files if f.file_reason)

    @property
    def tag_failures(self) -> int:
        """Landed objects whose ``lake-state=landed`` tag could not be written (the tiering pass
        puts it later, see :func:`retag_landed`); the landing itself stands."""
        return sum(1 for f in self.files if f.landing_tag == TAG_FAILED)


class _Line:
    __slots__ = ("line_no", "raw")

    def __init__(self, line_no: int, raw: bytes):
        self.line_no = line_no
        self.raw = raw


class FileRejected(Exception):
    """A landing object that cannot be read as records at all (quarantined whole, with ``reason``)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def pending(lake: Lake, prefix: str = "") -> list[ObjectInfo]:
    """Landing objects not landed yet (by identity), in key order."""
    return _not_landed(lake, lake.storage.list("landing", prefix))


def _not_landed(lake: Lake, infos: Iterable[ObjectInfo], *, by_head: bool = False) -> list[ObjectInfo]:
    """``infos`` without the landed ones: one listing of the whole ledger, or (``by_head``, for a
    few named objects) a HEAD of each one's ledger record."""
    infos = list(infos)
    if by_head:
        landed = bounded_map(lambda o: is_landed(lake, o.key, o.etag), infos, _threads(lake),
                             name="lake-ledger")
        return [o for o, done in zip(infos, list(landed), strict=True) if not done]
    done = landed_digests(lake)
    return [o for o in infos if layout.object_digest(o.key, o.etag) not in done]


def _threads(lake: Lake) -> int:
    return lake.settings.io_threads


# -- the ledger: one record per landing object version (key + ETag), written last -------------
#
# Records live at ``_ledger/<table>/key=<hash of the landing key>/<digest>.json`` (the per-key
# index: every version of one key under one prefix). Lakes landed before the index have them at
# ``_ledger/<table>/<digest>.json``; those are still read, never written. Flat digests sort
# before ``key=``, so the old records are the head of a listing of the ledger prefix.


def landed_digests(lake: Lake) -> set[str]:
    """Digests of every landed object version (one listing of the whole ledger, both layouts)."""
    return {d for d in map(layout.ledger_digest, lake.storage.list_keys("raw", layout.ledger_prefix(lake.spec)))
            if d is not None}


def is_landed(lake: Lake, key: str, etag: str) -> bool:
    """Whether this version of ``key`` has a ledger record (a HEAD or two, no listing)."""
    digest = layout.object_digest(key, etag)
    return any(lake.storage.head("raw", k) is not None for k in _record_keys(lake, key, digest))


def _record_keys(lake: Lake, key: str, digest: str) -> Iterator[str]:
    yield layout.ledger_record_key(lake.spec, key, digest)
    yield layout.ledger_key(lake.spec, digest)  # a lake landed before the per-key index


def _record_doc(lake: Lake, record_key: str) -> dict[str, Any] | None:
    try:
        return orjson.loads(lake.storage.get("raw", record_key))
    except NotFoundError:
        return None


def ledger_record(lake: Lake, key: str, etag: str) -> FileResult | None:
    """The ledger record of one landing object version, or None when it was not landed."""
    for record_key in _record_keys(lake, key, layout.object_digest(key, etag)):
        doc = _record_doc(lake, record_key)
        if doc is not None and doc["source_key"] == key:
            return FileResult(**doc)
    return None


def legacy_record_keys(lake: Lake) -> Iterator[str]:
    """Ledger records at the flat pre-index path (a bounded set: nothing writes there now)."""
    prefix = layout.ledger_prefix(lake.spec)
    for k in lake.storage.list_keys("raw", prefix):
        rest = k[len(prefix):]
        if rest.startswith("key="):
            return  # the flat records sort first; stopping here ends an S3 listing early
        if "/" not in rest and layout.ledger_digest(k) is not None:
            yield k


def ledger_versions(lake: Lake, key: str) -> list[FileResult]:
    """Every ledger record of landing key ``key`` (all its ETags), by ETag.

    Lists the key's index prefix; records of a lake landed before the index are found by
    reading the flat records, which only old lakes have."""
    keys = list(lake.storage.list_keys("raw", layout.ledger_key_prefix(lake.spec, key)))
    keys += list(legacy_record_keys(lake))
    found: dict[str, FileResult] = {}
    for doc in bounded_map(lambda k: _record_doc(lake, k), keys, _threads(lake), name="lake-ledger"):
        if doc is not None and doc["source_key"] == key:
            found.setdefault(doc["digest"], FileResult(**doc))
    return sorted(found.values(), key=lambda f: (f.etag, f.digest))


def land_inbox(lake: Lake, prefix: str = "", keys: Iterable[str] | None = None,
               progress: Callable[[int, int], None] | None = None) -> LandReport:
    """Land every pending landing object under ``prefix`` (or exactly ``keys``)."""
    if keys is not None:
        infos = [i for i in (lake.storage.head("landing", k) for k in keys) if i is not None]
    else:
        infos = list(lake.storage.list("landing", prefix))
    todo = _not_landed(lake, infos, by_head=keys is not None)
    report = LandReport(already_landed=len(infos) - len(todo))
    touched: Counter[str] = Counter()
    for n, result in enumerate(_land_all(lake, todo), 1):
        report.files.append(result)
        for out in result.outputs:
            touched[out["dt"]] += out["rows"]
        if progress:
            progress(n, len(todo))
    report.files.sort(key=lambda f: f.source_key)
    report.touched = dict(sorted(touched.items()))
    return report


def _land_all(lake: Lake, todo: list[ObjectInfo]) -> Iterator[FileResult]:
    """Land objects, in worker processes when there are enough of them to pay for the start-up.

    Parsing and validating is CPU-bound Python; files are independent, so they spread over
    ``LAKE_LAND_WORKERS`` processes (default: one per core). On S3 each object also costs a few
    requests (GET, PUTs, the ledger record) whose latency dwarfs the parsing of a small file, so
    each process keeps ``LAKE_S3_CONCURRENCY / processes`` objects in flight on threads.
    """
    workers = min(lake.settings.land_workers or os.cpu_count() or 1, len(todo))
    remote = lake.settings.backend == "s3"
    if workers <= 1 or len(todo) < _MIN_FILES_FOR_WORKERS:
        yield from _land_threaded(lake, todo, lake.settings.io_threads)
        return
    threads = max(1, lake.settings.s3_concurrency // workers) if remote else 1
    batch = max(1, threads * 4)  # whole batches keep every thread of a worker busy
    # spawn, not fork: the caller may be a threaded Dagster or webserver process
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(lake.settings, lake.spec.table)) as pool:
        futures = [pool.submit(_worker_land, todo[i:i + batch], threads) for i in range(0, len(todo), batch)]
        for future in as_completed(futures):
            yield from future.result()


def _land_threaded(lake: Lake, todo: list[ObjectInfo], threads: int) -> Iterator[FileResult]:
    if threads <= 1 or len(todo) <= 1:
        for info in todo:
            yield land_object(lake, info)
        return
    yield from bounded_map(lambda info: land_object(lake, info), todo, min(threads, len(todo)), name="lake-land")


_MIN_FILES_FOR_WORKERS = 64
_worker_lake: Lake | None = None


def _worker_init(settings, table: str) -> None:
    global _worker_lake
    _worker_lake = Lake.open(settings, table=table)


def _worker_land(infos: list[ObjectInfo], threads: int) -> list[FileResult]:
    assert _worker_lake is not None
    return list(_land_threaded(_worker_lake, infos, threads))


def land_object(lake: Lake, info: ObjectInfo) -> FileResult:
    """Land one landing object: raw objects per (dt, hour), one quarantine object, one ledger record.

    The object is streamed and its rows spill to local gzip files per (dt, hour), so memory does
    not grow with the object's size. Nothing is uploaded until the whole object has been read: an
    object that turns out unreadable half-way (a truncated gzip) leaves no partial raw objects.
    """
    spec, storage, settings = lake.spec, lake.storage, lake.settings
    digest = layout.object_digest(info.key, info.etag)
    source = layout.source_name(info.key)
    result = FileResult(source_key=info.key, etag=info.etag, size=info.size, digest=digest)
    normalizer = Normalizer(spec, timedelta(seconds=settings.future_tolerance_seconds))
    reasons: Counter[str] = Counter()

    arrival = datetime.fromtimestamp(info.mtime, tz=UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="lake-land-") as tmp, _Spill(Path(tmp)) as spill:
        try:
            with storage.open("landing", info.key) as fh:
                arrival = arrival_time(fh, info)
                for line in records(fh, settings.max_line_bytes):
                    result.lines += 1
                    row = _parse(line, normalizer, arrival, info.key)
                    if isinstance(row, Reject):
                        reasons[row.reason] += 1
                        spill.write("quarantine", _quarantine_record(info, line, row))
                        continue
                    spill.write(partition_of(row[spec.partition_from]),
                                orjson.dumps(row, option=orjson.OPT_UTC_Z) + b"\n")
        except FileRejected as exc:
            return _quarantine_file(lake, info, result, exc, arrival.date(), source)
        spill.close()
        for bucket, path in sorted(spill.paths.items(), key=lambda kv: str(kv[0])):
            if bucket == "quarantine":
                continue
            dt, hour = bucket
            key = layout.raw_key(spec, dt, hour, source, digest)
            storage.put_file("raw", key, path)
            rows = spill.rows[bucket]
            result.outputs.append({"key": key, "dt": dt.isoformat(), "hour": hour, "rows": rows})
            result.landed += rows
        if "quarantine" in spill.paths:
            key = layout.quarantine_lines_key(spec, arrival.date(), source, digest)
            storage.put_file("quarantine", key, spill.paths["quarantine"])
            result.quarantine_key = key
    result.quarantined = sum(reasons.values())
    result.reasons = dict(sorted(reasons.items()))
    if not result.balanced:  # a bug, never an input problem: refuse to record a lossy landing
        raise AssertionError(f"conservation broken for {info.key}: {result}")
    _write_ledger(lake, result)
    result.landing_tag = mark_landed(lake, info)
    return result


def arrival_time(stream: Any, info: ObjectInfo) -> datetime:
    """When the object's events arrived: its :data:`ARRIVED_AT` metadata, else its mtime."""
    when = (getattr(stream, "metadata", None) or {}).get(ARRIVED_AT)
    try:
        ts = float(when) if when is not None else info.mtime
    except ValueError:
        ts = info.mtime  # a malformed stamp is not worth refusing the object for
    return datetime.fromtimestamp(ts, tz=UTC).replace(microsecond=0)


def _quarantine_file(lake: Lake, info: ObjectInfo, result: FileResult, exc: FileRejected,
                     arrival: date, source: str) -> FileResult:
    """Keep an unreadable object whole, byte for byte, beside its reason; land nothing from it."""
    key = layout.quarantine_file_key(lake.spec, arrival, source, result.digest)
    with tempfile.TemporaryDirectory(prefix="lake-land-") as tmp:
        copy = Path(tmp) / "object"
        with lake.storage.open("landing", info.key) as src, copy.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        lake.storage.put_file("quarantine", key, copy)
    lake.storage.put("quarantine", key + ".reason.json", orjson.dumps({
        "source_object": info.key, "source_etag": info.etag, "size": info.size,
        "reason": exc.reason, "detail": exc.detail}, option=orjson.OPT_INDENT_2))
    result = FileResult(source_key=info.key, etag=info.etag, size=info.size, digest=result.digest,
                        file_reason=exc.reason, quarantine_key=key)
    _write_ledger(lake, result)
    result.landing_tag = mark_landed(lake, info)  # kept whole in quarantine: the inbox copy may go
    return result


class _Spill:
    """Local spill files, one per bucket: gzip for raw (dt, hour) buckets, plain for quarantine.

    Lines are buffered per bucket and written in blocks of about 1 MiB (compressing line by
    line costs more than parsing).
    """

    BLOCK = 1 << 20

    def __init__(self, folder: Path):
        self.folder = folder
        self.paths: dict[Any, Path] = {}
        self.rows: Counter[Any] = Counter()
        self._open: dict[Any, Any] = {}
        self._pending: dict[Any, list[bytes]] = {}
        self._pending_bytes: Counter[Any] = Counter()

    def write(self, bucket: Any, data: bytes) -> None:
        if bucket not in self.paths:
            path = self.folder / f"{len(self.paths):04d}"
            raw = path.open("wb")
            # filename="" and mtime=0 keep the gzip header free of names and clocks: same input,
            # same bytes. Level 1: raw is transient (it expires after compaction); measured on
            # 102k demo lines, 21% faster landing for 24% larger raw than level 6.
            self._open[bucket] = raw if bucket == "quarantine" else gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0)
            self.paths[bucket] = path
            self._pending[bucket] = []
        self._pending[bucket].append(data)
        self._pending_bytes[bucket] += len(data)
        self.rows[bucket] += 1
        if self._pending_bytes[bucket] >= self.BLOCK:
            self._flush(bucket)

    def _flush(self, bucket: Any) -> None:
        self._open[bucket].write(b"".join(self._pending[bucket]))
        self._pending[bucket] = []
        self._pending_bytes[bucket] = 0

    def close(self, flush: bool = True) -> None:
        for bucket, fh in self._open.items():
            if flush:
                self._flush(bucket)
            inner = fh.fileobj if isinstance(fh, gzip.GzipFile) else None
            fh.close()  # GzipFile does not close a file object it was given
            if inner is not None:
                inner.close()
        self._open.clear()

    def __enter__(self) -> _Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(flush=False)  # after an error the spill files are discarded anyway


def _write_ledger(lake: Lake, result: FileResult) -> None:
    # Written last: its presence is what marks the object as landed.
    doc = asdict(result)
    del doc["landing_tag"]  # what happens after the record is not part of it
    lake.storage.put("raw", layout.ledger_record_key(lake.spec, result.source_key, result.digest),
                     orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


# -- landing expiry: landed objects tagged ``lake-state=landed``, which a lifecycle rule expires --
#
# The ledger is the truth about what was landed; the tag only lets S3's lifecycle rule
# (pipelines/lifecycle.py, ``landing-expire``) tell landed objects from the others, so it is put
# after the ledger record and never before: an object never landed never carries it. A failed
# tag fails nothing: the object is only kept longer, and :func:`retag_landed` (run by every
# tiering pass) tags landed objects that outlived the expiry, which S3 then expires at once
# (lifecycle counts ``Days`` from the object's creation, not from its tag).

#: what :func:`mark_landed` did
TAGGED, TAG_UNCHANGED, TAG_OVERWRITTEN, TAG_GONE, TAG_FAILED = "tagged", "unchanged", "overwritten", "gone", "failed"


def _tags_expire(lake: Lake) -> bool:
    """Whether landed objects are tagged: expiry on, and a backend with object tags (the
    embedded one has none, and no lifecycle to read them)."""
    return lake.settings.landing_expire_days > 0 and lake.storage.has_tags


def mark_landed(lake: Lake, info: ObjectInfo) -> str | None:
    """Tag landing object ``info`` ``lake-state=landed`` once its ledger record exists, keeping
    its other tags; None when landing objects are not tagged (expiry off, embedded backend).

    Only the version landed is tagged. PutObjectTagging names no ETag and tags the current
    version, and lake init does not version the landing bucket (no VersionId to name), so the
    ETag is checked first with a HEAD and an object overwritten since it was listed is left
    untagged (``overwritten``). An overwrite between that HEAD and the PUT (milliseconds) would
    tag new content: accepted, since it is harmless in practice. The new content has a new ETag,
    so the next sensor tick lands it, and lifecycle counts its days from the overwrite: it would
    only expire unlanded if landing stopped for ``LAKE_LANDING_EXPIRE_DAYS``, the same bound
    any backlog has. Returns ``tagged``, ``unchanged`` (tagged already), ``overwritten``, ``gone``
    or ``failed`` (logged; the landing stands and :func:`retag_landed` retries it).
    """
    if not _tags_expire(lake):
        return None
    storage = lake.storage
    try:
        current = storage.head("landing", info.key)
        if current is None:
            return TAG_GONE
        if current.etag != info.etag:
            return TAG_OVERWRITTEN
        # PutObjectTagging replaces the whole set: read, merge, write, so others' tags stay
        tags = storage.get_tags("landing", info.key)
        if tags.get(STATE_TAG) == LANDED:
            return TAG_UNCHANGED
        storage.put_tags("landing", info.key, {**tags, STATE_TAG: LANDED})
    except NotFoundError:
        return TAG_GONE  # deleted meanwhile: nothing left to expire
    except LakeError as exc:
        log.warning("landed %s, but could not tag it %s=%s (a tiering pass retries): %s",
                    info.key, STATE_TAG, LANDED, exc)
        return TAG_FAILED
    return TAGGED


@dataclass
class RetagReport:
    """What :func:`retag_landed` found: landing objects older than the expiry, those of them in
    the ledger, and what tagging them did (``tagged`` counts the tags it had to put)."""

    stale: int = 0
    landed: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        """Plain values for run metadata."""
        return {"landing_stale": self.stale, "landing_retagged": self.outcomes.get(TAGGED, 0),
                "landing_retag_failed": self.outcomes.get(TAG_FAILED, 0)}


#: S3 runs lifecycle about once a day, so a tagged object can outlive its expiry by a day or so
_LIFECYCLE_LAG_DAYS = 2
#: up to this many stale objects are checked in the ledger one by one (HEADs), more with a listing
_HEADS_AT_MOST = 200


def retag_landed(lake: Lake, *, now: float | None = None, dry_run: bool = False) -> RetagReport:
    """Tag the landed objects that outlived the landing expiry untagged (their tag failed, or the
    landing was killed between its ledger record and its tag, or it predates landing expiry).

    One listing of the landing bucket; only objects older than ``LAKE_LANDING_EXPIRE_DAYS`` plus
    S3's lifecycle lag are looked at, so in steady state (every tag written at landing) there are
    none and the pass costs that listing. Each one in the ledger (by its key and ETag) gets the
    tag as at landing (:func:`mark_landed`); one not in the ledger is never tagged. With
    ``dry_run`` nothing is read beyond the ledger or written.
    """
    report = RetagReport()
    if not _tags_expire(lake):
        return report
    now = time.time() if now is None else now
    cutoff = now - (lake.settings.landing_expire_days + _LIFECYCLE_LAG_DAYS) * 86400
    stale = [o for o in lake.storage.list("landing") if o.mtime < cutoff]
    report.stale = len(stale)
    if not stale:
        return report
    unlanded = {id(o) for o in _not_landed(lake, stale, by_head=len(stale) <= _HEADS_AT_MOST)}
    landed = [o for o in stale if id(o) not in unlanded]
    report.landed = len(landed)
    if dry_run:
        return report
    outcomes: Counter[str] = Counter()
    for outcome in bounded_map(lambda o: mark_landed(lake, o), landed, _threads(lake), name="lake-retag"):
        outcomes[outcome or ""] += 1
    report.outcomes = dict(sorted(outcomes.items()))
    return report


def read_ledger(lake: Lake) -> list[FileResult]:
    """Every landing record (both layouts; a version recorded at both paths once), by key + ETag."""
    keys = [k for k in lake.storage.list_keys("raw", layout.ledger_prefix(lake.spec))
            if layout.ledger_digest(k) is not None]
    found: dict[str, FileResult] = {}
    for doc in bounded_map(lambda k: _record_doc(lake, k), keys, _threads(lake), name="lake-ledger"):
        if doc is not None:
            found.setdefault(doc["digest"], FileResult(**doc))
    return sorted(found.values(), key=lambda f: (f.source_key, f.etag))


def records(fh: BinaryIO, max_line_bytes: int) -> Iterator[_Line]:
    """Split a landing object into records: NDJSON lines, or the elements of a JSON array.

    Streams NDJSON line by line (each line read at most ``max_line_bytes`` at a time); a JSON
    array has to be parsed whole, so such objects take memory in proportion to their size.
    """
    head = fh.read(2)
    fh.seek(0)
    stream: BinaryIO = gzip.GzipFile(fileobj=fh, mode="rb") if head == GZIP_MAGIC else fh
    try:
        yield from _lines_or_array(stream, max_line_bytes)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise FileRejected("corrupt_gzip", f"gzip stream cannot be read: {exc}") from None


def _lines_or_array(stream: BinaryIO, max_line_bytes: int) -> Iterator[_Line]:
    start = stream.read(4096)
    if start.lstrip()[:1] == b"[":
        data = start + stream.read()
        # A JSON-array file; if the whole does not parse, it is NDJSON whose first line is bad.
        try:
            items = orjson.loads(data)
        except orjson.JSONDecodeError:
            items = None
        if isinstance(items, list):
            for n, item in enumerate(items, 1):
                # re-serialised: the element's bytes inside the array are not separable otherwise
                yield _Line(n, orjson.dumps(item))
            return
        stream = io.BytesIO(data)
    else:
        stream = io.BufferedReader(_Chained(start, stream), 1 << 20)
    n = 0
    while True:
        raw = stream.readline(max_line_bytes + 2)
        if not raw:
            return
        n += 1
        if not raw.endswith(b"\n") and len(raw) > max_line_bytes:
            # longer than the limit: read the rest of it, to quarantine it whole
            parts = [raw]
            while parts[-1] and not parts[-1].endswith(b"\n"):
                parts.append(stream.readline(1 << 20))
            yield _Line(n, _Oversized(b"".join(parts).rstrip(b"\r\n")))
            continue
        raw = raw.rstrip(b"\n").removesuffix(b"\r")
        if not raw.strip():
            continue
        yield _Line(n, raw if len(raw) <= max_line_bytes else _Oversized(raw))


class _Chained(io.RawIOBase):
    """Bytes already read, then the rest of a stream, as one buffered stream."""

    def __init__(self, first: bytes, rest: BinaryIO):
        self._first = first
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._first:
            n = min(len(buffer), len(self._first))
            buffer[:n] = self._first[:n]
            self._first = self._first[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Oversized(bytes):
    """Marks a line longer than the configured limit; it is quarantined unparsed."""


def _parse(line: _Line, normalizer: Normalizer, arrival: datetime, source_key: str) -> dict | Reject:
    raw = line.raw
    if isinstance(raw, _Oversized):
        return Reject("oversized_line", f"line of {len(raw)} bytes exceeds LAKE_MAX_LINE_BYTES")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Reject("invalid_utf8", f"invalid UTF-8 at byte {uexc.start}")
        return Reject("malformed_json", str(exc)[:200])
    return normalizer.row(obj, arrival=arrival, source_object=source_key,
                          source_line=line.line_no, ingested_at=arrival)


def _quarantine_record(info: ObjectInfo, line: _Line, reject: Reject) -> bytes:
    return orjson.dumps({
        "source_object": info.key,
        "source_etag": info.etag,
        "line": line.line_no,
        "reason": reject.reason,
        "detail": reject.detail,
        # base64 keeps the bytes exact, invalid UTF-8 included
        "raw_base64": base64.b64encode(bytes(line.raw)).decode(),
    }) + b"\n"


def read_quarantine(lake: Lake) -> list[dict[str, Any]]:
    """Every quarantined line record (with ``raw`` bytes decoded from base64)."""
    out = []
    prefix = layout.table_prefix(lake.spec) + "/lines/"
    for o in lake.storage.list("quarantine", prefix):
        for line in lake.storage.get("quarantine", o.key).splitlines():
            rec = orjson.loads(line)
            rec["raw"] = base64.b64decode(rec.pop("raw_base64"))
            out.append(rec)
    return out


def read_raw_rows(lake: Lake, dt: str | None = None) -> list[dict[str, Any]]:
    """All raw rows (or one day's) as dicts, times parsed back to UTC datetimes. For tests and tools."""
    prefix = layout.raw_day_prefix(lake.spec, dt) if dt else layout.table_prefix(lake.spec) + "/dt="
    times = [c.name for c in lake.spec.columns if c.type == "timestamp"]
    rows = []
    for o in lake.storage.list("raw", prefix):
        for line in gzip.decompress(lake.storage.get("raw", o.key)).splitlines():
            row = orjson.loads(line)
            for name in times:
                if row.get(name):
                    row[name] = datetime.fromisoformat(row[name])
            rows.append(row)
    return rows


def raw_objects(lake: Lake, dt: str | date) -> list[ObjectInfo]:
    """The raw objects of one day."""
    return list(lake.storage.list("raw", layout.raw_day_prefix(lake.spec, dt)))
