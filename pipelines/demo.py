"""Seeded generator of realistic clickstream demo data for the landing bucket.

The events follow the Segment / RudderStack spec as their S3 destinations write them: events that
have already passed the collection server, so they carry ``messageId``, ``receivedAt`` and a
server-computed ``timestamp`` next to the client's ``originalTimestamp`` and ``sentAt``. The data is
deliberately untidy in the ways real landing buckets are: several sources and SDKs, gzip and plain
NDJSON, one JSON-array object, mixed timestamp offsets and precisions, numeric user ids, late events
of the previous day, exact re-sends of events, a handful of invalid records and one truncated gzip.

Everything derives from ``random.Random(seed)`` and the ``start`` date (no clock reads), so the same
arguments always write the same bytes, and :class:`DemoReport` says exactly what a correct landing
step must find: how many records, how many valid events per UTC event day, how many duplicate
copies and how many bad records per quarantine reason.
"""

from __future__ import annotations

import datetime as dt
import gzip
import math
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines.storage import ARRIVED_AT, validate_key

__all__ = ["BAD_REASONS", "SOURCES", "DemoReport", "event_time", "generate_demo"]

UTC = dt.UTC
SOURCES = ("segment", "rudderstack", "firehose")
EVENT_TYPES = ("track", "page", "screen", "identify", "group", "alias")

#: How many deliberately invalid records of each quarantine reason a run writes. A small fixed
#: number: enough to see every reason in the quarantine, too few to disturb the event counts.
BAD_REASONS: dict[str, int] = {
    "malformed_json": 3,
    "not_an_object": 3,
    "missing_required": 3,
    "wrong_type": 3,
    "unparseable_time": 2,
    "invalid_utf8": 2,
    "unknown_event_type": 2,
}

_LATE_SHARE = 0.03  # events of the previous day in a day's files (offline mobile queues, retries)
_DUP_SHARE = 0.02  # valid events re-sent as an extra copy in another file (at-least-once delivery)
_NO_TIMESTAMP_SHARE = 0.012  # events without `timestamp`: event time from the skew correction
_NO_SERVER_TIMES_SHARE = 0.006  # events without sentAt/receivedAt: event time from `timestamp`
_RECEIVED_ONLY_SHARE = 0.002  # events with only receivedAt and originalTimestamp (rule 3)
_EDGE_MARGIN = dt.timedelta(seconds=3)  # keeps skew-derived times on the day they were made for

SITE_HOST = "https://www.shoply.example"
_LOCALES = {  # locale -> UTC offsets (minutes) its users' devices report
    "en-US": (-300, -420, -240),
    "en-GB": (0, 60),
    "de-DE": (60, 120),
    "fr-FR": (60, 120),
    "pt-BR": (-180,),
    "ja-JP": (540,),
    "en-IN": (330,),
    "es-ES": (60, 120),
}
_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
)
SITE_PAGES = (  # path, title, page category (None: the SDK sends none)
    ("/", "Shoply \u2013 Trail & Running Gear", None),
    ("/products/trail-runner-2", "Trail Runner 2 | Shoply", "Shop"),
    ("/products/merino-tee", "Merino Tee | Shoply", "Shop"),
    ("/collections/sale", "Sale | Shoply", "Shop"),
    ("/search", "Search results | Shoply", None),
    ("/cart", "Your cart", "Checkout"),
    ("/checkout", "Checkout", "Checkout"),
    ("/blog/how-to-choose-trail-shoes", "How to choose trail shoes", "Blog"),
    ("/pricing", "Shoply Pro pricing", "Marketing"),
    ("/docs/api/getting-started", "Getting started \u00b7 Shoply API", "Docs"),
)
_REFERRERS = (
    "",
    "",
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://t.co/x9Qz",
    "https://news.ycombinator.com/",
    "https://www.shoply.example/",
)
_CAMPAIGNS = (
    {
        "source": "google",
        "medium": "cpc",
        "name": "spring_sale",
        "term": "trail shoes",
        "content": "ad_variant_b",
    },
    {"source": "newsletter", "medium": "email", "name": "2024-w14"},
    {"source": "facebook", "medium": "paid_social", "name": "retargeting", "content": "carousel"},
)
_PRODUCTS = (
    {
        "product_id": "507f1f77bcf86cd799439011",
        "sku": "TR2-BLK-42",
        "name": "Trail Runner 2",
        "category": "Shoes",
        "brand": "Shoply",
        "price": 129.0,
    },
    {
        "product_id": "507f1f77bcf86cd799439012",
        "sku": "MT-NVY-M",
        "name": "Merino Tee",
        "category": "Apparel",
        "brand": "Woolly",
        "price": 49.95,
    },
    {
        "product_id": "507f1f77bcf86cd799439013",
        "sku": "HL-300",
        "name": "Headlamp 300",
        "category": "Gear",
        "brand": "Lumen",
        "price": 34.5,
    },
    {
        "product_id": 88123,
        "sku": "SOCK-3P",
        "name": "Running Socks (3-pack)",
        "category": "Apparel",
        "brand": "Shoply",
        "price": 19,
    },
)
_SCREENS = ("Home", "Product Detail", "Cart", "Checkout", "Order Confirmation", "Settings")
_SDKS = {  # library name -> (versions, platform)
    "analytics.js": (("4.15.3", "4.1.0", "3.13.1"), "web"),
    "rudder-sdk-js": (("2.48.1", "3.0.3"), "web"),
    "analytics-ios": (("4.1.8", "4.1.5"), "mobile"),
    "analytics-python": (("2.3.2", "2.2.3"), "server"),
}
_SOURCE_SDKS = {  # which SDKs deliver through which landing source
    "segment": ("analytics.js", "analytics-ios", "analytics-python"),
    "rudderstack": ("rudder-sdk-js",),
    "firehose": ("analytics.js", "rudder-sdk-js", "analytics-ios", "analytics-python"),
}
_CHANNEL = {"web": "client", "mobile": "mobile", "server": "server"}


