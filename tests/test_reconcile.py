"""Reconcile: the catalog is compared with what the lake vouches for, on both backends.

Inconsistencies are made by calling the catalog and storage directly, as a cut-short publish, a
hand edit of Glue or a stray delete would leave them. No mocks.
"""

from __future__ import annotations

import time

import pytest

from pipelines import layout
from pipelines.catalog import Partition
from pipelines.compact import read_manifest
from pipelines.config import ROLES
from pipelines.lake import Lake
from pipelines.land import land_inbox
from pipelines.reconcile import ReconcileReport, reconcile
from pipelines.wap import process_day, write_and_audit
from tests.conftest import event, ndjson

pytestmark = pytest.mark.timeout(300)

D1, D2, D3 = "2026-11-01", "2026-11-02", "2026-11-03"
EMPTY_DAY = "2026-10-15"
_ids = iter(range(10**6))


def _land(lake: Lake, day: str, n: int = 5) -> None:
    ids = [next(_ids) for _ in range(n)]
    lake.storage.put("landing", f"web/{day}-{ids[0]}.ndjson.gz", ndjson([event(i, day=day) for i in ids]))
    land_inbox(lake)


def _publish_days(lake: Lake, *days: str) -> dict[str, str]:
    for day in days:
        _land(lake, day)
    return {day: process_day(lake, day).version for day in days}


def _partition(lake: Lake, dt: str, version: str, location: str | None = None) -> Partition:
    """A catalog entry for ``version`` built like a publish builds it (or pointing elsewhere)."""
    manifest = read_manifest(lake, dt, version) or {"outputs": [], "counts": {"rows": 0}}
    return Partition(
        table=lake.spec.table, dt=dt, version=version,
        location=location or lake.storage.uri("curated", layout.version_prefix(lake.spec, dt, version)),
        files=tuple(lake.storage.uri("curated", o["key"]) for o in manifest["outputs"]),
        rows=manifest["counts"]["rows"], published_at=time.time())


def _point(lake: Lake, dt: str, version: str, location: str | None = None) -> None:
    current = lake.catalog.get_partition(lake.spec.table, dt)
    lake.catalog.publish(lake.spec.table, _partition(lake, dt, version, location),
                         expected_version=current.version if current else None)


def _published(lake: Lake, dt: str) -> str | None:
    p = lake.catalog.get_partition(lake.spec.table, dt)
    return p.version if p else None


def _version_keys(lake: Lake, dt: str, version: str) -> list[str]:
    return list(lake.storage.list_keys("curated", layout.version_prefix(lake.spec, dt, version)))


def _kinds(report: ReconcileReport) -> dict[str, str]:
    return {f.dt: f.kind for f in report.findings}


def _snapshot(lake: Lake):
    objects = {role: sorted((o.key, o.etag, o.size) for o in lake.storage.list(role)) for role in ROLES}
    partitions = lake.catalog.list_partitions(lake.spec.table)
    history = ({p.dt: lake.catalog.history(lake.spec.table, p.dt) for p in partitions}
               if hasattr(lake.catalog, "history") else None)
    return objects, partitions, history


def _assert_clean(lake: Lake) -> ReconcileReport:
    again = reconcile(lake, fix=True)
    assert again.findings == [] and again.fixes == [], again.summary()
    return again


# --------------------------------------------------------------------------------------------


def test_healthy_lake_reports_all_ok(lake: Lake):
    _publish_days(lake, D1, D2)
    report = reconcile(lake)
    assert report.clean and report.findings == [] and report.ok == [D1, D2]
    assert report.summary() == "events: 2 ok"
    fixed = reconcile(lake, fix=True)
    assert fixed.fixes == [] and fixed.ok == [D1, D2]


def test_empty_lake_is_clean(lake: Lake):
    report = reconcile(lake, fix=True)
    assert report.clean and report.ok == [] and report.fixes == []


