"""``watch.scan``: the listing cursor finds every new landing object once, on both backends."""

from __future__ import annotations

import time

import orjson
import pytest

from pipelines.land import land_inbox
from pipelines.storage import ARRIVED_AT
from pipelines.watch import FULL_SCAN_SECONDS, LOOKBACK_SECONDS, batches, run_key, scan
from tests.conftest import event, ndjson

pytestmark = pytest.mark.timeout(300)
NOW = 1_900_000_000.0  # the caller's clock: only schedules full scans, never meets LastModified


def _put(lake, key: str, n: int, **metadata) -> None:
    lake.storage.put("landing", key, ndjson([event(n)]), metadata=metadata or None)


def _keys(result) -> list[str]:
    return [o.key for o in result.objects]


def _shift_watermark(cursor: str, seconds: float) -> str:
    """The cursor as if an object stamped ``seconds`` after the newest one had been listed: what a
    multipart upload initiated early and completed late looks like (S3 stamps the initiation)."""
    doc = orjson.loads(cursor)
    doc["wm"] += seconds
    return orjson.dumps(doc).decode()


def test_new_objects_are_found_once_and_a_quiet_tick_checks_nothing(lake):
    _put(lake, "web/a.json", 1)
    _put(lake, "web/b.json", 2)
    first = scan(lake, None, NOW)
    assert sorted(_keys(first)) == ["web/a.json", "web/b.json"] and first.full_scan == "no cursor"
    reported = _keys(first)
    cursor = first.cursor
    for tick in range(1, 4):
        if tick == 2:
            _put(lake, "app/c.json", 3)
        r = scan(lake, cursor, NOW + 30 * tick)
        assert r.full_scan is None  # the window: no listing of the ledger
        assert r.checked == (1 if tick == 2 else 0)  # a HEAD of a ledger record per candidate only
        reported += _keys(r)
        cursor = r.cursor
    assert sorted(reported) == ["app/c.json", "web/a.json", "web/b.json"]  # each exactly once


def test_an_object_stamped_before_the_watermark_but_inside_the_lookback_is_found(lake):
    _put(lake, "web/a.json", 1)
    cursor = scan(lake, None, NOW).cursor
    _put(lake, "web/late.json", 2)
    # objects stamped up to half the lookback later than it were listed before it showed up
    r = scan(lake, _shift_watermark(cursor, LOOKBACK_SECONDS / 2), NOW + 30)
    assert _keys(r) == ["web/late.json"] and r.full_scan is None
    assert _keys(scan(lake, r.cursor, NOW + 60)) == []


def test_an_object_older_than_the_lookback_is_found_by_the_periodic_full_scan(lake):
    _put(lake, "web/a.json", 1)
    first = scan(lake, None, NOW)
    land_inbox(lake, keys=_keys(first))
    cursor = first.cursor
    _put(lake, "web/very-late.json", 2)
    shifted = _shift_watermark(cursor, 2 * LOOKBACK_SECONDS)
    r = scan(lake, shifted, NOW + 30)
    assert _keys(r) == [] and r.checked == 0  # outside the window
    assert len(orjson.loads(r.cursor)["seen"]) == 1  # a.json: requested within FULL_SCAN_SECONDS
    later = scan(lake, r.cursor, NOW + FULL_SCAN_SECONDS)
    assert later.full_scan == "periodic" and _keys(later) == ["web/very-late.json"]


def test_an_old_last_modified_from_a_collector_stamp_is_inside_the_window(local_lake):
    # the embedded backend takes a collector's arrival stamp as the file's mtime: a real old stamp
    lake = local_lake
    _put(lake, "web/a.json", 1)
    first = scan(lake, None, NOW)
    newest = max(o.mtime for o in lake.storage.list("landing"))
    _put(lake, "web/buffered.json", 2, **{ARRIVED_AT: str(newest - LOOKBACK_SECONDS / 2)})
    assert _keys(scan(lake, first.cursor, NOW + 30)) == ["web/buffered.json"]


def test_a_re_put_of_a_key_with_new_content_is_found_and_the_same_content_is_not(lake):
    _put(lake, "web/a.json", 1)
    first = scan(lake, None, NOW)
    land_inbox(lake, keys=_keys(first))
    _put(lake, "web/a.json", 1)  # the same bytes again: the same ETag, the same object version
    second = scan(lake, first.cursor, NOW + 30)
    assert _keys(second) == []
    _put(lake, "web/a.json", 2)  # new content under the same key: a new ETag
    third = scan(lake, second.cursor, NOW + 60)
    assert _keys(third) == ["web/a.json"]
    assert third.objects[0].etag == lake.storage.head("landing", "web/a.json").etag
    # and a lost cursor finds the same version, once landed nothing
    assert [o.etag for o in scan(lake, None, NOW + 90).objects] == [third.objects[0].etag]
    land_inbox(lake, keys=_keys(third))
    assert _keys(scan(lake, third.cursor, NOW + 120)) == []


