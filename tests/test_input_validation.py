"""Law 6: values from events, users and the catalog never reach a key, a path or SQL text unchecked.

Every public entry where a table name, a database or bucket prefix, a partition date, a version,
a location or an object key arrives is fed the same hostile values (traversal, quotes, SQL, NUL,
control characters, unicode look-alikes, whitespace, empty, very long). Each must give a clear
error (a LakeError or ValueError; on the command line exit 2 with one ``error:`` line and no
traceback) and write nothing: the lake folder (every file, size and hash) and, on S3, every
object version in the four buckets plus the Glue tables and partitions are compared before and
after. Events carrying such values are landed as data (Parquet columns, never key parts) or
quarantined with a reason, and every key the pipeline writes is checked against a strict pattern.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sqlite3
from datetime import date

import boto3
import duckdb
import orjson
import pytest
from conftest import event, ndjson, settings_on
from typer.testing import CliRunner

from pipelines import athena, compact, duck, layout, query, wap
from pipelines.catalog import Partition
from pipelines.cli import app
from pipelines.config import ROLES, LakeSettings
from pipelines.errors import ConfigError, LakeError, SchemaError
from pipelines.lake import Lake
from pipelines.land import land_inbox, raw_objects, read_quarantine, read_raw_rows
from pipelines.publish import publish_version, publish_versions, retire_versions
from pipelines.schema import load_spec, schema_path
from pipelines.storage import read_key, validate_key
from pipelines.verify import audit_version

pytestmark = pytest.mark.timeout(300)

SPEC = load_spec()
DAY = "2026-11-01"
V = "v-0123456789abcdef"
DIGEST = "0123456789abcdef"
S3_LOCATION = "s3://lake-curated/clickstream/events/"

#: the hostile values every entry point is fed, by id
HOSTILE = {
    "dotdot-slash": "../",
    "dotdot-encoded": "..%2f",
    "traversal": "a/../../b",
    "absolute": "/etc/passwd",
    "single-quote": "'",
    "double-quote": '"',
    "backtick": "`",
    "sql-drop": "x; DROP TABLE y",
    "sql-or": "x' OR '1'='1",
    "nul": "\x00",
    "nul-suffix": "events\x00",
    "newline": "a\nb",
    "trailing-newline": "events\n",
    "carriage-return": "\r",
    "tab": "\t",
    "ansi-escape": "\x1b[2J",
    "fullwidth-dot": "\uff0e\uff0e\uff0fetc",
    "rtl-override": "\u202eevents",
    "zero-width-space": "ev\u200bents",
    "cyrillic-e": "\u0435vents",
    "space": " ",
    "padded": " events ",
    "empty": "",
    "long-300": "a" * 300,
    "long-100k": "a" * 100_000,
}
#: as object keys, key segments or version folders a 300-character plain name is fine; 1,025 is not
KEY_HOSTILE = {**{k: v for k, v in HOSTILE.items() if k != "long-300"}, "long-1025": "a" * 1025}


def _digits(text: str, zero: str) -> str:
    """``text`` with its ASCII digits written in another script's digits (``zero`` is its 0)."""
    return text.translate({ord(d): ord(zero) + int(d) for d in "0123456789"})


#: dates that look right and are not
DATE_HOSTILE = {**HOSTILE, "dt-newline": f"{DAY}\n", "dt-fullwidth": _digits(DAY, "\uff10"),
                "dt-arabic-digits": _digits(DAY, "\u0660"), "dt-traversal": f"{DAY}/../x", "dt-no-such-day": "2026-13-01",
                "dt-sql": f"{DAY}' OR '1'='1"}
VERSION_HOSTILE = {**HOSTILE, "version-newline": f"{V}\n", "version-upper": V.upper(),
                   "version-traversal": f"{V}/.."}

#: every key the pipeline may write, role by role (Law 6: built from validated parts only)
SAFE_KEY = re.compile(r"[A-Za-z0-9._=\-+@/]+")
RAW_KEY = re.compile(r"clickstream/events/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/[a-z0-9][a-z0-9-]{0,31}-[0-9a-f]{16}"
                     r"\.ndjson\.gz|_ledger/clickstream/events/(key=[0-9a-f]{16}/)?[0-9a-f]{16}\.json", re.ASCII)
CURATED_KEY = re.compile(r"clickstream/events/dt=\d{4}-\d{2}-\d{2}/v-[0-9a-f]{16}/"
                         r"(part-\d{5}\.parquet|_manifest\.json|_audit\.json)|_locks/[A-Za-z0-9._=/-]+", re.ASCII)
QUARANTINE_KEY = re.compile(r"clickstream/events/(lines|files)/arrival=\d{4}-\d{2}-\d{2}/"
                            r"[a-z0-9][a-z0-9-]{0,31}-[0-9a-f]{16}\.(ndjson|bin|bin\.reason\.json)", re.ASCII)

REFUSED = (LakeError, ValueError)


