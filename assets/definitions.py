"""The Definitions object the workspace loads."""

import dagster as dg

from assets.curated import events, events_staged
from assets.freshness import freshness_job, freshness_schedule, yesterday_published
from assets.jobs import (
    compact_job,
    compact_schedule,
    inbox_sensor,
    land_job,
    late_data_sensor,
    tier_job,
    tier_schedule,
)
from assets.landing import raw_events
from assets.queue_sensor import landing_queue_sensor
from assets.resources import LakeResource
from assets.tiering import tiering_plan

defs = dg.Definitions(
    assets=[raw_events, events_staged, events, tiering_plan],
    asset_checks=[yesterday_published],
    jobs=[land_job, compact_job, tier_job, freshness_job],
    schedules=[compact_schedule, tier_schedule, freshness_schedule],
    sensors=[inbox_sensor, landing_queue_sensor, late_data_sensor],
    resources={"lake": LakeResource()},
)
