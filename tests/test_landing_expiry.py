"""Landing expiry: landed objects tagged ``lake-state=landed`` after their ledger record, and the
landing bucket's lifecycle rule that expires exactly those (real moto server, real files).

S3 lifecycle does not run on the emulator, so what is tested is what decides it: which objects
carry the tag (only landed versions, other tags kept) and the rule as S3 stores it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from pipelines.bootstrap import iam_policy, lifecycle_problem
from pipelines.config import LakeSettings
from pipelines.errors import ConfigError
from pipelines.lake import Lake
from pipelines.land import (
    TAG_FAILED,
    TAG_OVERWRITTEN,
    TAGGED,
    is_landed,
    land_inbox,
    mark_landed,
    retag_landed,
)
from pipelines.lifecycle import (
    RULE_ID_PREFIX,
    apply_lifecycle,
    check_rules,
    desired_rules,
    predicates,
)
from pipelines.tier import LANDED, STATE_TAG, TieringPolicy
from pipelines.tier_apply import apply_tiering
from tests.conftest import event, ndjson, s3_settings_for
from tests.test_lifecycle import PutCounter, by_id, put_rules, rules_of

pytestmark = pytest.mark.timeout(300)

EXPIRE_ID = f"{RULE_ID_PREFIX}bucket:landing-expire"
FOREIGN_TAGS = {"team": "web", "pii": "no"}
DAY = 86400


def tags_of(lake: Lake, key: str) -> dict[str, str]:
    return lake.storage.get_tags("landing", key)


def with_tags(lake: Lake, key: str, data: bytes, tags: dict[str, str]) -> None:
    """Put a landing object as a producer does (any name: the lake writes no such keys)."""
    if lake.settings.backend == "local":  # no tags to start with on the embedded backend
        path = lake.storage.local_dir("landing") / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return
    lake.storage.client.put_object(Bucket=lake.settings.bucket("landing"), Key=key, Body=data)
    if tags:
        lake.storage.put_tags("landing", key, tags)


def expected(lake: Lake, tags: dict[str, str]) -> dict[str, str]:
    """The landing object's tags once landed: ours added on S3, none on the embedded backend."""
    return {**tags, STATE_TAG: LANDED} if lake.settings.backend == "s3" else {}


# ------------------------------------------------------------------------------ tagging at landing


def test_landing_tags_the_landed_object_and_keeps_foreign_tags(lake):
    with_tags(lake, "web/a.ndjson.gz", ndjson([event(n) for n in range(3)]), FOREIGN_TAGS)
    with_tags(lake, "web/broken.ndjson.gz", b"\x1f\x8b not gzip at all", FOREIGN_TAGS)  # quarantined whole
    with_tags(lake, "web/it's batch 1+2.ndjson", ndjson([event(9)], gz=False), {})  # a producer's name
    report = land_inbox(lake)
    by_key = {f.source_key: f for f in report.files}
    assert by_key["web/broken.ndjson.gz"].file_reason == "corrupt_gzip"
    assert report.total("landed") == 4 and report.tag_failures == 0
    for key in by_key:
        assert tags_of(lake, key) == expected(lake, {} if "+" in key else FOREIGN_TAGS), key
        assert by_key[key].landing_tag == (TAGGED if lake.settings.backend == "s3" else None)
        assert is_landed(lake, key, lake.storage.head("landing", key).etag)
    # landing again: nothing to land, nothing tagged again
    again = land_inbox(lake)
    assert not again.files and again.already_landed == 3


def test_object_never_landed_is_never_tagged(lake):
    lake.storage.put("landing", "web/landed.ndjson", ndjson([event(1)], gz=False))
    lake.storage.put("landing", "web/waiting.ndjson", ndjson([event(2)], gz=False))
    land_inbox(lake, keys=["web/landed.ndjson"])
    assert tags_of(lake, "web/landed.ndjson") == expected(lake, {})
    assert tags_of(lake, "web/waiting.ndjson") == {}
    # the retry pass, even long after, leaves the object that is not in the ledger alone
    later = retag_landed(lake, now=time.time() + 400 * DAY)
    assert tags_of(lake, "web/waiting.ndjson") == {}
    assert later.outcomes.get(TAGGED, 0) == 0