def _ids(values: dict[str, str]):
    return pytest.mark.parametrize("value", list(values.values()), ids=list(values))


# ------------------------------------------------------------------------------------ snapshots


def _aws(settings: LakeSettings, service: str):
    return boto3.client(service, endpoint_url=settings.s3_endpoint_url, region_name=settings.aws_region)


def snapshot(settings: LakeSettings) -> dict:
    """Everything a write could change: every file and folder around the lake root (size and
    hash), and on S3 every object version and delete marker of the four buckets plus the Glue
    database's tables and partitions."""
    around = settings.root_path.parent
    files = {}
    for path in sorted(around.rglob("*")):
        rel = path.relative_to(around).as_posix()
        files[rel] = ("dir",) if path.is_dir() else (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    state: dict = {"files": files}
    if settings.backend == "s3":
        s3 = _aws(settings, "s3")
        for role in ROLES:
            seen = []
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=settings.bucket(role)):
                seen += [(v["Key"], v.get("VersionId"), v.get("ETag"), v.get("Size")) for v in page.get("Versions", [])]
                seen += [(m["Key"], m.get("VersionId"), "delete-marker") for m in page.get("DeleteMarkers", [])]
            state[role] = sorted(seen)
        glue = _aws(settings, "glue")
        try:
            tables = glue.get_tables(DatabaseName=settings.glue_database)["TableList"]
        except glue.exceptions.EntityNotFoundException:
            tables = []
        state["glue"] = {}
        for t in tables:
            parts = glue.get_partitions(DatabaseName=settings.glue_database, TableName=t["Name"])["Partitions"]
            state["glue"][t["Name"]] = json.dumps(
                {"table": t, "partitions": sorted(parts, key=lambda p: p["Values"])}, default=str, sort_keys=True)
    return state


