"""What the Dagster UI shows per partition: numbers that plot per day, check results per day,
the published location and completeness, and the freshness check with its watermark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from assets.curated import events, events_staged
from assets.definitions import defs
from assets.freshness import yesterday_published
from assets.keys import CURATED, STAGED
from assets.landing import raw_events
from assets.resources import LakeResource
from pipelines.freshness import freshness
from pipelines.land import land_inbox, raw_objects
from pipelines.verify import CHECK_DESCRIPTIONS
from tests.conftest import event, ndjson

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


def _resources(lake):
    return {"lake": LakeResource(root=str(lake.settings.root_path))}


def _config(lake):
    return {"resources": {"lake": {"config": {"root": str(lake.settings.root_path)}}}}


def _land(lake, files: dict[str, list]) -> None:
    for key, evs in files.items():
        lake.storage.put("landing", key, ndjson(evs))
    assert dg.materialize([raw_events], resources=_resources(lake)).success


def _backfill_run(lake, instance, first: str, last: str, **kw):
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return defs.resolve_job_def("compact_day").execute_in_process(
        run_config=_config(lake), tags=tags, instance=instance, **kw)


def _latest(instance, key, dt):
    event = instance.get_latest_materialization_event(key) if dt is None else next(iter(
        instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[dt]),
                                        limit=1, ascending=False).records)).event_log_entry
    return event.asset_materialization.metadata


def test_a_backfill_run_records_each_days_own_numbers_and_check_results(lake):
    # 10, 20 and 30 events, with 1, 2 and 3 duplicated copies: every day's numbers differ
    _land(lake, {f"segment/{d}.ndjson.gz": [event(n * 100 + i, day=d) for i in range(10 * (n + 1))]
                 + [event(n * 100 + i, day=d) for i in range(n + 1)] for n, d in enumerate(DAYS)})
    instance = dg.DagsterInstance.ephemeral()
    result = _backfill_run(lake, instance, DAYS[0], DAYS[-1])
    assert result.success

    for n, dt in enumerate(DAYS):
        staged = _latest(instance, STAGED, dt)
        # the newest materialization of each partition is that day's, not the batch total
        assert staged["rows"].value == 10 * (n + 1) and staged["duplicates"].value == n + 1
        assert staged["raw_events"].value == 11 * (n + 1) and staged["carried_rows"].value == 0
        assert staged["files_in"].value == 1 and staged["files_out"].value == 1
        assert staged["bytes_out"].value > 0 and staged["seconds"].value >= 0
        assert staged["version"].value.startswith("v-")
        published = _latest(instance, CURATED, dt)
        assert published["dagster/row_count"].value == 10 * (n + 1)
        part = lake.catalog.get_partition("events", dt)
        assert published["version"].value == part.version
        assert isinstance(published["location"], dg.PathMetadataValue)
        assert published["location"].value == part.location
        assert published["complete"].value is True  # Nov 2026 closed long ago, and is published
        assert published["files"].value == len(part.files)
        assert "dagster/column_schema" in published

    # each check has a result for each day
    evaluations = [e for e in result.get_asset_check_evaluations() if e.partition]
    assert {(e.check_name, e.partition) for e in evaluations} == {
        (name, dt) for name in CHECK_DESCRIPTIONS for dt in DAYS}
    assert all(e.passed for e in evaluations)
    # the batch's own materialization carries the totals and the watermark
    summary = result.asset_materializations_for_node("clickstream__events")[0].metadata
    assert summary["dagster/row_count"].value == 60
    assert summary["complete_through"].value == DAYS[-1]


def test_a_failing_day_in_a_backfill_is_named_with_its_failed_check(lake):
    _land(lake, {f"segment/{d}.ndjson.gz": [event(n * 100 + i, day=d) for i in range(5)]
                 for n, d in enumerate(DAYS)})
    stray = raw_objects(lake, DAYS[2])[0]  # another day's events copied into the middle day
    lake.storage.put("raw", f"clickstream/events/dt={DAYS[1]}/hour=23/manual-copy.ndjson.gz",
                     lake.storage.get("raw", stray.key))
    result = _backfill_run(lake, dg.DagsterInstance.ephemeral(), DAYS[0], DAYS[-1], raise_on_error=False)
    assert not result.success
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed and e.partition]
    assert [(e.check_name, e.partition) for e in failed] == [("event_time_in_partition", DAYS[1])]
    assert f"dt={DAYS[1]}" in failed[0].description and "event_time_in_partition" in failed[0].description
    assert lake.catalog.list_partitions("events") == []  # the blocking check held back the whole batch


def test_a_run_over_days_without_data_succeeds_and_lists_them(lake):
    _land(lake, {"segment/a.ndjson.gz": [event(i, day=DAYS[0]) for i in range(4)]})
    instance = dg.DagsterInstance.ephemeral()
    result = _backfill_run(lake, instance, DAYS[1], DAYS[2])
    assert result.success
    staged = result.asset_materializations_for_node("clickstream__events_staged")[0].metadata
    assert staged["days_without_data"].value == DAYS[1:] and staged["rows"].value == 0
    assert lake.catalog.list_partitions("events") == []


def _yesterday(now: datetime) -> str:
    return (now.date() - timedelta(days=1)).isoformat()


@pytest.mark.parametrize("hour", [5, 7])
def test_freshness_before_and_after_the_deadline(lake, hour):
    now = datetime(2026, 11, 3, hour, 30, tzinfo=UTC)
    day = _yesterday(now)
    verdict = freshness(lake, now=now.timestamp())  # nothing at all landed for yesterday
    assert verdict.day == day and verdict.deadline == "2026-11-03T06:00:00+00:00"
    if hour < 6:
        assert verdict.passed and not verdict.due and "due by 2026-11-03 06:00 UTC" in verdict.message
        return
    assert not verdict.passed and verdict.due
    assert "no raw data landed" in verdict.message and "LAKE_LANDING_TRIGGER=listing" in verdict.message

    lake.storage.put("landing", "segment/y.ndjson.gz", ndjson([event(i, day=day) for i in range(3)]))
    land_inbox(lake)
    verdict = freshness(lake, now=now.timestamp())
    assert not verdict.passed and verdict.raw_objects == 1
    assert f"lake compact --date {day}" in verdict.message

    assert dg.materialize([events_staged, events],
                          partition_key=day, resources=_resources(lake)).success
    verdict = freshness(lake, now=now.timestamp())
    assert verdict.passed and verdict.published_rows == 3 and verdict.complete_through == day


def test_freshness_check_runs_in_dagster_and_fails_with_an_actionable_message(lake, monkeypatch):
    # the check judges the real clock: yesterday must be published by 00:00, i.e. already
    monkeypatch.setenv("LAKE_PUBLISH_DEADLINE_HOUR", "0")
    day = _yesterday(datetime.now(UTC))
    job = defs.resolve_job_def("freshness")
    result = job.execute_in_process(run_config=_config(lake), instance=dg.DagsterInstance.ephemeral(),
                                    raise_on_error=False)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == yesterday_published.check_key.name and not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert f"dt={day} is not published" in evaluation.description
    assert evaluation.metadata["day"].value == day

    lake.storage.put("landing", "segment/y.ndjson.gz", ndjson([event(i, day=day, hour=1) for i in range(2)]))
    land_inbox(lake)
    assert dg.materialize([events_staged, events],
                          partition_key=day, resources=_resources(lake)).success
    result = job.execute_in_process(run_config=_config(lake), instance=dg.DagsterInstance.ephemeral())
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["published_rows"].value == 2


def test_freshness_schedule_and_check_are_registered():
    assert defs.resolve_schedule_def("hourly_freshness").job_name == "freshness"
    checks = defs.resolve_asset_graph().asset_check_keys
    assert dg.AssetCheckKey(CURATED, "yesterday_published") in checks


def test_console_link_only_on_aws():
    from assets.metadata import console_url
    from pipelines.config import LakeSettings

    aws = LakeSettings(backend="s3")
    assert console_url("s3://b-curated/clickstream/events/dt=2026-11-01/v-1", aws) == (
        "https://s3.console.aws.amazon.com/s3/buckets/b-curated?region=us-east-1"
        "&prefix=clickstream/events/dt%3D2026-11-01/v-1/")
    assert console_url("s3://b/x", aws.with_(s3_endpoint_url="http://127.0.0.1:9000")) is None
    assert console_url("/tmp/lake/curated/x", LakeSettings()) is None


def test_landing_run_metadata_plots_lines_quarantine_bytes_and_seconds(lake):
    body = ndjson([event(1), event(2)])
    lake.storage.put("landing", "segment/a.ndjson.gz", body)
    lake.storage.put("landing", "segment/b.ndjson", b'{"broken\n')
    result = dg.materialize([raw_events], resources=_resources(lake))
    meta = result.asset_materializations_for_node("clickstream__raw_events")[0].metadata
    assert (meta["files"].value, meta["lines"].value, meta["landed"].value, meta["quarantined"].value) == (2, 3, 2, 1)
    assert meta["bytes"].value == len(body) + len(b'{"broken\n')
    assert meta["seconds"].value >= 0 and meta["reasons"].value == {"malformed_json": 1}
