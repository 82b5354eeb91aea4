"""The demo, through the Dagster definitions: generate a week, land, compact, audit, publish, tier.

Runs the same jobs the schedules and sensors run, in-process, against a persistent instance, so
the runs and their metadata are in the UI afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from assets.definitions import defs
from assets.instance import open_instance
from pipelines.demo import DemoReport, generate_demo
from pipelines.lake import Lake
from pipelines.land import LandReport, read_ledger
from pipelines.status import DayStatus, day_status


@dataclass
class DemoResult:
    """What the demo generated and what the lake holds afterwards."""

    generated: DemoReport
    days: list[DayStatus]
    landing: dict[str, int]  # lines, landed, quarantined, quarantined_files over every landing file
    quarantine_reasons: dict[str, int]
    quarantined_by_arrival: dict[str, int]  # lines (and unreadable files) by the day they arrived
    run_ids: list[str]
    #: the older single days generated to show tiering (empty without ``history``)
    history: dict[str, DemoReport]


#: ages (days before today) of the single older days ``history`` adds: one per tier of the
#: default policy (STANDARD_IA from 30, GLACIER_IR from 90) and one over a year old
HISTORY_AGES = (45, 120, 400)
#: events in each older day, at least: enough for a Parquet file over S3's 128 KiB minimum
#: transition size, or tiering would rightly leave it in STANDARD
HISTORY_EVENTS = 2500


def run_demo(lake: Lake, *, days: int = 7, events_per_day: int = 2000, files_per_day: int = 40,
             seed: int = 7, today: date | None = None, instance: dg.DagsterInstance | None = None,
             history: bool = False, log=print) -> DemoResult:
    """Generate ``days`` days ending yesterday, then run the landing, compaction and tiering jobs.

    With ``history``, also one older day at each of :data:`HISTORY_AGES` (a late backfill of
    old data), so tiering has partitions of every age to act on.
    """
    today = today or datetime.now(UTC).date()
    start = today - timedelta(days=days)
    generated = generate_demo(lake.storage, start=start, days=days, events_per_day=events_per_day,
                              files_per_day=files_per_day, seed=seed)
    log(f"generated {generated.files} landing files, {generated.lines} lines "
        f"({generated.bad_lines} bad, {generated.corrupt_files} corrupt file) for {start}..{today - timedelta(days=1)}")
    old: dict[str, DemoReport] = {}
    for age in HISTORY_AGES if history else ():
        day = today - timedelta(days=age)
        # its own seed: other ids than the recent days', the same bytes on every run
        old[day.isoformat()] = generate_demo(
            lake.storage, start=day, days=1, events_per_day=max(events_per_day, HISTORY_EVENTS),
            files_per_day=max(2, files_per_day // 4), seed=seed * 1000 + age)
    if old:
        log(f"generated one older day each for {', '.join(sorted(old))} (ages {', '.join(map(str, HISTORY_AGES))} days)")
    instance = instance or open_instance()
    config = {"resources": {"lake": {"config": {"root": str(lake.settings.root_path),
                                                "backend": lake.settings.backend}}},
              "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    run_ids = []

    def run(job_name: str, label: str = "", **kwargs) -> None:
        result = defs.resolve_job_def(job_name).execute_in_process(
            run_config=config, instance=instance, raise_on_error=True, **kwargs)
        run_ids.append(result.run_id)
        log(f"dagster run {result.run_id[:8]} {job_name} {label}: success")

    run("land_inbox")
    touched = sorted({o["dt"] for f in read_ledger(lake) for o in f.outputs} - set(old))
    if touched:
        # One run over the whole range, as a UI backfill with the backfill policy would do.
        run("compact_day", f"dt {touched[0]}..{touched[-1]}", tags={"dagster/asset_partition_range_start": touched[0],
                                 "dagster/asset_partition_range_end": touched[-1]})
    for day in sorted(old):  # far apart: one run each, not a range of empty days between them
        run("compact_day", f"dt {day}", partition_key=day)
    run("tier")
    ledger = read_ledger(lake)
    # every landing pass's records together, counted the way a single pass reports them
    landed = LandReport(files=ledger)
    totals = {k: landed.total(k) for k in ("lines", "landed", "quarantined")}
    totals["quarantined_files"] = landed.quarantined_files
    by_arrival: dict[str, int] = {}
    for f in ledger:
        if f.quarantine_key:
            day = f.quarantine_key.split("arrival=", 1)[1].split("/", 1)[0]
            by_arrival[day] = by_arrival.get(day, 0) + f.quarantined + (1 if f.file_reason else 0)
    return DemoResult(generated, day_status(lake), totals, landed.reasons, by_arrival, run_ids, old)
