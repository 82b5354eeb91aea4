"""The queue landing trigger on the moto server: ``lake init --notifications``, the SQS poll and
``landing_queue_sensor``; on the embedded backend the queue trigger is a clear configuration error.

moto's server delivers S3 event notifications itself (moto/s3/notifications.py: a PUT into a bucket
whose notification configuration names an SQS queue sends the S3-shaped event to that queue, and
setting the configuration sends ``s3:TestEvent``), so these tests use the real delivery: no event is
sent by hand except the malformed and foreign ones the dead-letter path is about.

moto's queues honour visibility timeouts. Where a test evaluates the sensor again it sets the
queue's VisibilityTimeout to 0 first, so that messages the sensor kept are visible to the next
evaluation at once instead of 300 s later; the test of a kept message uses the real timeout.
"""

from __future__ import annotations

import json
import os

import boto3
import dagster as dg
import pytest
from typer.testing import CliRunner

from assets.landing import raw_events
from assets.queue_sensor import landing_queue_sensor
from assets.resources import LakeResource
from pipelines import bootstrap, notifications_setup, notify
from pipelines.cli import app
from pipelines.config import LakeSettings
from pipelines.errors import ConfigError
from pipelines.lake import Lake
from pipelines.land import land_inbox
from pipelines.s3 import S3Storage
from tests.conftest import event, ndjson, s3_settings_for

pytestmark = pytest.mark.timeout(300)
ACCOUNT = "123456789012"  # moto's account


def run(settings: LakeSettings, *args: str):
    """The CLI as a deployment runs it: settings from LAKE_* variables, a wide console."""
    env = {**settings.to_env(), "COLUMNS": "400"}
    return CliRunner().invoke(app, ["--root", str(settings.root_path), *args], env=env)


def _init(settings: LakeSettings) -> str:
    # --no-bucket-policy: with the TLS-only policy moto refuses object PUTs over plain HTTP
    result = run(settings, "init", "--no-bucket-policy", "--notifications")
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("landing events queue: ")]
    assert len(lines) == 1, result.output
    assert "LAKE_LANDING_TRIGGER=queue" in result.output
    return lines[0].removeprefix("landing events queue: ")


@pytest.fixture
def queued(moto_endpoint, tmp_path, monkeypatch):
    """A lake on the emulator after `lake init --notifications`, with the queue trigger chosen
    through LAKE_* variables (as the sensor reads them)."""
    for name in list(os.environ):
        if name.startswith("LAKE_"):
            monkeypatch.delenv(name)
    base = s3_settings_for(moto_endpoint, tmp_path / "lake")
    url = _init(base)
    settings = base.with_(landing_trigger="queue", landing_queue_url=url)
    settings.validate()
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    return {"lake": Lake.open(settings), "url": url, "sqs": sqs,
            "dlq": url.rsplit("/", 1)[0] + "/" + notifications_setup.queue_names(settings)[1]}


