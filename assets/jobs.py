"""Jobs, schedules and sensors."""

import hashlib
import time

import dagster as dg

from assets.keys import CURATED, RAW, STAGED, TIERING
from assets.landing import land_run_config
from assets.resources import LakeResource
from pipelines.lake import Lake
from pipelines.status import late_days
from pipelines.watch import batches, run_key, scan

land_job = dg.define_asset_job(
    "land_inbox", selection=dg.AssetSelection.assets(RAW), tags={"lake/stage": "landing"},
    description="Land every new inbox object.")

compact_job = dg.define_asset_job(
    "compact_day", selection=dg.AssetSelection.assets(STAGED, CURATED),
    tags={"lake/stage": "compaction"},
    description="Write, audit and publish one day (or a backfill range) of the curated table.")

tier_job = dg.define_asset_job(
    "tier", selection=dg.AssetSelection.assets(TIERING), tags={"lake/stage": "tiering"})

#: after each UTC day closes plus the lateness allowance (2 h by default), compact it
compact_schedule = dg.build_schedule_from_partitioned_job(
    compact_job, hour_of_day=3, minute_of_hour=0, name="compact_closed_day",
    default_status=dg.DefaultScheduleStatus.RUNNING)

tier_schedule = dg.ScheduleDefinition(job=tier_job, cron_schedule="0 5 * * *", name="daily_tiering",
                                      execution_timezone="UTC",
                                      default_status=dg.DefaultScheduleStatus.RUNNING)


#: landing objects per landing run the inbox sensor requests
KEYS_PER_RUN = 1000


@dg.sensor(job=land_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Lists the landing bucket (LAKE_LANDING_TRIGGER=listing) and requests landing runs "
           "for exactly the objects not landed yet; a durable cursor keeps each tick cheap.")
def inbox_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """Landing runs of at most KEYS_PER_RUN new objects each (see :func:`pipelines.watch.scan`)."""
    settings = lake.settings()
    if settings.landing_trigger != "listing":
        return dg.SkipReason(f"LAKE_LANDING_TRIGGER={settings.landing_trigger}: the queue sensor lands")
    found = scan(Lake.open(settings), context.cursor, time.time())
    context.update_cursor(found.cursor)
    if not found.objects:
        return dg.SkipReason(f"no new landing objects ({found.listed} listed, {found.checked} checked)")
    return [dg.RunRequest(run_key=run_key(batch, found.generation),
                          run_config=land_run_config([o.key for o in batch]),
                          tags={"lake/trigger": "listing", "lake/pending_objects": str(len(batch))})
            for batch in batches(found.objects, KEYS_PER_RUN)]


@dg.sensor(job=compact_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Re-compacts and re-publishes exactly the published days that late events "
           "landed in; days nobody touched are not re-run.")
def late_data_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """One run per late day and per set of late raw objects (the run key: the same late data
    never starts a second run; more late data for the day does)."""
    late = late_days(lake.open())
    if not late:
        return dg.SkipReason("no published day has raw objects its published version lacks")
    return [dg.RunRequest(run_key=f"late-{dt}-{_digest(keys)}", partition_key=dt,
                          tags={"lake/trigger": "late-data", "lake/late_objects": str(len(keys))})
            for dt, keys in sorted(late.items())]


def _digest(keys: tuple[str, ...]) -> str:
    return hashlib.blake2b("\n".join(keys).encode(), digest_size=8).hexdigest()
