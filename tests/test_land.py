"""LAND end to end on the embedded backend: real landing files in a temporary lake."""

from __future__ import annotations

import gzip
import hashlib
import random
from collections import Counter
from dataclasses import asdict
from datetime import UTC, date, datetime

import orjson
import pytest
from conftest import event, ndjson

from pipelines import layout
from pipelines.config import LakeSettings
from pipelines.lake import Lake
from pipelines.land import (
    FileResult,
    land_inbox,
    pending,
    raw_objects,
    read_ledger,
    read_quarantine,
    read_raw_rows,
)
from pipelines.storage import ARRIVED_AT, validate_key


def dumps(obj) -> bytes:
    return orjson.dumps(obj)


def put(lake: Lake, key: str, data: bytes, *, mtime: datetime | None = None):
    """Drop an object into the inbox; ``mtime`` is when its events arrived (ARRIVED_AT)."""
    meta = {ARRIVED_AT: str(mtime.timestamp())} if mtime is not None else None
    return lake.storage.put("landing", key, data, metadata=meta)


def snapshot(lake: Lake, role: str) -> dict[str, bytes]:
    return {o.key: lake.storage.get(role, o.key) for o in lake.storage.list(role)}


def quarantine_by_line(lake: Lake) -> dict[tuple[str, int], dict]:
    return {(q["source_object"], q["line"]): q for q in read_quarantine(lake)}


def bad_lines(big: int) -> dict[str, bytes]:
    """One line of every bad kind; ``big`` is the size of the oversized one."""
    return {
        "malformed_json": b'{"messageId": "m-bad-1", "type": "track",',
        "not_an_object": b'"just a string"',
        "missing_required": dumps({k: v for k, v in event(901).items() if k != "anonymousId"}),
        "wrong_type": dumps(event(902, properties="sku=1")),
        "unparseable_time": dumps(event(903, timestamp="yesterday at noon")),
        "invalid_utf8": b'{"messageId":"m-bad-8","type":"track","event":"caf\xe9","anonymousId":"a"}',
        "unknown_event_type": dumps(event(904, type="click")),
        "oversized_line": dumps(event(905, properties={"blob": "x" * big})),
    }


# --- one file with every kind of bad line ----------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_every_bad_kind_is_quarantined_with_its_bytes_and_every_good_line_lands(settings, gz):
    lake = Lake.open(settings.with_(max_line_bytes=70_000))
    bad = bad_lines(80_000)
    lines: list[bytes] = []
    good_ids: list[str] = []
    expected_bad: dict[int, tuple[str, bytes]] = {}
    for n, (kind, raw) in enumerate(bad.items(), 1):
        lines.append(dumps(event(n)))
        good_ids.append(f"m-{n:06d}")
        lines.append(raw)
        expected_bad[len(lines)] = (kind, raw)
    # a large line under the limit still lands
    big_ok = dumps(event(99, properties={"blob": "y" * 60_000}))
    assert 60_000 < len(big_ok) <= 70_000
    lines += [big_ok, dumps(event(100))]
    good_ids += ["m-000099", "m-000100"]
    assert len(bad["oversized_line"]) > 70_000

    data = b"\n".join(lines) + b"\n"
    key = "web/2026/11/01/batch-0001.ndjson" + (".gz" if gz else "")
    info = put(lake, key, gzip.compress(data, mtime=0) if gz else data)
    report = land_inbox(lake)

    (result,) = report.files
    assert result.source_key == key and result.etag == info.etag
    assert result.lines == len(lines) == result.landed + result.quarantined
    assert result.balanced
    assert result.landed == len(good_ids)
    assert result.quarantined == len(bad)
    assert result.reasons == {kind: 1 for kind in sorted(bad)}
    assert report.reasons == result.reasons
    assert report.total("lines") == len(lines)

    rows = read_raw_rows(lake)
    assert sorted(r["event_id"] for r in rows) == sorted(good_ids)
    for r in rows:
        assert r["source_object"] == key
        assert lines[r["source_line"] - 1] == (big_ok if r["event_id"] == "m-000099"
                                               else dumps(event(int(r["event_id"][2:]))))
    assert next(r for r in rows if r["event_id"] == "m-000099")["properties"] == \
        dumps({"blob": "y" * 60_000}).decode()

    quarantined = quarantine_by_line(lake)
    assert set(quarantined) == {(key, line) for line in expected_bad}
    for line, (kind, raw) in expected_bad.items():
        rec = quarantined[(key, line)]
        assert rec["reason"] == kind, (line, rec["detail"])
        assert rec["raw"] == raw  # the exact original bytes, invalid UTF-8 included
        assert rec["source_etag"] == info.etag
        assert rec["detail"]
    assert result.quarantine_key == layout.quarantine_lines_key(
        lake.spec, datetime.fromtimestamp(info.mtime, UTC).date(), "web",
        layout.object_digest(key, info.etag))

    (ledger,) = read_ledger(lake)
    # every field of the record (the landing object's tag, put after it, is not one)
    assert asdict(ledger) == asdict(result) | {"landing_tag": None}


