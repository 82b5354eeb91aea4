"""TIER, applied: lifecycle rules, restores that run out, and object tags, in that order.

Last, landed landing objects that outlived the landing expiry untagged get their
``lake-state=landed`` tag (:func:`pipelines.land.retag_landed`: the retry of a tag that failed
at landing).

The one entry point the tiering asset and ``lake tier apply`` share. On S3 it writes the policy's
lifecycle rules (a no-op when they are current), archives again the restored days whose copies
are about to expire, then tags objects by their partition's date (archiving first the days bound
for a class Athena cannot read). The embedded backend has no rules or tags: there it only takes
archive-bound days out of the catalog, as S3 would, and reports what it would tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pipelines.archive import expire_restores
from pipelines.lake import Lake
from pipelines.land import RetagReport, retag_landed
from pipelines.lifecycle import LifecycleReport, apply_lifecycle
from pipelines.tagging import TagReport, tag_partitions
from pipelines.tier import TieringPolicy


@dataclass
class TieringRun:
    """What one application of the policy did (or, with ``dry_run``, would do)."""

    lifecycle: LifecycleReport | None  #: None on the embedded backend
    restores_expired: list[str]
    tags: TagReport
    landing: RetagReport  #: landed landing objects tagged late (nothing on the embedded backend)

    def summary(self) -> dict[str, Any]:
        """Plain values for run metadata."""
        out: dict[str, Any] = {"restores_expired": self.restores_expired, **self.tags.summary(),
                               **self.landing.summary()}
        if self.lifecycle is not None:
            out["lifecycle"] = self.lifecycle.summary()
            out["lifecycle_buckets_written"] = list(self.lifecycle.written)
        return out


def apply_tiering(lake: Lake, policy: TieringPolicy | None = None, today: date | None = None, *,
                  dry_run: bool = False) -> TieringRun:
    """Apply the tiering policy to the lake (see the module docstring)."""
    policy = policy or TieringPolicy.from_settings(lake.settings)
    lifecycle = apply_lifecycle(lake, policy, dry_run=dry_run) if lake.settings.backend == "s3" else None
    expired = [] if dry_run else expire_restores(lake)
    tags = tag_partitions(lake, policy, today, dry_run=dry_run)
    return TieringRun(lifecycle, expired, tags, retag_landed(lake, dry_run=dry_run))
