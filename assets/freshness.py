"""Freshness of the curated table: yesterday published by the configured hour, and the watermark."""

import dagster as dg

from assets.errors import engine_errors
from assets.keys import CURATED
from assets.resources import LakeResource
from pipelines.freshness import freshness


@dg.asset_check(
    asset=CURATED,
    name="yesterday_published",
    description="Yesterday (UTC) is published by LAKE_PUBLISH_DEADLINE_HOUR (06:00 UTC by default); "
    "reports the completeness watermark.",
)
def yesterday_published(lake: LakeResource) -> dg.AssetCheckResult:
    """Fails (severity ERROR) once the deadline passed without yesterday's partition published."""
    with engine_errors():
        verdict = freshness(lake.open())
    return dg.AssetCheckResult(passed=verdict.passed, severity=dg.AssetCheckSeverity.ERROR,
                               description=verdict.message, metadata=verdict.metadata())


freshness_job = dg.define_asset_job(
    "freshness", selection=dg.AssetSelection.checks(yesterday_published),
    description="Evaluate the curated table's freshness check.")

#: hourly, so a missed deadline is reported within the hour whichever hour it is set to (the
#: hour is read at run time; a cron fixed at load time could not follow LAKE_PUBLISH_DEADLINE_HOUR)
freshness_schedule = dg.ScheduleDefinition(
    job=freshness_job, cron_schedule="10 * * * *", name="hourly_freshness", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING)