def assert_unchanged(settings: LakeSettings, before: dict) -> None:
    """Nothing was written since ``before``: name whatever differs."""
    after = snapshot(settings)
    diff = {}
    for part in before.keys() | after.keys():
        old, new = before.get(part) or {}, after.get(part) or {}
        if old != new:
            if isinstance(old, dict) and isinstance(new, dict):
                diff[part] = {k: (old.get(k), new.get(k)) for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
            else:
                diff[part] = {"gone": sorted(set(old) - set(new)), "new": sorted(set(new) - set(old))}
    assert not diff, f"written: {str(diff)[:2000]}"


def assert_refused(fn, *args, **kwargs) -> Exception:
    """``fn`` raises a clear error: a LakeError or ValueError whose message is one readable line."""
    with pytest.raises(REFUSED) as caught:
        fn(*args, **kwargs)
    text = str(caught.value)
    assert "\n" not in text and len(text) < 600, f"unreadable error message ({len(text)} chars)"
    return caught.value


def refuse_all(calls: dict[str, callable]) -> None:
    """Run every call; fail naming each one that did not raise a clear error."""
    accepted = []
    for name, call in calls.items():
        try:
            assert_refused(call)
        except (AssertionError, pytest.fail.Exception) as exc:
            accepted.append(f"{name}: {(str(exc).splitlines() or [type(exc).__name__])[0]}")
    assert not accepted, "hostile value accepted by: " + "; ".join(accepted)


def all_keys(lake: Lake) -> dict[str, list[str]]:
    return {role: list(lake.storage.list_keys(role)) for role in ROLES}


def assert_keys_safe(lake: Lake) -> None:
    """Every key the lake wrote so far passes validate_key and the pattern of its role (landing
    keys are the producers' names, only read)."""
    patterns = {"raw": RAW_KEY, "curated": CURATED_KEY, "quarantine": QUARANTINE_KEY}
    for role, keys in all_keys(lake).items():
        for key in keys if role != "landing" else ():
            assert validate_key(key) == key and SAFE_KEY.fullmatch(key), key
            if role in patterns:
                assert patterns[role].fullmatch(key), f"{role} key {key!r} is not one the layout builds"


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _no_lake_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("LAKE_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module", params=["local", "s3"])
def mlake(request, tmp_path_factory) -> Lake:
    """A lake with one published day, shared by the tests of this module that must change nothing."""
    root = tmp_path_factory.mktemp(f"hostile-{request.param}") / "lake"
    lake = Lake.open(settings_on(request.param, root, request))
    lake.storage.put("landing", "web/batch-1.ndjson.gz", ndjson([event(n, day=DAY) for n in range(5)]))
    land_inbox(lake)
    wap.process_day(lake, DAY)
    return lake


def _published(lake: Lake) -> Partition:
    partition = lake.catalog.get_partition(SPEC.table, DAY)
    assert partition is not None
    return partition


# --------------------------------------------------------------------------- pure validators


@_ids(HOSTILE)
def test_table_name_is_refused_before_any_schema_file_or_folder(value, tmp_path):
    root = tmp_path / "lake"
    refuse_all({
        "load_spec": lambda: load_spec("clickstream", value),
        "schema_path": lambda: schema_path("clickstream", value),
        "schema_path(version)": lambda: schema_path("clickstream", value, 1),
        "schema_path(namespace)": lambda: schema_path(value, "events"),
        "LakeSettings(table=)": lambda: Lake.open(LakeSettings(root=str(root), table=value)),
        "athena identifier": lambda: athena.validate_identifier("table", value),
    })
    env = {"LAKE_ROOT": str(root), "LAKE_TABLE": value}
    if value == "":  # an empty variable is an unset one: the default table
        assert Lake.open(LakeSettings.from_env(env)).spec.table == "events"
    else:
        with pytest.raises(SchemaError, match="invalid table name"):
            Lake.open(LakeSettings.from_env(env))
    assert not root.exists()  # opening refused nothing half-way: no folder was created


@_ids(HOSTILE)
def test_glue_database_and_bucket_prefix_are_refused(value):
    for variable, field in (("LAKE_GLUE_DATABASE", "glue_database"), ("LAKE_BUCKET_PREFIX", "bucket_prefix")):
        with pytest.raises(ConfigError, match=variable):
            LakeSettings(**{field: value}).validate()
        if value == "":
            assert getattr(LakeSettings.from_env({variable: value}), field) == getattr(LakeSettings(), field)
        else:
            with pytest.raises(ConfigError, match=variable) as caught:
                LakeSettings.from_env({variable: value, "LAKE_BACKEND": "s3"})
            assert "\n" not in str(caught.value) and len(str(caught.value)) < 600
    refuse_all({"create_table_ddl(database)": lambda: athena.create_table_ddl(SPEC, value, S3_LOCATION),
                "athena bucket": lambda: athena.validate_bucket(value)})


def test_reserved_bucket_prefixes_are_refused():
    for prefix in ("xn--lake", "sthree-lake", "amzn-s3-demo-lake"):
        with pytest.raises(ConfigError, match="LAKE_BUCKET_PREFIX"):
            LakeSettings(bucket_prefix=prefix).validate()


@_ids(DATE_HOSTILE)
def test_layout_key_builders_refuse_a_hostile_date(value):
    refuse_all({
        "parse_dt": lambda: layout.parse_dt(value),
        "raw_day_prefix": lambda: layout.raw_day_prefix(SPEC, value),
        "partition_prefix": lambda: layout.partition_prefix(SPEC, value),
        "version_prefix": lambda: layout.version_prefix(SPEC, value, V),
        "manifest_key": lambda: layout.manifest_key(SPEC, value, V),
        "audit_key": lambda: layout.audit_key(SPEC, value, V),
        "part_key": lambda: layout.part_key(SPEC, value, V, 0),
        "raw_key": lambda: layout.raw_key(SPEC, value, 1, "web", DIGEST),
        "quarantine_lines_key": lambda: layout.quarantine_lines_key(SPEC, value, "web", DIGEST),
        "quarantine_file_key": lambda: layout.quarantine_file_key(SPEC, value, "web", DIGEST),
    })


@_ids(VERSION_HOSTILE)
def test_layout_key_builders_refuse_a_hostile_version(value):
    refuse_all({
        "check_version": lambda: layout.check_version(value),
        "version_prefix": lambda: layout.version_prefix(SPEC, DAY, value),
        "manifest_key": lambda: layout.manifest_key(SPEC, DAY, value),
        "audit_key": lambda: layout.audit_key(SPEC, DAY, value),
        "part_key": lambda: layout.part_key(SPEC, DAY, value, 0),
    })


@_ids(HOSTILE)
def test_layout_key_builders_refuse_hostile_names_hours_and_specs(value):
    d = date(2026, 11, 1)
    refuse_all({
        "raw_key(source)": lambda: layout.raw_key(SPEC, d, 1, value, DIGEST),
        "raw_key(digest)": lambda: layout.raw_key(SPEC, d, 1, "web", value),
        "raw_key(hour)": lambda: layout.raw_key(SPEC, d, value, "web", DIGEST),
        "ledger_key": lambda: layout.ledger_key(SPEC, value),
        "ledger_record_key": lambda: layout.ledger_record_key(SPEC, "web/a.json", value),
        "quarantine_lines_key(source)": lambda: layout.quarantine_lines_key(SPEC, d, value, DIGEST),
        "quarantine_lines_key(digest)": lambda: layout.quarantine_lines_key(SPEC, d, "web", value),
        "quarantine_file_key(source)": lambda: layout.quarantine_file_key(SPEC, d, value, DIGEST),
        "quarantine_file_key(digest)": lambda: layout.quarantine_file_key(SPEC, d, "web", value),
        "table_prefix(table)": lambda: layout.table_prefix(dataclasses.replace(SPEC, table=value)),
        "partition_prefix(namespace)": lambda: layout.partition_prefix(dataclasses.replace(SPEC, namespace=value), DAY),
    })
    # what names an object after its landing key is a sanitizer: any input gives a safe name
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}", layout.source_name(value)), layout.source_name(value)
    assert re.fullmatch(r"[0-9a-f]{16}", layout.object_digest(value, value))


