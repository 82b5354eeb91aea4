"""COST: storage by bucket/prefix/class, compaction's request saving and the policy's effect,
checked against independent listings on both backends; ``lake cost`` changes nothing."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from pipelines import layout
from pipelines.cli import app
from pipelines.compact import read_manifest
from pipelines.config import ROLES
from pipelines.cost import (
    ARCHIVE_OVERHEAD,
    DEFAULT_TRANSITION_PRICES,
    MIN_BILLABLE_BYTES,
    PARQUET_GETS_PER_FILE,
    RequestPrices,
    billable,
    cost_report,
    load_price_file,
    prefix_of,
)
from pipelines.errors import ConfigError
from pipelines.lake import Lake
from pipelines.land import land_inbox
from pipelines.tier import DEFAULT_PRICES, GiB, TieringPolicy, plan
from pipelines.wap import process_day
from tests.conftest import event, ndjson
from tests.test_tier import _snapshot

pytestmark = pytest.mark.timeout(300)

# prices per GiB-month chosen so that a cost is exactly bytes x k (no rounding in the comparison)
PRICES = {"STANDARD": 5 * GiB, "STANDARD_IA": 3 * GiB, "GLACIER_IR": 2 * GiB,
          "GLACIER": 1 * GiB, "DEEP_ARCHIVE": 1 * GiB}
# request prices per 1,000 chosen so that a cost is exactly requests x k
REQUESTS = {"GET": 1000, "PUT": 5000, "TRANSITION": {"STANDARD_IA": 3000, "GLACIER_IR": 7000}}
SOURCES = ("web", "ios")
HOURS = 4


@pytest.fixture
def built(lake: Lake) -> tuple[Lake, list[str], date]:
    """Three published days (ages 100, 40 and 2), two sources x four hours of raw each, some
    quarantine (bad lines and a bad file) and a stray top-level landing object."""
    today = datetime.now(UTC).date()  # event times may not be later than their arrival
    days = [(today - timedelta(days=age)).isoformat() for age in (100, 40, 2)]
    for n, d in enumerate(days):
        for s, source in enumerate(SOURCES):
            events = [event(n * 10_000 + s * 1000 + i, day=d, hour=i % HOURS) for i in range(40)]
            lake.storage.put("landing", f"{source}/{d}.ndjson.gz", ndjson(events))
    lake.storage.put("landing", "bad/lines.ndjson", ndjson([b'{"broken', b'{"type": "track"}'], gz=False))
    lake.storage.put("landing", "bad/file.ndjson.gz", b"\x1f\x8b" + b"not really gzip" * 10)
    land_inbox(lake)
    for d in days:
        assert process_day(lake, d).audit.passed
    lake.storage.put("landing", "stray.txt", b"not under a source folder")
    return lake, days, today


def _independent_listing(lake: Lake, role: str) -> list[tuple[str, int, str]]:
    """(key, size, storage class) of every object, not through the lake's storage layer."""
    s = lake.settings
    if s.backend == "s3":
        client = boto3.client("s3", endpoint_url=s.s3_endpoint_url, region_name=s.aws_region)
        out = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.bucket(role)):
            out += [(o["Key"], o["Size"], o.get("StorageClass", "STANDARD")) for o in page.get("Contents", ())]
        return out
    base = s.root_path / role
    out = []
    for dirpath, _, names in os.walk(base):
        for name in names:
            full = Path(dirpath) / name
            out.append((full.relative_to(base).as_posix(), full.stat().st_size, "STANDARD"))
    return out


def _move(lake: Lake, role: str, key: str, storage_class: str) -> None:
    """Put an object into a storage class, as S3 lifecycle would (test setup)."""
    bucket = lake.settings.bucket(role)
    lake.storage.client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                                    StorageClass=storage_class, **lake.storage.sse_args)


def _line(report, role: str, prefix: str, cls: str):
    found = [s for s in report.storage if (s.role, s.prefix, s.storage_class) == (role, prefix, cls)]
    assert len(found) == 1, [(s.role, s.prefix, s.storage_class) for s in report.storage]
    return found[0]


