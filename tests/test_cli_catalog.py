"""``lake catalog reconcile`` and ``lake ddl`` through the command line, on both backends."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.land import land_inbox
from pipelines.wap import process_day
from tests.conftest import event, ndjson

pytestmark = pytest.mark.timeout(180)
DAYS = ["2026-11-01", "2026-11-02"]


@pytest.fixture
def published(lake):
    for d in DAYS:
        lake.storage.put("landing", f"web/{d}.ndjson.gz", ndjson([event(i, day=d) for i in range(20)]))
    land_inbox(lake)
    for d in DAYS:
        process_day(lake, d)
    return lake


def _run(lake, *args: str):
    # on S3 the fixture put the test's LAKE_* variables in the environment, as a deployment does
    return CliRunner().invoke(app, ["--root", str(lake.settings.root_path), *args])


def test_reconcile_reports_a_missing_partition_and_fix_restores_it(published):
    lake = published
    ok = _run(lake, "catalog", "reconcile")
    assert ok.exit_code == 0, ok.output
    assert "2 ok" in ok.output
    before = lake.catalog.get_partition("events", DAYS[0])
    lake.catalog.drop_partition("events", DAYS[0])

    found = _run(lake, "catalog", "reconcile")
    assert found.exit_code == 1, found.output
    assert "missing" in found.output and DAYS[0] in found.output
    assert lake.catalog.get_partition("events", DAYS[0]) is None  # reporting alone writes nothing

    fixed = _run(lake, "catalog", "reconcile", "--fix")
    assert fixed.exit_code == 0, fixed.output
    after = lake.catalog.get_partition("events", DAYS[0])
    assert (after.version, after.location, after.rows) == (before.version, before.location, before.rows)
    assert _run(lake, "catalog", "reconcile").exit_code == 0


def test_ddl_prints_create_and_add_partition_statements(published):
    lake = published
    args = ["ddl"] if lake.settings.backend == "s3" else ["ddl", "--location", "s3://my-lake-curated/clickstream/events/"]
    out = _run(lake, *args)
    assert out.exit_code == 0, out.output
    assert "CREATE EXTERNAL TABLE IF NOT EXISTS" in out.output
    assert "ADD IF NOT EXISTS" in out.output
    for d in DAYS:
        assert f"'{d}'" in out.output
    if lake.settings.backend == "s3":
        for p in lake.catalog.list_partitions("events"):
            assert f"LOCATION '{p.location}'" in out.output


def test_ddl_refuses_a_hostile_database_name(published):
    out = _run(published, "ddl", "--database", "x`; DROP TABLE events; --", "--location",
               "s3://my-lake-curated/clickstream/events/")
    assert out.exit_code == 2
    assert out.output.startswith("error:") and "Traceback" not in out.output
