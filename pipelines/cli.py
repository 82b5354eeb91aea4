"""The ``lake`` command line: thin commands that call the engine and print what it did.

Every command resolves its settings when it runs (``LAKE_*`` variables, ``--root``, ``--table``).
Errors a user can cause (a bad date, an unknown table, a missing lake, bad SQL) print one line
``error: ...`` on stderr and exit 2 for bad arguments or 1 for work that failed; ``--debug`` shows
the traceback instead. The Dagster layer adds its own commands to :data:`app`; they get the same
error handling and can open the lake with :func:`context_lake`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import duckdb
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from pipelines import layout, wap
from pipelines.config import ROLES, LakeSettings
from pipelines.errors import AuditError, ConfigError, LakeError, NotFoundError, SchemaError
from pipelines.lake import Lake
from pipelines.land import land_inbox, raw_objects
from pipelines.query import query as run_query
from pipelines.status import day_status, watermark
from pipelines.verify import audit_version

#: DuckDB errors that mean the SQL text itself is wrong (bad arguments, exit 2)
_SQL_USAGE_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException)


class UsageProblem(LakeError):
    """The command line asks for something that cannot work (exit code 2)."""


class _LakeGroup(TyperGroup):
    """Turns the errors a user can cause into one ``error:`` line and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LakeError, ValueError, duckdb.Error) as exc:
            if isinstance(ctx.obj, CliState) and ctx.obj.debug:
                raise
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(exit_code(exc)) from None


