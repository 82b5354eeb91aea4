"""One of several processes publishing to the same catalog at the same moment.

Usage: ``python catalog_publisher.py CATALOG WORKER COUNT READY_DIR START_FILE MODE``

``CATALOG`` is the path of a local catalog file, or ``glue`` for the Glue catalog the ``LAKE_*``
variables describe (``LAKE_BACKEND=s3``, ``LAKE_GLUE_DATABASE``, ``LAKE_GLUE_ENDPOINT_URL``; AWS
credentials from the usual ``AWS_*`` variables). :func:`run_workers` starts a set of them.

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
import os
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import orjson

from pipelines.catalog import Catalog, ConcurrentPublishError, LocalCatalog, Partition
from pipelines.config import LakeSettings
from pipelines.schema import load_spec

BASE_DAY = date(2025, 1, 1)
RACE_DAY = "2025-06-01"


def expected_version(worker: int, i: int) -> str:
    """The version worker ``worker`` publishes for its ``i``-th partition (valid version id)."""
    return "v-" + hashlib.blake2b(f"{worker}:{i}".encode(), digest_size=8).hexdigest()


def partition_dt(worker: int, i: int, count: int) -> str:
    return (BASE_DAY + timedelta(days=worker * count + i)).isoformat()


_glue_client = None


def open_target(target: str) -> Catalog:
    """The catalog a worker publishes to: a local catalog file, or ``glue`` (from ``LAKE_*``).

    Each call is a fresh catalog handle (nothing cached from earlier publishes); Glue handles
    share one boto3 client, whose creation (~0.1 s of CPU) would otherwise dominate the test.
    """
    global _glue_client
    if target == "glue":
        from pipelines.glue import GlueCatalog

        settings = LakeSettings.from_env()
        if _glue_client is None:
            _glue_client = GlueCatalog.from_settings(settings).client
        return GlueCatalog(_glue_client, settings.glue_database)
    return LocalCatalog(Path(target))


def glue_env(settings: LakeSettings) -> dict[str, str]:
    """The ``LAKE_*`` variables that make ``glue`` workers use the Glue catalog of ``settings``."""
    return {"LAKE_BACKEND": "s3", "LAKE_CATALOG": "glue", "LAKE_GLUE_DATABASE": settings.glue_database,
            "LAKE_GLUE_ENDPOINT_URL": settings.glue_endpoint_url or "", "LAKE_AWS_REGION": settings.aws_region,
            "LAKE_S3_ENDPOINT_URL": settings.s3_endpoint_url or ""}


def run_workers(tmp_path: Path, target: str, workers: int, count: int, mode: str,
                env: dict[str, str] | None = None) -> list[dict]:
    """Start ``workers`` publisher processes on ``target``, release them at once, return their reports."""
    ready, start = tmp_path / f"ready-{mode}", tmp_path / f"start-{mode}"
    ready.mkdir()
    procs = [subprocess.Popen([sys.executable, __file__, target, str(w), str(count), str(ready), str(start), mode],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
             for w in range(workers)]
    try:
        deadline = time.monotonic() + 60
        while len(list(ready.iterdir())) < workers:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.01)
        start.touch()  # every worker is spinning on this file: they all go at once
        results = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()[-3000:]
            results.append(orjson.loads(out.splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main(argv: list[str]) -> int:
    target, worker_s, count_s, ready_dir, start_file, mode = argv
    worker, count = int(worker_s), int(count_s)
    spec = load_spec()
    if target == "glue":
        open_target(target)  # import boto3 and build the client now: the race is the catalog calls
    Path(ready_dir, str(worker)).touch()
    start = Path(start_file)
    deadline = time.monotonic() + 60
    while not start.exists():
        if time.monotonic() > deadline:
            raise SystemExit("start signal never came")
        time.sleep(0.0005)
    # opening the catalog (schema DDL) is part of the contention on purpose
    catalog = open_target(target)
    location = "/lake/curated/clickstream/events/"
    done = []
    if mode == "distinct":
        for i in range(count):
            dt = partition_dt(worker, i, count)
            version = expected_version(worker, i)
            # a fresh handle per publish, as separate runs and CLI commands open the catalog
            catalog = open_target(target)
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
