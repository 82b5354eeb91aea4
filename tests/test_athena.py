"""Athena DDL: the exact CREATE text, statements that parse as Athena/Hive DDL and round-trip their
identifiers and locations, and hostile names, locations and dates refused with a clear error."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.dialects.hive import Hive
from sqlglot.tokens import TokenType

from pipelines import athena, layout
from pipelines.athena import (
    MAX_STATEMENT_BYTES,
    add_partitions_ddl,
    create_table_ddl,
    lake_ddl,
    set_location_ddl,
    validate_identifier,
    validate_location,
)
from pipelines.catalog import Partition
from pipelines.lake import Lake
from pipelines.land import land_inbox
from pipelines.schema import load_spec
from pipelines.wap import process_day
from tests.conftest import event, ndjson

pytestmark = pytest.mark.timeout(120)

SPEC = load_spec("clickstream", "events")
DB = "clickstream"
LOCATION = "s3://clickstream-lake-curated/clickstream/events/"
DIALECTS = ("athena", "hive")

GOLDEN_CREATE = """\
CREATE EXTERNAL TABLE IF NOT EXISTS `clickstream`.`events` (
  `event_id` string COMMENT 'from messageId',
  `event_type` string COMMENT 'from type',
  `event_name` string COMMENT 'from event | name',
  `category` string COMMENT 'from category',
  `anonymous_id` string COMMENT 'from anonymousId',
  `user_id` string COMMENT 'from userId',
  `group_id` string COMMENT 'from groupId',
  `previous_id` string COMMENT 'from previousId',
  `event_time` timestamp COMMENT 'derived: event_time rule',
  `original_timestamp` timestamp COMMENT 'from originalTimestamp',
  `sent_at` timestamp COMMENT 'from sentAt',
  `received_at` timestamp COMMENT 'from receivedAt',
  `channel` string COMMENT 'from channel',
  `page_url` string COMMENT 'from context.page.url | properties.url',
  `page_path` string COMMENT 'from context.page.path | properties.path',
  `page_referrer` string COMMENT 'from context.page.referrer | properties.referrer',
  `page_title` string COMMENT 'from context.page.title | properties.title',
  `user_agent` string COMMENT 'from context.userAgent',
  `ip` string COMMENT 'from context.ip',
  `locale` string COMMENT 'from context.locale',
  `library_name` string COMMENT 'from context.library.name',
  `library_version` string COMMENT 'from context.library.version',
  `campaign_source` string COMMENT 'from context.campaign.source',
  `campaign_medium` string COMMENT 'from context.campaign.medium',
  `campaign_name` string COMMENT 'from context.campaign.name',
  `campaign_term` string COMMENT 'from context.campaign.term',
  `campaign_content` string COMMENT 'from context.campaign.content',
  `properties` string COMMENT 'from properties',
  `traits` string COMMENT 'from traits | context.traits',
  `context` string COMMENT 'context minus the fields mapped to other columns (JSON)',
  `integrations` string COMMENT 'from integrations',
  `source_object` string COMMENT 'lineage: source_object',
  `source_line` bigint COMMENT 'lineage: source_line',
  `ingested_at` timestamp COMMENT 'lineage: ingested_at'
)
COMMENT 'Clickstream events from web and app SDKs (Segment and RudderStack spec).'
PARTITIONED BY (
  `dt` date COMMENT 'UTC date of event_time'
)
STORED AS PARQUET
LOCATION 's3://clickstream-lake-curated/clickstream/events/'
TBLPROPERTIES (
  'classification'='parquet',
  'parquet.compression'='ZSTD'
)"""


def _partition(dt: str, location: str | None = None, version: str = "v-0123456789abcdef") -> Partition:
    return Partition(table=SPEC.table, dt=dt, version=version,
                     location=f"{LOCATION}dt={dt}/{version}/" if location is None else location, files=(), rows=0,
                     published_at=0.0)


def _days(n: int) -> list[str]:
    from datetime import date, timedelta

    return [(date(2024, 1, 1) + timedelta(days=i)).isoformat() for i in range(n)]


def _parse(sql: str, dialect: str) -> exp.Expression:
    statements = sqlglot.parse(sql, read=dialect)
    assert len(statements) == 1
    return statements[0]


# --------------------------------------------------------------------------------------------
# CREATE TABLE


def test_create_table_is_exactly_the_golden_text():
    assert create_table_ddl(SPEC, DB, LOCATION) == GOLDEN_CREATE


@pytest.mark.parametrize("dialect", DIALECTS)
def test_create_table_parses_and_round_trips(dialect):
    tree = _parse(create_table_ddl(SPEC, DB, LOCATION), dialect)
    assert isinstance(tree, exp.Create) and tree.args["kind"] == "TABLE" and tree.args["exists"]
    assert tree.find(exp.ExternalProperty) is not None
    schema = tree.this
    assert (schema.this.name, schema.this.db) == (SPEC.table, DB)
    assert all(i.quoted for i in schema.this.find_all(exp.Identifier))
    cols = [(c.name, [k.kind.this.this for k in c.constraints]) for c in schema.expressions]
    assert cols == [(c["Name"], [c["Comment"]]) for c in SPEC.hive_columns()]
    (partitioned,) = tree.find(exp.PartitionedByProperty).this.expressions
    assert partitioned.name == SPEC.partition_key
    assert partitioned.args["kind"].this == exp.DataType.Type.DATE
    assert tree.find(exp.LocationProperty).this.this == LOCATION
    assert tree.find(exp.SchemaCommentProperty).this.this == SPEC.description
    props = {p.name: p.args["value"].this for p in tree.find_all(exp.Property)
             if type(p) is exp.Property}
    assert props == {"classification": "parquet", "parquet.compression": "ZSTD"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_comments_with_quotes_and_backslashes_are_escaped(dialect):
    tricky = "it's a \\ path; with `ticks` and \"quotes\" -- not a comment"
    first = replace(SPEC.columns[0], paths=(("it's",), ("a\\b",)))
    spec = replace(SPEC, description=tricky, columns=(first, *SPEC.columns[1:]))
    sql = create_table_ddl(spec, DB, LOCATION)
    assert "COMMENT 'it\\'s a \\\\ path;" in sql
    tree = _parse(sql, dialect)
    assert tree.find(exp.SchemaCommentProperty).this.this == tricky
    col = tree.this.expressions[0]
    assert col.constraints[0].kind.this.this == "from it's | a\\b"
    assert len(tree.this.expressions) == len(SPEC.columns)  # the quote closed nothing early


def test_comments_with_control_characters_or_too_long_are_refused():
    for bad in ("two\nlines", "nul\x00byte", "tab\there"):
        with pytest.raises(ValueError, match="control characters"):
            create_table_ddl(replace(SPEC, description=bad), DB, LOCATION)
    long_path = replace(SPEC.columns[0], paths=(("x" * 300,),))
    with pytest.raises(ValueError, match="longer than 255"):
        create_table_ddl(replace(SPEC, columns=(long_path, *SPEC.columns[1:])), DB, LOCATION)


# --------------------------------------------------------------------------------------------
# partitions


def _tokens(sql: str):
    return Hive().tokenize(sql)


def test_add_partitions_batches_and_every_statement_tokenizes_as_hive_ddl():
    days = _days(250)
    statements = add_partitions_ddl(SPEC, DB, [_partition(d) for d in days])
    assert len(statements) == 3
    found = []
    for sql in statements:
        assert len(sql.encode()) < MAX_STATEMENT_BYTES
        tokens = _tokens(sql)
        head = [(t.token_type, t.text) for t in tokens[:10]]
        assert head == [(TokenType.ALTER, "ALTER"), (TokenType.TABLE, "TABLE"),
                        (TokenType.IDENTIFIER, DB), (TokenType.DOT, "."),
                        (TokenType.IDENTIFIER, SPEC.table), (TokenType.VAR, "ADD"),
                        (TokenType.VAR, "IF"), (TokenType.NOT, "NOT"), (TokenType.EXISTS, "EXISTS"),
                        (TokenType.PARTITION, "PARTITION")]
        rest = tokens[9:]
        assert len(rest) % 8 == 0  # PARTITION ( `dt` = 'day' ) LOCATION 'uri', nothing else
        for i in range(0, len(rest), 8):
            clause = rest[i:i + 8]
            assert [t.token_type for t in clause] == [
                TokenType.PARTITION, TokenType.L_PAREN, TokenType.IDENTIFIER, TokenType.EQ,
                TokenType.STRING, TokenType.R_PAREN, TokenType.VAR, TokenType.STRING]
            assert clause[2].text == SPEC.partition_key and clause[6].text == "LOCATION"
            found.append((clause[4].text, clause[7].text))
        assert sqlglot.parse(sql, read="athena")  # parses (sqlglot keeps multi-partition ADD as a command)
    assert [len(re.findall(r"\bPARTITION \(", s)) for s in statements] == [100, 100, 50]
    assert found == [(d, _partition(d).location) for d in days]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_single_partition_add_parses_to_an_alter_that_round_trips(dialect):
    days = _days(3)
    statements = add_partitions_ddl(SPEC, DB, [_partition(d) for d in days], per_statement=1)
    assert len(statements) == 3
    for day, sql in zip(days, statements, strict=True):
        tree = _parse(sql, dialect)
        assert isinstance(tree, exp.Alter)
        assert (tree.this.name, tree.this.db) == (SPEC.table, DB)
        (action,) = tree.args["actions"]
        assert isinstance(action, exp.AddPartition) and action.args["exists"]
        (eq,) = action.this.expressions
        assert (eq.this.name, eq.expression.this) == (SPEC.partition_key, day)
        assert action.args["location"].this.this == _partition(day).location


def test_add_partitions_keeps_statements_below_the_query_size_limit():
    long_prefix = LOCATION + "/".join(["a" * 200] * 4) + "/"
    parts = [_partition(d, location=f"{long_prefix}dt={d}/v-0123456789abcdef/") for d in _days(600)]
    statements = add_partitions_ddl(SPEC, DB, parts, per_statement=10_000)
    assert len(statements) > 1
    assert all(len(s.encode()) <= MAX_STATEMENT_BYTES for s in statements)
    assert sum(s.count("PARTITION (") for s in statements) == 600
    assert add_partitions_ddl(SPEC, DB, []) == []


def test_add_partitions_refuses_duplicates_and_other_tables():
    with pytest.raises(ValueError, match="listed twice"):
        add_partitions_ddl(SPEC, DB, [_partition("2024-01-01"), _partition("2024-01-01")])
    with pytest.raises(ValueError, match="belongs to table 'other'"):
        add_partitions_ddl(SPEC, DB, [replace(_partition("2024-01-01"), table="other")])


@pytest.mark.parametrize("dialect", DIALECTS)
def test_set_location_parses_and_round_trips(dialect):
    p = _partition("2024-02-29", version="v-fedcba9876543210")
    sql = set_location_ddl(SPEC, DB, p)
    assert sql == ("ALTER TABLE `clickstream`.`events` PARTITION (`dt` = '2024-02-29') SET LOCATION "
                   "'s3://clickstream-lake-curated/clickstream/events/dt=2024-02-29/v-fedcba9876543210/'")
    tree = _parse(sql, dialect)
    assert isinstance(tree, exp.Alter)
    (eq,) = tree.this.args["partition"].expressions
    assert (eq.this.name, eq.expression.this) == ("dt", "2024-02-29")
    (action,) = tree.args["actions"]
    assert isinstance(action, exp.AlterSet) and action.args["location"].this == p.location


# --------------------------------------------------------------------------------------------
# hostile input

HOSTILE_NAMES = {
    "dotdot": "../etc", "quote": "a'b", "semicolon": "a;drop", "double-quote": 'a"b',
    "backtick": "a`b", "nul": "a\x00b", "long": "a" * 10_000, "space": "a b", "empty": "",
    "dash": "a-b", "dot": "a.b", "newline": "a\nb", "unicode": "caf\u00e9",
}


@pytest.mark.parametrize("name", list(HOSTILE_NAMES.values()), ids=list(HOSTILE_NAMES))
@pytest.mark.parametrize("kind", ["database", "table", "column"])
def test_hostile_identifiers_are_refused_naming_the_kind(kind, name):
    with pytest.raises(ValueError, match=f"invalid {kind} name") as err:
        validate_identifier(kind, name)
    assert len(str(err.value)) < 300  # a 10,000-character value is cut short in the message


def test_uppercase_names_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="folds names to lowercase; use 'events'"):
        validate_identifier("table", "Events")
    assert validate_identifier("table", "events_2") == "events_2"
    assert validate_identifier("database", "x" * 255)
    with pytest.raises(ValueError):
        validate_identifier("database", "x" * 256)


@pytest.mark.parametrize("name", [*HOSTILE_NAMES.values(), "Clickstream"],
                         ids=[*HOSTILE_NAMES, "uppercase"])
def test_ddl_functions_refuse_a_hostile_database(name):
    with pytest.raises(ValueError, match="invalid database name"):
        create_table_ddl(SPEC, name, LOCATION)
    with pytest.raises(ValueError, match="invalid database name"):
        add_partitions_ddl(SPEC, name, [_partition("2024-01-01")])
    with pytest.raises(ValueError, match="invalid database name"):
        set_location_ddl(SPEC, name, _partition("2024-01-01"))


def test_ddl_functions_refuse_a_hostile_table_or_column_in_the_spec():
    with pytest.raises(ValueError, match="invalid table name"):
        create_table_ddl(replace(SPEC, table="ev`ents"), DB, LOCATION)
    bad_col = replace(SPEC.columns[0], name="id`; DROP TABLE x; --")
    with pytest.raises(ValueError, match="invalid column name"):
        create_table_ddl(replace(SPEC, columns=(bad_col, *SPEC.columns[1:])), DB, LOCATION)
    with pytest.raises(ValueError, match="invalid column name"):
        set_location_ddl(replace(SPEC, partition_key="DT"), DB, _partition("2024-01-01"))


HOSTILE_LOCATIONS = {
    "dotdot": "s3://bucket-a/clickstream/../secrets/",
    "dot": "s3://bucket-a/./x/",
    "quote": "s3://bucket-a/x'/",
    "quote-escape": "s3://bucket-a/x\\'; DROP TABLE t; --/",
    "semicolon": "s3://bucket-a/x;y/",
    "double-quote": 's3://bucket-a/x"y/',
    "backtick": "s3://bucket-a/x`y/",
    "nul": "s3://bucket-a/x\x00y/",
    "space": "s3://bucket-a/x y/",
    "tab": "s3://bucket-a/x\ty/",
    "newline": "s3://bucket-a/x\n/",
    "long": "s3://bucket-a/" + "a/" * 5_000,
    "long-segment": "s3://bucket-a/" + "a" * 10_000 + "/",
    "no-scheme": "bucket-a/x/",
    "http": "https://bucket-a.s3.amazonaws.com/x/",
    "s3a": "s3a://bucket-a/x/",
    "upper-scheme": "S3://bucket-a/x/",
    "local-path": "/tmp/lake/curated/clickstream/events/",
    "no-trailing-slash": "s3://bucket-a/x",
    "empty-segment": "s3://bucket-a/x//y/",
    "no-bucket": "s3:///x/",
    "short-bucket": "s3://ab/x/",
    "long-bucket": "s3://" + "b" * 64 + "/x/",
    "upper-bucket": "s3://Bucket-A/x/",
    "bucket-dotdot": "s3://bucket..a/x/",
    "bucket-ip": "s3://192.168.1.10/x/",
    "bucket-dash-end": "s3://bucket-/x/",
    "bucket-underscore": "s3://bucket_a/x/",
    "bucket-userinfo": "s3://user@bucket-a/x/",
    "empty": "",
}


@pytest.mark.parametrize("uri", list(HOSTILE_LOCATIONS.values()), ids=list(HOSTILE_LOCATIONS))
def test_hostile_locations_are_refused(uri):
    with pytest.raises(ValueError, match=r"invalid (location|S3 bucket name)") as err:
        validate_location(uri)
    assert len(str(err.value)) < 400
    with pytest.raises(ValueError):
        create_table_ddl(SPEC, DB, uri)
    with pytest.raises(ValueError):
        add_partitions_ddl(SPEC, DB, [_partition("2024-01-01", location=uri)])
    with pytest.raises(ValueError):
        set_location_ddl(SPEC, DB, _partition("2024-01-01", location=uri))


@pytest.mark.parametrize("uri", [
    "s3://bucket-a/", "s3://bucket-a/clickstream/events/", "s3://a.b.c/dt=2024-01-01/v-0123456789abcdef/",
    "s3://123/x/", "s3://" + "b" * 63 + "/x/", "s3://bucket-a/Upper/Case+plus@at/",
])
def test_plain_locations_are_accepted(uri):
    assert validate_location(uri) == uri


@pytest.mark.parametrize("dt", ["2024-01-01'; DROP TABLE x; --", "2024-13-01", "2024-02-30", "../",
                                "2024-1-1", "20240101", "", "2024-01-01 ", "2024-01-01\x00"])
def test_hostile_partition_dates_are_refused(dt):
    with pytest.raises(ValueError, match="invalid date"):
        add_partitions_ddl(SPEC, DB, [replace(_partition("2024-01-01"), dt=dt)])
    with pytest.raises(ValueError, match="invalid date"):
        set_location_ddl(SPEC, DB, replace(_partition("2024-01-01"), dt=dt))


# --------------------------------------------------------------------------------------------
# the lake's own table


def test_lake_ddl_describes_the_published_partitions(lake: Lake):
    for day in ("2026-11-01", "2026-11-02"):
        lake.storage.put("landing", f"web/{day}.ndjson.gz", ndjson([event(i, day=day) for i in range(5)]))
    land_inbox(lake)
    published = {d: process_day(lake, d).version for d in ("2026-11-01", "2026-11-02")}
    spec = lake.spec
    if lake.settings.backend == "local":
        with pytest.raises(ValueError, match="Athena cannot read"):
            lake_ddl(lake)
        base = "s3://copy-of-lake/curated/clickstream/events/"
        statements = lake_ddl(lake, location=base, database="analytics", set_locations=True)
        database = "analytics"
    else:
        base = lake.storage.uri("curated", layout.table_prefix(spec) + "/")
        statements = lake_ddl(lake, set_locations=True)
        database = lake.settings.glue_database
    create, add, *moves = statements
    assert create == create_table_ddl(spec, database, base)
    expected = {d: f"{base}dt={d}/{v}/" for d, v in published.items()}
    if lake.settings.backend != "local":  # on S3 the catalog's own locations are the same folders
        assert {p.dt: p.location for p in lake.catalog.list_partitions(spec.table)} == expected
    tree = [t for t in _tokens(add) if t.token_type == TokenType.STRING]
    assert [t.text for t in tree] == [x for d in sorted(expected) for x in (d, expected[d])]
    assert len(moves) == 2
    for sql, day in zip(moves, sorted(expected), strict=True):
        action = _parse(sql, "athena").args["actions"][0]
        assert action.args["location"].this == expected[day]
    script = athena.script(statements)
    assert script.count(";\n") == 4 and script.endswith(";\n")
    assert athena.script([]) == ""
