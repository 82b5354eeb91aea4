"""TIER tagging: curated objects tagged by their partition's date, raw inputs tagged compacted.

The S3 side runs against the moto server: tags are read back with boto3, and requests are
counted with botocore event hooks on the storage's own client (observing, not patching).
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import boto3
import dagster as dg
import orjson
import pytest

from assets.resources import LakeResource
from assets.tiering import tiering_plan
from pipelines import layout
from pipelines.compact import read_manifest
from pipelines.lake import Lake
from pipelines.land import land_inbox
from pipelines.tagging import state_key, tag_partitions
from pipelines.tier import COMPACTED, MIN_TRANSITION_BYTES, STATE_TAG, TIER_TAG, TieringPolicy, plan
from pipelines.wap import process_day
from tests.conftest import event, ndjson, settings_on

pytestmark = pytest.mark.timeout(300)

POLICY = TieringPolicy()
REAL = datetime.now(UTC).date()
#: partition dates must not be later than their events' arrival (now): the tests ask about a
#: day 20 days ahead, so ages are 29/30/45/90 while the objects were written today
TODAY = REAL + timedelta(days=20)
DAYS = {
    "hot": TODAY - timedelta(days=29),       # STANDARD today, STANDARD_IA tomorrow
    "ia_mixed": TODAY - timedelta(days=30),  # STANDARD_IA: one big file, one small
    "ia_small": TODAY - timedelta(days=45),  # STANDARD_IA by date, every file small
    "glacier": TODAY - timedelta(days=90),   # GLACIER_IR
    # backfilled: 65 days old on TODAY but written 45 days after its date; in STANDARD_IA from
    # its 75th day (lifecycle counts from creation) it would leave for GLACIER_IR at 90 before
    # IA's 30-day minimum: it stays STANDARD and goes straight to GLACIER_IR
    "backfill": REAL - timedelta(days=45),
}
ROWS = {"hot": 600, "ia_mixed": 4400, "ia_small": 80, "glacier": 600, "backfill": 600}


def _blob(n: int) -> str:
    return "".join(hashlib.sha512(f"{n}:{i}".encode()).hexdigest() for i in range(4))  # ~290 B/row


def _build(lake: Lake, rows: dict[str, int], days: dict[str, date]) -> None:
    for name, n in rows.items():
        d = days[name].isoformat()
        evs = [event(i, day=d, hour=i % 24, properties={"blob": _blob(i)}) for i in range(n)]
        lake.storage.put("landing", f"{name}/events.ndjson.gz", ndjson(evs))
    land_inbox(lake)
    for name in rows:
        assert process_day(lake, days[name].isoformat()).audit.passed


@pytest.fixture(scope="module")
def s3_lake(request, tmp_path_factory) -> Lake:
    """Published partitions at several ages on S3, plus late raw events for the hot day."""
    settings = settings_on("s3", tmp_path_factory.mktemp("tagging") / "lake", request)
    lake = Lake.open(settings.with_(target_file_bytes=1 << 20, row_group_rows=256))
    _build(lake, ROWS, DAYS)
    late = DAYS["hot"].isoformat()
    lake.storage.put("landing", "late/events.ndjson.gz", ndjson([event(90_000 + i, day=late) for i in range(5)]))
    assert land_inbox(lake).total("landed") == 5
    return lake


@functools.cache
def _boto(endpoint: str, region: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name=region)


def _client(lake: Lake):
    """A boto3 client of the tests' own: what they read or set up is not what the pass sent."""
    return _boto(lake.settings.s3_endpoint_url, lake.settings.aws_region)


def _bucket(lake: Lake, role: str) -> str:
    return lake.settings.bucket(role)


@pytest.fixture
def lake(s3_lake: Lake) -> Lake:
    """The module's lake with no tags, no state and every object in STANDARD (test setup)."""
    c = _client(s3_lake)
    for role in ("curated", "raw"):
        b = _bucket(s3_lake, role)
        for o in s3_lake.storage.list(role):
            if o.storage_class in ("GLACIER", "DEEP_ARCHIVE"):
                c.restore_object(Bucket=b, Key=o.key, RestoreRequest={"Days": 1})
            if o.storage_class != "STANDARD":
                c.copy_object(Bucket=b, Key=o.key, CopySource={"Bucket": b, "Key": o.key},
                              StorageClass="STANDARD", **s3_lake.storage.sse_args)
            c.delete_object_tagging(Bucket=b, Key=o.key)
    s3_lake.storage.delete("curated", [state_key(s3_lake.spec)])
    return s3_lake