@pytest.mark.parametrize("hour", [-1, 24, 1.5, True, None, "01"])
def test_raw_key_refuses_an_hour_that_is_not_0_to_23(hour):
    assert_refused(layout.raw_key, SPEC, date(2026, 11, 1), hour, "web", DIGEST)


@_ids(KEY_HOSTILE)
def test_validate_key_refuses_a_hostile_key_or_segment(value):
    calls = {"whole": lambda: validate_key(value), "segment": lambda: validate_key(f"clickstream/{value}/x")}
    if value:  # "clickstream/" is a prefix, a legal key
        calls["last segment"] = lambda: validate_key(f"clickstream/{value}")
    refuse_all(calls)


@_ids(KEY_HOSTILE)
def test_athena_ddl_builders_refuse_hostile_values(value):
    ok = Partition(SPEC.table, DAY, V, f"{S3_LOCATION}dt={DAY}/{V}/", (), 1, 0.0)
    hostile_location = f"{S3_LOCATION}{value}/"
    refuse_all({
        "validate_location(whole)": lambda: athena.validate_location(value),
        "validate_location(segment)": lambda: athena.validate_location(hostile_location),
        "identifier(column)": lambda: athena.quote_identifier("column", value),
        "create_table_ddl(location)": lambda: athena.create_table_ddl(SPEC, "lake", hostile_location),
        "create_table_ddl(table)": lambda: athena.create_table_ddl(dataclasses.replace(SPEC, table=value),
                                                                   "lake", S3_LOCATION),
        "add_partitions_ddl(dt)": lambda: athena.add_partitions_ddl(SPEC, "lake", [dataclasses.replace(ok, dt=value)]),
        "add_partitions_ddl(location)": lambda: athena.add_partitions_ddl(
            SPEC, "lake", [dataclasses.replace(ok, location=hostile_location)]),
        "add_partitions_ddl(database)": lambda: athena.add_partitions_ddl(SPEC, value, [ok]),
        "set_location_ddl(dt)": lambda: athena.set_location_ddl(SPEC, "lake", dataclasses.replace(ok, dt=value)),
        "set_location_ddl(location)": lambda: athena.set_location_ddl(
            SPEC, "lake", dataclasses.replace(ok, location=hostile_location)),
    })


# ------------------------------------------------------------- storage and catalog, both backends


@_ids(KEY_HOSTILE)
def test_storage_refuses_hostile_keys_and_writes_nothing(mlake: Lake, value, tmp_path):
    storage = mlake.storage
    src = tmp_path / "payload"
    src.write_bytes(b"{}")
    before = snapshot(mlake.settings)
    calls, readable = {}, []
    # "web/" names a prefix, which validate_key accepts (see the test after this one)
    for key in (value, *([f"web/{value}"] if value else []), f"clickstream/events/dt={DAY}/{value}/x"):
        calls |= {
            f"put {key[:40]!r}": lambda key=key: storage.put("raw", key, b"{}"),
            f"put_file {key[:40]!r}": lambda key=key: storage.put_file("curated", key, src),
            f"put_if_absent {key[:40]!r}": lambda key=key: storage.put_if_absent("curated", key, b"lock"),
            f"get {key[:40]!r}": lambda key=key: storage.get("raw", key),
            f"open {key[:40]!r}": lambda key=key: storage.open("raw", key),
            f"head {key[:40]!r}": lambda key=key: storage.head("raw", key),
            f"delete {key[:40]!r}": lambda key=key: storage.delete("raw", [key]),
            f"delete_if {key[:40]!r}": lambda key=key: storage.delete_if("raw", key, "etag"),
        }
        if key:  # uri("curated", "") is the bucket's own address on S3
            calls[f"uri {key[:40]!r}"] = lambda key=key: storage.uri("curated", key)
        try:
            read_key("landing", key)
        except ValueError:  # traversal, control characters, empty segments: refused on reads too
            calls[f"land_inbox(keys) {key[:40]!r}"] = lambda key=key: land_inbox(mlake, keys=[key])
        else:  # a name a producer may give a landing object: looked up, nothing there, nothing written
            readable.append(key)
    refuse_all(calls)
    for key in readable:
        assert land_inbox(mlake, keys=[key]).files == [], key
    assert_unchanged(mlake.settings, before)


def test_delete_refuses_a_batch_with_a_hostile_key_before_deleting_any(lake: Lake, request):
    lake.storage.put("raw", "web/good.json", b"{}")
    before = snapshot(lake.settings)
    assert_refused(lake.storage.delete, "raw", ["web/good.json", "web/../../etc/passwd"])
    assert_unchanged(lake.settings, before)


