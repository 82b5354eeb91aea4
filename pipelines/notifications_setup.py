"""``lake init --notifications``: the landing bucket's ObjectCreated events to an SQS queue.

Sets up, idempotently (a re-run writes nothing when everything matches):

* a dead-letter queue ``<LAKE_BUCKET_PREFIX>-landing-events-dlq``, SSE-SQS encrypted;
* the queue ``<LAKE_BUCKET_PREFIX>-landing-events``, SSE-SQS encrypted, redriving to the DLQ,
  with a queue policy letting S3 send only the landing bucket's events (``aws:SourceArn``) of
  this account (``aws:SourceAccount``); statements of the policy the project does not own are kept;
* the landing bucket's notification configuration: ObjectCreated:* to the queue, merged into the
  configuration found (every configuration whose Id does not start with ``clickstream-lake:`` is
  kept as it was).

``lake doctor`` checks the same things when ``LAKE_LANDING_TRIGGER=queue``; ``lake iam-policy``
adds what the sensor (and, with ``--with-init``, this setup) needs on exactly these queues.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.bootstrap import (
    FIX_READ,
    SID_PREFIX,
    Change,
    Check,
    _code,
    _read,
    _same_policy,
    _statements,
    bucket_arn,
    merge_policy,
    partition,
)
from pipelines.config import LakeSettings
from pipelines.errors import ConfigError, TerminalError
from pipelines.lifecycle import RULE_ID_PREFIX
from pipelines.s3 import S3Storage, aws_error, sqs_client

QUEUE_SUFFIX = "-landing-events"
DLQ_SUFFIX = "-dlq"
#: our bucket notification configuration; others (other Ids) are kept as found
NOTIFICATION_ID = f"{RULE_ID_PREFIX}landing-events"
EVENTS = ["s3:ObjectCreated:*"]
SID_S3_SEND = f"{SID_PREFIX}S3SendMessage"
#: how long a received message stays invisible. The sensor requests the landing run on the first
#: receive; a kept message is looked at again (and deleted once landed) after this, so it only
#: bounds how often a waiting message is re-checked, not how fast objects land.
VISIBILITY_SECONDS = 300
#: receives before SQS moves a message to the DLQ. A message is received once per visibility
#: timeout until its landing run has finished; a run queued behind a long backfill or landing a
#: burst can take hours, and a good message must not end in the DLQ meanwhile. 100 x 300 s is
#: over 8 hours: only a message whose objects keep failing to land gets there.
MAX_RECEIVE_COUNT = 100
#: ``lake doctor`` fails a queue whose messages would be dead-lettered sooner than this
MIN_REDRIVE_SECONDS = 4 * 3600
#: SQS keeps a message's first enqueue time when it moves to the DLQ, so the DLQ keeps messages
#: longer (the 14-day maximum) than the main queue (4 days), or they would expire on arrival
QUEUE_RETENTION_SECONDS = 4 * 86400
DLQ_RETENTION_SECONDS = 14 * 86400
FIX_NOTIFY = "run `lake init --notifications`"
_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


def queue_names(settings: LakeSettings) -> tuple[str, str]:
    """The landing events queue and its dead-letter queue: ``LAKE_LANDING_QUEUE_URL``'s queue if
    set, else ``<prefix>-landing-events``; the DLQ is that name plus ``-dlq``."""
    url = settings.landing_queue_url
    name = url.rstrip("/").rsplit("/", 1)[-1] if url else f"{settings.bucket_prefix}{QUEUE_SUFFIX}"
    return name, name + DLQ_SUFFIX


def queue_arn(settings: LakeSettings, account: str, name: str) -> str:
    """The ARN of a queue of ``account`` in the settings' region."""
    return f"arn:{partition(settings.aws_region)}:sqs:{settings.aws_region}:{account}:{name}"


def send_statement(settings: LakeSettings, arn: str, account: str) -> dict[str, Any]:
    """The queue-policy statement letting S3 send the landing bucket's events, and only those."""
    return {"Sid": SID_S3_SEND, "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": arn,
            # SourceArn: only this bucket's events; SourceAccount: a bucket of that name deleted
            # and re-created in another account cannot send (the confused-deputy guard)
            "Condition": {"ArnEquals": {"aws:SourceArn": bucket_arn(settings, settings.bucket("landing"))},
                          "StringEquals": {"aws:SourceAccount": account}}}


