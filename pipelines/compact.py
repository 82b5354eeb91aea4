"""COMPACT: one day's raw objects -> a new version of the curated partition.

Reads every raw object of the day with DuckDB (memory-bounded, spilling to disk), keeps one copy
of each event id (the earliest received), sorts by the spec's sort keys and writes zstd Parquet
files of about ``LAKE_TARGET_FILE_BYTES`` into a new version directory, then its manifest. The
version id is a digest of the inputs, so compacting the same inputs again is a no-op, and nothing
becomes visible to readers until :mod:`pipelines.publish` moves the catalog pointer.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq

from pipelines import duck, layout
from pipelines.errors import NotFoundError
from pipelines.lake import Lake
from pipelines.land import raw_objects
from pipelines.storage import TIER_TAG, ObjectInfo

COMPACTION_FORMAT = 1  # bump when the output layout changes, so versions are recomputed


@dataclass
class CompactResult:
    """A written (or already present) partition version and its numbers."""

    dt: str
    version: str
    manifest: dict[str, Any]
    reused: bool  # True when this exact version already existed
    #: local copies of the inputs, kept in the caller's ``work`` folder (not in the manifest)
    raw_files: list[Path] | None = None

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest["counts"]


def version_id(lake: Lake, dt: date, inputs: list[ObjectInfo]) -> str:
    """Digest of everything that determines the output: inputs, schema, layout settings."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{lake.spec.qualified_name}:{lake.spec.version}:{COMPACTION_FORMAT}:{dt}:".encode())
    h.update(f"{lake.settings.target_file_bytes}:{lake.settings.row_group_rows}\n".encode())
    for o in sorted(inputs, key=lambda o: o.key):
        h.update(f"{o.key}\t{o.etag}\n".encode())
    return "v-" + h.hexdigest()


def read_manifest(lake: Lake, dt: str | date, version: str) -> dict[str, Any] | None:
    """A version's manifest, or None when the version was never completed."""
    key = layout.manifest_key(lake.spec, dt, version)
    if lake.storage.head("curated", key) is None:
        return None
    return orjson.loads(lake.storage.get("curated", key))


#: small raw objects are concatenated into local bundles of about this size before DuckDB reads
#: them: a gzip file may hold many members, and DuckDB pays ~1-3 ms and some memory per file, so
#: a day of 20,000 small objects read as a few bundles is ~20x faster than read one by one
BUNDLE_BYTES = 64 << 20


def local_raw(lake: Lake, keys: list[str], work: Path) -> list[Path]:
    """The raw objects ``keys`` as a few local gzip files: fetched (remote backends, with many
    GETs in flight) and bundled; objects already large enough are used as they are."""
    fetched = work / "fetched"
    work.mkdir(parents=True, exist_ok=True)
    paths = lake.storage.fetch("raw", keys, fetched)
    bundles: list[Path] = []
    out: list[Path] = []
    current, size = None, 0
    try:
        for path in paths:
            n = path.stat().st_size
            if n >= BUNDLE_BYTES // 4:
                out.append(path)
                continue
            if current is None or size >= BUNDLE_BYTES:
                if current is not None:
                    current.close()
                bundles.append(work / f"bundle-{len(bundles):05d}.ndjson.gz")
                current, size = bundles[-1].open("wb"), 0
            with path.open("rb") as src:
                shutil.copyfileobj(src, current, 1 << 20)
            size += n
            if path.is_relative_to(fetched):
                path.unlink()  # a downloaded copy: keep local disk at about one copy of the day
    finally:
        if current is not None:
            current.close()
    return out + bundles


