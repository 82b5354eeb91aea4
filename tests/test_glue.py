"""The Glue catalog against a real moto server over HTTP: the table Athena sees, batched partition
writes, compare-and-set, schema evolution and concurrent processes.

Nothing in boto3 is patched. Calls are observed with botocore's event hooks; where a test needs a
concurrent writer it makes a real call from a second client at the moment the hook fires, and the
two fault-injection tests rewrite one batch request and its response the way Glue reports a
per-entry failure.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import boto3
import pytest

from pipelines.catalog import ConcurrentPublishError, Partition
from pipelines.errors import ConfigError, NotFoundError, SchemaError, TerminalError
from pipelines.glue import GlueCatalog
from pipelines.schema import TableSpec, load_spec, parse_spec, schema_path
from tests.conftest import s3_settings_for
from tests.helpers.catalog_publisher import expected_version, glue_env, partition_dt, run_workers

pytestmark = pytest.mark.timeout(120)

LOCATION = "s3://lake-curated/clickstream/events/"
V1, V2, V3 = "v-" + "1" * 16, "v-" + "2" * 16, "v-" + "3" * 16
SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"


def _part(dt: str, version: str, rows: int = 1) -> Partition:
    loc = f"{LOCATION}dt={dt}/{version}/"
    return Partition("events", dt, version, loc, (loc + "part-00000.parquet",), rows, time.time())


@pytest.fixture
def settings(moto_endpoint: str, tmp_path: Path):
    return s3_settings_for(moto_endpoint, tmp_path / "lake")


@pytest.fixture
def raw(moto_endpoint: str):
    """A plain boto3 Glue client: what Athena, a crawler or another tool would see and do."""
    return boto3.client("glue", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def catalog(settings) -> GlueCatalog:
    glue = GlueCatalog.from_settings(settings)
    glue.ensure_table(load_spec(), LOCATION)
    return glue


def _calls(catalog: GlueCatalog) -> Counter:
    """Counts of the Glue operations ``catalog``'s client makes from now on."""
    seen: Counter = Counter()
    catalog.client.meta.events.register("before-call.glue", lambda model, **_: seen.update([model.name]))
    return seen


def _table(raw, catalog: GlueCatalog) -> dict:
    return raw.get_table(DatabaseName=catalog.database, Name="events")["Table"]


def _raw_partition(raw, catalog: GlueCatalog, dt: str) -> dict:
    return raw.get_partition(DatabaseName=catalog.database, TableName="events", PartitionValues=[dt])["Partition"]


def _raw_create(raw, catalog: GlueCatalog, dt: str, location: str, **parameters: str) -> None:
    raw.create_partition(DatabaseName=catalog.database, TableName="events", PartitionInput={
        "Values": [dt], "StorageDescriptor": {"Location": location}, "Parameters": parameters})


def _days(n: int) -> list[str]:
    return [partition_dt(0, i, n) for i in range(n)]


# --------------------------------------------------------------------------------------------
# the table


