"""ARCHIVE: a partition leaves the queryable catalog before its objects go where Athena can't read.

Athena skips objects in GLACIER and DEEP_ARCHIVE without an error: a query over a published
partition whose files were archived just returns fewer rows. So a partition headed for such a
class is first dropped from the catalog and recorded as archived (a small JSON record in the
curated bucket, ``_archive/<namespace>/<table>/dt=YYYY-MM-DD.json``); only then does the tagging
pass tag its objects for the lifecycle rule that moves them. :func:`restore` asks S3 for readable
copies, and once every file is readable puts the same version back in the catalog for the
restore's duration; :func:`expire_restores` takes it out again a day before the copies run out.
(Athena reads restored copies only from tables with ``read_restored_glacier_objects = 'true'``,
which :mod:`pipelines.glue` sets on every lake table.)

Orders that keep a reader from ever seeing a partition with unreadable files:

* archiving writes the record *first*, then drops the partition. A crash in between leaves a
  record of a still-published partition whose objects were not tagged yet (the tagging pass tags
  only after :func:`archive_partition` returns), and the next run finishes the drop. The other
  order would leave a day missing from the catalog with nothing saying why, and
  ``lake catalog reconcile --fix`` would publish it again, after which its objects could move.
* restoring records ``restored_until`` *before* publishing, so a published restored partition
  always carries the date :func:`expire_restores` drops it on, even if the run dies right after.
* expiring drops the partition *first*, then clears the restore fields: a crash in between leaves
  a record whose restore ran out and a day that is not published, which the next run tidies.

A record whose version is not the one the catalog publishes is stale: a re-compaction or backfill
published a new version of the day, which is live and not archived. :func:`archived` ignores such
records; :func:`archive_partition`, :func:`restore` and :func:`expire_restores` remove them.

Record updates and catalog drops of a day run under the per-day publish locks
(:func:`pipelines.locks.partition_locks`), like publishing does, so they take turns with
publishers of the same day.

The embedded backend has no storage classes: archiving takes the day out of the local catalog
(and so out of the DuckDB views) all the same, and a restore finds every file readable and
publishes the day again at once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from pipelines import layout
from pipelines.catalog import Partition
from pipelines.compact import read_manifest
from pipelines.errors import NotFoundError, TerminalError, TransientError
from pipelines.lake import Lake
from pipelines.locks import partition_locks
from pipelines.publish import publish_versions
from pipelines.schema import TableSpec
from pipelines.storage import ARCHIVE_CLASSES, validate_key

DAY_SECONDS = 86400
#: a restored partition leaves the catalog this long before its copies run out: S3 removes them
#: on its own schedule, and a query planned just before must still find them
EXPIRY_MARGIN_SECONDS = DAY_SECONDS
#: the shortest restore worth publishing: it must outlive the margin
MIN_RESTORE_DAYS = 2
#: S3 retrieval tiers, fastest (and dearest) first
TIERS = ("Expedited", "Standard", "Bulk")
RECORD_FORMAT = 1
_READY = ("readable", "restored")


class ArchiveConflict(TransientError):
    """The day is not in the state the caller expected: another version was published meanwhile
    (``reason="moved"``), or it is restored and pinned (``reason="pinned"``). Nothing was dropped;
    re-read and decide again."""

    def __init__(self, message: str, *, reason: str, current_version: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.current_version = current_version


# -- records ------------------------------------------------------------------------------------


def archive_prefix(spec: TableSpec) -> str:
    """Where a table's archive records live in the curated bucket (outside its data prefix)."""
    return f"_archive/{layout.table_prefix(spec)}/"


def archive_key(spec: TableSpec, dt: str | date) -> str:
    """``_archive/<namespace>/<table>/dt=YYYY-MM-DD.json``, the record of one archived day."""
    return f"{archive_prefix(spec)}{spec.partition_key}={layout.parse_dt(dt).isoformat()}.json"


