"""The ledger of landing objects: every landing object version (key + ETag) and its state. Read-only.

Landing writes one record per object version, last (see :mod:`pipelines.land`); this module
joins those records with what the lake holds now:

- ``seen``: in the landing bucket, no ledger record yet (not landed);
- ``landed``: landed, some of its events wait for compaction (N events into days ...);
- ``quarantined``: lines of it were quarantined (with reasons), or the whole object was;
- ``compacted``: every raw object it landed is held by a version of its day (published,
  staged or archived), which is named per day;
- ``raw-expired``: its raw objects are gone (lifecycle expires them once compacted).

An object can be in several states at once (a file with good and bad lines is ``compacted`` and
``quarantined``); :attr:`LedgerEntry.state` is the furthest along its life, ``states`` all of them.
Which version holds a raw object is worked out by :class:`DayVersions` and
:func:`compaction_of`, which ``lake trace`` uses too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines import layout
from pipelines.archive import ArchiveRecord, archive_record
from pipelines.catalog import Partition
from pipelines.compact import held_inputs, read_manifest
from pipelines.lake import Lake
from pipelines.land import FileResult, read_ledger

#: what became of one raw object (the states ``lake trace`` shows per raw object)
PUBLISHED, STAGED, NOT_COMPACTED, RAW_GONE, ARCHIVED = (
    "published", "staged", "not compacted yet", "raw expired", "archived")

#: the states of a landing object version, in the order of its life
SEEN, LANDED, QUARANTINED, COMPACTED, RAW_EXPIRED = "seen", "landed", "quarantined", "compacted", "raw-expired"
STATES = (SEEN, LANDED, QUARANTINED, COMPACTED, RAW_EXPIRED)


@dataclass(frozen=True)
class DayInfo:
    """One day as compaction left it: the published partition, the archive record, the complete
    manifests by version, and for each raw key the versions that hold its events."""

    published: Partition | None
    archive: ArchiveRecord | None
    manifests: dict[str, dict[str, Any]]
    holders: dict[str, frozenset[str]]


class DayVersions:
    """Per day, read once: :class:`DayInfo`, and (on demand) the raw keys that exist."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self._days: dict[str, DayInfo] = {}
        self._raw: dict[str, set[str]] = {}

    def get(self, dt: str) -> DayInfo:
        """The day's partition, archive record, manifests and holders (cached)."""
        if dt not in self._days:
            lake = self.lake
            prefix = layout.partition_prefix(lake.spec, dt)
            manifests: dict[str, dict[str, Any]] = {}
            for key in lake.storage.list_keys("curated", prefix):
                if key.endswith("/_manifest.json"):
                    version = key[len(prefix):].split("/", 1)[0]
                    manifest = read_manifest(lake, dt, version)
                    if manifest is not None:
                        manifests[version] = manifest
            holders: dict[str, set[str]] = defaultdict(set)
            for version, manifest in manifests.items():
                # inputs, and expired inputs whose rows a re-compaction carried over
                for raw_key in held_inputs(manifest):
                    holders[raw_key].add(version)
            self._days[dt] = DayInfo(lake.catalog.get_partition(lake.spec.table, dt),
                                     archive_record(lake, dt), manifests,
                                     {k: frozenset(v) for k, v in holders.items()})
        return self._days[dt]

    def raw_exists(self, dt: str, raw_key: str) -> bool:
        """Whether the raw object is still there (one listing of the day's raw prefix, cached)."""
        if dt not in self._raw:
            self._raw[dt] = set(self.lake.storage.list_keys("raw", layout.raw_day_prefix(self.lake.spec, dt)))
        return raw_key in self._raw[dt]


@dataclass(frozen=True)
class Compaction:
    """Which version of its day holds a raw object's events, and how that version stands."""

    state: str  # PUBLISHED, STAGED, "archived (CLASS)", NOT_COMPACTED or RAW_GONE
    version: str | None


def compaction_of(day: DayInfo, raw_key: str, raw_exists: bool) -> Compaction:
    """The version holding ``raw_key``: the published one if it does, else the archived one,
    else the newest staged one; not compacted yet when none does (raw expired if it is gone)."""
    holding = day.holders.get(raw_key, frozenset())
    if day.published is not None and day.published.version in holding:
        return Compaction(PUBLISHED, day.published.version)
    if day.archive is not None and day.archive.version in holding:
        return Compaction(f"{ARCHIVED} ({day.archive.storage_class})", day.archive.version)
    if holding:
        return Compaction(STAGED, max(holding, key=lambda v: day.manifests[v]["created_at"]))
    return Compaction(NOT_COMPACTED if raw_exists else RAW_GONE, None)


