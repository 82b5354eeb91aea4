"""DuckDB connections with the lake's memory and spill settings, and SQL quoting helpers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from pipelines.config import LakeSettings


def connect(settings: LakeSettings, spill_dir: Path | None = None, filesystem=None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB bounded by ``LAKE_DUCKDB_MEMORY_LIMIT`` that spills to ``spill_dir``.

    ``filesystem`` (an fsspec filesystem, e.g. the S3 backend's) is registered so ``s3://``
    addresses are read through it: no httpfs extension, so nothing is downloaded at run time.
    """
    # never fetch extensions: machines running the lake may have no internet
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    if filesystem is not None:
        con.register_filesystem(filesystem)
    spill = spill_dir or Path(tempfile.gettempdir()) / "clickstream-lake-spill"
    spill.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET memory_limit = {literal(settings.duckdb_memory_limit)}")
    con.execute(f"SET threads = {int(settings.duckdb_threads)}")
    con.execute(f"SET temp_directory = {literal(str(spill))}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def literal(value: str) -> str:
    """A SQL string literal; the only way values reach SQL text."""
    if "\x00" in value:
        raise ValueError("NUL byte in SQL value")
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    if "\x00" in name:
        raise ValueError("NUL byte in SQL identifier")
    return '"' + name.replace('"', '""') + '"'


def list_literal(values: list[str]) -> str:
    return "[" + ", ".join(literal(v) for v in values) + "]"


def struct_literal(columns: dict[str, str]) -> str:
    """``{'col': 'TYPE', ...}`` for ``read_json(columns=...)``."""
    return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in columns.items()) + "}"
