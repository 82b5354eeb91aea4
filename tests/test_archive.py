"""Archiving and restoring partitions, on both backends (S3 + Glue on the moto server over HTTP).

A partition headed for GLACIER / DEEP_ARCHIVE leaves the catalog first (Athena would silently skip
its files), is recorded as archived, and comes back through ``restore``. Objects are put into
GLACIER with CopyObject, as S3 lifecycle would; restores in progress are held with moto's own
state-transition API (``/moto-api/state-manager``), the emulator's switch for slow operations.
Nothing in boto3 or in the lake is patched.
"""

from __future__ import annotations

import json
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from pipelines import archive, layout
from pipelines.archive import (
    ArchiveConflict,
    ArchiveRecord,
    archive_partition,
    archived,
    expire_restores,
    is_pinned,
    restore,
)
from pipelines.cli import app
from pipelines.compact import read_manifest
from pipelines.config import ROLES
from pipelines.errors import LakeError, NotFoundError
from pipelines.glue import GlueCatalog
from pipelines.lake import Lake
from pipelines.land import land_inbox
from pipelines.query import query
from pipelines.reconcile import reconcile
from pipelines.status import day_status
from pipelines.wap import process_day
from tests.conftest import event, ndjson, s3_settings_for

pytestmark = pytest.mark.timeout(300)

D1, D2 = "2026-11-01", "2026-11-02"
DAY = 86400
_ids = iter(range(10**6))


def _land(lake: Lake, day: str, n: int = 5) -> None:
    ids = [next(_ids) for _ in range(n)]
    lake.storage.put("landing", f"web/{day}-{ids[0]}.ndjson.gz", ndjson([event(i, day=day) for i in ids]))
    land_inbox(lake)


def _publish(lake: Lake, day: str, n: int = 5) -> str:
    _land(lake, day, n)
    return process_day(lake, day).version


def _counts(lake: Lake) -> dict[str, int]:
    _, rows = query(lake, "select cast(dt as varchar), count(*) from events group by 1 order by 1")
    return dict(rows)


def _published(lake: Lake) -> dict[str, str]:
    return {p.dt: p.version for p in lake.catalog.list_partitions(lake.spec.table)}


def _snapshot(lake: Lake):
    objects = {role: sorted((o.key, o.etag, o.size, o.storage_class) for o in lake.storage.list(role))
               for role in ROLES}
    return objects, lake.catalog.list_partitions(lake.spec.table)


def _glue(lake: Lake):
    return boto3.client("glue", endpoint_url=lake.settings.glue_endpoint_url, region_name=lake.settings.aws_region)


def _glue_has(lake: Lake, day: str) -> bool:
    try:
        _glue(lake).get_partition(DatabaseName=lake.settings.glue_database, TableName=lake.spec.table,
                                  PartitionValues=[day])
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "EntityNotFoundException"
        return False
    return True


def _to_glacier(lake: Lake, keys, storage_class: str = "GLACIER") -> None:
    """What a lifecycle transition does to the objects (test setup, on the emulator)."""
    bucket = lake.settings.bucket("curated")
    for key in keys:
        lake.storage.client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                                        StorageClass=storage_class, **lake.storage.sse_args)


