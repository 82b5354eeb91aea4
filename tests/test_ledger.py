"""The ledger of landing objects (``ledger`` and ``lake ledger``), and its per-key index, on both
backends: states through a lifecycle, quarantined files, and the records of lakes landed before
the index."""

from __future__ import annotations

import json

import orjson
import pytest
from typer.testing import CliRunner

from pipelines import layout
from pipelines.cli import app
from pipelines.land import is_landed, land_inbox, ledger_versions, pending, read_ledger
from pipelines.ledger import COMPACTED, LANDED, QUARANTINED, RAW_EXPIRED, SEEN, ledger
from pipelines.trace import trace
from pipelines.wap import process_day
from pipelines.watch import scan
from tests.conftest import event, ndjson

pytestmark = pytest.mark.timeout(300)
D1, D2 = "2026-11-01", "2026-11-02"
KEY = "web/batch-a.ndjson.gz"


def _entry(lake, key=KEY):
    (e,) = [e for e in ledger(lake) if e.key == key]
    return e


def _published(lake, dt):
    return lake.catalog.get_partition(lake.spec.table, dt).version


def _run(lake, *args: str):
    return CliRunner().invoke(app, ["--root", str(lake.settings.root_path), *args])


def test_states_through_a_lifecycle(lake):
    lake.storage.put("landing", KEY, ndjson([event(1, day=D1), event(2, day=D1), event(3, day=D2)]))
    e = _entry(lake)
    assert (e.state, e.states, e.in_landing, e.lines) == (SEEN, [SEEN], True, None)

    land_inbox(lake)
    e = _entry(lake)
    assert (e.state, e.states, e.lines, e.landed, e.quarantined) == (LANDED, [LANDED], 3, 3, 0)
    assert e.days == {D1: 2, D2: 1} and e.versions == {D1: None, D2: None}

    process_day(lake, D1)
    v1 = _published(lake, D1)
    e = _entry(lake)
    assert e.state == LANDED and e.versions == {D1: v1, D2: None}  # D2 still waits

    process_day(lake, D2)
    e = _entry(lake)
    assert (e.state, e.states) == (COMPACTED, [COMPACTED])
    assert e.versions == {D1: v1, D2: _published(lake, D2)}

    # late events for D1 from another file: D1 is compacted again, into a new version
    lake.storage.put("landing", "app/late.ndjson.gz", ndjson([event(9, day=D1)]))
    land_inbox(lake)
    process_day(lake, D1)
    v2 = _published(lake, D1)
    assert v2 != v1
    e = _entry(lake)
    assert e.state == COMPACTED and e.versions[D1] == v2  # re-compacted in V2
    assert {o.state for o in e.outputs} == {"published"}

    # lifecycle expires compacted raw (test setup: the lake itself never deletes raw)
    lake.storage.delete("raw", [o.raw_key for o in e.outputs])
    e = _entry(lake)
    assert (e.state, e.states) == (RAW_EXPIRED, [COMPACTED, RAW_EXPIRED])
    assert e.versions == {D1: v2, D2: _published(lake, D2)}

    # the landing object expires too: the ledger still knows it
    lake.storage.delete("landing", [KEY])
    e = _entry(lake)
    assert e.state == RAW_EXPIRED and e.in_landing is False

    assert [x.key for x in ledger(lake, state=RAW_EXPIRED)] == [KEY]
    assert [x.key for x in ledger(lake, state=COMPACTED)] == ["app/late.ndjson.gz", KEY]
    assert ledger(lake, state=SEEN) == []
    assert [x.key for x in ledger(lake, prefix="app/")] == ["app/late.ndjson.gz"]


def test_quarantined_lines_and_a_quarantined_file(lake):
    lake.storage.put("landing", "web/mixed.ndjson", ndjson([event(1), b"{not json", b"[1]"], gz=False))
    lake.storage.put("landing", "web/broken.ndjson.gz", b"\x1f\x8b" + b"not gzip at all" * 10)
    lake.storage.put("landing", "web/all-bad.ndjson", b"{nope\n", metadata=None)
    land_inbox(lake)
    mixed, broken, bad = (_entry(lake, k) for k in ("web/mixed.ndjson", "web/broken.ndjson.gz",
                                                   "web/all-bad.ndjson"))
    assert (mixed.state, mixed.states) == (LANDED, [LANDED, QUARANTINED])
    assert (mixed.lines, mixed.landed, mixed.quarantined) == (3, 1, 2)
    assert mixed.reasons == {"malformed_json": 1, "not_an_object": 1}
    assert (broken.state, broken.file_reason, broken.outputs) == (QUARANTINED, "corrupt_gzip", [])
    assert broken.quarantine_key and lake.storage.head("quarantine", broken.quarantine_key)
    assert (bad.state, bad.reasons) == (QUARANTINED, {"malformed_json": 1})
    assert {e.key for e in ledger(lake, state=QUARANTINED)} == {
        "web/mixed.ndjson", "web/broken.ndjson.gz", "web/all-bad.ndjson"}
    process_day(lake, D1)
    assert _entry(lake, "web/mixed.ndjson").states == [QUARANTINED, COMPACTED]


