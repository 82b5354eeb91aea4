"""The catalogs: compare-and-set publishing, schema compatibility, and real concurrent
processes publishing to the same catalog.

The behaviour tests run on both implementations (the SQLite :class:`LocalCatalog` and the
:class:`GlueCatalog` on the moto emulator); the ones about SQLite itself run on the local one.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from pipelines.catalog import (
    Catalog,
    ConcurrentPublishError,
    LocalCatalog,
    Partition,
    check_compatible,
)
from pipelines.config import LakeSettings
from pipelines.errors import SchemaError, TransientError
from pipelines.glue import GlueCatalog
from pipelines.lake import Lake
from pipelines.schema import Column, TableSpec, load_spec
from tests.conftest import s3_settings_for
from tests.helpers.catalog_publisher import (
    RACE_DAY,
    expected_version,
    glue_env,
    partition_dt,
    run_workers,
)

pytestmark = pytest.mark.timeout(120)

LOCATION = "/lake/curated/clickstream/events/"


def _part(dt: str, version: str, rows: int = 1) -> Partition:
    loc = f"{LOCATION}dt={dt}/{version}/"
    return Partition("events", dt, version, loc, (loc + "part-00000.parquet",), rows, time.time())


def _glue_settings(request, tmp_path: Path) -> LakeSettings:
    return s3_settings_for(request.getfixturevalue("moto_endpoint"), tmp_path / "lake")


@pytest.fixture(params=["local", "glue"])
def catalog(request, tmp_path: Path) -> Catalog:
    if request.param == "local":
        return LocalCatalog(tmp_path / "_catalog" / "catalog.sqlite")
    glue = GlueCatalog.from_settings(_glue_settings(request, tmp_path))
    glue.ensure_table(load_spec(), LOCATION)  # Glue partitions need their table
    return glue


def _cols(spec: TableSpec, catalog: Catalog | None = None) -> list[tuple[str, str]]:
    """The spec's columns as ``catalog`` stores them: our types locally, Hive types in Glue."""
    if isinstance(catalog, GlueCatalog):
        return [(c.name, c.hive_type) for c in spec.columns]
    return [(c.name, c.type) for c in spec.columns]


# --------------------------------------------------------------------------------------------
# compare-and-set


def test_publish_is_compare_and_set(catalog: Catalog):
    v1, v2, v3 = "v-" + "1" * 16, "v-" + "2" * 16, "v-" + "3" * 16
    assert catalog.get_partition("events", "2026-11-01") is None

    catalog.publish("events", _part("2026-11-01", v1, 10), expected_version=None)
    assert catalog.get_partition("events", "2026-11-01").version == v1

    # a run that read "nothing published" before v1 went in must not overwrite it
    with pytest.raises(ConcurrentPublishError):
        catalog.publish("events", _part("2026-11-01", v2), expected_version=None)
    with pytest.raises(ConcurrentPublishError):
        catalog.publish("events", _part("2026-11-01", v2), expected_version=v3)
    assert catalog.get_partition("events", "2026-11-01").version == v1
    assert issubclass(ConcurrentPublishError, TransientError)  # retried after re-reading

    catalog.publish("events", _part("2026-11-01", v2, 20), expected_version=v1)
    got = catalog.get_partition("events", "2026-11-01")
    assert (got.version, got.rows) == (v2, 20)
    assert got.files == (f"{LOCATION}dt=2026-11-01/{v2}/part-00000.parquet",)

    # re-publishing the version that is already there is a no-op, whatever was expected
    catalog.publish("events", _part("2026-11-01", v2, 999), expected_version=v1)
    catalog.publish("events", _part("2026-11-01", v2, 999), expected_version=None)
    assert catalog.get_partition("events", "2026-11-01").rows == 20
    local = isinstance(catalog, LocalCatalog)  # the publish log is the local catalog's own
    if local:
        assert [(v, p, a) for v, p, _, a in catalog.history("events", "2026-11-01")] == [
            (v1, None, "publish"), (v2, v1, "publish")]

    # other partitions and tables are independent
    catalog.publish("events", _part("2026-11-02", v3), expected_version=None)
    assert [p.dt for p in catalog.list_partitions("events")] == ["2026-11-01", "2026-11-02"]
    assert catalog.list_partitions("other") == []

    catalog.drop_partition("events", "2026-11-02")
    assert catalog.get_partition("events", "2026-11-02") is None
    assert [p.dt for p in catalog.list_partitions("events")] == ["2026-11-01"]
    if local:
        assert catalog.history("events", "2026-11-02")[-1][3] == "drop"
    catalog.drop_partition("events", "2026-11-02")  # dropping again is a no-op
    if local:
        assert len(catalog.history("events", "2026-11-02")) == 2