@dataclass
class DemoReport:
    """What one :func:`generate_demo` run wrote, i.e. what a correct landing step must find.

    ``files`` counts every landing object written, the corrupt gzip included; ``lines`` counts the
    non-blank records of every readable object (elements of the JSON-array object count as
    records), so ``lines == sum(unique_events_per_day.values()) +
    sum(duplicate_copies_per_day.values()) + bad_lines``. The corrupt object's records are counted
    nowhere but in ``corrupt_files``: the whole object is quarantined.
    """

    files: int
    lines: int
    bad_lines: int
    unique_events_per_day: dict[str, int]
    duplicate_copies_per_day: dict[str, int]
    bad_lines_by_reason: dict[str, int]
    keys: list[str]
    corrupt_files: int = 0
    #: when each object "arrived": the end of its window of receivedAt times (the destination
    #: flushes then), stored as each object's ``arrived-at`` metadata
    arrived_at: dict[str, dt.datetime] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# timestamps


@dataclass(frozen=True)
class _TimeStyle:
    """How one writer renders times: fraction digits, UTC offset, and ``Z`` or ``+00:00``."""

    digits: int  # 0, 3, 6 or 9 (9 = nanoseconds, as Go servers write them)
    offset_minutes: int = 0
    zulu: bool = True


def _render(t: dt.datetime, style: _TimeStyle, rng: random.Random) -> tuple[str, dt.datetime]:
    """Render ``t`` in ``style``; return the text and the instant the text denotes (µs)."""
    if style.digits == 0:
        t = t.replace(microsecond=0)
    elif style.digits == 3:
        t = t.replace(microsecond=t.microsecond // 1000 * 1000)
    local = t.astimezone(dt.timezone(dt.timedelta(minutes=style.offset_minutes)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if style.digits == 3:
        text += f".{local.microsecond // 1000:03d}"
    elif style.digits == 6:
        text += f".{local.microsecond:06d}"
    elif style.digits == 9:
        # the extra nanosecond digits stay below 500 so truncating and rounding readers agree
        text += f".{local.microsecond:06d}{rng.randrange(500):03d}"
    if style.offset_minutes == 0 and style.zulu:
        text += "Z"
    else:
        sign = "+" if style.offset_minutes >= 0 else "-"
        hours, minutes = divmod(abs(style.offset_minutes), 60)
        text += f"{sign}{hours:02d}:{minutes:02d}"
    return text, t


def _parse_time(value: Any) -> dt.datetime:
    """Parse an ISO 8601 time the way the landing step does (naive means UTC)."""
    parsed = dt.datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def event_time(event: dict[str, Any]) -> dt.datetime | None:
    """The event's time by the schema's ``event_time_rule`` (UTC), or None when it has no time.

    1. ``timestamp``; 2. ``originalTimestamp + (receivedAt - sentAt)``; 3. ``receivedAt``;
    4. ``originalTimestamp``. Only ISO strings are handled: that is all this generator writes.
    """
    if event.get("timestamp") is not None:
        return _parse_time(event["timestamp"])
    original, sent, received = (event.get(k) for k in ("originalTimestamp", "sentAt", "receivedAt"))
    if original is not None and sent is not None and received is not None:
        return _parse_time(original) + (_parse_time(received) - _parse_time(sent))
    if received is not None:
        return _parse_time(received)
    if original is not None:
        return _parse_time(original)
    return None


# ----------------------------------------------------------------------------------------------
# the simulated world: users, files


@dataclass
class _User:
    anonymous_id: str
    user_id: str | int | None
    sdk: str
    sdk_version: str
    platform: str
    locale: str
    tz_minutes: int
    ip: str
    user_agent: str
    email: str
    device_id: str
    group_id: str | int


@dataclass
class _File:
    """One landing object being assembled: its window of receivedAt times and its records."""

    index: int
    day_index: int
    source: str
    window_start: dt.datetime
    window_end: dt.datetime
    fmt: str = "gz"  # "gz" | "plain" | "array" | "corrupt"
    records: list[Any] = field(default_factory=list)  # dicts (valid events) or bytes (bad lines)
    key: str = ""


class _Ids:
    """Fresh message ids, never repeated within a run (the report's counts rely on it)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.seen: set[str] = set()

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def message_id(self, sdk: str, source: str) -> str:
        while True:
            if source == "firehose" and self.rng.random() < 0.3:
                mid = f"evt_{self.rng.getrandbits(96):024x}"  # a custom producer's own ids
            elif sdk == "analytics.js":
                mid = f"ajs-next-{self.rng.getrandbits(128):032x}"
            elif sdk == "analytics-ios":
                mid = self.uuid().upper()
            else:
                mid = self.uuid()
            if mid not in self.seen:
                self.seen.add(mid)
                return mid


def _make_users(rng: random.Random, ids: _Ids, n: int) -> list[_User]:
    users = []
    sdks = list(_SDKS)
    for i in range(n):
        sdk = rng.choices(sdks, weights=(50, 22, 18, 10))[0]
        versions, platform = _SDKS[sdk]
        locale = rng.choice(list(_LOCALES))
        identified = platform == "server" or rng.random() < 0.55
        user_id: str | int | None = None
        if identified:
            # SDKs pass whatever the app uses as its user key; ~20% send it as a JSON number
            user_id = 10_000 + i if rng.random() < 0.2 else f"usr_{rng.getrandbits(40):010x}"
        if rng.random() < 0.1:
            ip = f"2001:db8:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}"
        else:
            ip = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        users.append(
            _User(
                anonymous_id=ids.uuid(),
                user_id=user_id,
                sdk=sdk,
                sdk_version=rng.choice(versions),
                platform=platform,
                locale=locale,
                tz_minutes=rng.choice(_LOCALES[locale]),
                ip=ip,
                user_agent=rng.choice(_BROWSERS),
                email=f"user{i}@example.com",
                device_id=ids.uuid().upper(),
                group_id=rng.choice(("acct_acme", "acct_globex", "acct_initech", 4021, 977)),
            )
        )
    return users


def _window_counts(n: int, files: int) -> list[int]:
    """Split a day's ``n`` events over equal time windows following a diurnal curve.

    Traffic peaks in the (UTC) afternoon and bottoms out at night, but never reaches zero, so
    every hour of the day carries events. Largest-remainder rounding keeps the total exact.
    """
    weights = []
    for j in range(files):
        hour = (j + 0.5) * 24 / files
        weights.append(1.0 + 0.7 * math.sin(2 * math.pi * (hour - 9) / 24))
    total = sum(weights)
    raw = [n * w / total for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(files), key=lambda j: (-(raw[j] - counts[j]), j))
    for j in order[: n - sum(counts)]:
        counts[j] += 1
    if n >= files:  # no empty objects when there are enough events to go round
        for j in range(files):
            while counts[j] == 0:
                donor = max(range(files), key=lambda k: counts[k])
                counts[donor] -= 1
                counts[j] += 1
    return counts


# ----------------------------------------------------------------------------------------------
# events


def _context(rng: random.Random, user: _User) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The SDK's context block, and the page (web only) the event happened on."""
    library = {"name": user.sdk, "version": user.sdk_version}
    if user.platform == "server":
        # server libraries know little about the visitor: library, sometimes the forwarded ip
        ctx: dict[str, Any] = {"library": library}
        if rng.random() < 0.4:
            ctx["ip"] = user.ip
        return ctx, None
    if user.platform == "mobile":
        ctx = {
            "app": {
                "name": "Shoply",
                "version": "3.4.1",
                "build": "341",
                "namespace": "com.shoply.app",
            },
            "device": {
                "id": user.device_id,
                "manufacturer": "Apple",
                "model": "iPhone15,2",
                "type": "ios",
                "adTrackingEnabled": rng.random() < 0.3,
            },
            "os": {"name": "iOS", "version": rng.choice(("17.4.1", "17.2", "16.7.5"))},
            "network": {"wifi": rng.random() < 0.6, "cellular": True, "carrier": "T-Mobile"},
            "screen": {"width": 393, "height": 852, "density": 3},
            "timezone": "Europe/Berlin" if user.tz_minutes in (60, 120) else "America/New_York",
            "locale": user.locale,
            "ip": user.ip,
            "library": library,
        }
        if rng.random() < 0.1:
            ctx["traits"] = {"email": user.email}
        return ctx, None
    path, title, category = rng.choice(SITE_PAGES)
    search = "?q=trail+shoes" if path == "/search" else ""
    campaign = None
    if rng.random() < 0.15:
        campaign = dict(rng.choice(_CAMPAIGNS))
        utm = "&".join(
            f"utm_{k if k != 'name' else 'campaign'}={v.replace(' ', '+')}"
            for k, v in campaign.items()
        )
        search = f"{search}&{utm}" if search else f"?{utm}"
    page = {
        "path": path,
        "referrer": rng.choice(_REFERRERS),
        "search": search,
        "title": title,
        "url": f"{SITE_HOST}{path}{search}",
    }
    ctx = {
        "ip": user.ip,
        "library": library,
        "locale": user.locale,
        "page": page,
        "userAgent": user.user_agent,
    }
    if campaign is not None:
        ctx["campaign"] = campaign
    if user.sdk == "analytics.js" and rng.random() < 0.5:
        ctx["userAgentData"] = {
            "brands": [{"brand": "Chromium", "version": "124"}],
            "mobile": False,
            "platform": "Windows",
        }
    if rng.random() < 0.08:
        ctx["traits"] = {"email": user.email}
    return ctx, {"page": page, "category": category}


def _product(rng: random.Random) -> dict[str, Any]:
    return dict(rng.choice(_PRODUCTS))


def _track(rng: random.Random, user: _User) -> tuple[str, str | None, dict[str, Any]]:
    """A track event's name, optional category and properties (types vary on purpose)."""
    if user.platform == "server":
        name = rng.choice(("Order Shipped", "Subscription Renewed", "Invoice Paid"))
        props: dict[str, Any] = {
            "plan": rng.choice(("pro", "team")),
            "mrr": round(rng.uniform(9, 499), 2),
            "currency": "EUR",
            "seats": rng.randint(1, 40),
            "metadata": {"worker": "billing", "attempt": rng.randint(1, 3)},
        }
        return name, None, props
    roll = rng.random()
    if roll < 0.3:
        props = _product(rng)
        props.update(currency="USD", url=f"{SITE_HOST}/products/{props['sku'].lower()}")
        return "Product Viewed", "Ecommerce", props
    if roll < 0.45:
        props = _product(rng)
        props.update(cart_id=f"c{rng.getrandbits(32):08x}", quantity=rng.randint(1, 3))
        return "Product Added", "Ecommerce", props
    if roll < 0.55:
        products = [
            dict(_product(rng), quantity=rng.randint(1, 2)) for _ in range(rng.randint(1, 3))
        ]
        total = round(sum(p["price"] * p["quantity"] for p in products), 2)
        props = {
            "checkout_id": f"co_{rng.getrandbits(32):08x}",
            "order_id": f"{rng.randint(100000, 999999)}",
            "affiliation": "web store",
            "total": total,
            "revenue": round(total / 1.19, 2),
            "shipping": 4.9,
            "tax": round(total - total / 1.19, 2),
            "discount": 0,
            "coupon": rng.choice((None, "SPRING10")),
            "currency": "USD",
            "products": products,
        }
        return "Order Completed", "Ecommerce", props
    if roll < 0.65:
        return "Products Searched", None, {"query": rng.choice(("trail shoes", "merino", "lamp"))}
    if roll < 0.72:
        return "Signed Up", None, {"method": rng.choice(("email", "google")), "plan": "free"}
    if roll < 0.8:
        props = {
            "session_id": f"vs_{rng.getrandbits(32):08x}",
            "content_asset_ids": [f"a{rng.randint(1, 99)}" for _ in range(rng.randint(1, 3))],
            "position": 0,
            "total_length": rng.randint(30, 900),
            "bitrate": 1080,
            "livestream": False,
            "video_player": "youtube",
            "sound": rng.randint(0, 100),
            "full_screen": False,
        }
        return "Video Playback Started", "Video", props
    props = {
        "label": rng.choice(("Buy now", "Subscribe", "Learn more")),
        "location": {"section": rng.choice(("hero", "footer")), "index": rng.randint(0, 5)},
    }
    return "Button Clicked", None, props


def _traits(rng: random.Random, user: _User) -> dict[str, Any]:
    traits: dict[str, Any] = {"email": user.email}
    if rng.random() < 0.7:
        traits["name"] = rng.choice(("Ada Lovelace", "Jos\u00e9 Garc\u00eda", "Grace Hopper"))
    if rng.random() < 0.5:
        traits["plan"] = rng.choice(("free", "pro", "team"))
        traits["logins"] = rng.randint(1, 300)
    if rng.random() < 0.3:
        traits["company"] = {"name": "Acme", "id": user.group_id, "employee_count": 120}
    if rng.random() < 0.3:
        traits["address"] = {"city": "Berlin", "country": "DE"}
    if rng.random() < 0.2:
        traits["createdAt"] = "2023-11-02T08:15:00Z"
    return traits


def _event_type(rng: random.Random, user: _User) -> str:
    if user.platform == "server":
        kinds, weights = ("track", "identify", "group"), (70, 20, 10)
    elif user.platform == "mobile":
        kinds, weights = ("screen", "track", "identify", "group", "alias"), (40, 48, 7, 2, 3)
    else:
        kinds, weights = ("page", "track", "identify", "group", "alias"), (45, 42, 8, 2, 3)
    kind = rng.choices(kinds, weights=weights)[0]
    if kind == "alias" and user.user_id is None:
        kind = "track"  # alias needs the new id; anonymous visitors only get tracked
    return kind


def _server_style(rng: random.Random, source: str) -> _TimeStyle:
    """How the collection server of a source writes receivedAt and timestamp."""
    if source == "segment":
        return _TimeStyle(3)
    if source == "rudderstack":
        return _TimeStyle(rng.choice((3, 9)))  # the Go server writes up to nanoseconds
    return _TimeStyle(rng.choice((6, 0)), zulu=False)  # a Python producer: isoformat(), +00:00


def _client_style(rng: random.Random, user: _User) -> _TimeStyle:
    """How the SDK writes originalTimestamp and sentAt."""
    if user.sdk == "analytics-ios":
        return _TimeStyle(3, user.tz_minutes, zulu=False)  # device-local time with offset
    if user.sdk == "analytics-python":
        # datetime.isoformat(): microseconds and +00:00, no fraction on whole seconds
        return _TimeStyle(rng.choice((6, 6, 6, 0)), zulu=False)
    return _TimeStyle(3)  # browsers: Date.toISOString()


def _make_event(
    rng: random.Random,
    ids: _Ids,
    user: _User,
    source: str,
    when: dt.datetime,
    received: dt.datetime,
    late: bool,
) -> tuple[dict[str, Any], dt.datetime]:
    """One server-enriched event; returns it with the event time a reader will derive.

    ``when`` is the intended event time, ``received`` when the collection server got it. Client
    clocks are skewed on purpose: originalTimestamp and sentAt are both off by the same amount,
    and Segment's own formula ``receivedAt - (sentAt - originalTimestamp)`` gives back ``when``.
    """
    latency = dt.timedelta(milliseconds=rng.randint(30, 1500))
    roll = rng.random()
    if roll < 0.8:
        skew = dt.timedelta(0)
    elif roll < 0.95:
        skew = dt.timedelta(seconds=rng.uniform(-300, 300))
    else:
        skew = dt.timedelta(hours=rng.choice((-3, -1, 1, 2)), seconds=rng.uniform(-60, 60))
    sent = received - latency + skew
    original = when - latency + skew

    kind = _event_type(rng, user)
    ctx, web = _context(rng, user)
    ev: dict[str, Any] = {}
    if user.platform != "server" or user.user_id is None or rng.random() < 0.3:
        ev["anonymousId"] = user.anonymous_id
    ev["channel"] = _CHANNEL[user.platform]
    ev["context"] = ctx
    ev["integrations"] = {} if rng.random() < 0.8 else {"All": True, "Mixpanel": False}
    ev["messageId"] = ids.message_id(user.sdk, source)
    if kind == "track":
        name, category, props = _track(rng, user)
        ev["event"] = name
        if category and rng.random() < 0.4:
            ev["category"] = category
        ev["properties"] = props
    elif kind == "page":
        assert web is not None
        page = web["page"]
        ev["name"] = page["title"].split(" | ")[0]
        if web["category"]:
            ev["category"] = web["category"]
        # analytics.js repeats the page fields in properties
        ev["properties"] = {k: page[k] for k in ("path", "referrer", "search", "title", "url")}
    elif kind == "screen":
        ev["name"] = rng.choice(_SCREENS)
        ev["properties"] = {} if rng.random() < 0.5 else {"product_id": _product(rng)["product_id"]}
    elif kind == "identify":
        ev["traits"] = _traits(rng, user)
    elif kind == "group":
        ev["groupId"] = user.group_id
        ev["traits"] = {
            "name": "Acme Corp",
            "industry": "Retail",
            "employees": rng.randint(5, 5000),
            "plan": "team",
        }
    else:  # alias: the anonymous id becomes the known user id
        ev["previousId"] = user.anonymous_id
    ev["type"] = kind
    if user.user_id is not None and (kind in ("identify", "alias") or rng.random() < 0.85):
        ev["userId"] = user.user_id
    if "anonymousId" not in ev and "userId" not in ev:
        ev["anonymousId"] = user.anonymous_id  # every valid event names someone
    if source == "rudderstack":
        ev["rudderId"] = ids.uuid()
        ev["request_ip"] = user.ip
    if user.sdk == "analytics.js" and rng.random() < 0.3:
        ev["_metadata"] = {"bundled": ["Segment.io"], "unbundled": []}

    # Which time fields this event carries. Dropping `timestamp` is only done away from midnight,
    # so the re-derived time (rounded by the rendered precision) stays on the intended day.
    seconds_in_day = when - when.replace(hour=0, minute=0, second=0, microsecond=0)
    inside = _EDGE_MARGIN <= seconds_in_day <= dt.timedelta(days=1) - _EDGE_MARGIN
    roll = rng.random()
    fields = {"timestamp", "originalTimestamp", "sentAt", "receivedAt"}
    if roll < _NO_TIMESTAMP_SHARE and inside:
        fields.discard("timestamp")
    elif roll < _NO_TIMESTAMP_SHARE + _NO_SERVER_TIMES_SHARE:
        fields -= rng.choice(({"sentAt"}, {"receivedAt"}, {"sentAt", "receivedAt"}))
    elif roll < _NO_TIMESTAMP_SHARE + _NO_SERVER_TIMES_SHARE + _RECEIVED_ONLY_SHARE and not late:
        fields -= {"timestamp", "sentAt"}  # event time falls back to receivedAt (same day)
    client, server = _client_style(rng, user), _server_style(rng, source)
    values = {
        "originalTimestamp": (original, client),
        "sentAt": (sent, client),
        "receivedAt": (received, server),
        "timestamp": (when, server),
    }
    for name in ("originalTimestamp", "receivedAt", "sentAt", "timestamp"):
        if name in fields:
            t, style = values[name]
            ev[name] = _render(t, style, rng)[0]
    derived = event_time(ev)
    assert derived is not None
    return ev, derived


# ----------------------------------------------------------------------------------------------
# deliberately bad records


def _bad_record(rng: random.Random, reason: str, variant: int, base: dict[str, Any]) -> bytes:
    """One invalid record of ``reason``, built from a fresh event so it looks like a real one.

    Each record carries exactly one defect, so its reason is unambiguous.
    """
    ev = dict(base)
    if reason == "malformed_json":
        line = orjson.dumps(ev)
        cut = rng.randint(20, len(line) - 2)
        while (line[cut] & 0xC0) == 0x80:  # cut between characters: malformed, but still UTF-8
            cut -= 1
        return line[:cut]  # a writer killed mid-line
    if reason == "not_an_object":
        return (b"[1,2]", b'"hello"', b"42")[variant % 3]
    if reason == "missing_required":
        if variant % 3 == 0:
            ev.pop("messageId")
        elif variant % 3 == 1:
            ev.pop("anonymousId", None)
            ev.pop("userId", None)
            ev.pop("previousId", None)
        else:
            ev.pop("type")
        return orjson.dumps(ev)
    if reason == "wrong_type":
        if variant % 3 == 0:
            ev["properties"] = "color=red&size=42"
        elif variant % 3 == 1:
            ev["messageId"] = {"id": ev["messageId"]}
        else:
            ev["type"] = 3
        return orjson.dumps(ev)
    if reason == "unparseable_time":
        ev["timestamp"] = ("yesterday at noon", "sometime last week")[variant % 2]
        return orjson.dumps(ev)
    if reason == "invalid_utf8":
        ev["properties"] = dict(ev.get("properties") or {}, label="@@BAD@@")
        return orjson.dumps(ev).replace(b"@@BAD@@", b"caf\xff\xfe")  # Latin-1 bytes, not UTF-8
    if reason == "unknown_event_type":
        ev["type"] = "click"
        return orjson.dumps(ev)
    raise ValueError(f"unknown bad-record reason {reason!r}")


# ----------------------------------------------------------------------------------------------
# the run


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def _random_time(rng: random.Random, lo: dt.datetime, hi: dt.datetime) -> dt.datetime:
    span = int((hi - lo) / dt.timedelta(microseconds=1))
    return lo + dt.timedelta(microseconds=rng.randrange(max(span, 1)))


def _key(prefix: str, f: _File, ext: str) -> str:
    arrival = f.window_start
    return (
        f"{prefix}{f.source}/{arrival:%Y/%m/%d/%H}/{f.source}-{arrival:%Y-%m-%d}-{f.index:05d}{ext}"
    )


def _encode_lines(rng: random.Random, records: list[Any], crlf: bool = False) -> bytes:
    lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in records]
    # Real writers differ in framing: most end every line with \n, a hand-rolled uploader on
    # Windows uses \r\n, some leave a blank line behind or omit the final newline. None of that
    # is a record, and a reader must not count it as one.
    sep = b"\r\n" if crlf else b"\n"
    if lines and rng.random() < 0.07:
        lines.insert(rng.randrange(len(lines) + 1), b"")
    tail = b"" if rng.random() < 0.1 else sep
    return sep.join(lines) + tail


def generate_demo(
    storage,
    *,
    start: dt.date,
    days: int = 7,
    events_per_day: int = 2000,
    files_per_day: int = 40,
    seed: int = 7,
    prefix: str = "",
) -> DemoReport:
    """Write a seeded, realistic landing bucket for ``days`` arrival days from ``start``.

    Each arrival day gets ``files_per_day`` objects under ``landing`` (keys
    ``{prefix}{source}/{yyyy}/{mm}/{dd}/{hh}/{source}-{yyyy-mm-dd}-{n:05d}.ndjson[.gz]``), holding
    ``events_per_day`` valid events whose receivedAt falls in the object's time window; ~3% of
    them (from the second day on) are late events of the previous day. On top come ~2% duplicate
    copies, :data:`BAD_REASONS` invalid records, one JSON-array object (``.json``) and one
    truncated gzip object. Every event day lies in ``[start, start + days)``.

    ``storage`` needs only ``put(role, key, data)``. The same arguments always write the same
    bytes. Returns the :class:`DemoReport` of what was written.
    """
    if days < 1 or files_per_day < 1 or events_per_day < 1:
        raise ValueError("days, files_per_day and events_per_day must be positive")
    if days * files_per_day < 2:
        raise ValueError("need at least two files: one JSON array and one for the bad lines")
    validate_key(f"{prefix}x")  # a prefix that would make invalid keys fails before any write
    rng = random.Random(seed)
    ids = _Ids(rng)
    users = _make_users(rng, ids, max(40, events_per_day // 8))
    by_source = {s: [u for u in users if u.sdk in _SOURCE_SDKS[s]] or users for s in SOURCES}
    window = dt.timedelta(days=1) / files_per_day

    files: list[_File] = []
    origin: list[tuple[dict[str, Any], int, dt.datetime]] = []  # valid event, file index, time
    for d in range(days):
        day0 = _day_start(start + dt.timedelta(days=d))
        counts = _window_counts(events_per_day, files_per_day)
        for j in range(files_per_day):
            source = rng.choices(SOURCES, weights=(45, 35, 20))[0]
            f = _File(
                index=len(files),
                day_index=d,
                source=source,
                window_start=day0 + j * window,
                window_end=day0 + (j + 1) * window,
            )
            made = []
            for _ in range(counts[j]):
                user = rng.choice(by_source[source])
                received = _random_time(rng, f.window_start, f.window_end)
                late = d > 0 and rng.random() < _LATE_SHARE
                if late:  # captured yesterday, queued on the device, delivered today
                    when = _random_time(rng, day0 - dt.timedelta(days=1), day0)
                else:
                    # SDK batching holds most events a second or two, some for minutes
                    r = rng.random()
                    if r < 0.85:
                        delay = dt.timedelta(seconds=rng.uniform(0, 2))
                    elif r < 0.97:
                        delay = dt.timedelta(seconds=rng.uniform(2, 120))
                    else:
                        delay = dt.timedelta(seconds=rng.uniform(120, 3600))
                    when = max(received - delay - dt.timedelta(milliseconds=1500), day0)
                ev, t = _make_event(rng, ids, user, source, when, received, late)
                made.append((received, ev, t))
            made.sort(key=lambda m: m[0])  # destinations batch by arrival
            for _, ev, t in made:
                f.records.append(ev)
                origin.append((ev, f.index, t))
            fmt_roll = rng.random()
            f.fmt = "plain" if fmt_roll < 0.2 else "gz"
            files.append(f)

    # Exactly one JSON-array object, some plain and some gzip objects whatever the dice say.
    array = files[rng.randrange(len(files))]
    array.fmt = "array"
    others = [f for f in files if f is not array]
    if len(others) >= 2:
        if all(f.fmt == "gz" for f in others):
            others[0].fmt = "plain"
        if all(f.fmt == "plain" for f in others):
            others[-1].fmt = "gz"

    # Duplicate copies: at-least-once delivery re-sends an event in a later object (another
    # day's, sometimes). Most copies are byte-identical; some carry the later receivedAt of the
    # retry, which never changes the event time because only events with `timestamp` get one.
    n_dups = max(1, round(len(origin) * _DUP_SHARE))
    dup_copies: list[tuple[dict[str, Any], dt.datetime]] = []
    for i in sorted(rng.sample(range(len(origin)), min(n_dups, len(origin)))):
        ev, home, t = origin[i]
        later = list(range(home + 1, min(home + 1 + files_per_day, len(files))))
        target = files[rng.choice(later or [k for k in range(len(files)) if k != home])]
        copy = ev
        if target.index > home and "timestamp" in ev and "receivedAt" in ev and rng.random() < 0.4:
            retry = _random_time(rng, target.window_start, target.window_end)
            if retry > _parse_time(ev["receivedAt"]):
                copy = dict(ev, receivedAt=_render(retry, _TimeStyle(3), rng)[0])
        target.records.insert(rng.randrange(len(target.records) + 1), copy)
        dup_copies.append((copy, t))

    # Bad records, spread over the NDJSON objects (never the array: one bad element there would
    # make the reader's job a different one).
    eligible = [f for f in files if f.fmt != "array"]
    bad_by_reason: dict[str, int] = {}
    for reason, count in BAD_REASONS.items():
        for variant in range(count):
            f = rng.choice(eligible)
            day0 = _day_start(start + dt.timedelta(days=f.day_index))
            received = _random_time(rng, f.window_start, f.window_end)
            when = max(received - dt.timedelta(seconds=2), day0)
            base, _ = _make_event(
                rng, ids, rng.choice(by_source[f.source]), f.source, when, received, False
            )
            base.setdefault("properties", {})
            base.setdefault("timestamp", _render(when, _TimeStyle(3), rng)[0])
            f.records.insert(
                rng.randrange(len(f.records) + 1), _bad_record(rng, reason, variant, base)
            )
            bad_by_reason[reason] = bad_by_reason.get(reason, 0) + 1

    # The corrupt object: a gzip stream cut off mid-way (an upload that died), with fresh events
    # that appear nowhere else. A reader cannot trust any of it, so the whole object is
    # quarantined and none of its records are counted.
    mid = files[(days // 2) * files_per_day]
    corrupt = _File(
        index=len(files),
        day_index=mid.day_index,
        source="segment",
        window_start=mid.window_start,
        window_end=mid.window_end,
        fmt="corrupt",
    )
    for _ in range(max(30, events_per_day // 50)):
        received = _random_time(rng, corrupt.window_start, corrupt.window_end)
        when = max(received - dt.timedelta(seconds=1), _day_start(start))
        corrupt.records.append(
            _make_event(
                rng, ids, rng.choice(by_source["segment"]), "segment", when, received, False
            )[0]
        )

    # Write, in arrival order, and count what a reader will find.
    keys: list[str] = []
    arrived: dict[str, dt.datetime] = {}
    lines = 0
    for f in [*files, corrupt]:
        if f.fmt == "array":
            f.key, data = _key(prefix, f, ".json"), orjson.dumps(f.records)
        elif f.fmt == "plain":
            crlf = rng.random() < 0.1  # only uncompressed uploads come from such writers
            f.key, data = _key(prefix, f, ".ndjson"), _encode_lines(rng, f.records, crlf)
        else:
            data = gzip.compress(_encode_lines(rng, f.records), mtime=0)  # mtime=0: same bytes
            if f.fmt == "corrupt":
                data = data[: len(data) // 2]
            f.key = _key(prefix, f, ".ndjson.gz")
        # the time the destination flushed the batch, as a collector would stamp it
        storage.put("landing", validate_key(f.key), data,
                    metadata={ARRIVED_AT: str(int(f.window_end.timestamp()))})
        keys.append(f.key)
        arrived[f.key] = f.window_end
        if f.fmt != "corrupt":
            lines += len(f.records)

    day_names = [(start + dt.timedelta(days=d)).isoformat() for d in range(days)]
    unique = dict.fromkeys(day_names, 0)
    dups = dict.fromkeys(day_names, 0)
    for _, _, t in origin:
        unique[t.date().isoformat()] += 1  # KeyError here would mean an event outside the range
    for _, t in dup_copies:
        dups[t.date().isoformat()] += 1
    bad_lines = sum(bad_by_reason.values())
    assert lines == len(origin) + len(dup_copies) + bad_lines
    return DemoReport(
        files=len(keys),
        lines=lines,
        bad_lines=bad_lines,
        unique_events_per_day=unique,
        duplicate_copies_per_day=dups,
        bad_lines_by_reason=bad_by_reason,
        keys=keys,
        corrupt_files=1,
        arrived_at=arrived,
    )