def test_overwritten_object_is_not_tagged(lake):
    lake.storage.put("landing", "web/batch.ndjson", ndjson([event(1)], gz=False))
    [first] = land_inbox(lake).files
    old = lake.storage.head("landing", "web/batch.ndjson")
    assert old.etag == first.etag
    # a PUT replaces the object and its tags: the new content starts with none
    lake.storage.put("landing", "web/batch.ndjson", ndjson([event(2), event(3)], gz=False))
    assert tags_of(lake, "web/batch.ndjson") == {}
    assert lake.storage.head("landing", "web/batch.ndjson").etag != old.etag
    # the tag of the version landed, asked for after the overwrite, leaves the new content alone
    assert mark_landed(lake, old) == (TAG_OVERWRITTEN if lake.settings.backend == "s3" else None)
    assert tags_of(lake, "web/batch.ndjson") == {}
    assert retag_landed(lake, now=time.time() + 400 * DAY).landed == 0
    assert tags_of(lake, "web/batch.ndjson") == {}
    # the new content lands as a new version, and that version is tagged
    [second] = land_inbox(lake).files
    assert second.etag != first.etag and second.lines == 2
    assert tags_of(lake, "web/batch.ndjson") == expected(lake, {})


def test_expiry_off_tags_nothing(settings):
    lake = Lake.open(dataclasses.replace(settings, landing_expire_days=0))
    with_tags(lake, "web/a.ndjson", ndjson([event(1)], gz=False), FOREIGN_TAGS)
    [result] = land_inbox(lake).files
    assert result.landed == 1 and result.landing_tag is None
    assert tags_of(lake, "web/a.ndjson") == (FOREIGN_TAGS if settings.backend == "s3" else {})
    assert retag_landed(lake, now=time.time() + 400 * DAY).stale == 0


def test_setting_is_validated_and_reaches_the_policy():
    assert LakeSettings.from_env({}).landing_expire_days == 30
    settings = LakeSettings.from_env({"LAKE_LANDING_EXPIRE_DAYS": "9"})
    assert TieringPolicy.from_settings(settings).landing_expire_days == 9
    assert TieringPolicy.from_settings(LakeSettings.from_env({"LAKE_LANDING_EXPIRE_DAYS": "0"})).landing_expire_days == 0
    with pytest.raises(ConfigError, match="LAKE_LANDING_EXPIRE_DAYS"):
        LakeSettings.from_env({"LAKE_LANDING_EXPIRE_DAYS": "-1"})
    with pytest.raises(ConfigError, match="landing expiry"):
        TieringPolicy(landing_expire_days=-1)


# -------------------------------------------------------------------- a failed tag, tagged later


@pytest.fixture
def s3_lake(moto_endpoint: str, tmp_path: Path) -> Lake:
    return Lake.open(s3_settings_for(moto_endpoint, tmp_path / "lake"))


def test_tag_failure_keeps_the_landing_and_is_retried(s3_lake):
    lake = s3_lake
    ten = {f"k{i}": "v" for i in range(10)}  # S3's maximum: one more tag is refused
    with_tags(lake, "web/full.ndjson", ndjson([event(1)], gz=False), ten)
    report = land_inbox(lake)
    [result] = report.files
    assert result.landed == 1 and result.landing_tag == TAG_FAILED and report.tag_failures == 1
    assert is_landed(lake, "web/full.ndjson", result.etag)  # the ledger is the truth: landed
    assert tags_of(lake, "web/full.ndjson") == ten
    assert not land_inbox(lake).files  # not landed twice
    # the retry pass looks only at objects past the expiry: none today
    assert retag_landed(lake).stale == 0
    lake.storage.put_tags("landing", "web/full.ndjson", {"k0": "v"})  # the owner makes room
    later = time.time() + (lake.settings.landing_expire_days + 3) * DAY
    assert retag_landed(lake, now=later, dry_run=True).landed == 1
    assert tags_of(lake, "web/full.ndjson") == {"k0": "v"}  # a dry run writes nothing
    again = retag_landed(lake, now=later)
    assert (again.stale, again.landed, again.outcomes) == (1, 1, {TAGGED: 1})
    assert tags_of(lake, "web/full.ndjson") == {"k0": "v", STATE_TAG: LANDED}
    assert retag_landed(lake, now=later).outcomes == {"unchanged": 1}  # no second PUT