def compact_day(lake: Lake, dt: str | date, *, work: Path | None = None) -> CompactResult:
    """Write a new version of partition ``dt`` from its raw objects (not yet published).

    With ``work`` (a folder the caller removes), the day's local raw copies are kept there and
    returned in :attr:`CompactResult.raw_files`, so the audit that follows reads them again
    instead of fetching every object a second time.
    """
    day = layout.parse_dt(dt)
    inputs = raw_objects(lake, day)
    if not inputs:
        raise NotFoundError(f"no raw events for {day}: land the inbox first")
    version = version_id(lake, day, inputs)
    existing = read_manifest(lake, day, version)
    if existing is not None:
        return CompactResult(day.isoformat(), version, existing, reused=True)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lake-compact-") as tmp:
        staged = Path(tmp) / "out"
        files = local_raw(lake, [o.key for o in inputs], Path(work or tmp) / "raw")
        counts = _write_parquet(lake, [str(f) for f in files], staged, Path(tmp))
        outputs = _upload(lake, day, version, sorted(staged.glob("*.parquet"), key=_file_index))
    manifest = {
        "table": lake.spec.qualified_name,
        "schema_version": lake.spec.version,
        "dt": day.isoformat(),
        "version": version,
        "created_at": time.time(),
        "seconds": round(time.monotonic() - started, 3),
        "inputs": [{"key": o.key, "etag": o.etag, "size": o.size} for o in inputs],
        "outputs": outputs,
        "counts": {**counts, "files_in": len(inputs), "files_out": len(outputs),
                   "bytes_in": sum(o.size for o in inputs),
                   "bytes_out": sum(o["size"] for o in outputs)},
        "settings": {"target_file_bytes": lake.settings.target_file_bytes,
                     "row_group_rows": lake.settings.row_group_rows},
    }
    # The manifest is written last: a version without one is incomplete and never published.
    lake.storage.put("curated", layout.manifest_key(lake.spec, day, version),
                     orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return CompactResult(day.isoformat(), version, manifest, reused=False,
                         raw_files=files if work is not None else None)


def _write_parquet(lake: Lake, files: list[str], out_dir: Path, tmp: Path) -> dict[str, int]:
    spec = lake.spec
    con = duck.connect(lake.settings, spill_dir=tmp / "spill")
    try:
        cols = spec.duckdb_columns()
        # the load needs no order (dedupe and sort come after): without it DuckDB's memory no
        # longer grows with the number of input files
        con.execute("SET preserve_insertion_order = false")
        con.execute(
            "CREATE TEMP TABLE raw AS SELECT * FROM read_json("
            f"{duck.list_literal(files)}, columns={duck.struct_literal(cols)}, "
            "format='newline_delimited', compression='gzip', maximum_object_size=16777216)"
        )
        (raw_events,) = con.execute("SELECT count(*) FROM raw").fetchone()
        order = ", ".join(f"{duck.ident(c)} ASC NULLS LAST" for c in spec.dedupe_order)
        sort = ", ".join(duck.ident(c) for c in spec.sort_keys)
        select = ", ".join(duck.ident(c) for c in spec.column_names)
        key = duck.ident(spec.dedupe_key)
        # one thread for the write keeps the global sort order across the output files
        con.execute("SET preserve_insertion_order = true")
        (rows,) = con.execute(
            f"COPY (SELECT {select} FROM raw QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1 "
            f"ORDER BY {sort}) TO {duck.literal(str(out_dir))} (FORMAT parquet, COMPRESSION zstd, "
            f"ROW_GROUP_SIZE {int(lake.settings.row_group_rows)}, "
            f"FILE_SIZE_BYTES {int(lake.settings.target_file_bytes)}, FILENAME_PATTERN 'part-{{i}}')"
        ).fetchone()
    finally:
        con.close()
    return {"raw_events": int(raw_events), "rows": int(rows), "duplicates": int(raw_events - rows)}


def _file_index(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def _upload(lake: Lake, day: date, version: str, staged: list[Path]) -> list[dict[str, Any]]:
    outputs = []
    for n, path in enumerate(staged):
        key = layout.part_key(lake.spec, day, version, n)
        meta = pq.read_metadata(path)
        # born tagged STANDARD: lifecycle then expires its superseded versions after the
        # STANDARD rule's days, not the longest minimum duration kept for untagged objects
        info = lake.storage.put_file("curated", key, path, tags={TIER_TAG: "STANDARD"})
        outputs.append({"key": key, "rows": meta.num_rows, "size": info.size,
                        "row_groups": meta.num_row_groups})
    return outputs