# --------------------------------------------------------------------------------------------
# pure rules


@pytest.mark.parametrize(("role", "key", "prefix"), [
    ("curated", "clickstream/events/dt=2026-11-01/v-0123456789abcdef/part-00000.parquet", "clickstream/events/"),
    ("raw", "clickstream/events/dt=2026-11-01/hour=03/web-ab.ndjson.gz", "clickstream/events/"),
    ("raw", "_ledger/clickstream/events/ab.json", "_ledger/"),
    ("curated", "_locks/clickstream/events/dt=2026-11-01.lock", "_locks/"),
    ("curated", "_archive/x/y.json", "_archive/"),
    ("curated", "_tiering/state.json", "_tiering/"),
    ("quarantine", "clickstream/events/lines/arrival=2026-11-01/web-ab.ndjson", "clickstream/events/lines/"),
    ("quarantine", "clickstream/events/files/arrival=2026-11-01/web-ab.bin", "clickstream/events/files/"),
    ("landing", "segment/2026/11/01/batch.ndjson.gz", "segment/"),
    ("landing", "_sdk/x.json", "_sdk/"),
    ("landing", "loose.ndjson", ""),
    ("curated", "README", ""),
])
def test_prefix_of(role, key, prefix):
    assert prefix_of(role, key) == prefix


def test_billable_sizes_follow_the_s3_minimums():
    small, big = 1000, 200_000
    assert billable("STANDARD", small) == (small, 0)
    assert billable("STANDARD_IA", small) == (MIN_BILLABLE_BYTES, 0) == (128 * 1024, 0)
    assert billable("GLACIER_IR", small) == (MIN_BILLABLE_BYTES, 0)
    assert billable("STANDARD_IA", big) == (big, 0)
    assert billable("GLACIER", small) == (small + 32 * 1024, 8 * 1024)
    assert billable("DEEP_ARCHIVE", big) == (big + 32 * 1024, 8 * 1024)
    assert billable("INTELLIGENT_TIERING", small) == (small, 0)


# --------------------------------------------------------------------------------------------
# storage


def test_storage_totals_match_independent_listings(built):
    lake, _, today = built
    report = cost_report(lake, TieringPolicy(prices=PRICES), today)
    totals = report.totals("role")
    for role in ROLES:
        listed = _independent_listing(lake, role)
        lines = [s for s in report.storage if s.role == role]
        assert sum(s.objects for s in lines) == len(listed), role
        assert sum(s.bytes for s in lines) == sum(size for _, size, _ in listed), role
        if listed:
            assert totals[role]["objects"] == len(listed)
            assert totals[role]["bytes"] == sum(size for _, size, _ in listed)
            # everything is STANDARD here: USD is exactly bytes x 5
            assert totals[role]["usd_month"] == 5 * totals[role]["bytes"]
        # every listed key is counted under its own prefix
        for prefix in {prefix_of(role, k) for k, _, _ in listed}:
            in_prefix = [(k, n) for k, n, _ in listed if prefix_of(role, k) == prefix]
            line = _line(report, role, prefix, "STANDARD")
            assert (line.objects, line.bytes) == (len(in_prefix), sum(n for _, n in in_prefix))
    assert report.storage_usd_month == 5 * sum(s.bytes for s in report.storage)

    prefixes = {(s.role, s.prefix) for s in report.storage}
    table = layout.table_prefix(lake.spec) + "/"
    assert {("curated", table), ("raw", table), ("raw", "_ledger/"), ("quarantine", table + "lines/"),
            ("quarantine", table + "files/"), ("landing", "web/"), ("landing", "ios/"),
            ("landing", "bad/"), ("landing", "")} <= prefixes
    assert _line(report, "landing", "", "STANDARD").objects == 1
    assert _line(report, "raw", table, "STANDARD").objects == len(SOURCES) * HOURS * 3


