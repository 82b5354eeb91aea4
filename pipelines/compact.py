"""COMPACT: one day's raw objects -> a new version of the curated partition.

Reads every raw object of the day with DuckDB (memory-bounded, spilling to disk), keeps one copy
of each event id (the earliest received), sorts by the spec's sort keys and writes zstd Parquet
files of about ``LAKE_TARGET_FILE_BYTES`` into a new version directory, then its manifest. The
version id is a digest of the inputs, so compacting the same inputs again is a no-op, and nothing
becomes visible to readers until :mod:`pipelines.publish` moves the catalog pointer.
"""

from __future__ import annotations

import hashlib
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
from pipelines.storage import ObjectInfo

COMPACTION_FORMAT = 1  # bump when the output layout changes, so versions are recomputed


@dataclass
class CompactResult:
    """A written (or already present) partition version and its numbers."""

    dt: str
    version: str
    manifest: dict[str, Any]
    reused: bool  # True when this exact version already existed

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


def compact_day(lake: Lake, dt: str | date) -> CompactResult:
    """Write a new version of partition ``dt`` from its raw objects (not yet published)."""
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
        # remote raw objects are fetched with many GETs in flight; local ones are read in place
        files = lake.storage.fetch("raw", [o.key for o in inputs], Path(tmp) / "raw")
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
    return CompactResult(day.isoformat(), version, manifest, reused=False)


def _write_parquet(lake: Lake, files: list[str], out_dir: Path, tmp: Path) -> dict[str, int]:
    spec = lake.spec
    con = duck.connect(lake.settings, spill_dir=tmp / "spill")
    try:
        cols = spec.duckdb_columns()
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
        info = lake.storage.put_file("curated", key, path)
        outputs.append({"key": key, "rows": meta.num_rows, "size": info.size,
                        "row_groups": meta.num_row_groups})
    return outputs
