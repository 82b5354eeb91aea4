"""``lake cost``: what the lake costs per month, what compaction saves, what tiering would change.

Registered on :data:`pipelines.cli.app` when that module is imported.
"""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.text import Text

from pipelines.cli import _bytes, _cell, _kv_table, _out, _table, app, context_lake, parse_date
from pipelines.cost import CostReport, cost_report, prices_for


class CostFormat(StrEnum):
    table = "table"
    json = "json"


def _usd(value: float | None) -> str:
    """Dollars readable at any scale: a small lake's bill is fractions of a cent."""
    if value is None:
        return "no price"
    if value == 0:
        return "0"
    if abs(value) >= 0.01:
        return f"{value:,.4f}"
    return f"{value:.3g}"


def _print_tables(report: CostReport) -> None:
    out = _out()
    out.print(Text(f"lake cost on {report.today} ({report.backend} backend"
                   + (", priced as if S3 STANDARD)" if report.backend == "local" else ")")))
    table = _table("bucket", "prefix", "class", "objects", "bytes", "billable", "USD/month", title="storage")
    for s in report.storage:
        table.add_row(_cell(s.bucket), _cell(s.prefix or "(top level)"), _cell(s.storage_class), _cell(s.objects),
                      _cell(_bytes(s.bytes)), _cell(_bytes(s.billable_bytes + s.standard_overhead_bytes)),
                      _cell(_usd(s.usd_month)))
    for role, t in report.totals("role").items():
        table.add_row(Text(f"{role} total", style="bold"), "", "", _cell(t["objects"]), _cell(_bytes(t["bytes"])),
                      _cell(_bytes(t["billable_bytes"])), _cell(_usd(t["usd_month"])))
    table.add_row(Text("total", style="bold"), "", "", _cell(sum(s.objects for s in report.storage)),
                  _cell(_bytes(sum(s.bytes for s in report.storage))),
                  _cell(_bytes(sum(s.billable_bytes + s.standard_overhead_bytes for s in report.storage))),
                  _cell(_usd(report.storage_usd_month)))
    out.print(table)
    if report.unpriced_classes:
        out.print(Text(f"no price for {', '.join(report.unpriced_classes)}: left out of the totals", style="yellow"))

    if report.compaction:
        table = _table("dt", "objects before → after", "GETs per full scan before → after", "USD per scan saved",
                       title=f"compaction (1 GET per raw object, {report.parquet_gets_per_file} per Parquet file)")
        for d in report.compaction:
            table.add_row(_cell(d.dt), _cell(f"{d.objects_before} → {d.objects_after}"),
                          _cell(f"{d.gets_before} → {d.gets_after}"), _cell(_usd(d.usd_saved_per_scan)))
        c = report.compaction
        table.add_row(Text("total", style="bold"),
                      _cell(f"{sum(d.objects_before for d in c)} → {sum(d.objects_after for d in c)}"),
                      _cell(f"{sum(d.gets_before for d in c)} → {sum(d.gets_after for d in c)}"),
                      _cell(_usd(sum(d.usd_saved_per_scan for d in c))))
        out.print(table)
    else:
        out.print(Text("compaction: no published days"))

    p = report.policy
    if p.moves:
        table = _table("dt", "to", "objects", "bytes", "kept small", "transition USD", title="tiering moves")
        for m in p.moves:
            table.add_row(_cell(m.dt), _cell(m.target), _cell(m.objects), _cell(_bytes(m.bytes)),
                          _cell(m.kept_small), _cell(_usd(m.transition_usd)))
        out.print(table)
    out.print(_kv_table("tiering policy (not applied)", [
        ("as of", p.today),
        ("USD/month now", _usd(p.monthly_now)),
        ("USD/month after", _usd(p.monthly_after)),
        ("monthly saving", _usd(p.monthly_saving)),
        ("objects to move", p.transition_requests),
        ("objects expiring", p.expiring_objects),
        ("one-time transition USD", _usd(p.transition_usd)),
        ("pays back in (months)", "-" if p.payback_months is None else f"{p.payback_months:.2f}"),
    ]))


@app.command()
def cost(ctx: typer.Context,
         prices: str | None = typer.Option(None, "--prices", help="JSON file of USD per GiB-month by storage "
                                           "class, with an optional \"requests\" section (default: "
                                           "LAKE_PRICES_FILE, else S3 us-east-1 list prices)."),
         fmt: CostFormat = typer.Option(CostFormat.table, "--format", help="Output format."),
         today: str | None = typer.Option(None, "--today", help="Plan the tiering as of this day (YYYY-MM-DD; "
                                          "default: today, UTC).")) -> None:
    """What the lake costs per month, what compaction saves in requests, what tiering would change."""
    day = parse_date(today, "--today") if today else None
    lake = context_lake(ctx)
    policy, requests = prices_for(lake.settings, prices)
    report = cost_report(lake, policy, day, request_prices=requests)
    if fmt is CostFormat.json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_tables(report)