def test_storage_classes_are_priced_with_their_minimums(lake, backend):
    if backend == "local":
        pytest.skip("the embedded backend has one storage class")
    land = [event(i, day=(datetime.now(UTC).date() - timedelta(days=3)).isoformat(), hour=i % 4) for i in range(60)]
    lake.storage.put("landing", "web/a.ndjson.gz", ndjson(land))
    land_inbox(lake)
    dt = land[0]["timestamp"][:10]
    process_day(lake, dt)
    p = lake.catalog.get_partition(lake.spec.table, dt)
    curated = list(lake.storage.list("curated", layout.version_prefix(lake.spec, dt, p.version)))
    parts = [o for o in curated if o.key.endswith(".parquet")]
    others = [o for o in curated if not o.key.endswith(".parquet")]  # manifest, audit: stay STANDARD
    assert parts and others and all(o.size < MIN_BILLABLE_BYTES for o in parts)
    raw = list(lake.storage.list("raw", layout.raw_day_prefix(lake.spec, dt)))
    assert len(raw) >= 2
    big = lake.storage.put("curated", "_scratch/big.bin", b"x" * 200_000)
    for o in parts:
        _move(lake, "curated", o.key, "STANDARD_IA")
    _move(lake, "curated", big.key, "STANDARD_IA")
    glacier, deep = raw[:1], raw[1:]
    for o in glacier:
        _move(lake, "raw", o.key, "GLACIER")
    for o in deep:
        _move(lake, "raw", o.key, "DEEP_ARCHIVE")

    report = cost_report(lake, TieringPolicy(prices=PRICES))
    table = layout.table_prefix(lake.spec) + "/"
    ia = _line(report, "curated", table, "STANDARD_IA")
    assert (ia.objects, ia.bytes) == (len(parts), sum(o.size for o in parts))
    assert ia.billable_bytes == MIN_BILLABLE_BYTES * len(parts)  # every small IA object bills 128 KiB
    assert ia.usd_month == 3 * MIN_BILLABLE_BYTES * len(parts)
    big_ia = _line(report, "curated", "_scratch/", "STANDARD_IA")
    assert (big_ia.objects, big_ia.bytes, big_ia.usd_month) == (1, 200_000, 3 * 200_000)
    standard = _line(report, "curated", table, "STANDARD")
    assert (standard.objects, standard.usd_month) == (len(others), 5 * sum(o.size for o in others))

    g = _line(report, "raw", table, "GLACIER")
    index, meta = ARCHIVE_OVERHEAD["GLACIER"]
    assert (g.objects, g.bytes) == (len(glacier), sum(o.size for o in glacier))
    assert g.usd_month == 1 * (g.bytes + index * g.objects) + 5 * meta * g.objects
    d = _line(report, "raw", table, "DEEP_ARCHIVE")
    assert (d.objects, d.bytes) == (len(deep), sum(o.size for o in deep))
    assert d.usd_month == 1 * (d.bytes + 32 * 1024 * d.objects) + 5 * 8 * 1024 * d.objects

    # the independent listing agrees on the classes
    listed = {k: c for k, _, c in _independent_listing(lake, "curated")}
    assert {listed[o.key] for o in parts} == {"STANDARD_IA"}
    by_class = report.totals("storage_class")
    assert by_class["GLACIER"]["objects"] == len(glacier) and by_class["STANDARD_IA"]["objects"] == len(parts) + 1
    assert report.unpriced_classes == []


def test_a_class_without_a_price_is_reported_unpriced(lake, backend):
    if backend == "local":
        pytest.skip("the embedded backend has one storage class")
    info = lake.storage.put("landing", "web/x.bin", b"y" * 1000)
    _move(lake, "landing", info.key, "INTELLIGENT_TIERING")
    report = cost_report(lake, TieringPolicy(prices=PRICES))
    line = _line(report, "landing", "web/", "INTELLIGENT_TIERING")
    assert (line.objects, line.bytes, line.usd_month) == (1, 1000, None)
    assert report.unpriced_classes == ["INTELLIGENT_TIERING"]
    assert report.storage_usd_month == 0


# --------------------------------------------------------------------------------------------
# compaction and the policy


