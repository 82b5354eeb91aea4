"""PUBLISH: move the catalog pointer of a partition to an audited version; retire old versions.

Readers resolve a partition through the catalog only, so the pointer swap is the single moment a
new version becomes visible. Superseded versions stay readable for a grace period, for queries
already planned against them, and are deleted afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from pipelines import layout
from pipelines.catalog import Partition
from pipelines.compact import held_inputs, read_manifest
from pipelines.errors import AuditError, NotFoundError, TerminalError
from pipelines.lake import Lake
from pipelines.locks import partition_locks
from pipelines.verify import read_audit


class ArchivedError(TerminalError):
    """The version is archived; only a restore may publish it again."""


class RawExpiredError(TerminalError):
    """The new version lacks raw inputs of the version it would replace."""


@dataclass
class PublishResult:
    """What the catalog pointed at before and after."""

    dt: str
    version: str
    previous: str | None
    location: str
    changed: bool


def publish_version(lake: Lake, dt: str | date, version: str) -> PublishResult:
    """Publish ``version`` of ``dt``; refuses a version whose recorded audit did not pass."""
    return publish_versions(lake, [(dt, version)])[0]


def publish_versions(lake: Lake, items: Sequence[tuple[str | date, str]]) -> list[PublishResult]:
    """Publish several (day, version) pairs in one catalog batch, each compare-and-set.

    Every version must be complete and audited; that is checked for all of them before the
    catalog is touched. Publishers of the same day take turns (per-day locks), and the catalog
    write is still compare-and-set against what was read under the lock.
    """
    spec = lake.spec
    wanted: dict[str, tuple[str, dict]] = {}
    for dt, version in items:
        day = layout.parse_dt(dt).isoformat()
        manifest = read_manifest(lake, day, version)
        if manifest is None:
            raise NotFoundError(f"version {version} of dt={day} is incomplete (no manifest)")
        audit = read_audit(lake, day, version)
        if audit is None or not audit.get("passed"):
            raise AuditError(f"version {version} of dt={day} has not passed its audit; not publishing")
        wanted[day] = (version, manifest)
    if not wanted:
        return []
    lake.catalog.ensure_table(spec, lake.storage.uri("curated", layout.table_prefix(spec) + "/"))
    # Per-day locks around read-check-write: Glue has no compare-and-set, so without them two
    # publishers could both replace the same version; the local catalog's compare-and-set would
    # refuse the second one, and with them it waits its turn instead of failing.
    with partition_locks(lake, list(wanted)):
        current = {day: lake.catalog.get_partition(spec.table, day) for day in wanted}
        results, updates = [], []
        now = time.time()
        for day, (version, manifest) in sorted(wanted.items()):
            _refuse_gaps(lake, day, version, manifest, current[day], now)
            location = lake.storage.uri("curated", layout.version_prefix(spec, day, version))
            before = current[day].version if current[day] else None
            results.append(PublishResult(day, version, before, location, changed=before != version))
            if before == version:
                continue
            updates.append((Partition(
                table=spec.table, dt=day, version=version, location=location,
                files=tuple(lake.storage.uri("curated", o["key"]) for o in manifest["outputs"]),
                rows=manifest["counts"]["rows"], published_at=now), before))
        if updates:
            lake.catalog.publish_many(spec.table, updates)
    return results


def _refuse_gaps(lake: Lake, day: str, version: str, manifest: dict, current: Partition | None,
                 now: float) -> None:
    """Refuse a publish that would make readers silently miss rows.

    Two ways it could: publishing again an archived version (its files are in a class Athena
    skips without an error) other than through ``lake restore``, which first makes them readable
    and records until when; and publishing a version built without raw objects that the version
    it replaces was built from and that no longer exist (raw expired by lifecycle, then late
    events re-compacted the day) and without carrying the rows of a version that holds them:
    the rows only the older version holds would vanish. A version that carried the replaced
    version's rows (``carried_from``, see :mod:`pipelines.compact`) loses none of them.
    """
    from pipelines.archive import read_record  # lazily: archive publishes through this module

    record = read_record(lake, day)
    archived = record is not None and (current is None or current.version == record.version)
    if archived and record.version == version and not record.pinned(now):
        raise ArchivedError(f"dt={day} version {version} is archived in {record.storage_class}: run "
                            f"`lake restore --date {day}` to make it queryable again")
    base = current.version if current is not None else (record.version if archived else None)
    if base is None or base == version:
        return
    if (manifest.get("carried_from") or {}).get("version") == base:
        return  # it holds every row of the version it replaces, carried as they were
    base_manifest = read_manifest(lake, day, base)
    if base_manifest is None:
        return  # the published version's manifest is gone: nothing to compare with
    # both sides count the expired inputs whose rows a version carried as held
    lost = held_inputs(base_manifest) - held_inputs(manifest)
    if not lost:
        return
    # an older version built from fewer objects that are all still there is a deliberate
    # roll-back; objects that are gone mean the rows would be lost for good
    gone = lost - set(lake.storage.list_keys("raw", layout.raw_day_prefix(lake.spec, day)))
    if gone:
        raise RawExpiredError(
            f"dt={day}: version {version} was built without {len(gone)} raw object(s) that version "
            f"{base} holds (e.g. {min(gone)}), expired or deleted since, and does not carry {base}'s "
            f"rows; publishing it would drop their rows. Compact the day again (`lake compact --date {day}`): "
            f"it carries {base} into a new version")


def retire_versions(lake: Lake, dt: str | date, *, now: float | None = None,
                    grace_seconds: int | None = None) -> list[str]:
    """Delete versions of ``dt`` that are not published, once the grace period has passed.

    A superseded version is kept for the grace period after its successor was published; an
    incomplete one (no manifest: a killed run) for the grace period after it was last written,
    since it may belong to a compaction still in progress; a complete one written after the
    current publish (staged, not yet published) also for the grace period after its last write.
    """
    spec = lake.spec
    day = layout.parse_dt(dt).isoformat()
    now = time.time() if now is None else now
    grace = lake.settings.retire_grace_seconds if grace_seconds is None else grace_seconds
    current = lake.catalog.get_partition(spec.table, day)
    prefix = layout.partition_prefix(spec, day)
    versions: dict[str, list] = {}
    for o in lake.storage.list("curated", prefix):
        version = o.key[len(prefix):].split("/", 1)[0]
        versions.setdefault(version, []).append(o)
    retired = []
    # uploads a killed run left half-done are not objects (listings skip them): clear them too
    lake.storage.abort_incomplete("curated", prefix, grace)
    for version, objects in sorted(versions.items()):
        if current is not None and version == current.version:
            continue
        newest = max(o.mtime for o in objects)
        complete = any(o.key.endswith("/_manifest.json") for o in objects)
        # A complete version is superseded from the moment its successor was published, but one
        # written after that publish was never superseded: it is staged (written and audited,
        # waiting for its own publish step), so its grace runs from its own last write. Counting
        # from the published version's time alone deleted such a staged version before it could
        # be published whenever the published version was older than the grace period.
        since = max(current.published_at, newest) if (complete and current is not None) else newest
        if complete and current is None:
            continue  # never published and nothing supersedes it: leave for a publish
        if now - since >= grace:
            # data files first, the manifest last: a delete cut short leaves an incomplete
            # version (retired later), never a manifest that vouches for missing files
            keys = sorted((o.key for o in objects), key=lambda k: k.endswith("/_manifest.json"))
            lake.storage.delete("curated", keys)
            retired.append(version)
    return retired
