"""The README's first command end to end: `lake demo`, then `lake query` agrees with the generator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from assets.cli import app
from pipelines.config import LakeSettings
from pipelines.demo import generate_demo
from pipelines.lake import Lake
from pipelines.land import read_ledger
from pipelines.storage import LocalStorage

pytestmark = pytest.mark.timeout(300)


def _expected(tmp_path, days: int, events: int, files: int):
    today = datetime.now(UTC).date()
    return generate_demo(LocalStorage(tmp_path / "expected"), start=today - timedelta(days=days),
                         days=days, events_per_day=events, files_per_day=files, seed=7)


def test_demo_then_query_matches_generator_and_rerun_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    root = str(tmp_path / "lake")
    runner = CliRunner()
    args = ["--root", root, "demo", "--days", "3", "--events-per-day", "500", "--files-per-day", "12"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "published version" in first.output and "quarantine reasons" in first.output
    assert "quarantined (arrived that day)" in first.output
    expected = _expected(tmp_path, 3, 500, 12)

    def counts():
        out = runner.invoke(app, ["--root", root, "query", "--format", "json",
                                  "select dt, count(*) as n, count(distinct event_id) as ids "
                                  "from events group by dt order by dt"])
        assert out.exit_code == 0, out.output
        return {r["dt"]: (r["n"], r["ids"]) for r in json.loads(out.output)}

    got = counts()
    assert got == {d: (n, n) for d, n in expected.unique_events_per_day.items()}

    lake = Lake.open(LakeSettings(root=root))
    ledger = read_ledger(lake)
    assert all(f.lines == f.landed + f.quarantined for f in ledger)
    assert sum(f.quarantined for f in ledger) == expected.bad_lines
    assert sum(1 for f in ledger if f.file_reason == "corrupt_gzip") == expected.corrupt_files
    for p in lake.catalog.list_partitions("events"):
        manifest = json.loads(lake.storage.get("curated", p.location.split("/curated/", 1)[1] + "_manifest.json"))
        c = manifest["counts"]
        assert c["raw_events"] == c["rows"] + c["duplicates"]
        assert c["duplicates"] == expected.duplicate_copies_per_day.get(p.dt, 0)

    versions = {p.dt: p.version for p in lake.catalog.list_partitions("events")}
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert counts() == got
    assert {p.dt: p.version for p in lake.catalog.list_partitions("events")} == versions
    assert len(read_ledger(lake)) == len(ledger)