class Calls:
    """S3 operations the storage's client sends: counted by name, with their bucket and key."""

    def __init__(self, client):
        self.ops: Counter[str] = Counter()
        self.sent: list[tuple[str, str, str]] = []
        self._client = client
        client.meta.events.register("before-call.s3", self._call)
        client.meta.events.register("provide-client-params.s3", self._params)

    def _call(self, model, **_):
        self.ops[model.name] += 1

    def _params(self, params, model, **_):
        self.sent.append((model.name, params.get("Bucket", ""), params.get("Key", "")))

    def clear(self) -> None:
        self.ops.clear()
        self.sent.clear()

    def close(self) -> None:
        self._client.meta.events.unregister("before-call.s3", self._call)
        self._client.meta.events.unregister("provide-client-params.s3", self._params)

    @property
    def puts(self) -> int:
        return self.ops["PutObjectTagging"]

    def keys(self, op: str, bucket: str | None = None) -> list[str]:
        return [k for o, b, k in self.sent if o == op and bucket in (None, b)]

    @property
    def state(self) -> Counter[str]:
        return Counter(o for o, _, k in self.sent if k.startswith("_tiering/"))


@pytest.fixture
def calls(lake: Lake):
    c = Calls(lake.storage.client)
    yield c
    c.close()


def _outputs(lake: Lake, name: str) -> tuple[dict, list[dict]]:
    dt = DAYS[name].isoformat()
    m = read_manifest(lake, dt, lake.catalog.get_partition(lake.spec.table, dt).version)
    return m, m["outputs"]


def _tags(lake: Lake, role: str, key: str) -> dict[str, str]:
    r = _client(lake).get_object_tagging(Bucket=_bucket(lake, role), Key=key)
    return {t["Key"]: t["Value"] for t in r["TagSet"]}


def _expected(lake: Lake, name: str, today: date) -> dict[str, str | None]:
    m, outputs = _outputs(lake, name)
    created = datetime.fromtimestamp(m["created_at"], UTC).date()
    tier = POLICY.tier_for_object(DAYS[name], created, today)
    return {o["key"]: tier if o["size"] >= MIN_TRANSITION_BYTES and tier != "STANDARD" else None
            for o in outputs}


# --------------------------------------------------------------------------------------------


def test_scenario_preconditions(lake: Lake):
    small = MIN_TRANSITION_BYTES
    sizes = {name: [o["size"] for o in _outputs(lake, name)[1]] for name in DAYS}
    assert all(s >= small for n in ("hot", "glacier", "backfill") for s in sizes[n])
    assert sorted(s >= small for s in sizes["ia_mixed"]) == [False, True]
    assert all(s < small for s in sizes["ia_small"])
    # the backfill's date calls for STANDARD_IA, but written today it would pay IA's minimum
    assert POLICY.tier_for(DAYS["backfill"], TODAY) == "STANDARD_IA"
    assert POLICY.tier_for_object(DAYS["backfill"], REAL, TODAY) == "STANDARD"
    assert POLICY.tier_for_object(DAYS["backfill"], REAL, REAL) == "STANDARD"  # 45 days, created today