def in_queue(sqs, url: str) -> int:
    """Messages in the queue, visible or in flight (a deleted message is in neither)."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def visible_at_once(q) -> None:
    q["sqs"].set_queue_attributes(QueueUrl=q["url"], Attributes={"VisibilityTimeout": "0"})


def evaluate(lake: Lake):
    with dg.build_sensor_context(resources={"lake": LakeResource(root=str(lake.settings.root_path))}) as ctx:
        return landing_queue_sensor(ctx)


def s3_event(bucket: str, key: str, etag: str = "0123456789abcdef0123456789abcdef",
             name: str = "ObjectCreated:Put") -> str:
    return json.dumps({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
                                    "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": etag}}}]})


# ------------------------------------------------------------------------------ parsing


def test_parse_body_decodes_keys_and_tells_test_events_and_foreign_bodies_apart():
    bucket = "lake-landing"
    parsed = notify.parse_body(s3_event(bucket, "web/batch+1%2B2+%C3%A9.json"), bucket)
    assert parsed.kind == "objects" and parsed.objects == (
        notify.S3Object("web/batch 1+2 é.json", "0123456789abcdef0123456789abcdef"),)
    sns = json.dumps({"Type": "Notification", "Message": s3_event(bucket, "a.json")})
    assert notify.parse_body(sns, bucket).objects[0].key == "a.json"
    assert notify.parse_body(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent",
                                         "Bucket": bucket}), bucket).kind == "test"
    reasons = {body: notify.parse_body(body, bucket) for body in (
        "not json {", "[1, 2]", json.dumps({"hello": "world"}), s3_event("another-bucket", "a.json"),
        s3_event(bucket, "a.json", name="ObjectRemoved:Delete"), s3_event(bucket, "web/../../etc/passwd"))}
    assert all(p.kind == "invalid" and p.reason for p in reasons.values())
    assert "another-bucket" in reasons[s3_event("another-bucket", "a.json")].reason
    assert "not ObjectCreated" in reasons[s3_event(bucket, "a.json", name="ObjectRemoved:Delete")].reason


# ------------------------------------------------------------------------------ the sensor


def test_sensor_lands_only_what_is_not_landed_and_deletes_messages_once_landed(queued):
    lake, sqs, url = queued["lake"], queued["sqs"], queued["url"]
    visible_at_once(queued)
    landed_before = "segment/landed-already.ndjson.gz"
    lake.storage.put("landing", landed_before, ndjson([event(1)]))
    assert land_inbox(lake, keys=[landed_before]).total("landed") == 1
    fresh = ["segment/a.ndjson.gz", "web/batch 1+2.ndjson.gz"]  # moto encodes the second as S3 does
    for n, key in enumerate(fresh):  # as a producer writes them (the lake writes no such names)
        lake.storage.client.put_object(Bucket=lake.settings.bucket("landing"), Key=key,
                                       Body=ndjson([event(10 + n), event(20 + n)]))
    assert in_queue(sqs, url) == 4  # the TestEvent of init, then one event per PUT, delivered by moto

    request = evaluate(lake)
    assert isinstance(request, dg.RunRequest)
    assert request.run_config["ops"]["clickstream__raw_events"]["config"]["objects"] == sorted(fresh)
    assert request.tags["lake/pending_objects"] == "2"
    assert in_queue(sqs, url) == 2  # the test event and the landed object's message are deleted
    again = evaluate(lake)  # re-evaluated before the run finished: the same run key, no second run
    assert isinstance(again, dg.RunRequest) and again.run_key == request.run_key
    assert in_queue(sqs, url) == 2  # still not landed: still there

    result = dg.materialize([raw_events], run_config=request.run_config,
                            resources={"lake": LakeResource(root=str(lake.settings.root_path))})
    assert result.success
    meta = result.asset_materializations_for_node("clickstream__raw_events")[0].metadata
    assert meta["files"].value == 2 and meta["landed"].value == 4
    after = evaluate(lake)
    assert isinstance(after, dg.SkipReason) and "2 deleted as landed" in after.skip_message
    assert in_queue(sqs, url) == 0
    assert isinstance(evaluate(lake), dg.SkipReason)


def test_a_message_is_kept_while_its_object_is_not_landed(queued):
    lake, sqs, url = queued["lake"], queued["sqs"], queued["url"]
    key = "segment/waiting.ndjson.gz"
    lake.storage.put("landing", key, ndjson([event(1)]))
    first = notify.poll(lake)
    assert first.pending == {key: lake.storage.head("landing", key).etag} and first.kept == 1
    assert first.tests == 1 and in_queue(sqs, url) == 1  # only the test event went
    # the queue's real visibility timeout (300 s): the kept message is in flight, not deleted
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    second = notify.poll(lake)
    assert second.received == 0 and not second.pending and in_queue(sqs, url) == 1


def test_gone_and_overwritten_objects_settle_their_messages(queued):
    lake, sqs, url = queued["lake"], queued["sqs"], queued["url"]
    visible_at_once(queued)
    lake.storage.put("landing", "segment/deleted.ndjson.gz", ndjson([event(1)]))
    lake.storage.delete("landing", ["segment/deleted.ndjson.gz"])  # e.g. expired before landing
    key = "segment/rewritten.ndjson.gz"
    lake.storage.put("landing", key, ndjson([event(2)]))
    lake.storage.put("landing", key, ndjson([event(3), event(4)]))
    poll = notify.poll(lake)
    newest = lake.storage.head("landing", key).etag
    # the first version's message is settled (its successor has its own), the second is kept
    assert poll.pending == {key: newest} and poll.kept == 1 and poll.deleted == 2
    assert in_queue(sqs, url) == 1
    land_inbox(lake, keys=[key])
    assert notify.poll(lake).deleted == 1 and in_queue(sqs, url) == 0


def test_malformed_and_foreign_messages_go_to_the_dead_letter_queue_with_a_reason(queued):
    lake, sqs, url, dlq = queued["lake"], queued["sqs"], queued["url"], queued["dlq"]
    bodies = {"not json {": "not JSON", s3_event("someone-elses-bucket", "a.json"): "someone-elses-bucket",
              s3_event(lake.settings.bucket("landing"), "a.json", name="ObjectRemoved:Delete"): "not ObjectCreated"}
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    poll = notify.poll(lake)
    assert len(poll.dead_lettered) == 3 and poll.tests == 1 and not poll.pending and not poll.problems
    assert in_queue(sqs, url) == 0
    got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
    assert len(got) == 3
    for m in got:
        reason = m["MessageAttributes"][notify.REASON_ATTRIBUTE]["StringValue"]
        assert bodies[m["Body"]] in reason


def test_the_sensor_skips_unless_the_queue_trigger_is_chosen(queued, monkeypatch):
    monkeypatch.setenv("LAKE_LANDING_TRIGGER", "listing")
    lake = queued["lake"]
    lake.storage.put("landing", "segment/a.ndjson.gz", ndjson([event(1)]))
    skip = evaluate(lake)
    assert isinstance(skip, dg.SkipReason) and "'listing'" in skip.skip_message
    assert in_queue(queued["sqs"], queued["url"]) == 2  # nothing received, nothing deleted


# ------------------------------------------------------------------------------ init and doctor


class Writes:
    """Counts the requests of a client that change something (Create*, Set*, Put*)."""

    def __init__(self, client, service: str):
        self.calls: list[str] = []
        client.meta.events.register(f"before-call.{service}", self)

    def __call__(self, model, **_):
        if model.name.startswith(("Create", "Set", "Put")):
            self.calls.append(model.name)


def test_init_merges_with_foreign_configurations_and_a_rerun_writes_nothing(moto_endpoint, tmp_path):
    settings = s3_settings_for(moto_endpoint, tmp_path / "lake")
    s3 = S3Storage(settings)
    sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1")
    audit = sqs.create_queue(QueueName=f"{settings.bucket_prefix}-team-audit")["QueueUrl"]
    audit_arn = sqs.get_queue_attributes(QueueUrl=audit, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    foreign = {"Id": "team-audit-deletes", "QueueArn": audit_arn, "Events": ["s3:ObjectRemoved:*"]}
    bucket = settings.bucket("landing")
    s3.client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [foreign]})

    first = bootstrap.init_lake(settings, bucket_policy=False, notifications=True, storage=s3)
    ours = {c.control: c for c in first.changes if c.control in ("queue", "dead-letter queue", "event notification")}
    assert len(ours) == 3 and {c.outcome for c in ours.values()} == {"created"}
    assert "kept 1 other configuration" in ours["event notification"].detail
    url = first.queue_url
    configs = s3.client.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert [c for c in configs if c["Id"] == foreign["Id"]] == [foreign]
    (mine,) = [c for c in configs if c["Id"] == notifications_setup.NOTIFICATION_ID]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert mine["QueueArn"] == attrs["QueueArn"] and mine["Events"] == ["s3:ObjectCreated:*"]
    assert attrs["SqsManagedSseEnabled"] == "true"
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":" + notifications_setup.queue_names(settings)[1])
    assert redrive["maxReceiveCount"] == notifications_setup.MAX_RECEIVE_COUNT
    (send,) = json.loads(attrs["Policy"])["Statement"]
    assert send["Principal"] == {"Service": "s3.amazonaws.com"} and send["Action"] == "sqs:SendMessage"
    assert send["Condition"] == {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                                 "StringEquals": {"aws:SourceAccount": ACCOUNT}}

    # someone adds a statement of their own to the queue policy: a re-run keeps it, writes nothing
    policy = json.loads(attrs["Policy"])
    policy["Statement"].append({"Sid": "TeamReads", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                                "Action": "sqs:ReceiveMessage", "Resource": attrs["QueueArn"]})
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    before = in_queue(sqs, url)
    s3_writes, sqs_writes = Writes(s3.client, "s3"), Writes(sqs, "sqs")
    changes, again_url = notifications_setup.init_notifications(settings, s3, sqs=sqs)
    assert again_url == url and {c.outcome for c in changes} == {"unchanged"}
    assert s3_writes.calls == [] and sqs_writes.calls == []
    assert in_queue(sqs, url) == before  # no new configuration, so no new test event
    assert not bootstrap.init_lake(settings, bucket_policy=False, notifications=True, storage=s3).changed
    kept = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    assert "TeamReads" in {s.get("Sid") for s in kept["Statement"]}

    # a drifted queue is brought back into line
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "5"})
    changes, _ = notifications_setup.init_notifications(settings, s3, sqs=sqs)
    assert [(c.control, c.outcome) for c in changes if c.outcome != "unchanged"] == [("queue", "updated")]
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])[
        "Attributes"]["VisibilityTimeout"] == str(notifications_setup.VISIBILITY_SECONDS)


QUEUE_CONTROLS = ("landing queue", "dead-letter queue", "queue policy", "event notification")


def _queue_checks(settings: LakeSettings) -> dict[str, bootstrap.Check]:
    report = bootstrap.doctor(settings)
    return {c.control: c for c in report.checks if c.control in QUEUE_CONTROLS}


def test_doctor_checks_the_queue_trigger(queued):
    settings = queued["lake"].settings
    checks = _queue_checks(settings)
    assert {k: c.status for k, c in checks.items()} == dict.fromkeys(QUEUE_CONTROLS, "pass")
    env = {**settings.to_env(), "COLUMNS": "400"}
    out = CliRunner().invoke(app, ["--root", str(settings.root_path), "doctor"], env=env).output
    assert [ln for ln in out.splitlines() if "event notification" in ln and " pass " in ln]

    S3Storage(settings).client.put_bucket_notification_configuration(
        Bucket=settings.bucket("landing"), NotificationConfiguration={})
    checks = _queue_checks(settings)
    assert checks["event notification"].status == "FAIL"
    assert checks["event notification"].fix == "run `lake init --notifications`"
    assert checks["landing queue"].status == "pass"
    out = CliRunner().invoke(app, ["--root", str(settings.root_path), "doctor"], env=env).output
    assert [ln for ln in out.splitlines() if "event notification" in ln and " FAIL " in ln]

    queued["sqs"].set_queue_attributes(QueueUrl=queued["url"], Attributes={"VisibilityTimeout": "30"})
    checks = _queue_checks(settings)  # the tick interval: 100 receives are 50 minutes
    assert checks["dead-letter queue"].status == "FAIL" and "50 minutes" in checks["dead-letter queue"].detail

    missing = settings.with_(landing_queue_url=queued["url"] + "-nope")
    checks = _queue_checks(missing)
    assert list(checks) == ["landing queue"] and checks["landing queue"].status == "FAIL"
    assert "does not exist" in checks["landing queue"].detail


def test_without_the_queue_trigger_doctor_does_not_check_queues(moto_endpoint, tmp_path):
    settings = s3_settings_for(moto_endpoint, tmp_path / "lake")
    assert _queue_checks(settings) == {}


def test_iam_policy_names_exactly_the_landing_queues(queued):
    settings = queued["lake"].settings
    name, dlq = notifications_setup.queue_names(settings)
    policy = bootstrap.iam_policy(settings, table="events", account_id=ACCOUNT, with_init=True)
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"
    assert by_sid["LakeLandingQueue"]["Resource"] == arn
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"} <= set(
        by_sid["LakeLandingQueue"]["Action"])
    assert by_sid["LakeLandingDeadLetters"] == {"Sid": "LakeLandingDeadLetters", "Effect": "Allow",
                                                "Action": ["sqs:SendMessage"],
                                                "Resource": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{dlq}"}
    assert by_sid["LakeLandingQueueSetup"]["Resource"] == [arn, f"arn:aws:sqs:us-east-1:{ACCOUNT}:{dlq}"]
    assert all("*" not in json.dumps(s.get("Resource")) or s["Sid"] in ("LakeObjects",)
               for s in policy["Statement"] if s["Sid"].startswith("LakeLanding"))
    listing = bootstrap.iam_policy(settings.with_(landing_trigger="listing"), table="events", account_id=ACCOUNT)
    assert not [s for s in listing["Statement"] if s["Sid"].startswith("LakeLanding")]
    out = run(settings, "iam-policy", "--account-id", ACCOUNT)
    assert out.exit_code == 0, out.output
    assert "LakeLandingQueue" in {s["Sid"] for s in json.loads(out.output)["Statement"]}


# ------------------------------------------------------------------------------ embedded backend


def test_the_queue_trigger_on_the_embedded_backend_is_a_clear_error(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("LAKE_"):
            monkeypatch.delenv(name)
    with pytest.raises(ConfigError, match="LAKE_LANDING_TRIGGER=queue needs LAKE_BACKEND=s3"):
        LakeSettings(root=str(tmp_path), landing_trigger="queue",
                     landing_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/q").validate()
    result = CliRunner().invoke(app, ["--root", str(tmp_path / "lake"), "init", "--notifications"])
    assert result.exit_code == 2
    assert "--notifications needs LAKE_BACKEND=s3" in result.output
