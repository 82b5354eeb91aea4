"""The demo generator writes what its report says, deterministically, with every kind of mess.

The files are read back here with an independent, deliberately plain reader (stdlib json, its
own validity rules), so a counting mistake in the generator cannot hide behind shared code.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest

from pipelines.demo import BAD_REASONS, DemoReport, generate_demo
from pipelines.storage import LocalStorage, validate_key

START = dt.date(2024, 3, 30)  # spans the end of a month and a DST change in Europe
EVENT_TYPES = {"track", "page", "screen", "identify", "group", "alias"}
TIME_FIELDS = ("timestamp", "originalTimestamp", "sentAt", "receivedAt")
KEY_RE = re.compile(
    r"^(?P<source>segment|rudderstack|firehose)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/\d{2}/"
    r"(?P=source)-(?P=y)-(?P=m)-(?P=d)-\d{5}\.(ndjson\.gz|ndjson|json)$"
)


def _time(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _event_time(ev: dict) -> dt.datetime:
    """The schema's event_time_rule, written out again independently of pipelines.demo."""
    if "timestamp" in ev:
        return _time(ev["timestamp"])
    if all(k in ev for k in ("originalTimestamp", "sentAt", "receivedAt")):
        return _time(ev["originalTimestamp"]) + (_time(ev["receivedAt"]) - _time(ev["sentAt"]))
    if "receivedAt" in ev:
        return _time(ev["receivedAt"])
    return _time(ev["originalTimestamp"])