def test_tags_every_object_by_its_partitions_date(lake: Lake, calls: Calls):
    m, outputs = _outputs(lake, "ia_mixed")
    big = next(o["key"] for o in outputs if o["size"] >= MIN_TRANSITION_BYTES)
    # another tool's tags, on a curated and on a raw object: they must survive ours
    _client(lake).put_object_tagging(Bucket=_bucket(lake, "curated"), Key=big,
                                     Tagging={"TagSet": [{"Key": "owner", "Value": "analytics"}]})
    raw_input = m["inputs"][0]["key"]
    _client(lake).put_object_tagging(Bucket=_bucket(lake, "raw"), Key=raw_input,
                                     Tagging={"TagSet": [{"Key": "source", "Value": "web"}]})
    calls.clear()

    report = tag_partitions(lake, POLICY, TODAY)

    # requests: every tag read and write, the listing of each day's raw, the state read and write
    raw_lists = len(calls.keys("ListObjectsV2", _bucket(lake, "raw")))
    assert raw_lists == len(DAYS) and calls.state == {"GetObject": 1, "PutObject": 1}
    assert report.requests == calls.ops["GetObjectTagging"] + calls.puts + raw_lists + 2
    puts = calls.puts

    assert report.applied and report.today == TODAY.isoformat()
    expected = {name: _expected(lake, name, TODAY) for name in DAYS}
    assert set(expected["ia_mixed"].values()) == {"STANDARD_IA", None}
    assert set(expected["glacier"].values()) == {"GLACIER_IR"}
    for name in ("hot", "ia_small", "backfill"):  # STANDARD, small, or the backfill penalty
        assert set(expected[name].values()) == {None}
    for name, by_key in expected.items():
        for key, tier in by_key.items():
            tags = _tags(lake, "curated", key)
            assert tags.get(TIER_TAG) == tier, (name, key)
    assert _tags(lake, "curated", big) == {"owner": "analytics", TIER_TAG: "STANDARD_IA"}

    rows = {p.dt: p for p in report.partitions}
    n_tagged = sum(t is not None for by_key in expected.values() for t in by_key.values())
    assert report.totals["tagged"] == n_tagged == puts - report.totals["raw_compacted"]
    assert rows[DAYS["ia_mixed"].isoformat()].kept_small == 1
    assert rows[DAYS["ia_small"].isoformat()].kept_small == len(expected["ia_small"])
    assert rows[DAYS["glacier"].isoformat()].tier == "GLACIER_IR"
    assert rows[DAYS["backfill"].isoformat()].target == "STANDARD_IA"
    assert rows[DAYS["backfill"].isoformat()].tier == "STANDARD"
    assert sorted(k for p in report.partitions for k in p.changes) == sorted(
        k for by_key in expected.values() for k, t in by_key.items() if t)
    assert report.archived == []

    # raw: every input of a published version is tagged compacted, foreign tags kept; the late
    # events landed after the hot day's compaction are not
    assert _tags(lake, "raw", raw_input) == {"source": "web", STATE_TAG: COMPACTED}
    inputs = set()
    for name in DAYS:
        inputs |= {i["key"] for i in _outputs(lake, name)[0]["inputs"]}
    raw_keys = {o.key for o in lake.storage.list("raw", layout.table_prefix(lake.spec) + "/dt=")}
    late = raw_keys - inputs
    assert len(late) == 1 and all(k.startswith(layout.raw_day_prefix(lake.spec, DAYS["hot"])) for k in late)
    for key in raw_keys:
        assert (_tags(lake, "raw", key).get(STATE_TAG) == COMPACTED) == (key in inputs), key
    assert report.totals["raw_compacted"] == len(inputs & raw_keys)



def test_a_second_run_on_the_same_day_sends_no_tag_request(lake: Lake, calls: Calls):
    tag_partitions(lake, POLICY, TODAY)
    calls.clear()
    again = tag_partitions(lake, POLICY, TODAY)
    assert calls.puts == 0 and calls.ops["GetObjectTagging"] == 0
    assert again.totals["tagged"] == again.totals["raw_compacted"] == 0
    assert again.totals["unchanged"] + again.totals["kept_small"] == sum(
        len(_outputs(lake, n)[1]) for n in DAYS)
    assert again.requests == 2  # the state, read and written


def test_a_day_later_only_the_partition_crossing_30_days_is_tagged(lake: Lake, calls: Calls):
    tag_partitions(lake, POLICY, TODAY)
    calls.clear()
    tomorrow = TODAY + timedelta(days=1)
    report = tag_partitions(lake, POLICY, tomorrow)
    hot = _expected(lake, "hot", tomorrow)
    assert set(hot.values()) == {"STANDARD_IA"}
    assert calls.puts == len(hot) == report.totals["tagged"]
    assert calls.keys("PutObjectTagging") == list(hot)
    assert all(_tags(lake, "curated", k) == {TIER_TAG: "STANDARD_IA"} for k in hot)
    # the backfilled partition still waits for GLACIER_IR
    assert set(_expected(lake, "backfill", tomorrow).values()) == {None}


def test_a_lost_state_costs_reads_and_rewrites_only_unreadable_tags(lake: Lake, calls: Calls):
    first = tag_partitions(lake, POLICY, TODAY)
    glacier = sorted(_expected(lake, "glacier", TODAY))
    # lifecycle moved one object to GLACIER, where moto refuses GetObjectTagging (AWS does not)
    b = _bucket(lake, "curated")
    _client(lake).copy_object(Bucket=b, Key=glacier[0], CopySource={"Bucket": b, "Key": glacier[0]},
                              StorageClass="GLACIER", **lake.storage.sse_args)
    lake.storage.delete("curated", [state_key(lake.spec)])
    calls.clear()
    report = tag_partitions(lake, POLICY, TODAY)
    # the tags of every big object whose date calls for a colder class are read back (none of
    # the hot partition's); only the unreadable one is put again, with its tier
    movable = {o["key"] for name in DAYS if POLICY.tier_for(DAYS[name], TODAY) != "STANDARD"
               for o in _outputs(lake, name)[1] if o["size"] >= MIN_TRANSITION_BYTES}
    assert movable and first.totals["tagged"] < len(movable)  # the backfill's is read, not tagged
    assert sorted(calls.keys("GetObjectTagging", _bucket(lake, "curated"))) == sorted(movable)
    assert calls.keys("PutObjectTagging") == [glacier[0]]
    assert report.totals["tagged"] == 1
    state = orjson.loads(lake.storage.get("curated", state_key(lake.spec)))["partitions"]
    assert state[DAYS["glacier"].isoformat()]["tier"][glacier[0]] == "GLACIER_IR"
    calls.clear()
    assert tag_partitions(lake, POLICY, TODAY).totals["tagged"] == 0 and calls.puts == 0


