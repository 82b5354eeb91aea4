"""TRACE: where every line of one landing object went, recounted from the data. Read-only.

For each landed version of a landing key (one ledger record per key + ETag) it accounts for
every line: quarantined (by reason, with line numbers) or landed into per-hour raw objects, and
for each raw object the curated version that compacted it and how many of its events that
version kept or dropped as duplicates of a copy from elsewhere. The ledger gives the numbers
landing wrote down; the raw, quarantine and Parquet objects are read again to check them.

Raw objects are per landing object (their key holds the landing object's digest), so a whole
raw object comes from one landing version. A curated row names its origin (``source_object``,
``source_line``, ``ingested_at``), which is how a kept copy is told from a dropped one.
"""

from __future__ import annotations

import reprlib
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipelines import duck
from pipelines.errors import NotFoundError
from pipelines.lake import Lake
from pipelines.land import (  # a recount splits as landing did
    FileRejected,
    FileResult,
    ledger_record,
    ledger_versions,
    records,
)
from pipelines.ledger import (
    ARCHIVED,
    NOT_COMPACTED,
    PUBLISHED,  # noqa: F401 - re-exported: a raw object's states, as ``lake trace`` names them
    RAW_GONE,
    STAGED,  # noqa: F401
    DayVersions,
    compaction_of,
)
from pipelines.storage import read_key

#: line numbers kept per quarantine reason (the counts are always complete)
MAX_LINE_NUMBERS = 1000

# the states of a raw object: the ledger's (``lake ledger`` and ``lake trace`` agree on them)
RAW_EXPIRED = RAW_GONE


@dataclass
class RawTrace:
    """One raw object written from the landing version, and what compaction made of it."""

    key: str
    dt: str
    hour: int | None
    events: int  # as recorded by landing
    recounted: int | None = None  # lines of the raw object now; None when it is gone
    state: str = NOT_COMPACTED
    version: str | None = None
    kept: int | None = None
    duplicates_dropped: int | None = None
    #: landing object of the copy the version kept instead, for each dropped event
    kept_from: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # events of this object the version holds no copy of at all (a bug)
    note: str | None = None

    @property
    def pending(self) -> int:
        """Events not compacted into any version yet."""
        return self.events if self.state == NOT_COMPACTED else 0

    @property
    def balanced(self) -> bool:
        """events = kept + duplicates dropped (+ pending), and the recount agrees."""
        if self.recounted is not None and self.recounted != self.events:
            return False
        if self.state == NOT_COMPACTED:
            return True
        if self.kept is None or self.duplicates_dropped is None:
            return False
        return self.missing == 0 and self.events == self.kept + self.duplicates_dropped


@dataclass
class QuarantineTrace:
    """The quarantined lines of one landing version, recounted from the quarantine object."""

    key: str
    reasons: dict[str, int]  # as recorded by landing
    recounted: dict[str, int] | None = None  # None when the object is gone
    line_numbers: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class VersionTrace:
    """Every line of one landing object version (key + ETag)."""

    source_key: str
    etag: str
    digest: str
    size: int
    lines: int
    landed: int
    quarantined: int
    landing_lines: int | None  # records in the landing object now (None: replaced or gone)
    raw: list[RawTrace]
    quarantine: QuarantineTrace | None
    file_reason: str | None = None  # the whole object was quarantined, unread
    file_quarantine_key: str | None = None

    def _sum(self, name: str) -> int | None:
        values = [getattr(r, name) for r in self.raw if r.state != NOT_COMPACTED]
        return None if any(v is None for v in values) else sum(values)

    @property
    def kept(self) -> int | None:
        return self._sum("kept")

    @property
    def duplicates_dropped(self) -> int | None:
        return self._sum("duplicates_dropped")

    @property
    def pending(self) -> int:
        return sum(r.pending for r in self.raw)

    @property
    def balanced(self) -> bool:
        """lines = landed + quarantined; landed = kept + duplicates dropped + not compacted yet."""
        if self.lines != self.landed + self.quarantined:
            return False
        if self.landing_lines is not None and self.landing_lines != self.lines:
            return False
        if self.landed != sum(r.events for r in self.raw) or not all(r.balanced for r in self.raw):
            return False
        if self.quarantine is not None:
            q = self.quarantine
            if sum(q.reasons.values()) != self.quarantined:
                return False
            if q.recounted is not None and q.recounted != q.reasons:
                return False
        elif self.quarantined:
            return False
        kept, dropped = self.kept, self.duplicates_dropped
        return kept is not None and dropped is not None and self.landed == kept + dropped + self.pending

    def balance(self) -> str:
        """The two conservation equations with this version's numbers, in words."""
        if self.file_reason:
            return (f"whole object quarantined ({self.file_reason}): 0 lines read, "
                    f"kept byte for byte at quarantine/{self.file_quarantine_key}")

        def n(v: int | None) -> str:
            return "?" if v is None else str(v)

        text = (f"lines {self.lines} = landed {self.landed} + quarantined {self.quarantined}; "
                f"landed {self.landed} = kept {n(self.kept)} + duplicates dropped "
                f"{n(self.duplicates_dropped)} + not compacted yet {self.pending}")
        return text + (": balanced" if self.balanced else ": NOT BALANCED")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for out, raw in zip(doc["raw"], self.raw, strict=True):
            out.update(pending=raw.pending, balanced=raw.balanced)
        doc.update(kept=self.kept, duplicates_dropped=self.duplicates_dropped, pending=self.pending,
                   balanced=self.balanced, balance=self.balance())
        return doc


