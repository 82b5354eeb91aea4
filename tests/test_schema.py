"""The schema file is the single source of truth: every representation is derived from it."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest
import yaml

from pipelines.errors import SchemaError
from pipelines.schema import SCHEMA_DIR, load_spec, parse_spec, schema_path

SPEC_TEXT = (SCHEMA_DIR / "clickstream_events_v1.yaml").read_text()


def test_spec_loads_with_the_issue_columns():
    spec = load_spec()
    assert (spec.namespace, spec.table, spec.version) == ("clickstream", "events", 1)
    for name in ("event_id", "event_type", "event_name", "anonymous_id", "user_id", "event_time",
                 "sent_at", "received_at", "page_url", "page_path", "page_referrer", "page_title",
                 "user_agent", "ip", "locale", "library_name", "library_version", "campaign_source",
                 "campaign_medium", "campaign_name", "campaign_term", "campaign_content", "properties",
                 "traits", "context", "integrations", "source_object", "ingested_at"):
        assert name in spec.column_names
    assert spec.partition_key == "dt" and spec.partition_key not in spec.column_names
    assert spec.sort_keys == ("event_time", "event_id")
    assert spec.dedupe_key == "event_id"


def test_every_representation_lists_the_same_columns_in_order():
    spec = load_spec()
    names = spec.column_names
    arrow = spec.arrow_schema()
    assert arrow.names == names
    assert list(spec.duckdb_columns()) == names
    assert [c["Name"] for c in spec.hive_columns()] == names
    assert [n for n, _, _ in spec.describe_columns()] == [*names, "dt"]
    assert spec.hive_partition_keys() == [{"Name": "dt", "Type": "date", "Comment": "UTC date of event_time"}]


def test_types_map_consistently():
    spec = load_spec()
    arrow = spec.arrow_schema()
    assert arrow.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert not arrow.field("event_id").nullable and arrow.field("user_id").nullable
    assert arrow.field("source_line").type == pa.int64()
    hive = {c["Name"]: c["Type"] for c in spec.hive_columns()}
    assert hive["event_time"] == "timestamp" and hive["properties"] == "string" and hive["source_line"] == "bigint"
    assert spec.duckdb_columns()["event_time"] == "TIMESTAMP WITH TIME ZONE"


def test_schema_path_finds_latest_and_refuses_unknown_tables():
    assert schema_path().name == "clickstream_events_v1.yaml"
    with pytest.raises(SchemaError, match="unknown table"):
        schema_path("clickstream", "nosuch")
    with pytest.raises(SchemaError, match="invalid table"):
        schema_path("clickstream", "../etc")


def _mutated(change) -> str:
    doc = yaml.safe_load(SPEC_TEXT)
    change(doc)
    return yaml.safe_dump(doc)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["columns"].append(dict(d["columns"][0])), "duplicate column"),
    (lambda d: d["columns"].append({"name": "dt", "type": "date", "paths": ["x"]}), "partition key"),
    (lambda d: d["columns"][0].update(type="uuid"), "unknown type"),
    (lambda d: d["columns"][0].update(name="Event-Id"), "invalid column name"),
    (lambda d: d["columns"][1].pop("paths"), "exactly one of"),
    (lambda d: d.update(sort_keys=["nope"]), "unknown column"),
    (lambda d: d.pop("dedupe"), "missing or misuses"),
])
def test_inconsistent_schema_files_are_refused(change, message):
    with pytest.raises(SchemaError, match=message):
        parse_spec(_mutated(change))


def test_not_yaml_is_refused():
    with pytest.raises(SchemaError, match="not valid YAML"):
        parse_spec("columns: [unclosed")


def test_spec_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_spec().version = 2  # type: ignore[misc]