def test_object_operations_refuse_a_key_that_names_a_prefix(lake: Lake, request):
    """``web/`` is how an empty name ends up in a key (``f"web/{name}"``)."""
    # storage.write_key: a trailing "/" names a prefix (fine for listings and URIs), not an object
    src = lake.settings.root_path.parent / "object.bin"
    src.write_bytes(b"{}")
    before = snapshot(lake.settings)
    refuse_all({"put": lambda: lake.storage.put("raw", "web/", b"{}"),
                "put_file": lambda: lake.storage.put_file("raw", "web/", src),
                "put_if_absent": lambda: lake.storage.put_if_absent("raw", "web/", b"{}")})
    assert_unchanged(lake.settings, before)


@_ids({k: v for k, v in KEY_HOSTILE.items() if v})  # an empty prefix lists everything
def test_storage_list_refuses_a_hostile_prefix(mlake: Lake, value, request):
    before = snapshot(mlake.settings)
    refuse_all({"list": lambda: list(mlake.storage.list("raw", value)),
                "list_keys": lambda: list(mlake.storage.list_keys("raw", value)),
                "list(folder)": lambda: list(mlake.storage.list("raw", f"{value}/x/"))})
    assert_unchanged(mlake.settings, before)


@_ids(HOSTILE)
def test_catalog_refuses_a_hostile_table_name_and_writes_nothing(mlake: Lake, value):
    catalog, current = mlake.catalog, _published(mlake)
    before = snapshot(mlake.settings)
    refuse_all({
        "get_partition": lambda: catalog.get_partition(value, DAY),
        "drop_partition": lambda: catalog.drop_partition(value, DAY),
        "publish": lambda: catalog.publish(value, dataclasses.replace(current, table=value), current.version),
        "publish_many": lambda: catalog.publish_many(value, [(dataclasses.replace(current, table=value), None)]),
        "ensure_table": lambda: catalog.ensure_table(dataclasses.replace(SPEC, table=value), current.location),
        "ensure_table(column)": lambda: catalog.ensure_table(
            dataclasses.replace(SPEC, columns=(dataclasses.replace(SPEC.columns[0], name=value), *SPEC.columns[1:])),
            current.location),
    })
    assert_unchanged(mlake.settings, before)


@_ids(DATE_HOSTILE)
def test_catalog_refuses_a_hostile_partition_date_and_writes_nothing(mlake: Lake, value):
    catalog, current = mlake.catalog, _published(mlake)
    moved = dataclasses.replace(current, dt=value, version=V)
    before = snapshot(mlake.settings)
    refuse_all({
        "get_partition": lambda: catalog.get_partition(SPEC.table, value),
        "drop_partition": lambda: catalog.drop_partition(SPEC.table, value),
        "publish(new)": lambda: catalog.publish(SPEC.table, moved, None),
        "publish_many": lambda: catalog.publish_many(SPEC.table, [(moved, None)]),
        # one bad entry refuses the whole batch: the good one is not published either
        "publish_many(good, bad)": lambda: catalog.publish_many(
            SPEC.table, [(dataclasses.replace(current, dt="2026-11-05"), None), (moved, None)]),
    })
    assert_unchanged(mlake.settings, before)


def test_catalog_refuses_a_date_object_where_it_keeps_text(mlake: Lake):
    with pytest.raises(ValueError, match="YYYY-MM-DD string"):
        mlake.catalog.get_partition(SPEC.table, date(2026, 11, 1))


@_ids(KEY_HOSTILE)
def test_catalog_refuses_hostile_versions_locations_and_files_and_writes_nothing(mlake: Lake, value):
    catalog, current = mlake.catalog, _published(mlake)
    base = mlake.storage.uri("curated", "clickstream/events/")
    calls = {
        "version": dataclasses.replace(current, version=value),
        "location(whole)": dataclasses.replace(current, location=value, files=()),
        "file(outside)": dataclasses.replace(current, files=(value,)),
        "file(under location)": dataclasses.replace(current, files=(current.location + value,)),
    }
    if mlake.settings.backend == "s3":  # an S3 location's key segments are plain names
        calls["location(segment)"] = dataclasses.replace(current, location=f"{base}{value}/", files=())
    before = snapshot(mlake.settings)
    refuse_all({name: (lambda p=p: catalog.publish(SPEC.table, p, current.version)) for name, p in calls.items()}
               | {"ensure_table(location)": lambda: catalog.ensure_table(SPEC, value)})
    assert_unchanged(mlake.settings, before)


@_ids(DATE_HOSTILE)
def test_stages_refuse_a_hostile_date_and_write_nothing(mlake: Lake, value):
    before = snapshot(mlake.settings)
    refuse_all({
        "publish_version": lambda: publish_version(mlake, value, V),
        "publish_versions": lambda: publish_versions(mlake, [(value, V)]),
        "retire_versions": lambda: retire_versions(mlake, value, grace_seconds=0),
        "process_day": lambda: wap.process_day(mlake, value),
        "write_and_audit": lambda: wap.write_and_audit(mlake, value),
        "compact_day": lambda: compact.compact_day(mlake, value),
        "read_manifest": lambda: compact.read_manifest(mlake, value, V),
        "audit_version": lambda: audit_version(mlake, value, V),
        "raw_objects": lambda: raw_objects(mlake, value),
    })
    assert_unchanged(mlake.settings, before)


