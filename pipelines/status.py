"""What the lake holds per day: landed, compacted, published, and whether published is current."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipelines import layout
from pipelines.archive import archived
from pipelines.compact import held_inputs, read_manifest
from pipelines.concurrency import bounded_map
from pipelines.lake import Lake
from pipelines.storage import ObjectInfo


@dataclass
class DayStatus:
    """One day of the table."""

    dt: str
    raw_objects: int
    raw_bytes: int
    published_version: str | None
    published_rows: int | None
    duplicates: int | None
    current: bool  # the published version covers every raw object of the day
    #: raw objects of a published day that its published version does not hold: late data
    late_keys: tuple[str, ...] = ()
    #: "archived (CLASS)", "restored until ..." when the day is archived (pipelines/archive.py)
    archive: str | None = None
    #: when the day closes: its end (UTC) plus the lateness allowance
    closes_at: float = 0.0
    #: closed, published (or archived by policy since), and holding every raw object
    complete: bool = False


def closes_at(dt: str, lateness_seconds: int) -> float:
    """Unix time a day closes: midnight UTC after it, plus the lateness allowance."""
    day = layout.parse_dt(dt)
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return end.timestamp() + lateness_seconds


def watermark(days: Sequence[DayStatus]) -> str | None:
    """The completeness watermark: the latest day up to which every known day is complete."""
    mark = None
    for d in sorted(days, key=lambda d: d.dt):
        if not d.complete:
            break
        mark = d.dt
    return mark


def day_status(lake: Lake, now: float | None = None) -> list[DayStatus]:
    """Status of every day that has raw objects or a published partition (``now``: when to judge
    whether a day has closed; the current time by default)."""
    now = time.time() if now is None else now
    spec = lake.spec
    raw: dict[str, list[ObjectInfo]] = defaultdict(list)
    base = layout.table_prefix(spec) + "/dt="
    for o in lake.storage.list("raw", base):
        raw[o.key[len(base):].split("/", 1)[0]].append(o)
    parts = {p.dt: p for p in lake.catalog.list_partitions(spec.table)}
    records = archived(lake)
    # one GET per published day: fetched side by side on S3, where each costs a round trip
    manifests = dict(zip(parts, bounded_map(lambda p: read_manifest(lake, p.dt, p.version), parts.values(),
                                            lake.settings.io_threads, name="lake-status"), strict=True))
    out = []
    for dt in sorted(set(raw) | set(parts) | set(records)):
        p = parts.get(dt)
        manifest = manifests.get(dt)
        inputs = raw.get(dt, [])
        # raw keys are named by content digest: a key the version holds is the same object
        late = tuple(sorted({o.key for o in inputs} - held_inputs(manifest))) if manifest else ()
        closing = closes_at(dt, lake.settings.lateness_seconds)
        out.append(DayStatus(
            dt=dt, raw_objects=len(inputs), raw_bytes=sum(o.size for o in inputs),
            published_version=p.version if p else None, published_rows=p.rows if p else None,
            duplicates=manifest["counts"]["duplicates"] if manifest else None,
            current=bool(manifest and inputs and not late), late_keys=late,
            archive=records[dt].label if dt in records else None, closes_at=closing,
            complete=now >= closing and not late and (manifest is not None or dt in records)))
    return out


def late_days(lake: Lake) -> dict[str, tuple[str, ...]]:
    """Published days that received raw objects after their publish, with those objects' keys:
    the days to re-compact, and only those."""
    return {d.dt: d.late_keys for d in day_status(lake) if d.published_version and d.late_keys}
