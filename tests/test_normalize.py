"""The pure event -> row mapping of ``pipelines.normalize``, checked against the schema file's rules."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from pipelines.normalize import (
    MIN_EVENT_TIME,
    Normalizer,
    Reject,
    event_time,
    parse_time,
    partition_of,
)
from pipelines.schema import load_spec

SPEC = load_spec("clickstream", "events")
TOLERANCE = timedelta(hours=24)
NORM = Normalizer(SPEC, TOLERANCE)
ARRIVAL = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
DROP = object()  # marks a key to remove from the base event


def base(**fields: Any) -> dict:
    """A minimal valid track event; ``key=DROP`` removes a key, other values override."""
    ev: dict[str, Any] = {
        "messageId": "m-1",
        "type": "track",
        "event": "Clicked",
        "anonymousId": "anon-1",
        "timestamp": "2026-11-01T10:00:00.000Z",
        "sentAt": "2026-11-01T10:00:01.000Z",
        "receivedAt": "2026-11-01T10:00:02.000Z",
    }
    for key, value in fields.items():
        if value is DROP:
            ev.pop(key, None)
        else:
            ev[key] = value
    return ev


def norm(obj: Any, arrival: datetime = ARRIVAL) -> dict | Reject:
    return NORM.row(obj, arrival=arrival, source_object="web/2026/11/01/a.ndjson", source_line=7,
                    ingested_at=arrival)


def ok(obj: Any, arrival: datetime = ARRIVAL) -> dict:
    row = norm(obj, arrival)
    assert isinstance(row, dict), row
    return row


def reason(obj: Any, arrival: datetime = ARRIVAL) -> str:
    row = norm(obj, arrival)
    assert isinstance(row, Reject), f"expected a rejection, got a row: {row}"
    assert row.detail  # a human detail always comes with the code
    return row.reason


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the event_time rule ------------------------------------------------------------------------


def test_rule_1_timestamp_wins_over_everything():
    row = ok(base(timestamp="2026-11-01T10:00:00Z", originalTimestamp="2026-11-01T09:00:00Z",
                  sentAt="2026-11-01T11:00:00Z", receivedAt="2026-11-01T12:00:00Z"))
    assert row["event_time"] == utc(2026, 11, 1, 10, 0)
    # the other times are still kept in their own columns
    assert row["original_timestamp"] == utc(2026, 11, 1, 9, 0)
    assert row["sent_at"] == utc(2026, 11, 1, 11, 0)
    assert row["received_at"] == utc(2026, 11, 1, 12, 0)


def test_rule_2_corrects_a_client_clock_five_minutes_fast():
    # Truth: the click happens at 10:00:00 and is sent at 10:00:10; the server receives it
    # 200 ms later. The client's clock runs 5 minutes fast, so it reports 10:05:00 / 10:05:10.
    fast = timedelta(minutes=5)
    true_event = utc(2026, 11, 1, 10, 0, 0)
    true_sent = true_event + timedelta(seconds=10)
    latency = timedelta(milliseconds=200)
    ev = base(timestamp=DROP,
              originalTimestamp=(true_event + fast).isoformat(),
              sentAt=(true_sent + fast).isoformat(),
              receivedAt=(true_sent + latency).isoformat())
    row = ok(ev)
    assert row["event_time"] == true_event + latency
    assert row["original_timestamp"] == true_event + fast  # kept as sent
    assert abs(row["event_time"] - true_event) < timedelta(seconds=1)


def test_rule_2_corrects_a_slow_clock_too():
    ev = base(timestamp=DROP, originalTimestamp="2026-11-01T09:00:00Z",
              sentAt="2026-11-01T09:00:30Z", receivedAt="2026-11-01T10:00:30Z")
    assert ok(ev)["event_time"] == utc(2026, 11, 1, 10, 0)


def test_rule_2_can_move_an_event_to_another_day():
    # a client clock an hour behind, just before midnight: the corrected time is the next day
    ev = base(timestamp=DROP, originalTimestamp="2026-11-01T23:30:00Z",
              sentAt="2026-11-01T23:30:05Z", receivedAt="2026-11-02T00:30:05Z")
    row = ok(ev)
    assert row["event_time"] == utc(2026, 11, 2, 0, 30)
    assert partition_of(row["event_time"]) == (date(2026, 11, 2), 0)


def test_rule_3_only_received_at():
    ev = base(timestamp=DROP, sentAt=DROP, receivedAt="2026-11-01T10:00:02Z")
    assert ok(ev)["event_time"] == utc(2026, 11, 1, 10, 0, 2)


def test_rule_3_received_at_when_sent_at_is_missing_for_the_correction():
    ev = base(timestamp=DROP, sentAt=DROP, originalTimestamp="2026-11-01T09:00:00Z",
              receivedAt="2026-11-01T10:00:02Z")
    assert ok(ev)["event_time"] == utc(2026, 11, 1, 10, 0, 2)


def test_rule_4_only_original_timestamp():
    ev = base(timestamp=DROP, sentAt=DROP, receivedAt=DROP,
              originalTimestamp="2026-11-01T09:00:00Z")
    row = ok(ev)
    assert row["event_time"] == utc(2026, 11, 1, 9, 0)
    assert row["received_at"] is None and row["sent_at"] is None


def test_rule_4_original_and_sent_without_received():
    ev = base(timestamp=DROP, receivedAt=DROP, originalTimestamp="2026-11-01T09:00:00Z",
              sentAt="2026-11-01T09:00:05Z")
    assert ok(ev)["event_time"] == utc(2026, 11, 1, 9, 0)


@pytest.mark.parametrize("extra", [{}, {"sentAt": "2026-11-01T10:00:01Z"}],
                         ids=["nothing", "sent_at-alone"])
def test_no_usable_time_is_missing_required(extra):
    ev = base(timestamp=DROP, receivedAt=DROP, **({"sentAt": DROP} | extra))
    assert reason(ev) == "missing_required"


def test_null_times_count_as_absent():
    ev = base(timestamp=None, originalTimestamp=None, sentAt=None, receivedAt="2026-11-01T10:00:02Z")
    assert ok(ev)["event_time"] == utc(2026, 11, 1, 10, 0, 2)


def test_event_time_function_names_the_rule_it_chose():
    t, o, s, r = (utc(2026, 11, 1, h) for h in (1, 2, 3, 4))
    assert event_time(t, o, s, r) == (t, "timestamp")
    assert event_time(None, o, s, r) == (o + (r - s), "original_corrected")
    assert event_time(None, o, None, r) == (r, "received_at")
    assert event_time(None, None, s, r) == (r, "received_at")
    assert event_time(None, o, s, None) == (o, "original_timestamp")
    assert event_time(None, None, s, None) == (None, "none")
    assert event_time(None, None, None, None) == (None, "none")


# --- time forms -----------------------------------------------------------------------------------

TEN = utc(2026, 11, 1, 10, 0, 0)


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-01T10:00:00Z", TEN),
    ("2026-11-01T10:00:00+00:00", TEN),
    ("2026-11-01T12:00:00+02:00", TEN),
    ("2026-11-01T05:00:00-05:00", TEN),
    ("2026-11-01T10:00:00", TEN),  # naive: taken as UTC
    ("2026-11-01 10:00:00", TEN),
    ("  2026-11-01T10:00:00Z  ", TEN),
    ("2026-11-01T10:00:00.123Z", TEN.replace(microsecond=123_000)),
    ("2026-11-01T10:00:00.123456Z", TEN.replace(microsecond=123_456)),
    ("2026-11-01T10:00:00.123456789Z", TEN.replace(microsecond=123_456)),  # truncated, not rounded
    ("2026-11-01T10:00:00.999999999Z", TEN.replace(microsecond=999_999)),
    ("2026-11-01T12:00:00.123456789+02:00", TEN.replace(microsecond=123_456)),
    ("2026-11-01T10:00:00.5Z", TEN.replace(microsecond=500_000)),
    ("2026-11-01T10:00:00.123456", TEN.replace(microsecond=123_456)),  # naive with fraction
    (int(TEN.timestamp()), TEN),  # epoch seconds
    (TEN.timestamp() + 0.25, TEN.replace(microsecond=250_000)),
    (int(TEN.timestamp()) * 1000 + 123, TEN.replace(microsecond=123_000)),  # epoch milliseconds
    (int(TEN.timestamp()) * 1000, TEN),
])
def test_time_forms(value, expected):
    parsed = parse_time(value, "timestamp")
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)
    # and the same through a whole event
    assert ok(base(timestamp=value))["event_time"] == expected


def test_absent_time_is_none():
    assert parse_time(None, "timestamp") is None


@pytest.mark.parametrize("value", [
    "yesterday at noon", True, False, {"iso": "2026-11-01T10:00:00Z"}, ["2026-11-01T10:00:00Z"],
    "", "2026-13-01T00:00:00Z", "2026-11-31T10:00:00Z", "10:00", "2026-11-01T10:00:00Z" + " " * 60 + "x",
    "1793527200",  # an epoch number as a string is not one of the accepted forms
])
def test_unparseable_times(value):
    assert reason(base(timestamp=value)) == "unparseable_time"


@pytest.mark.parametrize("value", [1e300, -1e300, 2**62])
def test_epoch_numbers_out_of_any_calendar_are_rejected_not_raised(value):
    assert reason(base(timestamp=value)) in ("unparseable_time", "time_out_of_range")


def test_unparseable_timestamp_quarantines_even_with_a_good_received_at():
    ev = base(timestamp="yesterday at noon", receivedAt="2026-11-01T10:00:02Z")
    assert reason(ev) == "unparseable_time"


@pytest.mark.parametrize("field", ["originalTimestamp", "sentAt", "receivedAt"])
def test_any_unparseable_time_field_quarantines_even_when_timestamp_wins(field):
    assert reason(base(**{field: "not a time"})) == "unparseable_time"


# --- time range ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "1999-12-31T23:59:59.999Z", "1970-01-01T00:00:00Z", 0, 946_684_799,
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",  # a valid ISO time with no UTC datetime: must not raise
    "9999-12-31T23:59:59-01:00",
])
def test_before_2000_or_beyond_the_calendar_is_out_of_range(value):
    assert reason(base(timestamp=value)) == "time_out_of_range"


def test_year_2000_boundary_is_accepted():
    assert ok(base(timestamp="2000-01-01T00:00:00Z"))["event_time"] == MIN_EVENT_TIME


def test_future_bound_is_the_arrival_plus_tolerance():
    at_limit = ARRIVAL + TOLERANCE
    assert ok(base(timestamp=at_limit.isoformat()))["event_time"] == at_limit
    assert reason(base(timestamp=(at_limit + timedelta(seconds=1)).isoformat())) == "time_out_of_range"
    assert reason(base(timestamp="2030-01-01T00:00:00Z")) == "time_out_of_range"


def test_future_bound_follows_the_arrival_not_the_clock():
    ev = base(timestamp="2031-06-01T00:00:00Z")
    assert reason(ev) == "time_out_of_range"
    assert ok(ev, arrival=utc(2031, 6, 1, 0, 0))["event_time"] == utc(2031, 6, 1)


def test_skew_correction_that_leaves_the_calendar_is_out_of_range():
    ev = base(timestamp=DROP, originalTimestamp="9999-12-31T00:00:00Z",
              sentAt="2026-11-01T00:00:00Z", receivedAt="2026-11-02T00:00:00Z")
    assert reason(ev) == "time_out_of_range"
    ev = base(timestamp=DROP, originalTimestamp="2026-11-01T10:00:00Z",
              sentAt="2060-01-01T00:00:00Z", receivedAt="2026-11-01T10:00:00Z")
    assert reason(ev) == "time_out_of_range"  # corrected to before 2000


# --- ids, types, required fields -------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (12345, "12345"), (12345.0, "12345"), (12.5, "12.5"), ("12345", "12345"), (0, "0"),
    (-7, "-7"), ("u@example.com", "u@example.com"),
])
def test_numeric_ids_become_strings(value, expected):
    row = ok(base(userId=value, groupId=value, previousId=value, messageId=value))
    assert row["user_id"] == row["group_id"] == row["previous_id"] == row["event_id"] == expected


def test_numeric_anonymous_id():
    assert ok(base(anonymousId=987))["anonymous_id"] == "987"


@pytest.mark.parametrize(("field", "value"), [
    ("messageId", {"id": "m-1"}), ("messageId", ["m-1"]), ("messageId", True),
    ("userId", True), ("userId", {"id": 1}), ("anonymousId", ["a"]),
    ("type", 3), ("event", 42), ("channel", {"web": True}),
    ("context", {"page": {"url": 123}}), ("context", {"ip": ["1.2.3.4"]}),
    ("messageId", "m" * 513),
])
def test_wrong_types(field, value):
    assert reason(base(**{field: value})) == "wrong_type"


@pytest.mark.parametrize(("field", "value"), [
    ("properties", '{"sku": "a"}'), ("properties", ["a"]), ("properties", 1),
    ("traits", "vip"), ("integrations", ["All"]), ("context", "web"), ("context", [1]),
])
def test_json_object_columns_must_be_objects(field, value):
    assert reason(base(**{field: value})) == "wrong_type"


def test_unknown_event_type():
    assert reason(base(type="click")) == "unknown_event_type"
    assert reason(base(type="Track")) == "unknown_event_type"


@pytest.mark.parametrize("kind", sorted(SPEC.event_types))
def test_every_spec_event_type_is_accepted(kind):
    assert ok(base(type=kind))["event_type"] == kind


@pytest.mark.parametrize("fields", [
    {"messageId": DROP}, {"messageId": ""}, {"messageId": None}, {"type": DROP},
    {"anonymousId": DROP},
    {"anonymousId": "", "userId": None},
    {"anonymousId": None, "userId": ""},
], ids=["no-message-id", "empty-message-id", "null-message-id", "no-type", "no-ids",
        "empty-anon-null-user", "null-anon-empty-user"])
def test_missing_required(fields):
    assert reason(base(**fields)) == "missing_required"


def test_user_id_alone_is_enough():
    row = ok(base(anonymousId=DROP, userId="u-1"))
    assert row["user_id"] == "u-1" and row["anonymous_id"] is None


@pytest.mark.parametrize("obj", [[1, 2], "event", 3, None, True])
def test_not_an_object(obj):
    assert reason(obj) == "not_an_object"


def test_event_name_falls_back_to_name_for_page_events():
    row = ok(base(type="page", event=DROP, name="Home", category="Docs"))
    assert row["event_name"] == "Home" and row["category"] == "Docs"
    assert ok(base(event="Clicked", name="Other"))["event_name"] == "Clicked"


# --- columns from context and properties -----------------------------------------------------------

FULL_CONTEXT = {
    "page": {"url": "https://shop.example/p/1?q=shoes", "path": "/p/1", "referrer": "https://g.example/",
             "title": "Shoes", "search": "?q=shoes"},
    "userAgent": "Mozilla/5.0", "ip": "203.0.113.9", "locale": "de-DE",
    "library": {"name": "analytics.js", "version": "5.0.0"},
    "campaign": {"source": "news", "medium": "email", "name": "fall", "term": "shoes", "content": "a"},
    "traits": {"plan": "pro"},
    "device": {"type": "mobile"},
    "timezone": "Europe/Berlin",
}


def test_mapped_context_fields():
    row = ok(base(context=FULL_CONTEXT))
    assert (row["page_url"], row["page_path"], row["page_referrer"], row["page_title"]) == (
        "https://shop.example/p/1?q=shoes", "/p/1", "https://g.example/", "Shoes")
    assert (row["user_agent"], row["ip"], row["locale"]) == ("Mozilla/5.0", "203.0.113.9", "de-DE")
    assert (row["library_name"], row["library_version"]) == ("analytics.js", "5.0.0")
    assert (row["campaign_source"], row["campaign_medium"], row["campaign_name"],
            row["campaign_term"], row["campaign_content"]) == ("news", "email", "fall", "shoes", "a")
    assert orjson.loads(row["traits"]) == {"plan": "pro"}


def test_context_column_is_the_remainder():
    row = ok(base(context=FULL_CONTEXT))
    # page.url etc. went to columns, page.search did not; library, campaign and traits were fully
    # mapped, so their (now empty) objects are dropped
    assert orjson.loads(row["context"]) == {
        "page": {"search": "?q=shoes"}, "device": {"type": "mobile"}, "timezone": "Europe/Berlin"}


def test_context_remainder_keeps_unmapped_parts_of_mapped_objects():
    ctx = {"library": {"name": "analytics-python", "version": "2.4", "build": 7},
           "campaign": {"source": "x", "id": "c-9"}}
    assert orjson.loads(ok(base(context=ctx))["context"]) == {"library": {"build": 7},
                                                               "campaign": {"id": "c-9"}}


@pytest.mark.parametrize("ctx", [
    {}, {"page": {"url": "https://a.example/"}}, {"ip": "1.2.3.4", "library": {"name": "x"}},
    {"page": {}},
])
def test_fully_mapped_context_is_null(ctx):
    assert ok(base(context=ctx))["context"] is None


def test_context_absent():
    row = ok(base())
    assert row["context"] is None and row["page_url"] is None and row["traits"] is None


def test_normalizing_does_not_mutate_the_event():
    ev = base(context=FULL_CONTEXT, properties={"url": "u", "n": [1, {"a": 2}]})
    before = copy.deepcopy(ev)
    ok(ev)
    assert ev == before


def test_page_columns_fall_back_to_properties_for_page_events():
    ev = base(type="page", name="Pricing", properties={
        "url": "https://shop.example/pricing", "path": "/pricing", "referrer": "https://r.example/",
        "title": "Pricing", "plan": "pro"})
    row = ok(ev)
    assert (row["page_url"], row["page_path"], row["page_referrer"], row["page_title"]) == (
        "https://shop.example/pricing", "/pricing", "https://r.example/", "Pricing")
    # properties keep every key: they are not a remainder column
    assert orjson.loads(row["properties"])["url"] == "https://shop.example/pricing"


def test_context_page_wins_over_properties():
    ev = base(type="page", properties={"url": "https://props.example/", "title": "From props"},
              context={"page": {"url": "https://ctx.example/"}})
    row = ok(ev)
    assert row["page_url"] == "https://ctx.example/"
    assert row["page_title"] == "From props"  # missing in context.page: the next path is tried


def test_context_page_that_is_not_an_object_is_skipped_for_columns():
    ev = base(type="page", properties={"url": "https://props.example/"}, context={"page": "home"})
    row = ok(ev)
    assert row["page_url"] == "https://props.example/"
    assert orjson.loads(row["context"]) == {"page": "home"}


def test_traits_top_level_or_context_traits():
    assert orjson.loads(ok(base(type="identify", traits={"email": "a@x"}))["traits"]) == {"email": "a@x"}
    row = ok(base(type="identify", context={"traits": {"email": "b@x"}, "locale": "en"}))
    assert orjson.loads(row["traits"]) == {"email": "b@x"}
    assert row["context"] is None  # traits and locale both mapped
    both = ok(base(traits={"email": "top@x"}, context={"traits": {"email": "ctx@x"}}))
    assert orjson.loads(both["traits"]) == {"email": "top@x"}


def test_integrations_empty_object_is_kept():
    assert ok(base(integrations={}))["integrations"] == "{}"
    assert ok(base(properties={}))["properties"] == "{}"
    assert ok(base())["integrations"] is None
    assert orjson.loads(ok(base(integrations={"All": True}))["integrations"]) == {"All": True}


def test_json_columns_round_trip():
    props = {"sku": "sku-1", "price": 12.99, "qty": 3, "tags": ["a", "b"], "nested": {"z": None, "a": 1},
             "unicode": "Grüße 🛒", "quote": 'say "hi"\n', "big": 2**53 + 1, "neg": -0.5}
    row = ok(base(properties=props, traits={"plan": "pro"}, integrations={"All": False, "Amplitude": True},
                  context={"device": {"id": "d-1"}, "page": {"search": "?a=1"}}))
    assert orjson.loads(row["properties"]) == props
    assert orjson.loads(row["traits"]) == {"plan": "pro"}
    assert orjson.loads(row["integrations"]) == {"All": False, "Amplitude": True}
    assert orjson.loads(row["context"]) == {"device": {"id": "d-1"}, "page": {"search": "?a=1"}}
    for name in ("properties", "traits", "integrations", "context"):
        assert isinstance(row[name], str)


def test_json_text_is_canonical_regardless_of_key_order():
    a = ok(base(properties={"b": 1, "a": {"y": 2, "x": 1}}))["properties"]
    b = ok(base(properties={"a": {"x": 1, "y": 2}, "b": 1}))["properties"]
    assert a == b


def test_row_has_exactly_the_spec_columns_and_lineage():
    row = ok(base())
    assert list(row) == SPEC.column_names
    assert row["source_object"] == "web/2026/11/01/a.ndjson"
    assert row["source_line"] == 7
    assert row["ingested_at"] == ARRIVAL


def test_conftest_event_normalizes():
    from conftest import event

    row = ok(event(5, day="2026-11-01", hour=10))
    assert row["event_id"] == "m-000005"
    assert row["page_url"] == "https://shop.example/p/5"
    assert row["library_name"] == "analytics.js"
    assert row["context"] is None
    assert row["integrations"] == "{}"
    assert row["event_time"] == utc(2026, 11, 1, 10, 5, 0).replace(microsecond=5000)


def test_partition_of_uses_utc():
    plus2 = timezone(timedelta(hours=2))
    assert partition_of(datetime(2026, 11, 2, 1, 30, tzinfo=plus2)) == (date(2026, 11, 1), 23)
    minus2 = timezone(timedelta(hours=-2))
    assert partition_of(datetime(2026, 11, 1, 23, 30, tzinfo=minus2)) == (date(2026, 11, 2), 1)