app = typer.Typer(
    cls=_LakeGroup,
    name="lake",
    help="Clickstream lake: land, compact, audit, publish, query, tier and verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@dataclass(frozen=True)
class CliState:
    """The global options, kept on the click context for every command."""

    root: str | None
    table: str | None
    debug: bool = False


def exit_code(exc: BaseException) -> int:
    """2 when the arguments are wrong, 1 when the work failed."""
    if isinstance(exc, (UsageProblem, ValueError, ConfigError, *_SQL_USAGE_ERRORS)):
        return 2
    return 1


def one_line(exc: BaseException) -> str:
    """The message of an error on one line (DuckDB's ``LINE 1: ... ^`` pointer dropped)."""
    parts = []
    for line in str(exc).splitlines():
        line = line.strip()
        if line.startswith("LINE "):
            break
        if line:
            parts.append(line)
    return " ".join(parts) or type(exc).__name__


def open_lake(root: str | None, table: str | None = None) -> Lake:
    """Open the lake at ``root`` (``LAKE_*`` variables for everything else)."""
    try:
        settings = LakeSettings.from_env(root=root, table=table)
        return Lake.open(settings)
    except (SchemaError, ConfigError) as exc:  # unknown table, bad LAKE_* value
        raise UsageProblem(str(exc)) from None


def require_lake(lake: Lake) -> Lake:
    """Refuse to read a lake that is not there (instead of creating an empty catalog in it)."""
    settings = lake.settings
    if settings.backend == "local":
        root = settings.root_path
        if not (root.is_dir() and any((root / d).exists() for d in (*ROLES, "_catalog"))):
            raise NotFoundError(f"no lake at {root}: run `lake demo` or `lake land` first")
    return lake


def cli_state(ctx: typer.Context) -> CliState:
    obj = ctx.find_object(CliState)
    return obj if obj is not None else CliState(root=None, table=None)


def context_lake(ctx: typer.Context, *, must_exist: bool = True) -> Lake:
    """The lake the global options name; for commands that read, it must exist."""
    state = cli_state(ctx)
    lake = open_lake(state.root, state.table)
    return require_lake(lake) if must_exist else lake


def parse_date(value: str, option: str) -> date:
    try:
        return layout.parse_dt(value)
    except ValueError as exc:
        raise UsageProblem(f"{option}: {exc}") from None


@app.callback()
def main(
    ctx: typer.Context,
    root: str = typer.Option("lake", "--root", envvar="LAKE_ROOT", help="Folder of the embedded lake."),
    table: str = typer.Option("events", "--table", envvar="LAKE_TABLE", help="Table of the schema."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
) -> None:
    ctx.obj = CliState(root=root, table=table, debug=debug)


# ---------------------------------------------------------------------------------------- output


def _out() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = 200  # piped or logged: no terminal to fit, keep rows on one line
    return console


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _cell(value: Any) -> Text:
    """Data as plain text: values from events never become rich markup."""
    if value is None:
        return Text("NULL", style="dim")
    return Text(str(value))


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


_NO_WRAP = {"dt": 10, "version": 18, "published": 18, "check": 0, "result": 0, "outcome": 0, "state": 0}


def _table(*columns: str, title: str | None = None) -> Table:
    """A table whose dates, versions and states are never wrapped or cut."""
    table = Table(title=title, title_justify="left")
    for name in columns:
        if name in _NO_WRAP:
            table.add_column(name, no_wrap=True, min_width=_NO_WRAP[name] or None)
        else:
            table.add_column(name)
    return table


def _kv_table(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, _cell(value))
    return table


def _meta(metadata: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in metadata.items())


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (shown on terminals only); yields ``update(done, total)``."""
    console = _err()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


# -------------------------------------------------------------------------------------- commands


@app.command()
def land(ctx: typer.Context,
         prefix: str = typer.Option("", "--prefix", help="Only landing keys under this prefix.")) -> None:
    """Land new inbox objects into raw, by event day; quarantine what fails."""
    lake = context_lake(ctx, must_exist=False)
    with _progress("landing") as update:
        report = land_inbox(lake, prefix=prefix, progress=update)
    out = _out()
    if not report.files:
        out.print(Text(f"nothing to land: no new objects under landing/{prefix} "
                       f"({report.already_landed} landed before)"))
        return
    out.print(_kv_table("land", [
        ("landing objects", len(report.files)),
        ("already landed before", report.already_landed),
        ("lines read", report.total("lines")),
        ("events landed", report.total("landed")),
        ("lines quarantined", report.total("quarantined")),
        ("files quarantined", report.quarantined_files),
    ]))
    if report.tag_failures:
        out.print(Text(f"warning: {report.tag_failures} landed objects could not be tagged "
                       "lake-state=landed (they stay in landing until `lake tier apply` tags them)"))
    if report.reasons:
        table = _table("reason", "count", title="quarantine reasons")
        for reason, n in sorted(report.reasons.items()):
            table.add_row(_cell(reason), _cell(n))
        out.print(table)
    if report.touched:
        table = _table("dt", "new rows", title="days touched")
        for dt, rows in report.touched.items():
            table.add_row(_cell(dt), _cell(rows))
        out.print(table)


def _compact_rows(result: Any) -> list[tuple[str, Any]]:
    c = result.manifest["counts"]
    ratio = f"{c['bytes_in'] / c['bytes_out']:.1f}x" if c.get("bytes_out") else "-"
    return [
        ("version", result.version + (" (already written, reused)" if result.reused else "")),
        ("raw events", c["raw_events"]),
        ("rows", c["rows"]),
        ("duplicates dropped", c["duplicates"]),
        ("files in -> out", f"{c['files_in']} -> {c['files_out']}"),
        ("bytes in -> out", f"{_bytes(c['bytes_in'])} -> {_bytes(c['bytes_out'])} ({ratio})"),
    ]


def _checks_table(report: Any) -> Table:
    table = _table("check", "result", "description", "measured", title=f"audit dt={report.dt} {report.version}")
    for check in report.checks:
        table.add_row(_cell(check.name), Text("pass", style="green") if check.passed
                      else Text("FAIL", style="bold red"), _cell(check.description), _cell(_meta(check.metadata)))
    return table


@app.command()
def compact(ctx: typer.Context,
            dt: str = typer.Option(..., "--date", help="Partition day, YYYY-MM-DD."),
            publish: bool = typer.Option(True, "--publish/--no-publish",
                                         help="Publish the audited version (default) or only write and audit it.")) -> None:
    """Compact one day: write a new version, audit it and publish it."""
    day = parse_date(dt, "--date")
    lake = context_lake(ctx)
    out = _out()
    if not publish:
        result, audit = wap.write_and_audit(lake, day)
        out.print(_kv_table(f"compact dt={result.dt} (not published)", _compact_rows(result)))
        out.print(_checks_table(audit))
        if not audit.passed:
            raise typer.Exit(1)
        return
    done = wap.process_day(lake, day)
    rows = _compact_rows(done.compact)
    rows.append(("audit", done.audit.summary()))
    if done.publish is not None:
        p = done.publish
        rows.append(("published", f"{p.version} (was {p.previous or 'unpublished'})" if p.changed
                     else f"{p.version} (unchanged)"))
        rows.append(("location", p.location))
    rows.append(("retired versions", ", ".join(done.retired) or "none"))
    out.print(_kv_table(f"compact dt={done.dt}", rows))


@app.command()
def backfill(ctx: typer.Context,
             start: str = typer.Option(..., "--start", help="First day, YYYY-MM-DD."),
             end: str = typer.Option(..., "--end", help="Last day (inclusive), YYYY-MM-DD.")) -> None:
    """Compact, audit and publish every day of a range; days without raw data are skipped."""
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    if last < first:
        raise UsageProblem(f"--end {last} is before --start {first}")
    lake = context_lake(ctx)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    table = _table("dt", "outcome", "rows", "duplicates", "version", "detail", title=f"backfill {first} .. {last}")
    failed: list[str] = []
    with _progress("backfill") as update:
        for n, day in enumerate(days, 1):
            try:
                if not raw_objects(lake, day):
                    table.add_row(_cell(day), Text("skipped", style="dim"), "", "", "", _cell("no raw data"))
                    continue
                done = wap.process_day(lake, day)
                c = done.compact.manifest["counts"]
                changed = done.publish is not None and done.publish.changed
                table.add_row(_cell(day), Text("published", style="green") if changed else Text("unchanged"),
                              _cell(c["rows"]), _cell(c["duplicates"]), _cell(done.version),
                              _cell(f"retired {len(done.retired)}" if done.retired else ""))
            except Exception as exc:  # one day failing must not stop the others
                failed.append(day.isoformat())
                detail = one_line(exc) if isinstance(exc, LakeError | ValueError | duckdb.Error) \
                    else f"{type(exc).__name__}: {one_line(exc)}"
                table.add_row(_cell(day), Text("FAILED", style="bold red"), "", "", "", _cell(detail))
            finally:
                update(n, len(days))
    _out().print(table)
    if failed:
        typer.echo(f"error: {len(failed)} of {len(days)} days failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


@app.command()
def verify(ctx: typer.Context, dt: str = typer.Option(..., "--date", help="Partition day, YYYY-MM-DD.")) -> None:
    """Re-audit the published version of a day from its files; exit 1 if any check fails."""
    day = parse_date(dt, "--date")
    lake = context_lake(ctx)
    partition = lake.catalog.get_partition(lake.spec.table, day.isoformat())
    if partition is None:
        raise NotFoundError(f"dt={day} is not published: run `lake compact --date {day}` first")
    report = audit_version(lake, day, partition.version, record=False)
    _out().print(_checks_table(report))
    if not report.passed:
        raise AuditError(report.summary())


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return b64encode(value).decode()
    return str(value)


@app.command()
def query(ctx: typer.Context, sql: str = typer.Argument(..., help="SQL over the published tables."),
          fmt: Format = typer.Option(Format.table, "--format", help="Output format.")) -> None:
    """Run SQL with DuckDB over the published partitions (the table is a view)."""
    lake = context_lake(ctx)
    names, rows = run_query(lake, sql)
    if fmt is Format.csv:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
        typer.echo(buf.getvalue(), nl=False)
    elif fmt is Format.json:
        typer.echo(json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=_json_value,
                              indent=2, ensure_ascii=False))
    else:
        table = Table(*names, caption=f"{len(rows)} row{'s' if len(rows) != 1 else ''}")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        _out().print(table)


@app.command()
def status(ctx: typer.Context) -> None:
    """Per day: raw objects, the published version and whether it is current."""
    lake = context_lake(ctx)
    days = day_status(lake)
    out = _out()
    if not days:
        out.print(Text(f"no days yet in {lake.settings.location}: run `lake land`"))
        return
    mark = watermark(days)
    table = _table("dt", "raw objects", "raw bytes", "published", "rows", "duplicates", "state", "complete",
                   title=f"{lake.spec.qualified_name} at {lake.settings.location}")
    for d in days:
        if d.archive is not None:
            state = Text(d.archive, style="cyan")
        elif d.published_version is None:
            state = Text("not compacted", style="yellow")
        elif d.current:
            state = Text("current", style="green")
        elif d.raw_objects == 0:
            state = Text("published (raw expired)")
        else:
            state = Text("stale: re-compact", style="yellow")
        table.add_row(_cell(d.dt), _cell(d.raw_objects), _cell(_bytes(d.raw_bytes)),
                      _cell(d.published_version or "-"),
                      _cell("-" if d.published_rows is None else d.published_rows),
                      _cell("-" if d.duplicates is None else d.duplicates), state,
                      _cell("yes" if d.complete else "late data" if d.late_keys else
                            f"closes {datetime.fromtimestamp(d.closes_at, UTC):%Y-%m-%d %H:%M}Z"
                            if datetime.now(UTC).timestamp() < d.closes_at else "no"))
    out.print(table)
    out.print(Text(f"complete through {mark}" if mark else "no day complete yet")
              + Text(" (closed: past its end plus the lateness allowance, published, holding all its raw)",
                     style="dim"))


# registers `lake ddl` and `lake catalog ...` on this app (they import from this module)
# cli_cost: `lake cost`; cli_deploy: `lake init`, `lake doctor`, `lake iam-policy`;
# cli_tier: `lake tier plan` / `lake tier apply` (and the older `lake tier --plan`)
# cli_archive: `lake restore`, `lake archived`; cli_trace: `lake trace KEY`; cli_ledger: `lake ledger`
from pipelines import (  # noqa: E402, F401
    cli_archive,
    cli_catalog,
    cli_cost,
    cli_deploy,
    cli_ledger,
    cli_tier,
    cli_trace,
)
