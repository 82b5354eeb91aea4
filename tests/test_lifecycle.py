"""Lifecycle as code: the policy's rules on the emulator's buckets, next to rules that are not ours.

Rules are read back over HTTP from the moto server (whose lifecycle filters keep their size
predicates, as S3's do: see ``pipelines.emulator._faithful_lifecycle_filters``). PUTs are counted
with a botocore event hook on the lake's own client: it observes the calls, it changes nothing.
"""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines import layout
from pipelines.cli import app
from pipelines.errors import ConfigError, UnsupportedError
from pipelines.lake import Lake
from pipelines.lifecycle import (
    LOCKS_PREFIX,
    RULE_ID_PREFIX,
    apply_lifecycle,
    canonical,
    check_rules,
    desired_rules,
    filters_overlap,
    plan_lifecycle,
    predicates,
    read_lifecycle,
    rule_problems,
    same_rule,
)
from pipelines.locks import lock_key
from pipelines.tier import MIN_STORAGE_DAYS, MIN_TRANSITION_BYTES, TIER_TAG, TieringPolicy
from tests.conftest import s3_settings_for

pytestmark = pytest.mark.timeout(300)

#: a rule someone else put on the bucket: it must survive every apply exactly as it was
FOREIGN = {"ID": "team-logs-expire", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 3}}
ROLES = ("landing", "raw", "curated", "quarantine")


@pytest.fixture
def s3_lake(moto_endpoint: str, tmp_path: Path) -> Lake:
    return Lake.open(s3_settings_for(moto_endpoint, tmp_path / "lake"))


def put_rules(lake: Lake, role: str, rules: list[dict]) -> None:
    lake.storage.client.put_bucket_lifecycle_configuration(
        Bucket=lake.storage.buckets[role], LifecycleConfiguration={"Rules": rules})


def rules_of(lake: Lake, role: str) -> list[dict]:
    return read_lifecycle(lake.storage, role)[0]


def by_id(rules: list[dict]) -> dict[str, dict]:
    return {r["ID"]: r for r in rules}


class PutCounter:
    """Counts PutBucketLifecycleConfiguration calls made by a client (by bucket)."""

    def __init__(self, client):
        self.buckets: list[str] = []
        client.meta.events.register("before-call.s3.PutBucketLifecycleConfiguration", self)

    def __call__(self, context, **_):
        self.buckets.append(context["input_params"]["Bucket"])


# ------------------------------------------------------------------------------------ emulator


def test_emulator_round_trips_size_predicates(s3_lake):
    size_rules = [
        {"ID": "and-sizes", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "p/", "Tags": [{"Key": TIER_TAG, "Value": "GLACIER_IR"}],
                            "ObjectSizeGreaterThan": 131071, "ObjectSizeLessThan": 10 << 30}},
         "Transitions": [{"Days": 0, "StorageClass": "GLACIER_IR"}]},
        {"ID": "alone", "Status": "Enabled", "Filter": {"ObjectSizeLessThan": 131072},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 30}},
    ]
    put_rules(s3_lake, "curated", size_rules)
    got = by_id(rules_of(s3_lake, "curated"))
    assert got["and-sizes"]["Filter"] == size_rules[0]["Filter"]
    assert got["alone"]["Filter"] == {"ObjectSizeLessThan": 131072}
    # as on S3: outside And a filter holds one predicate
    with pytest.raises(Exception, match="MalformedXML"):
        put_rules(s3_lake, "curated", [{"ID": "two", "Status": "Enabled",
                                        "Filter": {"Prefix": "p/", "ObjectSizeGreaterThan": 1},
                                        "Expiration": {"Days": 3}}])


def test_emulator_fix_is_applied_once():
    from moto.s3.models import FakeBucket
    from moto.s3.responses import S3Response

    from pipelines.emulator import _faithful_lifecycle_filters

    _faithful_lifecycle_filters()
    before = (FakeBucket.set_lifecycle, S3Response.get_bucket_lifecycle)
    _faithful_lifecycle_filters()
    assert (FakeBucket.set_lifecycle, S3Response.get_bucket_lifecycle) == before


