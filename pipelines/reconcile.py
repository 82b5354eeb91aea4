"""Reconcile the catalog with the lake: does every day point at the version the lake vouches for?

The lake side is what the curated bucket holds: per day, the newest version with a manifest and a
passing audit (:func:`pipelines.wap.latest_audited`), the one a publish would choose. The catalog
side is what readers see (:meth:`Catalog.list_partitions`). They drift apart when a publish is cut
short between writing and pointing, when someone edits Glue by hand, or when objects are deleted
behind the catalog's back. Findings per day:

``missing``
    the lake has an audited version, the catalog has no partition for the day;
``missing_version``
    the catalog points at a version whose manifest or data files are gone;
``superseded``
    the catalog points at an audited version older (by manifest ``created_at``) than the newest,
    and the newest already existed when the older one was published (a newer version written
    *after* that publish is staged, waiting for its own publish step: it is listed in
    :attr:`ReconcileReport.staged`, counted ok and left alone);
``unaudited``
    the catalog points at a version without a passing audit that is not older than the newest
    audited one: not rolled back automatically, since someone published it on purpose or by hand;
``orphan``
    the catalog has a partition for a day with no data at all in the lake.

A day taken out of the catalog on purpose because its files went to an archive class
(:mod:`pipelines.archive`) is not ``missing``: it is listed in :attr:`ReconcileReport.archived`
(kind ``archived``), counted consistent, and a fix never publishes it (its files may be
unreadable; ``lake restore`` brings it back).

With ``fix=True``, the expected version is published through :func:`pipelines.publish.publish_version`
(compare-and-set, refuses unaudited versions) and orphans are dropped after re-checking that their
location really is empty. Each day is fixed on its own: one failure is reported, not raised.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from pipelines import layout
from pipelines.archive import ArchiveRecord, archive_record
from pipelines.archive import archived as archived_days
from pipelines.catalog import Partition
from pipelines.compact import read_manifest
from pipelines.lake import Lake
from pipelines.publish import publish_version
from pipelines.verify import read_audit
from pipelines.wap import latest_audited

KINDS = ("missing", "missing_version", "superseded", "unaudited", "orphan")
#: the kinds a fix publishes the lake's version for
_PUBLISH_KINDS = frozenset({"missing", "missing_version", "superseded"})


@dataclass(frozen=True)
class Finding:
    """One day on which the catalog and the lake disagree."""

    dt: str
    kind: str
    catalog_version: str | None
    lake_version: str | None
    detail: str


@dataclass(frozen=True)
class Fix:
    """What a fix did for one finding: ``published``, ``dropped`` or ``skipped``; ``ok`` if done."""

    dt: str
    kind: str
    action: str
    ok: bool
    detail: str


@dataclass
class ReconcileReport:
    """The findings of one reconcile run, the days that were consistent, and the fixes made."""

    table: str
    findings: list[Finding] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    #: days whose newest audited version was written after the published one (kind ``staged``):
    #: consistent, listed for information, never published by a fix
    staged: list[Finding] = field(default_factory=list)
    #: days out of the catalog because they are archived (kind ``archived``): consistent, never
    #: published by a fix
    archived: list[Finding] = field(default_factory=list)

    @property
    def fixed(self) -> list[Fix]:
        return [f for f in self.fixes if f.ok]

    @property
    def failed(self) -> list[Fix]:
        return [f for f in self.fixes if not f.ok]

    @property
    def clean(self) -> bool:
        """True when there was nothing to fix."""
        return not self.findings

    def by_kind(self) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {k: [] for k in KINDS}
        for f in self.findings:
            out[f.kind].append(f)
        return out

    def summary(self) -> str:
        """One line: counts per kind, and fixes made or failed."""
        counts = [f"{len(v)} {k}" for k, v in self.by_kind().items() if v]
        text = f"{self.table}: {len(self.ok)} ok" + "".join(", " + c for c in counts)
        if self.staged:
            text += f" ({len(self.staged)} with a newer version staged)"
        if self.archived:
            text += f", {len(self.archived)} archived"
        if self.fixes:
            text += f"; fixed {len(self.fixed)}, failed {len(self.failed)}"
        return text


@dataclass
class _Day:
    """What the curated bucket holds for one day: keys per version folder."""

    versions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def _lake_days(lake: Lake) -> dict[str, _Day]:
    """Every day with objects in the curated bucket, from one listing of the table prefix."""
    spec = lake.spec
    base = layout.table_prefix(spec) + "/"
    marker = spec.partition_key + "="
    days: dict[str, _Day] = {}
    for key in lake.storage.list_keys("curated", base):
        parts = key[len(base):].split("/")
        if len(parts) < 2 or not parts[0].startswith(marker):
            continue
        try:
            day = layout.parse_dt(parts[0][len(marker):]).isoformat()
        except ValueError:
            continue  # not a partition folder this table writes
        version = parts[1] if len(parts) > 2 else ""  # "" for objects directly under dt=
        days.setdefault(day, _Day()).versions[version].add(key)
    return days


def _version_gaps(lake: Lake, p: Partition, keys: set[str]) -> tuple[str | None, dict | None]:
    """(why the catalog's version of a day cannot be read or None when it is whole, its manifest)."""
    spec = lake.spec
    try:
        manifest_key = layout.manifest_key(spec, p.dt, p.version)
    except ValueError as exc:  # Glue gives version "" to partitions other tools registered
        return f"the catalog's version is not a version id: {exc}", None
    manifest = read_manifest(lake, p.dt, p.version) if manifest_key in keys else None
    if manifest is None:
        return f"version {p.version} has no manifest", None
    outputs = [o["key"] for o in manifest.get("outputs", ())]
    gone = [k for k in outputs if k not in keys]
    if gone:
        return (f"version {p.version} lacks {len(gone)} of its {len(outputs)} data files, "
                f"e.g. {gone[0]}"), manifest
    uris = {lake.storage.uri("curated", k) for k in keys}
    listed = [f for f in p.files if f not in uris]
    if listed:
        return f"the catalog lists {len(listed)} files that do not exist, e.g. {listed[0]}", manifest
    return None, manifest


def _audit_passed(lake: Lake, dt: str, version: str) -> bool:
    audit = read_audit(lake, dt, version)
    return bool(audit and audit.get("passed"))


def find(lake: Lake, archived: dict[str, ArchiveRecord] | None = None
         ) -> tuple[list[Finding], list[str], list[Finding]]:
    """Compare lake and catalog; returns (findings, days that agree, staged days). Reads only.

    Archived days out of the catalog (``archived``, read when not given) are no finding.
    """
    spec = lake.spec
    days = _lake_days(lake)
    catalog = {p.dt: p for p in lake.catalog.list_partitions(spec.table)}
    archived = archived_days(lake) if archived is None else archived
    findings, ok, staged = [], [], []
    for dt in sorted(set(days) | set(catalog)):
        p, day = catalog.get(dt), days.get(dt)
        if p is None and dt in archived:
            continue  # out of the catalog on purpose: reported by reconcile() as archived
        if day is None:
            findings.append(Finding(dt, "orphan", p.version, None,
                                    f"no objects under {layout.partition_prefix(spec, dt)}"))
            continue
        has_audit = any(k.endswith("/_audit.json") for keys in day.versions.values() for k in keys)
        best = latest_audited(lake, dt) if has_audit else None
        expected = best[0] if best else None
        if p is None:
            if expected is not None:
                findings.append(Finding(dt, "missing", None, expected,
                                        f"audited version {expected} is not in the catalog"))
            continue  # nothing audited yet: a compaction in progress or failed, not a catalog fault
        gap, manifest = _version_gaps(lake, p, day.versions.get(p.version, set()))
        if gap is not None:
            hint = f"; newest audited is {expected}" if expected else "; no audited version to publish"
            findings.append(Finding(dt, "missing_version", p.version, expected, gap + hint))
            continue
        if expected is None or expected == p.version:
            if _audit_passed(lake, dt, p.version):
                ok.append(dt)
            else:
                findings.append(Finding(dt, "unaudited", p.version, expected,
                                        f"version {p.version} has no passing audit"))
            continue
        ours, newest = manifest.get("created_at"), best[1]["created_at"]
        if ours is not None and newest > ours and newest > p.published_at:
            # written after the current publish: staged, waiting for its own publish step (a
            # batch may hold it back until every day passes), not something the catalog missed
            staged.append(Finding(dt, "staged", p.version, expected,
                                  f"{expected} was written after {p.version} was published"))
            ok.append(dt)
        elif ours is not None and newest > ours:
            findings.append(Finding(dt, "superseded", p.version, expected,
                                    f"{expected} is newer (created {newest:.3f} > {ours:.3f}) and "
                                    "existed when the older one was published"))
        elif _audit_passed(lake, dt, p.version):
            ok.append(dt)  # not older than the newest audited: a publish would not change it
        else:
            findings.append(Finding(dt, "unaudited", p.version, expected,
                                    f"version {p.version} has no passing audit and is not older "
                                    f"than the newest audited {expected}; not rolled back"))
    return findings, ok, staged


def _location_key(lake: Lake, location: str) -> str | None:
    """The curated-bucket key prefix a catalog location names, or None when it is elsewhere."""
    prefix = layout.table_prefix(lake.spec) + "/"
    base = lake.storage.uri("curated", prefix)
    if not location.startswith(base):
        return None
    rest = location[len(base):]
    return prefix + rest if rest else prefix


def _fix_publish(lake: Lake, f: Finding) -> Fix:
    spec = lake.spec
    if f.lake_version is None:
        return Fix(f.dt, f.kind, "skipped", False,
                   f"no audited version of dt={f.dt} to publish: run `lake compact --date {f.dt}`")
    if f.lake_version == f.catalog_version:
        return Fix(f.dt, f.kind, "skipped", False,
                   f"the newest audited version {f.lake_version} is the broken one; nothing better to "
                   "publish (compaction reuses a version that has a manifest: remove it, then re-run "
                   f"`lake compact --date {f.dt}`)")
    # Re-read both sides: another run may have published since the scan, and publishing the
    # scanned version then would roll the day back.
    current = lake.catalog.get_partition(spec.table, f.dt)
    record = archive_record(lake, f.dt) if current is None else None
    if record is not None:
        return Fix(f.dt, f.kind, "skipped", True, f"archived since the scan ({record.label}); not published")
    if (current.version if current else None) != f.catalog_version:
        return Fix(f.dt, f.kind, "skipped", False,
                   f"the catalog moved to {current.version if current else None} since the scan; re-run")
    best = latest_audited(lake, f.dt)
    if best is None or best[0] != f.lake_version:
        return Fix(f.dt, f.kind, "skipped", False,
                   f"the newest audited version is now {best[0] if best else None}; re-run")
    result = publish_version(lake, f.dt, f.lake_version)
    if result.previous != f.catalog_version:
        # publish_version compares against what it read itself; a publish that slipped in between
        # our check and its read was replaced. Say so: a re-run restores the newest version.
        return Fix(f.dt, f.kind, "published", False,
                   f"published {f.lake_version} over {result.previous}, which another run published "
                   "during the fix; re-run reconcile")
    return Fix(f.dt, f.kind, "published", True,
               f"{f.catalog_version or 'nothing'} -> {f.lake_version}")


def _fix_orphan(lake: Lake, f: Finding) -> Fix:
    spec = lake.spec
    current = lake.catalog.get_partition(spec.table, f.dt)
    if current is None:
        return Fix(f.dt, f.kind, "skipped", True, "already gone from the catalog")
    if current.version != f.catalog_version:
        return Fix(f.dt, f.kind, "skipped", False,
                   f"the catalog moved to {current.version} since the scan; re-run")
    if next(iter(lake.storage.list_keys("curated", layout.partition_prefix(spec, f.dt))), None):
        return Fix(f.dt, f.kind, "skipped", False, "data appeared for the day since the scan; re-run")
    key = _location_key(lake, current.location)
    if key is None:
        return Fix(f.dt, f.kind, "skipped", False,
                   f"location {current.location} is outside the lake; not dropped (check it by hand)")
    if next(iter(lake.storage.list_keys("curated", key)), None):
        return Fix(f.dt, f.kind, "skipped", False,
                   f"location {current.location} holds data; not dropped (check it by hand)")
    lake.catalog.drop_partition(spec.table, f.dt)
    return Fix(f.dt, f.kind, "dropped", True, f"dropped partition at {current.version}")


def _fix(lake: Lake, f: Finding) -> Fix:
    try:
        if f.kind in _PUBLISH_KINDS:
            return _fix_publish(lake, f)
        if f.kind == "orphan":
            return _fix_orphan(lake, f)
        return Fix(f.dt, f.kind, "skipped", False, "needs a decision: publish a version by hand "
                   f"(`lake compact --date {f.dt}` publishes the newest audited one)")
    except Exception as exc:  # one day's failure must not stop the others
        return Fix(f.dt, f.kind, "skipped", False, f"{type(exc).__name__}: {exc}")


def reconcile(lake: Lake, fix: bool = False) -> ReconcileReport:
    """Compare what the lake published with what the catalog lists; optionally repair it.

    Read-only when ``fix`` is False. With ``fix``: publish the newest audited version of every
    ``missing``, ``missing_version`` and ``superseded`` day and drop ``orphan`` partitions whose
    location holds nothing; ``unaudited`` days are reported, never changed. Every day is fixed on
    its own, and a failure is recorded in :attr:`ReconcileReport.failed` instead of raised.
    """
    records = archived_days(lake)
    findings, ok, staged = find(lake, records)
    out = [Finding(dt, "archived", None, r.version, f"{r.label}: `lake restore --date {dt}` brings it back")
           for dt, r in records.items() if not r.published]
    report = ReconcileReport(lake.spec.table, findings, ok, staged=staged, archived=out)
    if fix:
        report.fixes = [_fix(lake, f) for f in findings]
    return report
