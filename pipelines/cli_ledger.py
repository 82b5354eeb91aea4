"""``lake ledger``: every landing object version and its state (seen, landed, quarantined,
compacted in version V, raw expired).

Registered on :data:`pipelines.cli.app` when that module is imported.
"""

from __future__ import annotations

import json
from collections import Counter
from enum import StrEnum

import typer
from rich.text import Text

from pipelines.cli import _cell, _out, _table, app, context_lake
from pipelines.ledger import COMPACTED, LANDED, QUARANTINED, RAW_EXPIRED, SEEN, LedgerEntry, ledger

LedgerState = StrEnum("LedgerState", {s.replace("-", "_"): s for s in (SEEN, LANDED, QUARANTINED, COMPACTED,
                                                                         RAW_EXPIRED)})
_STYLE = {SEEN: "yellow", LANDED: "cyan", QUARANTINED: "red", COMPACTED: "green", RAW_EXPIRED: "dim"}


class LedgerFormat(StrEnum):
    table = "table"
    json = "json"


def _per_day(values: dict[str, object]) -> str:
    return ", ".join(f"{dt}: {v if v is not None else 'waiting'}" for dt, v in values.items()) or "-"


def _row(e: LedgerEntry) -> list[Text]:
    quarantined = "-" if e.quarantined is None else str(e.quarantined)
    if e.file_reason:
        quarantined = f"whole file ({e.file_reason})"
    elif e.reasons:
        quarantined += " (" + ", ".join(f"{r}: {n}" for r, n in sorted(e.reasons.items())) + ")"
    state = e.state + "".join(f" +{s}" for s in e.states if s != e.state)
    return [_cell(e.key), _cell(e.etag[:12]), Text(state, style=_STYLE.get(e.state, "")),
            _cell("-" if e.lines is None else e.lines), _cell("-" if e.landed is None else e.landed),
            _cell(quarantined), _cell(_per_day(e.days)), _cell(_per_day(e.versions)),
            _cell("yes" if e.in_landing else "no")]


@app.command("ledger")
def ledger_cmd(ctx: typer.Context,
               state: LedgerState | None = typer.Option(None, "--state", help="Only objects in this state."),
               prefix: str = typer.Option("", "--prefix", help="Only landing keys under this prefix."),
               fmt: LedgerFormat = typer.Option(LedgerFormat.table, "--format", help="Output format.")) -> None:
    """Every landing object version (key + ETag) and its state: seen, landed (events per day),
    quarantined (lines, reasons, or the whole file), compacted (the version per day), raw-expired."""
    lake = context_lake(ctx)
    entries = ledger(lake, state=state.value if state else None, prefix=prefix)
    if fmt is LedgerFormat.json:
        typer.echo(json.dumps([e.to_dict() for e in entries], indent=2, ensure_ascii=False))
        return
    out = _out()
    table = _table("landing key", "etag", "state", "lines", "landed", "quarantined", "events per day",
                   "version per day", "in landing", title="ledger")
    for e in entries:
        table.add_row(*_row(e))
    out.print(table)
    counts = Counter(e.state for e in entries)
    out.print(f"{len(entries)} object versions: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                                    or "none"))
