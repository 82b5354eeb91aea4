"""Write-audit-publish for one day: the unit every scheduler, backfill and CLI command runs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pipelines import layout
from pipelines.compact import CompactResult, compact_day, read_manifest
from pipelines.errors import AuditError
from pipelines.lake import Lake
from pipelines.land import raw_objects
from pipelines.publish import PublishResult, publish_version, publish_versions, retire_versions
from pipelines.verify import AuditReport, audit_version, read_audit


@dataclass
class DayResult:
    """Everything one day's run did: the version written, its audit, the publish and clean-up."""

    compact: CompactResult
    audit: AuditReport
    publish: PublishResult | None
    retired: list[str]

    @property
    def dt(self) -> str:
        return self.compact.dt

    @property
    def version(self) -> str:
        return self.compact.version


def write_and_audit(lake: Lake, dt: str | date) -> tuple[CompactResult, AuditReport]:
    """Write a new version of ``dt`` and audit it; nothing becomes visible.

    The audit recounts the raw copies compaction fetched (one download of the day, not two).
    """
    with tempfile.TemporaryDirectory(prefix="lake-wap-") as work:
        result = compact_day(lake, dt, work=Path(work))
        return result, audit_version(lake, result.dt, result.version, raw_files=result.raw_files)


def publish_audited(lake: Lake, result: CompactResult, audit: AuditReport) -> tuple[PublishResult, list[str]]:
    """Publish an audited version and retire versions whose grace period has passed."""
    if not audit.passed:
        raise AuditError(audit.summary())
    published = publish_version(lake, result.dt, result.version)
    return published, retire_versions(lake, result.dt)


def process_day(lake: Lake, dt: str | date) -> DayResult:
    """Compact, audit and publish one day. A failed audit raises and leaves the old version live."""
    result, audit = write_and_audit(lake, dt)
    published, retired = publish_audited(lake, result, audit)
    return DayResult(result, audit, published, retired)


#: the numbers a version's manifest counts, in the order they are reported
COUNT_KEYS = ("raw_events", "carried_rows", "rows", "duplicates", "files_in", "files_out", "bytes_in",
              "bytes_out")


@dataclass
class StagedBatch:
    """Staged (written and audited, not yet published) versions of several days."""

    staged: list[tuple[CompactResult, AuditReport]]
    no_data: list[str]

    @property
    def failed(self) -> list[AuditReport]:
        return [a for _, a in self.staged if not a.passed]

    def check(self, name: str) -> tuple[bool, dict[str, object]]:
        """One audit check over every staged day: passed only if it passed on all of them."""
        per_day = {a.dt: c for _, a in self.staged for c in a.checks if c.name == name}
        failed = sorted(dt for dt, c in per_day.items() if not c.passed)
        meta: dict[str, object] = {"days": len(per_day), "failed_days": failed}
        if len(per_day) == 1:
            meta.update(next(iter(per_day.values())).metadata)
        else:
            meta["by_day"] = {dt: c.metadata for dt, c in sorted(per_day.items())}
        if not per_day:
            # nothing staged (no raw data for any of the days): nothing to hold back; the
            # freshness check is what reports a day that should have had data
            meta["note"] = "no day of the run has raw data; nothing was staged"
        return not failed, meta

    def totals(self) -> dict[str, int]:
        """The batch's counts summed over its days (``carried_rows``: rows merged from a published
        version whose raw had expired; 0 for days compacted from their raw alone)."""
        return {k: sum(r.counts.get(k, 0) for r, _ in self.staged) for k in COUNT_KEYS}


def stage_days(lake: Lake, dts: list[str]) -> StagedBatch:
    """Write and audit each day that has raw data; days without any are listed, not failed."""
    staged, no_data = [], []
    for dt in dts:
        if not raw_objects(lake, dt):
            no_data.append(str(dt))
            continue
        staged.append(write_and_audit(lake, dt))
    return StagedBatch(staged, no_data)


def latest_audited(lake: Lake, dt: str | date) -> tuple[str, dict] | None:
    """The newest version of ``dt`` whose audit passed: (version, manifest), or None."""
    spec = lake.spec
    prefix = layout.partition_prefix(spec, dt)
    best = None
    for o in lake.storage.list("curated", prefix):
        if not o.key.endswith("/_audit.json"):
            continue
        version = o.key[len(prefix):].split("/", 1)[0]
        audit = read_audit(lake, dt, version)
        manifest = read_manifest(lake, dt, version)
        if audit and audit.get("passed") and manifest and (best is None or manifest["created_at"] > best[1]["created_at"]):
            best = (version, manifest)
    return best


def publish_days(lake: Lake, dts: list[str]) -> tuple[list[tuple[PublishResult, list[str]]], list[str]]:
    """Publish the newest audited version of each day in one catalog batch, then retire old ones.

    Returns (results, days with nothing staged).
    """
    chosen, missing = [], []
    for dt in dts:
        found = latest_audited(lake, dt)
        if found is None:
            missing.append(str(dt))
        else:
            chosen.append((dt, found[0]))
    published = publish_versions(lake, chosen)
    return [(p, retire_versions(lake, p.dt)) for p in published], missing