@dataclass(frozen=True)
class ArchiveRecord:
    """A day that left the queryable catalog for an archive class, and its restore, if any."""

    dt: str
    version: str
    storage_class: str
    #: curated-bucket keys of the version's data files (its manifest outputs)
    files: tuple[str, ...]
    rows: int
    archived_at: float
    #: when the current restore was first asked for (None: no restore under way)
    requested_at: float | None = None
    restore_days: int | None = None
    restore_tier: str | None = None
    #: the restored copies are readable until then; the day is published until a day before
    restored_until: float | None = None
    republished_at: float | None = None
    #: whether the catalog publishes this version now (read from the catalog, never stored)
    published: bool = field(default=False, compare=False)

    def pinned(self, now: float) -> bool:
        """A restore is recorded and does not run out (less the margin) before ``now``."""
        return self.restored_until is not None and now < self.restored_until - EXPIRY_MARGIN_SECONDS

    @property
    def restore_state(self) -> str:
        """``none``, ``requested`` (copies on their way) or ``restored`` (readable until a date)."""
        if self.restored_until is not None:
            return "restored"
        return "requested" if self.requested_at is not None else "none"

    @property
    def label(self) -> str:
        """The day's state in a few words, for ``lake status`` and ``lake archived``."""
        if self.restored_until is not None:
            until = f"restored until {when(self.restored_until)}"
            return until if self.published else f"{until}, not re-published yet: run `lake restore`"
        if self.published:
            return f"archiving ({self.storage_class}): still published, the next tiering pass drops it"
        if self.requested_at is not None:
            return f"archived ({self.storage_class}), restore requested {when(self.requested_at)}"
        return f"archived ({self.storage_class})"

    def cleared(self) -> ArchiveRecord:
        """The record with no restore under way."""
        return replace(self, requested_at=None, restore_days=None, restore_tier=None,
                       restored_until=None, republished_at=None)

    def to_json(self) -> bytes:
        doc = {"format": RECORD_FORMAT, "dt": self.dt, "version": self.version,
               "storage_class": self.storage_class, "files": list(self.files), "rows": self.rows,
               "archived_at": self.archived_at,
               "restore": {"requested_at": self.requested_at, "days": self.restore_days,
                           "tier": self.restore_tier, "restored_until": self.restored_until,
                           "republished_at": self.republished_at}}
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes, key: str) -> ArchiveRecord:
        """Parse and check a stored record; a record that does not parse is a clear error."""
        try:
            doc = orjson.loads(data)
            restore = doc.get("restore") or {}
            record = cls(
                dt=layout.parse_dt(doc["dt"]).isoformat(), version=layout.check_version(doc["version"]),
                storage_class=_check_class(doc["storage_class"]),
                files=tuple(validate_key(k) for k in doc["files"]), rows=int(doc["rows"]),
                archived_at=float(doc["archived_at"]),
                requested_at=_opt(float, restore.get("requested_at")),
                restore_days=_opt(int, restore.get("days")), restore_tier=restore.get("tier"),
                restored_until=_opt(float, restore.get("restored_until")),
                republished_at=_opt(float, restore.get("republished_at")))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TerminalError(f"archive record {key} is unreadable ({type(exc).__name__}: {exc}); "
                                "fix or remove it by hand") from None
        if not key.endswith(f"={record.dt}.json"):
            raise TerminalError(f"archive record {key} is about dt={record.dt}; fix or remove it by hand")
        return record