@pytest.mark.parametrize("cursor", [None, "", "not json", "[1, 2]", '{"v": 1}', '{"v": 99, "seen": {}}',
                                    '{"v": 1, "prefix": "", "wm": 1, "full_at": 1, "backlog": false, '
                                    '"seen": {"../x": [1, 0]}}'])
def test_a_lost_or_corrupt_cursor_falls_back_to_a_full_scan(lake, cursor):
    _put(lake, "web/landed.json", 1)
    land_inbox(lake)
    _put(lake, "web/new.json", 2)
    r = scan(lake, cursor, NOW)
    assert r.full_scan is not None and _keys(r) == ["web/new.json"]
    assert _keys(scan(lake, r.cursor, NOW + 30)) == []


def test_a_cursor_for_another_prefix_is_a_full_scan(lake):
    _put(lake, "web/a.json", 1)
    _put(lake, "app/b.json", 2)
    web = scan(lake, None, NOW, prefix="web/")
    assert _keys(web) == ["web/a.json"]
    app = scan(lake, web.cursor, NOW + 30, prefix="app/")
    assert app.full_scan == "cursor of another prefix" and _keys(app) == ["app/b.json"]


def test_a_requested_object_is_not_requested_again_until_a_full_scan_finds_it_still_pending(lake):
    _put(lake, "web/a.json", 1)
    first = scan(lake, None, NOW)
    assert _keys(first) == ["web/a.json"]
    # its run has not landed it yet (queued, or failed): the window leaves it to that run
    assert _keys(scan(lake, first.cursor, NOW + 30)) == []
    quiet = scan(lake, first.cursor, NOW + FULL_SCAN_SECONDS / 2)
    retry = scan(lake, quiet.cursor, NOW + FULL_SCAN_SECONDS)
    assert retry.full_scan == "periodic" and _keys(retry) == ["web/a.json"]  # a failed run is retried
    assert run_key(retry.objects, retry.generation) != run_key(first.objects, first.generation)
    land_inbox(lake, keys=_keys(retry))
    assert _keys(scan(lake, retry.cursor, NOW + 2 * FULL_SCAN_SECONDS)) == []


def test_more_new_objects_than_a_tick_may_request_are_taken_in_later_ticks_once_each(lake):
    for n in range(5):
        _put(lake, f"web/{n}.json", n)
    seen: list[str] = []
    cursor = None
    for tick in range(4):
        r = scan(lake, cursor, NOW + 30 * tick, max_objects=2)
        assert len(r.objects) <= 2
        seen += _keys(r)
        cursor = r.cursor
    assert sorted(seen) == [f"web/{n}.json" for n in range(5)]  # all of them, none twice


def test_landed_objects_cost_nothing_and_the_cursor_forgets_what_the_window_cannot_see(lake):
    for n in range(3):
        _put(lake, f"web/{n}.json", n)
    land_inbox(lake)
    r = scan(lake, None, NOW)
    assert _keys(r) == [] and len(orjson.loads(r.cursor)["seen"]) == 3
    moved = scan(lake, _shift_watermark(r.cursor, 2 * LOOKBACK_SECONDS), NOW + 30)
    assert orjson.loads(moved.cursor)["seen"] == {}  # bounded by the objects of one lookback


def test_batches_and_run_keys_name_exactly_the_objects():
    objs = [type("O", (), {"key": f"k{n}", "etag": "e"})() for n in range(5)]
    assert [len(b) for b in batches(objs, 2)] == [2, 2, 1]
    assert run_key(objs, 7) == run_key(list(reversed(objs)), 7) != run_key(objs[:4], 7)
    assert run_key(objs, 7) != run_key(objs, 8)
    with pytest.raises(ValueError):
        batches(objs, 0)


def test_the_clock_is_only_the_callers(lake):
    _put(lake, "web/a.json", 1)
    # a caller whose clock is far behind S3's: nothing is compared across the two clocks
    r = scan(lake, None, time.time() - 10 * 365 * 86400)
    assert _keys(r) == ["web/a.json"]
    assert _keys(scan(lake, r.cursor, time.time() - 10 * 365 * 86400 + 30)) == []
