"""``trace`` and ``lake trace``: every line of a landing object accounted for, on both backends."""

from __future__ import annotations

import json

import orjson
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.errors import NotFoundError
from pipelines.land import land_inbox
from pipelines.trace import NOT_COMPACTED, PUBLISHED, STAGED, trace
from pipelines.wap import process_day, write_and_audit
from tests.conftest import event, ndjson

pytestmark = pytest.mark.timeout(300)
D1, D2 = "2026-11-01", "2026-11-02"
KEY, OTHER = "web/batch-a.ndjson.gz", "app/batch-b.ndjson.gz"


def _inbox(lake) -> None:
    """File A: 6 good lines over two days and three hours (event 2 twice), 3 bad lines of two
    reasons; file B holds event 4 too, received earlier, so the curated table keeps B's copy."""
    a = [
        event(1, day=D1, hour=10), event(2, day=D1, hour=10), b"{not json",  # line 3
        event(3, day=D1, hour=11), event(2, day=D1, hour=10),  # the same event twice in the file
        b"[1, 2]",  # line 6: not an object
        event(4, day=D2, hour=9), event(5, day=D2, hour=9), b'{"messageId": ',  # line 9
    ]
    b = [event(4, day=D2, hour=9, receivedAt=f"{D2}T00:00:00.000Z"), event(100, day=D2, hour=9)]
    lake.storage.put("landing", KEY, ndjson(a))
    lake.storage.put("landing", OTHER, ndjson(b))
    land_inbox(lake)


def _snapshot(lake) -> dict:
    objects = {role: sorted((o.key, o.etag) for o in lake.storage.list(role))
               for role in ("landing", "raw", "curated", "quarantine")}
    parts = sorted((p.dt, p.version) for p in lake.catalog.list_partitions(lake.spec.table))
    return {"objects": objects, "partitions": parts}


def _by_hour(t):
    return {(r.dt, r.hour): r for r in t.versions[0].raw}


def test_before_compaction_every_landed_event_is_not_compacted_yet(lake):
    _inbox(lake)
    t = trace(lake, KEY)
    assert len(t.versions) == 1
    v = t.versions[0]
    assert (v.lines, v.landed, v.quarantined, v.landing_lines) == (9, 6, 3, 9)
    raws = _by_hour(t)
    assert {k: r.events for k, r in raws.items()} == {(D1, 10): 3, (D1, 11): 1, (D2, 9): 2}
    assert all(r.state == NOT_COMPACTED and r.version is None for r in raws.values())
    assert all(r.recounted == r.events for r in raws.values())
    assert v.pending == 6 and v.kept == 0 and v.duplicates_dropped == 0
    assert v.balanced and t.balanced
    assert "not compacted yet 6" in v.balance()


def test_after_publishing_every_line_is_accounted_for(lake):
    _inbox(lake)
    for d in (D1, D2):
        process_day(lake, d)
    before = _snapshot(lake)
    t = trace(lake, KEY)
    assert _snapshot(lake) == before  # tracing writes nothing
    v = t.versions[0]
    assert (v.lines, v.landed, v.quarantined) == (9, 6, 3)
    raws = _by_hour(t)
    published = {d: lake.catalog.get_partition("events", d).version for d in (D1, D2)}
    for (dt, _), r in raws.items():
        assert (r.state, r.version) == (PUBLISHED, published[dt])
        assert r.key.startswith(f"clickstream/events/dt={dt}/") and v.digest in r.key
    # D1 10h: events 1 and 2 kept, the second copy of 2 dropped (kept from this same file)
    assert (raws[(D1, 10)].kept, raws[(D1, 10)].duplicates_dropped) == (2, 1)
    assert raws[(D1, 10)].kept_from == {KEY: 1}
    assert (raws[(D1, 11)].kept, raws[(D1, 11)].duplicates_dropped) == (1, 0)
    # D2 9h: event 5 kept, event 4 dropped: the curated version kept the other file's copy
    assert (raws[(D2, 9)].kept, raws[(D2, 9)].duplicates_dropped) == (1, 1)
    assert raws[(D2, 9)].kept_from == {OTHER: 1}
    assert all(r.missing == 0 and r.balanced for r in raws.values())
    assert (v.kept, v.duplicates_dropped, v.pending) == (4, 2, 0)
    assert v.lines == v.landed + v.quarantined and v.landed == v.kept + v.duplicates_dropped
    assert v.balanced and t.balanced
    assert v.balance() == ("lines 9 = landed 6 + quarantined 3; landed 6 = kept 4 + duplicates "
                           "dropped 2 + not compacted yet 0: balanced")

    q = v.quarantine
    assert q is not None and q.key.startswith("clickstream/events/lines/") and v.digest in q.key
    assert q.reasons == q.recounted == {"malformed_json": 2, "not_an_object": 1}
    assert q.line_numbers == {"malformed_json": [3, 9], "not_an_object": [6]}

    other = trace(lake, OTHER).versions[0]
    assert (other.lines, other.kept, other.duplicates_dropped, other.quarantine) == (2, 2, 0, None)
    assert other.balanced


