"""Landing against payloads made by the real Segment and RudderStack Python SDKs.

The SDK clients are pointed at :class:`CaptureServer` on 127.0.0.1, which plays the vendor's API
and S3 destination (adds ``receivedAt``, copies ``sentAt``). What it captured is written as one
NDJSON landing file and landed through the engine; every event must land, unchanged in meaning.

What the real SDKs send, and these tests rely on (segment-analytics-python 2.4,
rudder-sdk-python 2.1):

* both report ``context.library = {"name": "analytics-python", ...}``, RudderStack included,
  and overwrite any ``context.library`` the caller passes;
* ``userId``/``anonymousId`` are stringified by the SDK, ``groupId``/``previousId`` are not
  (a numeric group id arrives as a JSON number);
* Segment writes ``timestamp`` with milliseconds and an offset (``...30.250+02:00``);
  RudderStack with ``isoformat()``: microseconds, or no fraction at all on a whole second;
  ``sentAt`` is microseconds with ``+00:00`` in both; a naive datetime is taken as UTC,
  unless it is within 5 s of ``datetime.now()``, then as the host's local time;
* RudderStack puts identify traits in ``context.traits`` (not at the root), adds
  ``channel: "server"`` and defaults ``integrations`` to ``{"All": true}``; it gzips by default;
* the largest event Segment accepts is 32 KiB, RudderStack's client accepts 4 MiB.
"""

from __future__ import annotations

import atexit
import base64
import gzip
import json
import re
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import rudderstack.analytics as rudder_analytics
import rudderstack.analytics.consumer as rudder_consumer
import segment.analytics as segment_analytics
import segment.analytics.consumer as segment_consumer

try:
    from tests.sdk_capture import CaptureServer
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from sdk_capture import CaptureServer

pytestmark = pytest.mark.timeout(30)

WRITE_KEY = "wk_test_2f6c1d"
#: the largest event the lake must take from either SDK (Segment's hard cap)
SEGMENT_MAX_MSG = segment_consumer.MAX_MSG_SIZE
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CET = timezone(timedelta(hours=2))
EST = timezone(timedelta(hours=-5))


@dataclass(frozen=True)
class Sdk:
    name: str
    client_cls: type
    max_msg_size: int
    version: str
    gzips_by_default: bool
    #: finest fraction of a second the SDK keeps in ``timestamp``, in microseconds
    time_resolution_us: int

    def as_sent(self, given: datetime) -> datetime:
        """The instant the SDK reports for a timestamp we passed (naive means UTC)."""
        given = _utc(given)
        return given.replace(
            microsecond=given.microsecond // self.time_resolution_us * self.time_resolution_us
        )


SDKS = {
    "segment": Sdk(
        "segment",
        segment_analytics.Client,
        segment_consumer.MAX_MSG_SIZE,
        segment_analytics.VERSION,
        gzips_by_default=False,
        time_resolution_us=1000,  # isoformat(timespec="milliseconds"): truncated, not rounded
    ),
    "rudderstack": Sdk(
        "rudderstack",
        rudder_analytics.Client,
        rudder_consumer.MAX_MSG_SIZE,
        rudder_analytics.VERSION,
        gzips_by_default=True,
        time_resolution_us=1,
    ),
}
MODES = ("sync", "batch")


@dataclass
class Sent:
    """One call made on an SDK client: the message the SDK built and what we passed in."""

    msg: dict[str, Any]
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    given_time: datetime | None = None  # the timestamp we passed (aware, or naive meaning UTC)

    @property
    def message_id(self) -> str:
        return self.msg["messageId"]


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours *_PROXY variables: make sure 127.0.0.1 is never sent to a proxy."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer() as s:
        yield s


def _run_bounded(fn: Callable[[], Any], timeout: float, what: str) -> None:
    done = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, name=f"bounded-{what}", daemon=True).start()
    if not done.wait(timeout):
        raise AssertionError(f"{what} did not finish within {timeout}s")
    if failure:
        raise failure[0]


