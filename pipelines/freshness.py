"""Freshness: is yesterday published by the configured hour, and how far is the table complete?"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipelines.lake import Lake
from pipelines.status import closes_at, day_status, watermark


@dataclass(frozen=True)
class Freshness:
    """The verdict of one freshness evaluation."""

    day: str  # the day that must be published (yesterday, UTC)
    deadline: str  # when it must be published by, ISO 8601 UTC
    due: bool  # the deadline has passed
    published_version: str | None
    published_rows: int | None
    raw_objects: int
    complete_through: str | None  # the completeness watermark (pipelines.status.watermark)
    passed: bool
    message: str

    def metadata(self) -> dict[str, object]:
        """The verdict as flat, plottable values (no nested dicts)."""
        return {"day": self.day, "deadline": self.deadline, "due": self.due,
                "published_version": self.published_version or "", "published_rows": self.published_rows or 0,
                "raw_objects": self.raw_objects, "complete_through": self.complete_through or ""}


def freshness(lake: Lake, now: float | None = None) -> Freshness:
    """Judge whether yesterday (UTC) is published by ``publish_deadline_hour`` (LAKE_PUBLISH_DEADLINE_HOUR).

    Before the deadline the check passes (not due yet). After it, it passes only if the day is
    published, and the message says what to do when it is not. A day with no raw data at all fails
    too: an empty day is almost always a broken producer or landing trigger, not a quiet day.
    """
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, tz=UTC).date()
    day = (today - timedelta(days=1)).isoformat()
    deadline = datetime(today.year, today.month, today.day, lake.settings.publish_deadline_hour, tzinfo=UTC)
    days = day_status(lake, now=now)
    mark = watermark(days)
    st = next((d for d in days if d.dt == day), None)
    version = st.published_version if st else None
    rows = st.published_rows if st else None
    raw = st.raw_objects if st else 0
    due = now >= deadline.timestamp()
    if version is not None or (st is not None and st.archive):
        passed, message = True, f"dt={day} is published ({rows} rows, version {version})"
    elif not due:
        passed, message = True, f"dt={day} is not published yet; it is due by {deadline:%Y-%m-%d %H:%M} UTC"
    elif raw:
        closed = datetime.fromtimestamp(closes_at(day, lake.settings.lateness_seconds), tz=UTC)
        passed, message = False, (
            f"dt={day} is not published at the {deadline:%H:%M} UTC deadline, though {raw} raw objects "
            f"landed for it (the day closed at {closed:%Y-%m-%d %H:%M} UTC). Look at the latest "
            f"compact_day run for partition {day} (failed audit? queued behind the concurrency "
            f"limit?), or launch it: `lake compact --date {day}` or materialize the partition.")
    else:
        passed, message = False, (
            f"dt={day} is not published at the {deadline:%H:%M} UTC deadline and no raw data landed "
            f"for it: check that producers are writing to the landing bucket and that the landing "
            f"trigger (LAKE_LANDING_TRIGGER={lake.settings.landing_trigger}) is running "
            f"(`lake status`, `lake ledger`).")
    return Freshness(day=day, deadline=deadline.isoformat(), due=due, published_version=version,
                     published_rows=rows, raw_objects=raw, complete_through=mark, passed=passed,
                     message=message)
