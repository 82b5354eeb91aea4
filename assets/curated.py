"""Write-audit-publish of the curated table, one UTC day per partition.

``events_staged`` compacts each day into a new, invisible version and audits it with blocking
checks; ``events`` runs only when every check passed and moves the catalog pointer.
"""


import dagster as dg

from assets.errors import RETRY, engine_errors
from assets.keys import CURATED, GROUP, RAW, STAGED
from assets.metadata import column_schema, published_day, ratio, staged_day
from assets.partitions import daily
from assets.resources import LakeResource
from pipelines.schema import load_spec
from pipelines.status import day_status, watermark
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
    # partitioned checks: the UI shows each check's result per day
    check_specs=[dg.AssetCheckSpec(name, asset=STAGED, blocking=True, description=desc, partitions_def=daily)
                 for name, desc in CHECK_DESCRIPTIONS.items()],
)
def events_staged(context: dg.AssetExecutionContext, lake: LakeResource):
    """Compact and audit the run's days."""
    with engine_errors():
        batch = stage_days(lake.open(), list(context.partition_keys))
    t = batch.totals()
    summary = {"days": len(batch.staged), "days_without_data": batch.no_data,
               "compaction_ratio": ratio(t["files_in"], t["files_out"]), **t}
    checks = [dg.AssetCheckResult(check_name=name, passed=passed, metadata=meta)
              for name in CHECK_DESCRIPTIONS for passed, meta in [batch.check(name)]]
    single = len(context.partition_keys) == 1
    if single and batch.staged:
        yield dg.MaterializeResult(metadata=staged_day(batch.staged[0][0]), check_results=checks)
        return
    # A run of several days records one materialization for all of them (dagster-io/dagster#18123):
    # it carries the batch totals, and one event per day follows with that day's own numbers and
    # check results, so the Plots tab and the per-partition check view read per day.
    yield dg.MaterializeResult(metadata={"dagster/row_count": t["rows"], **summary}, check_results=checks)
    for result, audit in batch.staged:
        yield dg.AssetMaterialization(asset_key=STAGED, partition=result.dt, metadata=staged_day(result))
        for c in audit.checks:
            yield dg.AssetCheckEvaluation(asset_key=STAGED, check_name=c.name, passed=c.passed,
                                          partition=result.dt, metadata=c.metadata,
                                          description=None if c.passed else audit.summary())


@dg.asset(
    key=CURATED,
    deps=[STAGED],
    **_DAILY,
    kinds={"parquet", "duckdb"},
    description=f"{SPEC.description} Published per day through the catalog; query with `lake query`.",
    metadata={"dagster/column_schema": column_schema(SPEC), "schema_version": SPEC.version,
              "partition_key": SPEC.partition_key, "sort_keys": list(SPEC.sort_keys)},
)
def events(context: dg.AssetExecutionContext, lake: LakeResource):
    """Publish the audited versions of the run's days and retire superseded ones."""
    lk = lake.open()
    with engine_errors():
        done, missing = publish_days(lk, list(context.partition_keys))
        status = {d.dt: d for d in day_status(lk)}
    parts = {p.dt: lk.catalog.get_partition(SPEC.table, p.dt) for p, _ in done}
    days = {p.dt: published_day(p, parts[p.dt].rows, len(parts[p.dt].files), status[p.dt].complete,
                                  lk.settings)
            for p, _ in done}
    summary = {"dagster/row_count": sum(d["rows"] for d in days.values()),
               "dagster/column_schema": column_schema(SPEC),
               "published": {p.dt: p.version for p, _ in done},
               "changed_days": sorted(p.dt for p, _ in done if p.changed),
               "retired_versions": sorted(v for _, r in done for v in r),
               "days_without_data": missing,
               "complete_through": watermark(list(status.values())) or ""}
    if len(context.partition_keys) == 1 and days:
        yield dg.MaterializeResult(metadata={**summary, **next(iter(days.values()))})
        return
    yield dg.MaterializeResult(metadata=summary)  # see events_staged: one event per day follows
    for dt, meta in days.items():
        yield dg.AssetMaterialization(asset_key=CURATED, partition=dt,
                                      metadata={**meta, "dagster/column_schema": column_schema(SPEC)})