@dataclass
class Trace:
    """Every landed version of one landing key."""

    landing_key: str
    versions: list[VersionTrace]

    @property
    def balanced(self) -> bool:
        return all(v.balanced for v in self.versions)

    def to_dict(self) -> dict[str, Any]:
        return {"landing_key": self.landing_key, "balanced": self.balanced,
                "versions": [v.to_dict() for v in self.versions]}


def trace(lake: Lake, landing_key: str, etag: str | None = None) -> Trace:
    """Account for every line of ``landing_key`` (every landed version, or the one ``etag``).

    Reads only: the ledger, the landing, raw and quarantine objects, manifests and the curated
    Parquet files of the versions involved. Raises ``NotFoundError`` for a key never landed.
    """
    read_key("landing", landing_key)
    if etag is not None and (not isinstance(etag, str) or not etag or len(etag) > 256
                             or not etag.isprintable()):
        raise ValueError(f"invalid ETag {reprlib.repr(etag)}")
    entries = _ledger_entries(lake, landing_key, etag)
    if not entries:
        which = f" with ETag {etag}" if etag else ""
        raise NotFoundError(f"{landing_key}{which} is not in the ledger: not landed yet (pending) "
                            "or never in the inbox")
    days = DayVersions(lake)
    # several versions of one key share source_object: curated rows of expired raw objects
    # can only be attributed to a version when the key landed once
    single = len(entries) == 1
    versions = [_trace_version(lake, days, e, single) for e in entries]
    return Trace(landing_key, versions)


def _ledger_entries(lake: Lake, key: str, etag: str | None) -> list[FileResult]:
    if etag is not None:
        record = ledger_record(lake, key, etag)
        return [record] if record is not None else []
    return ledger_versions(lake, key)  # the key's index prefix (and an old lake's flat records)


def _trace_version(lake: Lake, days: DayVersions, entry: FileResult, single: bool) -> VersionTrace:
    landing = lake.storage.head("landing", entry.source_key)
    landing_lines = None
    if landing is not None and landing.etag == entry.etag and not entry.file_reason:
        landing_lines = _count_records(lake, entry.source_key)
    if entry.file_reason:
        return VersionTrace(entry.source_key, entry.etag, entry.digest, entry.size, entry.lines,
                            entry.landed, entry.quarantined, landing_lines, [], None,
                            file_reason=entry.file_reason, file_quarantine_key=entry.quarantine_key)
    quarantine = None
    if entry.quarantine_key:
        quarantine = _trace_quarantine(lake, entry)
    with tempfile.TemporaryDirectory(prefix="lake-trace-") as tmp:
        raws = [_trace_raw(lake, days, entry, out, Path(tmp) / str(n), single)
                for n, out in enumerate(sorted(entry.outputs, key=lambda o: o["key"]))]
    return VersionTrace(entry.source_key, entry.etag, entry.digest, entry.size, entry.lines,
                        entry.landed, entry.quarantined, landing_lines, raws, quarantine)


def _count_records(lake: Lake, key: str) -> int | None:
    """Records in the landing object, split exactly as landing split them."""
    try:
        with lake.storage.open("landing", key) as fh:
            return sum(1 for _ in records(fh, lake.settings.max_line_bytes))
    except (FileRejected, NotFoundError):
        return None


def _trace_quarantine(lake: Lake, entry: FileResult) -> QuarantineTrace:
    q = QuarantineTrace(entry.quarantine_key, dict(entry.reasons))
    counts: Counter[str] = Counter()
    lines: dict[str, list[int]] = {}
    try:
        with lake.storage.open("quarantine", entry.quarantine_key) as fh:
            for raw in fh:  # one record a line: streamed, a big quarantine object is not held
                if not raw.strip():
                    continue
                rec = orjson.loads(raw)
                if rec.get("source_object") != entry.source_key or rec.get("source_etag") != entry.etag:
                    continue
                counts[rec["reason"]] += 1
                numbers = lines.setdefault(rec["reason"], [])
                if len(numbers) < MAX_LINE_NUMBERS and rec.get("line") is not None:
                    numbers.append(int(rec["line"]))
    except NotFoundError:
        return q  # expired by lifecycle: the ledger's counts are all there is
    q.recounted = dict(sorted(counts.items()))
    q.line_numbers = {r: sorted(v) for r, v in sorted(lines.items())}
    return q


