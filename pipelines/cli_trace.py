"""``lake trace KEY``: where every line of a landing object went.

Registered on :data:`pipelines.cli.app` when that module is imported.
"""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.text import Text

from pipelines.cli import _cell, _kv_table, _out, _table, app, context_lake
from pipelines.trace import NOT_COMPACTED, PUBLISHED, VersionTrace, trace

#: line numbers shown per reason in the table (``--format json`` has them all, up to the engine's cap)
SHOWN_LINES = 20


class TraceFormat(StrEnum):
    table = "table"
    json = "json"


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def _print_version(v: VersionTrace) -> None:
    out = _out()
    out.print(_kv_table(f"landing/{v.source_key}", [
        ("etag", v.etag),
        ("digest", v.digest),
        ("size", v.size),
        ("lines read", v.lines if v.landing_lines is None else f"{v.lines} (recounted {v.landing_lines})"),
        ("events landed", v.landed),
        ("lines quarantined", v.quarantined),
    ]))
    if v.raw:
        table = _table("dt", "hour", "events", "version", "state", "kept", "duplicates dropped",
                       "kept from", "raw key", title="raw objects")
        for r in v.raw:
            style = "green" if r.state == PUBLISHED else "yellow" if r.state == NOT_COMPACTED else None
            events = str(r.events) if r.recounted in (None, r.events) else f"{r.events} (recounted {r.recounted})"
            kept_from = ", ".join(f"{k}: {n}" for k, n in r.kept_from.items())
            state = r.state + (f"; {r.missing} missing" if r.missing else "") + (f" ({r.note})" if r.note else "")
            table.add_row(_cell(r.dt), _cell("-" if r.hour is None else f"{r.hour:02d}"), _cell(events),
                          _cell(r.version or "-"), Text(state, style=style or ""),
                          _cell("-" if r.pending else _n(r.kept)),
                          _cell("-" if r.pending else _n(r.duplicates_dropped)), _cell(kept_from or "-"), _cell(r.key))
        out.print(table)
    if v.quarantine is not None:
        q = v.quarantine
        table = _table("reason", "count", "lines", "quarantine key", title="quarantined lines")
        for reason, n in sorted(q.reasons.items()):
            count = str(n)
            if q.recounted is not None and q.recounted.get(reason) != n:
                count += f" (recounted {q.recounted.get(reason, 0)})"
            elif q.recounted is None:
                count += " (object expired)"
            numbers = q.line_numbers.get(reason, [])
            lines = ", ".join(map(str, numbers[:SHOWN_LINES])) + (", ..." if len(numbers) > SHOWN_LINES else "")
            table.add_row(_cell(reason), _cell(count), _cell(lines or "-"), _cell(q.key))
        out.print(table)
    out.print(Text(v.balance(), style="green" if v.balanced or v.file_reason else "bold red"))


@app.command("trace")
def trace_cmd(ctx: typer.Context,
              key: str = typer.Argument(..., help="The landing object's key."),
              etag: str | None = typer.Option(None, "--etag", help="Only this version of the key."),
              fmt: TraceFormat = typer.Option(TraceFormat.table, "--format", help="Output format.")) -> None:
    """Where every line of a landing object went: raw objects, curated versions, quarantine."""
    lake = context_lake(ctx)
    result = trace(lake, key, etag)
    if fmt is TraceFormat.json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return
    for version in result.versions:
        _print_version(version)