def test_objects_landed_before_expiry_are_tagged_by_the_retry_pass(moto_endpoint, tmp_path):
    settings = s3_settings_for(moto_endpoint, tmp_path / "lake", landing_expire_days=0)
    old = Lake.open(settings)
    for name in ("a", "b"):
        with_tags(old, f"web/{name}.ndjson", ndjson([event(ord(name))], gz=False), FOREIGN_TAGS)
    land_inbox(old, keys=["web/a.ndjson"])  # b is never landed
    assert tags_of(old, "web/a.ndjson") == FOREIGN_TAGS
    lake = Lake.open(dataclasses.replace(settings, landing_expire_days=30))
    run = retag_landed(lake, now=time.time() + 40 * DAY)
    assert (run.stale, run.landed, run.outcomes) == (2, 1, {TAGGED: 1})
    assert tags_of(lake, "web/a.ndjson") == {**FOREIGN_TAGS, STATE_TAG: LANDED}
    assert tags_of(lake, "web/b.ndjson") == FOREIGN_TAGS
    # the tiering pass runs it (on the real clock: nothing is old enough here)
    assert apply_tiering(lake).summary()["landing_stale"] == 0


# ------------------------------------------------------------------------------- lifecycle rule


def test_desired_landing_rule_is_the_tagged_one(local_lake):
    spec = local_lake.spec
    rules = desired_rules(local_lake.settings, spec, TieringPolicy(landing_expire_days=12))
    check_rules(rules)
    rule = by_id(rules["landing"])[EXPIRE_ID]
    assert rule["Expiration"] == {"Days": 12}
    assert predicates(rule) == {"prefix": "", "tags": [[STATE_TAG, LANDED]], "gt": None, "lt": None}
    # the whole bucket is never expired: every landing rule that expires objects needs the tag
    for r in rules["landing"]:
        if "Expiration" in r:
            assert predicates(r)["tags"] == [[STATE_TAG, LANDED]], r
    off = desired_rules(local_lake.settings, spec, TieringPolicy(landing_expire_days=0))
    assert EXPIRE_ID not in by_id(off["landing"])
    assert EXPIRE_ID in by_id(desired_rules(local_lake.settings, spec, TieringPolicy(landing_expire_days=0),
                                            landing_expire_days=5)["landing"])


def test_lifecycle_applies_the_landing_rule_once(s3_lake):
    lake = s3_lake
    foreign = {"ID": "team-logs-expire", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
               "Expiration": {"Days": 3}}
    # a rule of the same ID from before landing expiry was tag-filtered: it is replaced
    put_rules(lake, "landing", [foreign, {"ID": EXPIRE_ID, "Status": "Enabled", "Filter": {"Prefix": ""},
                                          "Expiration": {"Days": 14}}])
    puts = PutCounter(lake.storage.client)
    policy = TieringPolicy.from_settings(lake.settings)
    first = apply_lifecycle(lake, policy)
    assert lake.storage.buckets["landing"] in first.written
    got = by_id(rules_of(lake, "landing"))
    assert got["team-logs-expire"] == foreign
    rule = got[EXPIRE_ID]
    assert rule["Expiration"] == {"Days": lake.settings.landing_expire_days}
    assert predicates(rule)["tags"] == [[STATE_TAG, LANDED]] and predicates(rule)["prefix"] == ""
    wanted = desired_rules(lake.settings, lake.spec, policy)["landing"]
    problem, _ = lifecycle_problem({"Rules": rules_of(lake, "landing")}, wanted)
    assert problem is None  # what `lake doctor` checks
    n = len(puts.buckets)
    second = apply_lifecycle(lake, policy)
    assert not second.changed and not second.written and len(puts.buckets) == n
    # expiry turned off: the rule goes, the foreign one stays
    off = apply_lifecycle(lake, dataclasses.replace(policy, landing_expire_days=0))
    assert off.written == [lake.storage.buckets["landing"]]
    got = by_id(rules_of(lake, "landing"))
    assert EXPIRE_ID not in got and got["team-logs-expire"] == foreign


def test_iam_policy_lets_the_pipeline_tag_landing_objects(s3_lake):
    policy = iam_policy(s3_lake.settings, table="events", account_id="210987654321")
    landing = f"arn:aws:s3:::{s3_lake.settings.bucket('landing')}/*"
    granted = {a for s in policy["Statement"] if s["Effect"] == "Allow" and landing in s["Resource"]
               for a in s["Action"]}
    assert {"s3:GetObjectTagging", "s3:PutObjectTagging", "s3:GetObject"} <= granted
