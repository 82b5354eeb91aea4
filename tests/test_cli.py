"""End-to-end tests of the ``lake`` command line against a temporary embedded lake."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from pipelines import layout
from pipelines.cli import app, open_lake
from pipelines.land import read_ledger

pytestmark = pytest.mark.timeout(120)


def _event(mid: str, ts: str, name: str = "Clicked", anon: str = "anon-1") -> dict:
    return {"messageId": mid, "type": "track", "event": name, "anonymousId": anon, "timestamp": ts,
            "properties": {"button": "buy", "label": "[bold]not markup[/bold]"}}


def _ndjson_gz(lines: list[dict | bytes]) -> bytes:
    raw = b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines)
    return gzip.compress(raw + b"\n")


# 2026-11-01: 3 distinct events + 1 duplicate (m-2 again in the second file) and 1 bad line;
# 2026-11-02: 2 events. 2026-10-31 and 2026-11-03 have nothing.
FILE_A = [
    _event("m-1", "2026-11-01T10:00:00Z"),
    _event("m-2", "2026-11-01T11:00:00Z", name="Viewed"),
    b'{"messageId": "broken", "type": "track", ',  # malformed JSON: quarantined
    _event("m-4", "2026-11-02T09:30:00Z", anon="anon-2"),
]
FILE_B = [
    _event("m-2", "2026-11-01T11:00:00Z", name="Viewed"),  # duplicate of m-2
    _event("m-3", "2026-11-01T23:59:59Z"),
    _event("m-5", "2026-11-02T12:00:00Z", anon="anon-3"),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("LAKE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def root(settings) -> Path:
    """A lake with two landing files, on either backend (on S3 the ``settings`` fixture has put
    the test's ``LAKE_*`` variables in the environment, so every command reaches its buckets)."""
    root = settings.root_path
    lake = open_lake(str(root))
    lake.storage.put("landing", "segment/2026/11/01/batch-a.ndjson.gz", _ndjson_gz(FILE_A))
    lake.storage.put("landing", "segment/2026/11/02/batch-b.ndjson.gz", _ndjson_gz(FILE_B))
    return root


def run(runner: CliRunner, root: Path, *args: str):
    return runner.invoke(app, ["--root", str(root), *args])


def ok(result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    return result.stdout


def assert_one_line_error(result, code: int | None = None) -> str:
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


def _land(runner: CliRunner, root: Path) -> str:
    return ok(run(runner, root, "land"))


def _counts(runner: CliRunner, root: Path) -> dict[str, int]:
    out = ok(run(runner, root, "query", "select dt, count(*) as n from events group by dt order by dt",
                 "--format", "csv"))
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["dt", "n"]
    return {dt: int(n) for dt, n in rows[1:]}


def test_land_reports_counts_and_is_idempotent(runner, root):
    out = _land(runner, root)
    assert "lines read" in out and "7" in out
    assert "events landed" in out and "6" in out
    assert "malformed_json" in out
    assert "2026-11-01" in out and "2026-11-02" in out
    again = _land(runner, root)
    assert "nothing to land" in again


def test_land_prefix_only_lands_matching_keys(runner, root):
    out = ok(run(runner, root, "land", "--prefix", "segment/2026/11/02/"))
    assert "events landed" in out
    lake = open_lake(str(root))
    assert [f.source_key for f in read_ledger(lake)] == ["segment/2026/11/02/batch-b.ndjson.gz"]


def test_full_flow(runner, root):
    _land(runner, root)

    status = ok(run(runner, root, "status"))
    assert "2026-11-01" in status and "2026-11-02" in status
    assert "not compacted" in status

    # write and audit only: nothing becomes visible
    staged = ok(run(runner, root, "compact", "--date", "2026-11-02", "--no-publish"))
    assert "not published" in staged and "conservation" in staged
    assert _counts(runner, root) == {}

    out = ok(run(runner, root, "compact", "--date", "2026-11-01"))
    assert "raw events" in out and "duplicates dropped" in out
    assert "all 6 checks passed" in out
    assert "was unpublished" in out
    lake = open_lake(str(root))
    part = lake.catalog.get_partition("events", "2026-11-01")
    assert part is not None and part.rows == 3
    assert part.version in out

    # compacting again changes nothing
    again = ok(run(runner, root, "compact", "--date", "2026-11-01"))
    assert "reused" in again and "unchanged" in again

    verify = ok(run(runner, root, "verify", "--date", "2026-11-01"))
    for name in ("conservation", "unique_event_id", "event_time_in_partition", "schema_matches_spec",
                 "required_not_null", "sorted"):
        assert name in verify
    assert "FAIL" not in verify

    table = ok(run(runner, root, "query", "select dt, count(*) from events group by dt"))
    assert "2026-11-01" in table and "1 row" in table

    ok(run(runner, root, "compact", "--date", "2026-11-02"))
    assert _counts(runner, root) == {"2026-11-01": 3, "2026-11-02": 2}

    js = json.loads(ok(run(runner, root, "query",
                           "select event_id, event_time, properties from events order by event_id",
                           "--format", "json")))
    assert [r["event_id"] for r in js] == ["m-1", "m-2", "m-3", "m-4", "m-5"]
    assert js[0]["event_time"].startswith("2026-11-01T10:00:00")
    assert "[bold]not markup[/bold]" in js[0]["properties"]

    # values from events are printed as text, never as rich markup
    shown = ok(run(runner, root, "query", "select properties from events limit 1"))
    assert "[bold]" in shown

    status = ok(run(runner, root, "status"))
    assert status.count("current") == 2

    tier = ok(run(runner, root, "tier", "--plan"))
    assert "tiering plan" in tier and "monthly saving" in tier
    assert "expiries" in tier and "dt=2026-11-01" in tier and "quarantine" in tier


def test_backfill_skips_empty_days(runner, root):
    _land(runner, root)
    out = ok(run(runner, root, "backfill", "--start", "2026-10-31", "--end", "2026-11-03"))
    lines = {line.split()[1]: line for line in out.splitlines() if line.strip()[2:12].startswith("2026-")}
    assert "skipped" in lines["2026-10-31"] and "skipped" in lines["2026-11-03"]
    assert "published" in lines["2026-11-01"] and "published" in lines["2026-11-02"]
    assert _counts(runner, root) == {"2026-11-01": 3, "2026-11-02": 2}
    # a second backfill republishes nothing
    again = ok(run(runner, root, "backfill", "--start", "2026-11-01", "--end", "2026-11-02"))
    assert "unchanged" in again and "published" not in again.replace("backfill", "")


def test_backfill_continues_past_a_failing_day(runner, root):
    _land(runner, root)
    lake = open_lake(str(root))
    bad_key = layout.raw_key(lake.spec, layout.parse_dt("2026-11-01"), 0, "broken", "0" * 16)
    lake.storage.put("raw", bad_key, b"this is not gzip")
    result = run(runner, root, "backfill", "--start", "2026-11-01", "--end", "2026-11-02")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "FAILED" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "error: 1 of 2 days failed: 2026-11-01"
    assert _counts(runner, root) == {"2026-11-02": 2}


def test_verify_fails_on_a_tampered_manifest(runner, root):
    _land(runner, root)
    ok(run(runner, root, "compact", "--date", "2026-11-01"))
    lake = open_lake(str(root))
    part = lake.catalog.get_partition("events", "2026-11-01")
    key = layout.manifest_key(lake.spec, "2026-11-01", part.version)
    manifest = orjson.loads(lake.storage.get("curated", key))
    manifest["counts"]["duplicates"] += 1
    lake.storage.put("curated", key, orjson.dumps(manifest))
    result = run(runner, root, "verify", "--date", "2026-11-01")
    line = assert_one_line_error(result, 1)
    assert "conservation" in line
    assert "FAIL" in result.stdout


def test_verify_unpublished_day(runner, root):
    _land(runner, root)
    line = assert_one_line_error(run(runner, root, "verify", "--date", "2026-11-01"), 1)
    assert "not published" in line


def test_compact_day_without_raw_data(runner, root):
    _land(runner, root)
    line = assert_one_line_error(run(runner, root, "compact", "--date", "2026-10-31"), 1)
    assert "no raw events" in line


@pytest.mark.parametrize("args, code, needle", [
    (["compact", "--date", "2026-13-01"], 2, "invalid date '2026-13-01'"),
    (["verify", "--date", "yesterday"], 2, "expected YYYY-MM-DD"),
    (["backfill", "--start", "2026-11-02", "--end", "2026-11-01"], 2, "before --start"),
    (["backfill", "--start", "2026-11-01", "--end", "2026-02-30"], 2, "no such day"),
    (["--table", "nope", "status"], 2, "unknown table"),
    (["--table", "../etc", "status"], 2, "invalid table name"),
    (["query", "selec dt from events"], 2, "Parser Error"),
    (["query", "select no_such_column from events"], 2, "no_such_column"),
    (["query", "select * from no_such_table"], 2, "no_such_table"),
    (["tier"], 2, "--plan"),
    (["land", "--prefix", "../outside/"], 2, "invalid object key"),
])
def test_user_errors_are_one_line(runner, root, args, code, needle):
    _land(runner, root)
    line = assert_one_line_error(run(runner, root, *args), code)
    assert needle in line


@pytest.mark.parametrize("args", [
    ["status"], ["query", "select 1"], ["verify", "--date", "2026-11-01"], ["tier", "--plan"],
    ["compact", "--date", "2026-11-01"], ["backfill", "--start", "2026-11-01", "--end", "2026-11-02"],
])
def test_missing_lake(runner, tmp_path, args):
    missing = tmp_path / "no-lake-here"
    line = assert_one_line_error(run(runner, missing, *args), 1)
    assert line == f"error: no lake at {missing}: run `lake demo` or `lake land` first"
    assert not missing.exists()  # reading must not create an empty lake


def test_root_from_environment(runner, root):
    _land(runner, root)
    result = runner.invoke(app, ["status"], env={"LAKE_ROOT": str(root)})
    assert "2026-11-01" in ok(result)


def test_debug_shows_the_exception(runner, tmp_path):
    result = run(runner, tmp_path / "nope", "--debug", "status")
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "NotFoundError"