def test_default_max_line_bytes_admits_a_segment_sized_event(lake):
    big = dumps(event(1, properties={"blob": "z" * 32 * 1024}))
    put(lake, "web/a.ndjson", big + b"\n")
    assert land_inbox(lake).total("landed") == 1


# --- line endings, blank lines, arrays ------------------------------------------------------------


def test_crlf_line_endings(lake):
    bad = dumps(event(2, type="click"))
    data = dumps(event(1)) + b"\r\n" + bad + b"\r\n" + dumps(event(3)) + b"\r\n" + dumps(event(4))
    put(lake, "app/crlf.ndjson", data)  # and no newline after the last line
    (result,) = land_inbox(lake).files
    assert (result.lines, result.landed, result.quarantined) == (4, 3, 1)
    assert result.reasons == {"unknown_event_type": 1}
    (rec,) = read_quarantine(lake)
    assert rec["raw"] == bad and rec["line"] == 2  # no stray \r
    assert sorted(r["event_id"] for r in read_raw_rows(lake)) == ["m-000001", "m-000003", "m-000004"]


def test_blank_lines_are_not_counted(lake):
    data = b"\n\n" + dumps(event(1)) + b"\n   \n\r\n\t\n" + dumps(event(2)) + b"\n\n"
    put(lake, "web/blank.ndjson", data)
    (result,) = land_inbox(lake).files
    assert (result.lines, result.landed, result.quarantined) == (2, 2, 0)
    assert result.quarantine_key is None
    assert read_quarantine(lake) == []
    # source_line is the physical line number in the file
    assert {r["event_id"]: r["source_line"] for r in read_raw_rows(lake)} == {"m-000001": 3,
                                                                            "m-000002": 7}


def test_empty_file_lands_nothing_but_is_recorded(lake):
    put(lake, "web/empty.ndjson", b"")
    (result,) = land_inbox(lake).files
    assert (result.lines, result.landed, result.quarantined, result.outputs) == (0, 0, 0, [])
    assert len(read_ledger(lake)) == 1
    assert pending(lake) == []


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_json_array_file(lake, gz):
    items = [event(1), event(2), "not an event", event(3, type="click"), event(4)]
    data = b"  \n" + orjson.dumps(items, option=orjson.OPT_INDENT_2) + b"\n"
    put(lake, "firehose/batch.json", gzip.compress(data) if gz else data)
    (result,) = land_inbox(lake).files
    assert (result.lines, result.landed, result.quarantined) == (5, 3, 2)
    assert result.reasons == {"not_an_object": 1, "unknown_event_type": 1}
    q = {rec["line"]: rec for rec in read_quarantine(lake)}
    assert q[3]["raw"] == b'"not an event"'
    assert orjson.loads(q[4]["raw"]) == event(3, type="click")  # an element re-serialised
    rows = read_raw_rows(lake)
    assert {r["event_id"]: r["source_line"] for r in rows} == {"m-000001": 1, "m-000002": 2,
                                                              "m-000004": 5}


def test_ndjson_whose_first_line_is_an_array_is_read_line_by_line(lake):
    data = b"[1,2]\n" + dumps(event(1)) + b"\n" + dumps(event(2)) + b"\n"
    put(lake, "web/array-first.ndjson", data)
    (result,) = land_inbox(lake).files
    assert (result.lines, result.landed, result.quarantined) == (3, 2, 1)
    (rec,) = read_quarantine(lake)
    assert (rec["line"], rec["reason"], rec["raw"]) == (1, "not_an_object", b"[1,2]")


