"""AUDIT and PUBLISH: tampered versions are refused, old versions retire after the grace period,
and the query view reads exactly the published files."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import layout
from pipelines.compact import compact_day, read_manifest
from pipelines.errors import AuditError
from pipelines.lake import Lake
from pipelines.land import land_inbox
from pipelines.publish import publish_version, retire_versions
from pipelines.query import query, view_sql
from pipelines.verify import CHECK_DESCRIPTIONS, audit_version, read_audit
from pipelines.wap import process_day, publish_audited, write_and_audit
from tests.conftest import event, ndjson

pytestmark = pytest.mark.timeout(120)

DAY = "2026-11-01"


def _land(lake: Lake, key: str, ids: range, **kw) -> None:
    lake.storage.put("landing", key, ndjson([event(i, **kw) for i in ids]))
    land_inbox(lake)


def _count(lake: Lake, where: str = "") -> int:
    return query(lake, f"select count(*) from events {where}")[1][0][0]


def _published(lake: Lake, dt: str = DAY) -> str | None:
    p = lake.catalog.get_partition(lake.spec.table, dt)
    return p.version if p else None


# --------------------------------------------------------------------------------------------
# process_day


def test_process_day_publishes_an_audited_version(lake: Lake):
    _land(lake, "web/a.ndjson.gz", range(100))
    _land(lake, "web/b.ndjson.gz", range(90, 120))  # 10 duplicates
    result = process_day(lake, DAY)

    assert result.audit.passed, result.audit.summary()
    assert {c.name for c in result.audit.checks} == set(CHECK_DESCRIPTIONS)
    assert read_audit(lake, DAY, result.version)["passed"] is True
    assert result.publish.changed and result.publish.previous is None
    assert result.compact.counts == result.compact.counts | {"rows": 120, "duplicates": 10, "raw_events": 130}

    part = lake.catalog.get_partition(lake.spec.table, DAY)
    assert part.version == result.version and part.rows == 120
    assert list(part.files) == [lake.storage.uri("curated", o["key"]) for o in result.compact.manifest["outputs"]]
    assert part.location == lake.storage.uri("curated", layout.version_prefix(lake.spec, DAY, result.version))
    assert _count(lake) == 120

    # running the day again is a no-op: same version, catalog unchanged, one publish in the log
    again = process_day(lake, DAY)
    assert again.version == result.version and again.compact.reused
    assert again.publish.changed is False
    if lake.settings.catalog_kind == "local":  # Glue keeps no publish history
        assert len(lake.catalog.history(lake.spec.table, DAY)) == 1
    assert _count(lake) == 120


# --------------------------------------------------------------------------------------------
# tampered versions


def _rewrite(lake: Lake, key: str, change, tmp: Path) -> None:
    """Rewrite a stored Parquet part with ``change(rows) -> rows``, keeping its schema and codec."""
    path = lake.storage.fetch("curated", [key], tmp)[0]
    table = pq.read_table(path)
    rows = change(table.to_pylist())
    out = tmp / "tampered.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out, compression="zstd")
    lake.storage.put_file("curated", key, out)


def _drop_row(rows):
    return rows[:10] + rows[11:]


def _duplicate_row(rows):
    return [*rows[:10], rows[10], *rows[10:]]  # adjacent copy: order is still right


def _row_from_next_day(rows):
    last = dict(rows[-1])
    last["event_time"] = datetime(2026, 11, 2, 0, 30, tzinfo=UTC)  # still sorted: it is the max
    return [*rows[:-1], last]


@pytest.mark.parametrize(("change", "failing"), [
    (_drop_row, {"conservation"}),
    (_duplicate_row, {"conservation", "unique_event_id"}),
    (_row_from_next_day, {"event_time_in_partition"}),
], ids=["row-removed", "row-duplicated", "row-outside-day"])
def test_tampered_version_fails_audit_and_is_not_published(lake: Lake, change, failing, tmp_path):
    _land(lake, "web/a.ndjson.gz", range(100))
    a = process_day(lake, DAY)
    _land(lake, "web/b.ndjson.gz", range(100, 150))
    b, audit = write_and_audit(lake, DAY)
    assert audit.passed and b.version != a.version

    # tamper with B after its audit passed, and remove the recorded audit
    _rewrite(lake, b.manifest["outputs"][0]["key"], change, tmp_path)
    lake.storage.delete("curated", [layout.audit_key(lake.spec, DAY, b.version)])

    # no recorded audit: refused
    with pytest.raises(AuditError):
        publish_version(lake, DAY, b.version)
    assert _published(lake) == a.version

    report = audit_version(lake, DAY, b.version)
    assert not report.passed
    assert {c.name for c in report.failures()} == failing, report.summary()
    assert read_audit(lake, DAY, b.version)["passed"] is False
    for name in failing:
        assert name in report.summary()

    with pytest.raises(AuditError):
        publish_version(lake, DAY, b.version)
    with pytest.raises(AuditError):
        publish_audited(lake, b, report)
    # the previous version stays published, readable and whole
    assert _published(lake) == a.version
    assert _count(lake) == 100
    if lake.settings.catalog_kind == "local":
        assert [v for v, *_ in lake.catalog.history(lake.spec.table, DAY)] == [a.version]


def test_publish_refuses_an_incomplete_version(lake: Lake):
    _land(lake, "web/a.ndjson.gz", range(20))
    a = process_day(lake, DAY)
    _land(lake, "web/b.ndjson.gz", range(20, 30))
    b, _ = write_and_audit(lake, DAY)
    lake.storage.delete("curated", [layout.manifest_key(lake.spec, DAY, b.version)])
    with pytest.raises(Exception, match="incomplete"):
        publish_version(lake, DAY, b.version)
    assert _published(lake) == a.version and _count(lake) == 20


# --------------------------------------------------------------------------------------------
# retiring old versions


def _version_objects(lake: Lake, version: str, dt: str = DAY) -> list:
    """The stored objects of one version (empty once it is retired)."""
    return list(lake.storage.list("curated", layout.version_prefix(lake.spec, dt, version)))


def _names(lake: Lake, version: str) -> list[str]:
    return sorted(o.key.rsplit("/", 1)[1] for o in _version_objects(lake, version))


def test_retire_keeps_superseded_version_for_the_grace_period(lake: Lake):
    grace = lake.settings.retire_grace_seconds
    _land(lake, "web/a.ndjson.gz", range(40))
    a = process_day(lake, DAY)
    _land(lake, "web/b.ndjson.gz", range(40, 60))
    b = process_day(lake, DAY)
    assert b.retired == []  # within the grace period: A is still readable by planned queries
    published_at = lake.catalog.get_partition(lake.spec.table, DAY).published_at

    assert retire_versions(lake, DAY) == []
    assert retire_versions(lake, DAY, now=published_at + grace - 60) == []
    assert read_manifest(lake, DAY, a.version) is not None
    assert _version_objects(lake, a.version)

    assert retire_versions(lake, DAY, now=published_at + grace + 1) == [a.version]
    assert not _version_objects(lake, a.version)
    assert read_manifest(lake, DAY, a.version) is None

    # the published version is never touched, however late
    b_files = _names(lake, b.version)
    assert retire_versions(lake, DAY, now=published_at + 100 * grace) == []
    assert _names(lake, b.version) == b_files
    assert _count(lake) == 60

    # an explicit grace overrides the setting
    _land(lake, "web/c.ndjson.gz", range(60, 70))
    process_day(lake, DAY)
    assert retire_versions(lake, DAY, grace_seconds=0) == [b.version]
    assert _count(lake) == 70


def test_retire_removes_orphan_version_without_manifest_only_after_grace(lake: Lake):
    grace = lake.settings.retire_grace_seconds
    _land(lake, "web/a.ndjson.gz", range(10))
    a = process_day(lake, DAY)
    # what a killed compaction leaves behind: part files, no manifest
    orphan = "v-00000000deadbeef"
    key = layout.part_key(lake.spec, DAY, orphan, 0)
    info = lake.storage.put("curated", key, b"PAR1 half written")

    assert retire_versions(lake, DAY, now=info.mtime + grace - 1) == []
    assert lake.storage.head("curated", key) is not None
    assert retire_versions(lake, DAY, now=info.mtime + grace + 1) == [orphan]
    assert lake.storage.head("curated", key) is None
    assert not _version_objects(lake, orphan)
    assert _published(lake) == a.version and _count(lake) == 10


def test_retire_keeps_a_staged_version_newer_than_the_published_one(lake: Lake):
    """A version written after the current publish was never superseded: it is staged, waiting
    for its own publish (write-audit-publish runs the two steps separately), and must not be
    deleted just because the *published* version's grace period has passed."""
    grace = lake.settings.retire_grace_seconds
    _land(lake, "web/a.ndjson.gz", range(10))
    a = process_day(lake, DAY)
    published_at = lake.catalog.get_partition(lake.spec.table, DAY).published_at
    # later, late events arrive and a new version is staged and audited (S3 keeps modification
    # times to the second, and they cannot be set: wait until B is clearly newer than A's publish)
    time.sleep(2.1)
    _land(lake, "web/b.ndjson.gz", range(10, 20))
    b, audit = write_and_audit(lake, DAY)
    assert audit.passed
    b_written = min(o.mtime for o in _version_objects(lake, b.version))
    assert b_written > published_at + 1

    # another run re-publishes A (a no-op) and retires when A's publish is older than the grace
    # period but B is not: B must survive until its own grace ends
    assert publish_version(lake, DAY, a.version).changed is False
    now = b_written + grace - 0.5
    assert now > published_at + grace
    assert retire_versions(lake, DAY, now=now) == []
    assert read_manifest(lake, DAY, b.version) is not None
    assert publish_version(lake, DAY, b.version).changed
    assert _count(lake) == 20
    # now A is the superseded one, and it retires once the grace after B's publish has passed
    assert retire_versions(lake, DAY, now=time.time() + grace + 1) == [a.version]
    assert _count(lake) == 20


