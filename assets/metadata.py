"""Dagster metadata built from the table spec and engine results."""

from __future__ import annotations

import dagster as dg

from pipelines.schema import TableSpec


def column_schema(spec: TableSpec) -> dg.TableSchema:
    """The ``dagster/column_schema`` of a table, generated from its schema file."""
    return dg.TableSchema(columns=[dg.TableColumn(name=n, type=t, description=d)
                                   for n, t, d in spec.describe_columns()])


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else 0.0
