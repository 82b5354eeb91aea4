"""``lake ddl`` and ``lake catalog ...``: the catalog side of the command line.

Registered on :data:`pipelines.cli.app` when that module is imported.
"""

from __future__ import annotations

import typer
from rich.text import Text

from pipelines import athena
from pipelines.cli import _cell, _out, _table, app, context_lake
from pipelines.reconcile import reconcile as run_reconcile


@app.command()
def ddl(ctx: typer.Context,
        database: str | None = typer.Option(None, "--database",
                                            help="Athena database (default: LAKE_GLUE_DATABASE)."),
        location: str | None = typer.Option(None, "--location",
                                            help="s3://bucket/prefix/ of the table folder (default: the "
                                                 "lake's own; required for an embedded lake)."),
        set_locations: bool = typer.Option(False, "--set-locations",
                                           help="Also SET LOCATION every day, so re-running the script "
                                                "moves days published again since.")) -> None:
    """Print Athena DDL for the table and its published partitions (see docs/athena.md)."""
    lake = context_lake(ctx)
    statements = athena.lake_ddl(lake, database=database, location=location, set_locations=set_locations)
    typer.echo(athena.script(statements), nl=False)


catalog_app = typer.Typer(help="The table catalog: compare it with the lake, repair it.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("reconcile")
def catalog_reconcile(ctx: typer.Context,
                      fix: bool = typer.Option(False, "--fix",
                                               help="Publish the newest audited version of missing, "
                                                    "superseded and broken days; drop orphan partitions.")) -> None:
    """Compare the catalog with the audited versions in the lake; exit 1 while they disagree."""
    lake = context_lake(ctx)
    report = run_reconcile(lake, fix=fix)
    out = _out()
    if report.findings or report.staged:
        table = _table("dt", "finding", "catalog", "lake", "detail", title="findings")
        for f in [*report.findings, *report.staged]:
            table.add_row(_cell(f.dt), _cell(f.kind), _cell(f.catalog_version or "-"),
                          _cell(f.lake_version or "-"), _cell(f.detail))
        out.print(table)
    if report.fixes:
        table = _table("dt", "finding", "action", "result", "detail", title="fixes")
        for x in report.fixes:
            table.add_row(_cell(x.dt), _cell(x.kind), _cell(x.action),
                          Text("fixed", style="green") if x.ok else Text("failed", style="red"),
                          _cell(x.detail))
        out.print(table)
    out.print(Text(report.summary()))
    if report.failed or (report.findings and not fix):
        raise typer.Exit(1)
