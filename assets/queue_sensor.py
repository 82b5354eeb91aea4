"""The queue landing trigger: S3 ObjectCreated events from SQS start landing runs.

Interchangeable with the listing trigger by one variable, ``LAKE_LANDING_TRIGGER`` (``queue`` or
``listing``): each sensor skips unless it is the one chosen. The engine is :mod:`pipelines.notify`.
"""

from __future__ import annotations

import dagster as dg

from assets.jobs import land_job
from assets.landing import land_run_config
from assets.resources import LakeResource
from pipelines import notify
from pipelines.lake import Lake


@dg.sensor(job=land_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests a landing run for the objects S3 announced on the landing events queue; "
           "deletes each message once its objects are landed (LAKE_LANDING_TRIGGER=queue).")
def landing_queue_sensor(context: dg.SensorEvaluationContext, lake: LakeResource):
    """One run per set of pending objects, at most ``notify.MAX_KEYS_PER_RUN`` (the run key,
    from their keys and ETags, makes re-evaluation before the run finishes start nothing new)."""
    settings = lake.settings()
    if settings.landing_trigger != "queue":
        return dg.SkipReason(f"LAKE_LANDING_TRIGGER is {settings.landing_trigger!r}, not 'queue'")
    poll = notify.poll(Lake.open(settings))
    for problem in poll.problems:
        context.log.warning(problem)
    if not poll.pending:
        return dg.SkipReason(poll.summary())
    return dg.RunRequest(run_key=poll.run_key, run_config=land_run_config(sorted(poll.pending)),
                         tags={"lake/trigger": "queue", "lake/pending_objects": str(len(poll.pending))})