def _call(what: str, fn: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, what) from exc


def _queue_url(sqs: Any, name: str) -> str | None:
    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if _code(exc) in _MISSING_QUEUE:
            return None
        raise aws_error(exc, f"looking up queue {name}") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, f"looking up queue {name}") from exc


def _attributes(sqs: Any, url: str) -> dict[str, str]:
    return _call(f"reading attributes of {url}", sqs.get_queue_attributes, QueueUrl=url,
                 AttributeNames=["All"]).get("Attributes") or {}


def _encrypted(attrs: dict[str, str]) -> bool:
    # SSE-SQS, or a customer key someone chose (then its key policy must admit S3: not ours)
    return attrs.get("SqsManagedSseEnabled") == "true" or bool(attrs.get("KmsMasterKeyId"))


def _differs(name: str, found: str | None, wanted: str) -> bool:
    if name == "SqsManagedSseEnabled":
        return False  # compared by _encrypted
    if name == "RedrivePolicy":
        if not found:
            return True
        doc, want = json.loads(found), json.loads(wanted)
        return (doc.get("deadLetterTargetArn") != want["deadLetterTargetArn"]
                or int(doc.get("maxReceiveCount", 0)) != want["maxReceiveCount"])
    if name == "Policy":
        return not _same_policy(json.loads(found) if found else None, json.loads(wanted))
    return found != wanted


def _ensure_queue(sqs: Any, name: str, wanted: dict[str, str], state: str) -> tuple[str, str, Change]:
    """Create queue ``name`` with ``wanted`` attributes, or set those that differ; (url, arn, change)."""
    url = _queue_url(sqs, name)
    if url is None:
        try:
            url = sqs.create_queue(QueueName=name, Attributes=wanted)["QueueUrl"]
            outcome, detail = "created", state
        except ClientError as exc:
            if _code(exc) not in ("QueueAlreadyExists", "AWS.SimpleQueueService.QueueAlreadyExists"):
                raise aws_error(exc, f"creating queue {name}") from exc
            url = _queue_url(sqs, name)  # created meanwhile by another init: align it below
            outcome = ""
        except BotoCoreError as exc:
            raise aws_error(exc, f"creating queue {name}") from exc
        if outcome:
            return url, _attributes(sqs, url)["QueueArn"], Change("landing", name, "queue", outcome, detail)
    attrs = _attributes(sqs, url)
    update = {k: v for k, v in wanted.items() if _differs(k, attrs.get(k), v)}
    if not _encrypted(attrs):
        update["SqsManagedSseEnabled"] = "true"
    if not update:
        return url, attrs["QueueArn"], Change("landing", name, "queue", "unchanged", state)
    _call(f"setting attributes of queue {name}", sqs.set_queue_attributes, QueueUrl=url, Attributes=update)
    return url, attrs["QueueArn"], Change("landing", name, "queue", "updated",
                                          f"{state} (set {', '.join(sorted(update))})")


def init_notifications(settings: LakeSettings, s3: S3Storage, sqs: Any = None) -> tuple[list[Change], str]:
    """Create or align the queues and the landing bucket's notification; (changes, queue URL)."""
    sqs = sqs or sqs_client(settings)
    name, dlq_name = queue_names(settings)
    _, dlq_arn, dlq_change = _ensure_queue(sqs, dlq_name, {
        "SqsManagedSseEnabled": "true", "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)},
        f"dead-letter queue, SSE-SQS, kept {DLQ_RETENTION_SECONDS // 86400} days")
    account = dlq_arn.split(":")[4]  # the queues' (and the buckets') account, without STS
    arn = queue_arn(settings, account, name)
    existing = None
    url = _queue_url(sqs, name)
    if url is not None:
        found = _attributes(sqs, url).get("Policy")
        existing = json.loads(found) if found else None
    policy = merge_policy(existing, [send_statement(settings, arn, account)])
    url, arn, queue_change = _ensure_queue(sqs, name, {
        "SqsManagedSseEnabled": "true", "VisibilityTimeout": str(VISIBILITY_SECONDS),
        "MessageRetentionPeriod": str(QUEUE_RETENTION_SECONDS),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}),
        "Policy": json.dumps(policy)},
        f"SSE-SQS, S3 may send {settings.bucket('landing')}'s events, dead letters after "
        f"{MAX_RECEIVE_COUNT} receives")
    changes = [Change("landing", dlq_name, "dead-letter queue", dlq_change.outcome, dlq_change.detail),
               queue_change, _ensure_notification(settings, s3, arn)]
    return changes, url


