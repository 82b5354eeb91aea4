"""TIER: the policy by partition date and the plan (moves, expiries, costs) that changes nothing."""

from __future__ import annotations

import gzip
import hashlib
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from pipelines import layout
from pipelines.compact import read_manifest
from pipelines.config import ROLES
from pipelines.lake import Lake
from pipelines.land import land_inbox
from pipelines.tier import (
    DEFAULT_PRICES,
    MIN_TRANSITION_BYTES,
    Expiry,
    GiB,
    PartitionMove,
    TieringPolicy,
    plan,
)
from pipelines.wap import process_day
from tests.conftest import event, ndjson, settings_on

pytestmark = pytest.mark.timeout(120)

TODAY = date(2027, 6, 30)
# prices per GiB-month chosen so that a cost is exactly bytes x k (no rounding in the comparison)
PRICES = {"STANDARD": 5 * GiB, "STANDARD_IA": 3 * GiB, "GLACIER_IR": 2 * GiB,
          "GLACIER": 1 * GiB, "DEEP_ARCHIVE": 1 * GiB}
POLICY = TieringPolicy(prices=PRICES)


# --------------------------------------------------------------------------------------------
# the policy


@pytest.mark.parametrize(("age", "tier"), [
    (-3, "STANDARD"),  # a partition dated in the future (clock skew) stays hot
    (0, "STANDARD"),
    (29, "STANDARD"),
    (30, "STANDARD_IA"),
    (89, "STANDARD_IA"),
    (90, "GLACIER_IR"),
    (4000, "GLACIER_IR"),
])
def test_tier_for_goes_by_the_partition_date(age: int, tier: str):
    assert TieringPolicy().tier_for(TODAY - timedelta(days=age), TODAY) == tier


def test_tier_for_with_custom_transitions_in_any_order():
    policy = TieringPolicy(curated_transitions=((365, "DEEP_ARCHIVE"), (7, "STANDARD_IA")))
    assert policy.tier_for(TODAY - timedelta(days=6), TODAY) == "STANDARD"
    assert policy.tier_for(TODAY - timedelta(days=7), TODAY) == "STANDARD_IA"
    assert policy.tier_for(TODAY - timedelta(days=364), TODAY) == "STANDARD_IA"
    assert policy.tier_for(TODAY - timedelta(days=365), TODAY) == "DEEP_ARCHIVE"


def test_default_policy_values():
    policy = TieringPolicy()
    assert policy.min_transition_bytes == MIN_TRANSITION_BYTES == 128 * 1024
    assert policy.raw_expire_after_compacted_days == 7
    assert policy.quarantine_expire_days == 30
    assert policy.prices == DEFAULT_PRICES and policy.prices is not DEFAULT_PRICES


# --------------------------------------------------------------------------------------------
# the plan


def _blob(n: int) -> str:
    return hashlib.sha512(str(n).encode()).hexdigest() * 2  # ~86 bytes of Parquet per row


