"""COMPACT: dedupe, sort, file layout, manifest, idempotence, and surviving SIGKILL at any moment."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from pipelines import layout
from pipelines.compact import compact_day, read_manifest, version_id
from pipelines.lake import Lake
from pipelines.land import land_inbox, raw_objects
from pipelines.query import query
from pipelines.verify import read_audit
from pipelines.wap import process_day
from tests.conftest import arrow_file, event, ndjson, settings_on

pytestmark = pytest.mark.timeout(120)

DAY = "2026-11-01"
HELPER = Path(__file__).resolve().parent / "helpers" / "compact_publish.py"


def _parts(lake: Lake, manifest: dict) -> list:
    """The version's Parquet files, opened with pyarrow's filesystems (its S3 client on S3)."""
    return [arrow_file(lake, lake.storage.uri("curated", o["key"])) for o in manifest["outputs"]]


def _read_rows(lake: Lake, manifest: dict, columns: list[str]) -> list[dict]:
    rows: list[dict] = []
    for f in _parts(lake, manifest):
        rows.extend(pq.read_table(f, columns=columns).to_pylist())
    return rows


def _blob(n: int) -> str:
    # incompressible-ish payload so a few tens of thousands of events exceed 1 MiB of Parquet
    return hashlib.sha512(str(n).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# dedupe and sort


def test_dedupe_keeps_the_earliest_received_copy(lake: Lake):
    # The earliest received copy of m-000001 arrives in the file that is landed (and listed) last,
    # so "first file wins" or "last file wins" would both be wrong.
    late = event(1, receivedAt=f"{DAY}T10:05:00.000Z", properties={"sku": "late-copy"})
    early = event(1, receivedAt=f"{DAY}T10:01:30.000Z", properties={"sku": "early-copy"})
    no_received = event(1, properties={"sku": "no-received-at"})
    del no_received["receivedAt"]  # NULL received_at sorts last: never preferred
    lake.storage.put("landing", "app/a.ndjson.gz", ndjson([late, event(2), no_received]))
    lake.storage.put("landing", "web/b.ndjson.gz", ndjson([event(3), early]))
    land_inbox(lake)

    result = compact_day(lake, DAY)
    assert result.counts["raw_events"] == 5
    assert result.counts["rows"] == 3
    assert result.counts["duplicates"] == 2

    rows = _read_rows(lake, result.manifest, ["event_id", "properties", "received_at", "source_object"])
    kept = [r for r in rows if r["event_id"] == "m-000001"]
    assert len(kept) == 1
    assert orjson.loads(kept[0]["properties"]) == {"sku": "early-copy"}
    assert kept[0]["source_object"] == "web/b.ndjson.gz"
    assert kept[0]["received_at"].isoformat() == "2026-11-01T10:01:30+00:00"


def test_output_sorted_by_event_time_then_event_id(lake: Lake):
    # event() gives many events the same event_time (n % 60 minutes, n % 1000 ms): the event_id
    # tie-break is exercised; files are landed in shuffled order.
    def ev(n: int) -> dict:
        # 600 events over 12 distinct times: event_id decides the order within each time
        return event(n, timestamp=f"{DAY}T{n % 12:02d}:{n % 3:02d}:00.000Z")

    ids = list(range(600))
    ids = ids[::-1][:300] + ids[:300]
    lake.storage.put("landing", "a/1.ndjson.gz", ndjson([ev(n) for n in ids[:300:2]]))
    lake.storage.put("landing", "b/2.ndjson.gz", ndjson([ev(n) for n in ids[1:300:2]]))
    lake.storage.put("landing", "c/3.ndjson.gz", ndjson([ev(n) for n in ids[300:]]))
    land_inbox(lake)
    result = compact_day(lake, DAY)
    rows = _read_rows(lake, result.manifest, ["event_time", "event_id"])
    keys = [(r["event_time"], r["event_id"]) for r in rows]
    assert len(keys) == 600 == result.counts["rows"]
    assert len({t for t, _ in keys}) == 12  # ties on event_time everywhere
    assert keys == sorted(keys)


# --------------------------------------------------------------------------------------------
# layout: several zstd part files, globally sorted, schema from the spec


@pytest.fixture(scope="module", params=["local", "s3"])
def big_day(request, tmp_path_factory) -> tuple[Lake, object]:
    # module-scoped (landing 30k events takes seconds); same settings as conftest's fixture
    settings = settings_on(request.param, tmp_path_factory.mktemp("big") / "lake", request)
    lake = Lake.open(settings.with_(target_file_bytes=1 << 20, row_group_rows=2048))
    n = 30_000
    events = [event(i, hour=i % 24, properties={"blob": _blob(i)}) for i in range(n)]
    for k in range(3):
        lake.storage.put("landing", f"web/part{k}.ndjson.gz", ndjson(events[k::3]))
    # 200 duplicates re-delivered in a later file
    lake.storage.put("landing", "web/redelivered.ndjson.gz", ndjson(events[1000:1200]))
    land_inbox(lake)
    return lake, compact_day(lake, DAY)


def test_large_day_splits_into_sorted_zstd_parts(big_day):
    lake, result = big_day
    outputs = result.manifest["outputs"]
    assert len(outputs) >= 3, outputs
    assert result.counts["rows"] == 30_000
    assert result.counts["duplicates"] == 200

    ranges = []
    for n, path in enumerate(_parts(lake, result.manifest)):
        meta = pq.ParquetFile(path).metadata
        assert meta.num_row_groups >= 1
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            assert rg.num_rows <= 2048
            for c in range(rg.num_columns):
                assert rg.column(c).compression == "ZSTD", (n, rg.column(c).path_in_schema)
        path.seek(0)
        t = pq.read_table(path, columns=["event_time", "event_id"]).to_pylist()
        keys = [(r["event_time"], r["event_id"]) for r in t]
        assert keys == sorted(keys), f"part {n} is not sorted inside"
        ranges.append((keys[0], keys[-1]))
    # globally sorted: each file starts after the previous one ends (no overlapping ranges)
    for (_, prev_hi), (lo, _) in itertools.pairwise(ranges):
        assert prev_hi < lo
    # the part files are at least about the target size, except the last one
    for o in outputs[:-1]:
        assert o["size"] >= (1 << 20) * 0.9


def test_parquet_schema_is_the_spec_and_has_no_partition_column(big_day):
    lake, result = big_day
    expected = lake.spec.arrow_schema()
    for path in _parts(lake, result.manifest):
        schema = pq.read_schema(path)
        assert schema.names == expected.names
        assert [f.type for f in schema] == [f.type for f in expected]
        assert lake.spec.partition_key not in schema.names
        assert "dt" not in schema.names


def test_manifest_records_inputs_outputs_and_conservation(big_day):
    lake, result = big_day
    m = read_manifest(lake, DAY, result.version)
    assert m == result.manifest
    assert m["dt"] == DAY and m["version"] == result.version
    assert m["table"] == lake.spec.qualified_name and m["schema_version"] == lake.spec.version

    listed = {o.key: o for o in raw_objects(lake, DAY)}
    assert {i["key"] for i in m["inputs"]} == set(listed)
    for i in m["inputs"]:
        assert i["etag"] == listed[i["key"]].etag
        assert i["size"] == listed[i["key"]].size

    assert len(m["outputs"]) == m["counts"]["files_out"]
    for o in m["outputs"]:
        assert o["size"] == lake.storage.head("curated", o["key"]).size
        meta = pq.read_metadata(arrow_file(lake, lake.storage.uri("curated", o["key"])))
        assert o["rows"] == meta.num_rows and o["row_groups"] == meta.num_row_groups
        assert o["key"].startswith(layout.version_prefix(lake.spec, DAY, result.version))

    c = m["counts"]
    assert c["raw_events"] == c["rows"] + c["duplicates"]
    assert c["rows"] == sum(o["rows"] for o in m["outputs"])
    assert c["files_in"] == len(m["inputs"])
    assert c["bytes_in"] == sum(i["size"] for i in m["inputs"])
    assert c["bytes_out"] == sum(o["size"] for o in m["outputs"])
    assert m["settings"] == {"target_file_bytes": 1 << 20, "row_group_rows": 2048}


# --------------------------------------------------------------------------------------------
# idempotence


def test_compacting_same_inputs_again_is_a_no_op_and_new_input_makes_a_new_version(lake: Lake):
    lake.storage.put("landing", "web/a.ndjson.gz", ndjson([event(i) for i in range(50)]))
    land_inbox(lake)
    first = compact_day(lake, DAY)
    assert first.reused is False
    version_dir = layout.version_prefix(lake.spec, DAY, first.version)
    before = {o.key: (o.etag, o.mtime) for o in lake.storage.list("curated", version_dir)}
    assert before

    again = compact_day(lake, DAY)
    assert again.reused is True
    assert again.version == first.version
    assert again.manifest == first.manifest
    after = {o.key: (o.etag, o.mtime) for o in lake.storage.list("curated", version_dir)}
    assert after == before  # nothing rewritten

    # landing the same file again changes nothing either
    land_inbox(lake)
    assert compact_day(lake, DAY).version == first.version

    lake.storage.put("landing", "web/b.ndjson.gz", ndjson([event(i) for i in range(50, 60)]))
    land_inbox(lake)
    third = compact_day(lake, DAY)
    assert third.reused is False
    assert third.version != first.version
    assert third.counts["rows"] == 60
    # the earlier version is left alone: nothing is deleted by compaction
    assert read_manifest(lake, DAY, first.version) == first.manifest
    assert version_id(lake, layout.parse_dt(DAY), raw_objects(lake, DAY)) == third.version


# --------------------------------------------------------------------------------------------
# KILL TEST: SIGKILL during compaction / audit / publish never exposes anything but a whole version


def _write_bulk_raw(lake: Lake, day: str, n: int, files: int = 8) -> None:
    """Raw objects as landing writes them (one NDJSON row per event, gzip), generated directly.

    Landing 200k lines through the Python normalizer takes ~20 s; compaction and audit only
    read raw objects, so the bulk of the day is written in landing's raw format instead.
    """
    d = layout.parse_dt(day)
    per = n // files
    for f in range(files):
        hour = 12 + f
        lines = []
        for i in range(f * per, (f + 1) * per):
            t = f"{day}T{hour:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"
            lines.append(orjson.dumps({
                "event_id": f"bulk-{i:07d}", "event_type": "track", "event_name": "Bulk Viewed",
                "anonymous_id": f"anon-{i % 97}", "event_time": t, "received_at": t,
                "page_url": f"https://shop.example/p/{i}", "properties": orjson.dumps({"i": i}).decode(),
                "source_object": f"bulk/{f}.ndjson", "source_line": i - f * per + 1,
                "ingested_at": "2026-11-02T00:00:00Z"}))
        digest = hashlib.blake2b(f"bulk-{f}".encode(), digest_size=8).hexdigest()
        lake.storage.put("raw", layout.raw_key(lake.spec, d, hour, "bulk", digest),
                         gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1, mtime=0))


def test_sigkill_during_compaction_never_exposes_a_partial_version(settings, tmp_path: Path):
    started = time.monotonic()
    settings = settings.with_(target_file_bytes=1 << 20, row_group_rows=2048)
    lake = Lake.open(settings)
    spec = lake.spec

    # version A: 500 events, published
    lake.storage.put("landing", "web/a.ndjson.gz", ndjson([event(i) for i in range(500)]))
    land_inbox(lake)
    a = process_day(lake, DAY)
    a_version, a_rows = a.version, 500
    assert query(lake, "select count(*) from events")[1] == [(a_rows,)]
    a_files = {o["key"]: o["size"] for o in a.compact.manifest["outputs"]}

    # more events: a landed file (100 of them duplicates of A) and a bulk of 200k
    lake.storage.put("landing", "web/b.ndjson.gz", ndjson([event(i) for i in range(400, 1400)]))
    land_inbox(lake)
    _write_bulk_raw(lake, DAY, 200_000)
    b_version = version_id(lake, layout.parse_dt(DAY), raw_objects(lake, DAY))
    b_rows = 1400 + 200_000
    b_prefix = layout.version_prefix(spec, DAY, b_version)
    manifest_key = layout.manifest_key(spec, DAY, b_version)
    audit_key = layout.audit_key(spec, DAY, b_version)

    env = dict(os.environ)
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")  # leftovers of killed runs stay inside tmp_path
    argv = [sys.executable, str(HELPER), orjson.dumps(asdict(settings)).decode(), DAY]

    def visible() -> tuple[str, int]:
        part = lake.catalog.get_partition(spec.table, DAY)
        (count, distinct), = query(lake, "select count(*), count(distinct event_id) from events")[1]
        assert count == distinct
        return part.version, count

    def check_consistent(stage: str) -> str:
        version, count = visible()
        if version == a_version:
            assert count == a_rows, stage
        else:
            # the run got as far as publishing: then the version is whole and audited
            assert version == b_version, stage
            assert count == b_rows, stage
            m = read_manifest(lake, DAY, b_version)
            assert m["counts"]["rows"] == b_rows and m["counts"]["duplicates"] == 100
            assert m["counts"]["raw_events"] == b_rows + 100
            assert read_audit(lake, DAY, b_version)["passed"] is True
        # A is never touched before its grace period
        for key, size in a_files.items():
            assert lake.storage.head("curated", key).size == size, stage
        return version

    def b_names() -> list[str]:
        return [k.rsplit("/", 1)[1] for k in lake.storage.list_keys("curated", b_prefix)]

    def part_written() -> bool:
        return any(n.startswith("part-") for n in b_names())

    def tmp_upload() -> bool:
        """An upload begun and not finished: a temporary file, or an open multipart upload."""
        if settings.backend == "s3":
            return bool(lake.storage.client.list_multipart_uploads(
                Bucket=settings.bucket("curated"), Prefix=b_prefix).get("Uploads"))
        b_dir = Path(lake.storage.uri("curated", b_prefix))
        return b_dir.is_dir() and any(p.name.startswith(".tmp-") for p in b_dir.iterdir())

    def exists(key: str) -> bool:
        return lake.storage.head("curated", key) is not None

    def stage_on_disk() -> str:
        """How far the run got, judged from what it left behind."""
        if exists(audit_key):
            return "audited"
        if exists(manifest_key):
            return "manifest-written"
        if names := b_names():
            return f"uploading({sum(1 for n in names if n.startswith('part-'))} parts)"
        if any((tmp_path / "tmp").glob("lake-compact-*")):
            return "compacting"
        return "starting"

    triggers = [
        ("after 0.05 s", lambda t: t >= 0.05),
        ("after 0.2 s", lambda t: t >= 0.2),
        ("after 0.5 s", lambda t: t >= 0.5),
        ("after 1.0 s", lambda t: t >= 1.0),
        ("after 1.5 s", lambda t: t >= 1.5),
        ("upload in progress", lambda t: tmp_upload() or part_written()),
        ("first part file uploaded", lambda t: part_written()),
        ("manifest written", lambda t: exists(manifest_key)),
        ("audit written", lambda t: exists(audit_key)),
    ]
    outcomes = {}
    for name, fire in triggers:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while proc.poll() is None and not fire(time.monotonic() - t0):
            time.sleep(0.002 if settings.backend == "local" else 0.01)
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no cleanup, no finally blocks, no atexit
        _out, err = proc.communicate(timeout=30)
        if proc.returncode == 0:
            outcomes[name] = "finished"
        else:
            assert proc.returncode == -9, err.decode()[-2000:]
            outcomes[name] = f"killed while {stage_on_disk()}"
        outcomes[name] += " -> sees " + check_consistent(name)
    # the kills did land mid-work, not only before the work started or after it ended
    mid_work = [o for o in outcomes.values() if o.startswith(("killed while compacting",
                "killed while uploading", "killed while manifest-written", "killed while audited"))]
    assert len(mid_work) >= 2, outcomes

    # the partial work left behind is invisible and the next run completes and publishes B
    final = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    assert final.stdout.decode().strip() == b_version
    assert check_consistent("final") == b_version
    assert visible() == (b_version, b_rows)
    if settings.catalog_kind == "local":  # Glue keeps no publish history of its own
        history = lake.catalog.history(spec.table, DAY)
        assert [(v, prev) for v, prev, _, _ in history] == [(a_version, None), (b_version, a_version)]
    print(f"kill outcomes after {time.monotonic() - started:.1f} s:", outcomes)
