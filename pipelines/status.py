"""What the lake holds per day: landed, compacted, published, and whether published is current."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from pipelines import layout
from pipelines.archive import archived
from pipelines.compact import held_inputs, read_manifest
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


def day_status(lake: Lake) -> list[DayStatus]:
    """Status of every day that has raw objects or a published partition."""
    spec = lake.spec
    raw: dict[str, list[ObjectInfo]] = defaultdict(list)
    base = layout.table_prefix(spec) + "/dt="
    for o in lake.storage.list("raw", base):
        raw[o.key[len(base):].split("/", 1)[0]].append(o)
    parts = {p.dt: p for p in lake.catalog.list_partitions(spec.table)}
    records = archived(lake)
    out = []
    for dt in sorted(set(raw) | set(parts) | set(records)):
        p = parts.get(dt)
        manifest = read_manifest(lake, dt, p.version) if p else None
        inputs = raw.get(dt, [])
        # raw keys are named by content digest: a key the version holds is the same object
        late = tuple(sorted({o.key for o in inputs} - held_inputs(manifest))) if manifest else ()
        out.append(DayStatus(
            dt=dt, raw_objects=len(inputs), raw_bytes=sum(o.size for o in inputs),
            published_version=p.version if p else None, published_rows=p.rows if p else None,
            duplicates=manifest["counts"]["duplicates"] if manifest else None,
            current=bool(manifest and inputs and not late), late_keys=late,
            archive=records[dt].label if dt in records else None))
    return out


def late_days(lake: Lake) -> dict[str, tuple[str, ...]]:
    """Published days that received raw objects after their publish, with those objects' keys:
    the days to re-compact, and only those."""
    return {d.dt: d.late_keys for d in day_status(lake) if d.published_version and d.late_keys}
