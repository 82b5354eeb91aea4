"""Atomic visibility: a reader polling a day while it is re-compacted and re-published sees the
old version or the new one, whole, and never an empty or mixed partition (both backends)."""

from __future__ import annotations

import threading
import time

from pipelines.land import land_inbox
from pipelines.query import query
from pipelines.wap import process_day
from tests.conftest import event, ndjson

DAY = "2026-11-01"
STEP = 300  # each re-publish adds this many new events to the day


def test_reader_never_sees_a_mixed_or_empty_partition(lake):
    lake.storage.put("landing", "web/gen-0.ndjson.gz", ndjson([event(i) for i in range(STEP)]))
    land_inbox(lake)
    process_day(lake, DAY)

    stop = threading.Event()
    seen: list[tuple[str, int, int, str, str]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                part = lake.catalog.get_partition(lake.spec.table, DAY)
                _, rows = query(lake, "select count(*), count(distinct event_id), min(event_id), max(event_id) "
                                      "from events")
                (n, ids, lo, hi), = rows
                seen.append((part.version if part else "", n, ids, lo or "", hi or ""))
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    generations = 4
    for g in range(1, generations):
        # a file of new events and a re-delivery of old ones: a new version with more rows
        lake.storage.put("landing", f"web/gen-{g}.ndjson.gz",
                         ndjson([event(i) for i in range(g * STEP - 20, (g + 1) * STEP)]))
        land_inbox(lake)
        process_day(lake, DAY)
        time.sleep(0.2)  # let the reader see each generation
    stop.set()
    t.join(timeout=60)
    assert not errors, errors[0]

    whole = {g * STEP: (g * STEP, f"m-{0:06d}", f"m-{g * STEP - 1:06d}") for g in range(1, generations + 1)}
    assert len(seen) >= generations
    for version, n, ids, lo, hi in seen:
        assert n > 0, "an empty partition was visible"
        assert n == ids, "duplicates visible"
        # every read is exactly one whole generation: its row count and id range match
        assert n in whole and (n, lo, hi) == whole[n], (version, n, lo, hi)
    # the reads spanned the re-publishes, not only the first or the last version
    assert len({n for _, n, *_ in seen}) >= 2, seen[:3]
