"""Asset keys, in one place so assets, jobs and sensors agree."""

import dagster as dg

RAW = dg.AssetKey(["clickstream", "raw_events"])
STAGED = dg.AssetKey(["clickstream", "events_staged"])
CURATED = dg.AssetKey(["clickstream", "events"])
TIERING = dg.AssetKey(["clickstream", "tiering_plan"])

GROUP = "clickstream"
