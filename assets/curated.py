"""Write-audit-publish of the curated table, one UTC day per partition.

``events_staged`` compacts each day into a new, invisible version and audits it with blocking
checks; ``events`` runs only when every check passed and moves the catalog pointer.
"""


import dagster as dg

from assets.errors import RETRY, engine_errors
from assets.keys import CURATED, GROUP, RAW, STAGED
from assets.metadata import column_schema, ratio
from assets.partitions import daily
from assets.resources import LakeResource
from pipelines.schema import load_spec
from pipelines.verify import CHECK_DESCRIPTIONS
from pipelines.wap import publish_days, stage_days

#: several days per run in a backfill; the pool bounds how many run at once (dagster.yaml)
BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=7)
POOL = "compaction"
SPEC = load_spec()
#: what the staged and the published asset share: same days, same batches, same pool
_DAILY = {"partitions_def": daily, "backfill_policy": BACKFILL, "pool": POOL, "group_name": GROUP,
          "retry_policy": RETRY}


@dg.asset(
    key=STAGED,
    deps=[RAW],
    **_DAILY,
    kinds={"duckdb", "parquet"},
    description="A new version of each day: deduplicated by event_id, sorted, zstd Parquet. "
    "Not visible to readers until published.",
    check_specs=[dg.AssetCheckSpec(name, asset=STAGED, blocking=True, description=desc)
                 for name, desc in CHECK_DESCRIPTIONS.items()],
)
def events_staged(context: dg.AssetExecutionContext, lake: LakeResource):
    """Compact and audit the run's days."""
    with engine_errors():
        batch = stage_days(lake.open(), list(context.partition_keys))
    for name in CHECK_DESCRIPTIONS:
        passed, meta = batch.check(name)
        yield dg.AssetCheckResult(check_name=name, passed=passed, metadata=meta)
    t = batch.totals()
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": t["rows"], **t,
        "compaction_ratio": ratio(t["files_in"], t["files_out"]),
        "versions": {r.dt: r.version for r, _ in batch.staged},
        # Dagster records one metadata set per run for every partition of a backfill batch
        # (dagster-io/dagster#18123); the per-day numbers are here
        "by_day": {r.dt: r.counts for r, _ in batch.staged},
        "days_without_data": batch.no_data,
        "seconds": round(sum(r.manifest["seconds"] for r, _ in batch.staged), 3),
    })


@dg.asset(
    key=CURATED,
    deps=[STAGED],
    **_DAILY,
    kinds={"parquet", "duckdb"},
    description=f"{SPEC.description} Published per day through the catalog; query with `lake query`.",
    metadata={"dagster/column_schema": column_schema(SPEC), "schema_version": SPEC.version,
              "partition_key": SPEC.partition_key, "sort_keys": list(SPEC.sort_keys)},
)
def events(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Publish the audited versions of the run's days and retire superseded ones."""
    lk = lake.open()
    with engine_errors():
        done, missing = publish_days(lk, list(context.partition_keys))
    rows = sum(lk.catalog.get_partition(SPEC.table, p.dt).rows for p, _ in done)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows,
        "dagster/column_schema": column_schema(SPEC),
        "published": {p.dt: p.version for p, _ in done},
        "previous": {p.dt: p.previous for p, _ in done},
        "changed_days": sorted(p.dt for p, _ in done if p.changed),
        "location": dg.MetadataValue.path(done[0][0].location) if len(done) == 1 else
        [p.location for p, _ in done],
        "retired_versions": sorted(v for _, r in done for v in r),
        "days_without_data": missing,
    })
