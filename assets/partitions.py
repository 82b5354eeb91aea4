"""Partitions of the curated table: one per UTC day."""

import dagster as dg

#: the first day the table can hold; backfills reach back to here
FIRST_DAY = "2024-01-01"

daily = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")
