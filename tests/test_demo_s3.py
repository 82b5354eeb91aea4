"""The demo on S3 + Glue (the moto server on 127.0.0.1), checked the way an AWS user would.

The lake is read back through clients the pipeline does not use for it: raw boto3 for Glue and
object metadata, pyarrow's own S3 filesystem for the Parquet files, and awswrangler (AWS SDK for
pandas) reading the table through the Glue catalog.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import boto3
import pyarrow.dataset as pads
import pytest
from pyarrow import fs as pafs
from typer.testing import CliRunner

from assets.cli import app
from pipelines.config import ROLES
from tests.conftest import EMULATOR_ENV, s3_settings_for

pytestmark = pytest.mark.timeout(600)

DEMO = ["demo", "--days", "3", "--events-per-day", "400", "--files-per-day", "10", "--seed", "11"]


@pytest.fixture(scope="module")
def demo_runs(moto_endpoint, tmp_path_factory):
    """The same seeded demo on the embedded backend and on the emulator."""
    tmp = tmp_path_factory.mktemp("demo_s3")
    mp = pytest.MonkeyPatch()
    mp.setenv("DAGSTER_HOME", str(tmp / "dagster_home"))
    runner = CliRunner()
    local_root = str(tmp / "local")
    local = runner.invoke(app, ["--root", local_root, *DEMO])
    assert local.exit_code == 0, local.output

    settings = s3_settings_for(moto_endpoint, tmp / "s3state")
    # the Dagster runs resolve their settings from LAKE_* variables, as in a deployment
    for name, value in {"LAKE_BACKEND": "s3", "LAKE_BUCKET_PREFIX": settings.bucket_prefix,
                        "LAKE_GLUE_DATABASE": settings.glue_database, "LAKE_S3_ENDPOINT_URL": moto_endpoint,
                        "LAKE_GLUE_ENDPOINT_URL": moto_endpoint}.items():
        mp.setenv(name, value)
    remote = runner.invoke(app, ["--root", str(tmp / "s3state"), *DEMO])
    assert remote.exit_code == 0, remote.output
    query = ["query", "--format", "json",
             "select dt, count(*) as n, count(distinct event_id) as ids from events group by dt order by dt"]
    s3_counts = runner.invoke(app, ["--root", str(tmp / "s3state"), *query])
    assert s3_counts.exit_code == 0, s3_counts.output
    mp.delenv("LAKE_BACKEND")
    local_counts = runner.invoke(app, ["--root", local_root, *query])
    assert local_counts.exit_code == 0, local_counts.output
    rows_sql = ("select event_id, cast(dt as varchar) as dt, event_name, anonymous_id, "
                "epoch_us(event_time) as t from events order by event_id")
    local_rows = runner.invoke(app, ["--root", local_root, "query", "--format", "json", rows_sql])
    assert local_rows.exit_code == 0, local_rows.output
    yield {"settings": settings, "endpoint": moto_endpoint, "remote_output": remote.output,
           "local": {r["dt"]: r["n"] for r in json.loads(local_counts.output)},
           "local_rows": [tuple(r.values()) for r in json.loads(local_rows.output)],
           "s3_query": {r["dt"]: (r["n"], r["ids"]) for r in json.loads(s3_counts.output)}}
    mp.undo()


def _clients(endpoint: str):
    session = boto3.Session(region_name="us-east-1", **{k.lower(): os.environ[k] for k in
                            ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")})
    return session, session.client("s3", endpoint_url=endpoint), session.client("glue", endpoint_url=endpoint)


def test_glue_lists_every_demo_day_at_its_published_version(demo_runs):
    settings = demo_runs["settings"]
    _, s3, glue = _clients(demo_runs["endpoint"])
    parts = [p for page in glue.get_paginator("get_partitions").paginate(
        DatabaseName=settings.glue_database, TableName="events") for p in page["Partitions"]]
    assert sorted(p["Values"][0] for p in parts) == sorted(demo_runs["local"])
    curated = settings.bucket("curated")
    for p in parts:
        location = p["StorageDescriptor"]["Location"]
        assert location.startswith(f"s3://{curated}/clickstream/events/dt={p['Values'][0]}/v-")
        assert location.endswith("/")
        key = location.removeprefix(f"s3://{curated}/")
        manifest = json.loads(s3.get_object(Bucket=curated, Key=key + "_manifest.json")["Body"].read())
        # the location is exactly the prefix of the version the manifest describes
        assert key == f"clickstream/events/dt={manifest['dt']}/{manifest['version']}/"
        assert all(o["key"].startswith(key) for o in manifest["outputs"])


def test_each_registered_location_holds_the_embedded_runs_counts(demo_runs):
    settings = demo_runs["settings"]
    _, _, glue = _clients(demo_runs["endpoint"])
    endpoint = demo_runs["endpoint"]
    s3fs = pafs.S3FileSystem(access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                             session_token=os.environ["AWS_SESSION_TOKEN"], region="us-east-1",
                             endpoint_override=endpoint.removeprefix("http://"), scheme="http")
    got = {}
    for page in glue.get_paginator("get_partitions").paginate(DatabaseName=settings.glue_database, TableName="events"):
        for p in page["Partitions"]:
            path = p["StorageDescriptor"]["Location"].removeprefix("s3://")
            # pyarrow skips files starting with "_" or ".", as Athena does: the manifest and audit
            ds = pads.dataset(path, filesystem=s3fs, format="parquet")
            got[p["Values"][0]] = ds.count_rows()
    assert got == demo_runs["local"]
    assert demo_runs["s3_query"] == {d: (n, n) for d, n in demo_runs["local"].items()}


def test_every_object_in_every_bucket_is_encrypted(demo_runs):
    settings = demo_runs["settings"]
    _, s3, _ = _clients(demo_runs["endpoint"])
    seen = Counter()
    for role in ROLES:
        bucket = settings.bucket(role)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", ()):
                head = s3.head_object(Bucket=bucket, Key=o["Key"])
                assert head.get("ServerSideEncryption") == "AES256", (bucket, o["Key"])
                seen[role] += 1
    assert all(seen[r] > 0 for r in ROLES), seen


# awswrangler's own use of pandas, not ours
@pytest.mark.filterwarnings("ignore:Series.values returning an ndarray")
def test_awswrangler_reads_the_table_through_glue_and_gets_the_same_rows(demo_runs):
    wr = pytest.importorskip("awswrangler")
    settings = demo_runs["settings"]
    session, _, _ = _clients(demo_runs["endpoint"])
    wr.config.s3_endpoint_url = demo_runs["endpoint"]
    wr.config.glue_endpoint_url = demo_runs["endpoint"]
    try:
        # Athena, Spark, Trino and pyarrow skip the version's "_manifest.json" and "_audit.json"
        # as hidden files; awswrangler reads every object under a location unless told
        df = wr.s3.read_parquet_table(table="events", database=settings.glue_database,
                                      boto3_session=session, filename_suffix=".parquet")
    finally:
        wr.config.reset()
    per_day = df.groupby(df["dt"].astype(str))["event_id"].agg(["count", "nunique"])
    assert {d: int(r["count"]) for d, r in per_day.iterrows()} == demo_runs["local"]
    assert (per_day["count"] == per_day["nunique"]).all()
    # row for row: the same events, days, names, users and times as the embedded run
    micros = df["event_time"].dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64")
    def py(series) -> list:
        return [None if missing else v for v, missing in zip(series.astype(object), series.isna(), strict=True)]

    got = sorted(zip(py(df["event_id"]), py(df["dt"].astype(str)), py(df["event_name"]), py(df["anonymous_id"]),
                     [int(v) for v in micros], strict=True))
    assert got == [tuple(r) for r in demo_runs["local_rows"]]


def test_lake_demo_s3_starts_its_own_emulator_and_prints_the_glue_partitions(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for k in [k for k in os.environ if k.startswith("LAKE_")]:
        monkeypatch.delenv(k)
    before = {k: os.environ.get(k) for k in EMULATOR_ENV}
    out = CliRunner().invoke(app, ["--root", str(tmp_path / "state"), "demo", "--s3", "--days", "2",
                                   "--events-per-day", "200", "--files-per-day", "4"])
    assert out.exit_code == 0, out.output
    # --s3 adds the older days (45, 120, 400 back); the one over a year old is archived (GLACIER)
    assert "LAKE_TIER_TRANSITIONS=30:STANDARD_IA,90:GLACIER_IR,365:GLACIER" in out.output
    assert "Glue clickstream.events: 4 partitions" in out.output
    assert out.output.count("s3://clickstream-lake-curated/clickstream/events/dt=") == 4
    assert "archived (GLACIER)" in out.output
    # the emulator's variables do not outlive the command
    assert {k: os.environ.get(k) for k in EMULATOR_ENV} == before
    assert "LAKE_BACKEND" not in os.environ


def test_lake_query_reads_a_partition_another_tool_registered_by_location(demo_runs, tmp_path):
    """A Glue partition carrying only a location (no lake parameters) is read like Athena would."""
    from pipelines.lake import Lake
    from pipelines.query import query

    settings = demo_runs["settings"]
    _, _, glue = _clients(demo_runs["endpoint"])
    lake = Lake.open(settings)
    day = sorted(demo_runs["local"])[0]
    part = glue.get_partition(DatabaseName=settings.glue_database, TableName="events", PartitionValues=[day])["Partition"]
    bare = {k: v for k, v in part["Parameters"].items() if not k.startswith("lake.")}
    glue.update_partition(DatabaseName=settings.glue_database, TableName="events", PartitionValueList=[day],
                          PartitionInput={"Values": [day], "StorageDescriptor": part["StorageDescriptor"],
                                          "Parameters": bare})
    try:
        assert lake.catalog.get_partition("events", day).files == ()
        _, rows = query(lake, f"select count(*) from events where dt = DATE '{day}'")
        assert rows == [(demo_runs["local"][day],)]
    finally:
        glue.update_partition(DatabaseName=settings.glue_database, TableName="events", PartitionValueList=[day],
                              PartitionInput={"Values": [day], "StorageDescriptor": part["StorageDescriptor"],
                                              "Parameters": part["Parameters"]})
