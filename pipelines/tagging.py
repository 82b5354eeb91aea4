"""TIER on S3: tag objects so that lifecycle rules move them by the partition's own date.

S3 lifecycle ``Days`` count from an object's creation, and a backfilled or re-compacted
partition's objects are new; so the rules (:mod:`pipelines.lifecycle`) move curated objects by
the ``lake-tier`` tag this pass puts on them, and expire raw objects tagged
``lake-state=compacted``, which this pass puts only on the raw inputs of a published version.
A partition headed for a class Athena cannot read (GLACIER, DEEP_ARCHIVE) leaves the catalog
(:func:`pipelines.archive.archive_partition`) before any of its objects is tagged for it.

Knowing every object's current tag would cost a GetObjectTagging per object per run, so the pass
keeps what it tagged in a state document in the curated bucket (:func:`state_key`). The state is
a cache, not a source of truth: tagging is idempotent, so a lost or stale state only costs the
requests of reading the tags again. Two runs at once both write it and the last writer wins,
which is as harmless: an entry is written only after its tags are, so a state never claims a
colder tag than an object has, only (from the losing run) a warmer one, and every write reads
the object's tags first, so a later run finds the truth and writes nothing it need not.

PutObjectTagging replaces an object's whole tag set, so every write is a read-modify-write:
other tools' tags survive ours. The read costs a request only when the tag changes (two or three
times in an object's life) or when the state cannot vouch for the tags anyway.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import ModuleType
from typing import Any

import orjson

from pipelines import layout
from pipelines.compact import read_manifest
from pipelines.concurrency import bounded_map
from pipelines.errors import ConfigError, LakeError, NotFoundError
from pipelines.lake import Lake
from pipelines.schema import TableSpec
from pipelines.storage import validate_key
from pipelines.tier import CLASSES, COMPACTED, STATE_TAG, TIER_TAG, TieringPolicy

STATE_FORMAT = 1


def state_key(spec: TableSpec) -> str:
    """Where the tagging state of a table lives in the curated bucket."""
    return validate_key(f"_tiering/{layout.table_prefix(spec)}/state.json")


@dataclass
class PartitionTagging:
    """What the pass did (or would do) to one partition."""

    dt: str
    version: str
    target: str  #: the class the partition's date calls for (``TieringPolicy.tier_for``)
    tier: str = "STANDARD"  #: the coldest tag its objects carry afterwards (STANDARD: none)
    tagged: int = 0  #: curated objects whose tier tag was (or would be) put
    unchanged: int = 0  #: curated objects already carrying the right tag (or none, rightly)
    kept_small: int = 0  #: objects under the minimum billable size, left untagged in STANDARD
    raw_compacted: int = 0  #: raw inputs tagged (or to tag) ``lake-state=compacted``
    raw_gone: int = 0  #: raw inputs that no longer exist (already expired)
    archived: str | None = None  #: the class the partition left the catalog for in this run
    skipped: str | None = None  #: why the partition was left alone
    #: the curated objects tagged (or to tag), with their new tier (STANDARD: our tag removed)
    changes: dict[str, str] = field(default_factory=dict)


@dataclass
class TagReport:
    """The tagging pass over a table; ``applied`` False means nothing was written (a plan)."""

    today: str
    applied: bool
    reason: str
    partitions: list[PartitionTagging] = field(default_factory=list)
    requests: int = 0  #: tag and state reads and writes sent to storage

    def _sum(self, name: str) -> int:
        return sum(getattr(p, name) for p in self.partitions)

    @property
    def totals(self) -> dict[str, int]:
        """Object counts over every partition."""
        names = ("tagged", "unchanged", "kept_small", "raw_compacted", "raw_gone")
        return {n: self._sum(n) for n in names}

    @property
    def archived(self) -> list[str]:
        """The partitions that left the queryable catalog in this run."""
        return [p.dt for p in self.partitions if p.archived]

    def summary(self) -> dict[str, Any]:
        """Plain values for run metadata and the command line."""
        t = self.totals
        return {"tags_applied": self.applied, "tags_reason": self.reason, "objects_tagged": t["tagged"],
                "objects_unchanged": t["unchanged"], "objects_kept_small": t["kept_small"],
                "raw_tagged_compacted": t["raw_compacted"], "raw_gone": t["raw_gone"],
                "archived": self.archived, "tag_requests": self.requests}


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.n += 1


@dataclass
class _Op:
    """One tag to put on one object, merged into the object's other tags."""

    dt: str
    role: str
    key: str
    name: str
    value: str | None  # None removes our tag
    tags: dict[str, str] | None = None  # the object's whole tag set, when read in this run
    force: bool = False  # its tags could not be read: put ours even if nothing seems to change


