"""Query the published lake with DuckDB: one view per table over exactly the published files."""

from __future__ import annotations

import duckdb

from pipelines import duck
from pipelines.lake import Lake


def view_sql(lake: Lake) -> str:
    """``CREATE VIEW`` for the table over the files the catalog publishes (hive-style ``dt``)."""
    spec = lake.spec
    parts = lake.catalog.list_partitions(spec.table)
    files = [f for p in parts for f in p.files]
    name = duck.ident(spec.table)
    if not files:
        cols = ", ".join(f"CAST(NULL AS {t}) AS {duck.ident(n)}" for n, t, _ in spec.describe_columns())
        return f"CREATE OR REPLACE VIEW {name} AS SELECT {cols} WHERE false"
    select = ", ".join(duck.ident(c) for c in spec.column_names)
    return (f"CREATE OR REPLACE VIEW {name} AS SELECT {select}, {duck.ident(spec.partition_key)} FROM read_parquet("
            f"{duck.list_literal(files)}, hive_partitioning=true, "
            f"hive_types={{{duck.literal(spec.partition_key)}: 'DATE'}})")


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