def test_retire_deletes_a_never_published_staged_version_after_its_own_grace(lake: Lake):
    grace = lake.settings.retire_grace_seconds
    _land(lake, "web/a.ndjson.gz", range(10))
    a = process_day(lake, DAY)
    _land(lake, "web/b.ndjson.gz", range(10, 20))
    b, _ = write_and_audit(lake, DAY)
    newest = max(o.mtime for o in _version_objects(lake, b.version))
    assert retire_versions(lake, DAY, now=newest + grace - 1) == []
    assert retire_versions(lake, DAY, now=newest + grace + 1) == [b.version]
    assert _published(lake) == a.version and _count(lake) == 10


# --------------------------------------------------------------------------------------------
# the query view


def test_view_has_dt_date_and_reads_exactly_the_published_files(lake: Lake):
    _land(lake, "web/a.ndjson.gz", range(30))
    _land(lake, "web/b.ndjson.gz", range(30, 35), day="2026-11-02")
    process_day(lake, DAY)
    process_day(lake, "2026-11-02")

    _, rows = query(lake, "describe events")
    described = [(r[0], r[1]) for r in rows]
    expected = [(n, t) for n, t, _ in lake.spec.describe_columns()]
    assert described == expected
    assert described[-1] == ("dt", "DATE")
    assert query(lake, "select dt, count(*) from events group by dt order by dt")[1] == [
        (datetime(2026, 11, 1).date(), 30), (datetime(2026, 11, 2).date(), 5)]
    assert _count(lake, "where dt = DATE '2026-11-01'") == 30

    # a newer, complete but unpublished version in the same partition directory is not read
    _land(lake, "web/c.ndjson.gz", range(100, 200))
    staged, audit = write_and_audit(lake, DAY)
    assert audit.passed
    assert staged.version != _published(lake)
    assert _count(lake) == 35
    sql = view_sql(lake)
    assert staged.version not in sql
    for o in staged.manifest["outputs"]:
        assert lake.storage.head("curated", o["key"]) is not None
        assert lake.storage.uri("curated", o["key"]) not in sql
    for part in lake.catalog.list_partitions(lake.spec.table):
        for f in part.files:
            assert f in sql

    publish_version(lake, DAY, staged.version)
    assert _count(lake) == 135
    assert _count(lake, "where dt = DATE '2026-11-01'") == 130


