"""Dagster metadata built from the table spec and engine results.

Every per-day value is a flat number, text or path, so the asset's Plots tab draws each one over
time, partition by partition.
"""

from __future__ import annotations

from urllib.parse import quote

import dagster as dg

from pipelines.compact import CompactResult
from pipelines.config import LakeSettings
from pipelines.publish import PublishResult
from pipelines.schema import TableSpec
from pipelines.wap import COUNT_KEYS


def column_schema(spec: TableSpec) -> dg.TableSchema:
    """The ``dagster/column_schema`` of a table, generated from its schema file."""
    return dg.TableSchema(columns=[dg.TableColumn(name=n, type=t, description=d)
                                   for n, t, d in spec.describe_columns()])


def ratio(a: float, b: float) -> float:
    """``a / b`` rounded for display; 0 when there is nothing to divide by."""
    return round(a / b, 2) if b else 0.0


def staged_day(result: CompactResult) -> dict[str, object]:
    """The numbers of one staged version: rows, duplicates, files and bytes in and out, seconds."""
    counts = {k: int(result.counts.get(k, 0)) for k in COUNT_KEYS}
    return {"dagster/row_count": counts["rows"], **counts,
            "compaction_ratio": ratio(counts["files_in"], counts["files_out"]),
            "seconds": float(result.manifest["seconds"]), "version": result.version,
            "reused": result.reused}


def published_day(p: PublishResult, rows: int, files: int, complete: bool,
                  settings: LakeSettings) -> dict[str, object]:
    """One published day: where it lives, what it replaced, and whether the day is complete."""
    meta: dict[str, object] = {
        "dagster/row_count": rows, "rows": rows, "files": files, "version": p.version,
        "previous": p.previous or "", "changed": p.changed, "complete": complete,
        "location": dg.MetadataValue.path(p.location)}
    console = console_url(p.location, settings)
    if console:
        meta["console"] = dg.MetadataValue.url(console)
    return meta


def console_url(location: str, settings: LakeSettings) -> str | None:
    """The AWS console page of an ``s3://`` location; None off AWS (a custom endpoint, a folder)."""
    if not location.startswith("s3://") or settings.s3_endpoint_url:
        return None
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return (f"https://s3.console.aws.amazon.com/s3/buckets/{quote(bucket)}"
            f"?region={quote(settings.aws_region)}&prefix={quote(prefix.rstrip('/') + '/')}")