def _ours(config: dict[str, Any]) -> bool:
    return str(config.get("Id", "")).startswith(RULE_ID_PREFIX)


def _ensure_notification(settings: LakeSettings, s3: S3Storage, arn: str) -> Change:
    bucket = settings.bucket("landing")
    client = s3.client
    found = _read(client.get_bucket_notification_configuration,
                  f"reading the event notifications of {bucket}", Bucket=bucket) or {}
    queues = found.get("QueueConfigurations") or []
    mine = [c for c in queues if _ours(c)]
    wanted = {"Id": NOTIFICATION_ID, "QueueArn": arn, "Events": EVENTS}
    state = f"ObjectCreated:* -> {arn.rsplit(':', 1)[-1]}"
    foreign = sum(len(found.get(k) or []) for k in ("QueueConfigurations", "TopicConfigurations",
                                                    "LambdaFunctionConfigurations")) - len(mine)
    if foreign:
        state += f"; kept {foreign} other configuration{'s' if foreign != 1 else ''}"
    if (len(mine) == 1 and mine[0].get("QueueArn") == arn and sorted(mine[0].get("Events") or []) == EVENTS
            and not mine[0].get("Filter")):
        return Change("landing", bucket, "event notification", "unchanged", state)
    config = {k: v for k, v in found.items() if k in ("TopicConfigurations", "LambdaFunctionConfigurations",
                                                      "EventBridgeConfiguration")}
    config["QueueConfigurations"] = [*(c for c in queues if not _ours(c)), wanted]
    try:
        client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", "")
        if _code(exc) == "InvalidArgument" and ("overlap" in message or "ambiguous" in message):
            raise ConfigError(f"{bucket} already sends ObjectCreated events of the same keys to another "
                              "destination, and S3 allows one per event and key range: fan out through one "
                              "SNS topic or EventBridge, or remove that configuration") from exc
        if _code(exc) == "InvalidArgument" and "validate" in message:
            raise ConfigError(f"S3 refused to send {bucket}'s events to {arn}: the queue policy does not let "
                              f"it ({message})") from exc
        raise aws_error(exc, f"setting the event notifications of {bucket}") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, f"setting the event notifications of {bucket}") from exc
    return Change("landing", bucket, "event notification", "updated" if mine else "created", state)


# ----------------------------------------------------------------------------------- doctor


def _probe(sqs: Any, url: str) -> tuple[dict[str, str] | None, str, str]:
    """A queue's attributes, or (None, why they could not be read, the fix)."""
    try:
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]).get("Attributes") or {}, "", ""
    except ClientError as exc:
        if _code(exc) in _MISSING_QUEUE:
            return None, "queue does not exist", f"{FIX_NOTIFY} and set LAKE_LANDING_QUEUE_URL to the URL it prints"
        if _code(exc) in ("AccessDenied", "AccessDeniedException", "AWS.SimpleQueueService.AccessDenied"):
            return None, str(aws_error(exc, "reading the queue")), FIX_READ
        raise aws_error(exc, f"reading queue {url}") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, f"reading queue {url}") from exc