def test_dry_run_on_s3_says_what_would_be_tagged(lake: Lake, calls: Calls):
    dry = tag_partitions(lake, POLICY, TODAY, dry_run=True)
    assert not dry.applied and "dry run" in dry.reason
    assert calls.puts == 0 and calls.state["PutObject"] == 0
    assert lake.storage.head("curated", state_key(lake.spec)) is None
    real = tag_partitions(lake, POLICY, TODAY)
    assert dry.totals == real.totals
    assert [p.changes for p in dry.partitions] == [p.changes for p in real.partitions]


def test_a_new_version_is_tagged_from_its_own_tags(lake: Lake, calls: Calls):
    """A re-compacted partition (new objects, new version): the state names the old version."""
    tag_partitions(lake, POLICY, TODAY)
    dt = DAYS["glacier"].isoformat()
    before = lake.catalog.get_partition(lake.spec.table, dt).version
    lake.storage.put("landing", "more/events.ndjson.gz", ndjson([event(70_000 + i, day=dt) for i in range(3)]))
    land_inbox(lake)
    assert process_day(lake, dt).audit.passed
    assert lake.catalog.get_partition(lake.spec.table, dt).version != before
    calls.clear()
    report = tag_partitions(lake, POLICY, TODAY)
    new = _expected(lake, "glacier", TODAY)
    assert all(_tags(lake, "curated", k).get(TIER_TAG) == t for k, t in new.items())
    # written ~now for a 90-day-old date: GLACIER_IR, the last class, straight away
    assert report.totals["tagged"] == sum(t is not None for t in new.values()) == calls.puts - report.totals["raw_compacted"]
    # the new version's inputs include the three new raw objects
    m = _outputs(lake, "glacier")[0]
    assert all(_tags(lake, "raw", i["key"]).get(STATE_TAG) == COMPACTED for i in m["inputs"])


def test_raw_inputs_lifecycle_expired_are_skipped(lake: Lake, calls: Calls):
    m, _ = _outputs(lake, "ia_small")
    gone = m["inputs"][0]["key"]
    lake.storage.delete("raw", [gone])  # what the expiry rule does, days after the tag
    calls.clear()
    report = tag_partitions(lake, POLICY, TODAY)
    (row,) = [p for p in report.partitions if p.dt == DAYS["ia_small"].isoformat()]
    assert row.raw_gone == 1 and row.raw_compacted == len(m["inputs"]) - 1
    assert gone not in calls.keys("GetObjectTagging") + calls.keys("PutObjectTagging")


# -- the embedded backend: a plan, never a tag --------------------------------------------------


def test_local_backend_reports_what_would_be_tagged(local_lake: Lake):
    lake = Lake.open(local_lake.settings.with_(target_file_bytes=1 << 20, row_group_rows=256))
    days = {"old": REAL - timedelta(days=100), "new": REAL - timedelta(days=2)}
    _build(lake, {"old": 600, "new": 600}, days)
    before = sorted(p for p in lake.settings.root_path.rglob("*") if p.is_file() and not p.name.endswith("-shm"))
    report = tag_partitions(lake, POLICY, REAL)  # put_tags on this backend would raise
    assert not report.applied and "embedded backend" in report.reason
    rows = {p.dt: p for p in report.partitions}
    old = rows[days["old"].isoformat()]
    assert old.tier == "GLACIER_IR" and old.tagged == 1
    assert old.changes == {read_manifest(lake, old.dt, old.version)["outputs"][0]["key"]: "GLACIER_IR"}
    assert rows[days["new"].isoformat()].tagged == 0
    for p in (old, rows[days["new"].isoformat()]):  # what would be tagged compacted
        assert p.raw_compacted == len(read_manifest(lake, p.dt, p.version)["inputs"]) > 0
    moves = plan(lake, POLICY, REAL).moves
    assert [(m.dt, m.objects, m.target) for m in moves] == [(old.dt, 1, "GLACIER_IR")]
    after = sorted(p for p in lake.settings.root_path.rglob("*") if p.is_file() and not p.name.endswith("-shm"))
    assert after == before  # no state document either
    # the raw inputs' (empty) tag sets, read from the folder
    assert report.requests == report.totals["raw_compacted"] + len(days)  # and a listing per day