def test_a_staged_version_is_reported_as_staged(lake):
    _inbox(lake)
    write_and_audit(lake, D1)  # written and audited, not published
    raws = _by_hour(trace(lake, KEY))
    assert raws[(D1, 10)].state == STAGED and raws[(D1, 10)].version is not None
    assert (raws[(D1, 10)].kept, raws[(D1, 10)].duplicates_dropped) == (2, 1)
    assert raws[(D2, 9)].state == NOT_COMPACTED


def _run(lake, *args: str):
    return CliRunner().invoke(app, ["--root", str(lake.settings.root_path), *args])


def test_cli_json_matches_the_engine_and_the_table_shows_the_balance(lake):
    _inbox(lake)
    for d in (D1, D2):
        process_day(lake, d)
    out = _run(lake, "trace", KEY, "--format", "json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc == orjson.loads(orjson.dumps(trace(lake, KEY).to_dict()))
    assert doc["balanced"] is True
    v = doc["versions"][0]
    assert (v["lines"], v["landed"], v["quarantined"], v["kept"], v["duplicates_dropped"]) == (9, 6, 3, 4, 2)
    assert sorted((r["dt"], r["hour"], r["events"], r["duplicates_dropped"]) for r in v["raw"]) == [
        (D1, 10, 3, 1), (D1, 11, 1, 0), (D2, 9, 2, 1)]

    table = _run(lake, "trace", KEY)
    assert table.exit_code == 0, table.output
    assert "lines 9 = landed 6 + quarantined 3" in table.output and "balanced" in table.output
    assert "malformed_json" in table.output and "published" in table.output


def test_a_key_never_landed_is_a_clear_error(lake):
    _inbox(lake)
    with pytest.raises(NotFoundError, match="not in the ledger"):
        trace(lake, "web/never.ndjson")
    lake.storage.put("landing", "web/pending.ndjson", ndjson([event(7)], gz=False))
    with pytest.raises(NotFoundError, match="not landed yet"):
        trace(lake, "web/pending.ndjson")
    with pytest.raises(NotFoundError):
        trace(lake, KEY, etag="not-its-etag")
    out = _run(lake, "trace", "web/never.ndjson")
    assert out.exit_code == 1
    assert out.output.startswith("error:") and "not in the ledger" in out.output
    bad = _run(lake, "trace", "../etc/passwd")
    assert bad.exit_code == 2 and bad.output.startswith("error:") and "Traceback" not in bad.output


def test_expired_raw_is_counted_from_the_curated_rows_of_the_landing_object(lake):
    _inbox(lake)
    for d in (D1, D2):
        process_day(lake, d)
    # what lifecycle does to compacted raw (test setup: the lake itself never deletes raw)
    lake.storage.delete("raw", [r.key for r in trace(lake, KEY).versions[0].raw])
    t = trace(lake, KEY)
    raws = _by_hour(t)
    assert all(r.state == PUBLISHED and r.recounted is None for r in raws.values())
    assert {k: (r.kept, r.duplicates_dropped) for k, r in raws.items()} == {
        (D1, 10): (2, 1), (D1, 11): (1, 0), (D2, 9): (1, 1)}
    assert t.balanced


def test_every_version_of_a_key_is_traced(lake):
    _inbox(lake)
    first = lake.storage.head("landing", KEY).etag
    # the key written again: event 1 again (received later, so the first version's copy wins)
    lake.storage.put("landing", KEY, ndjson([event(50, day=D1, hour=12),
                                             event(1, day=D1, hour=10, receivedAt=f"{D1}T23:00:00.000Z")]))
    land_inbox(lake)
    process_day(lake, D1)
    t = trace(lake, KEY)
    assert len(t.versions) == 2 and first in {v.etag for v in t.versions}
    second = next(v for v in t.versions if v.etag != first)
    assert (second.lines, second.landed, second.kept, second.duplicates_dropped) == (2, 2, 1, 1)
    assert {(r.dt, r.hour): r.kept_from for r in second.raw} == {(D1, 10): {KEY: 1}, (D1, 12): {}}
    assert [v.etag for v in trace(lake, KEY, etag=first).versions] == [first]
    old = next(v for v in t.versions if v.etag == first)
    assert (old.kept, old.duplicates_dropped, old.pending) == (3, 1, 2)  # D2 never compacted here
    assert t.balanced


def test_a_whole_quarantined_object_is_accounted_for(lake):
    lake.storage.put("landing", "web/broken.ndjson.gz", b"\x1f\x8b" + b"not gzip at all" * 10)
    land_inbox(lake)
    v = trace(lake, "web/broken.ndjson.gz").versions[0]
    assert (v.file_reason, v.lines, v.raw) == ("corrupt_gzip", 0, [])
    assert v.file_quarantine_key and lake.storage.head("quarantine", v.file_quarantine_key) is not None
    assert v.balanced and "whole object quarantined (corrupt_gzip)" in v.balance()
