"""Day status and the completeness watermark, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.land import land_inbox
from pipelines.status import closes_at, day_status, watermark
from pipelines.wap import process_day
from tests.conftest import event, ndjson


def _run(lake, *args: str):
    return CliRunner().invoke(app, ["--root", str(lake.settings.root_path), *args])


def test_status_shows_the_completeness_watermark(lake, tmp_path):
    """Closed, published days holding all their raw are complete; the watermark stops at the
    first that is not (here: late data not re-compacted yet), and today is still open."""
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    for n, d in enumerate(days):
        lake.storage.put("landing", f"web/{d}.ndjson.gz", ndjson([event(n * 100 + i, day=d) for i in range(5)]))
    land_inbox(lake)
    for d in days:
        process_day(lake, d)
    now = datetime.now(UTC).timestamp()
    # yesterday closes at 02:00 UTC today (the default 2 h lateness allowance)
    assert watermark(day_status(lake, now=now)) == (days[-1] if now >= _closes(days[-1], lake) else days[1])
    lake.storage.put("landing", "web/late.ndjson.gz", ndjson([event(900, day=days[1])]))
    land_inbox(lake)
    status = {d.dt: d for d in day_status(lake, now=now)}
    assert status[days[1]].late_keys and not status[days[1]].complete
    assert watermark(list(status.values())) == days[0]
    # an hour after yesterday closed everything but the late day is complete; before, it is open
    assert not {d.dt: d for d in day_status(lake, now=_closes(days[-1], lake) - 1)}[days[-1]].complete
    assert {d.dt: d for d in day_status(lake, now=_closes(days[-1], lake) + 1)}[days[-1]].complete
    out = _run(lake, "status")
    assert out.exit_code == 0, out.output
    assert f"complete through {days[0]}" in out.output and "late data" in out.output


def _closes(dt: str, lake) -> float:
    return closes_at(dt, lake.settings.lateness_seconds)
