"""COMPACT: one day's raw objects -> a new version of the curated partition.

Reads every raw object of the day with DuckDB (memory-bounded, spilling to disk), keeps one copy
of each event id (the earliest received), sorts by the spec's sort keys and writes zstd Parquet
files of about ``LAKE_TARGET_FILE_BYTES`` into a new version directory, then its manifest. The
version id is a digest of the inputs, so compacting the same inputs again is a no-op, and nothing
becomes visible to readers until :mod:`pipelines.publish` moves the catalog pointer.

Lifecycle expires a day's raw objects once the day is compacted. When late events for such a day
land, raw alone no longer holds the day: compaction then *carries* the published version (the
base) into the new one, deduplicating its rows and every current raw event of the day together
by the same rule. Carried rows keep the columns that rule orders by (``received_at``,
``ingested_at``, ``source_object``, ``source_line``), so each event id resolves exactly as it would
have had the raw never expired. The manifest records the base under ``carried_from`` and the
version id includes it.
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
from pipelines.errors import NotFoundError, TerminalError
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


def version_id(lake: Lake, dt: date, inputs: list[ObjectInfo], *, base: str | None = None) -> str:
    """Digest of everything that determines the output: inputs, schema, layout settings, and
    the version whose rows are carried (``base``), if any."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{lake.spec.qualified_name}:{lake.spec.version}:{COMPACTION_FORMAT}:{dt}:".encode())
    h.update(f"{lake.settings.target_file_bytes}:{lake.settings.row_group_rows}\n".encode())
    for o in sorted(inputs, key=lambda o: o.key):
        h.update(f"{o.key}\t{o.etag}\n".encode())
    if base is not None:
        # only merged versions hash a base: ids of versions built from raw alone are unchanged
        h.update(f"carried\t{layout.check_version(base)}\n".encode())
    return "v-" + h.hexdigest()


def held_inputs(manifest: dict[str, Any]) -> set[str]:
    """Raw keys whose events a version holds: its inputs, and the expired inputs whose rows it
    carried from an older version (transitively: a carry records everything its base held)."""
    carried = manifest.get("carried_from") or {}
    return {i["key"] for i in manifest["inputs"]} | set(carried.get("inputs", ()))


@dataclass(frozen=True)
class CarryBase:
    """The published version a re-compaction must carry, and the raw keys only it still holds."""

    version: str
    manifest: dict[str, Any]
    expired: frozenset[str]


def carry_base(lake: Lake, day: date, raw_keys: set[str]) -> CarryBase | None:
    """The published version of ``day`` when it holds events of raw objects that are gone.

    None when raw alone rebuilds the day (nothing published, or every object it was built from
    still there). An archived day (out of the catalog, its files in a class nobody reads) whose
    raw expired cannot be carried: a clear :class:`TerminalError` says to restore it first.
    """
    from pipelines.archive import archive_record  # archive imports this module

    current = lake.catalog.get_partition(lake.spec.table, day.isoformat())
    if current is None:
        record = archive_record(lake, day)
        if record is None:
            return None
        manifest = read_manifest(lake, day, record.version)
        gone = held_inputs(manifest) - raw_keys if manifest is not None else set()
        if gone:
            raise TerminalError(
                f"dt={day} is archived ({record.storage_class}) and {len(gone)} raw object(s) of its "
                f"version {record.version} have expired (e.g. {min(gone)}): re-compacting it would drop "
                f"their rows; run `lake restore --date {day}` first, then compact the day again")
        return None
    manifest = read_manifest(lake, day, current.version)
    if manifest is None:
        return None  # nothing to carry from; `lake catalog reconcile` reports such a partition
    gone = held_inputs(manifest) - raw_keys
    return CarryBase(current.version, manifest, frozenset(gone)) if gone else None


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

    When raw objects the published version was built from have expired, its rows are carried
    into the new version (see the module docstring); when no raw object is new to it either,
    the published version itself is the result (``reused``). An archived day whose raw expired
    raises :class:`TerminalError`: it must be restored (``lake restore``) first.

    With ``work`` (a folder the caller removes), the day's local raw copies are kept there and
    returned in :attr:`CompactResult.raw_files`, so the audit that follows reads them again
    instead of fetching every object a second time.
    """
    day = layout.parse_dt(dt)
    inputs = raw_objects(lake, day)  # the day's raw prefix, listed once
    base = carry_base(lake, day, {o.key for o in inputs})
    if base is None and not inputs:
        raise NotFoundError(f"no raw events for {day}: land the inbox first")
    if base is not None and {o.key for o in inputs} <= {i["key"] for i in base.manifest["inputs"]}:
        # no raw object the base lacks: carrying it would rebuild the base itself
        return CompactResult(day.isoformat(), base.version, base.manifest, reused=True)
    version = version_id(lake, day, inputs, base=base.version if base else None)
    existing = read_manifest(lake, day, version)
    if existing is not None:
        return CompactResult(day.isoformat(), version, existing, reused=True)

    started = time.monotonic()
    carried_files = [o["key"] for o in base.manifest["outputs"]] if base else []
    with tempfile.TemporaryDirectory(prefix="lake-compact-") as tmp:
        staged = Path(tmp) / "out"
        files = local_raw(lake, [o.key for o in inputs], Path(work or tmp) / "raw")
        counts = _write_parquet(lake, [str(f) for f in files], staged, Path(tmp),
                                carried=[lake.storage.uri("curated", k) for k in carried_files])
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
    if base is not None:
        manifest["carried_from"] = {"version": base.version, "rows": counts.get("carried_rows", 0),
                                    "inputs": sorted(base.expired), "files": carried_files}
    # The manifest is written last: a version without one is incomplete and never published.
    lake.storage.put("curated", layout.manifest_key(lake.spec, day, version),
                     orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return CompactResult(day.isoformat(), version, manifest, reused=False,
                         raw_files=files if work is not None else None)


def _write_parquet(lake: Lake, files: list[str], out_dir: Path, tmp: Path, *,
                   carried: list[str] | None = None) -> dict[str, int]:
    spec = lake.spec
    con = duck.connect(lake.settings, spill_dir=tmp / "spill", filesystem=lake.storage.filesystem)
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
        carried_rows = 0
        if carried:
            # the base's rows join the raw events as they are (typed as the spec says): the
            # dedupe below then treats both alike, by the columns they both hold
            names = ", ".join(duck.ident(c) for c in cols)
            typed = ", ".join(f"CAST({duck.ident(c)} AS {t}) AS {duck.ident(c)}" for c, t in cols.items())
            (carried_rows,) = con.execute(
                f"INSERT INTO raw ({names}) SELECT {typed} FROM read_parquet("
                f"{duck.list_literal(carried)}, hive_partitioning=false)").fetchone()
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
    counts = {"raw_events": int(raw_events), "rows": int(rows),
              "duplicates": int(raw_events + carried_rows - rows)}
    if carried:
        counts["carried_rows"] = int(carried_rows)
    return counts


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
