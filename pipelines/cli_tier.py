"""``lake tier plan`` and ``lake tier apply``: storage tiering on the command line.

Registered on :data:`pipelines.cli.app` when that module is imported. ``lake tier --plan``
(the older spelling) still prints the plan.
"""

from __future__ import annotations

import typer
from rich.text import Text

from pipelines.cli import UsageProblem, _bytes, _cell, _out, _table, app, context_lake
from pipelines.lifecycle import LifecycleReport, Rule, apply_lifecycle, canonical
from pipelines.tier import TieringPolicy
from pipelines.tier import plan as tier_plan
from pipelines.tier_apply import TieringRun, apply_tiering

tier_app = typer.Typer(help="Storage tiering: the plan of moves, expiries and monthly cost; "
                            "the lifecycle rules on S3.", invoke_without_command=True)
app.add_typer(tier_app, name="tier")


@tier_app.callback()
def tier(ctx: typer.Context,
         plan: bool = typer.Option(False, "--plan", help="Show what the tiering policy would move and expire "
                                                          "(same as `lake tier plan`).")) -> None:
    """Storage tiering: `lake tier plan` shows the plan, `lake tier apply` writes the S3 lifecycle rules."""
    if ctx.invoked_subcommand is not None:
        if plan:
            raise UsageProblem(f"--plan is `lake tier plan`: it does not go with `lake tier {ctx.invoked_subcommand}`")
        return
    if not plan:
        raise UsageProblem("say what to do: `lake tier plan` (or `lake tier --plan`) shows the plan, "
                           "`lake tier apply` writes the lifecycle rules (S3 backend)")
    _print_plan(ctx)


@tier_app.command("plan")
def plan_command(ctx: typer.Context) -> None:
    """Show what the tiering policy would move and expire, and the monthly cost before and after."""
    _print_plan(ctx)


@tier_app.command("apply")
def apply_command(ctx: typer.Context,
                  dry_run: bool = typer.Option(False, "--dry-run",
                                               help="Show what would change; write nothing.")) -> None:
    """Write the policy's lifecycle rules to each bucket (rules the project does not own stay),
    then tag objects by their partition's date; days bound for GLACIER / DEEP_ARCHIVE leave
    the catalog first."""
    lake = context_lake(ctx, must_exist=False)
    if lake.settings.backend != "s3":
        apply_lifecycle(lake)  # the embedded backend's clear "no lifecycle here" error
    run = apply_tiering(lake, TieringPolicy.from_settings(lake.settings), dry_run=dry_run)
    _print_lifecycle(run.lifecycle)
    _print_tags(run, dry_run)


def _print_tags(run: TieringRun, dry_run: bool) -> None:
    tags = run.tags
    table = _table("dt", "target", "tagged", "unchanged", "kept small", "raw compacted", "archived",
                   title="object tags" + (" (dry run: nothing written)" if dry_run else ""))
    for p in tags.partitions:
        if p.tagged or p.raw_compacted or p.archived or p.target != "STANDARD":
            table.add_row(_cell(p.dt), _cell(p.target), _cell(p.tagged), _cell(p.unchanged),
                          _cell(p.kept_small), _cell(p.raw_compacted), _cell(p.archived or ""))
    out = _out()
    out.print(table)
    t = tags.totals
    out.print(Text(f"{'would tag' if dry_run else 'tagged'} {t['tagged']} curated objects and "
                   f"{t['raw_compacted']} raw objects ({t['unchanged']} unchanged, {t['kept_small']} under "
                   f"the minimum billable size); {tags.requests} tag requests"))
    if tags.archived:
        out.print(Text(f"archived (out of the catalog, restore with `lake restore --date`): {', '.join(tags.archived)}"))
    if run.restores_expired:
        out.print(Text(f"restores run out, archived again: {', '.join(run.restores_expired)}"))


def _print_plan(ctx: typer.Context) -> None:
    lake = context_lake(ctx)
    p = tier_plan(lake, TieringPolicy.from_settings(lake.settings))
    out = _out()
    out.print(Text(f"tiering plan for {p.today}"))
    if p.moves:
        table = _table("dt", "objects", "bytes", "to", "kept small", title="moves")
        for m in p.moves:
            table.add_row(_cell(m.dt), _cell(m.objects), _cell(_bytes(m.bytes)), _cell(m.target), _cell(m.kept_small))
        out.print(table)
    else:
        out.print(Text("moves: none"))
    if p.expiries:
        table = _table("role", "what", "objects", "bytes", "expires on", title="expiries")
        for e in p.expiries:
            table.add_row(_cell(e.role), _cell(e.what), _cell(e.objects), _cell(_bytes(e.bytes)), _cell(e.on))
        out.print(table)
    else:
        out.print(Text("expiries: none"))
    table = _table("storage class", "now USD/month", "after USD/month", title="cost")
    for cls in sorted(set(p.cost_now) | set(p.cost_after)):
        table.add_row(_cell(cls), _cell(f"{p.cost_now.get(cls, 0.0):.6f}"), _cell(f"{p.cost_after.get(cls, 0.0):.6f}"))
    table.add_row("total", _cell(f"{sum(p.cost_now.values()):.6f}"), _cell(f"{sum(p.cost_after.values()):.6f}"))
    out.print(table)
    out.print(Text(f"monthly saving: {p.monthly_saving:.6f} USD"))


def _what(rule: Rule) -> str:
    """A rule's filter and actions in a few words, for the table."""
    c = canonical(rule)
    f = c["Filter"]
    parts = [f"prefix {f['prefix']!r}" if f["prefix"] else "whole bucket"]
    parts += [f"{k}={v}" for k, v in f["tags"]]
    if f["gt"] is not None:
        parts.append(f"size > {f['gt']}")
    if f["lt"] is not None:
        parts.append(f"size < {f['lt']}")
    acts = []
    for t in c.get("Transitions", []):
        acts.append(f"to {t['StorageClass']} after {t.get('Days', t.get('Date'))} d")
    exp = c.get("Expiration", {})
    if "Days" in exp:
        acts.append(f"expire after {exp['Days']} d")
    if exp.get("ExpiredObjectDeleteMarker"):
        acts.append("remove expired delete markers")
    if "NoncurrentVersionExpiration" in c:
        acts.append(f"superseded versions after {c['NoncurrentVersionExpiration'].get('NoncurrentDays')} d")
    if "AbortIncompleteMultipartUpload" in c:
        acts.append(f"abort uploads after {c['AbortIncompleteMultipartUpload']['DaysAfterInitiation']} d")
    return f"{', '.join(parts)}: {'; '.join(acts) or 'no action'}"


def _print_lifecycle(report: LifecycleReport) -> None:
    out = _out()
    for plan in report.buckets.values():
        table = _table("rule", "change", "what", title=f"{plan.role}: s3://{plan.bucket}")
        rows = [*((r, "add") for r in plan.to_add), *((new, "change") for _, new in plan.to_change),
                *((r, "remove") for r in plan.to_remove), *((r, "unchanged") for r in plan.unchanged),
                *((r, "kept (not ours)") for r in plan.foreign),
                *((r, "kept (other table)") for r in plan.other_tables)]
        for rule, change in rows:
            table.add_row(_cell(rule.get("ID") or "(no id)"), _cell(change), _cell(_what(rule)))
        out.print(table)
        for warning in plan.warnings:
            out.print(Text(f"warning: {plan.bucket}: {warning}", style="yellow"))
    written = f" (wrote {', '.join(report.written)})" if report.written else ""
    out.print(Text(("dry run: " if report.dry_run else "") + report.summary() + written))
