"""Event-driven landing: S3 ObjectCreated notifications read from an SQS queue.

S3 sends one message per new landing object to ``LAKE_LANDING_QUEUE_URL`` (``lake init
--notifications`` sets this up). A poll receives a batch, decides per message, and names the
objects a landing run should land:

* every object of the message landed (its ledger record exists for key + ETag), gone, or
  overwritten since (the newer version has its own message): the message is deleted;
* ``s3:TestEvent`` (sent by S3 when the notification is configured): deleted;
* a body that is not an S3 event, or an event for another bucket or of another kind: sent to the
  dead-letter queue with a ``reason`` attribute, then deleted from the main queue (never dropped);
* otherwise the message is kept: it becomes visible again after the queue's visibility timeout
  and is deleted by a later poll, once its objects are landed. A message is deleted only after
  its objects are landed.

The queue trigger needs the S3 backend (``LakeSettings.validate`` refuses it on the local one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import BotoCoreError, ClientError

from pipelines.concurrency import bounded_map
from pipelines.errors import ConfigError, LakeError
from pipelines.lake import Lake
from pipelines.land import is_landed
from pipelines.s3 import aws_error, sqs_client
from pipelines.storage import read_key

#: the most objects one landing run is asked to land. The keys travel in the run's config, which
#: Dagster stores with the run and shows in the UI (1,000 keys is ~100 KB); and a bounded run
#: finishes well inside the messages' redrive budget (``maxReceiveCount`` x visibility timeout),
#: so a burst of 50,000 files becomes 50 runs, the later ones started on later ticks.
MAX_KEYS_PER_RUN = 1000
#: SQS returns at most 10 messages per ReceiveMessage
_BATCH = 10
#: the message attribute that says why a message was dead-lettered
REASON_ATTRIBUTE = "reason"
_MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


@dataclass(frozen=True)
class S3Object:
    """One object version an event announces."""

    key: str
    etag: str


@dataclass(frozen=True)
class Parsed:
    """What a message body says: ``objects`` (ObjectCreated records), ``test`` or ``invalid``."""

    kind: str
    objects: tuple[S3Object, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class Message:
    """A received message with its parsed body."""

    message_id: str
    receipt_handle: str
    body: str
    parsed: Parsed

    @property
    def keys(self) -> list[str]:
        """The landing keys the message announces."""
        return [o.key for o in self.parsed.objects]


@dataclass
class Poll:
    """What one poll of the queue found and did."""

    received: int = 0
    #: messages deleted because every object they announce is landed, gone or overwritten
    deleted: int = 0
    tests: int = 0
    #: (message id, reason) of every message sent to the dead-letter queue
    dead_lettered: list[tuple[str, str]] = field(default_factory=list)
    #: objects to land (key -> ETag), at most ``MAX_KEYS_PER_RUN``
    pending: dict[str, str] = field(default_factory=dict)
    #: messages kept because their objects are not landed yet
    kept: int = 0
    #: messages handed back at once because the run was full (picked up by the next poll)
    deferred: int = 0
    #: things a person should know (a failed delete, a missing dead-letter queue)
    problems: list[str] = field(default_factory=list)

    @property
    def run_key(self) -> str:
        """A key derived from the pending keys and ETags: the same pending objects, the same key,
        so a re-evaluation before the landing run finishes starts no second run."""
        text = "\n".join(f"{k}\t{e}" for k, e in sorted(self.pending.items()))
        return "queue-" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def summary(self) -> str:
        """One line for a sensor's skip reason or a log."""
        return (f"{self.received} messages: {len(self.pending)} objects to land ({self.kept} messages kept), "
                f"{self.deleted} deleted as landed, {self.tests} test events, "
                f"{len(self.dead_lettered)} dead-lettered, {self.deferred} deferred")


# ------------------------------------------------------------------------------------ parsing


