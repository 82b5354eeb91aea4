"""The Dagster layer on a temporary lake: definitions load, write-audit-publish, sensors."""

from __future__ import annotations

import warnings

import dagster as dg
import pytest

from assets.curated import events, events_staged
from assets.definitions import defs
from assets.jobs import inbox_sensor, late_data_sensor
from assets.keys import CURATED, STAGED
from assets.landing import raw_events
from assets.resources import LakeResource
from pipelines.land import raw_objects
from pipelines.query import query
from tests.conftest import event, ndjson


def _resources(lake):
    return {"lake": LakeResource(root=str(lake.settings.root_path))}


def test_definitions_load_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        import importlib

        import assets.definitions

        importlib.reload(assets.definitions)
        d = assets.definitions.defs
        graph = d.resolve_asset_graph()
        assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
            "clickstream/raw_events", "clickstream/events_staged", "clickstream/events",
            "clickstream/tiering_plan"}
        for name in ("land_inbox", "compact_day", "tier"):
            d.resolve_job_def(name)
        assert d.resolve_schedule_def("compact_closed_day")
        assert d.resolve_sensor_def("inbox_sensor")


def test_curated_asset_metadata_has_column_schema():
    spec = defs.resolve_assets_def(CURATED).specs_by_key[CURATED]
    schema = spec.metadata["dagster/column_schema"]
    names = [c.name for c in schema.columns]
    assert names[0] == "event_id" and names[-1] == "dt"


def _land(lake, files: dict[str, list]) -> None:
    for key, evs in files.items():
        lake.storage.put("landing", key, ndjson(evs))
    result = dg.materialize([raw_events], resources=_resources(lake))
    assert result.success


def test_write_audit_publish_through_dagster(lake):
    evs = [event(i) for i in range(50)]
    _land(lake, {"segment/a.ndjson.gz": [*evs[:30], b"{broken"], "segment/b.ndjson.gz": evs[20:]})
    result = dg.materialize([events_staged, events], partition_key="2026-11-01", resources=_resources(lake))
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} >= {"conservation", "unique_event_id", "schema_matches_spec"}
    assert all(c.passed for c in checks)
    staged_meta = result.asset_materializations_for_node("clickstream__events_staged")[0].metadata
    assert staged_meta["rows"].value == 50 and staged_meta["duplicates"].value == 10
    assert staged_meta["files_in"].value == 2 and staged_meta["files_out"].value == 1
    published = result.asset_materializations_for_node("clickstream__events")[0].metadata
    assert published["dagster/row_count"].value == 50
    assert published["published"].value["2026-11-01"].startswith("v-")
    _, rows = query(lake, "select dt, count(*) from events group by dt")
    assert [(str(d), n) for d, n in rows] == [("2026-11-01", 50)]


def test_failed_audit_blocks_publish_and_keeps_old_version(lake):
    _land(lake, {"segment/a.ndjson.gz": [event(i) for i in range(20)],
                 "segment/b.ndjson.gz": [event(100 + i, day="2026-11-02") for i in range(5)]})
    assert dg.materialize([events_staged, events], partition_key="2026-11-01", resources=_resources(lake)).success
    before = lake.catalog.get_partition("events", "2026-11-01")
    # An operator copies a raw object of another day into this day's prefix: its events are
    # outside the partition, which the audit must catch before anyone sees them.
    stray = raw_objects(lake, "2026-11-02")[0]
    lake.storage.put("raw", "clickstream/events/dt=2026-11-01/hour=23/manual-copy.ndjson.gz",
                     lake.storage.get("raw", stray.key))
    result = dg.materialize([events_staged, events], partition_key="2026-11-01",
                            resources=_resources(lake), raise_on_error=False)
    assert not result.success
    failed = {c.check_name for c in result.get_asset_check_evaluations() if not c.passed}
    assert failed == {"event_time_in_partition"}
    assert not result.asset_materializations_for_node("clickstream__events")
    after = lake.catalog.get_partition("events", "2026-11-01")
    assert after == before
    _, rows = query(lake, "select count(*) from events")
    assert rows == [(20,)]


def test_backfill_range_in_one_run_and_rerun_changes_nothing(lake):
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    _land(lake, {f"segment/{d}.ndjson.gz": [event(i, day=d) for i in range(10 * (n + 1))]
                 for n, d in enumerate(days)})
    job = defs.resolve_job_def("compact_day")
    tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    config = {"resources": {"lake": {"config": {"root": str(lake.settings.root_path)}}}}
    instance = dg.DagsterInstance.ephemeral()
    assert job.execute_in_process(run_config=config, tags=tags, instance=instance).success
    first = lake.catalog.list_partitions("events")
    assert [(p.dt, p.rows) for p in first] == [(days[0], 10), (days[1], 20), (days[2], 30)]
    assert job.execute_in_process(run_config=config, tags=tags, instance=instance).success
    assert lake.catalog.list_partitions("events") == first


def _tick(lake, cursor):
    """One evaluation of the inbox sensor with the cursor the previous one stored."""
    with dg.build_sensor_context(cursor=cursor, resources=_resources(lake)) as ctx:
        result = inbox_sensor(ctx)
        return result, ctx.cursor


