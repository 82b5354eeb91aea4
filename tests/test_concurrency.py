"""Bounded fan-out and the bundling of small raw objects for DuckDB."""

from __future__ import annotations

import gzip
import threading
import time

import pytest

from pipelines import compact
from pipelines.compact import local_raw
from pipelines.concurrency import bounded_map


def test_bounded_map_keeps_order_and_a_bounded_queue():
    submitted = []
    lock = threading.Lock()
    state = {"running": 0, "max": 0}

    def items():
        for i in range(200):
            submitted.append(i)
            yield i

    def work(i: int) -> int:
        with lock:
            state["running"] += 1
            state["max"] = max(state["max"], state["running"])
        time.sleep(0.001 * (i % 3))
        with lock:
            state["running"] -= 1
        return i * 2

    out = []
    for n, r in enumerate(bounded_map(work, items(), 4)):
        # never more than the window (4 x threads) submitted ahead of what was consumed
        assert len(submitted) - n <= 16
        out.append(r)
    assert out == [i * 2 for i in range(200)]
    assert 1 < state["max"] <= 4


def test_bounded_map_raises_the_first_error_and_stops_submitting():
    seen = []

    def work(i: int) -> int:
        seen.append(i)
        if i == 5:
            raise ValueError("boom at 5")
        return i

    with pytest.raises(ValueError, match="boom at 5"):
        list(bounded_map(work, range(10_000), 2))
    assert len(seen) < 100


def test_small_raw_objects_are_bundled_and_big_ones_read_in_place(lake, tmp_path, monkeypatch):
    monkeypatch.setattr(compact, "BUNDLE_BYTES", 64 * 1024)
    keys, lines = [], 0
    for i in range(60):
        data = b"".join(b'{"event_id": "e-%d-%d"}\n' % (i, j) for j in range(20))
        key = f"clickstream/events/dt=2026-11-01/hour={i % 24:02d}/src-{i:04d}.ndjson.gz"
        lake.storage.put("raw", key, gzip.compress(data, mtime=0))
        keys.append(key)
        lines += 20
    big = b"".join(b'{"event_id": "big-%06d", "pad": "%s"}\n' % (j, b"x" * 40) for j in range(4000))
    big_gz = gzip.compress(big, compresslevel=0)  # incompressible enough to be "large" here
    lake.storage.put("raw", "clickstream/events/dt=2026-11-01/hour=23/big.ndjson.gz", big_gz)
    keys.append("clickstream/events/dt=2026-11-01/hour=23/big.ndjson.gz")
    lines += 4000

    files = local_raw(lake, keys, tmp_path / "work")
    assert len(files) < 10  # 61 objects became a handful of files
    got = b"".join(gzip.decompress(p.read_bytes()) for p in files).splitlines()
    assert len(got) == lines
    assert sorted(got) == sorted(
        [b'{"event_id": "e-%d-%d"}' % (i, j) for i in range(60) for j in range(20)] + big.splitlines())
    if lake.settings.backend == "local":
        assert any(p.name == "big.ndjson.gz" for p in files)  # read where it is, not copied
    # downloaded copies that went into bundles are removed as bundling goes
    fetched = tmp_path / "work" / "fetched"
    assert not fetched.exists() or len(list(fetched.iterdir())) <= 1