def when(ts: float) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MMZ`` (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%MZ")


def _opt(kind, value):
    return None if value is None else kind(value)


def _check_class(storage_class: str) -> str:
    if storage_class not in ARCHIVE_CLASSES:
        raise ValueError(f"storage class {storage_class!r} is not an archive class "
                         f"({', '.join(sorted(ARCHIVE_CLASSES))}): GLACIER_IR and warmer classes stay "
                         "queryable and are not archived")
    return storage_class


def read_record(lake: Lake, day: str) -> ArchiveRecord | None:
    """The day's archive record as stored (stale or not), or None; ``day`` is YYYY-MM-DD."""
    key = archive_key(lake.spec, day)
    try:
        data = lake.storage.get("curated", key)
    except NotFoundError:
        return None
    return ArchiveRecord.from_json(data, key)


def _write(lake: Lake, record: ArchiveRecord) -> ArchiveRecord:
    lake.storage.put("curated", archive_key(lake.spec, record.dt), record.to_json())
    return record


def _remove(lake: Lake, day: str) -> None:
    lake.storage.delete("curated", [archive_key(lake.spec, day)])


def _partition(lake: Lake, day: str) -> Partition | None:
    return lake.catalog.get_partition(lake.spec.table, day)


# -- reading the state ---------------------------------------------------------------------------


def archived(lake: Lake) -> dict[str, ArchiveRecord]:
    """Every archived day by date: one listing of the records and one of the catalog.

    Includes days restored and published again (``published`` True, ``restored_until`` set), and
    a day whose archiving was cut short before the drop (published, no restore). A record whose
    version is not the published one is stale (a newer version made the day live) and left out.
    """
    spec = lake.spec
    prefix = archive_prefix(spec)
    marker = f"{spec.partition_key}="
    published = {p.dt: p.version for p in lake.catalog.list_partitions(spec.table)}
    out: dict[str, ArchiveRecord] = {}
    for key in lake.storage.list_keys("curated", prefix):
        name = key[len(prefix):]
        if "/" in name or not name.startswith(marker) or not name.endswith(".json"):
            continue
        try:
            day = layout.parse_dt(name[len(marker):-len(".json")]).isoformat()
        except ValueError:
            continue  # not a record this module writes
        try:
            record = ArchiveRecord.from_json(lake.storage.get("curated", key), key)
        except NotFoundError:
            continue  # removed since the listing: the day went live again
        current = published.get(day)
        if current is not None and current != record.version:
            continue
        out[day] = replace(record, published=current is not None)
    return out


def archive_record(lake: Lake, dt: str | date) -> ArchiveRecord | None:
    """The day's archive record, or None when the day is not archived (or its record is stale)."""
    day = layout.parse_dt(dt).isoformat()
    record = read_record(lake, day)
    if record is None:
        return None
    current = _partition(lake, day)
    if current is not None and current.version != record.version:
        return None
    return replace(record, published=current is not None)


def is_pinned(lake: Lake, dt: str | date, now: float | None = None) -> bool:
    """True while the day is restored and published again and its restore has not (nearly) run
    out: the tiering pass must not archive it again until then."""
    day = layout.parse_dt(dt).isoformat()
    now = time.time() if now is None else now
    record = read_record(lake, day)
    if record is None or not record.pinned(now):
        return False
    current = _partition(lake, day)  # only for restored days: one catalog read
    return current is not None and current.version == record.version


# -- archiving -------------------------------------------------------------------------------------


def archive_partition(lake: Lake, dt: str | date, storage_class: str, *,
                      expected_version: str | None = None, now: float | None = None) -> ArchiveRecord:
    """Take the published partition ``dt`` out of the catalog, recorded as archived in ``storage_class``.

    Idempotent: an archived day is left as it is (its record's class is updated when it moves to
    another archive class). The record is written before the partition is dropped (see the module
    docstring for why); call it before tagging the objects for an archive class.

    Compare-and-set: with ``expected_version``, or when the catalog changes between the read and
    the drop, a day published at another version is not dropped and :class:`ArchiveConflict`
    (``reason="moved"``) is raised. A day restored and still pinned raises ``reason="pinned"``;
    a restored day whose restore is running out is archived again. A day that is neither
    published nor archived raises :class:`NotFoundError`.
    """
    storage_class = _check_class(storage_class)
    day = layout.parse_dt(dt).isoformat()
    table = lake.spec.table
    now = time.time() if now is None else now
    with partition_locks(lake, [day]):
        current = _partition(lake, day)
        record = read_record(lake, day)
        if current is None:
            if record is None:
                raise NotFoundError(f"dt={day} is not published and not archived: nothing to archive")
            if expected_version is not None and record.version != expected_version:
                raise ArchiveConflict(f"dt={day} is archived at {record.version}, not {expected_version}",
                                      reason="moved", current_version=None)
            if record.storage_class != storage_class:
                record = _write(lake, replace(record, storage_class=storage_class))
            return record
        if expected_version is not None and current.version != expected_version:
            raise ArchiveConflict(f"dt={day} is published at {current.version}, not {expected_version}; "
                                  "not archived", reason="moved", current_version=current.version)
        if record is not None and record.version == current.version and record.restored_until is not None:
            if record.pinned(now):
                raise ArchiveConflict(f"dt={day} is restored until {when(record.restored_until)}: "
                                      "not archived again before then", reason="pinned",
                                      current_version=current.version)
            # a restore running out: drop first, as expire_restores does
            lake.catalog.drop_partition(table, day)
            return _write(lake, replace(record.cleared(), storage_class=storage_class))
        if record is not None and record.version == current.version:
            fresh = replace(record, storage_class=storage_class)  # a cut-short run: finish it
        else:
            # no record, or a stale one naming a version a re-compaction replaced
            manifest = read_manifest(lake, day, current.version)
            if manifest is None:
                raise NotFoundError(f"dt={day}: the published version {current.version} has no manifest; "
                                    "not archived (see `lake catalog reconcile`)")
            fresh = ArchiveRecord(day, current.version, storage_class,
                                  tuple(o["key"] for o in manifest["outputs"]),
                                  int(manifest["counts"]["rows"]), now)
        _write(lake, fresh)
        again = _partition(lake, day)
        if again is not None and again.version != current.version:
            _remove(lake, day)  # it names a version no longer published
            raise ArchiveConflict(f"dt={day} moved to {again.version} while it was being archived; not dropped",
                                  reason="moved", current_version=again.version)
        lake.catalog.drop_partition(table, day)
    return fresh


def _expire(lake: Lake, day: str, version: str) -> bool:
    """Archive a restored day again (drop first, then clear the restore); False if it moved on."""
    with partition_locks(lake, [day]):
        record, current = read_record(lake, day), _partition(lake, day)
        if record is None or record.version != version or record.restored_until is None:
            return False
        if current is not None and current.version != version:
            _remove(lake, day)  # stale: a newer version is live
            return False
        if current is not None:
            lake.catalog.drop_partition(lake.spec.table, day)
        _write(lake, record.cleared())
    return True


def expire_restores(lake: Lake, now: float | None = None) -> list[str]:
    """Archive again every restored day whose restore runs out within a day of ``now``.

    They leave the catalog before their restored copies become unreadable. Returns their dates.
    """
    now = time.time() if now is None else now
    return [day for day, record in archived(lake).items()
            if record.restored_until is not None and not record.pinned(now)
            and _expire(lake, day, record.version)]


# -- restoring -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    """Where a restore stands: ``restoring`` (N of M objects readable) or ``restored``."""

    dt: str
    version: str
    state: str
    objects: int
    ready: int
    #: restore requests this call made
    requested: int
    restored_until: float | None
    #: this call put the day back in the catalog
    republished: bool

    @property
    def message(self) -> str:
        if self.state == "restored":
            verb = "re-published" if self.republished else "published"
            return (f"dt={self.dt} {self.version} is restored and {verb} until "
                    f"{when(self.restored_until - EXPIRY_MARGIN_SECONDS)} "
                    f"(copies readable until {when(self.restored_until)})")
        asked = f", {self.requested} restore requests made now" if self.requested else ""
        return (f"dt={self.dt} {self.version}: {self.ready} of {self.objects} objects restored{asked}; "
                "run `lake restore` again later to publish it")


def _check_restore_args(lake: Lake, days: int | None, tier: str) -> int:
    if tier not in TIERS:
        raise ValueError(f"unknown restore tier {tier!r}: use one of {', '.join(TIERS)}")
    days = lake.settings.restore_days if days is None else days
    if isinstance(days, bool) or not isinstance(days, int) or days < MIN_RESTORE_DAYS:
        raise ValueError(f"restore days must be a whole number of at least {MIN_RESTORE_DAYS}, not {days!r}: "
                         "a restored day leaves the catalog a day before its copies run out")
    return days


def _no_expedited(day: str, what: str) -> ValueError:
    return ValueError(f"dt={day}: {what} is in DEEP_ARCHIVE, which has no Expedited retrieval: "
                      "use --tier Standard (within 12 hours) or Bulk (within 48 hours)")


def _restore_expiry(lake: Lake, key: str) -> float | None:
    """When S3 removes an object's restored copy, or None when the backend does not say.

    The Storage protocol's ``restore_state`` gives the state only; S3 tells the date in the HEAD
    ``Restore`` header (``ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"``).
    """
    head = getattr(lake.storage, "_head", None)
    if head is None:
        return None
    info: dict[str, Any] | None = head("curated", key)
    found = re.search(r'expiry-date="([^"]+)"', (info or {}).get("Restore") or "")
    if not found:
        return None
    try:
        return parsedate_to_datetime(found.group(1)).timestamp()
    except (TypeError, ValueError):
        return None


def _readable_until(lake: Lake, states: dict[str, str], record: ArchiveRecord, days: int, now: float) -> float:
    """How long every object stays readable: ``days`` from now, or less where a restored copy
    expires sooner (when S3 does not say, from when the restore was asked for)."""
    until = now + days * DAY_SECONDS
    for key, state in states.items():
        if state != "restored":
            continue  # not archived at all: readable for good
        expiry = _restore_expiry(lake, key)
        if expiry is None:
            asked = record.requested_at if record.requested_at is not None else now
            expiry = asked + (record.restore_days or days) * DAY_SECONDS
        until = min(until, expiry)
    return until


def _update(lake: Lake, day: str, version: str, **changes: Any) -> ArchiveRecord:
    """Change fields of the day's record under its lock, if it still is about ``version``."""
    with partition_locks(lake, [day]):
        record = read_record(lake, day)
        if record is None or record.version != version:
            raise ArchiveConflict(f"dt={day}: its archive record changed during the restore; run it again",
                                  reason="moved")
        return _write(lake, replace(record, **changes))


def restore(lake: Lake, dt: str | date, *, days: int | None = None, tier: str = "Standard",
            now: float | None = None) -> RestoreResult:
    """Make an archived day queryable again for ``days`` (default ``LAKE_RESTORE_DAYS``).

    Asks for a restored copy of every object of the archived version that is not readable (S3
    RestoreObject with ``tier``: Expedited, Standard or Bulk). While copies are on their way it
    reports how many are ready and changes nothing else; once all are, it records
    ``restored_until`` and publishes the same version again (audit and manifest re-checked), so
    ``lake query`` and Athena see the day until :func:`expire_restores` drops it a day before the
    copies run out. A day that is not archived raises :class:`NotFoundError` and writes nothing.
    """
    day = layout.parse_dt(dt).isoformat()
    days = _check_restore_args(lake, days, tier)
    now = time.time() if now is None else now
    spec = lake.spec
    record = read_record(lake, day)
    current = _partition(lake, day)
    if record is None:
        state = (f"version {current.version} is published and queryable" if current is not None
                 else "it is not published either: nothing to restore")
        raise NotFoundError(f"dt={day} is not archived: {state}")
    if current is not None and current.version != record.version:
        with partition_locks(lake, [day]):
            again = read_record(lake, day)
            if again is not None and again.version == record.version:
                _remove(lake, day)
        raise NotFoundError(f"dt={day} is not archived: version {current.version} was published after "
                            f"{record.version} was archived (its stale archive record is removed)")
    if tier == "Expedited" and record.storage_class == "DEEP_ARCHIVE":
        raise _no_expedited(day, "the day")
    keys = [*record.files, layout.manifest_key(spec, day, record.version),
            layout.audit_key(spec, day, record.version)]
    if current is not None and record.pinned(now):
        return RestoreResult(day, record.version, "restored", len(keys), len(keys), 0,
                             record.restored_until, False)
    if record.restored_until is not None and not record.pinned(now):
        # a restore that ran out (or is about to): archive the day again, then restore anew
        _expire(lake, day, record.version)
        record = read_record(lake, day)
        if record is None or record.restored_until is not None:
            raise ArchiveConflict(f"dt={day} changed during the restore; run it again", reason="moved")

    states = {k: lake.storage.restore_state("curated", k) for k in keys}
    waiting = [k for k, s in states.items() if s == "archived"]
    if waiting and tier == "Expedited":
        deep = [k for k in waiting if (info := lake.storage.head("curated", k)) is not None
                and info.storage_class == "DEEP_ARCHIVE"]
        if deep:
            raise _no_expedited(day, f"{deep[0]} (and {len(deep) - 1} more)" if len(deep) > 1 else deep[0])
    asked_days = record.restore_days if record.requested_at is not None and record.restore_days else days
    for key in waiting:
        states[key] = lake.storage.restore("curated", key, asked_days, tier)
    if waiting and record.requested_at is None:
        record = _update(lake, day, record.version, requested_at=now, restore_days=days, restore_tier=tier)
    ready = sum(s in _READY for s in states.values())
    if ready < len(keys):
        return RestoreResult(day, record.version, "restoring", len(keys), ready, len(waiting), None, False)

    until = _readable_until(lake, states, record, days, now)
    if until - EXPIRY_MARGIN_SECONDS <= now:
        raise TransientError(f"dt={day}: the restored copies are readable only until {when(until)}, within "
                             "the one-day margin, so the day is not published; run `lake restore` again "
                             "once S3 shows them archived (the restore cannot be extended from here)")
    # restored_until before the publish: a published restored day always says when it leaves
    record = _update(lake, day, record.version, restored_until=until,
                     restore_days=record.restore_days or days, restore_tier=record.restore_tier or tier)
    (published,) = publish_versions(lake, [(day, record.version)])
    if published.previous not in (None, record.version):
        # a re-compaction published a newer version between our check and this publish: put it back
        publish_versions(lake, [(day, published.previous)])
        with partition_locks(lake, [day]):
            _remove(lake, day)
        raise ArchiveConflict(f"dt={day}: version {published.previous} was published during the restore; "
                              "the day is live at it and no longer archived", reason="moved",
                              current_version=published.previous)
    if published.changed or record.republished_at is None:
        record = _update(lake, day, record.version, republished_at=now)
    return RestoreResult(day, record.version, "restored", len(keys), len(keys), len(waiting), until,
                         published.changed)
