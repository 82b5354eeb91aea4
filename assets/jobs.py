"""Jobs, schedules and sensors."""

import hashlib

import dagster as dg

from assets.keys import CURATED, RAW, STAGED, TIERING
from assets.resources import LakeResource
from pipelines.land import pending
from pipelines.status import late_days

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
    compact_job, hour_of_day=3, minute_of_hour=0, name="compact_closed_day")

tier_schedule = dg.ScheduleDefinition(job=tier_job, cron_schedule="0 5 * * *", name="daily_tiering",
                                      execution_timezone="UTC")


@dg.sensor(job=land_job, minimum_interval_seconds=60,
           description="Requests a landing run when the inbox has objects not landed yet.")
def inbox_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """One run per distinct set of pending objects (the run key makes re-evaluation idempotent)."""
    todo = pending(lake.open())
    if not todo:
        return dg.SkipReason("inbox has nothing new")
    newest = max(o.mtime for o in todo)
    return dg.RunRequest(run_key=f"inbox-{len(todo)}-{newest:.6f}",
                         tags={"lake/pending_objects": str(len(todo))})


@dg.sensor(job=compact_job, minimum_interval_seconds=60,
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
