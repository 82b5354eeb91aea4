"""The ``lake`` command: the engine's commands plus the ones that go through Dagster.

``lake demo`` runs the Dagster jobs of :mod:`assets.definitions` in-process; ``lake ui`` starts
the Dagster webserver and daemon on the same definitions and instance.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from assets.instance import dagster_home
from pipelines.cli import UsageProblem, _out, app, context_lake
from pipelines.emulator import patched_environ

REPO = Path(__file__).resolve().parent.parent

__all__ = ["app"]


@app.command()
def demo(ctx: typer.Context,
         days: int = typer.Option(7, min=1, max=366, help="Days of events, ending yesterday (UTC)."),
         events_per_day: int = typer.Option(2000, min=10, help="Distinct events per day."),
         files_per_day: int = typer.Option(40, min=2, help="Landing files per day."),
         seed: int = typer.Option(7, help="Seed of the generator: same seed, same data."),
         s3: bool = typer.Option(False, "--s3", help="Run against an S3 + Glue emulator started on 127.0.0.1."),
         serve: bool = typer.Option(False, "--serve", help="With --s3: keep the emulator up until Ctrl-C."),
         port: int = typer.Option(0, "--port", min=0, max=65535,
                                  help="With --s3: the emulator's port on 127.0.0.1 (0: any free one)."),
         history: bool | None = typer.Option(None, "--history/--no-history",
                                             help="Add one older day each 45, 120 and 400 days back, for "
                                             "tiering to act on (default: on with --s3).")) -> None:
    """Generate demo events, then land, compact, audit, publish and tier through Dagster."""
    if not s3:
        if serve or port:
            raise UsageProblem("--serve and --port need --s3")
        _demo(ctx, days, events_per_day, files_per_day, seed, bool(history))
        return
    from pipelines.emulator import emulator

    with emulator(port) as env:
        lake = _demo(ctx, days, events_per_day, files_per_day, seed, history is not False)
        _print_glue_partitions(lake)
        if serve:
            out = _out()
            out.print("\nthe emulator is up; in another shell:", markup=False)
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "LAKE_BACKEND",
                      "LAKE_S3_ENDPOINT_URL", "LAKE_GLUE_ENDPOINT_URL", "LAKE_SQS_ENDPOINT_URL"):
                out.print(f"  export {k}={env[k]}", markup=False, highlight=False)
            out.print('  uv run lake query "select dt, count(*) from events group by dt order by dt"\n'
                      "Ctrl-C stops it (its contents live in memory only).", markup=False, highlight=False)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass


def _print_glue_partitions(lake) -> None:
    """What an Athena user would see: the Glue partitions and their locations."""
    from pipelines.glue import GlueCatalog

    catalog = GlueCatalog.from_settings(lake.settings)
    parts = catalog.list_partitions(lake.spec.table)
    table = Table(title=f"Glue {lake.settings.glue_database}.{lake.spec.table}: {len(parts)} partitions",
                  title_justify="left")
    for col in ("dt", "rows", "location"):
        table.add_column(col, no_wrap=True)
    for p in parts:
        table.add_row(p.dt, str(p.rows), p.location)
    _out().print(table)


#: the demo's tiering policy with ``--history`` (unless LAKE_TIER_TRANSITIONS says otherwise):
#: the default's two instant tiers, and an archive after a year to show a day leaving the catalog
DEMO_TRANSITIONS = "30:STANDARD_IA,90:GLACIER_IR,365:GLACIER"


def _demo(ctx: typer.Context, days: int, events_per_day: int, files_per_day: int, seed: int,
          history: bool = False):
    out = _out()
    policy_env = {}
    if history and not os.environ.get("LAKE_TIER_TRANSITIONS"):
        policy_env = {"LAKE_TIER_TRANSITIONS": DEMO_TRANSITIONS}  # for the demo's runs only
        out.print(f"tiering policy for the demo: LAKE_TIER_TRANSITIONS={DEMO_TRANSITIONS}", markup=False)
    with patched_environ(policy_env):
        return _demo_run(ctx, out, days, events_per_day, files_per_day, seed, history)


def _demo_run(ctx: typer.Context, out, days: int, events_per_day: int, files_per_day: int, seed: int,
              history: bool):
    from assets.demo import run_demo  # imports Dagster: only for this command
    from pipelines.bootstrap import init_lake

    lake = context_lake(ctx, must_exist=False)
    if lake.settings.backend == "s3" and lake.settings.s3_endpoint_url:
        # the emulator (or MinIO) starts empty; its plain HTTP would (rightly) fail the TLS-only policy
        for note in init_lake(lake.settings, bucket_policy=False).notes:
            out.print(f"lake init: {note}", markup=False)
    result = run_demo(lake, days=days, events_per_day=events_per_day, files_per_day=files_per_day,
                      seed=seed, history=history, log=lambda m: out.print(m, markup=False, highlight=False))
    table = Table(title=f"{lake.spec.qualified_name} at {lake.settings.location}", title_justify="left")
    for col in ("dt", "rows", "duplicates dropped", "quarantined (arrived that day)", "raw files",
                "published version"):
        table.add_column(col, no_wrap=True)
    q = result.quarantined_by_arrival
    for d in result.days:
        table.add_row(d.dt, str(d.published_rows or 0), str(d.duplicates or 0), str(q.get(d.dt, 0)),
                      str(d.raw_objects), d.published_version or d.archive or "-")
    out.print(table)
    t = result.landing
    out.print(f"landing: {t['lines']} lines read = {t['landed']} landed + {t['quarantined']} quarantined; "
              f"{t['quarantined_files']} unreadable file(s) kept whole", markup=False)
    out.print("quarantine reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(result.quarantine_reasons.items())),
              markup=False)
    if lake.settings.backend == "local":
        out.print("next: `uv run lake query \"select dt, count(*) from events group by dt order by dt\"`, "
                  "`uv run lake status`, `uv run lake ui`", markup=False)
    return lake


@app.command()
def ui(host: str = typer.Option("127.0.0.1", help="Address the webserver listens on."),
       port: int = typer.Option(3000, help="Port of the webserver.")) -> None:
    """Start the Dagster UI and daemon (``dagster dev``) on this project's definitions."""
    home = dagster_home()
    # `dagster dev` announces that `dg dev` supersedes it; this project has no dg layout, so
    # that notice is not actionable here
    warnings = "ignore:Function `dev_command` is superseded"
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), warnings]))}
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(REPO / "workspace.yaml"),
           "-h", host, "-p", str(port)]
    # Run from DAGSTER_HOME: started in the repo, Dagster warns that the repo's dagster.yaml is
    # not the instance's (it is the template copied into DAGSTER_HOME).
    raise typer.Exit(subprocess.call(cmd, env=env, cwd=home))


if __name__ == "__main__":  # pragma: no cover
    app()