def test_empty_lake_view_has_zero_rows_and_the_right_columns(lake: Lake):
    names, rows = query(lake, "select * from events")
    assert rows == []
    assert names == [n for n, _, _ in lake.spec.describe_columns()]
    described = [(r[0], r[1]) for r in query(lake, "describe events")[1]]
    assert described == [(n, t) for n, t, _ in lake.spec.describe_columns()]
    assert _count(lake) == 0
    # landed and compacted but unpublished data is not visible either
    _land(lake, "web/a.ndjson.gz", range(5))
    compact_day(lake, DAY)
    assert _count(lake) == 0


def test_retire_clears_uploads_a_killed_run_left_behind(lake):
    lake.storage.put("landing", "web/a.ndjson.gz", ndjson([event(i) for i in range(5)]))
    land_inbox(lake)
    published = process_day(lake, "2026-11-01")
    prefix = layout.partition_prefix(lake.spec, "2026-11-01")
    if lake.settings.backend == "s3":
        # what a killed multipart upload leaves: an open upload, parts billed, no object
        bucket = lake.settings.bucket("curated")
        lake.storage.client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}v-00000000000000aa/part-00000.parquet")
        retire_versions(lake, "2026-11-01")
        assert lake.storage.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []
        assert lake.catalog.get_partition("events", "2026-11-01").version == published.version
        return
    version_dir = Path(lake.storage.uri("curated", layout.version_prefix(lake.spec, "2026-11-01",
                                                                           published.version)))
    stale = version_dir.parent / "v-00000000000000aa" / ".tmp-killed"
    stale.parent.mkdir()
    stale.write_bytes(b"half a parquet file")
    fresh = version_dir.parent / "v-00000000000000bb" / ".tmp-live"
    fresh.parent.mkdir()
    fresh.write_bytes(b"an upload in progress")
    old = time.time() - 2 * lake.settings.retire_grace_seconds
    os.utime(stale, (old, old))
    retire_versions(lake, "2026-11-01")
    assert not stale.exists() and not stale.parent.exists()
    assert fresh.exists()  # younger than the grace period: may still be written
    assert lake.catalog.get_partition("events", "2026-11-01").version == published.version


