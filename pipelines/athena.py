"""Athena DDL for the curated table: CREATE TABLE and partition statements, from the table spec.

Athena runs DDL with its Hive engine, so identifiers are quoted with backticks and string literals
with single quotes, backslash-escaped (Hive reads ``''`` as two adjacent literals, not as a quote).
Every identifier, location and partition value is validated before it is quoted: the text these
functions return is safe to paste into the Athena console or send with ``StartQueryExecution``.

Nothing here talks to AWS. With the Glue catalog the pipeline registers the table and its
partitions itself; this module is for running Athena over a lake whose catalog is elsewhere (the
embedded SQLite catalog, a copy of the data) and for reviewing what the table looks like.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from pipelines import layout
from pipelines.catalog import Partition
from pipelines.lake import Lake
from pipelines.schema import TableSpec
from pipelines.storage import validate_key

#: Athena refuses query strings above 262,144 bytes; statements stay far below it
MAX_STATEMENT_BYTES = 200_000
#: partitions per ALTER TABLE ... ADD statement (Athena's own examples batch about this many)
PARTITIONS_PER_STATEMENT = 100
#: an S3 key is at most 1,024 bytes; "s3://" and a 63-character bucket fit in the rest
MAX_LOCATION_CHARS = 1100
#: Glue limits: column comments 255 characters, table descriptions 2,048
MAX_COLUMN_COMMENT = 255
MAX_TABLE_COMMENT = 2048

TABLE_PROPERTIES = (("classification", "parquet"), ("parquet.compression", "ZSTD"))

_IDENTIFIER = re.compile(r"[a-z0-9_]{1,255}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP_LIKE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_HIVE_TYPE = re.compile(r"[a-z]{2,16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _show(value: object, limit: int = 60) -> str:
    """``repr`` of a value cut short, so a 10,000-character input gives a readable error."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def validate_identifier(kind: str, name: str) -> str:
    """Return ``name`` if Athena and Glue accept it as is; raise ``ValueError`` naming ``kind``.

    Names are lowercase letters, digits and underscores, 1-255 characters. Athena folds names to
    lowercase, so an uppercase name would be created under another name than the one asked for:
    it is refused rather than folded silently.
    """
    if not isinstance(name, str):
        raise ValueError(f"invalid {kind} name {_show(name)}: expected a string")
    if _IDENTIFIER.fullmatch(name):
        return name
    if _IDENTIFIER.fullmatch(name.lower()):
        raise ValueError(f"invalid {kind} name {_show(name)}: Athena folds names to lowercase; "
                         f"use {_show(name.lower())}")
    raise ValueError(f"invalid {kind} name {_show(name)}: use 1-255 lowercase letters, digits "
                     "and underscores")


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is a valid S3 bucket name; raise ``ValueError`` otherwise."""
    if (not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket
            or ".-" in bucket or "-." in bucket or _IP_LIKE.fullmatch(bucket)):
        raise ValueError(f"invalid S3 bucket name {_show(bucket)}: use 3-63 lowercase letters, "
                         "digits, dots and hyphens, starting and ending with a letter or digit, "
                         "not shaped like an IP address")
    return bucket


def validate_location(uri: str) -> str:
    """Return ``uri`` if it is an ``s3://<bucket>/<key>/`` folder; raise ``ValueError`` otherwise.

    The bucket must be a valid bucket name and every key segment a plain name
    (:func:`pipelines.storage.validate_key`), which keeps quotes, ``;``, backticks, whitespace,
    NUL and ``..`` out of the literal. The trailing ``/`` is required because Athena reads a
    location as a folder: without it ``.../v-1`` would also match ``.../v-10/``.
    """
    if not isinstance(uri, str):
        raise ValueError(f"invalid location {_show(uri)}: expected a string")
    if len(uri) > MAX_LOCATION_CHARS:
        raise ValueError(f"invalid location {_show(uri)}: longer than {MAX_LOCATION_CHARS} characters")
    if not uri.startswith("s3://"):
        raise ValueError(f"invalid location {_show(uri)}: Athena reads s3://bucket/prefix/ locations")
    if not uri.endswith("/"):
        raise ValueError(f"invalid location {_show(uri)}: a location is a folder and ends with '/'")
    bucket, _, key = uri[len("s3://"):].partition("/")
    validate_bucket(bucket)
    if key:
        try:
            validate_key(key)
        except ValueError:
            raise ValueError(f"invalid location {_show(uri)}: key segments must be plain names "
                             "(letters, digits, . _ = - + @; no '..', quotes, spaces or ';')") from None
    return uri


def quote_identifier(kind: str, name: str) -> str:
    """A validated identifier in Hive DDL backticks."""
    return f"`{validate_identifier(kind, name)}`"


def string_literal(value: str, what: str = "string", max_chars: int | None = None) -> str:
    """A Hive DDL string literal: single quotes, with ``\\`` and ``'`` backslash-escaped.

    Control characters (NUL, newlines, tabs) are refused rather than escaped: they have no place
    in a comment or location, and Hive's escape set for them differs between versions.
    """
    if not isinstance(value, str):
        raise ValueError(f"invalid {what} {_show(value)}: expected a string")
    if _CONTROL.search(value):
        raise ValueError(f"invalid {what} {_show(value)}: control characters are not allowed")
    if max_chars is not None and len(value) > max_chars:
        raise ValueError(f"invalid {what} {_show(value)}: longer than {max_chars} characters")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _hive_type(name: str, typ: str) -> str:
    if not isinstance(typ, str) or not _HIVE_TYPE.fullmatch(typ):
        raise ValueError(f"invalid type {_show(typ)} for column {name!r}")
    return typ


def _table_name(spec: TableSpec, database: str) -> str:
    return f"{quote_identifier('database', database)}.{quote_identifier('table', spec.table)}"


def _column_line(col: dict[str, str]) -> str:
    name = quote_identifier("column", col["Name"])
    line = f"{name} {_hive_type(col['Name'], col['Type'])}"
    if col.get("Comment"):
        line += " COMMENT " + string_literal(col["Comment"], f"comment of column {col['Name']!r}",
                                             MAX_COLUMN_COMMENT)
    return line


def create_table_ddl(spec: TableSpec, database: str, location: str) -> str:
    """``CREATE EXTERNAL TABLE IF NOT EXISTS`` for ``spec``, its data under ``location``.

    Columns, types and comments come from the schema file (``spec.hive_columns()``), the
    partition key from ``spec.hive_partition_keys()``. ``IF NOT EXISTS`` makes the statement
    safe to re-run; it does not change a table that exists (columns added to the schema later
    need ``ALTER TABLE ... ADD COLUMNS``).
    """
    columns = ",\n".join("  " + _column_line(c) for c in spec.hive_columns())
    partition_keys = ",\n".join("  " + _column_line(c) for c in spec.hive_partition_keys())
    properties = ",\n".join(f"  {string_literal(k)}={string_literal(v)}" for k, v in TABLE_PROPERTIES)
    lines = [f"CREATE EXTERNAL TABLE IF NOT EXISTS {_table_name(spec, database)} (", columns, ")"]
    if spec.description:
        lines.append("COMMENT " + string_literal(spec.description, "table comment", MAX_TABLE_COMMENT))
    lines += [
        "PARTITIONED BY (", partition_keys, ")",
        "STORED AS PARQUET",
        "LOCATION " + string_literal(validate_location(location), "location"),
        "TBLPROPERTIES (", properties, ")",
    ]
    return "\n".join(lines)


def _partition_spec(spec: TableSpec, partition: Partition) -> str:
    if partition.table != spec.table:
        raise ValueError(f"partition dt={partition.dt} belongs to table {partition.table!r}, "
                         f"not {spec.table!r}")
    day = layout.parse_dt(partition.dt).isoformat()
    return f"PARTITION ({quote_identifier('column', spec.partition_key)} = {string_literal(day)})"


def _partition_clause(spec: TableSpec, partition: Partition) -> str:
    location = string_literal(validate_location(partition.location), "location")
    return f"{_partition_spec(spec, partition)} LOCATION {location}"


def add_partitions_ddl(spec: TableSpec, database: str, partitions: Sequence[Partition], *,
                       per_statement: int = PARTITIONS_PER_STATEMENT) -> list[str]:
    """``ALTER TABLE ... ADD IF NOT EXISTS PARTITION (...) LOCATION '...'`` statements.

    Several partitions go in one statement (at most ``per_statement``, and never more than
    :data:`MAX_STATEMENT_BYTES`), because each Athena DDL query has a fixed overhead of seconds.
    ``ADD IF NOT EXISTS`` leaves a partition that already exists where it is, even when it points
    at an older version: use :func:`set_location_ddl` for days whose published version changed.
    """
    if per_statement < 1:
        raise ValueError("per_statement must be at least 1")
    seen: set[str] = set()
    clauses = []
    for p in partitions:
        clause = _partition_clause(spec, p)
        day = layout.parse_dt(p.dt).isoformat()
        if day in seen:
            raise ValueError(f"partition dt={day} is listed twice")
        seen.add(day)
        clauses.append(clause)
    head = f"ALTER TABLE {_table_name(spec, database)} ADD IF NOT EXISTS"
    statements, batch, size = [], [], len(head.encode())
    for clause in clauses:
        clause_bytes = len(clause.encode()) + 3  # "\n  " before each clause
        if batch and (len(batch) >= per_statement or size + clause_bytes > MAX_STATEMENT_BYTES):
            statements.append("\n  ".join([head, *batch]))
            batch, size = [], len(head.encode())
        batch.append(clause)
        size += clause_bytes
    if batch:
        statements.append("\n  ".join([head, *batch]))
    return statements


def set_location_ddl(spec: TableSpec, database: str, partition: Partition) -> str:
    """``ALTER TABLE ... PARTITION (...) SET LOCATION '...'``: move an existing partition.

    This is how a day that already exists in Athena is pointed at a newly published version; the
    change is a single metadata update, so queries see the old version or the new one.
    """
    location = string_literal(validate_location(partition.location), "location")
    return (f"ALTER TABLE {_table_name(spec, database)} {_partition_spec(spec, partition)} "
            f"SET LOCATION {location}")


def lake_ddl(lake: Lake, *, database: str | None = None, location: str | None = None,
             set_locations: bool = False) -> list[str]:
    """Every statement that recreates the lake's published table in Athena, in order.

    The CREATE TABLE, then ADD IF NOT EXISTS for every partition the catalog publishes, then
    (with ``set_locations``) a SET LOCATION per partition so that re-running the script also moves
    days that were re-published since the last run. Partition locations are the version folders
    of the published versions, under ``location`` (default: the lake's curated table folder, which
    must be on S3; pass the ``s3://`` address of a copy to describe an embedded lake).
    ``database`` defaults to ``LAKE_GLUE_DATABASE``.
    """
    spec = lake.spec
    database = database or lake.settings.glue_database
    table_prefix = layout.table_prefix(spec) + "/"
    base = location or lake.storage.uri("curated", table_prefix)
    if not base.startswith("s3://"):
        raise ValueError(f"the table data is at {_show(base)}, which Athena cannot read: pass the "
                         "s3://bucket/prefix/ location of the table's copy on S3")
    validate_location(base)
    published = []
    for p in lake.catalog.list_partitions(spec.table):
        # derived from the layout, not copied from the catalog: the same relative folder under
        # whichever location the table has, and never a value the catalog was made to hold
        relative = layout.version_prefix(spec, p.dt, p.version)[len(table_prefix):]
        published.append(replace(p, location=base + relative))
    statements = [create_table_ddl(spec, database, base), *add_partitions_ddl(spec, database, published)]
    if set_locations:
        statements += [set_location_ddl(spec, database, p) for p in published]
    return statements


def script(statements: Sequence[str]) -> str:
    """Statements joined into one script, each ended by ``;`` (for the console or a file)."""
    return "".join(s + ";\n\n" for s in statements).rstrip("\n") + ("\n" if statements else "")
