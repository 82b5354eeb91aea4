"""The table spec: loads a schema file and derives every other representation from it.

Arrow schemas, DuckDB column lists and views, Hive/Glue column types and the column list shown in
Dagster are all computed here from ``schemas/<namespace>_<table>_v<N>.yaml``.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa
import yaml

from pipelines.errors import SchemaError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
_IDENT = re.compile(r"[a-z][a-z0-9_]{0,62}")

# One row per logical type: Arrow, DuckDB, Hive (Glue/Athena).
_TYPES = {
    "string": (pa.string(), "VARCHAR", "string"),
    "json": (pa.string(), "VARCHAR", "string"),
    "int64": (pa.int64(), "BIGINT", "bigint"),
    "timestamp": (pa.timestamp("us", tz="UTC"), "TIMESTAMP WITH TIME ZONE", "timestamp"),
    "date": (pa.date32(), "DATE", "date"),
}


@dataclass(frozen=True)
class Column:
    """One output column and where its value comes from."""

    name: str
    type: str
    paths: tuple[tuple[str, ...], ...] = ()
    coerce: str | None = None
    remainder: str | None = None
    derive: str | None = None
    lineage: str | None = None
    required: bool = False

    @property
    def nullable(self) -> bool:
        return not (self.required or self.lineage)

    @property
    def arrow_type(self) -> pa.DataType:
        return _TYPES[self.type][0]

    @property
    def duckdb_type(self) -> str:
        return _TYPES[self.type][1]

    @property
    def hive_type(self) -> str:
        return _TYPES[self.type][2]


@dataclass(frozen=True)
class TableSpec:
    """A table version as declared in its schema file."""

    namespace: str
    table: str
    version: int
    description: str
    columns: tuple[Column, ...]
    partition_key: str
    partition_from: str
    sort_keys: tuple[str, ...]
    dedupe_key: str
    dedupe_order: tuple[str, ...]
    event_types: frozenset[str]
    required_any: tuple[tuple[str, ...], ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}.{self.table}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        """Schema of the Parquet data files (the partition key lives in the path, not the file)."""
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns],
            metadata={"table": self.qualified_name, "schema_version": str(self.version)},
        )

    def duckdb_columns(self) -> dict[str, str]:
        """``{column: DuckDB type}``, as ``read_json(columns=...)`` expects."""
        return {c.name: c.duckdb_type for c in self.columns}

    def hive_columns(self) -> list[dict[str, str]]:
        """Glue ``Columns`` entries (Name, Type, Comment)."""
        return [{"Name": c.name, "Type": c.hive_type, "Comment": _comment(c)} for c in self.columns]

    def hive_partition_keys(self) -> list[dict[str, str]]:
        return [{"Name": self.partition_key, "Type": "date", "Comment": f"UTC date of {self.partition_from}"}]

    def describe_columns(self) -> list[tuple[str, str, str]]:
        """``(name, type, description)`` for every column, partition key included (for UIs)."""
        rows = [(c.name, c.duckdb_type, _comment(c)) for c in self.columns]
        rows.append((self.partition_key, "DATE", f"partition: UTC date of {self.partition_from}"))
        return rows


def _comment(c: Column) -> str:
    if c.paths:
        return "from " + " | ".join(".".join(p) for p in c.paths)
    if c.remainder:
        return f"{c.remainder} minus the fields mapped to other columns (JSON)"
    if c.derive:
        return f"derived: {c.derive} rule"
    if c.lineage:
        return f"lineage: {c.lineage}"
    return ""


def schema_path(namespace: str = "clickstream", table: str = "events", version: int | None = None) -> Path:
    """The schema file of a table version (the latest when ``version`` is None)."""
    check_ident("namespace", namespace)
    check_ident("table", table)
    if version is None:
        candidates = sorted(
            SCHEMA_DIR.glob(f"{namespace}_{table}_v*.yaml"),
            key=lambda p: int(p.stem.rsplit("_v", 1)[1]),
        )
        if not candidates:
            raise SchemaError(f"unknown table {namespace}.{table}: no schema file in {SCHEMA_DIR}")
        return candidates[-1]
    path = SCHEMA_DIR / f"{namespace}_{table}_v{version}.yaml"
    if not path.exists():
        raise SchemaError(f"unknown table version {namespace}.{table} v{version}")
    return path


@cache
def load_spec(namespace: str = "clickstream", table: str = "events", version: int | None = None) -> TableSpec:
    """Load and validate a table spec."""
    return parse_spec(schema_path(namespace, table, version).read_text())


def parse_spec(text: str) -> TableSpec:
    """Parse schema-file text into a :class:`TableSpec`, refusing anything inconsistent."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SchemaError(f"schema file is not valid YAML: {exc}") from None
    try:
        columns = tuple(_column(c) for c in doc["columns"])
        (pk,) = doc["partition_keys"]
        spec = TableSpec(
            namespace=doc["namespace"],
            table=doc["table"],
            version=int(doc["version"]),
            description=doc.get("description", ""),
            columns=columns,
            partition_key=pk["name"],
            partition_from=pk["from"],
            sort_keys=tuple(doc["sort_keys"]),
            dedupe_key=doc["dedupe"]["key"],
            dedupe_order=tuple(doc["dedupe"]["order"]),
            event_types=frozenset(doc.get("event_types", ())),
            required_any=tuple(tuple(g) for g in doc.get("required_any", ())),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"schema file is missing or misuses a key: {exc!r}") from None
    validate_spec(spec)
    return spec


def _column(doc: dict) -> Column:
    sources = [k for k in ("paths", "remainder", "derive", "lineage") if doc.get(k)]
    if len(sources) != 1:
        raise SchemaError(f"column {doc.get('name')!r} needs exactly one of paths/remainder/derive/lineage")
    if doc["type"] not in _TYPES:
        raise SchemaError(f"column {doc['name']!r} has unknown type {doc['type']!r}")
    return Column(
        name=doc["name"],
        type=doc["type"],
        paths=tuple(tuple(p.split(".")) for p in doc.get("paths", ())),
        coerce=doc.get("coerce"),
        remainder=doc.get("remainder"),
        derive=doc.get("derive"),
        lineage=doc.get("lineage"),
        required=bool(doc.get("required", False)),
    )


def validate_spec(spec: TableSpec) -> None:
    """Refuse a spec whose names are not plain identifiers or whose references do not resolve."""
    check_ident("namespace", spec.namespace)
    check_ident("table", spec.table)
    names = spec.column_names
    for n in names:
        check_ident("column", n)
    if len(set(names)) != len(names):
        raise SchemaError("duplicate column names in schema file")
    if spec.partition_key in names:
        raise SchemaError("the partition key must not also be a data column (Athena refuses it)")
    for ref in (spec.partition_from, spec.dedupe_key, *spec.sort_keys, *spec.dedupe_order):
        if ref not in names:
            raise SchemaError(f"schema refers to unknown column {ref!r}")
    for group in spec.required_any:
        for ref in group:
            if ref not in names:
                raise SchemaError(f"required_any refers to unknown column {ref!r}")


def check_ident(kind: str, value: str) -> str:
    """Return ``value`` if it is a plain name (a lowercase letter, then up to 62 lowercase
    letters, digits and ``_``); raise :class:`SchemaError` otherwise.

    Table and column names become object keys, Glue names and SQL identifiers, so this is the
    one rule for them. ``fullmatch``: ``$`` would also accept a trailing newline.
    """
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise SchemaError(f"invalid {kind} name {reprlib.repr(value)}: use a lowercase letter, then up "
                          "to 62 lowercase letters, digits and _")
    return value
