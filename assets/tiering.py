"""The tiering asset: what the policy moves or expires, what it saves, and on S3 the tags."""

from __future__ import annotations

from datetime import date

import dagster as dg

from assets.keys import CURATED, GROUP, TIERING
from assets.resources import LakeResource
from pipelines.tier import TieringPolicy, plan
from pipelines.tier_apply import apply_tiering


@dg.asset(key=TIERING, deps=[CURATED], group_name=GROUP, kinds={"s3"},
          description="Tiering plan by partition date: target storage class per partition, expiries, "
          "monthly storage cost now and after; applies it: lifecycle rules and object tags on S3, "
          "archive-bound days out of the catalog on both backends.")
def tiering_plan(lake: LakeResource) -> dg.MaterializeResult:
    """Plan, then apply the policy (the embedded backend has no rules or tags to write)."""
    handle = lake.open()
    policy = TieringPolicy.from_settings(handle.settings)
    p = plan(handle, policy)
    meta = {
        "partitions_moving": len(p.moves),
        "bytes_moving": sum(m.bytes for m in p.moves),
        "moves": {m.dt: m.target for m in p.moves},
        "expiries": [f"{e.role} {e.what} on {e.on}" for e in p.expiries],
        "cost_now_usd_month": round(sum(p.cost_now.values()), 4),
        "cost_after_usd_month": round(sum(p.cost_after.values()), 4),
        "saving_usd_month": p.monthly_saving,
    }
    meta.update(apply_tiering(handle, policy, date.fromisoformat(p.today)).summary())
    return dg.MaterializeResult(metadata=meta)