def _snapshot(lake: Lake) -> dict[str, tuple]:
    """Every object of the lake: size, mtime (local) or ETag (S3), and content digest.

    SQLite's shared-memory index (``-shm``) is rewritten by every reader, so it is left out; the
    catalog's contents are compared through the catalog itself.
    """
    if lake.settings.backend == "s3":
        return {f"{role}/{o.key}": (o.size, o.etag, o.mtime) for role in ROLES for o in lake.storage.list(role)}
    root = lake.settings.root_path
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith("-shm"):
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns,
                                             hashlib.blake2b(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module", params=["local", "s3"])
def aged_lake(request, tmp_path_factory) -> tuple[Lake, dict[str, str], date]:
    """Published partitions at several ages relative to ``today`` (real today + 20 days).

    Event times must not be later than their arrival (now), so partition dates are in the past
    and the plan is asked about a day 20 days ahead. Module-scoped (it lands ~17k events); the
    tests using it only read, and check that by snapshotting the lake folder.
    """
    settings = settings_on(request.param, tmp_path_factory.mktemp("aged") / "lake", request)
    lake = Lake.open(settings.with_(target_file_bytes=1 << 20, row_group_rows=256))
    real = datetime.now(UTC).date()
    today = real + timedelta(days=20)
    days = {
        "standard": today - timedelta(days=29),  # age 29: stays STANDARD
        "ia_mixed": today - timedelta(days=30),  # age 30: STANDARD_IA; one big file, one small
        "ia_small": today - timedelta(days=45),  # STANDARD_IA by date, but every file is small
        "glacier": today - timedelta(days=90),   # age 90: GLACIER_IR
    }
    sizes = {"standard": 50, "ia_mixed": 15_400, "ia_small": 80, "glacier": 2_000}
    for name, dt in days.items():
        d = dt.isoformat()
        events = [event(i, day=d, hour=i % 24, properties={"blob": _blob(i)}) for i in range(sizes[name])]
        lake.storage.put("landing", f"{name}/events.ndjson.gz", ndjson(events))
    land_inbox(lake)
    for dt in days.values():
        assert process_day(lake, dt.isoformat()).audit.passed
    # late events for the STANDARD day after its compaction: its raw is not covered, not expired
    late_day = days["standard"].isoformat()
    lake.storage.put("landing", "late/events.ndjson.gz", ndjson([event(90_000 + i, day=late_day) for i in range(5)]))
    # quarantine: bad lines, and a whole file that is not readable gzip
    lake.storage.put("landing", "bad/lines.ndjson", ndjson(
        [event(1, day=late_day), b'{"broken', b'{"type": "track"}'], gz=False))
    lake.storage.put("landing", "bad/file.ndjson.gz", b"\x1f\x8b" + b"not really gzip" * 10)
    report = land_inbox(lake)
    assert report.total("quarantined") == 2 and report.quarantined_files == 1
    return lake, {k: v.isoformat() for k, v in days.items()}, today


def _manifest_sizes(lake: Lake, dt: str) -> list[int]:
    p = lake.catalog.get_partition(lake.spec.table, dt)
    return [o["size"] for o in read_manifest(lake, dt, p.version)["outputs"]]


def _objects(lake: Lake, role: str, prefix: str) -> list:
    return list(lake.storage.list(role, prefix))


def test_plan_moves_expiries_and_costs(aged_lake):
    lake, days, today = aged_lake
    spec = lake.spec
    sizes = {name: _manifest_sizes(lake, dt) for name, dt in days.items()}
    small = MIN_TRANSITION_BYTES
    # the preconditions the scenario is built on
    assert all(s < small for s in sizes["standard"]) and all(s < small for s in sizes["ia_small"])
    assert any(s >= small for s in sizes["ia_mixed"]) and any(s < small for s in sizes["ia_mixed"])
    assert all(s >= small for s in sizes["glacier"])

    policy = POLICY
    before = _snapshot(lake)
    catalog_before = lake.catalog.list_partitions(spec.table)
    result = plan(lake, policy, today=today)
    assert _snapshot(lake) == before
    assert lake.catalog.list_partitions(spec.table) == catalog_before
    assert result.today == today.isoformat()

    # moves: one per partition whose date calls for a colder class and that has movable objects
    big_mixed = [s for s in sizes["ia_mixed"] if s >= small]
    big_glacier = sizes["glacier"]
    assert sorted(result.moves, key=lambda m: m.dt) == sorted([
        PartitionMove(days["ia_mixed"], len(big_mixed), sum(big_mixed), "STANDARD_IA",
                      kept_small=len(sizes["ia_mixed"]) - len(big_mixed)),
        PartitionMove(days["glacier"], len(big_glacier), sum(big_glacier), "GLACIER_IR", kept_small=0),
    ], key=lambda m: m.dt)
    assert [m.kept_small for m in result.moves if m.dt == days["ia_mixed"]] == [1]

    # expiries: raw of every fully compacted day, 7 days after its compaction; quarantine 30 days
    # after arrival
    raw_by_day = {dt: _objects(lake, "raw", layout.raw_day_prefix(spec, dt)) for dt in days.values()}
    expected_raw = []
    for name, dt in sorted(days.items(), key=lambda kv: kv[1]):
        if name == "standard":
            continue  # late events arrived after its compaction
        m = read_manifest(lake, dt, lake.catalog.get_partition(spec.table, dt).version)
        on = datetime.fromtimestamp(m["created_at"], UTC).date() + timedelta(days=7)
        objs = raw_by_day[dt]
        expected_raw.append(Expiry("raw", f"dt={dt}", len(objs), sum(o.size for o in objs), on.isoformat()))
    assert [e for e in result.expiries if e.role == "raw"] == expected_raw

    quarantine = _objects(lake, "quarantine", layout.table_prefix(spec) + "/")
    arrival = datetime.fromtimestamp(lake.storage.head("landing", "bad/lines.ndjson").mtime, UTC).date()
    assert len(quarantine) == 3  # the lines file, the whole file and its reason
    assert all(f"arrival={arrival.isoformat()}/" in o.key for o in quarantine)
    assert [e for e in result.expiries if e.role == "quarantine"] == [
        Expiry("quarantine", f"arrival={arrival.isoformat()}", 3, sum(o.size for o in quarantine),
               (arrival + timedelta(days=30)).isoformat())]

    # costs: everything is STANDARD now; afterwards moved bytes are colder, expired raw is gone
    curated = sum(sum(s) for s in sizes.values())
    raw_all = sum(o.size for o in _objects(lake, "raw", layout.table_prefix(spec) + "/dt="))
    raw_kept = sum(o.size for o in raw_by_day[days["standard"]])
    q = sum(o.size for o in quarantine)
    assert all(date.fromisoformat(e.on) <= today for e in expected_raw)
    assert arrival + timedelta(days=30) > today
    assert result.cost_now == {"STANDARD": float(5 * (curated + raw_all + q))}
    standard_after = curated - sum(big_mixed) - sum(big_glacier) + raw_kept + q
    assert result.cost_after == {
        "GLACIER_IR": float(2 * sum(big_glacier)),
        "STANDARD": float(5 * standard_after),
        "STANDARD_IA": float(3 * sum(big_mixed)),
    }
    assert result.monthly_saving == sum(result.cost_now.values()) - sum(result.cost_after.values())
    assert result.monthly_saving > 0


def test_plan_on_other_days(aged_lake):
    lake, days, today = aged_lake
    spec = lake.spec
    sizes = {name: _manifest_sizes(lake, dt) for name, dt in days.items()}
    curated = sum(sum(s) for s in sizes.values())
    big_glacier = sum(sizes["glacier"])
    raw_all = sum(o.size for o in _objects(lake, "raw", layout.table_prefix(spec) + "/dt="))
    raw_kept = sum(o.size for o in _objects(lake, "raw", layout.raw_day_prefix(spec, days["standard"])))
    q = sum(o.size for o in _objects(lake, "quarantine", layout.table_prefix(spec) + "/"))
    before = _snapshot(lake)

    # 17 days earlier (3 days after the compaction): only the oldest partition (age 73) is past
    # 30 days, but its files were written at age 70: STANDARD_IA would take them at age 100 (S3's
    # 30 days from creation), after GLACIER_IR's day 90, so they stay and go to GLACIER_IR
    # directly (as the tagging pass does); raw is listed for expiry but not gone yet
    early = plan(lake, POLICY, today=today - timedelta(days=17))
    assert early.moves == []
    assert {e.role for e in early.expiries} == {"raw", "quarantine"}
    assert early.cost_after == {"STANDARD": float(5 * (curated + raw_all + q))}

    # 40 days later, with nothing applied meanwhile: the oldest goes to GLACIER_IR; the mixed
    # partition is 70 days old and still STANDARD, and STANDARD_IA now would be left for
    # GLACIER_IR after 20 of its 30 minimum days, so it waits; the STANDARD day is old enough to
    # move but all its files are small; the quarantine has expired
    late = plan(lake, POLICY, today=today + timedelta(days=40))
    assert {m.dt: m.target for m in late.moves} == {days["glacier"]: "GLACIER_IR"}
    assert late.cost_after == {"GLACIER_IR": float(2 * big_glacier),
                               "STANDARD": float(5 * (curated - big_glacier + raw_kept))}
    assert late.cost_now == early.cost_now == {"STANDARD": float(5 * (curated + raw_all + q))}
    assert _snapshot(lake) == before


def test_plan_of_an_empty_lake(lake: Lake):
    result = plan(lake, today=TODAY)
    assert (result.moves, result.expiries, result.cost_now, result.cost_after) == ([], [], {}, {})
    assert result.monthly_saving == 0


@pytest.fixture
def local_tz(monkeypatch):
    def set_tz(tz: str) -> None:
        monkeypatch.setenv("TZ", tz)
        time.tzset()

    yield set_tz
    monkeypatch.undo()
    time.tzset()


def test_raw_expiry_date_is_the_utc_date_of_the_compaction(lake: Lake, local_tz):
    lake.storage.put("landing", "web/a.ndjson.gz", ndjson([event(i) for i in range(10)]))
    land_inbox(lake)
    result = process_day(lake, "2026-11-01")
    created = datetime.fromtimestamp(result.compact.manifest["created_at"], UTC)
    # a host clock whose local date differs from the UTC date at the moment of compaction
    local_tz("TST-14" if created.hour >= 12 else "TST+12")
    assert date.fromtimestamp(created.timestamp()) != created.date()
    (raw,) = [e for e in plan(lake, today=TODAY).expiries if e.role == "raw"]
    assert raw.on == (created.date() + timedelta(days=7)).isoformat()


def test_raw_objects_stay_when_a_day_is_not_fully_compacted(lake: Lake):
    lake.storage.put("landing", "web/a.ndjson.gz", ndjson([event(i) for i in range(10)]))
    land_inbox(lake)
    # landed but never compacted: no expiry, raw stays in STANDARD
    result = plan(lake, today=TODAY)
    assert result.expiries == [] and result.moves == []
    raw = sum(o.size for o in lake.storage.list("raw", layout.table_prefix(lake.spec) + "/dt="))
    assert result.cost_now == result.cost_after == {"STANDARD": round(raw / GiB * DEFAULT_PRICES["STANDARD"], 6)}
    # gzip'd raw objects are what is counted, not the ledger
    assert all(gzip.decompress(lake.storage.get("raw", o.key))
               for o in lake.storage.list("raw", layout.table_prefix(lake.spec) + "/dt="))


def test_plan_counts_each_object_in_its_current_class(lake: Lake):
    """An object lifecycle already moved is costed in its class and is not planned again."""
    if lake.settings.backend != "s3":
        pytest.skip("the embedded backend has one storage class")
    real = datetime.now(UTC).date()
    dt = (real - timedelta(days=100)).isoformat()
    events = [event(i, day=dt, hour=i % 24, properties={"blob": _blob(i)}) for i in range(2000)]
    lake.storage.put("landing", "web/events.ndjson.gz", ndjson(events))
    land_inbox(lake)
    assert process_day(lake, dt).audit.passed
    (size,) = _manifest_sizes(lake, dt)
    assert size >= MIN_TRANSITION_BYTES
    before = plan(lake, POLICY, today=real)
    assert [(m.dt, m.target, m.objects) for m in before.moves] == [(dt, "GLACIER_IR", 1)]
    # what lifecycle does on AWS once the tag is there
    key = read_manifest(lake, dt, lake.catalog.get_partition(lake.spec.table, dt).version)["outputs"][0]["key"]
    bucket = lake.settings.bucket("curated")
    lake.storage.client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                                    StorageClass="GLACIER_IR", **lake.storage.sse_args)
    after = plan(lake, POLICY, today=real)
    assert after.moves == []
    assert after.cost_now["GLACIER_IR"] == float(2 * size)
    assert after.cost_now["GLACIER_IR"] == after.cost_after["GLACIER_IR"]
