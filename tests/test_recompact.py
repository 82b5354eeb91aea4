"""Re-compaction of a day whose raw objects expired: the published version is carried into the
new one, deduplicated with the late events exactly as if the raw had never expired."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines import layout
from pipelines.compact import compact_day, read_manifest, version_id
from pipelines.errors import TerminalError
from pipelines.lake import Lake
from pipelines.land import land_inbox, raw_objects
from pipelines.publish import RawExpiredError, publish_version, retire_versions
from pipelines.query import query
from pipelines.verify import audit_version
from pipelines.wap import process_day
from tests.conftest import event, ndjson, settings_on

pytestmark = pytest.mark.timeout(300)

DAY = "2026-11-01"
COLUMNS = "event_id, event_time, received_at, source_object, source_line"


def _land(lake: Lake, key: str, events: list[dict]) -> None:
    lake.storage.put("landing", key, ndjson(events))
    land_inbox(lake)


def _expire_raw(lake: Lake, dt: str = DAY) -> list[str]:
    """Delete the day's raw objects, as the lifecycle rule for compacted raw does."""
    keys = [o.key for o in raw_objects(lake, dt)]
    lake.storage.delete("raw", keys)
    return keys


def _late() -> list[dict]:
    """Two new events and two copies of early ones: m-000003 received earlier than the first copy
    (it must win), m-000005 received later (the first copy must win)."""
    return [event(100), event(101),
            event(3, receivedAt=f"{DAY}T10:03:00.900Z"),
            event(5, receivedAt=f"{DAY}T23:00:00.000Z")]


def _rows(lake: Lake) -> list[tuple]:
    return query(lake, f"select {COLUMNS} from events where dt = DATE '{DAY}' order by event_id")[1]


def _versions(lake: Lake, dt: str = DAY) -> set[str]:
    prefix = layout.partition_prefix(lake.spec, dt)
    return {k[len(prefix):].split("/", 1)[0] for k in lake.storage.list_keys("curated", prefix)}


def _control(backend: str, tmp_path: Path, request) -> Lake:
    """A lake that receives the same files and never loses raw."""
    control = Lake.open(settings_on(backend, tmp_path / "control", request))
    _land(control, "web/a.ndjson.gz", [event(i) for i in range(10)])
    process_day(control, DAY)
    _land(control, "web/late.ndjson.gz", _late())
    process_day(control, DAY)
    return control


def _tamper(lake: Lake, key: str) -> None:
    """Rewrite a Parquet object without its last row."""
    table = pq.read_table(io.BytesIO(lake.storage.get("curated", key)))
    buf = io.BytesIO()
    pq.write_table(table.slice(0, table.num_rows - 1), buf)
    lake.storage.put("curated", key, buf.getvalue())


def test_late_events_after_raw_expired_carry_the_published_version(lake: Lake, backend: str,
                                                                  tmp_path: Path, request):
    _land(lake, "web/a.ndjson.gz", [event(i) for i in range(10)])
    first = process_day(lake, DAY)
    expired = _expire_raw(lake)
    _land(lake, "web/late.ndjson.gz", _late())

    merged = process_day(lake, DAY)
    assert merged.audit.passed, merged.audit.summary()
    assert merged.publish.changed and merged.publish.previous == first.version
    assert merged.version not in (first.version, version_id(lake, layout.parse_dt(DAY), raw_objects(lake, DAY)))
    manifest = read_manifest(lake, DAY, merged.version)
    assert manifest["carried_from"]["version"] == first.version
    assert manifest["carried_from"]["rows"] == 10
    assert manifest["carried_from"]["inputs"] == sorted(expired)
    assert manifest["counts"] | {"raw_events": 4, "carried_rows": 10, "rows": 12, "duplicates": 2} == manifest["counts"]
    conservation = next(c for c in merged.audit.checks if c.name == "conservation")
    assert conservation.metadata["carried_rows"] == 10 and conservation.metadata["distinct_ids"] == 12

    rows = _rows(lake)
    assert len(rows) == len({r[0] for r in rows}) == 12
    by_id = {r[0]: r for r in rows}
    assert str(by_id["m-000003"][2]).startswith(f"{DAY} 10:03:00.9")  # the late copy, received first
    assert str(by_id["m-000005"][2]).startswith(f"{DAY} 10:05:01")  # the carried copy, received first
    assert rows == _rows(_control(backend, tmp_path, request))

    again = process_day(lake, DAY)
    assert again.version == merged.version and again.compact.reused and not again.publish.changed
    assert _versions(lake) == {first.version, merged.version}


def test_carrying_twice_keeps_every_expired_input(lake: Lake):
    _land(lake, "web/a.ndjson.gz", [event(i) for i in range(10)])
    process_day(lake, DAY)
    first_raw = _expire_raw(lake)
    _land(lake, "web/b.ndjson.gz", [event(i) for i in range(20, 25)])
    second = process_day(lake, DAY)
    second_raw = _expire_raw(lake)
    _land(lake, "web/c.ndjson.gz", [event(i) for i in range(30, 33)] + [event(0), event(20)])

    third = process_day(lake, DAY)
    carried = read_manifest(lake, DAY, third.version)["carried_from"]
    assert carried["version"] == second.version and carried["rows"] == 15
    assert carried["inputs"] == sorted(first_raw + second_raw)
    assert third.compact.counts | {"rows": 18, "duplicates": 2} == third.compact.counts
    assert query(lake, "select count(*), count(distinct event_id) from events")[1] == [(18, 18)]