# --- whole-file quarantine -----------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "bad_crc"])
def test_corrupt_gzip_is_kept_whole_and_other_files_still_land(lake, damage):
    good = ndjson([event(i) for i in range(1, 200)])
    if damage == "truncated":
        broken = good[: len(good) // 2]
    elif damage == "garbage":
        broken = b"\x1f\x8b" + b"not really gzip at all"
    else:
        broken = good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
    bad_info = put(lake, "web/2026/11/01/broken.ndjson.gz", broken)
    put(lake, "app/ok.ndjson.gz", ndjson([event(500), event(501)]))
    put(lake, "zzz/ok.ndjson", ndjson([event(600)], gz=False))

    report = land_inbox(lake)
    by_key = {f.source_key: f for f in report.files}
    bad = by_key["web/2026/11/01/broken.ndjson.gz"]
    assert bad.file_reason == "corrupt_gzip"
    assert (bad.lines, bad.landed, bad.quarantined, bad.outputs) == (0, 0, 0, [])
    digest = layout.object_digest(bad_info.key, bad_info.etag)
    arrival = datetime.fromtimestamp(bad_info.mtime, UTC).date()
    assert bad.quarantine_key == layout.quarantine_file_key(lake.spec, arrival, "web", digest)
    assert lake.storage.get("quarantine", bad.quarantine_key) == broken  # byte for byte
    sidecar = orjson.loads(lake.storage.get("quarantine", bad.quarantine_key + ".reason.json"))
    assert sidecar["reason"] == "corrupt_gzip"
    assert sidecar["source_object"] == bad_info.key
    assert sidecar["source_etag"] == bad_info.etag
    assert sidecar["size"] == len(broken)
    assert sidecar["detail"]

    assert report.reasons == {"corrupt_gzip": 1}
    assert report.quarantined_files == 1
    assert by_key["app/ok.ndjson.gz"].landed == 2 and by_key["zzz/ok.ndjson"].landed == 1
    assert sorted(r["event_id"] for r in read_raw_rows(lake)) == ["m-000500", "m-000501", "m-000600"]
    assert read_quarantine(lake) == []  # no line records from the broken file

    # recorded in the ledger: the broken file is not retried on every pass
    assert {f.source_key: f.file_reason for f in read_ledger(lake)}[bad_info.key] == "corrupt_gzip"
    before = snapshot(lake, "quarantine")
    assert land_inbox(lake).files == []
    assert snapshot(lake, "quarantine") == before


# --- partitioning by event time ------------------------------------------------------------------


def test_events_of_several_days_and_hours_go_to_their_utc_partitions(lake):
    events = [
        event(1, day="2026-11-01", hour=10),
        event(2, day="2026-11-01", hour=10),
        event(3, day="2026-11-01", hour=23),
        event(4, day="2026-11-02", hour=0),
        event(5, day="2026-10-31", hour=5),
        event(6, timestamp="2026-11-01T23:30:00-02:00"),  # 01:30 UTC on the next day
        event(7, timestamp="2026-11-02T01:30:00+02:00"),  # 23:30 UTC on the previous day
        # no timestamp: a client clock an hour fast, corrected to 07:00 UTC
        event(8, originalTimestamp="2026-11-03T08:00:00Z", sentAt="2026-11-03T08:00:05Z",
              receivedAt="2026-11-03T07:00:05Z"),
    ]
    del events[-1]["timestamp"]
    key = "web/mixed.ndjson.gz"
    info = put(lake, key, ndjson(events))
    report = land_inbox(lake)
    digest = layout.object_digest(key, info.etag)

    expected = {
        ("2026-10-31", 5): {"m-000005"},
        ("2026-11-01", 10): {"m-000001", "m-000002"},
        ("2026-11-01", 23): {"m-000003", "m-000007"},
        ("2026-11-02", 0): {"m-000004"},
        ("2026-11-02", 1): {"m-000006"},
        ("2026-11-03", 7): {"m-000008"},
    }
    raw_keys = {o.key for o in lake.storage.list("raw", layout.table_prefix(lake.spec) + "/dt=")}
    assert raw_keys == {layout.raw_key(lake.spec, date.fromisoformat(d), h, "web", digest)
                        for d, h in expected}
    for (d, h), ids in expected.items():
        k = layout.raw_key(lake.spec, date.fromisoformat(d), h, "web", digest)
        assert f"/dt={d}/hour={h:02d}/" in k
        rows = [orjson.loads(line) for line in gzip.decompress(lake.storage.get("raw", k)).splitlines()]
        assert {r["event_id"] for r in rows} == ids
        for r in rows:
            t = datetime.fromisoformat(r["event_time"])
            assert (t.date().isoformat(), t.hour) == (d, h)
            assert r["event_time"].endswith("Z")

    assert report.touched == {"2026-10-31": 1, "2026-11-01": 4, "2026-11-02": 2, "2026-11-03": 1}
    (result,) = report.files
    assert sorted((o["dt"], o["hour"], o["rows"]) for o in result.outputs) == sorted(
        (d, h, len(ids)) for (d, h), ids in expected.items())
    assert [r["event_id"] for r in read_raw_rows(lake, "2026-11-02")] == ["m-000004", "m-000006"]
    assert {o.key for o in raw_objects(lake, "2026-11-01")} == {
        layout.raw_key(lake.spec, date(2026, 11, 1), h, "web", digest) for h in (10, 23)}


def test_touched_sums_over_files_of_a_pass(lake):
    put(lake, "a/1.ndjson", ndjson([event(1, day="2026-11-01"), event(2, day="2026-11-02")]))
    put(lake, "b/2.ndjson", ndjson([event(3, day="2026-11-01"), event(4, type="click")]))
    report = land_inbox(lake)
    assert report.touched == {"2026-11-01": 2, "2026-11-02": 1}
    assert list(report.touched) == sorted(report.touched)
    assert report.total("landed") == 3 and report.total("quarantined") == 1


def test_raw_rows_carry_lineage(lake):
    info = put(lake, "web/lineage.ndjson", ndjson([event(1), event(2)]))
    assert read_raw_rows(lake) == []
    land_inbox(lake)
    rows = read_raw_rows(lake)
    arrival = datetime.fromtimestamp(info.mtime, UTC).replace(microsecond=0)
    assert [(r["source_object"], r["source_line"], r["ingested_at"]) for r in rows] == [
        ("web/lineage.ndjson", 1, arrival), ("web/lineage.ndjson", 2, arrival)]
    assert set(rows[0]) == set(lake.spec.column_names)


# --- idempotence and identity --------------------------------------------------------------------


def test_relanding_the_same_inbox_writes_nothing(lake):
    put(lake, "web/a.ndjson.gz", ndjson([event(i, hour=i % 24) for i in range(50)] + [b"{oops"]))
    put(lake, "app/b.json", dumps([event(100), event(101)]))
    put(lake, "web/c.ndjson.gz", b"\x1f\x8b broken")
    first = land_inbox(lake)
    assert first.total("landed") == 52 and first.total("quarantined") == 1
    raw, quarantine, ledger = snapshot(lake, "raw"), snapshot(lake, "quarantine"), read_ledger(lake)
    mtimes = {p: p.stat().st_mtime_ns for p in (lake.settings.root_path / "raw").rglob("*")}

    second = land_inbox(lake)
    assert second.files == [] and second.touched == {}
    assert snapshot(lake, "raw") == raw
    assert snapshot(lake, "quarantine") == quarantine
    assert read_ledger(lake) == ledger
    assert {p: p.stat().st_mtime_ns for p in (lake.settings.root_path / "raw").rglob("*")} == mtimes

    # asking for the keys explicitly does not re-land them either
    assert land_inbox(lake, keys=["web/a.ndjson.gz", "app/b.json", "missing/key.json"]).files == []
    assert snapshot(lake, "raw") == raw


def test_landing_again_after_a_lost_ledger_rewrites_the_same_bytes(lake):
    # a run killed after its raw writes but before its ledger record: the retry must produce the
    # very same objects (overwritten in place), not a second copy under new names
    put(lake, "web/a.ndjson.gz", ndjson([event(i, hour=i % 24) for i in range(30)] + [b"[oops"]))
    land_inbox(lake)
    raw, quarantine = snapshot(lake, "raw"), snapshot(lake, "quarantine")
    ledger_keys = [o.key for o in lake.storage.list("raw", layout.ledger_prefix(lake.spec))]
    assert len(ledger_keys) == 1
    lake.storage.delete("raw", ledger_keys)
    (result,) = land_inbox(lake).files
    assert result.landed == 30 and result.quarantined == 1
    assert snapshot(lake, "raw") == raw
    assert snapshot(lake, "quarantine") == quarantine


def test_identical_bytes_put_again_are_not_relanded(lake):
    data = ndjson([event(1), event(2)])
    first = put(lake, "web/a.ndjson.gz", data)
    land_inbox(lake)
    raw = snapshot(lake, "raw")
    later = datetime(2027, 1, 1, tzinfo=UTC)
    again = put(lake, "web/a.ndjson.gz", data, mtime=later)  # a re-delivery, later
    assert again.mtime != first.mtime and again.etag == first.etag
    assert pending(lake) == []
    assert land_inbox(lake).files == []
    assert snapshot(lake, "raw") == raw
    assert len(read_ledger(lake)) == 1


def test_changed_bytes_under_the_same_key_are_a_new_identity(lake):
    key = "web/a.ndjson.gz"
    v1 = put(lake, key, ndjson([event(1), event(2)]))
    land_inbox(lake)
    raw_v1 = snapshot(lake, "raw")
    v2 = put(lake, key, ndjson([event(1), event(2), event(3)]))
    assert v2.etag != v1.etag
    assert [o.key for o in pending(lake)] == [key]

    report = land_inbox(lake)
    (result,) = report.files
    d1, d2 = layout.object_digest(key, v1.etag), layout.object_digest(key, v2.etag)
    assert result.digest == d2 != d1
    assert result.landed == 3 and report.touched == {"2026-11-01": 3}
    raw_v2 = snapshot(lake, "raw")
    # the first version's objects are untouched; the new ones sit beside them under the new digest
    assert all(raw_v2[k] == v for k, v in raw_v1.items())
    new_raw = {k for k in set(raw_v2) - set(raw_v1) if not k.startswith("_ledger/")}
    assert new_raw == {layout.raw_key(lake.spec, date(2026, 11, 1), 10, "web", d2)}
    assert sorted(f.digest for f in read_ledger(lake)) == sorted([d1, d2])
    assert land_inbox(lake).files == []


def test_key_names_derive_from_the_object_digest_not_the_clock(tmp_path):
    arrival = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    data = ndjson([event(1), event(2, type="click")])
    keys, contents = [], []
    for name in ("one", "two"):
        lake = Lake.open(LakeSettings(root=str(tmp_path / name)))
        info = put(lake, "Web-SDK/2026/11/01/part_1.ndjson.gz", data, mtime=arrival)
        (result,) = land_inbox(lake).files
        digest = layout.object_digest(info.key, info.etag)
        assert result.digest == digest
        (out,) = result.outputs
        assert out["key"] == layout.raw_key(lake.spec, date(2026, 11, 1), 10, "web-sdk", digest)
        assert out["key"].endswith(f"/web-sdk-{digest}.ndjson.gz")
        assert result.quarantine_key == (f"clickstream/events/lines/arrival=2026-11-02/"
                                         f"web-sdk-{digest}.ndjson")
        keys.append(sorted(snapshot(lake, "raw")) + sorted(snapshot(lake, "quarantine")))
        contents.append(snapshot(lake, "raw"))
    # two lakes, landed at different moments: the same names and the same bytes
    assert keys[0] == keys[1]
    assert contents[0] == contents[1]


@pytest.mark.parametrize("key", [
    "../x", "a//b", "a/\x00b", "a/./b", "a/../b", "/abs", "", "a/b c", "a\\b", "x/..", "a/b?c",
    "a/b\n", "a\n/b",
])
def test_validate_key_rejects_traversal_and_odd_characters(lake, key):
    with pytest.raises(ValueError):
        validate_key(key)
    with pytest.raises(ValueError):
        lake.storage.put("landing", key, b"{}")


@pytest.mark.parametrize("key", ["a/b", "web/2026/11/01/batch-0001.ndjson.gz", "dt=2026-11-01/x+y@z",
                                 "clickstream/events/"])
def test_validate_key_accepts_plain_keys(key):
    assert validate_key(key) == key


def test_prefix_lands_only_that_part_of_the_inbox(lake):
    put(lake, "web/a.ndjson", ndjson([event(1)]))
    put(lake, "app/b.ndjson", ndjson([event(2)]))
    assert [f.source_key for f in land_inbox(lake, prefix="web/").files] == ["web/a.ndjson"]
    assert [o.key for o in pending(lake)] == ["app/b.ndjson"]
    assert [f.source_key for f in land_inbox(lake).files] == ["app/b.ndjson"]


# --- conservation, property style ----------------------------------------------------------------


def _random_line(rng: random.Random, n: int) -> tuple[str, bytes]:
    kind = rng.choice(["good"] * 6 + ["blank", "malformed_json", "not_an_object", "missing_required",
                                      "wrong_type", "unparseable_time", "invalid_utf8",
                                      "unknown_event_type", "oversized_line", "time_out_of_range"])
    day = rng.choice(["2026-10-30", "2026-10-31", "2026-11-01"])
    ev = event(n, day=day, hour=rng.randrange(24))
    if kind == "good":
        return kind, dumps(ev)
    if kind == "blank":
        return kind, rng.choice([b"", b"  ", b"\t"])
    if kind == "malformed_json":
        return kind, dumps(ev)[: rng.randrange(1, 40)]
    if kind == "not_an_object":
        return kind, rng.choice([b"1", b"null", b'"s"', b"[1,2]", b"true"])
    if kind == "missing_required":
        field = rng.choice(["messageId", "type", "anonymousId"])
        ev.pop(field)
        return kind, dumps(ev)
    if kind == "wrong_type":
        field = rng.choice(["properties", "messageId", "context", "userId"])
        ev[field] = rng.choice([["x"], {"id": 1}] if field in ("messageId", "userId") else [["x"], "text"])
        return kind, dumps(ev)
    if kind == "unparseable_time":
        ev[rng.choice(["timestamp", "sentAt", "receivedAt"])] = rng.choice(["noon", True, {"t": 1}])
        return kind, dumps(ev)
    if kind == "invalid_utf8":
        raw = dumps(ev)
        cut = rng.randrange(1, len(raw) - 1)
        return kind, raw[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]) + raw[cut:]
    if kind == "unknown_event_type":
        ev["type"] = rng.choice(["click", "TRACK", "view"])
        return kind, dumps(ev)
    if kind == "oversized_line":
        ev["properties"] = {"blob": "q" * rng.randrange(70_001, 90_000)}
        return kind, dumps(ev)
    ev["timestamp"] = rng.choice(["1999-01-01T00:00:00Z", "2031-01-01T00:00:00Z"])
    return kind, dumps(ev)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_conservation_over_random_mixed_lines(settings, seed):
    rng = random.Random(seed)
    lake = Lake.open(settings.with_(max_line_bytes=70_000))
    expected_good: set[str] = set()
    expected_reasons: Counter[str] = Counter()
    originals: dict[tuple[str, int], bytes] = {}
    lines_per_file: dict[str, int] = {}
    n = 0
    for f in range(3):
        key = f"src{f}/batch-{seed}-{f}.ndjson" + (".gz" if f % 2 else "")
        eol = b"\r\n" if rng.random() < 0.5 else b"\n"
        lines = []
        for _ in range(100):
            n += 1
            kind, raw = _random_line(rng, n)
            lines.append(raw)
            if kind == "blank":
                continue
            lines_per_file[key] = lines_per_file.get(key, 0) + 1
            if kind == "good":
                expected_good.add(f"m-{n:06d}")
            else:
                expected_reasons[kind] += 1
                originals[(key, len(lines))] = raw
        data = eol.join(lines) + eol
        put(lake, key, gzip.compress(data, mtime=0) if f % 2 else data)

    report = land_inbox(lake)
    assert n == 300
    for r in report.files:
        assert r.lines == r.landed + r.quarantined == lines_per_file[r.source_key]
        assert r.file_reason is None
    assert report.total("lines") == sum(lines_per_file.values())
    assert report.total("landed") == len(expected_good)
    assert Counter(report.reasons) == expected_reasons
    assert sum(report.touched.values()) == len(expected_good)

    rows = read_raw_rows(lake)
    assert len(rows) == len(expected_good)
    assert {r["event_id"] for r in rows} == expected_good
    quarantined = quarantine_by_line(lake)
    assert set(quarantined) == set(originals)
    for at, raw in originals.items():
        assert quarantined[at]["raw"] == raw
    ledger = {f.source_key: f for f in read_ledger(lake)}
    assert {k: (f.lines, f.landed, f.quarantined) for k, f in ledger.items()} == {
        r.source_key: (r.lines, r.landed, r.quarantined) for r in report.files}
    assert all(isinstance(f, FileResult) and f.balanced for f in ledger.values())

    # and a second pass changes nothing
    raw_before = snapshot(lake, "raw")
    assert land_inbox(lake).files == []
    assert snapshot(lake, "raw") == raw_before


def test_a_landing_object_larger_than_the_s3_read_buffer_lands(lake):
    """Objects over 8 MiB are streamed (spooled to disk on S3), gzip or plain, and lose nothing."""
    big = [event(i, properties={"blob": hashlib.sha512(str(i).encode()).hexdigest() * 6}) for i in range(11_000)]
    plain = ndjson(big, gz=False)
    assert len(plain) > 9 * (1 << 20)
    put(lake, "web/big.ndjson", plain)
    report = land_inbox(lake)
    assert report.total("lines") == 11_000 and report.total("landed") == 11_000
    assert sum(1 for _ in read_raw_rows(lake, "2026-11-01")) == 11_000