def test_dropped_partition_is_missing_and_fixed(lake: Lake):
    versions = _publish_days(lake, D1, D2)
    lake.catalog.drop_partition(lake.spec.table, D1)

    report = reconcile(lake)
    (f,) = report.findings
    assert (f.dt, f.kind, f.catalog_version, f.lake_version) == (D1, "missing", None, versions[D1])
    assert report.ok == [D2] and _published(lake, D1) is None  # read-only without fix

    fixed = reconcile(lake, fix=True)
    assert [(x.dt, x.kind, x.action, x.ok) for x in fixed.fixes] == [(D1, "missing", "published", True)]
    assert _published(lake, D1) == versions[D1]
    part = lake.catalog.get_partition(lake.spec.table, D1)
    assert part.location == lake.storage.uri("curated", layout.version_prefix(lake.spec, D1, versions[D1]))
    _assert_clean(lake)


def test_catalog_at_an_older_version_is_superseded_and_fixed(lake: Lake):
    a = _publish_days(lake, D1)[D1]
    _land(lake, D1)
    b = process_day(lake, D1).version
    assert a != b and _published(lake, D1) == b
    _point(lake, D1, a)  # someone rolled the pointer back by hand

    report = reconcile(lake)
    (f,) = report.findings
    assert (f.kind, f.catalog_version, f.lake_version) == ("superseded", a, b)
    assert _published(lake, D1) == a

    fixed = reconcile(lake, fix=True)
    assert [(x.kind, x.action, x.ok) for x in fixed.fixes] == [("superseded", "published", True)]
    assert _published(lake, D1) == b
    _assert_clean(lake)


def test_a_newer_version_staged_after_the_publish_is_not_superseded(lake: Lake):
    a = _publish_days(lake, D1)[D1]
    _land(lake, D1)
    staged, audit = write_and_audit(lake, D1)  # written and audited, its publish step still to come
    assert audit.passed

    report = reconcile(lake, fix=True)
    assert report.findings == [] and report.fixes == [] and report.ok == [D1]
    assert [(s.dt, s.catalog_version, s.lake_version) for s in report.staged] == [(D1, a, staged.version)]
    assert _published(lake, D1) == a


def test_catalog_pointing_at_deleted_version_files_is_missing_version(lake: Lake):
    versions = _publish_days(lake, D1, D2)
    a = versions[D1]
    _land(lake, D1)
    b, audit = write_and_audit(lake, D1)
    assert audit.passed
    lake.storage.delete("curated", _version_keys(lake, D1, a))  # the published version is gone

    report = reconcile(lake)
    (f,) = report.findings
    assert (f.dt, f.kind, f.catalog_version, f.lake_version) == (D1, "missing_version", a, b.version)
    assert "no manifest" in f.detail

    fixed = reconcile(lake, fix=True)
    assert [(x.kind, x.action, x.ok) for x in fixed.fixes] == [("missing_version", "published", True)]
    assert _published(lake, D1) == b.version
    _assert_clean(lake)


def test_missing_data_files_are_missing_version_and_unfixable_without_an_audited_version(lake: Lake):
    versions = _publish_days(lake, D1, D2)
    keys = _version_keys(lake, D1, versions[D1])
    parts = [k for k in keys if k.endswith(".parquet")]
    lake.storage.delete("curated", parts)  # manifest and audit stay, the data does not
    lake.catalog.drop_partition(lake.spec.table, D2)  # fixable, to show one failure stops nothing

    report = reconcile(lake)
    assert _kinds(report) == {D1: "missing_version", D2: "missing"}
    d1 = report.findings[0]
    # the broken version is still the newest audited one, so nothing better can be published
    assert d1.lake_version == versions[D1] and "lacks" in d1.detail

    fixed = reconcile(lake, fix=True)
    by_day = {x.dt: x for x in fixed.fixes}
    assert by_day[D2].ok and _published(lake, D2) == versions[D2]
    assert not by_day[D1].ok and "broken" in by_day[D1].detail
    assert _published(lake, D1) == versions[D1]


def test_missing_manifest_with_nothing_audited_is_reported_not_fixed(lake: Lake):
    versions = _publish_days(lake, D1, D2)
    spec = lake.spec
    lake.storage.delete("curated", [layout.manifest_key(spec, D1, versions[D1]),
                                    layout.audit_key(spec, D1, versions[D1])])
    lake.catalog.drop_partition(spec.table, D2)

    fixed = reconcile(lake, fix=True)
    assert _kinds(fixed) == {D1: "missing_version", D2: "missing"}
    by_day = {x.dt: x for x in fixed.fixes}
    assert not by_day[D1].ok and "no audited version" in by_day[D1].detail
    assert by_day[D2].ok and _published(lake, D2) == versions[D2]
    assert _published(lake, D1) == versions[D1]  # nothing better to point at: left for a re-compact