def test_table_is_an_external_parquet_table_athena_can_read(settings, raw):
    spec = load_spec("clickstream", "events")
    catalog = GlueCatalog.from_settings(settings)
    catalog.ensure_table(spec, LOCATION)  # the database does not exist yet either
    assert raw.get_database(Name=settings.glue_database)["Database"]["Name"] == settings.glue_database

    table = _table(raw, catalog)
    sd = table["StorageDescriptor"]
    assert table["TableType"] == "EXTERNAL_TABLE"
    assert {k: table["Parameters"][k] for k in ("classification", "EXTERNAL", "parquet.compression",
                                                "lake.schema_version")} == {
        "classification": "parquet", "EXTERNAL": "TRUE", "parquet.compression": "ZSTD", "lake.schema_version": "1"}
    assert sd["Columns"] == spec.hive_columns()
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == [(c.name, c.hive_type) for c in spec.columns]
    assert sd["Location"] == LOCATION
    assert sd["InputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    assert sd["OutputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
    assert sd["SerdeInfo"]["SerializationLibrary"] == SERDE
    assert [(k["Name"], k["Type"]) for k in table["PartitionKeys"]] == [("dt", "date")]

    # unchanged spec: a fresh handle only reads, and a handle that ensured it does not even read
    fresh = GlueCatalog.from_settings(settings)
    calls = _calls(fresh)
    fresh.ensure_table(spec, LOCATION)
    fresh.ensure_table(spec, LOCATION)
    assert calls == Counter({"GetTable": 1})
    assert _table(raw, catalog)["VersionId"] == table["VersionId"]


def test_table_of_another_lake_is_refused(catalog: GlueCatalog):
    with pytest.raises(ConfigError, match="LAKE_GLUE_DATABASE"):
        GlueCatalog(catalog.client, catalog.database).ensure_table(load_spec(), "s3://other-lake/events/")


def test_a_table_dropped_behind_our_back_is_recreated(catalog: GlueCatalog, raw):
    catalog.publish("events", _part("2026-11-01", V1), None)
    raw.delete_table(DatabaseName=catalog.database, Name="events")
    with pytest.raises(NotFoundError, match="ensure_table"):
        catalog.publish("events", _part("2026-11-02", V1), None)
    assert catalog.get_partition("events", "2026-11-01") is None
    assert catalog.list_partitions("events") == []
    catalog.ensure_table(load_spec(), LOCATION)  # the cache forgot the table: it is created again
    catalog.publish("events", _part("2026-11-02", V1), None)
    assert [p.dt for p in catalog.list_partitions("events")] == ["2026-11-02"]


# --------------------------------------------------------------------------------------------
# schema evolution

V1_TEXT = schema_path("clickstream", "events", 1).read_text()
LAST_LINE = "  - {name: ingested_at, type: timestamp, lineage: ingested_at}\n"
PAGE_TITLE = "  - {name: page_title, type: string, paths: [context.page.title, properties.title]}\n"


def _spec(text: str, version: int) -> TableSpec:
    assert LAST_LINE in text and PAGE_TITLE in text
    return parse_spec(text.replace("version: 1\n", f"version: {version}\n"))


def test_additive_change_is_accepted_and_others_are_refused_before_anything_is_written(catalog, raw):
    added_text = V1_TEXT.replace(LAST_LINE, LAST_LINE + "  - {name: experiment_id, type: string, "
                                 "paths: [context.experiment]}\n")
    added = _spec(added_text, 2)
    catalog.ensure_table(added, LOCATION)
    table = _table(raw, catalog)
    assert table["StorageDescriptor"]["Columns"] == added.hive_columns()
    assert table["StorageDescriptor"]["Columns"][-1]["Name"] == "experiment_id"
    assert table["Parameters"]["lake.schema_version"] == "2"
    assert table["Parameters"]["classification"] == "parquet"  # the rest of the table is kept
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == SERDE
    # partitions published from now on carry the new column too
    catalog.publish("events", _part("2026-11-01", V1), None)
    assert _raw_partition(raw, catalog, "2026-11-01")["StorageDescriptor"]["Columns"] == added.hive_columns()

    refusals = {
        "retyped": (added_text.replace("name: page_title, type: string", "name: page_title, type: int64"),
                    "'page_title' changes type string -> bigint"),
        "removed": (added_text.replace(PAGE_TITLE, ""), "'page_title' was removed or renamed"),
        "renamed": (added_text.replace("name: page_title,", "name: page_name,"), "'page_title' was removed or renamed"),
    }
    for case, (text, message) in refusals.items():
        spec = parse_spec(text.replace("version: 1\n", "version: 3\n"))
        handle = GlueCatalog(catalog.client, catalog.database)
        calls = _calls(handle)
        with pytest.raises(SchemaError, match=message):
            handle.ensure_table(spec, LOCATION)
        assert calls == Counter({"GetTable": 1}), case  # refused before writing anything
        assert _table(raw, catalog) == table, case
    # nor can an older schema version write to the table, even with the same columns
    with pytest.raises(SchemaError, match="newer than v1"):
        GlueCatalog(catalog.client, catalog.database).ensure_table(_spec(added_text, 1), LOCATION)
    assert _table(raw, catalog) == table


# --------------------------------------------------------------------------------------------
# partitions


def test_250_new_partitions_take_three_batch_calls(catalog: GlueCatalog, raw):
    sizes: list[int] = []
    catalog.client.meta.events.register("provide-client-params.glue.BatchCreatePartition",
                                        lambda params, **_: sizes.append(len(params["PartitionInputList"])))
    calls = _calls(catalog)
    days = _days(250)
    assert catalog.publish_many("events", [(_part(dt, V1, n), None) for n, dt in enumerate(days)]) == days
    assert sizes == [100, 100, 50]
    assert calls == Counter({"BatchGetPartition": 2, "BatchCreatePartition": 3})  # read, write, read back

    pages = raw.get_paginator("get_partitions").paginate(DatabaseName=catalog.database, TableName="events")
    listed = [p for page in pages for p in page["Partitions"]]
    assert sorted(p["Values"][0] for p in listed) == days
    table_sd = _table(raw, catalog)["StorageDescriptor"]
    first = next(p for p in listed if p["Values"] == [days[7]])
    assert first["StorageDescriptor"]["Location"] == f"{LOCATION}dt={days[7]}/{V1}/"
    for key in ("Columns", "InputFormat", "OutputFormat", "SerdeInfo"):
        assert first["StorageDescriptor"][key] == table_sd[key]
    assert first["Parameters"]["lake.version"] == V1 and first["Parameters"]["lake.rows"] == "7"
    assert [p.dt for p in catalog.list_partitions("events")] == days
    assert catalog.list_partitions("events")[7] == catalog.get_partition("events", days[7])

    # moving them all is three BatchUpdatePartition calls; the same again writes nothing
    calls.clear()
    assert catalog.publish_many("events", [(_part(dt, V2), V1) for dt in days]) == days
    assert calls == Counter({"BatchGetPartition": 2, "BatchUpdatePartition": 3})
    calls.clear()
    assert catalog.publish_many("events", [(_part(dt, V2), V1) for dt in days]) == []
    assert calls == Counter({"BatchGetPartition": 1})
    assert {p.version for p in catalog.list_partitions("events")} == {V2}


def test_location_swap_is_compare_and_set(catalog: GlueCatalog, raw):
    dt = "2026-11-01"
    catalog.publish("events", _part(dt, V1, 10), expected_version=None)
    catalog.publish("events", _part(dt, V2, 20), expected_version=V1)
    got = catalog.get_partition("events", dt)
    assert (got.version, got.rows, got.location) == (V2, 20, f"{LOCATION}dt={dt}/{V2}/")
    assert got.files == (f"{LOCATION}dt={dt}/{V2}/part-00000.parquet",)
    seen = _raw_partition(raw, catalog, dt)  # what Athena resolves the partition to
    assert seen["StorageDescriptor"]["Location"] == f"{LOCATION}dt={dt}/{V2}/"
    assert seen["Parameters"]["lake.version"] == V2

    for stale in (V1, None, V3):
        with pytest.raises(ConcurrentPublishError) as caught:
            catalog.publish("events", _part(dt, V3), expected_version=stale)
        assert caught.value.conflicts == [dt]
    assert _raw_partition(raw, catalog, dt) == seen

    calls = _calls(catalog)
    catalog.publish("events", _part(dt, V2, 999), expected_version=V1)  # already there: a no-op
    assert catalog.publish_many("events", [(_part(dt, V2, 999), None)]) == []
    assert set(calls) == {"BatchGetPartition"}
    assert _raw_partition(raw, catalog, dt) == seen

    catalog.drop_partition("events", dt)
    catalog.drop_partition("events", dt)  # missing is fine
    assert catalog.get_partition("events", dt) is None


def test_a_publisher_that_overwrites_ours_right_after_is_a_conflict_not_a_success(catalog, raw):
    dt = "2026-11-01"
    catalog.publish("events", _part(dt, V1), None)
    other = _part(dt, V3)

    def concurrent_publisher(**_):
        raw.update_partition(DatabaseName=catalog.database, TableName="events", PartitionValueList=[dt],
                             PartitionInput={"Values": [dt], "StorageDescriptor": {"Location": other.location},
                                             "Parameters": {"lake.version": V3}})

    catalog.client.meta.events.register("after-call.glue.BatchUpdatePartition", concurrent_publisher)
    with pytest.raises(ConcurrentPublishError) as caught:
        catalog.publish("events", _part(dt, V2), expected_version=V1)
    assert caught.value.conflicts == [dt]
    assert catalog.get_partition("events", dt).version == V3


def test_already_exists_with_the_same_location_counts_as_published(catalog: GlueCatalog, raw):
    # registered by another tool (MSCK REPAIR, a crawler): no lake parameters
    mine = _part("2026-11-01", V1)
    _raw_create(raw, catalog, mine.dt, mine.location)
    foreign = catalog.get_partition("events", mine.dt)
    assert (foreign.version, foreign.files, foreign.rows, foreign.location) == ("", (), 0, mine.location)
    assert catalog.list_partitions("events") == [foreign]
    assert catalog.publish_many("events", [(mine, None)]) == [mine.dt]
    assert catalog.get_partition("events", mine.dt).version == V1

    # one at another location stays a conflict until the caller expects what is there ("")
    other = _part("2026-11-02", V1)
    _raw_create(raw, catalog, other.dt, f"{LOCATION}elsewhere/")
    with pytest.raises(ConcurrentPublishError):
        catalog.publish("events", other, None)
    catalog.publish("events", other, expected_version="")
    assert catalog.get_partition("events", other.dt).location == other.location


def test_already_exists_from_a_concurrent_create(catalog: GlueCatalog, raw):
    same, different = _part("2026-11-01", V1), _part("2026-11-02", V1)

    def concurrent_creator(**_):  # lands between our BatchGetPartition and BatchCreatePartition
        if not raw.get_partitions(DatabaseName=catalog.database, TableName="events")["Partitions"]:
            _raw_create(raw, catalog, same.dt, same.location)
            _raw_create(raw, catalog, different.dt, f"{LOCATION}dt={different.dt}/{V3}/", **{"lake.version": V3})

    catalog.client.meta.events.register("provide-client-params.glue.BatchCreatePartition", concurrent_creator)
    with pytest.raises(ConcurrentPublishError) as caught:
        catalog.publish_many("events", [(same, None), (different, None)])
    assert caught.value.conflicts == [different.dt]
    assert catalog.get_partition("events", same.dt).version == V1
    assert catalog.get_partition("events", different.dt).version == V3


def _fail_first_entry(catalog: GlueCatalog, code: str, times: int) -> list[str]:
    """Make the next ``times`` BatchCreatePartition calls fail their first entry with ``code``,
    the way Glue does: that entry is not written and is reported in ``Errors``."""
    failed: list[str] = []
    pending: list[str] = []

    def drop(params, **_):
        if len(failed) < times:
            failed.append(params["PartitionInputList"].pop(0)["Values"][0])
            pending.append(failed[-1])

    def report(parsed, **_):
        while pending:
            parsed.setdefault("Errors", []).append({"PartitionValues": [pending.pop()], "ErrorDetail": {
                "ErrorCode": code, "ErrorMessage": "injected"}})

    catalog.client.meta.events.register("provide-client-params.glue.BatchCreatePartition", drop)
    catalog.client.meta.events.register("after-call.glue.BatchCreatePartition", report)
    return failed


def test_retryable_entry_errors_are_retried(catalog: GlueCatalog):
    failed = _fail_first_entry(catalog, "ThrottlingException", times=2)
    days = _days(3)
    assert sorted(catalog.publish_many("events", [(_part(dt, V1), None) for dt in days])) == days
    assert failed == [days[0], days[0]]
    assert [p.version for p in catalog.list_partitions("events")] == [V1, V1, V1]


def test_other_entry_errors_fail_after_the_rest_is_applied(catalog: GlueCatalog):
    failed = _fail_first_entry(catalog, "ResourceNumberLimitExceededException", times=1)
    days = _days(3)
    with pytest.raises(TerminalError, match="ResourceNumberLimitExceededException"):
        catalog.publish_many("events", [(_part(dt, V1), None) for dt in days])
    assert failed == [days[0]]
    assert [p.dt for p in catalog.list_partitions("events")] == days[1:]


def test_publishing_without_ensure_table_reads_the_table_once(catalog: GlueCatalog):
    handle = GlueCatalog(catalog.client, catalog.database)
    calls = _calls(handle)
    handle.publish("events", _part("2026-11-01", V1), None)
    handle.publish("events", _part("2026-11-02", V1), None)
    assert calls["GetTable"] == 1
    with pytest.raises(NotFoundError):
        handle.publish("no_such_table", _part("2026-11-01", V1), None)


def test_two_processes_publishing_different_partitions(settings, tmp_path: Path):
    workers, count = 2, 10
    results = run_workers(tmp_path, "glue", workers, count, "distinct", env=glue_env(settings))
    assert sorted(r["worker"] for r in results) == [0, 1]
    parts = GlueCatalog.from_settings(settings).list_partitions("events")
    assert {p.dt: (p.version, p.rows) for p in parts} == {
        partition_dt(w, i, count): (expected_version(w, i), w * 1000 + i) for w in range(workers) for i in range(count)}