# ------------------------------------------------------------------------------- desired rules


def test_desired_rules_are_the_tables_and_safe(local_lake):
    policy = TieringPolicy()
    rules = desired_rules(local_lake.settings, local_lake.spec, policy)
    check_rules(rules)
    prefix = layout.table_prefix(local_lake.spec) + "/"
    spec = local_lake.spec
    # the keys each table rule is meant for start with its prefix
    assert layout.raw_key(spec, date(2026, 11, 1), 3, "src", "0" * 16).startswith(prefix)
    assert layout.quarantine_lines_key(spec, date(2026, 11, 1), "src", "0" * 16).startswith(prefix)
    assert layout.quarantine_file_key(spec, date(2026, 11, 1), "src", "0" * 16).startswith(prefix)
    assert layout.part_key(spec, "2026-11-01", "v-" + "0" * 16, 0).startswith(prefix)
    for role, rs in rules.items():
        ids = [r["ID"] for r in rs]
        assert len(set(ids)) == len(ids) and all(i.startswith(RULE_ID_PREFIX) and len(i) <= 255 for i in ids)
        assert any("abort-incomplete-multipart" in i for i in ids), role
        for r in rs:
            if f"{RULE_ID_PREFIX}{layout.table_prefix(spec)}:" in r["ID"]:
                assert predicates(r)["prefix"] == prefix, r
    # landing objects expire only once landed (tagged lake-state=landed), never by age alone
    assert all(predicates(r)["tags"] == [["lake-state", "landed"]]
               for r in rules["landing"] if "Days" in (r.get("Expiration") or {}))
    raw = by_id(rules["raw"])[f"{RULE_ID_PREFIX}clickstream/events:raw-expire-compacted"]
    assert raw["Expiration"] == {"Days": policy.raw_expire_after_compacted_days}
    assert predicates(raw)["tags"] == [["lake-state", "compacted"]]
    curated = by_id(rules["curated"])
    for _, cls in policy.curated_transitions:
        move = curated[f"{RULE_ID_PREFIX}clickstream/events:curated-tier-{cls}"]
        assert predicates(move) == {"prefix": prefix, "tags": [[TIER_TAG, cls]],
                                    "gt": MIN_TRANSITION_BYTES - 1, "lt": None}
        keep = curated[f"{RULE_ID_PREFIX}clickstream/events:curated-noncurrent-{cls}"]
        assert keep["NoncurrentVersionExpiration"]["NoncurrentDays"] >= MIN_STORAGE_DAYS[cls]
    assert by_id(rules["quarantine"])[f"{RULE_ID_PREFIX}clickstream/events:quarantine-expire"]["Expiration"] == {
        "Days": policy.quarantine_expire_days}
    # landing expiry only when asked for
    asked = desired_rules(local_lake.settings, spec, policy, landing_expire_days=14)
    assert {"Days": 14} in [r.get("Expiration") for r in asked["landing"]]


def test_lock_versions_expire(local_lake):
    key = lock_key(local_lake, "2026-11-01")
    assert key.startswith(LOCKS_PREFIX)
    curated = desired_rules(local_lake.settings, local_lake.spec, TieringPolicy())["curated"]
    untagged_small = {"prefix": key, "tags": [], "gt": None, "lt": 200}  # a lock: tiny, no tags
    covering = [r for r in curated if "NoncurrentVersionExpiration" in r and filters_overlap(predicates(r), untagged_small)]
    assert min(r["NoncurrentVersionExpiration"]["NoncurrentDays"] for r in covering) == 1