def _moto_api(endpoint: str, action: str, body: dict) -> None:
    request = urllib.request.Request(f"{endpoint}/moto-api/state-manager/{action}", method="POST",
                                     data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201, response.status


@contextmanager
def _slow_restores(endpoint: str):
    """Hold S3 restores in progress: moto's state manager moves a restore on after so many reads
    (set first to reach "in progress", then high to stay there); yields the call that finishes them."""
    _moto_api(endpoint, "set-transition", {"model_name": "s3::keyrestore",
                                           "transition": {"progression": "manual", "times": 1}})

    def hold() -> None:
        _moto_api(endpoint, "set-transition", {"model_name": "s3::keyrestore",
                                               "transition": {"progression": "manual", "times": 10**6}})

    try:
        yield hold
    finally:
        _moto_api(endpoint, "unset-transition", {"model_name": "s3::keyrestore"})


# --------------------------------------------------------------------------------------------


def test_archiving_takes_the_day_out_of_catalog_query_and_glue(lake: Lake, backend: str):
    v1 = _publish(lake, D1)
    _publish(lake, D2, n=3)
    assert _counts(lake) == {D1: 5, D2: 3}
    manifest = read_manifest(lake, D1, v1)

    record = archive_partition(lake, D1, "GLACIER")
    assert (record.dt, record.version, record.storage_class, record.rows) == (D1, v1, "GLACIER", 5)
    assert record.files == tuple(o["key"] for o in manifest["outputs"])
    assert record.restore_state == "none" and record.restored_until is None
    assert D1 not in _published(lake) and D2 in _published(lake)
    assert _counts(lake) == {D2: 3}
    if backend == "s3":
        assert not _glue_has(lake, D1) and _glue_has(lake, D2)
    # the record lives in the curated bucket, outside the table's data prefix
    key = f"_archive/clickstream/events/dt={D1}.json"
    assert archive.archive_key(lake.spec, D1) == key
    stored = json.loads(lake.storage.get("curated", key))
    assert stored["version"] == v1 and stored["files"] == list(record.files)
    assert set(stored["restore"]) == {"requested_at", "days", "tier", "restored_until", "republished_at"}

    listed = archived(lake)
    assert list(listed) == [D1] and listed[D1] == record and not listed[D1].published
    assert listed[D1].label == "archived (GLACIER)"
    assert [(d.dt, d.archive) for d in day_status(lake)] == [(D1, "archived (GLACIER)"), (D2, None)]

    before = _snapshot(lake)
    assert archive_partition(lake, D1, "GLACIER") == record  # a no-op the second time
    assert _snapshot(lake) == before


@pytest.mark.parametrize("bad", ["GLACIER_IR", "STANDARD_IA", "glacier"])
def test_only_archive_classes_are_archived(lake: Lake, bad: str):
    _publish(lake, D1)
    with pytest.raises(ValueError, match="not an archive class"):
        archive_partition(lake, D1, bad)
    assert D1 in _published(lake) and archived(lake) == {}


def test_archiving_is_compare_and_set(lake: Lake):
    v1 = _publish(lake, D1)
    with pytest.raises(NotFoundError, match="not published and not archived"):
        archive_partition(lake, D2, "GLACIER")
    with pytest.raises(ArchiveConflict) as caught:
        archive_partition(lake, D1, "GLACIER", expected_version="v-" + "0" * 16)
    assert caught.value.reason == "moved" and caught.value.current_version == v1
    assert _published(lake) == {D1: v1} and archived(lake) == {}  # nothing dropped or recorded
    assert archive_partition(lake, D1, "GLACIER", expected_version=v1).version == v1
    # moving on to a colder class updates the record of an archived day
    assert archive_partition(lake, D1, "DEEP_ARCHIVE").storage_class == "DEEP_ARCHIVE"


def test_a_run_cut_short_after_the_record_is_finished_by_the_next(lake: Lake):
    v1 = _publish(lake, D1)
    manifest = read_manifest(lake, D1, v1)
    # what a run killed between writing the record and dropping the partition leaves behind
    cut = ArchiveRecord(D1, v1, "GLACIER", tuple(o["key"] for o in manifest["outputs"]), 5, 1000.0)
    lake.storage.put("curated", archive.archive_key(lake.spec, D1), cut.to_json())

    state = archived(lake)[D1]
    assert state.published and state.label.startswith("archiving (GLACIER)")
    assert not is_pinned(lake, D1)  # so the tiering pass archives it again
    assert reconcile(lake).ok == [D1]  # still published and whole: nothing to repair

    done = archive_partition(lake, D1, "GLACIER")
    assert done.archived_at == 1000.0 and D1 not in _published(lake)
    assert archived(lake)[D1].label == "archived (GLACIER)"


def test_restore_publishes_again_at_once_when_files_are_readable(lake: Lake):
    _publish(lake, D1)
    _publish(lake, D2, n=3)
    archive_partition(lake, D1, "GLACIER")
    now = time.time()

    result = restore(lake, D1, days=3, now=now)  # local files (and S3 ones never moved) are readable
    assert (result.state, result.requested, result.republished) == ("restored", 0, True)
    assert result.ready == result.objects == len(archived(lake)[D1].files) + 2  # + manifest, audit
    assert result.restored_until == pytest.approx(now + 3 * DAY)
    assert _counts(lake) == {D1: 5, D2: 3}
    record = archived(lake)[D1]
    assert record.published and record.restored_until == result.restored_until
    assert record.republished_at == now and record.label.startswith("restored until")
    assert is_pinned(lake, D1, now=now) and is_pinned(lake, D1, now=now + DAY)
    with pytest.raises(ArchiveConflict) as caught:
        archive_partition(lake, D1, "GLACIER", now=now)
    assert caught.value.reason == "pinned" and D1 in _published(lake)
    assert reconcile(lake).ok == [D1, D2]

    before = _snapshot(lake)
    again = restore(lake, D1, now=now + DAY)
    assert (again.state, again.republished, again.restored_until) == ("restored", False, result.restored_until)
    assert _snapshot(lake) == before

    assert expire_restores(lake, now=now + DAY) == []
    assert expire_restores(lake, now=result.restored_until - DAY) == [D1]  # one day of margin
    assert D1 not in _published(lake) and _counts(lake) == {D2: 3}
    record = archived(lake)[D1]
    assert record.restore_state == "none" and not record.published
    assert not is_pinned(lake, D1, now=now)
    assert expire_restores(lake, now=result.restored_until) == []


def test_restore_refuses_what_cannot_work_and_writes_nothing(lake: Lake):
    _publish(lake, D1)
    _publish(lake, D2, n=3)
    before = _snapshot(lake)
    with pytest.raises(NotFoundError, match=f"dt={D1} is not archived: version .* is published"):
        restore(lake, D1)
    with pytest.raises(NotFoundError, match="not published either"):
        restore(lake, "2026-10-15")
    with pytest.raises(ValueError, match="invalid date"):
        restore(lake, "2026-13-01")
    assert _snapshot(lake) == before

    archive_partition(lake, D2, "DEEP_ARCHIVE")
    before = _snapshot(lake)
    with pytest.raises(ValueError, match="no Expedited"):
        restore(lake, D2, tier="Expedited")
    with pytest.raises(ValueError, match="unknown restore tier"):
        restore(lake, D2, tier="Fast")
    with pytest.raises(ValueError, match="at least 2"):
        restore(lake, D2, days=1)
    assert _snapshot(lake) == before
    assert restore(lake, D2, tier="Bulk").state == "restored"


def test_a_new_version_of_an_archived_day_makes_it_live(lake: Lake):
    v1 = _publish(lake, D1)
    archive_partition(lake, D1, "GLACIER")
    v2 = _publish(lake, D1, n=2)  # late events: a re-compaction publishes a new version
    assert v2 != v1 and _published(lake) == {D1: v2}
    assert _counts(lake) == {D1: 7}
    assert archived(lake) == {} and archive.archive_record(lake, D1) is None
    assert not is_pinned(lake, D1)
    assert [d.archive for d in day_status(lake)] == [None]
    assert reconcile(lake).ok == [D1]

    key = archive.archive_key(lake.spec, D1)
    assert lake.storage.head("curated", key) is not None  # stale until something touches the day
    with pytest.raises(NotFoundError, match="stale archive record is removed"):
        restore(lake, D1)
    assert lake.storage.head("curated", key) is None
    assert archive_partition(lake, D1, "GLACIER").version == v2


def test_reconcile_reports_archived_days_and_never_publishes_them(lake: Lake):
    v1 = _publish(lake, D1)
    v2 = _publish(lake, D2, n=3)
    archive_partition(lake, D1, "GLACIER")
    lake.catalog.drop_partition(lake.spec.table, D2)  # a real gap, to show it is still fixed

    report = reconcile(lake)
    assert [(f.dt, f.kind) for f in report.findings] == [(D2, "missing")]
    assert [(a.dt, a.kind, a.lake_version) for a in report.archived] == [(D1, "archived", v1)]
    assert "1 archived" in report.summary()

    fixed = reconcile(lake, fix=True)
    assert [(x.dt, x.action, x.ok) for x in fixed.fixes] == [(D2, "published", True)]
    assert _published(lake) == {D2: v2}
    again = reconcile(lake, fix=True)
    assert again.clean and again.fixes == [] and again.ok == [D2] and [a.dt for a in again.archived] == [D1]


# -------------------------------------------------------------------------------------- S3 only


@pytest.fixture
def s3_lake(moto_endpoint: str, tmp_path: Path) -> Lake:
    return Lake.open(s3_settings_for(moto_endpoint, tmp_path / "lake"))


def test_glacier_files_break_reads_until_restore_brings_the_day_back(s3_lake: Lake):
    lake = s3_lake
    _publish(lake, D1)
    _publish(lake, D2, n=3)
    before = _counts(lake)
    record = archive_partition(lake, D1, "GLACIER")
    _to_glacier(lake, record.files)

    # why the day had to leave the catalog: its files can no longer be read
    bucket = lake.settings.bucket("curated")
    with pytest.raises(ClientError) as caught:
        lake.storage.client.get_object(Bucket=bucket, Key=record.files[0])
    assert caught.value.response["Error"]["Code"] == "InvalidObjectState"
    with pytest.raises(LakeError):
        lake.storage.get("curated", record.files[0])
    assert {lake.storage.restore_state("curated", k) for k in record.files} == {"archived"}
    assert _counts(lake) == {D2: 3}  # the query over the catalog still works: D1 is not in it

    started = time.time()
    result = restore(lake, D1)  # moto restores at once
    assert (result.state, result.requested, result.republished) == ("restored", len(record.files), True)
    assert _counts(lake) == before  # DuckDB over s3fs reads the restored copies
    assert lake.storage.head("curated", record.files[0]).storage_class == "GLACIER"
    days = lake.settings.restore_days
    assert started + days * DAY - 120 <= result.restored_until <= time.time() + days * DAY
    state = archived(lake)[D1]
    assert state.published and state.restored_until == result.restored_until
    assert state.requested_at is not None and state.restore_tier == "Standard"
    assert is_pinned(lake, D1) and _glue_has(lake, D1)

    assert expire_restores(lake, now=result.restored_until) == [D1]
    assert not _glue_has(lake, D1) and _counts(lake) == {D2: 3}
    assert archived(lake)[D1].restore_state == "none" and not is_pinned(lake, D1)


def test_restore_in_progress_reports_progress_and_changes_nothing(s3_lake: Lake, moto_endpoint: str):
    lake = s3_lake
    _publish(lake, D1, n=8)
    record = archive_partition(lake, D1, "DEEP_ARCHIVE")
    _to_glacier(lake, record.files, "DEEP_ARCHIVE")
    with pytest.raises(ValueError, match="no Expedited"):
        restore(lake, D1, tier="Expedited")

    with _slow_restores(moto_endpoint) as hold:
        first = restore(lake, D1, tier="Bulk")
        hold()
        assert (first.state, first.requested, first.republished) == ("restoring", len(record.files), False)
        assert first.ready == first.objects - len(record.files)  # manifest and audit stay readable
        assert f"{first.ready} of {first.objects} objects restored" in first.message
        state = archived(lake)[D1]
        assert state.restore_state == "requested" and state.restore_tier == "Bulk"
        assert "restore requested" in state.label and not is_pinned(lake, D1)

        before = _snapshot(lake)
        second = restore(lake, D1, tier="Standard", days=9)
        assert (second.state, second.requested, second.ready) == ("restoring", 0, first.ready)
        assert _snapshot(lake) == before and archived(lake)[D1] == state
        assert reconcile(lake, fix=True).fixes == []  # archived while restoring: never published
        assert D1 not in _published(lake)
    done = restore(lake, D1)  # the copies are ready now
    assert (done.state, done.requested, done.republished) == ("restored", 0, True)
    assert _counts(lake) == {D1: 8}
    assert archived(lake)[D1].restore_days == lake.settings.restore_days  # as first asked


def test_glue_table_reads_restored_glacier_objects(s3_lake: Lake):
    lake = s3_lake
    _publish(lake, D1)
    glue, db = _glue(lake), lake.settings.glue_database
    table = glue.get_table(DatabaseName=db, Name="events")["Table"]
    assert table["Parameters"]["read_restored_glacier_objects"] == "true"

    # a table created before the property existed gets it on the next ensure_table
    allowed = glue.meta.service_model.shape_for("TableInput").members
    older = {k: v for k, v in table.items() if k in allowed}
    older["Parameters"] = {k: v for k, v in table["Parameters"].items() if k != "read_restored_glacier_objects"}
    glue.update_table(DatabaseName=db, TableInput=older)
    assert "read_restored_glacier_objects" not in glue.get_table(DatabaseName=db, Name="events")["Table"]["Parameters"]
    GlueCatalog.from_settings(lake.settings).ensure_table(lake.spec, lake.storage.uri("curated", "clickstream/events/"))
    params = glue.get_table(DatabaseName=db, Name="events")["Table"]["Parameters"]
    assert params["read_restored_glacier_objects"] == "true" and params["classification"] == "parquet"


# ------------------------------------------------------------------------------------------ CLI


def _run(settings, *args: str):
    return CliRunner().invoke(app, ["--root", str(settings.root_path), *args])


def _ok(result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def _one_line_error(result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_cli_archived_restore_and_status(lake: Lake, settings):
    v1 = _publish(lake, D1)
    _publish(lake, D2, n=3)
    assert "no archived days" in _ok(_run(settings, "archived"))
    archive_partition(lake, D1, "GLACIER")

    listed = _ok(_run(settings, "archived"))
    assert D1 in listed and v1 in listed and "GLACIER" in listed and D2 not in listed
    status = _ok(_run(settings, "status"))
    assert "archived (GLACIER)" in status
    assert "1 archived" in _ok(_run(settings, "catalog", "reconcile"))  # consistent: exit 0

    assert "invalid date" in _one_line_error(_run(settings, "restore", "--date", "2026-13-01"), 2)
    assert "not archived" in _one_line_error(_run(settings, "restore", "--date", D2), 1)
    assert "Expedited" in _run(settings, "restore", "--date", D1, "--tier", "Fast").output
    assert _run(settings, "restore", "--date", D1, "--tier", "Fast").exit_code == 2
    assert "at least 2" in _one_line_error(_run(settings, "restore", "--date", D1, "--days", "1"), 2)

    out = _ok(_run(settings, "restore", "--date", D1, "--days", "4"))
    assert "restored" in out and "re-published" in out and "published until" in out
    assert _counts(lake) == {D1: 5, D2: 3}
    assert "restored until" in _ok(_run(settings, "status"))
    assert "restored until" in _ok(_run(settings, "archived"))
    assert "already published" in _ok(_run(settings, "restore", "--date", D1))


def test_record_keys_are_validated(lake: Lake):
    with pytest.raises(ValueError, match="invalid date"):
        archive.archive_key(lake.spec, "2026-11-01/../x")
    assert archive.archive_key(lake.spec, layout.parse_dt(D1)).endswith(f"dt={D1}.json")
    lake.storage.put("curated", archive.archive_key(lake.spec, D1), b"{not json")
    with pytest.raises(LakeError, match="unreadable"):
        archived(lake)
