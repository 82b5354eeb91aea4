"""The tiering asset: what the policy moves or expires, and what it saves."""

from __future__ import annotations

import dagster as dg

from assets.keys import CURATED, GROUP, TIERING
from assets.resources import LakeResource
from pipelines.tier import TieringPolicy, plan


@dg.asset(key=TIERING, deps=[CURATED], group_name=GROUP, kinds={"s3"},
          description="Tiering plan by partition date: target storage class per partition, expiries, "
          "monthly storage cost now and after.")
def tiering_plan(lake: LakeResource) -> dg.MaterializeResult:
    """Compute the plan (on S3 this also applies tags; the embedded backend only plans)."""
    p = plan(lake.open(), TieringPolicy())
    return dg.MaterializeResult(metadata={
        "partitions_moving": len(p.moves),
        "bytes_moving": sum(m.bytes for m in p.moves),
        "moves": {m.dt: m.target for m in p.moves},
        "expiries": [f"{e.role} {e.what} on {e.on}" for e in p.expiries],
        "cost_now_usd_month": round(sum(p.cost_now.values()), 4),
        "cost_after_usd_month": round(sum(p.cost_after.values()), 4),
        "saving_usd_month": p.monthly_saving,
    })
