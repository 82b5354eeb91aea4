"""The demo on the emulator with dates spanning more than a year, then tiering checked from outside.

After ``lake demo --history`` (one day each 45, 120 and 400 days back, policy
``30:STANDARD_IA,90:GLACIER_IR,365:GLACIER``): every curated object carries the tier tag its
partition's age calls for, the lifecycle configuration holds the project's rules next to a foreign
rule that was there before, unchanged, re-applying writes nothing, no rule can move an object under
128 KiB, and the day bound for GLACIER is out of Glue and listed as archived.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest
from typer.testing import CliRunner

from assets.cli import DEMO_TRANSITIONS, app
from assets.demo import HISTORY_AGES
from pipelines.config import LakeSettings
from pipelines.lake import Lake
from pipelines.lifecycle import RULE_ID_PREFIX, apply_lifecycle, check_rules
from pipelines.tier import MIN_TRANSITION_BYTES, TIER_TAG, TieringPolicy
from tests.conftest import s3_settings_for

pytestmark = pytest.mark.timeout(600)

FOREIGN = {"ID": "team-logs-expire", "Status": "Enabled", "Filter": {"Prefix": "team-logs/"},
           "Expiration": {"Days": 3}}


@pytest.fixture(scope="module")
def demo(moto_endpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo_tiering")
    settings = s3_settings_for(moto_endpoint, tmp / "state")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.put_bucket_lifecycle_configuration(Bucket=settings.bucket("curated"),
                                          LifecycleConfiguration={"Rules": [FOREIGN]})
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(tmp / "dagster_home"))
    mp.delenv("LAKE_TIER_TRANSITIONS", raising=False)
    for name, value in settings.to_env().items():
        mp.setenv(name, value)
    result = CliRunner().invoke(app, ["--root", str(tmp / "state"), "demo", "--days", "1", "--events-per-day",
                                      "300", "--files-per-day", "4", "--history"])
    assert result.exit_code == 0, result.output
    mp.setenv("LAKE_TIER_TRANSITIONS", DEMO_TRANSITIONS)  # what the demo's runs used
    yield {"settings": LakeSettings.from_env(root=str(tmp / "state")), "s3": s3, "output": result.output,
           "glue": boto3.client("glue", endpoint_url=moto_endpoint, region_name="us-east-1")}
    mp.undo()


def _tags(s3, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def test_every_curated_object_carries_the_tag_its_partition_age_calls_for(demo):
    settings, s3 = demo["settings"], demo["s3"]
    lake = Lake.open(settings)
    policy = TieringPolicy.from_settings(settings)
    today = datetime.now(UTC).date()
    bucket = settings.bucket("curated")
    seen = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="clickstream/events/dt="):
        for o in page.get("Contents", ()):
            if not o["Key"].endswith(".parquet"):
                continue
            dt = date.fromisoformat(o["Key"].split("dt=", 1)[1][:10])
            created = o["LastModified"].astimezone(UTC).date()
            expected = (policy.tier_for_object(dt, created, today) if o["Size"] >= MIN_TRANSITION_BYTES
                        else "STANDARD")
            assert _tags(s3, bucket, o["Key"]).get(TIER_TAG) == expected, o["Key"]
            seen[dt.isoformat()] = expected
    ages = {(today - date.fromisoformat(d)).days: tag for d, tag in seen.items()}
    # the scenario the checks rest on: more than a year of dates, every history file big enough
    assert set(HISTORY_AGES) <= set(ages) and max(ages) > 365
    assert ages[400] == "GLACIER" and ages[120] == "GLACIER_IR"
    # written today at age 45: STANDARD_IA would be left for GLACIER_IR within 30 days (a penalty)
    assert ages[45] == "STANDARD"
    assert all(tag == "STANDARD" for age, tag in ages.items() if age < 30)
    assert lake.catalog.list_partitions(lake.spec.table)  # the recent days stay published


def test_the_glacier_day_left_the_catalog_first_and_is_listed_as_archived(demo):
    settings = demo["settings"]
    archived_day = (datetime.now(UTC).date() - timedelta(days=400)).isoformat()
    glue_days = {p["Values"][0] for p in demo["glue"].get_partitions(
        DatabaseName=settings.glue_database, TableName="events")["Partitions"]}
    assert archived_day not in glue_days and len(glue_days) == 3  # the recent day, ages 45 and 120
    listed = CliRunner().invoke(app, ["--root", settings.root, "archived"])
    assert listed.exit_code == 0, listed.output
    assert archived_day in listed.output and "GLACIER" in listed.output
    rows = CliRunner().invoke(app, ["--root", settings.root, "query", "--format", "json",
                                    "select distinct cast(dt as varchar) as dt from events"])
    assert rows.exit_code == 0, rows.output
    assert archived_day not in {r["dt"] for r in json.loads(rows.output)}


def test_lifecycle_keeps_the_foreign_rule_and_reapplying_writes_nothing(demo):
    settings, s3 = demo["settings"], demo["s3"]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=settings.bucket("curated"))["Rules"]
    assert [r for r in rules if not r["ID"].startswith(RULE_ID_PREFIX)] == [FOREIGN]
    ids = {r["ID"] for r in rules}
    assert {f"{RULE_ID_PREFIX}clickstream/events:curated-tier-{c}" for c in ("STANDARD_IA", "GLACIER_IR", "GLACIER")} <= ids
    for role in ("landing", "raw", "curated", "quarantine"):
        read_back = s3.get_bucket_lifecycle_configuration(Bucket=settings.bucket(role))["Rules"]
        check_rules(read_back)  # raises on a rule that could move an object under 128 KiB
        for rule in read_back:
            for t in rule.get("Transitions", ()):
                if t["StorageClass"] in ("STANDARD_IA", "GLACIER_IR"):
                    sizes = rule["Filter"]["And"]
                    assert sizes["ObjectSizeGreaterThan"] >= MIN_TRANSITION_BYTES - 1, rule["ID"]
    lake = Lake.open(settings)
    puts = []
    lake.storage.client.meta.events.register("before-call.s3.PutBucketLifecycleConfiguration",
                                             lambda **kw: puts.append(kw))
    report = apply_lifecycle(lake)
    assert not report.changed and report.written == [] and puts == []