def _objects(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"]["clickstream__raw_events"]["config"]["objects"]


def test_inbox_sensor_requests_a_run_only_for_new_objects(lake, monkeypatch):
    lake.storage.put("landing", "segment/a.ndjson.gz", ndjson([event(1)]))
    first, cursor = _tick(lake, None)
    assert [r.tags["lake/pending_objects"] for r in first] == ["1"]
    assert _objects(first[0]) == ["segment/a.ndjson.gz"]
    assert cursor  # the cursor is stored even before the run lands anything
    again, cursor = _tick(lake, cursor)  # the run has not landed yet: not requested twice
    assert isinstance(again, dg.SkipReason)

    # the run the sensor asked for, as the daemon would launch it
    assert dg.materialize([raw_events], run_config=first[0].run_config, resources=_resources(lake)).success
    lake.storage.put("landing", "segment/b.ndjson.gz", ndjson([event(2)]))
    second, cursor = _tick(lake, cursor)
    assert [_objects(r) for r in second] == [["segment/b.ndjson.gz"]]
    assert second[0].run_key != first[0].run_key
    result = dg.materialize([raw_events], run_config=second[0].run_config, resources=_resources(lake))
    assert result.asset_materializations_for_node("clickstream__raw_events")[0].metadata["files"].value == 1
    assert isinstance(_tick(lake, cursor)[0], dg.SkipReason)
    assert isinstance(_tick(lake, None)[0], dg.SkipReason)  # a lost cursor: a full scan, nothing new

    if lake.settings.backend != "s3":
        return  # the queue trigger needs S3 event notifications
    # the queue trigger lands instead: the listing sensor stands aside
    monkeypatch.setenv("LAKE_LANDING_TRIGGER", "queue")
    monkeypatch.setenv("LAKE_LANDING_QUEUE_URL", "http://127.0.0.1:1/queue/landing")
    lake.storage.put("landing", "segment/c.ndjson.gz", ndjson([event(3)]))
    skipped, _ = _tick(lake, cursor)
    assert isinstance(skipped, dg.SkipReason) and "queue" in skipped.skip_message


@pytest.mark.parametrize("key", [STAGED, CURATED])
def test_curated_assets_batch_backfills_and_share_a_pool(key):
    a = defs.resolve_assets_def(key)
    assert a.backfill_policy.max_partitions_per_run > 1
    assert a.op.pool == "compaction"


def test_engine_errors_say_whether_dagster_may_retry():
    from assets.errors import engine_errors
    from pipelines.errors import AuditError, TransientError

    with pytest.raises(dg.Failure) as terminal, engine_errors():
        raise AuditError("dt=2026-11-01 failed conservation")
    assert terminal.value.allow_retries is False
    assert "conservation" in terminal.value.description
    with pytest.raises(dg.Failure) as transient, engine_errors():
        raise TransientError("catalog is busy")
    assert transient.value.allow_retries is True


def test_late_events_re_compact_exactly_the_day_they_landed_in(lake):
    days = ["2026-11-01", "2026-11-02"]
    _land(lake, {f"segment/{d}.ndjson.gz": [event(n * 100 + i, day=d) for i in range(10)]
                 for n, d in enumerate(days)})
    for d in days:
        assert dg.materialize([events_staged, events], partition_key=d, resources=_resources(lake)).success
    before = {p.dt: p for p in lake.catalog.list_partitions("events")}
    with dg.build_sensor_context(resources=_resources(lake)) as ctx:
        assert isinstance(late_data_sensor(ctx), dg.SkipReason)  # nothing late: nothing re-run

    # late events for the first day (and a copy of one it already has) arrive and land
    _land(lake, {"segment/late.ndjson.gz": [event(1000 + i, day=days[0]) for i in range(3)] + [event(0, day=days[0])]})
    with dg.build_sensor_context(resources=_resources(lake)) as ctx:
        requests = late_data_sensor(ctx)
    assert [(r.partition_key, r.tags["lake/late_objects"]) for r in requests] == [(days[0], "1")]
    with dg.build_sensor_context(resources=_resources(lake)) as ctx:  # the same late data: the same run key
        assert [r.run_key for r in late_data_sensor(ctx)] == [r.run_key for r in requests]

    # the run the sensor asks for, as the daemon would launch it
    job = defs.resolve_job_def("compact_day")
    config = {"resources": {"lake": {"config": {"root": str(lake.settings.root_path)}}}}
    assert job.execute_in_process(run_config=config, partition_key=requests[0].partition_key,
                                  tags=requests[0].tags, instance=dg.DagsterInstance.ephemeral()).success
    after = {p.dt: p for p in lake.catalog.list_partitions("events")}
    assert after[days[0]].version != before[days[0]].version and after[days[0]].rows == 13  # 3 new, 1 duplicate
    assert after[days[1]] == before[days[1]]  # the untouched day was not re-run
    with dg.build_sensor_context(resources=_resources(lake)) as ctx:
        assert isinstance(late_data_sensor(ctx), dg.SkipReason)