def _trace_raw(lake: Lake, days: DayVersions, entry: FileResult, out: dict[str, Any], work: Path,
               single: bool) -> RawTrace:
    r = RawTrace(out["key"], out["dt"], out.get("hour"), int(out["rows"]))
    day = days.get(r.dt)
    exists = lake.storage.head("raw", r.key) is not None
    local = None
    if exists:
        local = lake.storage.fetch("raw", [r.key], work)[0]
    held = compaction_of(day, r.key, exists)
    r.state, r.version = held.state, held.version
    if r.state == RAW_GONE:
        r.note = "the raw object is gone and no version of its day lists it"
    manifests = day.manifests
    con = duck.connect(lake.settings, spill_dir=work / "spill", filesystem=lake.storage.filesystem)
    try:
        if local is not None:
            (r.recounted,) = con.execute(
                f"SELECT count(*) FROM read_ndjson_objects({duck.literal(str(local))}, "
                "compression='gzip', maximum_object_size=16777216)").fetchone()
        if r.version is None:
            return r
        if r.state.startswith(ARCHIVED):  # archived and out of the catalog
            r.note = "the version's files are archived: `lake restore` to recount"
            return r
        parts = [lake.storage.uri("curated", o["key"]) for o in manifests[r.version]["outputs"]]
        if local is not None:
            _count_kept(lake, con, r, str(local), parts, entry)
        elif single:
            _count_kept_expired(lake, con, r, parts, entry)
        else:
            r.note = "raw expired and the key landed more than once: its rows cannot be attributed"
    finally:
        con.close()
    return r


def _origin_columns(lake: Lake) -> list[str]:
    """The columns naming a row's origin: source object, source line, ingestion time."""
    names = {c.lineage: c.name for c in lake.spec.columns if c.lineage}
    return [names["source_object"], names["source_line"], names["ingested_at"]]


def _count_kept(lake: Lake, con, r: RawTrace, local: str, parts: list[str], entry: FileResult) -> None:
    """Join the raw object's events to the version's rows by event id: a row with this object's
    origin (source object, line and ingestion time) is its kept copy; any other is a duplicate
    kept from elsewhere. DuckDB does the join, so memory stays bounded."""
    spec = lake.spec
    key = duck.ident(spec.dedupe_key)
    cols = spec.duckdb_columns()
    origin = _origin_columns(lake)
    raw = (f"SELECT {key}, {', '.join(duck.ident(c) for c in origin)} FROM read_json("
           f"{duck.literal(local)}, columns={duck.struct_literal(cols)}, format='newline_delimited', "
           "compression='gzip', maximum_object_size=16777216)")
    if not parts:
        r.kept, r.duplicates_dropped, r.missing = 0, 0, r.recounted or 0
        return
    pq = f"read_parquet({duck.list_literal(parts)}, hive_partitioning=false)"
    same = " AND ".join(f"c.{duck.ident(c)} IS NOT DISTINCT FROM r.{duck.ident(c)}" for c in origin)
    rows = con.execute(
        f"WITH r AS ({raw}), c AS (SELECT {key}, {', '.join(duck.ident(c) for c in origin)} FROM {pq} "
        f"WHERE {key} IN (SELECT {key} FROM r)) "
        f"SELECT CASE WHEN c.{key} IS NULL THEN 'missing' WHEN {same} THEN 'kept' ELSE 'dropped' END AS fate, "
        f"coalesce(c.{duck.ident(origin[0])}, ''), count(*) "
        f"FROM r LEFT JOIN c ON c.{key} = r.{key} GROUP BY ALL").fetchall()
    fates: Counter[str] = Counter()
    kept_from: Counter[str] = Counter()
    for fate, source, n in rows:
        fates[fate] += n
        if fate == "dropped":
            kept_from[source] += n
    r.kept, r.duplicates_dropped, r.missing = fates["kept"], fates["dropped"], fates["missing"]
    r.kept_from = dict(sorted(kept_from.items()))


def _count_kept_expired(lake: Lake, con, r: RawTrace, parts: list[str], entry: FileResult) -> None:
    """The raw object expired: count the version's rows that came from this landing object and
    fall in the object's hour; the rest of its recorded events were dropped as duplicates."""
    if not parts:
        r.kept = 0
    else:
        pq = f"read_parquet({duck.list_literal(parts)}, hive_partitioning=false)"
        where = f"{duck.ident(_origin_columns(lake)[0])} = {duck.literal(entry.source_key)}"
        if r.hour is not None:
            where += f" AND hour({duck.ident(lake.spec.partition_from)}) = {int(r.hour)}"
        (r.kept,) = con.execute(f"SELECT count(*) FROM {pq} WHERE {where}").fetchone()
    r.duplicates_dropped = r.events - r.kept
    r.note = "raw expired: kept counted from the curated rows of this landing object"
