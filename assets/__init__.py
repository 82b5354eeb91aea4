"""The Dagster layer: thin assets, checks, jobs, schedules and sensors over the engine."""

import warnings

from dagster_shared.utils.warnings import BetaWarning

# BackfillPolicy is marked beta in Dagster 1.13; we rely on it deliberately (several days per
# backfill run) and pin the release line, so its notice should not clutter every load.
warnings.filterwarnings("ignore", category=BetaWarning, message=r"Parameter `backfill_policy`")