@pytest.fixture
def make_client() -> Iterator[Callable[..., tuple[Any, list[Exception]]]]:
    """Build SDK clients that cannot outlive the test (no retries, short timeouts, joined)."""
    clients: list[Any] = []

    def make(sdk: Sdk, url: str, mode: str, **kwargs: Any) -> tuple[Any, list[Exception]]:
        errors: list[Exception] = []
        options: dict[str, Any] = {
            "host": url,
            "sync_mode": mode == "sync",
            "max_retries": 0,
            "timeout": 5,
            "upload_interval": 0.05,
            "upload_size": 100,
            "on_error": lambda exc, batch: errors.append(exc),
        }
        options.update(kwargs)
        client = sdk.client_cls(WRITE_KEY, **options)
        clients.append(client)
        return client, errors

    yield make
    for client in clients:
        _shutdown(client)


def _flush(client: Any) -> None:
    if client.consumers:
        _run_bounded(client.flush, 20, "SDK flush")


def _shutdown(client: Any) -> None:
    if client.consumers:
        for consumer in client.consumers:
            consumer.pause()
        _run_bounded(client.join, 20, "SDK consumer join")
    atexit.unregister(client.join)


def _dry_client(sdk: Sdk) -> Any:
    """A client that builds and size-checks messages but never sends them."""
    return sdk.client_cls("dry-run", send=False, sync_mode=True)


def _msg_size(msg: dict[str, Any]) -> int:
    # what both SDKs measure against MAX_MSG_SIZE (json.dumps of the cleaned message)
    return len(json.dumps(msg).encode())


def _padded_track_kwargs(sdk: Sdk, size: int) -> dict[str, Any]:
    """track() arguments whose message is exactly ``size`` bytes as the SDK measures it."""
    dry = _dry_client(sdk)

    def kwargs(pad: int) -> dict[str, Any]:
        return {
            "user_id": "user-max",
            "event": "Max Size Event",
            "message_id": f"{sdk.name}-max-size-000001",
            "timestamp": datetime(2026, 11, 1, 12, 0, 0, 500000, tzinfo=UTC),
            "properties": {"kind": "max-size", "n": 1, "blob": "x" * pad},
        }

    _, base = dry.track(**kwargs(0))
    pad = size - _msg_size(base)
    assert pad > 0
    ok, msg = dry.track(**kwargs(pad))
    assert ok and _msg_size(msg) == size
    if size == sdk.max_msg_size:
        with pytest.raises(RuntimeError):  # one byte more and the SDK refuses it
            dry.track(**kwargs(pad + 1))
    return kwargs(pad)