def test_publish_many_applies_the_others_and_names_the_conflicts(catalog: Catalog):
    a, b, c = "v-" + "a" * 16, "v-" + "b" * 16, "v-" + "c" * 16
    catalog.publish("events", _part("2026-11-01", a), expected_version=None)
    catalog.publish("events", _part("2026-11-02", a), expected_version=None)
    with pytest.raises(ConcurrentPublishError) as caught:
        catalog.publish_many("events", [
            (_part("2026-11-01", b), a),      # at its expected version: applied
            (_part("2026-11-02", b), c),      # at another version: a conflict, untouched
            (_part("2026-11-03", b), None),   # new: applied
        ])
    assert caught.value.conflicts == ["2026-11-02"]
    assert {p.dt: p.version for p in catalog.list_partitions("events")} == {
        "2026-11-01": b, "2026-11-02": a, "2026-11-03": b}
    # again, with the conflict resolved: only what still differs changes
    assert catalog.publish_many("events", [(_part("2026-11-01", b), a), (_part("2026-11-02", b), a)]) == [
        "2026-11-02"]
    assert catalog.publish_many("events", []) == []


def test_catalog_survives_reopening(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    LocalCatalog(path).publish("events", _part("2026-11-01", "v-" + "a" * 16), expected_version=None)
    again = LocalCatalog(path)
    assert again.get_partition("events", "2026-11-01").version == "v-" + "a" * 16


def test_lake_catalog_lives_in_the_lake_folder(local_lake: Lake):
    assert isinstance(local_lake.catalog, LocalCatalog)
    assert local_lake.catalog.path == local_lake.settings.root_path / "_catalog" / "catalog.sqlite"


def test_s3_lake_catalog_is_glue(request, tmp_path: Path):
    settings = _glue_settings(request, tmp_path)
    catalog = Lake.open(settings).catalog
    assert isinstance(catalog, GlueCatalog)
    assert catalog.database == settings.glue_database
    # LAKE_CATALOG=local keeps the SQLite catalog next to S3 data (for MinIO and friends)
    assert isinstance(Lake.open(settings.with_(catalog="local")).catalog, LocalCatalog)


# --------------------------------------------------------------------------------------------
# schema compatibility


def test_check_compatible_accepts_only_additive_changes():
    spec = load_spec()
    old = _cols(spec)
    check_compatible(old, old, "events")
    check_compatible(old, [*old, ("new_col", "string")], "events")

    removed = [c for c in old if c[0] != "page_title"]
    with pytest.raises(SchemaError, match="removed or renamed"):
        check_compatible(old, removed, "events")
    renamed = [("page_name", t) if n == "page_title" else (n, t) for n, t in old]
    with pytest.raises(SchemaError, match="removed or renamed"):
        check_compatible(old, renamed, "events")
    retyped = [(n, "int64") if n == "page_title" else (n, t) for n, t in old]
    with pytest.raises(SchemaError, match="changes type"):
        check_compatible(old, retyped, "events")
    inserted = [old[0], ("new_col", "string"), *old[1:]]
    with pytest.raises(SchemaError, match="order"):
        check_compatible(old, inserted, "events")


def _with_columns(spec: TableSpec, columns) -> TableSpec:
    return dataclasses.replace(spec, columns=tuple(columns))


def _stored_columns(catalog: Catalog) -> list[tuple[str, str]]:
    if isinstance(catalog, GlueCatalog):
        table = catalog.client.get_table(DatabaseName=catalog.database, Name="events")["Table"]
        return [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    with sqlite3.connect(catalog.path) as db:
        (spec_json,) = db.execute("SELECT spec FROM tables WHERE name='events'").fetchone()
    return [tuple(c) for c in orjson.loads(spec_json)["columns"]]


def test_ensure_table_accepts_additive_and_refuses_incompatible_specs(catalog: Catalog):
    spec = load_spec()
    catalog.ensure_table(spec, LOCATION)
    catalog.ensure_table(spec, LOCATION)  # idempotent
    assert _stored_columns(catalog) == _cols(spec, catalog)

    added = _with_columns(spec, [*spec.columns, Column("experiment_id", "string", paths=(("context", "experiment"),))])
    catalog.ensure_table(added, LOCATION)
    assert _stored_columns(catalog) == [*_cols(spec, catalog), ("experiment_id", "string")]

    def refused(changed: TableSpec, match: str) -> None:
        with pytest.raises(SchemaError, match=match):
            catalog.ensure_table(changed, LOCATION)
        assert _stored_columns(catalog) == _cols(added, catalog)  # nothing changed

    cols = list(added.columns)
    i = added.column_names.index("page_title")
    refused(_with_columns(added, cols[:i] + cols[i + 1:]), "removed or renamed")
    refused(_with_columns(added, [*cols[:i], dataclasses.replace(cols[i], name="page_name"), *cols[i + 1:]]),
            "removed or renamed")
    refused(_with_columns(added, [*cols[:i], dataclasses.replace(cols[i], type="int64"), *cols[i + 1:]]),
            "changes type")
    # the previous spec (without the added column) can no longer write to the table
    refused(spec, "removed or renamed")
    # nor can an older schema version
    catalog.ensure_table(dataclasses.replace(added, version=2), LOCATION)
    with pytest.raises(SchemaError, match="newer"):
        catalog.ensure_table(dataclasses.replace(added, version=1), LOCATION)


# --------------------------------------------------------------------------------------------
# concurrency with real processes


@pytest.mark.parametrize("kind", ["local", "glue"])
def test_eight_processes_publishing_at_once_lose_nothing(request, tmp_path: Path, kind: str):
    # fewer partitions per worker on Glue: each one is five HTTP calls to the one emulator process
    workers, count = 8, 25 if kind == "local" else 8
    if kind == "local":
        # the catalog file does not exist yet: creating it is part of the race
        catalog_path = tmp_path / "_catalog" / "catalog.sqlite"
        results = run_workers(tmp_path, str(catalog_path), workers, count, "distinct")
        catalog: Catalog = LocalCatalog(catalog_path)
    else:
        # nor do the Glue database and table: every worker's ensure_table races to create them
        settings = _glue_settings(request, tmp_path)
        results = run_workers(tmp_path, "glue", workers, count, "distinct", env=glue_env(settings))
        catalog = GlueCatalog.from_settings(settings)
    assert sorted(r["worker"] for r in results) == list(range(workers))

    parts = {p.dt: p for p in catalog.list_partitions("events")}
    expected = {partition_dt(w, i, count): (expected_version(w, i), w * 1000 + i)
                for w in range(workers) for i in range(count)}
    assert len(expected) == workers * count
    assert {dt: (p.version, p.rows) for dt, p in parts.items()} == expected
    if isinstance(catalog, GlueCatalog):
        tables = catalog.client.get_tables(DatabaseName=catalog.database)["TableList"]
        assert [t["Name"] for t in tables] == ["events"]
        return
    with sqlite3.connect(catalog_path) as db:
        log = db.execute("SELECT dt, version, previous, action FROM publish_log").fetchall()
        (tables,) = db.execute("SELECT count(*) FROM tables").fetchone()
    assert len(log) == 200
    assert sorted((dt, v) for dt, v, _, _ in log) == sorted((dt, v) for dt, (v, _) in expected.items())
    assert all(prev is None and action == "publish" for _, _, prev, action in log)
    assert tables == 1


# Local only: Glue has no conditional write for partitions, so two processes moving the same
# partition at once can both pass their read-check-write and the last writer wins (both may
# report success). The pipeline serializes same-partition publishes with a lock instead.
def test_concurrent_compare_and_set_on_one_partition_has_exactly_one_winner(tmp_path: Path):
    catalog_path = tmp_path / "catalog.sqlite"
    LocalCatalog(catalog_path).publish("events", _part(RACE_DAY, "v-base"), expected_version=None)
    results = run_workers(tmp_path, str(catalog_path), 6, 1, "race")
    winners = [r for r in results if r["outcome"] == "won"]
    assert len(winners) == 1, results
    catalog = LocalCatalog(catalog_path)
    assert catalog.get_partition("events", RACE_DAY).version == winners[0]["version"]
    assert [(v, p) for v, p, _, _ in catalog.history("events", RACE_DAY)] == [
        ("v-base", None), (winners[0]["version"], "v-base")]