def test_compaction_counts_match_the_manifest_and_the_buckets(built):
    lake, days, today = built
    report = cost_report(lake, TieringPolicy(prices=PRICES), today, request_prices=REQUESTS)
    assert [d.dt for d in report.compaction] == days
    raw = _independent_listing(lake, "raw")
    curated = _independent_listing(lake, "curated")
    for d in report.compaction:
        p = lake.catalog.get_partition(lake.spec.table, d.dt)
        manifest = read_manifest(lake, d.dt, p.version)
        raw_keys = {k for k, _, _ in raw if k.startswith(layout.raw_day_prefix(lake.spec, d.dt))}
        parts = {k for k, _, _ in curated
                 if k.startswith(layout.version_prefix(lake.spec, d.dt, p.version)) and k.endswith(".parquet")}
        assert d.version == p.version
        assert d.objects_before == len(manifest["inputs"]) == len(raw_keys) == len(SOURCES) * HOURS
        assert {i["key"] for i in manifest["inputs"]} == raw_keys
        assert d.objects_after == len(manifest["outputs"]) == len(parts) >= 1
        assert {o["key"] for o in manifest["outputs"]} == parts
        assert d.bytes_before == sum(n for k, n, _ in raw if k in raw_keys)
        assert d.bytes_after == sum(n for k, n, _ in curated if k in parts)
        assert (d.gets_before, d.gets_after) == (d.objects_before, PARQUET_GETS_PER_FILE * d.objects_after)
        # GET at 1,000 USD per 1,000: the USD is the number of GETs
        assert (d.usd_per_scan_before, d.usd_per_scan_after) == (d.gets_before, d.gets_after)
        assert d.usd_saved_per_scan == d.gets_before - d.gets_after > 0


def test_policy_effect_equals_the_plan(built):
    lake, days, today = built
    policy = TieringPolicy(prices=PRICES, min_transition_bytes=1)  # the test's files are small
    report = cost_report(lake, policy, today, request_prices=REQUESTS)
    expected = plan(lake, policy, today)
    effect = report.policy
    assert effect.today == expected.today == today.isoformat()
    assert (effect.cost_now, effect.cost_after) == (expected.cost_now, expected.cost_after)
    assert effect.monthly_saving == expected.monthly_saving > 0
    assert [(m.dt, m.target, m.objects, m.bytes, m.kept_small) for m in effect.moves] == \
        [(m.dt, m.target, m.objects, m.bytes, m.kept_small) for m in expected.moves]
    # the 40-day-old day was written today: STANDARD_IA would take it at day 70 and lose it to
    # GLACIER_IR at day 90, inside its 30-day minimum, so it waits (as the tagging pass does)
    assert {m.dt: m.target for m in effect.moves} == {days[0]: "GLACIER_IR"}
    for m in effect.moves:
        assert m.transition_usd == m.objects * REQUESTS["TRANSITION"][m.target] / 1000  # per 1,000
    assert effect.transition_requests == sum(m.objects for m in expected.moves)
    assert effect.transition_usd == sum(m.transition_usd for m in effect.moves)
    assert effect.payback_months == effect.transition_usd / effect.monthly_saving

    # the default policy: every file is under 128 KiB, nothing moves, nothing to pay
    default = cost_report(lake, TieringPolicy(prices=PRICES), today)
    assert default.policy.moves == [] and default.policy.transition_usd == 0
    assert default.policy.payback_months is None


# --------------------------------------------------------------------------------------------
# prices


def test_price_file_formats(tmp_path: Path):
    assert load_price_file(None) == (DEFAULT_PRICES, RequestPrices())
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"STANDARD": 0.02, "requests": {"GET": 0.001, "TRANSITION": {"GLACIER": 0.04}}}))
    storage, requests = load_price_file(str(f))
    assert storage == {**DEFAULT_PRICES, "STANDARD": 0.02}
    assert requests == RequestPrices(get=0.001, transition={**DEFAULT_TRANSITION_PRICES, "GLACIER": 0.04})
    f.write_text(json.dumps({"GLACIER_IR": 1}))  # the plain LAKE_PRICES_FILE format still works
    assert load_price_file(str(f)) == ({**DEFAULT_PRICES, "GLACIER_IR": 1.0}, RequestPrices())
    for bad in ([1], {"STANDRD": 1}, {"STANDARD": -1}, {"STANDARD": "1"}, {"requests": {"HEAD": 1}},
                {"requests": {"GET": -1}}, {"requests": {"TRANSITION": {"STANDARD": 1}}}, {"requests": 3}):
        f.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match="prices file"):
            load_price_file(str(f))
    with pytest.raises(ConfigError, match="requests"):
        RequestPrices.from_mapping({"TRANSITION": {"GLACIER": True}})