@_ids(VERSION_HOSTILE)
def test_stages_refuse_a_hostile_version_and_write_nothing(mlake: Lake, value):
    before = snapshot(mlake.settings)
    refuse_all({
        "publish_version": lambda: publish_version(mlake, DAY, value),
        "publish_versions(good, bad)": lambda: publish_versions(mlake, [(DAY, _published(mlake).version),
                                                                        ("2026-11-02", value)]),
        "read_manifest": lambda: compact.read_manifest(mlake, DAY, value),
        "audit_version": lambda: audit_version(mlake, DAY, value),
    })
    assert_unchanged(mlake.settings, before)


@_ids(KEY_HOSTILE)
def test_query_reads_only_plain_keys_inside_the_table_folder(mlake: Lake, value):
    """Catalog values are input too (any tool can edit Glue): partition_files refuses a date, a
    file or a location that is not a plain key under the table's folder."""
    current = _published(mlake)
    base = mlake.storage.uri("curated", "clickstream/events/")
    before = snapshot(mlake.settings)
    refuse_all({
        "dt": lambda: query.partition_files(mlake, dataclasses.replace(current, dt=value)),
        "file(whole)": lambda: query.partition_files(mlake, dataclasses.replace(current, files=(value,))),
        "file(under table)": lambda: query.partition_files(mlake, dataclasses.replace(current, files=(base + value,))),
        "location(whole)": lambda: query.partition_files(mlake, dataclasses.replace(current, files=(), location=value)),
        "location(under table)": lambda: query.partition_files(
            mlake, dataclasses.replace(current, files=(), location=f"{base}{value}/")),
    })
    assert_unchanged(mlake.settings, before)
    # the published partition itself is read as before
    assert query.partition_files(mlake, current) == list(current.files)


# ------------------------------------------------------------------------------- command line


def _cli(lake: Lake, args: list[str], **env: str):
    return CliRunner().invoke(app, args, env={**lake.settings.to_env(), **env})