@dataclass
class _Part:
    dt: str
    version: str
    manifest: dict[str, Any]
    entry: dict[str, Any]
    row: PartitionTagging
    published: bool
    known: dict[str, str] | None  # our tag per object from the state; None when unknown
    archived_in: str | None  # the archive record's class, when the day is out of the catalog
    read: dict[str, dict[str, str] | None] = field(default_factory=dict)
    tiers: dict[str, str] = field(default_factory=dict)  # the tier per movable object afterwards
    ops: list[_Op] = field(default_factory=list)


def tag_partitions(lake: Lake, policy: TieringPolicy | None = None, today: date | None = None, *,
                   dry_run: bool = False) -> TagReport:
    """Tag every published partition's objects with the tier its date calls for today.

    Curated objects get ``lake-tier=<class>`` when their tier changes; raw inputs of a published
    version get ``lake-state=compacted`` once per version (late arrivals, not being inputs, never
    do). A partition whose objects go to a class Athena cannot read leaves the catalog first
    (:func:`pipelines.archive.archive_partition`). On the embedded backend, or with ``dry_run``,
    nothing is tagged: the report says what would be (the embedded backend still archives then,
    its catalog behaves the same).
    """
    policy = policy or TieringPolicy.from_settings(lake.settings)
    today = layout.parse_dt(today) if today else datetime.now(UTC).date()
    taggable = lake.storage.has_tags
    applied = taggable and not dry_run
    reason = ("tags written" if applied else "dry run: nothing was tagged" if taggable else
              "the embedded backend has no object tags: nothing was tagged, this is what would be")
    report = TagReport(today.isoformat(), applied, reason)
    n = _Counter()
    state = _load_state(lake, n) if taggable else {}
    parts = _partitions(lake, policy, today, state, report)

    threads = max(1, lake.settings.s3_concurrency)
    if taggable:  # tags the state cannot vouch for are read, many at once
        wanted = [(p, o["key"]) for p in parts if p.known is None and p.row.target != "STANDARD"
                  for o in p.manifest["outputs"] if o["size"] >= policy.min_transition_bytes]
        reads = bounded_map(lambda w: _read_tags(lake, "curated", w[1], n), wanted,
                            min(threads, len(wanted) or 1), name="lake-tags")
        for (p, key), tags in zip(wanted, reads, strict=True):
            p.read[key] = tags
    for p in parts:
        _plan_objects(p, policy, today)

    try:
        parts = _archive_first(lake, policy, parts, perform=not dry_run)
        if applied:
            _tag_curated(lake, parts, threads, n)
        _tag_raw(lake, parts, threads, n, write=applied)
    finally:
        if applied:
            _save_state(lake, state, n)
        report.requests = n.n
    return report


# -- the partitions and what their objects need ----------------------------------------------


def _partitions(lake: Lake, policy: TieringPolicy, today: date, state: dict[str, dict],
                report: TagReport) -> list[_Part]:
    """The published partitions and the archived ones, with their manifests.

    Archived days are found from the archive records (:func:`pipelines.archive.archived`), not
    from the state: they are out of the catalog, and their objects may still have a colder class
    to go to. A day restored and published again is left alone while its restore lasts.
    """
    published = {p.dt: p.version for p in lake.catalog.list_partitions(lake.spec.table)}
    module = _archive_module()
    records = module.archived(lake) if module is not None else {}
    now = time.time()
    candidates = {**{dt: r.version for dt, r in records.items()}, **published}
    for dt in set(state) - set(candidates):
        del state[dt]  # neither published nor archived: nothing of ours to track
    parts = []
    for dt, version in sorted(candidates.items()):
        row = PartitionTagging(dt, version, policy.tier_for(layout.parse_dt(dt), today))
        report.partitions.append(row)
        record = records.get(dt)
        if record is not None and record.published and record.pinned(now):
            row.skipped = "restored and published again: left alone until its restore runs out"
            continue
        manifest = read_manifest(lake, dt, version)
        if manifest is None:
            row.skipped = "no manifest for the version"
            continue
        entry = state.setdefault(dt, {})
        if entry.get("version") != version:  # a new version: nothing known about its objects
            entry.clear()
            entry.update({"version": version, "tier": None, "raw_tagged_version": None})
        known = entry.get("tier")
        if not (isinstance(known, dict) and all(t in CLASSES for t in known.values())):
            known = None  # never written, or not by us: read the tags again
        archived_in = record.storage_class if record is not None and not record.published else None
        parts.append(_Part(dt, version, manifest, entry, row, dt in published, known and dict(known),
                           archived_in))
    return parts