def test_catalog_partition_for_a_day_without_data_is_orphan_and_dropped(lake: Lake):
    _publish_days(lake, D1)
    ghost = "v-00000000deadbeef"
    _point(lake, EMPTY_DAY, ghost)

    report = reconcile(lake)
    (f,) = report.findings
    assert (f.dt, f.kind, f.catalog_version, f.lake_version) == (EMPTY_DAY, "orphan", ghost, None)
    assert _published(lake, EMPTY_DAY) == ghost

    fixed = reconcile(lake, fix=True)
    assert [(x.dt, x.action, x.ok) for x in fixed.fixes] == [(EMPTY_DAY, "dropped", True)]
    assert _published(lake, EMPTY_DAY) is None and _published(lake, D1) is not None
    _assert_clean(lake)


def test_orphan_whose_location_holds_data_is_not_dropped(lake: Lake):
    versions = _publish_days(lake, D1)
    elsewhere = lake.storage.uri("curated", layout.version_prefix(lake.spec, D1, versions[D1]))
    _point(lake, EMPTY_DAY, versions[D1], location=elsewhere)

    fixed = reconcile(lake, fix=True)
    assert _kinds(fixed) == {EMPTY_DAY: "orphan"}
    (x,) = fixed.fixes
    assert not x.ok and "holds data" in x.detail
    assert _published(lake, EMPTY_DAY) == versions[D1]


def test_catalog_at_a_newer_unaudited_version_is_reported_not_rolled_back(lake: Lake):
    a = _publish_days(lake, D1)[D1]
    _land(lake, D1)
    b, _ = write_and_audit(lake, D1)
    lake.storage.delete("curated", [layout.audit_key(lake.spec, D1, b.version)])
    _point(lake, D1, b.version)  # published by hand, past the audit gate

    fixed = reconcile(lake, fix=True)
    (f,) = fixed.findings
    assert (f.kind, f.catalog_version, f.lake_version) == ("unaudited", b.version, a)
    (x,) = fixed.fixes
    assert not x.ok and x.action == "skipped"
    assert _published(lake, D1) == b.version


def test_reconcile_without_fix_writes_nothing_and_fix_is_idempotent(lake: Lake):
    versions = _publish_days(lake, D1, D2, D3)
    # D1: missing; D2: superseded; D3: missing_version; EMPTY_DAY: orphan
    lake.catalog.drop_partition(lake.spec.table, D1)
    _land(lake, D2)
    newer = process_day(lake, D2).version
    _point(lake, D2, versions[D2])
    _land(lake, D3)
    staged, _ = write_and_audit(lake, D3)
    lake.storage.delete("curated", _version_keys(lake, D3, versions[D3]))
    _point(lake, EMPTY_DAY, "v-00000000deadbeef")

    before = _snapshot(lake)
    report = reconcile(lake)
    assert _kinds(report) == {D1: "missing", D2: "superseded", D3: "missing_version",
                              EMPTY_DAY: "orphan"}
    assert report.fixes == []
    assert _snapshot(lake) == before  # no object written or removed, catalog and its log unchanged
    assert reconcile(lake).findings == report.findings

    fixed = reconcile(lake, fix=True)
    assert sorted((x.dt, x.action, x.ok) for x in fixed.fixes) == [
        (EMPTY_DAY, "dropped", True), (D1, "published", True), (D2, "published", True),
        (D3, "published", True)]
    assert fixed.failed == [] and len(fixed.fixed) == 4
    assert {p.dt: p.version for p in lake.catalog.list_partitions(lake.spec.table)} == {
        D1: versions[D1], D2: newer, D3: staged.version}
    # no data moved: the fix only changed catalog pointers
    assert _snapshot(lake)[0] == before[0]

    again = _assert_clean(lake)
    assert again.ok == [D1, D2, D3]