def _cli(lake: Lake, *args: str):
    # on S3 the `settings` fixture put the test's LAKE_* variables in the environment
    return CliRunner().invoke(app, ["--root", str(lake.settings.root_path), "cost", *args])


def test_cli_json_and_table(built, tmp_path, monkeypatch):
    lake, days, today = built
    monkeypatch.delenv("LAKE_PRICES_FILE", raising=False)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({**PRICES, "requests": REQUESTS}))
    result = _cli(lake, "--format", "json", "--prices", str(prices), "--today", today.isoformat())
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["prices"]["storage_usd_per_gib_month"] == {k: float(v) for k, v in PRICES.items()}
    assert out["prices"]["requests_usd_per_1000"]["GET"] == 1000
    expected = cost_report(lake, TieringPolicy(prices=PRICES), today, request_prices=REQUESTS).to_dict()
    assert out == json.loads(json.dumps(expected))
    bytes_all = sum(size for role in ROLES for _, size, _ in _independent_listing(lake, role))
    assert out["storage_totals"]["bytes"] == bytes_all
    assert out["storage_totals"]["usd_month"] == 5 * bytes_all  # --prices replaced the list prices
    assert [d["dt"] for d in out["compaction"]] == days

    # LAKE_PRICES_FILE (with a "requests" section) is the default; --prices wins over it
    env_prices = tmp_path / "env.json"
    env_prices.write_text(json.dumps({"STANDARD": 2 * GiB, "requests": {"GET": 3000}}))
    monkeypatch.setenv("LAKE_PRICES_FILE", str(env_prices))
    from_env = json.loads(_cli(lake, "--format", "json").stdout)
    assert from_env["storage_totals"]["usd_month"] == 2 * bytes_all
    assert from_env["compaction"][0]["usd_per_scan_before"] == 3 * from_env["compaction"][0]["gets_before"]
    assert json.loads(_cli(lake, "--format", "json", "--prices", str(prices)).stdout)["storage_totals"][
        "usd_month"] == 5 * bytes_all

    table = _cli(lake, "--today", today.isoformat())
    assert table.exit_code == 0, table.output
    for needle in ("storage", "compaction", "tiering policy", "_ledger/", "clickstream/events/lines/",
                   "(top level)", days[0], "USD/month", "→"):
        assert needle in table.stdout, needle


@pytest.mark.parametrize(("content", "needle"), [
    (None, "No such file"),
    ("{not json", "prices file"),
    (json.dumps({"STANDARD": -1}), "USD per GiB-month"),
    (json.dumps({"requests": {"GETS": 1}}), "USD per 1,000 requests"),
])
def test_cli_bad_prices_file_is_one_line_exit_2(built, tmp_path, content, needle):
    lake = built[0]
    path = tmp_path / "prices.json"
    if content is not None:
        path.write_text(content)
    result = _cli(lake, "--prices", str(path))
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: prices file ") and needle in lines[0], lines
    assert "Traceback" not in result.output


def test_cli_bad_today(built):
    result = _cli(built[0], "--today", "2026-13-01")
    assert result.exit_code == 2 and result.stderr.startswith("error: --today"), result.output


def test_cost_changes_nothing(built):
    lake, _, today = built
    before = _snapshot(lake)
    partitions = lake.catalog.list_partitions(lake.spec.table)
    cost_report(lake, TieringPolicy(prices=PRICES, min_transition_bytes=1), today)
    assert _cli(lake).exit_code == 0
    assert _cli(lake, "--format", "json").exit_code == 0
    assert _snapshot(lake) == before
    assert lake.catalog.list_partitions(lake.spec.table) == partitions