def _plan_objects(p: _Part, policy: TieringPolicy, today: date) -> None:
    """Each output's tier, and the tag writes that changes need (the partition's row counts)."""
    day = layout.parse_dt(p.dt)
    created = datetime.fromtimestamp(p.manifest["created_at"], UTC).date()
    for o in p.manifest["outputs"]:
        key = o["key"]
        if o["size"] < policy.min_transition_bytes:
            # S3 bills a smaller IA/Glacier IR object as 128 KiB: it costs more cold than hot
            moving = policy.tier_for_object(day, created, today) != "STANDARD"
            p.row.kept_small += moving
            p.row.unchanged += not moving
            continue
        tags, force = None, False
        if p.known is not None:
            current = p.known.get(key, "STANDARD")
        elif key in p.read:
            tags = p.read[key]
            force = tags is None  # unreadable (moto, GLACIER class): put ours back
            tags = tags or {}
            current = tags.get(TIER_TAG, "STANDARD")
            if current not in CLASSES:  # not a value of ours: replace it
                current, force = "STANDARD", True
        else:
            # not read: the embedded backend has no tags, and on S3 the date calls for
            # STANDARD, where a tier never goes back to a warmer class (whatever the object
            # carries stays): nothing to read or write
            current = "STANDARD"
        tier = policy.tier_for_object(day, created, today, current=current)
        p.tiers[key] = tier
        if tier != current or force:
            p.ops.append(_Op(p.dt, "curated", key, TIER_TAG, None if tier == "STANDARD" else tier, tags, force))
            p.row.tagged += 1
            p.row.changes[key] = tier
        else:
            p.row.unchanged += 1
    p.row.tier = max(p.tiers.values(), key=CLASSES.index, default="STANDARD")


def _tag_curated(lake: Lake, parts: list[_Part], threads: int, n: _Counter) -> None:
    """Put the tier tags; once a partition's writes are all done, the state knows its tags."""
    by_dt = {p.dt: p for p in parts}
    pending = {p.dt: len(p.ops) for p in parts}

    def done(p: _Part) -> None:
        if p.known is None and not p.read and p.row.target == "STANDARD":
            return  # nothing was read: its tags stay unknown until its date calls for a move
        p.entry["tier"] = {k: t for k, t in sorted(p.tiers.items()) if t != "STANDARD"}

    def one(op: _Op, result: str) -> None:
        p = by_dt[op.dt]
        if result != "tagged":  # the state was stale: the object had the tag already
            p.row.tagged -= 1
            p.row.unchanged += 1
            del p.row.changes[op.key]
        pending[op.dt] -= 1
        if not pending[op.dt]:
            done(p)

    for p in parts:
        if not p.ops:
            done(p)
    _run(lake, [op for p in parts for op in p.ops], threads, n, one)