def parse_body(body: str, bucket: str) -> Parsed:
    """Parse an SQS message body carrying an S3 event notification for ``bucket``.

    Keys are URL-decoded as S3 encodes them (``+`` for a space). Every record must be an
    ObjectCreated event of ``bucket``; a message with any other record is ``invalid`` as a whole
    (S3 sends one record per message, so this only catches messages that are not ours).
    SNS-wrapped events (S3 -> SNS -> SQS without raw delivery) are unwrapped.
    """
    try:
        doc = json.loads(body)
    except (TypeError, ValueError):
        return Parsed("invalid", reason="body is not JSON")
    if isinstance(doc, dict) and doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return parse_body(doc["Message"], bucket)
    if not isinstance(doc, dict):
        return Parsed("invalid", reason="body is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return Parsed("test")
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        return Parsed("invalid", reason="not an S3 event notification (no Records)")
    objects = []
    for n, record in enumerate(records):
        obj = _record(record, bucket)
        if isinstance(obj, str):
            return Parsed("invalid", reason=f"record {n}: {obj}")
        objects.append(obj)
    return Parsed("objects", tuple(objects))


def _record(record: Any, bucket: str) -> S3Object | str:
    """The object of one ObjectCreated record of ``bucket``, or why the record is not one."""
    if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
        return "not an S3 event record"
    name = str(record.get("eventName", ""))
    if not name.startswith("ObjectCreated:"):
        return f"event {name!r} is not ObjectCreated"
    s3 = record.get("s3") if isinstance(record.get("s3"), dict) else {}
    found = (s3.get("bucket") or {}).get("name") if isinstance(s3.get("bucket"), dict) else None
    if found != bucket:
        return f"event of bucket {found!r}, not the landing bucket {bucket!r}"
    obj = s3.get("object") if isinstance(s3.get("object"), dict) else {}
    key, etag = obj.get("key"), obj.get("eTag")
    if not isinstance(key, str) or not isinstance(etag, str) or not key or not etag:
        return "no object key or eTag"
    key = unquote_plus(key)
    try:
        read_key("landing", key)
    except ValueError as exc:
        return f"the lake refuses the key: {exc}"
    return S3Object(key=key, etag=etag.strip('"'))


# ------------------------------------------------------------------------------------ the queue


def _queue_url(lake: Lake) -> str:
    url = lake.settings.landing_queue_url
    if not url:
        raise ConfigError("LAKE_LANDING_QUEUE_URL is not set (see `lake init --notifications`)")
    return url


def _call(what: str, fn: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return fn(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in _MISSING_QUEUE:
            raise ConfigError(f"{what}: the queue {kwargs.get('QueueUrl')} does not exist: fix "
                              "LAKE_LANDING_QUEUE_URL or run `lake init --notifications`") from exc
        raise aws_error(exc, what) from exc
    except BotoCoreError as exc:
        raise aws_error(exc, what) from exc


def receive(lake: Lake, max_messages: int = MAX_KEYS_PER_RUN, wait_seconds: int = 1,
            client: Any = None) -> list[Message]:
    """Receive up to ``max_messages`` messages (fewer when the queue has fewer), parsed.

    The first ReceiveMessage long-polls ``wait_seconds`` (0-1 s keeps a sensor tick short; a
    long poll also asks every SQS server, so an almost empty queue is not missed); the following
    ones do not wait. Received messages stay invisible for the queue's visibility timeout (300 s
    as ``lake init --notifications`` sets it: a kept message is re-checked that often). The
    same message delivered twice (SQS is at-least-once) is kept once, with its newest receipt.
    """
    client = client or sqs_client(lake.settings)
    url, bucket = _queue_url(lake), lake.settings.bucket("landing")
    found: dict[str, Message] = {}
    wait = wait_seconds
    while len(found) < max_messages:
        r = _call("receiving from the landing queue", client.receive_message, QueueUrl=url,
                  MaxNumberOfMessages=min(_BATCH, max_messages - len(found)), WaitTimeSeconds=wait)
        wait = 0
        batch = r.get("Messages") or []
        new = [m for m in batch if m["MessageId"] not in found]
        for m in batch:
            found[m["MessageId"]] = Message(m["MessageId"], m["ReceiptHandle"], m.get("Body") or "",
                                            parse_body(m.get("Body") or "", bucket))
        if not new:  # empty, or only messages seen already (a visibility timeout of 0)
            break
    return list(found.values())


def object_state(lake: Lake, obj: S3Object) -> str:
    """``landed`` (its ledger record exists), ``gone`` (deleted, expired), ``replaced`` (the key
    now holds another version, which has its own event) or ``pending``."""
    if is_landed(lake, obj.key, obj.etag):
        return "landed"
    current = lake.storage.head("landing", obj.key)
    if current is None:
        return "gone"
    return "pending" if current.etag == obj.etag else "replaced"


def poll(lake: Lake, max_keys: int = MAX_KEYS_PER_RUN, client: Any = None) -> Poll:
    """Receive a batch, settle every message that can be settled, and name the objects to land.

    Deletes messages whose objects are all landed (or gone or overwritten) and test events;
    dead-letters messages that are not ours; keeps the rest, whose objects are ``pending``.
    """
    client = client or sqs_client(lake.settings)
    messages = receive(lake, max_messages=max_keys, client=client)
    result = Poll(received=len(messages))
    objects = sorted({o for m in messages for o in m.parsed.objects}, key=lambda o: (o.key, o.etag))
    threads = min(lake.settings.s3_concurrency, len(objects) or 1)
    states = dict(zip(objects, bounded_map(lambda o: object_state(lake, o), objects, threads,
                                           name="lake-notify"), strict=True))
    done, invalid, deferred = [], [], []
    for m in messages:
        if m.parsed.kind == "test":
            result.tests += 1
            done.append(m)
        elif m.parsed.kind == "invalid":
            invalid.append(m)
        else:
            todo = {o.key: o.etag for o in m.parsed.objects if states[o] == "pending"}
            if not todo:
                result.deleted += 1
                done.append(m)
            elif result.pending and len(result.pending.keys() | todo.keys()) > max_keys:
                deferred.append(m)
            else:
                result.pending.update(todo)
                result.kept += 1
    _delete(client, _queue_url(lake), done, result)
    if invalid:
        _dead_letter(client, lake, invalid, result)
    if deferred:
        # the run is full: hand these back now rather than after the visibility timeout
        _release(client, _queue_url(lake), deferred, result)
    return result


def _delete(client: Any, url: str, messages: Iterable[Message], result: Poll) -> None:
    messages = list(messages)
    for start in range(0, len(messages), _BATCH):
        batch = messages[start:start + _BATCH]
        r = _call("deleting from the landing queue", client.delete_message_batch, QueueUrl=url,
                  Entries=[{"Id": str(n), "ReceiptHandle": m.receipt_handle} for n, m in enumerate(batch)])
        for failed in r.get("Failed") or []:
            # e.g. the receipt expired: the message comes back and a later poll deletes it
            m = batch[int(failed["Id"])]
            result.problems.append(f"could not delete message {m.message_id}: {failed.get('Code')} "
                                   f"{failed.get('Message', '')}".rstrip())


def _release(client: Any, url: str, messages: list[Message], result: Poll) -> None:
    for start in range(0, len(messages), _BATCH):
        batch = messages[start:start + _BATCH]
        _call("handing messages back to the landing queue", client.change_message_visibility_batch,
              QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                                     for n, m in enumerate(batch)])
    result.deferred += len(messages)


def dead_letter_url(lake: Lake, client: Any = None) -> str | None:
    """The URL of the landing queue's dead-letter queue (from its RedrivePolicy), or None.

    A dead-letter queue is in the queue's account and region (SQS requires it), so its URL is
    the queue's with the name replaced: no GetQueueUrl (nor its permission) needed.
    """
    client = client or sqs_client(lake.settings)
    url = _queue_url(lake)
    attrs = _call("reading the landing queue's redrive policy", client.get_queue_attributes,
                  QueueUrl=url, AttributeNames=["RedrivePolicy"]).get("Attributes") or {}
    if not attrs.get("RedrivePolicy"):
        return None
    target = json.loads(attrs["RedrivePolicy"]).get("deadLetterTargetArn", "")
    return f"{url.rsplit('/', 1)[0]}/{target.rsplit(':', 1)[-1]}" if target else None


def _dead_letter(client: Any, lake: Lake, messages: list[Message], result: Poll) -> None:
    dlq = dead_letter_url(lake, client)
    if dlq is None:
        # never a silent drop: without a dead-letter queue such messages stay where they are
        result.problems.append(f"{len(messages)} messages are not S3 events of the landing bucket but the "
                               "queue has no dead-letter queue (RedrivePolicy): they stay in the queue; "
                               "run `lake init --notifications`")
        return
    sent = []
    for m in messages:
        reason = m.parsed.reason[:1000]
        try:
            _call("sending to the dead-letter queue", client.send_message, QueueUrl=dlq,
                  MessageBody=m.body or "(empty)",
                  MessageAttributes={REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason},
                                     "source_message_id": {"DataType": "String", "StringValue": m.message_id}})
        except LakeError as exc:  # kept in the main queue: it comes back and is tried again
            result.problems.append(f"could not dead-letter message {m.message_id} ({reason}): {exc}")
            continue
        sent.append(m)
        result.dead_lettered.append((m.message_id, reason))
    _delete(client, _queue_url(lake), sent, result)
