"""One of several processes publishing to the same local catalog file at the same moment.

Usage: ``python catalog_publisher.py CATALOG WORKER COUNT READY_DIR START_FILE MODE``

Imports and opens everything first, signals readiness by creating ``READY_DIR/WORKER``, then
spins until ``START_FILE`` exists, so every worker hits the catalog together. Modes:

- ``distinct``: publish ``COUNT`` partitions of its own (dates ``worker*COUNT + i`` days after
  2025-01-01), each to ``expected_version(worker, i)``, through a freshly opened catalog and
  calling ``ensure_table`` before every publish as :func:`pipelines.publish.publish_version` does.
- ``race``: every worker tries to move the same partition 2025-06-01 from ``v-base`` to a version
  of its own (compare-and-set); prints ``won`` or ``lost``.

Prints one JSON line with what it did.
"""

from __future__ import annotations

import hashlib
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import orjson

from pipelines.catalog import ConcurrentPublishError, LocalCatalog, Partition
from pipelines.schema import load_spec

BASE_DAY = date(2025, 1, 1)
RACE_DAY = "2025-06-01"


def expected_version(worker: int, i: int) -> str:
    """The version worker ``worker`` publishes for its ``i``-th partition (valid version id)."""
    return "v-" + hashlib.blake2b(f"{worker}:{i}".encode(), digest_size=8).hexdigest()


def partition_dt(worker: int, i: int, count: int) -> str:
    return (BASE_DAY + timedelta(days=worker * count + i)).isoformat()


def main(argv: list[str]) -> int:
    catalog_path, worker_s, count_s, ready_dir, start_file, mode = argv
    worker, count = int(worker_s), int(count_s)
    spec = load_spec()
    Path(ready_dir, str(worker)).touch()
    start = Path(start_file)
    deadline = time.monotonic() + 60
    while not start.exists():
        if time.monotonic() > deadline:
            raise SystemExit("start signal never came")
        time.sleep(0.0005)
    # opening the catalog (schema DDL) is part of the contention on purpose
    catalog = LocalCatalog(Path(catalog_path))
    location = "/lake/curated/clickstream/events/"
    done = []
    if mode == "distinct":
        for i in range(count):
            dt = partition_dt(worker, i, count)
            version = expected_version(worker, i)
            # a fresh handle per publish, as separate runs and CLI commands open the catalog
            catalog = LocalCatalog(Path(catalog_path))
            catalog.ensure_table(spec, location)
            current = catalog.get_partition(spec.table, dt)
            catalog.publish(spec.table, _partition(spec.table, dt, version, location, worker * 1000 + i),
                            expected_version=current.version if current else None)
            done.append(dt)
        print(orjson.dumps({"worker": worker, "published": done}).decode(), flush=True)
    elif mode == "race":
        version = expected_version(worker, 10_000)
        try:
            catalog.publish(spec.table, _partition(spec.table, RACE_DAY, version, location, worker),
                            expected_version="v-base")
            outcome = "won"
        except ConcurrentPublishError:
            outcome = "lost"
        print(orjson.dumps({"worker": worker, "version": version, "outcome": outcome}).decode(), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


def _partition(table: str, dt: str, version: str, location: str, rows: int) -> Partition:
    loc = f"{location}dt={dt}/{version}/"
    return Partition(table=table, dt=dt, version=version, location=loc,
                     files=(loc + "part-00000.parquet",), rows=rows, published_at=time.time())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
