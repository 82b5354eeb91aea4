"""The landing asset: inbox objects -> raw dt/hour objects, bad lines -> quarantine."""

import time

import dagster as dg

from assets.errors import RETRY, engine_errors
from assets.keys import GROUP, RAW
from assets.resources import LakeResource
from pipelines.land import land_inbox


class LandConfig(dg.Config):
    """What a landing run lands. Sensors name the objects they saw; a run launched by hand
    (no ``objects``) lands everything pending. ``keys`` would shadow a
    pydantic method, hence ``objects``."""

    objects: list[str] = []


def land_run_config(keys: list[str]) -> dg.RunConfig:
    """Run config of a landing run for exactly ``keys``."""
    return dg.RunConfig(ops={RAW.to_python_identifier(): LandConfig(objects=keys)})


@dg.asset(
    key=RAW,
    group_name=GROUP,
    kinds={"python", "json"},
    retry_policy=RETRY,
    description="Landing inbox parsed, validated and bucketed into raw dt=/hour= objects by event time; "
    "bad lines quarantined with a reason. Reports which days it touched.",
    check_specs=[dg.AssetCheckSpec("landing_conservation", asset=RAW,
                                   description="lines read = events landed + lines quarantined, per file")],
)
def raw_events(context: dg.AssetExecutionContext, config: LandConfig, lake: LakeResource):
    """Land the run's landing objects (every one not landed yet, unless the run names them)."""
    started = time.monotonic()
    with engine_errors():
        report = land_inbox(lake.open(), keys=config.objects or None)
    unbalanced = [f.source_key for f in report.files if not f.balanced]
    context.log.info("landed %d files, touched days %s", len(report.files), list(report.touched))
    yield dg.MaterializeResult(metadata={
        "files": len(report.files),
        "requested_keys": len(config.objects),
        "already_landed": report.already_landed,
        "lines": report.total("lines"),
        "landed": report.total("landed"),
        "quarantined": report.total("quarantined"),
        "quarantined_files": report.quarantined_files,
        "reasons": report.reasons,
        "touched_days": sorted(report.touched),
        "rows_by_day": report.touched,
        "bytes": report.total("size"),
        "landing_tag_failures": report.tag_failures,
        "seconds": round(time.monotonic() - started, 3),
    })
    yield dg.AssetCheckResult(check_name="landing_conservation", passed=not unbalanced,
                              metadata={"files": len(report.files), "unbalanced": unbalanced})
