"""The catalog: which version of each partition is published, behind one interface.

The embedded :class:`LocalCatalog` keeps it in SQLite inside the lake folder; publishing a
partition is one transaction, so concurrent publishers (threads or processes) of different
partitions never lose each other's updates, and a reader sees the old pointer or the new one.
The Glue implementation fills the same protocol.
"""

from __future__ import annotations

import reprlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import orjson

from pipelines import layout
from pipelines.errors import SchemaError, TransientError
from pipelines.schema import TableSpec, check_ident, validate_spec
from pipelines.storage import validate_key


@dataclass(frozen=True)
class Partition:
    """A published partition: the version readers see and where its files are."""

    table: str
    dt: str
    version: str
    location: str
    files: tuple[str, ...]
    rows: int
    published_at: float


@runtime_checkable
class Catalog(Protocol):
    """What publishing and querying need from a table catalog."""

    def ensure_table(self, spec: TableSpec, location: str) -> None:
        """Create the table, or accept an additive change; refuse incompatible ones."""

    def get_partition(self, table: str, dt: str) -> Partition | None:
        """The published partition, or None."""

    def list_partitions(self, table: str) -> list[Partition]:
        """Every published partition of a table, by date."""

    def publish(self, table: str, partition: Partition, expected_version: str | None) -> None:
        """Point the partition at a new version if it is still at ``expected_version``."""

    def publish_many(self, table: str, updates: Sequence[tuple[Partition, str | None]]) -> list[str]:
        """Publish many partitions, each compare-and-set against its expected version.

        Applies every update whose partition is still at its expected version (or already at the
        new one) and returns the dates changed; if any were at another version, raises
        :class:`ConcurrentPublishError` naming them after applying the others.
        """

    def drop_partition(self, table: str, dt: str) -> None:
        """Take a partition out of the queryable catalog."""


def validate_partition_key(table: str, dt: str) -> None:
    """Refuse a table name or partition date that is not plain, before it reaches SQLite or Glue.

    ``dt`` must be the catalog's text form, ``YYYY-MM-DD`` (:func:`pipelines.layout.parse_dt`).
    """
    check_ident("table", table)
    _check_dt(dt)


def validate_table(spec: TableSpec, location: str) -> None:
    """Refuse a table spec with names that are not plain, or a location that is not a folder."""
    validate_spec(spec)
    validate_location(location)


def validate_updates(table: str, updates: Sequence[tuple[Partition, str | None]]) -> None:
    """Refuse a publish whose table, dates, versions, locations or file names are not plain.

    Checked before anything is written: these values become Glue partition values and
    locations, the paths DuckDB reads, and the version folders keys are built from.
    """
    check_ident("table", table)
    for partition, _ in updates:
        _check_dt(partition.dt)
        # one plain key segment (the lake's own ids are layout.check_version's v-<16 hex digits)
        if not isinstance(partition.version, str) or "/" in partition.version:
            raise ValueError(f"invalid version id {reprlib.repr(partition.version)}")
        validate_key(partition.version)
        location = validate_location(partition.location)
        for uri in partition.files:
            if not isinstance(uri, str) or not uri.startswith(location):
                raise ValueError(f"dt={partition.dt}: file {reprlib.repr(uri)} is not under its location")
            validate_key(uri[len(location):])


def validate_location(location: str) -> str:
    """Return ``location`` if it is a folder a catalog may point at; raise ``ValueError`` otherwise.

    An ``s3://bucket/prefix/`` folder with plain key segments
    (:func:`pipelines.athena.validate_location`), or an absolute local folder path ending in
    ``/``, printable, without ``.`` or ``..`` segments (the embedded lake's root may hold spaces).
    """
    if isinstance(location, str) and location.startswith("s3://"):
        from pipelines.athena import validate_location as validate_s3_location  # athena imports us

        return validate_s3_location(location)
    if (not isinstance(location, str) or len(location) > 4096 or not location.startswith("/")
            or not location.endswith("/") or not location.isprintable()
            or {".", ".."} & set(location.split("/"))):
        raise ValueError(f"invalid location {reprlib.repr(location)}: expected s3://bucket/prefix/ "
                         "or an absolute folder path ending in '/'")
    return location