def _tag_raw(lake: Lake, parts: list[_Part], threads: int, n: _Counter, *, write: bool) -> None:
    """Tag the raw inputs of each published version ``lake-state=compacted``, once per version.

    Only a version's inputs: a raw object that landed after the compaction is not in the
    partition yet, and must not expire before a compaction includes it. The day's raw prefix is
    listed first (one request per 1,000 keys): inputs lifecycle already expired cost nothing
    more, which matters when a lost state sends every old day through here again.
    """
    ops = []
    by_dt = {p.dt: p for p in parts}
    pending = {p.dt: 0 for p in parts}
    for p in parts:
        inputs = p.manifest.get("inputs") or ()
        if p.entry.get("raw_tagged_version") == p.version or not inputs:
            continue
        present = set(lake.storage.list_keys("raw", layout.raw_day_prefix(lake.spec, p.dt)))
        for _ in range(max(1, -(-len(present) // 1000))):  # ListObjectsV2 pages
            n.add()
        for i in inputs:
            if i["key"] in present:
                ops.append(_Op(p.dt, "raw", i["key"], STATE_TAG, COMPACTED))
                pending[p.dt] += 1
            else:
                p.row.raw_gone += 1

    def one(op: _Op, result: str) -> None:
        p = by_dt[op.dt]
        p.row.raw_gone += result == "gone"
        p.row.raw_compacted += result == "tagged"
        pending[op.dt] -= 1
        if write and not pending[op.dt]:
            p.entry["raw_tagged_version"] = p.version

    if write:
        for p in parts:
            if not pending[p.dt]:
                p.entry["raw_tagged_version"] = p.version
    _run(lake, ops, threads, n, one, write=write)


# -- archive: out of the catalog before a class Athena cannot read ----------------------------


def _archive_module() -> ModuleType | None:
    try:
        return importlib.import_module("pipelines.archive")
    except ModuleNotFoundError as exc:
        if exc.name != "pipelines.archive":
            raise
        return None


def _archive(lake: Lake, dt: str, cls: str, version: str | None = None) -> Any:
    """Drop partition ``dt`` from the queryable catalog and record it archived in ``cls``
    (:func:`pipelines.archive.archive_partition`; idempotent, not if ``version`` moved on)."""
    module = _archive_module()
    if module is None:
        raise ConfigError(f"partition {dt} is due for {cls}, which Athena cannot read, but this build "
                          "has no pipelines.archive to take it out of the catalog first")
    return module.archive_partition(lake, dt, cls, expected_version=version)


def _archive_first(lake: Lake, policy: TieringPolicy, parts: list[_Part], *, perform: bool) -> list[_Part]:
    """Archive every partition whose objects go to an archive class, before any of them is
    tagged for it (with ``perform`` False, only say which would be). Returns the partitions to
    tag: one the archive refused (restored meanwhile, or a new version published) is not."""
    keep = []
    for p in parts:
        cold = [t for t in p.tiers.values() if t in policy.archive_classes]
        cls = max(cold, key=CLASSES.index, default=None)
        if cls is not None and cls != p.archived_in:
            # a published day leaves the catalog; an archived one has its record's class updated
            if perform:
                try:
                    _archive(lake, p.dt, cls, p.version)
                except LakeError as exc:
                    conflict = getattr(_archive_module(), "ArchiveConflict", ())
                    if not isinstance(exc, conflict):
                        raise
                    p.row.skipped = f"not archived, so not tagged: {exc}"
                    p.row.tagged = 0
                    p.row.changes.clear()
                    continue
            if p.published:
                p.row.archived = cls
        keep.append(p)
    return keep


# -- reading and writing tags ---------------------------------------------------------------


def _error_code(exc: BaseException) -> str:
    response = getattr(exc.__cause__, "response", None)
    return response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""


def _read_tags(lake: Lake, role: str, key: str, n: _Counter) -> dict[str, str] | None:
    """The object's tags; None when S3 will not tell (moto refuses GetObjectTagging on
    GLACIER-class objects, AWS answers)."""
    n.add()
    try:
        return lake.storage.get_tags(role, key)
    except LakeError as exc:
        if _error_code(exc) == "InvalidObjectState":
            return None
        raise


def _apply(lake: Lake, op: _Op, n: _Counter, write: bool) -> str:
    """Merge our tag into the object's tags and put them: ``tagged``, ``unchanged`` or ``gone``.

    PutObjectTagging replaces the whole set, so the set is read first (unless this run read it
    already): other tools' tags on the object survive ours.
    """
    tags = op.tags
    try:
        if tags is None:
            tags = _read_tags(lake, op.role, op.key, n)
            if tags is None:
                tags = {}  # unreadable: only ours can be put back
            elif tags.get(op.name) == op.value:
                return "unchanged"
        new = {k: v for k, v in tags.items() if k != op.name}
        if op.value is not None:
            new[op.name] = op.value
        if new == tags and not op.force:
            return "unchanged"
        if write:
            n.add()
            lake.storage.put_tags(op.role, op.key, new)
    except NotFoundError:
        if op.role == "curated":
            raise
        return "gone"  # a raw input lifecycle already expired
    except LakeError as exc:
        if op.role != "curated" and _error_code(exc) == "NoSuchKey":
            return "gone"
        raise
    return "tagged"


def _run(lake: Lake, ops: Iterable[_Op], threads: int, n: _Counter,
         done: Callable[[_Op, str], None], *, write: bool = True) -> None:
    ops = list(ops)
    results = bounded_map(lambda op: _apply(lake, op, n, write), ops, min(threads, len(ops) or 1),
                          name="lake-tags")
    for op, result in zip(ops, results, strict=False):
        done(op, result)


# -- the state document ------------------------------------------------------------------------


def _load_state(lake: Lake, n: _Counter) -> dict[str, dict]:
    """dt -> {"version", "tier": {key: class} or None (unknown), "raw_tagged_version"}: what
    this pass last tagged. Missing or unreadable, it is empty (every tag is read again)."""
    n.add()
    try:
        doc = orjson.loads(lake.storage.get("curated", state_key(lake.spec)))
    except NotFoundError:
        return {}
    except orjson.JSONDecodeError:
        return {}  # unreadable: rebuilt from the objects' tags
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or doc.get("table") != lake.spec.qualified_name:
        return {}
    out = {}
    for dt, entry in (doc.get("partitions") or {}).items():
        try:
            layout.parse_dt(dt)
            layout.check_version(entry["version"])
        except (ValueError, KeyError, TypeError):
            continue
        out[dt] = entry
    return out


def _save_state(lake: Lake, state: dict[str, dict], n: _Counter) -> None:
    n.add()
    doc = {"format": STATE_FORMAT, "table": lake.spec.qualified_name,
           "written_at": datetime.now(UTC).isoformat(timespec="seconds"), "partitions": state}
    lake.storage.put("curated", state_key(lake.spec), orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