def test_a_day_with_all_its_raw_compacts_from_raw_alone(lake: Lake):
    _land(lake, "web/a.ndjson.gz", [event(i) for i in range(10)])
    process_day(lake, DAY)
    _land(lake, "web/late.ndjson.gz", _late())
    result = process_day(lake, DAY)
    assert "carried_from" not in result.compact.manifest
    assert "carried_rows" not in result.compact.counts
    assert result.version == version_id(lake, layout.parse_dt(DAY), raw_objects(lake, DAY))
    assert result.compact.counts | {"raw_events": 14, "rows": 12, "duplicates": 2} == result.compact.counts


def test_expired_raw_without_late_events_reuses_the_published_version(lake: Lake):
    _land(lake, "web/a.ndjson.gz", [event(i) for i in range(6)])
    _land(lake, "web/b.ndjson.gz", [event(i) for i in range(4, 10)])
    first = process_day(lake, DAY)
    keys = [o.key for o in raw_objects(lake, DAY)]
    lake.storage.delete("raw", keys[:1])  # lifecycle expired part of the day
    again = process_day(lake, DAY)
    assert again.version == first.version and again.compact.reused and not again.publish.changed
    assert again.audit.passed, again.audit.summary()
    conservation = next(c for c in again.audit.checks if c.name == "conservation")
    assert conservation.metadata["sources"] == "expired" and conservation.metadata["missing_raw"] == 1


def test_an_archived_day_with_expired_raw_must_be_restored_first(lake: Lake):
    from pipelines.archive import archive_partition, restore

    _land(lake, "web/a.ndjson.gz", [event(i) for i in range(10)])
    first = process_day(lake, DAY)
    archive_partition(lake, DAY, "GLACIER")
    _expire_raw(lake)
    _land(lake, "web/late.ndjson.gz", _late())
    with pytest.raises(TerminalError, match=f"lake restore --date {DAY}"):
        process_day(lake, DAY)
    assert lake.catalog.get_partition(lake.spec.table, DAY) is None
    assert _versions(lake) == {first.version}

    assert restore(lake, DAY).state == "restored"  # the local folder and moto restore at once
    merged = process_day(lake, DAY)
    assert merged.compact.manifest["carried_from"]["version"] == first.version
    assert query(lake, "select count(*) from events")[1] == [(12,)]


def test_a_merged_version_missing_rows_fails_its_audit(lake: Lake):
    _land(lake, "web/a.ndjson.gz", [event(i) for i in range(10)])
    process_day(lake, DAY)
    _expire_raw(lake)
    _land(lake, "web/late.ndjson.gz", _late())
    merged = process_day(lake, DAY)
    _tamper(lake, merged.compact.manifest["outputs"][0]["key"])
    report = audit_version(lake, DAY, merged.version, record=False)
    assert [c.name for c in report.failures()] == ["conservation"]
    assert report.failures()[0].metadata["rows"] == 11


def test_once_the_sources_are_gone_the_audit_still_counts_the_rows(lake: Lake):
    _land(lake, "web/a.ndjson.gz", [event(i) for i in range(10)])
    first = process_day(lake, DAY)
    _expire_raw(lake)
    _land(lake, "web/late.ndjson.gz", _late())
    merged = process_day(lake, DAY)
    # the carried version retires after its grace period; lifecycle expires the late raw too
    later = time.time() + 2 * lake.settings.retire_grace_seconds
    assert retire_versions(lake, DAY, now=later) == [first.version]
    _expire_raw(lake)

    again = process_day(lake, DAY)
    assert again.version == merged.version and again.audit.passed, again.audit.summary()
    conservation = next(c for c in again.audit.checks if c.name == "conservation")
    assert conservation.metadata | {"sources": "expired", "missing_raw": 1, "missing_carried": 1} == conservation.metadata
    _tamper(lake, merged.compact.manifest["outputs"][0]["key"])
    assert not audit_version(lake, DAY, merged.version, record=False).passed


def test_a_version_that_neither_holds_nor_carries_expired_rows_is_refused(lake: Lake):
    _land(lake, "web/a.ndjson.gz", [event(i) for i in range(10)])
    older = process_day(lake, DAY).version
    _expire_raw(lake)
    _land(lake, "web/late.ndjson.gz", _late())
    merged = process_day(lake, DAY).version
    # rolling back to the first version would lose the late events' rows only if their raw were
    # gone: it is there, so the roll-back is deliberate and allowed
    assert publish_version(lake, DAY, older).changed
    assert publish_version(lake, DAY, merged).changed
    _expire_raw(lake)
    with pytest.raises(RawExpiredError, match="drop their rows"):
        publish_version(lake, DAY, older)
    assert lake.catalog.get_partition(lake.spec.table, DAY).version == merged


def test_compact_day_alone_writes_the_merge_unpublished(lake: Lake):
    _land(lake, "web/a.ndjson.gz", [event(i) for i in range(10)])
    first = process_day(lake, DAY)
    _expire_raw(lake)
    _land(lake, "web/late.ndjson.gz", _late())
    result = compact_day(lake, DAY)
    assert result.manifest["carried_from"]["version"] == first.version and not result.reused
    assert compact_day(lake, DAY).reused  # the same base and raw: the same version
    assert lake.catalog.get_partition(lake.spec.table, DAY).version == first.version
