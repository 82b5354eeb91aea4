"""``lake restore`` and ``lake archived``: archived days on the command line.

Registered on :data:`pipelines.cli.app` when that module is imported.
"""

from __future__ import annotations

from enum import StrEnum

import typer
from rich.text import Text

from pipelines import archive
from pipelines.cli import _cell, _kv_table, _out, _table, app, context_lake, parse_date


class Tier(StrEnum):
    Standard = "Standard"
    Bulk = "Bulk"
    Expedited = "Expedited"


@app.command("restore")
def restore_cmd(ctx: typer.Context,
                dt: str = typer.Option(..., "--date", help="The archived day, YYYY-MM-DD."),
                days: int | None = typer.Option(None, "--days",
                                                help="How long the restored copies stay readable "
                                                     "(default LAKE_RESTORE_DAYS); the day is published "
                                                     "until one day before."),
                tier: Tier = typer.Option(Tier.Standard, "--tier",
                                          help="S3 retrieval tier (DEEP_ARCHIVE has no Expedited).")) -> None:
    """Restore an archived day and publish it again once every file is readable.

    Run it again to see progress while S3 restores the files; the run that finds them all
    readable publishes the day.
    """
    day = parse_date(dt, "--date")
    lake = context_lake(ctx)
    result = archive.restore(lake, day, days=days, tier=tier.value)
    rows = [("version", result.version), ("state", result.state),
            ("objects readable", f"{result.ready} of {result.objects}"),
            ("restore requests made", result.requested)]
    if result.restored_until is not None:
        rows.append(("published until", archive.when(result.restored_until - archive.EXPIRY_MARGIN_SECONDS)))
        rows.append(("copies readable until", archive.when(result.restored_until)))
        rows.append(("re-published now", "yes" if result.republished else "no (already published)"))
    out = _out()
    out.print(_kv_table(f"restore dt={result.dt}", rows))
    out.print(Text(result.message))


@app.command("archived")
def archived_cmd(ctx: typer.Context) -> None:
    """List archived days: out of the queryable catalog until `lake restore` brings them back."""
    lake = context_lake(ctx)
    records = archive.archived(lake)
    out = _out()
    if not records:
        out.print(Text(f"no archived days in {lake.spec.qualified_name}"))
        return
    table = _table("dt", "version", "class", "files", "rows", "archived at", "state",
                   title=f"archived days of {lake.spec.qualified_name}")
    for dt, r in records.items():
        table.add_row(_cell(dt), _cell(r.version), _cell(r.storage_class), _cell(len(r.files)), _cell(r.rows),
                      _cell(archive.when(r.archived_at)), _cell(r.label))
    out.print(table)