def send_mix(client: Any, sdk: Sdk, big_size: int) -> list[Sent]:
    """A realistic mix of calls; returns what the SDK built for each."""
    sent: list[Sent] = []

    def call(method: str, properties=None, traits=None, given_time=None, **kwargs) -> None:
        if properties is not None:
            kwargs["properties"] = properties
        if traits is not None:
            kwargs["traits"] = traits
        if given_time is not None:
            kwargs["timestamp"] = given_time
        ok, msg = getattr(client, method)(**kwargs)
        assert ok, f"{sdk.name}.{method} refused the message"
        sent.append(Sent(msg, properties, traits, given_time))

    order_props = {
        "order_id": "o-1001",
        "revenue": 42.5,
        "tax": 0.1,
        "quantity": 3,
        "free_shipping": True,
        "coupon": None,
        "big_id": 9007199254740993,  # 2**53 + 1: not representable as a double
        "negative": -17,
        "products": [
            {"sku": "sku-1", "price": 9.99, "tags": ["red", "xl"]},
            {"sku": "sku-2", "price": 22.52, "tags": []},
        ],
        "nested": {"a": {"b": [1, 2.5, "c", True, None, {"d": "é 🚀"}]}},
        "note": 'naïve café, "quoted" and\nnewline',
    }
    web_context = {
        "page": {
            "url": "https://shop.example.com/checkout?step=2&utm_source=newsletter",
            "path": "/checkout",
            "referrer": "https://mail.example.com/",
            "title": "Checkout",
        },
        "campaign": {
            "source": "newsletter",
            "medium": "email",
            "name": "black-friday",
            "term": "shoes",
            "content": "hero-banner",
        },
        "library": {"name": "caller-supplied", "version": "0.0.0"},  # the SDK overwrites it
        "ip": "203.0.113.7",
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
        "app_build": {"channel": "beta", "number": 5100},
    }
    # track with an explicit timestamp carrying an offset, rich properties and a web context
    call(
        "track",
        user_id="user-1",
        event="Order Completed",
        properties=order_props,
        context=web_context,
        integrations={"All": True, "Amplitude": False},
        given_time=datetime(2026, 11, 1, 10, 15, 30, 250000, tzinfo=CET),
    )
    # page with a numeric user id and no context.page (the url is in properties)
    call(
        "page",
        user_id=12345,
        category="Marketing",
        name="Pricing",
        properties={"url": "https://www.example.com/pricing", "path": "/pricing", "plan_count": 3},
        given_time=datetime(2026, 11, 2, 1, 30, 0, tzinfo=CET),  # 2026-11-01T23:30Z
    )
    # screen from an anonymous app user, no timestamp (the SDK stamps now)
    call(
        "screen",
        anonymous_id="anon-7f3a",
        name="Home",
        category="Main",
        properties={"tab": 2, "dark_mode": False, "ratio": 1.5},
        context={"app": {"name": "shop-ios", "version": "5.1.0", "build": "5100"}},
    )
    # identify with traits (RudderStack moves them into context.traits)
    call(
        "identify",
        user_id=12345,
        anonymous_id="anon-7f3a",
        traits={
            "email": "jane@example.com",
            "plan": "pro",
            "logins": 17,
            "score": 4.5,
            "address": {"city": "Berlin", "zip": "10115"},
            "tags": ["beta", "vip"],
        },
        given_time=datetime(2026, 11, 1, 8, 0, 0),  # naive: the SDK takes it as UTC
    )
    # group with a numeric group id (not stringified by either SDK)
    call(
        "group",
        user_id="user-1",
        group_id=987,
        traits={"name": "Acme GmbH", "employees": 250, "industry": "retail"},
        given_time=datetime(2026, 10, 31, 21, 0, 0, tzinfo=EST),  # 2026-11-01T02:00Z
    )
    # alias with a numeric previous id
    call(
        "alias",
        previous_id=555,
        user_id="user-1",
        given_time=datetime(2026, 11, 1, 23, 59, 59, 999000),  # naive, last ms of the day
    )
    # track, anonymous id only, naive timestamp
    call(
        "track",
        anonymous_id="anon-only-42",
        event="Product Viewed",
        properties={"product_id": "p-9", "price": 19.0, "variants": ["s", "m", "l"]},
        given_time=datetime(2026, 11, 1, 14, 45, 0, 123456),
    )
    # track without a timestamp and with an empty properties object
    call("track", user_id="user-2", event="App Opened", properties={})
    # the largest event the lake must take (Segment's 32 KiB cap)
    big = _padded_track_kwargs(sdk, big_size)
    call(
        "track",
        user_id=big["user_id"],
        event=big["event"],
        message_id=big["message_id"],
        properties=big["properties"],
        given_time=big["timestamp"],
    )
    return sent


def run_sdk(server: CaptureServer, make_client, sdk: Sdk, mode: str, **kwargs: Any) -> list[Sent]:
    client, errors = make_client(sdk, server.url, mode, **kwargs)
    sent = send_mix(client, sdk, min(sdk.max_msg_size, SEGMENT_MAX_MSG))
    _flush(client)
    _shutdown(client)
    server.wait_for(len(sent), timeout=15)
    assert errors == []
    assert len(server.events) == len(sent)
    return sent