def doctor_checks(settings: LakeSettings, s3: S3Storage) -> list[Check]:
    """The queue trigger's controls: queue (encrypted), dead-letter queue, queue policy, bucket
    notification. Reads only."""
    sqs = sqs_client(settings)
    url = settings.landing_queue_url or ""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    checks: list[Check] = []

    def check(target: str, control: str, problem: str | None, ok: str, fix: str = FIX_NOTIFY) -> None:
        checks.append(Check("landing", target, control, "pass" if problem is None else "FAIL",
                            ok if problem is None else problem, "" if problem is None else fix))

    attrs, problem, fix = _probe(sqs, url)
    if attrs is None:
        check(name, "landing queue", f"LAKE_LANDING_QUEUE_URL {url}: {problem}", "", fix)
        return checks
    check(name, "landing queue", None if _encrypted(attrs) else "not encrypted at rest", "exists, encrypted")

    redrive = json.loads(attrs["RedrivePolicy"]) if attrs.get("RedrivePolicy") else {}
    dlq = str(redrive.get("deadLetterTargetArn", "")).rsplit(":", 1)[-1]
    problem, fix = "no dead-letter queue (RedrivePolicy): bad messages would be retried forever", FIX_NOTIFY
    if dlq:
        found, dlq_problem, fix = _probe(sqs, f"{url.rsplit('/', 1)[0]}/{dlq}")
        problem = None if found is not None else f"dead-letter queue {dlq}: {dlq_problem}"
        # a message is received once per visibility timeout while its landing run waits or runs
        budget = int(redrive.get("maxReceiveCount", 0)) * int(attrs.get("VisibilityTimeout", 0))
        if problem is None and budget < MIN_REDRIVE_SECONDS:
            problem = (f"good messages reach the dead-letter queue after {budget // 60} minutes of a slow "
                       f"landing run ({redrive.get('maxReceiveCount')} receives x VisibilityTimeout "
                       f"{attrs.get('VisibilityTimeout')} s)")
    check(name, "dead-letter queue", problem, f"{dlq} after {redrive.get('maxReceiveCount')} receives", fix)

    landing = bucket_arn(settings, settings.bucket("landing"))
    policy = json.loads(attrs["Policy"]) if attrs.get("Policy") else None
    allows = any(s.get("Effect") == "Allow" and "s3.amazonaws.com" in str(s.get("Principal"))
                 and any(a in str(s.get("Action")) for a in ("sqs:SendMessage", "sqs:*")) and landing in json.dumps(s.get("Condition") or {})
                 for s in (_statements(policy) if policy else []))
    check(name, "queue policy", None if allows else f"no statement lets s3.amazonaws.com send {landing}'s events",
          f"S3 may send {settings.bucket('landing')}'s events")

    bucket = settings.bucket("landing")
    try:
        found = _read(s3.client.get_bucket_notification_configuration,
                      f"reading the event notifications of {bucket}", Bucket=bucket) or {}
    except TerminalError as exc:
        check(bucket, "event notification", str(exc), "", FIX_READ)
        return checks
    # recognised by what it says, not by its Id: an equivalent configuration counts
    to_queue = [c for c in found.get("QueueConfigurations") or [] if c.get("QueueArn") == attrs.get("QueueArn")]
    created = [c for c in to_queue if "s3:ObjectCreated:*" in (c.get("Events") or [])]
    problem = None
    if not to_queue:
        problem = f"{bucket} sends no events to {name}"
    elif not created:
        problem = f"{bucket} sends {name} other events than s3:ObjectCreated:*"
    filtered = " (filtered by key)" if any(c.get("Filter") for c in created) else ""
    check(bucket, "event notification", problem, f"ObjectCreated:* -> {name}{filtered}")
    return checks


# ------------------------------------------------------------------------------- IAM policy

#: what the queue sensor does: receive, delete landed messages, hand back messages a full run
#: could not take, read the redrive policy (to find the DLQ), and dead-letter bad messages
SENSOR_ACTIONS = ("sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                  "sqs:ReceiveMessage")
SETUP_ACTIONS = ("sqs:CreateQueue", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SetQueueAttributes")
NOTIFICATION_ACTIONS = ("s3:GetBucketNotification", "s3:PutBucketNotification")


def iam_statements(settings: LakeSettings, account: str, with_init: bool) -> list[dict[str, Any]]:
    """IAM statements for the queue trigger, on exactly the landing queue and its DLQ."""
    name, dlq_name = queue_names(settings)
    arn, dlq = queue_arn(settings, account, name), queue_arn(settings, account, dlq_name)
    statements: list[dict[str, Any]] = [
        {"Sid": "LakeLandingQueue", "Effect": "Allow", "Action": list(SENSOR_ACTIONS), "Resource": arn},
        {"Sid": "LakeLandingDeadLetters", "Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": dlq},
    ]
    if with_init:
        statements += [
            {"Sid": "LakeLandingQueueSetup", "Effect": "Allow", "Action": list(SETUP_ACTIONS),
             "Resource": [arn, dlq]},
            {"Sid": "LakeLandingNotification", "Effect": "Allow", "Action": list(NOTIFICATION_ACTIONS),
             "Resource": bucket_arn(settings, settings.bucket("landing"))},
        ]
    return statements