@dataclass
class DayOutput:
    """One raw object a landing object version landed: its day, events and what holds them."""

    dt: str
    hour: int | None
    raw_key: str
    events: int
    raw_exists: bool
    state: str  # see :func:`compaction_of`
    version: str | None


@dataclass
class LedgerEntry:
    """One landing object version and its state."""

    key: str
    etag: str
    size: int
    state: str
    states: list[str]
    #: the landing bucket still holds this version (False: replaced by a newer one, or expired)
    in_landing: bool
    digest: str | None = None
    lines: int | None = None
    landed: int | None = None
    quarantined: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    file_reason: str | None = None  # the whole object was quarantined
    quarantine_key: str | None = None
    outputs: list[DayOutput] = field(default_factory=list)

    @property
    def days(self) -> dict[str, int]:
        """Events landed per day."""
        out: dict[str, int] = defaultdict(int)
        for o in self.outputs:
            out[o.dt] += o.events
        return dict(sorted(out.items()))

    @property
    def versions(self) -> dict[str, str | None]:
        """Per day, the version holding this object's events (None while some of them wait)."""
        held: dict[str, set[str | None]] = defaultdict(set)
        for o in self.outputs:
            held[o.dt].add(o.version)
        return {dt: None if None in vs else ", ".join(sorted(vs))  # type: ignore[arg-type]
                for dt, vs in sorted(held.items())}

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(days=self.days, versions=self.versions)
        return doc


def entry_of(days: DayVersions, record: FileResult, in_landing: bool) -> LedgerEntry:
    """The state of one landed object version, from its ledger record and the lake now."""
    outputs = []
    for out in sorted(record.outputs, key=lambda o: o["key"]):
        exists = days.raw_exists(out["dt"], out["key"])
        c = compaction_of(days.get(out["dt"]), out["key"], exists)
        outputs.append(DayOutput(out["dt"], out.get("hour"), out["key"], int(out["rows"]), exists,
                                 c.state, c.version))
    states = _states(record, outputs)
    return LedgerEntry(record.source_key, record.etag, record.size, _primary(record, outputs), states,
                       in_landing, record.digest, record.lines, record.landed, record.quarantined,
                       dict(record.reasons), record.file_reason, record.quarantine_key, outputs)


def _states(record: FileResult, outputs: list[DayOutput]) -> list[str]:
    states = []
    if any(o.version is None and o.raw_exists for o in outputs) or not (outputs or record.quarantined
                                                                         or record.file_reason):
        states.append(LANDED)  # events wait for compaction (or an empty object: nothing to do)
    if record.quarantined or record.file_reason:
        states.append(QUARANTINED)
    if outputs and all(o.version is not None for o in outputs):
        states.append(COMPACTED)
    if outputs and not any(o.raw_exists for o in outputs):
        states.append(RAW_EXPIRED)
    return states


def _primary(record: FileResult, outputs: list[DayOutput]) -> str:
    """The furthest state along the object's life: landed -> compacted -> raw expired."""
    if not outputs:
        return QUARANTINED if record.quarantined or record.file_reason else LANDED
    if any(o.version is None and o.raw_exists for o in outputs):
        return LANDED
    if not any(o.raw_exists for o in outputs) or any(o.version is None for o in outputs):
        return RAW_EXPIRED  # all gone, or some gone that no version holds
    return COMPACTED


def ledger(lake: Lake, *, state: str | None = None, prefix: str = "") -> list[LedgerEntry]:
    """Every landing object version under ``prefix``: landed ones from the ledger, seen ones from
    the landing bucket; only those in ``state`` when given. By key, then ETag.

    Reads every ledger record, the landing listing, and per day touched its manifests and raw
    listing: a report, not something to run on every sensor tick."""
    if state is not None and state not in STATES:
        raise ValueError(f"unknown state {state!r}: expected one of {', '.join(STATES)}")
    landing = {o.key: o for o in lake.storage.list("landing", prefix)}
    records = [r for r in read_ledger(lake) if r.source_key.startswith(prefix)]
    days = DayVersions(lake)
    entries = []
    for r in records:
        current = landing.get(r.source_key)
        entries.append(entry_of(days, r, current is not None and current.etag == r.etag))
    landed = {r.digest for r in records}
    for o in landing.values():
        if layout.object_digest(o.key, o.etag) not in landed:
            entries.append(LedgerEntry(o.key, o.etag, o.size, SEEN, [SEEN], True,
                                       digest=layout.object_digest(o.key, o.etag)))
    entries.sort(key=lambda e: (e.key, e.etag))
    return [e for e in entries if state is None or state in e.states]