def assert_usage_error(result) -> None:
    """Exit 2, one ``error:`` line, no traceback, nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.output[:500])
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[:500]
    assert len(lines[0]) < 600, f"unreadable error line ({len(lines[0])} chars)"
    assert result.stdout == ""


@_ids(DATE_HOSTILE)
def test_cli_date_options_refuse_hostile_values(mlake: Lake, value):
    before = snapshot(mlake.settings)
    for args in (["compact", "--date", value], ["compact", "--no-publish", "--date", value],
                 ["verify", "--date", value], ["backfill", "--start", value, "--end", DAY],
                 ["backfill", "--start", DAY, "--end", value]):
        result = _cli(mlake, args)
        assert_usage_error(result)
        assert "--date" in result.stderr or "--start" in result.stderr or "--end" in result.stderr
    assert_unchanged(mlake.settings, before)


@_ids(HOSTILE)
def test_cli_table_database_and_location_refuse_hostile_values(mlake: Lake, value):
    before = snapshot(mlake.settings)
    runs = [["--table", value, "status"], ["--table", value, "query", "SELECT 1"]]
    if value:  # an empty --database / --location means the default one
        runs += [["ddl", "--database", value, "--location", S3_LOCATION], ["ddl", "--location", value]]
    for args in runs:
        assert_usage_error(_cli(mlake, args))
    if "\x00" not in value and value:  # the OS refuses NUL in environment variables
        for variable in ("LAKE_TABLE", "LAKE_GLUE_DATABASE", "LAKE_BUCKET_PREFIX"):
            result = _cli(mlake, ["status"], **{variable: value})
            assert_usage_error(result)
            assert variable in result.stderr or "table name" in result.stderr
    assert_unchanged(mlake.settings, before)


@_ids({k: v for k, v in HOSTILE.items() if "\x00" not in v})  # argv cannot carry NUL
def test_cli_query_with_a_hostile_table_name_fails_as_sql(mlake: Lake, value):
    before = snapshot(mlake.settings)
    statements = [f"SELECT count(*) FROM {duck.ident(value)}"]
    if value.strip() != "events":  # " events " and "events\n" unquoted are the table itself
        statements.append(f"SELECT count(*) FROM {value}")
    for sql in statements:
        result = _cli(mlake, ["query", sql])
        assert result.exit_code == 2, (sql[:80], result.output[:300])
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: ") and result.stdout == ""
    # as a quoted literal the same value is only data: no row matches it
    result = _cli(mlake, ["query", f"SELECT count(*) AS n FROM events WHERE event_id = {duck.literal(value)}",
                          "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"n": 0}]
    assert_unchanged(mlake.settings, before)
    result = _cli(mlake, ["query", "SELECT count(*) AS n FROM events", "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == [{"n": 5}]  # still there and whole


def test_duckdb_view_is_created_with_quoted_identifiers(mlake: Lake):
    sql = query.view_sql(mlake)
    assert sql.startswith('CREATE OR REPLACE VIEW "events" AS SELECT ')
    for name in (*SPEC.column_names, SPEC.partition_key):
        assert f'"{name}"' in sql
    for uri in _published(mlake).files:
        assert duck.literal(uri) in sql


@_ids(HOSTILE)
def test_duckdb_quoting_round_trips_any_value(value):
    """What duck.ident / duck.literal make of a value is that value, never more SQL."""
    con = duckdb.connect()
    try:
        if "\x00" in value:
            assert_refused(duck.ident, value)
            assert_refused(duck.literal, value)
            return
        assert con.execute(f"SELECT {duck.literal(value)}").fetchone() == (value,)
        if value == "":
            with pytest.raises(duckdb.Error):  # a zero-length name is not a name
                con.execute(f"CREATE VIEW {duck.ident(value)} AS SELECT 1 AS x")
            return
        con.execute(f"CREATE VIEW {duck.ident(value)} AS SELECT 1 AS {duck.ident(value)}")
        assert con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall() == [(value,)]
        assert con.execute(f"SELECT {duck.ident(value)} FROM {duck.ident(value)}").fetchone() == (1,)
    finally:
        con.close()


# --------------------------------------------------------------- events carrying hostile values


TIME_REASONS = {"unparseable_time", "time_out_of_range"}
HOSTILE_TIMES = {
    **HOSTILE,
    "ts-traversal": f"{DAY}T10:00:00Z/../../x",
    "ts-sql": f"{DAY}T10:00:00Z'; DROP TABLE y",
    "ts-fullwidth": _digits("2026", "\uff10") + "-11-01T10:00:00Z",
    "ts-rtl": f"{DAY}T10:00:00\u202eZ",
    "ts-long-fraction": f"{DAY}T10:00:00.{'9' * 300}Z",
    "ts-year-9999-west": "9999-12-31T23:59:59-01:00",
    "ts-year-1-east": "0001-01-01T00:00:00+01:00",
    "ts-offset-25h": f"{DAY}T10:00:00-25:00",
    "ts-huge-number": 1e300,
    "ts-negative": -1,
    "ts-bool": True,
    "ts-object": {"$date": DAY},
    "ts-list": [DAY],
}


def _land(lake: Lake, key: str, lines: list) -> tuple:
    lake.storage.put("landing", key, ndjson(lines))
    report = land_inbox(lake)
    (result,) = report.files
    assert result.balanced and result.lines == len(lines)
    return result, read_raw_rows(lake), {q["line"]: q for q in read_quarantine(lake)}


def test_hostile_timestamps_are_quarantined_with_a_reason(lake: Lake):
    names = list(HOSTILE_TIMES)
    lines = [event(n, timestamp=HOSTILE_TIMES[name], receivedAt=None, sentAt=None) for n, name in enumerate(names)]
    _, rows, quarantined = _land(lake, "web/times.ndjson.gz", lines)
    assert rows == []
    wrong = {names[n]: quarantined.get(n + 1, {}).get("reason") for n in range(len(names))
             if quarantined.get(n + 1, {}).get("reason") not in TIME_REASONS}
    assert not wrong, f"not quarantined as a bad time: {wrong}"
    assert all(q["detail"] and len(q["detail"]) < 300 for q in quarantined.values())
    assert_keys_safe(lake)


def test_a_timestamp_with_a_nul_after_it_is_quarantined(lake: Lake):
    lines = [event(1, timestamp=f"{DAY}T10:00:00Z\x00x"), event(2, timestamp=f"{DAY}T10:00:00\x00")]
    result, _, quarantined = _land(lake, "web/nul.ndjson.gz", lines)
    assert {q["reason"] for q in quarantined.values()} <= TIME_REASONS and result.quarantined == 2


def test_events_carrying_hostile_values_land_as_data_and_keys_stay_plain(lake: Lake):
    """Ids, names, ids and properties full of traversal, quotes, SQL and NUL are column values:
    they land byte for byte in raw and in the curated Parquet, and no key contains them."""
    names = list(HOSTILE)
    lines = []
    for n, name in enumerate(names):
        value = HOSTILE[name]
        lines.append(event(n, day=DAY, messageId=value, event=value, anonymousId=value, userId=f"u-{n}",
                           properties={value: value, "path": value, "sku": f"sku-{n}"},
                           context={"page": {"url": value, "path": value}, "ip": value, value: [value]}))
    # a landing name full of odd but legal characters becomes a plain source name
    result, rows, quarantined = _land(lake, "..Web=SDK+v2@edge../batch.ndjson.gz", lines)
    by_id = {r["event_id"]: r for r in rows}
    for n, name in enumerate(names):
        value = HOSTILE[name]
        if n + 1 in quarantined:
            # only what the schema refuses (an empty or over-long id) is quarantined, with its reason
            assert name in ("empty", "long-100k"), (name, quarantined[n + 1]["reason"])
            assert quarantined[n + 1]["reason"] in ("missing_required", "wrong_type")
            assert orjson.loads(quarantined[n + 1]["raw"])["messageId"] == value  # kept byte for byte
            continue
        row = by_id[value]
        assert (row["event_name"], row["anonymous_id"], row["page_url"], row["page_path"], row["ip"]) == (value,) * 5
        assert orjson.loads(row["properties"])[value] == value
        assert orjson.loads(row["context"])[value] == [value]
    assert len(rows) + len(quarantined) == len(names) and len(quarantined) == 2
    assert {o["key"].rsplit("/", 1)[1].split("-")[0] for o in result.outputs} == {"web"}
    assert_keys_safe(lake)

    # compacted and published: the values come back from the Parquet files exactly
    done = wap.process_day(lake, DAY)
    assert done.publish is not None and done.publish.changed
    assert_keys_safe(lake)
    names_sql, got = query.query(lake, "SELECT event_id, event_name, properties FROM events ORDER BY event_id")
    assert names_sql == ["event_id", "event_name", "properties"]
    expected = sorted((r["event_id"], r["event_name"], r["properties"]) for r in rows)
    assert sorted(got) == expected


def test_a_landing_key_the_lake_refuses_never_reaches_a_raw_key(settings, lake: Lake, request):
    """Producers name S3 objects freely; a key validate_key refuses must not become part of a raw
    key, and must not stop the other objects from landing."""
    if settings.backend == "local":
        with pytest.raises(ValueError, match="invalid object key"):  # the folder cannot even hold it
            lake.storage.put("landing", "web/it's a; DROP.ndjson", ndjson([event(1)]))
        return
    hostile = "web/it's a; DROP.ndjson"
    _aws(settings, "s3").put_object(Bucket=settings.bucket("landing"), Key=hostile, Body=ndjson([event(1)]),
                                    ServerSideEncryption="AES256")
    lake.storage.put("landing", "web/fine.ndjson.gz", ndjson([event(2)]))
    # read as the producer named it (storage.read_key); every key written comes from its source
    # name and digest, so both objects land and no key carries the odd name
    report = land_inbox(lake)
    by_key = {f.source_key: f for f in report.files}
    assert by_key[hostile].landed == 1 and not by_key[hostile].file_reason
    assert by_key["web/fine.ndjson.gz"].landed == 1
    assert_keys_safe(lake)
    with pytest.raises(ValueError, match="invalid object key"):  # traversal stays refused on reads
        lake.storage.get("landing", "web/../raw/x")


# ----------------------------------------------------- hostile values another tool put in the catalog


def _plant(lake: Lake, dt: str, version: str, location: str, files: list[str]) -> None:
    """Register a partition behind the lake's back, as another tool (or a hand edit) would."""
    base = lake.storage.uri("curated", "clickstream/events/")
    lake.catalog.ensure_table(SPEC, base)
    if lake.settings.catalog_kind == "local":
        db = sqlite3.connect(lake.catalog.path)
        with db:
            db.execute("INSERT INTO partitions VALUES (?,?,?,?,?,?,?)",
                       ("events", dt, version, location, orjson.dumps(files).decode(), 1, 0.0))
        db.close()  # the last connection: SQLite folds the WAL into the file, as after any run
        return
    _aws(lake.settings, "glue").create_partition(
        DatabaseName=lake.settings.glue_database, TableName="events", PartitionInput={
            "Values": [dt], "StorageDescriptor": {"Location": location},
            "Parameters": {"lake.version": version, "lake.files": orjson.dumps(files).decode()}})