def test_each_version_of_a_key_is_recorded_once_under_the_keys_index(lake):
    lake.storage.put("landing", KEY, ndjson([event(1)]))
    land_inbox(lake)
    land_inbox(lake)  # again: nothing new, no second record
    lake.storage.put("landing", KEY, ndjson([event(2)]))  # new content under the same key
    land_inbox(lake)
    records = list(lake.storage.list_keys("raw", layout.ledger_prefix(lake.spec)))
    index = layout.ledger_key_prefix(lake.spec, KEY)
    assert len(records) == 2 and all(k.startswith(index) for k in records)
    assert len(ledger_versions(lake, KEY)) == 2 and len(read_ledger(lake)) == 2
    e1, e2 = ledger(lake)
    assert {e1.in_landing, e2.in_landing} == {True, False}  # the first version was replaced


def _to_legacy_path(lake) -> None:
    """Move every ledger record to the flat path lakes landed before the per-key index used."""
    for k in list(lake.storage.list_keys("raw", layout.ledger_prefix(lake.spec))):
        lake.storage.put("raw", layout.ledger_key(lake.spec, layout.ledger_digest(k)), lake.storage.get("raw", k))
        lake.storage.delete("raw", [k])


def test_a_ledger_written_before_the_index_is_still_read(lake):
    lake.storage.put("landing", KEY, ndjson([event(1, day=D1), b"{bad"]))
    lake.storage.put("landing", "app/b.ndjson.gz", ndjson([event(2, day=D1)]))
    cursor = scan(lake, None, 1_900_000_000.0).cursor  # a sensor that saw nothing landed yet
    land_inbox(lake)
    _to_legacy_path(lake)
    assert all("key=" not in k for k in lake.storage.list_keys("raw", layout.ledger_prefix(lake.spec)))
    info = lake.storage.head("landing", KEY)
    assert is_landed(lake, KEY, info.etag)
    assert pending(lake) == []
    assert land_inbox(lake).files == []  # not landed twice
    forgot = orjson.loads(cursor)
    forgot["seen"] = {}
    found = scan(lake, orjson.dumps(forgot).decode(), 1_900_000_030.0)
    assert found.objects == [] and found.checked == 2  # HEAD of the flat path answered
    # trace and the ledger read the old records; new landings use the index beside them
    t = trace(lake, KEY)
    assert t.balanced and (t.versions[0].lines, t.versions[0].quarantined) == (2, 1)
    assert trace(lake, KEY, etag=info.etag).versions[0].etag == info.etag
    assert _entry(lake).states == [LANDED, QUARANTINED]
    lake.storage.put("landing", KEY, ndjson([event(3, day=D1)]))
    land_inbox(lake)
    assert len(trace(lake, KEY).versions) == 2
    assert len(read_ledger(lake)) == 3 and len(ledger(lake)) == 3


def test_cli_lists_states_as_a_table_and_as_json(lake):
    lake.storage.put("landing", KEY, ndjson([event(1, day=D1), b"{bad"]))
    land_inbox(lake)
    process_day(lake, D1)
    lake.storage.put("landing", "web/new.ndjson.gz", ndjson([event(2)]))
    out = _run(lake, "ledger", "--format", "json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc == orjson.loads(orjson.dumps([e.to_dict() for e in ledger(lake)]))
    by_key = {d["key"]: d for d in doc}
    assert by_key[KEY]["states"] == [QUARANTINED, COMPACTED] and by_key[KEY]["versions"] == {D1: _published(lake, D1)}
    assert by_key["web/new.ndjson.gz"]["state"] == SEEN

    table = _run(lake, "ledger")
    assert table.exit_code == 0, table.output
    assert KEY in table.output and _published(lake, D1) in table.output and "malformed_json: 1" in table.output
    assert "2 object versions" in table.output

    seen = _run(lake, "ledger", "--state", "seen", "--format", "json")
    assert [d["key"] for d in json.loads(seen.output)] == ["web/new.ndjson.gz"]
    prefixed = _run(lake, "ledger", "--prefix", "web/batch", "--format", "json")
    assert [d["key"] for d in json.loads(prefixed.output)] == [KEY]
    bad = _run(lake, "ledger", "--state", "lost")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    traversal = _run(lake, "ledger", "--prefix", "../etc")
    assert traversal.exit_code == 2 and traversal.output.startswith("error:")