def _check_dt(dt: str) -> str:
    if layout.parse_dt(dt).isoformat() != dt:  # a date object, not the text the catalog keeps
        raise ValueError(f"invalid partition date {reprlib.repr(dt)}: expected a YYYY-MM-DD string")
    return dt


class ConcurrentPublishError(TransientError):
    """Another run published the same partition in between; re-read and retry."""

    def __init__(self, message: str, conflicts: Sequence[str] = ()):
        super().__init__(message)
        self.conflicts = list(conflicts)


_DDL = """
CREATE TABLE IF NOT EXISTS tables (
    name TEXT PRIMARY KEY, schema_version INTEGER NOT NULL, spec TEXT NOT NULL, location TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS partitions (
    tbl TEXT NOT NULL, dt TEXT NOT NULL, version TEXT NOT NULL, location TEXT NOT NULL,
    files TEXT NOT NULL, rows INTEGER NOT NULL, published_at REAL NOT NULL,
    PRIMARY KEY (tbl, dt)
);
CREATE TABLE IF NOT EXISTS publish_log (
    tbl TEXT NOT NULL, dt TEXT NOT NULL, version TEXT NOT NULL, previous TEXT,
    published_at REAL NOT NULL, action TEXT NOT NULL
);
"""


class LocalCatalog:
    """SQLite catalog file in the lake folder (WAL mode, one transaction per publish)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._enable_wal()
        with self._tx() as db:
            for statement in filter(str.strip, _DDL.split(";")):
                db.execute(statement)

    def _enable_wal(self, timeout: float = 30.0) -> None:
        """Put the catalog file in WAL mode (a property of the file: done once, kept for good).

        Switching the journal mode needs an exclusive lock, and SQLite answers "database is
        locked" at once instead of waiting in the busy handler, so processes opening a new
        catalog at the same moment (two runs starting on a fresh lake) failed. Retry until the
        timeout, like the busy handler would. Setting it per transaction, as before, repeated
        the race on every publish for no benefit.
        """
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if not ("locked" in str(exc) or "busy" in str(exc)):
                    raise
                if time.monotonic() > deadline:
                    raise TransientError(f"local catalog is busy: {exc}") from exc
            finally:
                db.close()
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise TransientError(f"local catalog is busy: {exc}") from exc
            raise
        finally:
            db.close()

    def ensure_table(self, spec: TableSpec, location: str) -> None:
        validate_table(spec, location)
        with self._tx() as db:
            row = db.execute("SELECT schema_version, spec FROM tables WHERE name=?", (spec.table,)).fetchone()
            new_cols = [(c.name, c.type) for c in spec.columns]
            if row is not None:
                old_cols = [tuple(c) for c in orjson.loads(row[1])["columns"]]
                check_compatible(old_cols, new_cols, spec.table)
                if row[0] > spec.version:
                    raise SchemaError(f"table {spec.table} is at schema v{row[0]}, newer than v{spec.version}")
            db.execute(
                "INSERT INTO tables VALUES (?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                "schema_version=excluded.schema_version, spec=excluded.spec, location=excluded.location",
                (spec.table, spec.version, orjson.dumps({"columns": new_cols}).decode(), location),
            )

    def get_partition(self, table: str, dt: str) -> Partition | None:
        validate_partition_key(table, dt)
        with self._tx() as db:
            row = db.execute("SELECT * FROM partitions WHERE tbl=? AND dt=?", (table, dt)).fetchone()
        return _partition(row) if row else None

    def list_partitions(self, table: str) -> list[Partition]:
        with self._tx() as db:
            rows = db.execute("SELECT * FROM partitions WHERE tbl=? ORDER BY dt", (table,)).fetchall()
        return [_partition(r) for r in rows]

    def publish(self, table: str, partition: Partition, expected_version: str | None) -> None:
        """Swap the pointer if it still is ``expected_version`` (compare-and-set)."""
        self.publish_many(table, [(partition, expected_version)])

    def publish_many(self, table: str, updates: Sequence[tuple[Partition, str | None]]) -> list[str]:
        validate_updates(table, updates)
        changed, conflicts = [], []
        with self._tx() as db:  # one transaction: the batch becomes visible at once
            for partition, expected_version in updates:
                row = db.execute("SELECT version FROM partitions WHERE tbl=? AND dt=?",
                                 (table, partition.dt)).fetchone()
                current = row[0] if row else None
                if current == partition.version:
                    continue  # already published: idempotent
                if current != expected_version:
                    conflicts.append(f"dt={partition.dt} is at {current}, expected {expected_version}")
                    continue
                db.execute(
                    "INSERT INTO partitions VALUES (?,?,?,?,?,?,?) ON CONFLICT(tbl, dt) DO UPDATE SET "
                    "version=excluded.version, location=excluded.location, files=excluded.files, "
                    "rows=excluded.rows, published_at=excluded.published_at",
                    (table, partition.dt, partition.version, partition.location,
                     orjson.dumps(list(partition.files)).decode(), partition.rows, partition.published_at),
                )
                db.execute("INSERT INTO publish_log VALUES (?,?,?,?,?,?)",
                           (table, partition.dt, partition.version, current, time.time(), "publish"))
                changed.append(partition.dt)
        if conflicts:
            raise ConcurrentPublishError(f"{table}: " + "; ".join(conflicts),
                                         [c.split()[0].removeprefix("dt=") for c in conflicts])
        return changed

    def drop_partition(self, table: str, dt: str) -> None:
        validate_partition_key(table, dt)
        with self._tx() as db:
            row = db.execute("SELECT version FROM partitions WHERE tbl=? AND dt=?", (table, dt)).fetchone()
            if row:
                db.execute("DELETE FROM partitions WHERE tbl=? AND dt=?", (table, dt))
                db.execute("INSERT INTO publish_log VALUES (?,?,?,?,?,?)",
                           (table, dt, row[0], row[0], time.time(), "drop"))

    def history(self, table: str, dt: str) -> list[tuple[str, str | None, float, str]]:
        """(version, previous, when, action) for a partition, oldest first."""
        with self._tx() as db:
            return db.execute(
                "SELECT version, previous, published_at, action FROM publish_log "
                "WHERE tbl=? AND dt=? ORDER BY rowid", (table, dt)).fetchall()


def _partition(row: tuple) -> Partition:
    tbl, dt, version, location, files, rows, published_at = row
    return Partition(tbl, dt, version, location, tuple(orjson.loads(files)), rows, published_at)


def check_compatible(old: list[tuple[str, str]], new: list[tuple[str, str]], table: str) -> None:
    """Allow only additive changes: every old column kept with its type, new ones appended."""
    new_map = dict(new)
    for name, typ in old:
        if name not in new_map:
            raise SchemaError(f"table {table}: column {name!r} was removed or renamed; that is not a compatible change")
        if new_map[name] != typ:
            raise SchemaError(f"table {table}: column {name!r} changes type {typ} -> {new_map[name]}; not compatible")
    if [n for n, _ in new[: len(old)]] != [n for n, _ in old]:
        raise SchemaError(f"table {table}: existing columns must keep their order; add new ones at the end")


def open_catalog(settings) -> Catalog:
    """Build the catalog the settings name (``LAKE_CATALOG``, by default from the backend)."""
    if settings.catalog_kind == "local":
        return LocalCatalog(settings.root_path / "_catalog" / "catalog.sqlite")
    from pipelines.glue import GlueCatalog

    return GlueCatalog.from_settings(settings)