# --------------------------------------------------------------------------------------------
# publishes that would make readers silently miss rows are refused


def test_a_version_built_without_raw_expired_since_is_refused_and_the_live_one_stays(lake: Lake):
    # (re-compacting such a day carries the published version instead: tests/test_recompact.py)
    from pipelines.publish import RawExpiredError

    _land(lake, "web/a.ndjson.gz", range(10))
    older = process_day(lake, DAY).version
    _land(lake, "web/late.ndjson.gz", range(100, 103))
    live = process_day(lake, DAY).version
    # lifecycle expired the late events' raw (compacted); a roll-back would lose their rows
    late = [o.key for o in lake.storage.list("raw", layout.raw_day_prefix(lake.spec, DAY))
            if o.key not in {i["key"] for i in read_manifest(lake, DAY, older)["inputs"]}]
    lake.storage.delete("raw", late)
    with pytest.raises(RawExpiredError, match="drop their rows"):
        publish_version(lake, DAY, older)
    assert _published(lake) == live and _count(lake) == 13


def test_rolling_back_to_an_older_version_whose_raw_is_all_there_is_allowed(lake: Lake):
    _land(lake, "web/a.ndjson.gz", range(10))
    older = process_day(lake, DAY).version
    _land(lake, "web/b.ndjson.gz", range(100, 105))
    newer = process_day(lake, DAY).version
    result = publish_version(lake, DAY, older)
    assert (result.previous, result.version) == (newer, older) and _count(lake) == 10


def test_an_archived_version_is_published_again_only_by_a_restore(lake: Lake):
    from pipelines.archive import archive_partition, restore
    from pipelines.publish import ArchivedError

    _land(lake, "web/a.ndjson.gz", range(10))
    version = process_day(lake, DAY).version
    archive_partition(lake, DAY, "GLACIER")
    # a backfill over the day rebuilds the same version from the same raw: refused, not re-published
    with pytest.raises(ArchivedError, match=f"lake restore --date {DAY}"):
        process_day(lake, DAY)
    assert _published(lake) is None
    assert restore(lake, DAY).state == "restored"  # the local folder and moto restore at once
    assert _published(lake) == version and _count(lake) == 10
