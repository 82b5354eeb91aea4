"""``lake init``, ``lake doctor`` and ``lake iam-policy``: setting up a deployment safely.

Registered on :data:`pipelines.cli.app` when that module is imported. The engine is
:mod:`pipelines.bootstrap`; these commands only print what it returns.
"""

from __future__ import annotations

import json

import typer
from rich.text import Text

from pipelines import bootstrap
from pipelines.cli import UsageProblem, _cell, _out, _table, app, cli_state, open_lake
from pipelines.config import LakeSettings
from pipelines.errors import ConfigError

_OUTCOME_STYLE = {"created": "green", "updated": "yellow", "unchanged": "", "skipped": "dim"}
_STATUS_STYLE = {"pass": "green", "FAIL": "bold red", "n/a": "dim"}


def _settings(ctx: typer.Context) -> LakeSettings:
    state = cli_state(ctx)
    return open_lake(state.root, state.table).settings


@app.command()
def init(ctx: typer.Context,
         access_log_bucket: str | None = typer.Option(
             None, "--access-log-bucket",
             help="Deliver S3 server access logs of every role bucket to this existing bucket "
                  "(prefix <bucket>/)."),
         no_bucket_policy: bool = typer.Option(
             False, "--no-bucket-policy",
             help="Leave the bucket policy alone: its TLS-only statement denies every request to a "
                  "plain-HTTP emulator."),
         notifications: bool = typer.Option(
             False, "--notifications",
             help="Also send the landing bucket's ObjectCreated events to an SQS queue (with a "
                  "dead-letter queue) for the queue landing trigger.")) -> None:
    """Create the role buckets (or folders) with secure defaults, or bring them into line."""
    settings = _settings(ctx)
    report = bootstrap.init_lake(settings, access_log_bucket=access_log_bucket,
                                 bucket_policy=not no_bucket_policy, notifications=notifications)
    out = _out()
    table = _table("role", "bucket" if report.backend == "s3" else "folder", "control", "result", "detail",
                   title=f"lake init: {settings.location}")
    for c in report.changes:
        table.add_row(_cell(c.role), _cell(c.target), _cell(c.control),
                      Text(c.outcome, style=_OUTCOME_STYLE.get(c.outcome, "")), _cell(c.detail))
    out.print(table)
    for note in report.notes:
        out.print(Text(f"note: {note}"))
    counts = {o: sum(c.outcome == o for c in report.changes) for o in ("created", "updated", "unchanged")}
    out.print(Text(f"{counts['created']} created, {counts['updated']} updated, {counts['unchanged']} unchanged"
                   if report.changed else "nothing to change: every control was already in place"))
    if report.queue_url:
        # plain echo: a console would wrap the URL, and people copy it
        typer.echo(f"landing events queue: {report.queue_url}")
        typer.echo(f"to land from it, set LAKE_LANDING_QUEUE_URL={report.queue_url} and LAKE_LANDING_TRIGGER=queue")


@app.command()
def doctor(ctx: typer.Context) -> None:
    """Check the deployment's security controls bucket by bucket; exit 1 if any fails."""
    settings = _settings(ctx)
    report = bootstrap.doctor(settings)
    table = _table("role", "bucket" if report.backend == "s3" else "folder", "control", "result", "detail",
                   "fix", title=f"lake doctor: {settings.location}")
    for c in report.checks:
        table.add_row(_cell(c.role), _cell(c.target), _cell(c.control),
                      Text(c.status, style=_STATUS_STYLE.get(c.status, "")), _cell(c.detail), _cell(c.fix))
    out = _out()
    out.print(table)
    out.print(Text(report.summary()))
    if not report.passed:
        raise typer.Exit(1)


@app.command("iam-policy")
def iam_policy(ctx: typer.Context,
               account_id: str | None = typer.Option(
                   None, "--account-id", help="The 12-digit AWS account (default: the current "
                                              "credentials' account, from STS)."),
               with_init: bool = typer.Option(
                   False, "--with-init", help="Also allow what `lake init` and `lake doctor` need "
                                              "(create buckets, read and set their controls)."),
               notifications: bool | None = typer.Option(
                   None, "--notifications/--no-notifications",
                   help="Include the landing events queue's SQS permissions (default: when "
                        "LAKE_LANDING_TRIGGER=queue).")) -> None:
    """Print a least-privilege IAM policy (JSON) for the pipeline's role."""
    state = cli_state(ctx)
    lake = open_lake(state.root, state.table)
    try:
        account = (bootstrap.validate_account_id(account_id) if account_id is not None
                   else bootstrap.caller_account_id(lake.settings))
        policy = bootstrap.iam_policy(lake.settings, table=lake.spec.table, account_id=account,
                                      with_init=with_init, notifications=notifications)
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    typer.echo(json.dumps(policy, indent=2))
