"""The local catalog: compare-and-set publishing, schema compatibility, and real concurrent
processes publishing to the same catalog file."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pipelines.catalog import ConcurrentPublishError, LocalCatalog, Partition, check_compatible
from pipelines.errors import SchemaError, TransientError
from pipelines.lake import Lake
from pipelines.schema import Column, TableSpec, load_spec
from tests.helpers.catalog_publisher import RACE_DAY, expected_version, partition_dt

pytestmark = pytest.mark.timeout(120)

HELPER = Path(__file__).resolve().parent / "helpers" / "catalog_publisher.py"
LOCATION = "/lake/curated/clickstream/events/"


def _part(dt: str, version: str, rows: int = 1) -> Partition:
    loc = f"{LOCATION}dt={dt}/{version}/"
    return Partition("events", dt, version, loc, (loc + "part-00000.parquet",), rows, time.time())


@pytest.fixture
def catalog(tmp_path: Path) -> LocalCatalog:
    return LocalCatalog(tmp_path / "_catalog" / "catalog.sqlite")


def _cols(spec: TableSpec) -> list[tuple[str, str]]:
    return [(c.name, c.type) for c in spec.columns]


# --------------------------------------------------------------------------------------------
# compare-and-set


def test_publish_is_compare_and_set(catalog: LocalCatalog):
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
    assert [(v, p, a) for v, p, _, a in catalog.history("events", "2026-11-01")] == [
        (v1, None, "publish"), (v2, v1, "publish")]

    # other partitions and tables are independent
    catalog.publish("events", _part("2026-11-02", v3), expected_version=None)
    assert [p.dt for p in catalog.list_partitions("events")] == ["2026-11-01", "2026-11-02"]
    assert catalog.list_partitions("other") == []

    catalog.drop_partition("events", "2026-11-02")
    assert catalog.get_partition("events", "2026-11-02") is None
    assert catalog.history("events", "2026-11-02")[-1][3] == "drop"
    catalog.drop_partition("events", "2026-11-02")  # dropping again is a no-op
    assert len(catalog.history("events", "2026-11-02")) == 2


def test_catalog_survives_reopening(tmp_path: Path):
    path = tmp_path / "c.sqlite"
    LocalCatalog(path).publish("events", _part("2026-11-01", "v-" + "a" * 16), expected_version=None)
    again = LocalCatalog(path)
    assert again.get_partition("events", "2026-11-01").version == "v-" + "a" * 16


def test_lake_catalog_lives_in_the_lake_folder(lake: Lake):
    assert isinstance(lake.catalog, LocalCatalog)
    assert lake.catalog.path == lake.settings.root_path / "_catalog" / "catalog.sqlite"


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


def _stored_columns(catalog: LocalCatalog) -> list[tuple[str, str]]:
    with sqlite3.connect(catalog.path) as db:
        (spec_json,) = db.execute("SELECT spec FROM tables WHERE name='events'").fetchone()
    return [tuple(c) for c in orjson.loads(spec_json)["columns"]]


def test_ensure_table_accepts_additive_and_refuses_incompatible_specs(catalog: LocalCatalog):
    spec = load_spec()
    catalog.ensure_table(spec, LOCATION)
    catalog.ensure_table(spec, LOCATION)  # idempotent
    assert _stored_columns(catalog) == _cols(spec)

    added = _with_columns(spec, [*spec.columns, Column("experiment_id", "string", paths=(("context", "experiment"),))])
    catalog.ensure_table(added, LOCATION)
    assert _stored_columns(catalog) == [*_cols(spec), ("experiment_id", "string")]

    def refused(changed: TableSpec, match: str) -> None:
        with pytest.raises(SchemaError, match=match):
            catalog.ensure_table(changed, LOCATION)
        assert _stored_columns(catalog) == _cols(added)  # nothing changed

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


def _run_workers(tmp_path: Path, catalog_path: Path, workers: int, count: int, mode: str) -> list[dict]:
    ready, start = tmp_path / f"ready-{mode}", tmp_path / f"start-{mode}"
    ready.mkdir()
    procs = [subprocess.Popen([sys.executable, str(HELPER), str(catalog_path), str(w), str(count),
                               str(ready), str(start), mode],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for w in range(workers)]
    try:
        deadline = time.monotonic() + 60
        while len(list(ready.iterdir())) < workers:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.01)
        start.touch()  # every worker is spinning on this file: they all go at once
        results = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()[-3000:]
            results.append(orjson.loads(out.splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_eight_processes_publishing_at_once_lose_nothing(tmp_path: Path):
    workers, count = 8, 25
    # the catalog file does not exist yet: creating it is part of the race
    catalog_path = tmp_path / "_catalog" / "catalog.sqlite"
    results = _run_workers(tmp_path, catalog_path, workers, count, "distinct")
    assert sorted(r["worker"] for r in results) == list(range(workers))

    catalog = LocalCatalog(catalog_path)
    parts = {p.dt: p for p in catalog.list_partitions("events")}
    expected = {partition_dt(w, i, count): (expected_version(w, i), w * 1000 + i)
                for w in range(workers) for i in range(count)}
    assert len(expected) == 200
    assert {dt: (p.version, p.rows) for dt, p in parts.items()} == expected
    with sqlite3.connect(catalog_path) as db:
        log = db.execute("SELECT dt, version, previous, action FROM publish_log").fetchall()
        (tables,) = db.execute("SELECT count(*) FROM tables").fetchone()
    assert len(log) == 200
    assert sorted((dt, v) for dt, v, _, _ in log) == sorted((dt, v) for dt, (v, _) in expected.items())
    assert all(prev is None and action == "publish" for _, _, prev, action in log)
    assert tables == 1


def test_concurrent_compare_and_set_on_one_partition_has_exactly_one_winner(tmp_path: Path):
    catalog_path = tmp_path / "catalog.sqlite"
    LocalCatalog(catalog_path).publish("events", _part(RACE_DAY, "v-base"), expected_version=None)
    results = _run_workers(tmp_path, catalog_path, 6, 1, "race")
    winners = [r for r in results if r["outcome"] == "won"]
    assert len(winners) == 1, results
    catalog = LocalCatalog(catalog_path)
    assert catalog.get_partition("events", RACE_DAY).version == winners[0]["version"]
    assert [(v, p) for v, p, _, _ in catalog.history("events", RACE_DAY)] == [
        ("v-base", None), (winners[0]["version"], "v-base")]