@pytest.mark.parametrize("rule, needle", [
    ({"ID": "no-size", "Status": "Enabled", "Filter": {"Prefix": "a/"},
      "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}]}, "under 131072 bytes"),
    ({"ID": "too-soon", "Status": "Enabled", "Filter": {"ObjectSizeGreaterThan": 131071},
      "Transitions": [{"Days": 10, "StorageClass": "STANDARD_IA"}]}, "S3 needs 30"),
    ({"ID": "short-stay", "Status": "Enabled", "Filter": {"ObjectSizeGreaterThan": 131071},
      "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 40, "StorageClass": "GLACIER_IR"}]},
     "leaves STANDARD_IA after 10 days"),
    ({"ID": "tag-keep", "Status": "Enabled",
      "Filter": {"And": {"Prefix": "a/", "Tags": [{"Key": TIER_TAG, "Value": "GLACIER_IR"}]}},
      "NoncurrentVersionExpiration": {"NoncurrentDays": 30}}, "before its 90-day minimum"),
])
def test_check_rules_refuses_penalties(rule, needle):
    with pytest.raises(ValueError, match=needle):
        check_rules([rule])


def test_check_rules_sees_overlapping_expirations():
    move = {"ID": "move", "Status": "Enabled",
            "Filter": {"And": {"Prefix": "t/", "Tags": [{"Key": TIER_TAG, "Value": "GLACIER_IR"}],
                               "ObjectSizeGreaterThan": 131071}},
            "Transitions": [{"Days": 0, "StorageClass": "GLACIER_IR"}]}
    everything = {"ID": "all", "Status": "Enabled", "Filter": {"Prefix": ""},
                  "NoncurrentVersionExpiration": {"NoncurrentDays": 30}}
    # S3 honours the shorter of overlapping expirations: 30 days would delete GLACIER_IR versions
    assert any("puts objects it matches in GLACIER_IR" in p for p in rule_problems([move, everything]))
    small = {**everything, "Filter": {"ObjectSizeLessThan": 131072}}
    elsewhere = {**everything, "ID": "else", "Filter": {"Prefix": "logs/"}}
    other_tier = {**everything, "ID": "std", "Filter": {"And": {"Prefix": "t/", "Tags": [
        {"Key": TIER_TAG, "Value": "STANDARD"}]}}}
    disabled = {**everything, "ID": "off", "Status": "Disabled"}
    check_rules([move, small, elsewhere, other_tier, disabled])
    expire_early = {"ID": "exp", "Status": "Enabled", "Filter": {"Prefix": "t/"}, "Expiration": {"Days": 60}}
    assert any("from day 0" in p for p in rule_problems([move, expire_early]))


def test_canonical_form_ignores_spelling():
    a = {"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 3}}
    assert same_rule(a, {"Status": "Enabled", "ID": "x", "Filter": {}, "Expiration": {"Days": "3"}})
    assert same_rule(a, {"ID": "x", "Status": "Enabled", "Prefix": "", "Expiration": {"Days": 3}})
    two_tags = {"ID": "t", "Status": "Enabled", "Filter": {"And": {"Prefix": "p/", "Tags": [
        {"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}}, "Transitions": [], "Expiration": {"Days": 5}}
    swapped = copy.deepcopy(two_tags)
    swapped["Filter"]["And"]["Tags"].reverse()
    del swapped["Transitions"]
    assert same_rule(two_tags, swapped)
    assert not same_rule(a, {**a, "Expiration": {"Days": 4}})
    assert canonical({"ID": "d", "Status": "Enabled", "Filter": {},
                      "Expiration": {"ExpiredObjectDeleteMarker": "true"}})["Expiration"] == {
        "ExpiredObjectDeleteMarker": True}


# ------------------------------------------------------------------------------------- apply


def test_apply_keeps_foreign_rules_and_is_idempotent(s3_lake):
    put_rules(s3_lake, "curated", [FOREIGN])
    put_rules(s3_lake, "landing", [FOREIGN])
    foreign_as_read = {role: rules_of(s3_lake, role) for role in ("curated", "landing")}
    policy = TieringPolicy()

    puts = PutCounter(s3_lake.storage.client)
    report = apply_lifecycle(s3_lake, policy)
    assert sorted(puts.buckets) == sorted(s3_lake.storage.buckets.values())
    assert report.changed and not report.dry_run

    desired = desired_rules(s3_lake.settings, s3_lake.spec, policy)
    for role in ROLES:
        read = rules_of(s3_lake, role)
        check_rules(read)
        got = by_id(read)
        for rule in desired[role]:
            assert same_rule(got[rule["ID"]], rule), (role, got.get(rule["ID"]), rule)
        foreign = [r for r in read if not r["ID"].startswith(RULE_ID_PREFIX)]
        assert foreign == foreign_as_read.get(role, [])
        assert len(read) == len(desired[role]) + len(foreign)

    puts.buckets.clear()
    again = apply_lifecycle(s3_lake, policy)
    assert puts.buckets == [] and again.written == []
    assert not again.changed
    for role, plan in again.buckets.items():
        assert len(plan.unchanged) == len(desired[role]) and not (plan.to_add or plan.to_change or plan.to_remove)
        assert plan.foreign == foreign_as_read.get(role, [])
    assert "already up to date" in again.summary()


def test_changed_policy_changes_only_that_rule(s3_lake):
    put_rules(s3_lake, "raw", [FOREIGN])
    foreign = rules_of(s3_lake, "raw")
    apply_lifecycle(s3_lake, TieringPolicy(raw_expire_after_compacted_days=7))
    before = {role: rules_of(s3_lake, role) for role in ROLES}

    puts = PutCounter(s3_lake.storage.client)
    report = apply_lifecycle(s3_lake, TieringPolicy(raw_expire_after_compacted_days=14))
    assert puts.buckets == [s3_lake.storage.buckets["raw"]]
    raw = report.buckets["raw"]
    assert [(old["ID"], new["Expiration"]) for old, new in raw.to_change] == [
        (f"{RULE_ID_PREFIX}clickstream/events:raw-expire-compacted", {"Days": 14})]
    assert not raw.to_add and not raw.to_remove
    after = by_id(rules_of(s3_lake, "raw"))
    assert after[f"{RULE_ID_PREFIX}clickstream/events:raw-expire-compacted"]["Expiration"] == {"Days": 14}
    assert [r for r in after.values() if r["ID"] == FOREIGN["ID"]] == foreign
    unchanged = {r["ID"]: r for r in before["raw"] if "raw-expire-compacted" not in r["ID"]}
    assert all(after[i] == r for i, r in unchanged.items())
    for role in ("landing", "curated", "quarantine"):
        assert rules_of(s3_lake, role) == before[role]

    # a class leaves the policy: its transition rule goes, nothing else in curated changes
    report = apply_lifecycle(s3_lake, TieringPolicy(curated_transitions=((30, "STANDARD_IA"),),
                                                    raw_expire_after_compacted_days=14))
    gone = f"{RULE_ID_PREFIX}clickstream/events:curated-tier-GLACIER_IR"
    assert [r["ID"] for r in report.buckets["curated"].to_remove] == [gone]
    assert not report.buckets["curated"].to_add and not report.buckets["curated"].to_change
    curated = by_id(rules_of(s3_lake, "curated"))
    assert gone not in curated and f"{RULE_ID_PREFIX}clickstream/events:curated-tier-STANDARD_IA" in curated


def test_no_rule_moves_small_objects(s3_lake):
    apply_lifecycle(s3_lake, TieringPolicy(curated_transitions=((30, "STANDARD_IA"), (90, "GLACIER_IR"),
                                                                (365, "DEEP_ARCHIVE"))))
    moved = set()
    for role in ROLES:
        for rule in rules_of(s3_lake, role):  # as the emulator returns them
            for t in rule.get("Transitions", []):
                moved.add(t["StorageClass"])
                assert predicates(rule)["gt"] >= MIN_TRANSITION_BYTES - 1, rule
    assert moved == {"STANDARD_IA", "GLACIER_IR", "DEEP_ARCHIVE"}


def test_dry_run_writes_nothing(s3_lake):
    put_rules(s3_lake, "curated", [FOREIGN])
    puts = PutCounter(s3_lake.storage.client)
    report = apply_lifecycle(s3_lake, TieringPolicy(), dry_run=True)
    assert puts.buckets == [] and report.written == [] and report.dry_run
    assert report.changed and all(p.to_add for p in report.buckets.values())
    assert rules_of(s3_lake, "curated") == report.buckets["curated"].foreign
    for role in ("landing", "raw", "quarantine"):
        assert rules_of(s3_lake, role) == []


def test_other_tables_rules_stay_and_stale_ones_go(s3_lake):
    other = {"ID": f"{RULE_ID_PREFIX}web/pageviews:quarantine-expire", "Status": "Enabled",
             "Filter": {"Prefix": "web/pageviews/"}, "Expiration": {"Days": 9}}
    stale = {"ID": f"{RULE_ID_PREFIX}clickstream/events:old-name", "Status": "Enabled",
             "Filter": {"Prefix": "clickstream/events/"}, "Expiration": {"Days": 60}}
    put_rules(s3_lake, "quarantine", [other, stale, FOREIGN])
    read = rules_of(s3_lake, "quarantine")
    report = apply_lifecycle(s3_lake, TieringPolicy())
    plan = report.buckets["quarantine"]
    assert [r["ID"] for r in plan.to_remove] == [stale["ID"]]
    assert plan.other_tables == [read[0]] and plan.foreign == [read[2]]
    ids = [r["ID"] for r in rules_of(s3_lake, "quarantine")]
    assert other["ID"] in ids and FOREIGN["ID"] in ids and stale["ID"] not in ids


def test_too_many_rules_is_a_clear_error(s3_lake):
    many = [{"ID": f"theirs-{i}", "Status": "Enabled", "Filter": {"Prefix": f"x{i}/"}, "Expiration": {"Days": 3}}
            for i in range(995)]
    put_rules(s3_lake, "curated", many)
    rules = desired_rules(s3_lake.settings, s3_lake.spec, TieringPolicy())
    with pytest.raises(ConfigError, match="S3 allows 1000"):
        plan_lifecycle(s3_lake.storage, rules)


def test_local_backend_has_no_lifecycle(local_lake):
    with pytest.raises(UnsupportedError, match="lake tier plan"):
        apply_lifecycle(local_lake, TieringPolicy())
    with pytest.raises(UnsupportedError, match="embedded backend"):
        apply_lifecycle(local_lake.settings)
    with pytest.raises(UnsupportedError):
        plan_lifecycle(local_lake.storage, desired_rules(local_lake.settings, local_lake.spec, TieringPolicy()))


# ---------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_root(settings, monkeypatch) -> Path:
    """A lake with a day landed and published, on either backend (LAKE_* set by ``settings``)."""
    from pipelines.land import land_inbox
    from pipelines.wap import process_day
    from tests.conftest import event, ndjson

    lake = Lake.open(settings)
    lake.storage.put("landing", "sdk/batch.ndjson.gz", ndjson([event(n) for n in range(5)]))
    land_inbox(lake)
    process_day(lake, "2026-11-01")
    return settings.root_path


def run(*args: str, root: Path):
    return CliRunner().invoke(app, ["--root", str(root), *args])


def test_cli_plan_both_spellings(cli_root):
    for args in (["tier", "--plan"], ["tier", "plan"]):
        result = run(*args, root=cli_root)
        assert result.exit_code == 0, (result.output, result.exception)
        assert "tiering plan" in result.stdout and "monthly saving" in result.stdout
        assert "expiries" in result.stdout and "dt=2026-11-01" in result.stdout


def test_cli_tier_alone_is_a_usage_error(cli_root):
    result = run("tier", root=cli_root)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "lake tier plan" in lines[0]


def test_cli_apply(cli_root, settings):
    result = run("tier", "apply", "--dry-run", root=cli_root)
    if settings.backend == "local":
        assert result.exit_code == 1 and "Traceback" not in result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "embedded backend" in lines[0] and "lake tier plan" in lines[0]
        return
    assert result.exit_code == 0, (result.output, result.exception)
    assert "dry run: would change 4 of 4 buckets" in result.stdout
    lake = Lake.open(settings)
    assert all(rules_of(lake, role) == [] for role in ROLES)
    result = run("tier", "apply", root=cli_root)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "changed 4 of 4 buckets" in result.stdout and "curated-tier-GLACIER_IR" in result.stdout
    result = run("tier", "apply", root=cli_root)
    assert result.exit_code == 0 and "already up to date" in result.stdout
    assert "unchanged" in result.stdout