@pytest.mark.parametrize("shape", ["dt", "version", "files", "location"])
def test_hostile_values_already_in_the_catalog_reach_no_ddl_and_no_read(lake: Lake, shape):
    """``lake ddl`` and ``lake query`` treat catalog values as input: a bad date, version, file
    list or location gives exit 2 and one error line, never DDL text or a read outside the table."""
    base = lake.storage.uri("curated", "clickstream/events/")
    good = f"{base}dt={DAY}/{V}/"
    dt, version, location, files = DAY, V, good, [good + "part-00000.parquet"]
    if shape == "dt":
        dt = f"{DAY}' OR '1'='1"
    elif shape == "version":
        version = "v-1/../../x"
    elif shape == "files":
        files = ["/etc/passwd", f"{base}../../../etc/passwd"]
    else:
        location, files = f"{base}../../", []
    _plant(lake, dt, version, location, files)
    before = snapshot(lake.settings)
    commands = [["ddl", "--location", S3_LOCATION]] if shape in ("dt", "version") else []
    if shape != "version":  # the version is not part of what a query reads
        commands.append(["query", "SELECT count(*) FROM events"])
    for args in commands:
        result = _cli(lake, args)
        assert_usage_error(result)
        assert "etc/passwd" not in result.stdout
    assert_unchanged(lake.settings, before)