def _classify(raw: bytes) -> tuple[str, dict | None]:
    """("valid", event) or (reason, None) for one record, by the quarantine reasons."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8", None
    try:
        obj = json.loads(text)
    except ValueError:
        return "malformed_json", None
    if not isinstance(obj, dict):
        return "not_an_object", None
    ids = (str, int)
    if (
        ("messageId" in obj and not isinstance(obj["messageId"], ids))
        or ("type" in obj and not isinstance(obj["type"], str))
        or ("properties" in obj and not isinstance(obj["properties"], dict))
        or any(k in obj and not isinstance(obj[k], ids) for k in ("anonymousId", "userId"))
    ):
        return "wrong_type", None
    if "messageId" not in obj or "type" not in obj or not ("anonymousId" in obj or "userId" in obj):
        return "missing_required", None
    if obj["type"] not in EVENT_TYPES:
        return "unknown_event_type", None
    for k in TIME_FIELDS:
        if k in obj:
            try:
                _time(obj[k])
            except (TypeError, ValueError):
                return "unparseable_time", None
    return "valid", obj


class Readback:
    """Everything a reader finds in the landing folder, classified record by record."""

    def __init__(self, root: Path, report: DemoReport):
        self.records: list[tuple[str, str, dict | None]] = []  # key, reason/"valid", event
        self.corrupt: list[str] = []
        self.formats: Counter[str] = Counter()
        self.blobs: dict[str, bytes] = {}
        for key in report.keys:
            data = (root / "landing" / key).read_bytes()
            self.blobs[key] = data
            if key.endswith(".json"):
                self.formats["array"] += 1
                items = json.loads(data)
                assert isinstance(items, list)
                self.records += [(key, *_classify(json.dumps(e).encode())) for e in items]
                continue
            if key.endswith(".gz"):
                try:
                    data = gzip.decompress(data)
                except (EOFError, OSError, zlib.error):
                    self.corrupt.append(key)
                    continue
                self.formats["gz"] += 1
            else:
                self.formats["plain"] += 1
            for line in data.split(b"\n"):
                if line.strip():
                    self.records.append((key, *_classify(line.rstrip(b"\r"))))

    def valid(self) -> list[tuple[str, dict]]:
        return [(key, ev) for key, reason, ev in self.records if reason == "valid"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, DemoReport, Readback]:
    root = tmp_path_factory.mktemp("demo")
    report = generate_demo(
        LocalStorage(root), start=START, days=4, events_per_day=600, files_per_day=12, seed=11
    )
    return root, report, Readback(root, report)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        report = generate_demo(
            LocalStorage(tmp_path / name),
            start=START,
            days=2,
            events_per_day=300,
            files_per_day=6,
            seed=seed,
        )
        runs[name] = (report, _tree(tmp_path / name))
    assert runs["a"] == runs["b"]
    assert runs["a"][1] != runs["c"][1]


def test_counts_match_what_a_reader_finds(demo):
    _, report, back = demo
    assert report.lines == len(back.records)
    assert report.lines == (
        sum(report.unique_events_per_day.values())
        + sum(report.duplicate_copies_per_day.values())
        + report.bad_lines
    )

    reasons = Counter(reason for _, reason, _ in back.records if reason != "valid")
    assert dict(reasons) == report.bad_lines_by_reason == BAD_REASONS
    assert report.bad_lines == sum(BAD_REASONS.values())

    copies: dict[str, list[dict]] = {}
    for _, ev in back.valid():
        copies.setdefault(ev["messageId"], []).append(ev)
    unique, dups = Counter(), Counter()
    for evs in copies.values():
        day = _event_time(evs[0]).date().isoformat()
        # a re-sent copy is the same event: same time, same payload but for a later receivedAt
        for other in evs[1:]:
            assert _event_time(other) == _event_time(evs[0])
            assert {k: v for k, v in other.items() if k != "receivedAt"} == {
                k: v for k, v in evs[0].items() if k != "receivedAt"
            }
            if "receivedAt" in other:
                assert _time(other["receivedAt"]) >= _time(evs[0]["receivedAt"])
        unique[day] += 1
        dups[day] += len(evs) - 1
    days = [(START + dt.timedelta(days=d)).isoformat() for d in range(4)]
    assert report.unique_events_per_day == {d: unique[d] for d in days}
    assert report.duplicate_copies_per_day == {d: dups[d] for d in days}
    assert set(unique) <= set(days)  # no event outside [start, start + days)
    total_dups = sum(dups.values())
    assert 0.01 * len(copies) <= total_dups <= 0.04 * len(copies)


def test_one_json_array_file_without_bad_records(demo):
    _, report, back = demo
    arrays = [k for k in report.keys if k.endswith(".json")]
    assert len(arrays) == 1
    assert back.blobs[arrays[0]].startswith(b"[{")
    in_array = [reason for key, reason, _ in back.records if key == arrays[0]]
    assert in_array and set(in_array) == {"valid"}


def test_gzip_and_plain_mix_and_one_corrupt_gzip(demo):
    _, report, back = demo
    assert report.files == len(report.keys) == 4 * 12 + 1
    assert back.formats["gz"] > back.formats["plain"] > 0
    assert len(back.corrupt) == report.corrupt_files == 1
    assert back.blobs[back.corrupt[0]][:2] == b"\x1f\x8b"  # a real gzip stream, cut short
    for key, data in back.blobs.items():
        if key.endswith(".gz") and key not in back.corrupt:
            assert data[4:8] == b"\0\0\0\0"  # mtime=0, so reruns write identical bytes


def test_late_events_of_the_previous_day(demo):
    _, _, back = demo
    late = total = 0
    for key, ev in back.valid():
        m = KEY_RE.match(key)
        assert m
        arrival = dt.date(int(m["y"]), int(m["m"]), int(m["d"]))
        event_day = _event_time(ev).date()
        assert event_day <= arrival
        if arrival > START:
            total += 1
            late += event_day < arrival
    assert 0.01 * total < late < 0.08 * total  # ~3% late, plus re-sent copies of older events


def test_every_hour_has_events(demo):
    _, _, back = demo
    hours = {_event_time(ev).hour for _, ev in back.valid()}
    assert hours == set(range(24))


def test_keys_are_valid_and_follow_the_layout(tmp_path):
    report = generate_demo(
        LocalStorage(tmp_path),
        start=START,
        days=2,
        events_per_day=200,
        files_per_day=5,
        seed=1,
        prefix="demo/run=1/",
    )
    assert len(set(report.keys)) == len(report.keys)
    for key in report.keys:
        assert validate_key(key) == key
        assert key.startswith("demo/run=1/")
        assert KEY_RE.match(key.removeprefix("demo/run=1/")), key
    with pytest.raises(ValueError):
        generate_demo(LocalStorage(tmp_path), start=START, prefix="../escape/")


def test_events_look_like_segment_and_rudderstack(demo):
    _, _, back = demo
    events = [ev for _, ev in back.valid()]
    assert {ev["type"] for ev in events} == EVENT_TYPES
    assert {ev["channel"] for ev in events} == {"client", "server", "mobile"}
    libraries = {ev["context"]["library"]["name"] for ev in events}
    assert libraries == {"analytics.js", "analytics-python", "rudder-sdk-js", "analytics-ios"}
    assert any(isinstance(ev.get("userId"), int) for ev in events)
    assert any("userId" in ev and "anonymousId" not in ev for ev in events)
    assert any("campaign" in ev["context"] for ev in events)
    assert any("device" in ev["context"] and "os" in ev["context"] for ev in events)
    assert all("groupId" in ev for ev in events if ev["type"] == "group")
    assert all("previousId" in ev for ev in events if ev["type"] == "alias")
    assert all("event" in ev for ev in events if ev["type"] == "track")
    assert all("traits" in ev for ev in events if ev["type"] == "identify")
    # time fields: some events lack timestamp, some lack sentAt/receivedAt
    assert any("timestamp" not in ev for ev in events)
    assert any("sentAt" not in ev or "receivedAt" not in ev for ev in events)
    stamps = [ev[k] for ev in events for k in TIME_FIELDS if k in ev]
    assert any(s.endswith("Z") for s in stamps)
    assert any(s.endswith("+00:00") for s in stamps)
    assert any(re.search(r"[+-](0[1-9]|1\d):\d\d$", s) for s in stamps)
    assert any(re.search(r":\d\d(Z|[+-]\d\d:\d\d)$", s) for s in stamps)  # no fraction
    fractions = {len(m[1]) for s in stamps if (m := re.search(r"\.(\d+)", s))}
    assert {3, 6} <= fractions


def test_full_size_run_is_fast(tmp_path):
    began = time.perf_counter()
    report = generate_demo(LocalStorage(tmp_path), start=START)
    elapsed = time.perf_counter() - began
    assert report.files == 7 * 40 + 1
    assert sum(report.unique_events_per_day.values()) == 7 * 2000
    assert elapsed < 5, f"7 days x 2000 events took {elapsed:.1f}s"