def _utc(value: Any) -> datetime | None:
    """A raw-row or payload time as an aware UTC datetime (accepts datetime or ISO text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _json(value: Any) -> Any:
    return None if value is None else json.loads(value)


SDK_MODE = [pytest.param(SDKS[s], m, id=f"{s}-{m}") for s in SDKS for m in MODES]


# --- the capture server itself ---------------------------------------------------------------


@pytest.mark.parametrize(("sdk", "mode"), SDK_MODE)
def test_capture_records_sdk_batches(server: CaptureServer, make_client, sdk: Sdk, mode: str):
    sent = run_sdk(server, make_client, sdk, mode)
    events = {e["messageId"]: e for e in server.events}
    assert set(events) == {s.message_id for s in sent}

    requests = server.requests
    assert requests and all(r.status == 200 and r.path == "/v1/batch" for r in requests)
    assert all(r.write_key == WRITE_KEY for r in requests)
    assert all(r.gzipped is sdk.gzips_by_default for r in requests)
    if mode == "sync":
        assert len(requests) == len(sent)  # one POST per call
    sent_ats = {r.envelope["sentAt"] for r in requests}

    for s in sent:
        event = events[s.message_id]
        assert ISO_MS_Z.match(event["receivedAt"]), event["receivedAt"]
        assert event["sentAt"] in sent_ats
        assert _utc(event["sentAt"]) <= _utc(event["receivedAt"]) + timedelta(seconds=1)
        # apart from the two server stamps, the event is exactly what the SDK built
        assert {k: v for k, v in event.items() if k not in ("receivedAt", "sentAt")} == s.msg
        assert "writeKey" not in event
        assert event["context"]["library"] == {"name": "analytics-python", "version": sdk.version}

    ndjson = server.as_ndjson()
    lines = ndjson.splitlines()
    assert len(lines) == len(sent) and ndjson.endswith(b"\n")
    assert [json.loads(line) for line in lines] == server.events


def test_capture_server_contract(server: CaptureServer):
    def post(path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(server.url + path, data=body, method="POST")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=5) as res:
                return res.status, json.loads(res.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    auth = "Basic " + base64.b64encode(b"key-1:").decode()
    envelope = {
        "batch": [
            {"type": "track", "messageId": "m1", "sentAt": "2026-11-01T00:00:00.000Z"},
            {"type": "track", "messageId": "m2"},
        ],
        "sentAt": "2026-11-01T00:00:01.000Z",
    }
    assert post(
        "/v1/batch",
        gzip.compress(json.dumps(envelope).encode()),
        {"Content-Encoding": "gzip", "Authorization": auth},
    ) == (200, {"success": True})
    assert post("/v1/track", b"{}")[0] == 404
    assert post("/v1/batch", b"not json")[0] == 400
    assert post("/v1/batch", b'{"batch": 1}')[0] == 400

    m1, m2 = server.wait_for(2, timeout=5)
    assert m1["sentAt"] == "2026-11-01T00:00:00.000Z"  # an event's own sentAt is kept
    assert m2["sentAt"] == "2026-11-01T00:00:01.000Z"  # else the envelope's is copied
    assert ISO_MS_Z.match(m1["receivedAt"]) and m1["receivedAt"] == m2["receivedAt"]
    assert [r.status for r in server.requests] == [200, 404, 400, 400]
    assert server.requests[0].write_key == "key-1" and server.requests[0].gzipped
    with pytest.raises(TimeoutError):
        server.wait_for(3, timeout=0.2)


def test_segment_gzip_option(server: CaptureServer, make_client):
    sent = run_sdk(server, make_client, SDKS["segment"], "batch", gzip=True)
    assert all(r.gzipped for r in server.requests)
    assert {e["messageId"] for e in server.events} == {s.message_id for s in sent}


# --- landing what the SDKs sent --------------------------------------------------------------


def _land(tmp_path: Path, source: str, data: bytes):
    from pipelines.config import LakeSettings
    from pipelines.lake import Lake
    from pipelines.land import land_inbox, read_raw_rows

    lake = Lake.open(LakeSettings(root=str(tmp_path / "lake")))
    lake.storage.put("landing", f"{source}/2026/11/01/batch-0001.ndjson", data)
    report = land_inbox(lake)
    return lake, report, read_raw_rows(lake)


@pytest.mark.parametrize(("sdk", "mode"), SDK_MODE)
def test_sdk_payloads_land(server: CaptureServer, make_client, tmp_path: Path, sdk: Sdk, mode: str):
    sent = run_sdk(server, make_client, sdk, mode)
    captured = {e["messageId"]: e for e in server.events}
    lake, report, rows = _land(tmp_path, sdk.name, server.as_ndjson())

    # conservation: every line accounted for, every SDK event landed
    assert len(report.files) == 1
    (fr,) = report.files
    assert fr.lines == fr.landed + fr.quarantined
    assert (fr.lines, fr.landed, fr.quarantined) == (len(sent), len(sent), 0), fr.reasons
    assert not any(fr.reasons.values())
    expected_days = Counter(_utc(e["timestamp"]).date().isoformat() for e in captured.values())
    assert dict(report.touched) == dict(expected_days)
    assert sum(report.touched.values()) == len(sent)

    by_id = {r["event_id"]: r for r in rows}
    assert len(rows) == len(sent) and set(by_id) == set(captured)

    for s in sent:
        event, row = captured[s.message_id], by_id[s.message_id]
        where = f"{sdk.name} {event['type']} {s.message_id}"
        assert row["event_type"] == event["type"], where
        assert row["event_name"] == (event.get("event") or event.get("name")), where
        assert row["anonymous_id"] == event.get("anonymousId"), where
        assert row["user_id"] == event.get("userId"), where
        # rule 1 of event_time: the payload's timestamp, in UTC, at full precision
        assert _utc(row["event_time"]) == _utc(event["timestamp"]), where
        if s.given_time is not None:
            assert _utc(row["event_time"]) == sdk.as_sent(s.given_time), where
        assert _utc(row["sent_at"]) == _utc(event["sentAt"]), where
        assert _utc(row["received_at"]) == _utc(event["receivedAt"]), where
        library = event["context"]["library"]
        assert row["library_name"] == library["name"] == "analytics-python", where
        assert row["library_version"] == library["version"] == sdk.version, where
        if s.properties is not None:
            assert _json(row["properties"]) == s.properties, where
        if s.traits is not None:
            assert _json(row["traits"]) == s.traits, where
        assert _json(row["integrations"]) == event["integrations"], where
        assert row["channel"] == event.get("channel"), where  # RudderStack: "server"

    rows_by_type = {}
    for s in sent:
        rows_by_type.setdefault(s.msg["type"], []).append(by_id[s.message_id])

    track = by_id[sent[0].message_id]  # the offset-timestamp order with a web context
    assert _utc(track["event_time"]) == datetime(2026, 11, 1, 8, 15, 30, 250000, tzinfo=UTC)
    assert track["page_url"] == "https://shop.example.com/checkout?step=2&utm_source=newsletter"
    assert track["campaign_source"] == "newsletter" and track["campaign_name"] == "black-friday"
    context = _json(track["context"])
    assert context["timezone"] == "Europe/Berlin"  # unmapped context fields are kept
    assert context["app_build"] == {"channel": "beta", "number": 5100}
    assert (track["ip"], track["locale"]) == ("203.0.113.7", "de-DE")
    assert track["user_agent"] == "Mozilla/5.0 (X11; Linux x86_64)"
    assert _json(track["properties"])["big_id"] == 9007199254740993

    page = by_id[sent[1].message_id]
    assert page["user_id"] == "12345"
    assert page["page_url"] == "https://www.example.com/pricing"  # from properties.url

    identify = rows_by_type["identify"][0]
    assert identify["user_id"] == "12345"
    assert _utc(identify["event_time"]) == datetime(2026, 11, 1, 8, 0, tzinfo=UTC)

    (group,) = rows_by_type["group"]
    assert group["group_id"] == "987"  # sent as a JSON number by both SDKs
    (alias,) = rows_by_type["alias"]
    assert alias["previous_id"] == "555"
    assert _utc(alias["event_time"]) == datetime(2026, 11, 1, 23, 59, 59, 999000, tzinfo=UTC)

    big = by_id[sent[-1].message_id]
    assert len(_json(big["properties"])["blob"]) == len(sent[-1].properties["blob"])

    # landing the same inbox again changes nothing a reader can see
    from pipelines.land import land_inbox, read_raw_rows

    land_inbox(lake)
    assert sorted(r["event_id"] for r in read_raw_rows(lake)) == sorted(captured)


def test_rudderstack_max_size_event_lands(server: CaptureServer, make_client, tmp_path: Path):
    """RudderStack's client accepts events up to 4 MiB; the default line limit admits them."""
    sdk = SDKS["rudderstack"]
    client, errors = make_client(sdk, server.url, "sync")
    big = _padded_track_kwargs(sdk, sdk.max_msg_size)
    ok, msg = client.track(**big)
    small_ok, small = client.track(
        user_id="u-small",
        event="Small",
        properties={"a": 1},
        timestamp=datetime(2026, 11, 1, 9, 0, tzinfo=UTC),
    )
    assert ok and small_ok and errors == []
    server.wait_for(2, timeout=15)
    _lake, report, rows = _land(tmp_path, sdk.name, server.as_ndjson())

    (fr,) = report.files
    assert (fr.lines, fr.landed, fr.quarantined) == (2, 2, 0)
    assert {r["event_id"] for r in rows} == {small["messageId"], msg["messageId"]}
