"""Query the published lake with DuckDB: one view per table over exactly the published files."""

from __future__ import annotations

import reprlib

import duckdb

from pipelines import duck, layout
from pipelines.catalog import Partition
from pipelines.lake import Lake
from pipelines.storage import validate_key


def view_sql(lake: Lake) -> str:
    """``CREATE VIEW`` for the table over the files the catalog publishes (hive-style ``dt``)."""
    spec = lake.spec
    parts = lake.catalog.list_partitions(spec.table)
    files = [f for p in parts for f in partition_files(lake, p)]
    name = duck.ident(spec.table)
    if not files:
        cols = ", ".join(f"CAST(NULL AS {t}) AS {duck.ident(n)}" for n, t, _ in spec.describe_columns())
        return f"CREATE OR REPLACE VIEW {name} AS SELECT {cols} WHERE false"
    select = ", ".join(duck.ident(c) for c in spec.column_names)
    return (f"CREATE OR REPLACE VIEW {name} AS SELECT {select}, {duck.ident(spec.partition_key)} FROM read_parquet("
            f"{duck.list_literal(files)}, hive_partitioning=true, "
            f"hive_types={{{duck.literal(spec.partition_key)}: 'DATE'}})")


def partition_files(lake: Lake, partition: Partition) -> list[str]:
    """The Parquet files of a published partition: the list the lake recorded when it published,
    or, for a partition registered by another tool (location only), the ``.parquet`` objects
    under its location, as Athena would read them."""
    # catalog values are input too (Glue can be edited by any tool): only plain keys inside the
    # table's folder may become the paths DuckDB reads
    layout.parse_dt(partition.dt)
    table = layout.table_prefix(lake.spec) + "/"
    base = lake.storage.uri("curated", table)
    if partition.files:
        return [_inside(base, table, uri, partition.dt, "file") for uri in partition.files]
    prefix = table + _inside(base, table, partition.location, partition.dt, "location")[len(base):]
    return [lake.storage.uri("curated", k) for k in lake.storage.list_keys("curated", prefix)
            if k.endswith(".parquet") and not k.rsplit("/", 1)[-1].startswith(("_", "."))]


def _inside(base: str, table: str, uri: str, dt: str, what: str) -> str:
    """``uri`` if it names a plain key under the table's folder ``base``; ``ValueError`` otherwise."""
    if not isinstance(uri, str) or not uri.startswith(base):
        raise ValueError(f"dt={dt}: {what} {reprlib.repr(uri)} is outside the table's folder {base}")
    if what == "file" and uri.endswith("/"):
        raise ValueError(f"dt={dt}: file {reprlib.repr(uri)} names a folder")
    validate_key(table + uri[len(base):])
    return uri


def connect(lake: Lake) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the table's view defined."""
    con = duck.connect(lake.settings, filesystem=lake.storage.filesystem)
    con.execute(view_sql(lake))
    return con


def query(lake: Lake, sql: str) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` against the published views; returns (column names, rows)."""
    con = connect(lake)
    try:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description] if cur.description else []
        return names, cur.fetchall()
    finally:
        con.close()