# -- archive classes -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_partition_leaves_the_catalog_before_its_archive_tag(backend: str, tmp_path, request):
    archive = pytest.importorskip("pipelines.archive")
    settings = settings_on(backend, tmp_path / "lake", request)
    lake = Lake.open(settings.with_(target_file_bytes=1 << 20, row_group_rows=256))
    policy = TieringPolicy(curated_transitions=((30, "STANDARD_IA"), (90, "GLACIER")))
    days = {"cold": REAL - timedelta(days=100), "warm": REAL - timedelta(days=40)}
    _build(lake, {"cold": 600, "warm": 600}, days)
    cold = days["cold"].isoformat()
    seen: list[object] = []
    if backend == "s3":
        # at the moment of each tag write, is the cold partition still in the catalog?
        def check(params, **_):
            if cold in params["url_path"]:
                seen.append(lake.catalog.get_partition(lake.spec.table, cold))
        lake.storage.client.meta.events.register("before-call.s3.PutObjectTagging", check)
    report = tag_partitions(lake, policy, REAL)
    assert report.archived == [cold]
    assert lake.catalog.get_partition(lake.spec.table, cold) is None
    assert lake.catalog.get_partition(lake.spec.table, days["warm"].isoformat()) is not None
    if backend == "s3":
        assert seen and all(p is None for p in seen)
        (row,) = [p for p in report.partitions if p.dt == cold]
        m = read_manifest(lake, cold, row.version)
        assert all(_tags(lake, "curated", o["key"]) == {TIER_TAG: "GLACIER"} for o in m["outputs"])
        again = tag_partitions(lake, policy, REAL)  # archived already, tags known: nothing to do
        assert again.archived == [] and again.totals["tagged"] == 0
        assert [p.tier for p in again.partitions if p.dt == cold] == ["GLACIER"]
    else:
        assert not report.applied
    # restored and published again: the pass leaves it in the catalog while the restore lasts
    assert archive.restore(lake, cold, days=7).state == "restored"
    assert lake.catalog.get_partition(lake.spec.table, cold) is not None
    seen.clear()
    pinned = tag_partitions(lake, policy, REAL)
    (row,) = [p for p in pinned.partitions if p.dt == cold]
    assert row.skipped and "restored" in row.skipped and row.archived is None
    assert lake.catalog.get_partition(lake.spec.table, cold) is not None and seen == []


# -- the Dagster asset -----------------------------------------------------------------------


def test_tiering_asset_tags_on_s3_and_only_reports_locally(lake_for_asset: Lake):
    lake = lake_for_asset
    result = dg.materialize([tiering_plan], resources={"lake": LakeResource(root=str(lake.settings.root_path))})
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("clickstream__tiering_plan")[0]
            .metadata.items()}
    dt = (REAL - timedelta(days=100)).isoformat()
    assert meta["moves"] == {dt: "GLACIER_IR"}
    if lake.settings.backend == "s3":
        assert meta["tags_applied"] is True and meta["objects_tagged"] == 1
        p = lake.catalog.get_partition(lake.spec.table, dt)
        m = read_manifest(lake, dt, p.version)
        assert meta["raw_tagged_compacted"] == len(m["inputs"]) and meta["archived"] == []
        key = m["outputs"][0]["key"]
        assert _tags(lake, "curated", key) == {TIER_TAG: "GLACIER_IR"}
    else:  # the embedded backend has no tags: the asset reports what it would tag, writes none
        assert meta["tags_applied"] is False and meta["objects_tagged"] == 1
        assert "lifecycle" not in meta and meta["archived"] == []


@pytest.fixture
def lake_for_asset(settings) -> Lake:
    lake = Lake.open(settings)
    dt = (REAL - timedelta(days=100)).isoformat()
    evs = [event(i, day=dt, hour=i % 24, properties={"blob": _blob(i)}) for i in range(600)]
    lake.storage.put("landing", "web/events.ndjson.gz", ndjson(evs))
    land_inbox(lake)
    assert process_day(lake, dt).audit.passed
    return lake
