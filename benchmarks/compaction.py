"""Benchmark: our LAND + COMPACT of one day against bare DuckDB (and polars) on the same files.

Run by hand (nothing here is imported by the project or its tests)::

    uv run python benchmarks/compaction.py                      # 1,000,000 events in 2,000 files
    uv run python benchmarks/compaction.py --events 200000 --files 400
    uv run python benchmarks/compaction.py --events 200000 --files 400 --scale 10
    uv run python benchmarks/compaction.py --json               # one JSON document on stdout

What it does:

1. Writes ONE UTC day of Segment-style events (about 2% of them at-least-once re-deliveries of an
   event from an earlier file) as gzip NDJSON objects into the landing bucket of a temporary lake.
   Generation runs in worker processes and is not timed.
2. Times our path, each phase in a fresh child process: ``land_inbox`` (landing -> raw), then
   ``compact_day`` (raw -> one new curated version), then ``audit_version`` (reported apart).
3. Times bare engines reading the SAME landing objects straight to one zstd Parquet file, with the
   same DuckDB memory limit and thread count (``pipelines.duck.connect``): a plain projection
   (``duckdb_copy``), the same with our dedupe and sort (``duckdb_dedupe_sort``), and the polars
   equivalents (``polars_copy``, ``polars_dedupe_sort``; polars has no memory limit).
4. Measures each phase's peak memory: the summed RSS of the phase's process tree, polled every
   50 ms with psutil (landing spreads files over worker processes), and never less than the
   phase process's own exact high-water mark (``VmHWM`` of /proc/self/status; ``ru_maxrss``
   elsewhere). Prints a table with ratios ours/bare (``--json``: one JSON document instead).

``--scale N`` multiplies the events AND the files, so the objects keep their size and the day gets N
times bigger: the check of the law "a day ten times larger must not take ten times the peak
memory". ``--fixed-files`` keeps the file count instead (N times bigger objects).
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/compaction.py` from anywhere finds `pipelines`
    sys.path.insert(0, str(ROOT))

from benchmarks.common import engine_revision as _engine_revision  # noqa: E402  (after the path fix)
from pipelines import demo  # noqa: E402  (after the path fix above)

DEFAULT_DAY = "2024-03-14"
DAY_MS = 86_400_000
OURS = ("land", "compact")
BARE = ("duckdb_copy", "duckdb_dedupe_sort", "polars_copy", "polars_dedupe_sort")
PHASES = ("land", "compact", "audit", *BARE)

# ----------------------------------------------------------------------------------------------
# event generation: every field is a pure function of the event's global slot number, so worker
# processes generate files independently and a re-delivery can rebuild the event it copies.

M64 = (1 << 64) - 1
DUP_BASIS_POINTS = 200  # 2.00% of slots re-deliver an event of an earlier file
DUP_WINDOW_FILES = 8  # a re-delivery copies an event from one of the previous few files
SEED = 0x5EED_C11C


def _mix(x: int) -> int:
    """splitmix64: a cheap, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _uuid(a: int, b: int) -> str:
    s = f"{a:016x}{b:016x}"
    return f"{s[:8]}-{s[8:12]}-4{s[13:16]}-{'89ab'[int(s[16], 16) & 3]}{s[17:20]}-{s[20:32]}"


# the demo's site, so benchmark and demo events look alike
_HOST, _PAGES = demo.SITE_HOST, demo.SITE_PAGES
_REFERRERS = ("", "", "", "https://www.google.com/", "https://duckduckgo.com/", "https://t.co/x9Qz",
              "https://news.ycombinator.com/", "https://www.shoply.example/")
_SEARCHES = ("", "", "", "?utm_source=google&utm_medium=cpc", "?q=trail+shoes", "?ref=nav")
_PAGE_DICTS = tuple(
    {"path": path, "referrer": ref, "search": search, "title": title, "url": _HOST + path + search}
    for path, title, _ in _PAGES for ref in _REFERRERS for search in _SEARCHES
)
_N_REF_SEARCH = len(_REFERRERS) * len(_SEARCHES)
_CAMPAIGNS = (
    {"source": "google", "medium": "cpc", "name": "spring_sale", "term": "trail shoes",
     "content": "ad_variant_b"},
    {"source": "newsletter", "medium": "email", "name": "2024-w11"},
    {"source": "facebook", "medium": "paid_social", "name": "retargeting", "content": "carousel"},
    {"source": "bing", "medium": "cpc", "name": "brand", "term": "shoply"},
)
_BROWSERS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.3 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/122.0.0.0 Mobile Safari/537.36",
)
_LOCALES = (("en-US", "America/New_York"), ("en-US", "America/Los_Angeles"),
            ("en-GB", "Europe/London"), ("de-DE", "Europe/Berlin"), ("fr-FR", "Europe/Paris"),
            ("pt-BR", "America/Sao_Paulo"), ("ja-JP", "Asia/Tokyo"), ("en-IN", "Asia/Kolkata"))
_WEB_SCREENS = tuple({"width": w, "height": h, "density": d}
                     for w, h, d in ((1920, 1080, 1), (1440, 900, 2), (390, 844, 3), (412, 915, 2.625)))
_MOBILE = (  # library, os, device, app
    ({"name": "analytics-ios", "version": "4.1.8"}, {"name": "iOS", "version": "17.3.1"},
     {"manufacturer": "Apple", "model": "iPhone15,2", "type": "ios"}),
    ({"name": "analytics-android", "version": "4.11.3"}, {"name": "Android", "version": "14"},
     {"manufacturer": "Google", "model": "Pixel 8", "type": "android"}),
)
_APP = {"name": "Shoply", "version": "5.12.0", "build": "5120", "namespace": "example.shoply.app"}
_MOBILE_SCREEN = {"width": 1179, "height": 2556, "density": 3}
_NETWORKS = ({"wifi": True, "cellular": False}, {"wifi": False, "cellular": True, "carrier": "T-Mobile"})
_WEB_LIBS = ({"name": "analytics.js", "version": "next-1.64.0"},
             {"name": "analytics.js", "version": "next-1.63.0"})
_SERVER_LIB = {"name": "analytics-python", "version": "2.3.2"}
_PRODUCTS = tuple(
    {"product_id": pid, "sku": sku, "name": name, "category": cat, "brand": brand, "price": price}
    for pid, sku, name, cat, brand, price in (
        ("507f1f77bcf86cd799439011", "TR2-BLK-42", "Trail Runner 2", "Shoes", "Shoply", 129.0),
        ("507f1f77bcf86cd799439012", "MT-NVY-M", "Merino Tee", "Apparel", "Woolly", 49.95),
        ("507f1f77bcf86cd799439013", "HL-300", "Headlamp 300", "Gear", "Lumen", 34.5),
        ("507f1f77bcf86cd799439014", "SOCK-3P", "Running Socks (3-pack)", "Apparel", "Shoply", 19.0),
        ("507f1f77bcf86cd799439015", "VEST-5L", "Hydration Vest 5L", "Gear", "Shoply", 89.0),
    )
)
_VIEWED = tuple({**p, "currency": "USD"} for p in _PRODUCTS)
_QUERIES = ("trail shoes", "merino", "headlamp", "socks", "rain jacket", "vest 5l", "gift card")
_BUTTONS = (("Add to cart", "pdp"), ("Sign up", "header"), ("Subscribe", "footer"),
            ("Start free trial", "pricing"), ("Load more", "collection"))
_SCREEN_NAMES = ("Home", "Product Detail", "Cart", "Checkout", "Order Confirmation", "Settings")
_TRACK = (  # (cumulative share in %, event name)
    (30, "Product Viewed"), (40, "Product Added"), (44, "Checkout Started"), (47, "Order Completed"),
    (62, "Products Searched"), (92, "Button Clicked"), (100, "Video Playback Started"),
)
_PLANS = ("free", "pro", "team")
_INTEGRATIONS: dict[str, Any] = {}


def _iso(ms: int, prefixes: dict[int, str]) -> str:
    d, r = divmod(ms, DAY_MS)
    h, r = divmod(r, 3_600_000)
    m, r = divmod(r, 60_000)
    s, f = divmod(r, 1000)
    return f"{prefixes[d]}T{h:02d}:{m:02d}:{s:02d}.{f:03d}Z"


class DayGenerator:
    """Generates slot ``g`` (0 <= g < events) of the day; files are contiguous ranges of slots."""

    def __init__(self, day: str, events: int, files: int):
        self.day = date.fromisoformat(day)
        self.events = events
        self.files = files
        self.users = max(1000, events // 25)
        self.prefixes = {d: (self.day + timedelta(days=d)).isoformat() for d in (-1, 0, 1)}

    def file_start(self, f: int) -> int:
        return f * self.events // self.files

    def file_of(self, g: int) -> int:
        f = g * self.files // self.events
        while self.file_start(f + 1) <= g:
            f += 1
        while self.file_start(f) > g:
            f -= 1
        return f

    def is_dup(self, g: int) -> bool:
        return g >= self.file_start(1) and _mix(g ^ 0xD0D0) % 10_000 < DUP_BASIS_POINTS

    def original(self, g: int) -> int:
        start = self.file_start(self.file_of(g))
        window = max(1, start - self.file_start(max(0, self.file_of(g) - DUP_WINDOW_FILES)))
        o = start - 1 - _mix(g ^ 0x0417) % window
        while self.is_dup(o):  # copy an event that was itself delivered fresh
            o -= 1
        return o

    def file_lines(self, f: int) -> tuple[list[bytes], int]:
        """Serialised lines of file ``f`` and how many of them are re-deliveries."""
        import orjson

        lines, dups = [], 0
        for g in range(self.file_start(f), self.file_start(f + 1)):
            if self.is_dup(g):
                dups += 1
                lines.append(orjson.dumps(self.event(self.original(g), 1000 + _mix(g) % 120_000)))
            else:
                lines.append(orjson.dumps(self.event(g, 0)))
        return lines, dups

    def event(self, g: int, retry_ms: int) -> dict[str, Any]:
        h1 = _mix(g ^ SEED)
        h2 = _mix(h1)
        h3 = _mix(h2)
        pre = self.prefixes
        # times: receivedAt grows with the slot (Firehose objects cover consecutive windows);
        # batching delay B, network latency L and client clock skew K give the other three, and
        # timestamp = originalTimestamp + (receivedAt - sentAt) = receivedAt - B, as Segment computes.
        received = min(g * DAY_MS // self.events + (h1 & 1023), DAY_MS - 1)
        b = 30_000 + (h2 & 0xFFFFFF) % 10_770_000 if (h1 >> 10) % 100 < 3 else 40 + (h2 & 0x1FFF)
        if b > received:  # offline events of the first hours are not pushed into yesterday
            b = received // 2
        lat = 15 + ((h2 >> 24) & 0x1FF)
        skew = 0 if (h2 >> 33) % 10 < 8 else ((h2 >> 40) & 0xFFFF) - 32_768
        ts = received - b
        sent = received - lat + skew
        user = h3 % self.users
        uh = _mix(user ^ 0xACE)
        ev: dict[str, Any] = {
            "messageId": _uuid(h1, h3),
            "anonymousId": _uuid(uh, _mix(uh)),
        }
        if (uh >> 8) % 10 < 4:
            ev["userId"] = f"usr_{user:08d}"
        kind = (uh >> 16) % 10  # 0-5 web, 6-8 mobile, 9 server
        pick = (h3 >> 40) % 100
        props: dict[str, Any] | None
        if kind <= 5:
            loc, tz = _LOCALES[(uh >> 24) % len(_LOCALES)]
            page_i = (h2 >> 44) % len(_PAGES)
            page = _PAGE_DICTS[page_i * _N_REF_SEARCH + (h1 >> 32) % _N_REF_SEARCH]
            ctx: dict[str, Any] = {
                "library": _WEB_LIBS[(uh >> 28) & 1], "page": page,
                "userAgent": _BROWSERS[(uh >> 32) % len(_BROWSERS)],
                "ip": f"{(uh >> 36) % 223 + 1}.{(uh >> 44) & 255}.{(uh >> 52) & 255}.{uh & 255}",
                "locale": loc, "timezone": tz, "screen": _WEB_SCREENS[(uh >> 40) % len(_WEB_SCREENS)],
            }
            if (h1 >> 48) % 4 == 0:
                ctx["campaign"] = _CAMPAIGNS[(h1 >> 50) % len(_CAMPAIGNS)]
            channel = "client"
            if pick < 35:
                ev["type"], ev["name"] = "page", _PAGES[page_i][1]
                if _PAGES[page_i][2]:
                    ev["category"] = _PAGES[page_i][2]
                props = page
            elif pick < 95:
                ev["type"], (ev["event"], props) = "track", self._track(g, h2, h3)
            else:
                ev["type"], props = "identify", None
        elif kind <= 8:
            lib, os_, device = _MOBILE[(uh >> 20) & 1]
            loc, tz = _LOCALES[(uh >> 24) % len(_LOCALES)]
            ctx = {
                "library": lib, "os": os_, "app": _APP, "screen": _MOBILE_SCREEN,
                "device": {**device, "id": _uuid(_mix(uh ^ 7), uh)},
                "network": _NETWORKS[(h1 >> 52) & 1],
                "ip": f"{(uh >> 36) % 223 + 1}.{(uh >> 44) & 255}.{(uh >> 52) & 255}.{uh & 255}",
                "locale": loc, "timezone": tz,
            }
            channel = "mobile"
            if pick < 35:
                name = _SCREEN_NAMES[(h2 >> 44) % len(_SCREEN_NAMES)]
                ev["type"], ev["name"], props = "screen", name, {"name": name}
            elif pick < 95:
                ev["type"], (ev["event"], props) = "track", self._track(g, h2, h3)
            else:
                ev["type"], props = "identify", None
        else:
            ctx = {"library": _SERVER_LIB}
            channel = "server"
            if pick < 90:
                ev["type"], (ev["event"], props) = "track", self._track(g, h2, h3)
            else:
                ev["type"], props = "identify", None
        if ev["type"] == "identify":
            ev["traits"] = {"email": f"user{user}@example.com", "plan": _PLANS[uh % 3],
                            "first_name": "Alex", "created_at": "2023-06-01T12:00:00.000Z"}
        elif props is not None:
            ev["properties"] = props
        ev["channel"] = channel
        ev["context"] = ctx
        ev["integrations"] = _INTEGRATIONS
        ev["originalTimestamp"] = _iso(ts - lat + skew, pre)
        ev["sentAt"] = _iso(sent, pre)
        ev["receivedAt"] = _iso(received + retry_ms, pre)
        ev["timestamp"] = _iso(ts, pre)
        ev["version"] = 2
        return ev

    @staticmethod
    def _track(g: int, h2: int, h3: int) -> tuple[str, dict[str, Any]]:
        r = (h2 >> 52) % 100
        name = next(n for share, n in _TRACK if r < share)
        p = (h3 >> 8) % len(_PRODUCTS)
        if name == "Product Viewed":
            return name, _VIEWED[p]
        if name == "Product Added":
            return name, {**_PRODUCTS[p], "quantity": 1 + (h3 >> 12) % 3, "cart_id": f"cart_{h3 % 10**9:09d}",
                          "currency": "USD"}
        if name in ("Checkout Started", "Order Completed"):
            items = [{"product_id": q["product_id"], "sku": q["sku"], "name": q["name"],
                      "price": q["price"], "quantity": 1 + (h3 >> (16 + i)) % 2}
                     for i, q in enumerate(_PRODUCTS[p: p + 1 + (h3 >> 20) % 3])]
            total = round(sum(i["price"] * i["quantity"] for i in items), 2)
            props = {"order_id": f"ord_{g:010d}", "value": total, "revenue": total,
                     "currency": "USD", "products": items}
            if name == "Order Completed":
                props |= {"total": round(total + 5.0, 2), "shipping": 5.0,
                          "tax": round(total * 0.08, 2)}
                if (h3 >> 24) % 5 == 0:
                    props["coupon"] = "SPRING10"
            return name, props
        if name == "Products Searched":
            return name, {"query": _QUERIES[(h3 >> 8) % len(_QUERIES)]}
        if name == "Button Clicked":
            label, where = _BUTTONS[(h3 >> 8) % len(_BUTTONS)]
            return name, {"label": label, "location": where}
        return name, {"session_id": f"vs_{h3 % 10**8:08d}", "content_asset_id": f"asset_{p}",
                      "position": (h3 >> 12) % 600, "total_length": 600, "sound": 80,
                      "full_screen": bool((h3 >> 30) & 1), "video_player": "youtube"}


def _landing_key(gen: DayGenerator, f: int) -> str:
    hour = min(23, gen.file_start(f) * 24 // gen.events)
    return f"segment/{gen.day.isoformat()}/{hour:02d}/events-{f:06d}.ndjson.gz"


def _gen_files(job: tuple[str, str, int, int, list[int]]) -> tuple[int, int, int]:
    """Worker: write the given landing files; returns (lines, re-deliveries, gzip bytes)."""
    root, day, events, files, todo = job
    from pipelines.storage import LocalStorage

    storage = LocalStorage(Path(root))
    gen = DayGenerator(day, events, files)
    n = dups = size = 0
    for f in todo:
        lines, d = gen.file_lines(f)
        data = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0)
        storage.put("landing", _landing_key(gen, f), data)
        n, dups, size = n + len(lines), dups + d, size + len(data)
    return n, dups, size


def generate(root: Path, day: str, events: int, files: int, workers: int) -> dict[str, Any]:
    started = time.perf_counter()
    chunks = [list(range(i, files, max(1, workers * 8))) for i in range(max(1, workers * 8))]
    jobs = [(str(root), day, events, files, c) for c in chunks if c]
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        parts = pool.map(_gen_files, jobs, chunksize=1)
    lines, dups, size = (sum(p[i] for p in parts) for i in range(3))
    return {"events": lines, "redeliveries": dups, "unique_events": lines - dups, "files": files,
            "bytes": size, "seconds": round(time.perf_counter() - started, 3)}


# ----------------------------------------------------------------------------------------------
# bare baselines: the raw JSON fields, declared explicitly

_STR = "VARCHAR"
_RAW_DUCK = {
    "messageId": _STR, "type": _STR, "event": _STR, "name": _STR, "category": _STR,
    "anonymousId": _STR, "userId": _STR, "groupId": _STR, "previousId": _STR,
    "timestamp": "TIMESTAMPTZ", "originalTimestamp": "TIMESTAMPTZ", "sentAt": "TIMESTAMPTZ",
    "receivedAt": "TIMESTAMPTZ", "channel": _STR,
    "context": "STRUCT(library STRUCT(name VARCHAR, version VARCHAR), "
               "page STRUCT(path VARCHAR, referrer VARCHAR, search VARCHAR, title VARCHAR, url VARCHAR), "
               "userAgent VARCHAR, ip VARCHAR, locale VARCHAR, timezone VARCHAR, "
               "screen STRUCT(width BIGINT, height BIGINT, density DOUBLE), "
               "os STRUCT(name VARCHAR, version VARCHAR), "
               "app STRUCT(name VARCHAR, version VARCHAR, build VARCHAR, namespace VARCHAR), "
               "device STRUCT(id VARCHAR, manufacturer VARCHAR, model VARCHAR, type VARCHAR), "
               "network STRUCT(wifi BOOLEAN, cellular BOOLEAN, carrier VARCHAR), "
               "campaign STRUCT(source VARCHAR, medium VARCHAR, name VARCHAR, term VARCHAR, content VARCHAR))",
    "properties": "JSON", "traits": "JSON", "integrations": "JSON",
}

# the columns of our table, from the raw fields (lineage: file name; no line number in bare DuckDB)
_DUCK_SELECT = """
    messageId AS event_id, type AS event_type, coalesce(event, name) AS event_name, category,
    anonymousId AS anonymous_id, userId AS user_id, groupId AS group_id, previousId AS previous_id,
    "timestamp" AS event_time, originalTimestamp AS original_timestamp, sentAt AS sent_at,
    receivedAt AS received_at, channel,
    coalesce(context.page.url, properties->>'url') AS page_url,
    coalesce(context.page.path, properties->>'path') AS page_path,
    coalesce(context.page.referrer, properties->>'referrer') AS page_referrer,
    coalesce(context.page.title, properties->>'title') AS page_title,
    context.userAgent AS user_agent, context.ip AS ip, context.locale AS locale,
    context.library.name AS library_name, context.library.version AS library_version,
    context.campaign.source AS campaign_source, context.campaign.medium AS campaign_medium,
    context.campaign.name AS campaign_name, context.campaign.term AS campaign_term,
    context.campaign.content AS campaign_content,
    properties::VARCHAR AS properties, traits::VARCHAR AS traits,
    to_json(struct_pack(page := struct_pack(search := context.page.search),
                        timezone := context.timezone, screen := context.screen, os := context.os,
                        app := context.app, device := context.device,
                        network := context.network))::VARCHAR AS context,
    integrations::VARCHAR AS integrations, filename AS source_object,
    NULL::BIGINT AS source_line, now() AS ingested_at
"""


def _polars_schema() -> dict[str, Any]:
    import polars as pl

    s, f, i = pl.String, pl.Float64, pl.Int64

    def st(**kw: Any) -> Any:
        return pl.Struct(kw)

    props = st(path=s, referrer=s, search=s, title=s, url=s, name=s, product_id=s, sku=s,
               category=s, brand=s, price=f, currency=s, quantity=i, cart_id=s, order_id=s,
               value=f, revenue=f, total=f, shipping=f, tax=f, coupon=s,
               products=pl.List(st(product_id=s, sku=s, name=s, price=f, quantity=i)),
               query=s, label=s, location=s, session_id=s, content_asset_id=s, position=i,
               total_length=i, sound=i, full_screen=pl.Boolean, video_player=s)
    ctx = st(library=st(name=s, version=s), page=st(path=s, referrer=s, search=s, title=s, url=s),
             userAgent=s, ip=s, locale=s, timezone=s, screen=st(width=i, height=i, density=f),
             os=st(name=s, version=s), app=st(name=s, version=s, build=s, namespace=s),
             device=st(id=s, manufacturer=s, model=s, type=s),
             network=st(wifi=pl.Boolean, cellular=pl.Boolean, carrier=s),
             campaign=st(source=s, medium=s, name=s, term=s, content=s))
    return {"messageId": s, "type": s, "event": s, "name": s, "category": s, "anonymousId": s,
            "userId": s, "groupId": s, "previousId": s, "timestamp": s, "originalTimestamp": s,
            "sentAt": s, "receivedAt": s, "channel": s, "context": ctx, "properties": props,
            "traits": st(email=s, plan=s, first_name=s, created_at=s),
            "integrations": st(dummy=s)}


def _polars_frame(files: list[str]) -> Any:
    import polars as pl

    c = pl.col
    ts = pl.Datetime("us", "UTC")

    def t(name: str) -> Any:
        return c(name).str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC")

    ctx = c("context")
    page = ctx.struct.field("page")
    camp = ctx.struct.field("campaign")
    lib = ctx.struct.field("library")
    props = c("properties")
    lf = pl.scan_ndjson(files, schema=_polars_schema(), include_file_paths="source_object")
    return lf.select(
        c("messageId").alias("event_id"), c("type").alias("event_type"),
        pl.coalesce(c("event"), c("name")).alias("event_name"), c("category"),
        c("anonymousId").alias("anonymous_id"), c("userId").alias("user_id"),
        c("groupId").alias("group_id"), c("previousId").alias("previous_id"),
        t("timestamp").alias("event_time"), t("originalTimestamp").alias("original_timestamp"),
        t("sentAt").alias("sent_at"), t("receivedAt").alias("received_at"), c("channel"),
        *(pl.coalesce(page.struct.field(k), props.struct.field(k)).alias(f"page_{k}")
          for k in ("url", "path", "referrer", "title")),
        ctx.struct.field("userAgent").alias("user_agent"), ctx.struct.field("ip").alias("ip"),
        ctx.struct.field("locale").alias("locale"),
        lib.struct.field("name").alias("library_name"),
        lib.struct.field("version").alias("library_version"),
        *(camp.struct.field(k).alias(f"campaign_{k}")
          for k in ("source", "medium", "name", "term", "content")),
        props.struct.json_encode().alias("properties"),
        c("traits").struct.json_encode().alias("traits"),
        pl.struct(ctx.struct.field("timezone", "screen", "os", "app", "device", "network"))
        .struct.json_encode().alias("context"),
        c("integrations").struct.json_encode().alias("integrations"),
        c("source_object"), pl.lit(None, pl.Int64).alias("source_line"),
        pl.lit(datetime.now(UTC)).cast(ts).alias("ingested_at"),
    )


# ----------------------------------------------------------------------------------------------
# one phase, in a child process


def _vm_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_kib() -> int:
    hwm = _vm_kib("VmHWM")  # this process's own high-water mark (not inherited across exec)
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


class TreeMemory(threading.Thread):
    """Polls the summed RSS of this process and all its descendants (landing spawns workers).

    Summed RSS counts shared library pages once per process, so for a process tree it errs high.
    Spikes shorter than the interval can be missed; this process's own VmHWM is exact and is the
    floor of the reported peak.
    """

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self.interval = interval
        self.me = psutil.Process()
        self.peak = 0
        self.max_procs = 1
        self._done = threading.Event()

    def sample(self) -> None:
        import psutil

        total, n = 0, 0
        try:
            procs = [self.me, *self.me.children(recursive=True)]
        except psutil.Error:
            procs = [self.me]
        for proc in procs:
            try:
                total += proc.memory_info().rss
                n += 1
            except psutil.Error:
                continue
        self.peak = max(self.peak, total)
        self.max_procs = max(self.max_procs, n)

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.sample()
        self._done.set()
        self.join()


def run_phase(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines import duck
    from pipelines.compact import compact_day
    from pipelines.config import LakeSettings
    from pipelines.lake import Lake
    from pipelines.land import land_inbox
    from pipelines.verify import audit_version

    if args.phase.startswith("polars"):
        import polars as pl
    workdir = Path(args.workdir)
    settings = LakeSettings(root=str(workdir / "lake"), duckdb_memory_limit=args.memory_limit,
                            duckdb_threads=args.threads)
    lake = Lake.open(settings)
    base_kib = _vm_kib("VmRSS") or 0
    out: dict[str, Any] = {"phase": args.phase}
    tree = TreeMemory()
    tree.start()
    started = time.perf_counter()
    if args.phase == "land":
        rep = land_inbox(lake)
        out |= {"files": len(rep.files), "lines": rep.total("lines"),
                "landed": rep.total("landed"), "quarantined": rep.total("quarantined"),
                "reasons": rep.reasons, "touched": rep.touched,
                "raw_objects": sum(len(f.outputs) for f in rep.files)}
    elif args.phase == "compact":
        res = compact_day(lake, args.day)
        out |= {"version": res.version, "reused": res.reused, **res.counts}
    elif args.phase == "audit":
        rep = audit_version(lake, args.day, args.compact_version)
        out |= {"passed": rep.passed, "summary": rep.summary()}
    else:
        files = [lake.storage.uri("landing", o.key) for o in lake.storage.list("landing")]
        dest = workdir / "bare" / f"{args.phase}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        if args.phase.startswith("duckdb"):
            with tempfile.TemporaryDirectory(prefix="bench-spill-") as spill:
                con = duck.connect(settings, spill_dir=Path(spill))
                try:
                    src = (f"read_json({duck.list_literal(files)}, "
                           f"columns={duck.struct_literal(_RAW_DUCK)}, format='newline_delimited', "
                           "compression='gzip', filename=true)")
                    query = f"SELECT {_DUCK_SELECT} FROM {src}"
                    if args.phase == "duckdb_dedupe_sort":
                        con.execute("SET preserve_insertion_order = true")
                        query = (f"SELECT * FROM ({query}) QUALIFY row_number() OVER "
                                 "(PARTITION BY event_id ORDER BY received_at ASC NULLS LAST, "
                                 "source_object) = 1 ORDER BY event_time, event_id")
                    (rows,) = con.execute(
                        f"COPY ({query}) TO {duck.literal(str(dest))} (FORMAT parquet, "
                        f"COMPRESSION zstd, ROW_GROUP_SIZE {int(settings.row_group_rows)})"
                    ).fetchone()
                finally:
                    con.close()
        else:
            lf = _polars_frame(files)
            if args.phase == "polars_dedupe_sort":
                lf = (lf.sort("received_at", "source_object", nulls_last=True)
                      .unique(subset="event_id", keep="first", maintain_order=False)
                      .sort("event_time", "event_id"))
            lf.sink_parquet(dest, compression="zstd", row_group_size=settings.row_group_rows)
            rows = pl.scan_parquet(dest).select(pl.len()).collect().item()
        out |= {"rows": int(rows), "bytes_out": dest.stat().st_size, "files_out": 1}
    out["seconds"] = round(time.perf_counter() - started, 3)
    tree.stop()
    own = _peak_kib() / 1024
    out["rss_base_mib"] = round(base_kib / 1024, 1)
    out["rss_own_peak_mib"] = round(own, 1)
    out["rss_peak_mib"] = round(max(own, tree.peak / 2**20), 1)  # the whole process tree
    out["processes"] = tree.max_procs
    return out


def spawn_phase(args: argparse.Namespace, phase: str, workdir: Path, **extra: str) -> dict[str, Any]:
    result = workdir / f"result-{phase}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--workdir", str(workdir),
           "--memory-limit", args.memory_limit, "--threads", str(args.threads), "--day", args.day,
           "--result", str(result)]
    for k, v in extra.items():
        cmd += [f"--{k}", v]
    env = dict(os.environ, POLARS_MAX_THREADS=str(args.threads))
    _log(f"phase {phase} ...")
    wall = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=sys.stderr, check=False)
    wall = time.perf_counter() - wall
    if proc.returncode != 0 or not result.exists():
        _log(f"phase {phase} failed with exit code {proc.returncode}")
        return {"phase": phase, "failed": True, "exit_code": proc.returncode}
    out = json.loads(result.read_text())
    out["wall_seconds"] = round(wall, 3)
    _log(f"phase {phase}: {out['seconds']} s, peak RSS {out['rss_peak_mib']} MiB")
    return out


# ----------------------------------------------------------------------------------------------
# report


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _load() -> list[float] | None:
    """1/5/15-minute load averages: on a shared machine they say how much the figures are worth."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def summarise(args: argparse.Namespace, gen: dict[str, Any], res: dict[str, dict[str, Any]],
              workdir: Path, load_before: list[float] | None) -> dict[str, Any]:
    ok = [p for p in OURS if not res.get(p, {}).get("failed")]
    ours = None
    if len(ok) == len(OURS):
        ours = {"seconds": round(sum(res[p]["seconds"] for p in OURS), 3),
                "rss_peak_mib": max(res[p]["rss_peak_mib"] for p in OURS)}
    compact = res.get("compact", {})
    land = res.get("land", {})
    raw_dir = workdir / "lake" / "raw"
    raw_bytes = sum(p.stat().st_size for p in raw_dir.rglob("*.ndjson.gz")) if raw_dir.exists() else 0
    ratios = {}
    for b in ("duckdb_copy", "duckdb_dedupe_sort", "polars_copy", "polars_dedupe_sort"):
        r = res.get(b, {})
        if ours and not r.get("failed") and r:
            ratios[b] = {"time": _ratio(ours["seconds"], r["seconds"]),
                         "memory": _ratio(ours["rss_peak_mib"], r["rss_peak_mib"])}
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_before": load_before,
                    "load_after": _load(), "engine": _engine_revision()},
        "params": {"events": args.events, "files": args.files, "scale": args.scale,
                   "fixed_files": args.fixed_files, "day": args.day, "memory_limit": args.memory_limit, "threads": args.threads},
        "input": gen,
        "phases": res,
        "ours": ours,
        "ratios_ours_over_bare": ratios,
        "sizes": {
            "landing_files": gen["files"], "landing_bytes": gen["bytes"],
            "raw_objects": land.get("raw_objects"), "raw_bytes": raw_bytes,
            "curated_files": compact.get("files_out"), "curated_bytes": compact.get("bytes_out"),
            "compaction_ratio_landing_files": _ratio(gen["files"], compact.get("files_out")),
            "compaction_ratio_raw_objects": _ratio(compact.get("files_in"), compact.get("files_out")),
            "bytes_ratio_landing_over_curated": _ratio(gen["bytes"], compact.get("bytes_out")),
        },
        "checks": {
            "expected_unique": gen["unique_events"],
            "ours_rows": compact.get("rows"), "ours_duplicates": compact.get("duplicates"),
            "quarantined": land.get("quarantined"),
            "duckdb_dedupe_rows": res.get("duckdb_dedupe_sort", {}).get("rows"),
            "polars_dedupe_rows": res.get("polars_dedupe_sort", {}).get("rows"),
            "audit_passed": res.get("audit", {}).get("passed"),
        },
    }


def print_table(s: dict[str, Any]) -> None:
    p, inp, res = s["params"], s["input"], s["phases"]
    ev = inp["events"]
    print(f"\nclickstream-lake compaction benchmark  {s['when']}  ({s['machine']['cpus']} cpus, "
          f"python {s['machine']['python']}; engine {s['machine']['engine']}; load average before {s['machine']['load_before']}, "
          f"after {s['machine']['load_after']})")
    print(f"day {p['day']}: {ev:,} events ({inp['redeliveries']:,} re-deliveries, "
          f"{inp['unique_events']:,} unique) in {inp['files']:,} gzip NDJSON files, "
          f"{inp['bytes'] / 2**20:.1f} MiB; scale {p['scale']}; DuckDB memory_limit "
          f"{p['memory_limit']}, threads {p['threads']}; generated in {inp['seconds']:.1f} s (untimed)")
    print()
    head = (f"{'phase':<26}{'seconds':>10}{'events/s':>12}{'peak RSS MiB':>14}"
            f"{'base RSS MiB':>14}{'procs':>7}")
    print(head)
    print("-" * len(head))

    def row(name: str, secs: float | None, peak: float | None, base: float | None = None,
            procs: int | None = None) -> None:
        rate = f"{ev / secs:,.0f}" if secs else "-"
        print(f"{name:<26}{secs if secs is not None else '-':>10}{rate:>12}"
              f"{peak if peak is not None else '-':>14}{base if base is not None else '':>14}"
              f"{procs if procs is not None else '':>7}")

    labels = {"land": "ours: land", "compact": "ours: compact", "audit": "ours: audit (apart)",
              "duckdb_copy": "bare duckdb: copy", "duckdb_dedupe_sort": "bare duckdb: dedupe+sort",
              "polars_copy": "bare polars: copy", "polars_dedupe_sort": "bare polars: dedupe+sort"}
    for name in PHASES:
        r = res.get(name)
        if r is None:
            continue
        if r.get("failed"):
            print(f"{labels[name]:<26}{'FAILED (exit ' + str(r.get('exit_code')) + ')':>24}")
            continue
        row(labels[name], r["seconds"], r["rss_peak_mib"], r["rss_base_mib"], r.get("processes"))
        if name == "compact" and s["ours"]:
            row("ours: land+compact", s["ours"]["seconds"], s["ours"]["rss_peak_mib"])
    print()
    for b, r in s["ratios_ours_over_bare"].items():
        print(f"ours(land+compact) / {b:<20} time x{r['time']}   peak memory x{r['memory']}")
    z = s["sizes"]
    mib = 2**20
    print()
    print(f"input   {z['landing_files']:,} landing files, {z['landing_bytes'] / mib:.1f} MiB gzip")
    if z["raw_objects"] is not None:
        print(f"raw     {z['raw_objects']:,} objects, {z['raw_bytes'] / mib:.1f} MiB gzip")
    if z["curated_files"] is not None:
        print(f"output  {z['curated_files']} Parquet file(s), {z['curated_bytes'] / mib:.1f} MiB zstd"
              f"   compaction: {z['compaction_ratio_landing_files']}x landing files, "
              f"{z['compaction_ratio_raw_objects']}x raw objects, bytes in/out "
              f"{z['bytes_ratio_landing_over_curated']}x")
    for b in BARE:
        r = res.get(b)
        if r and not r.get("failed"):
            print(f"{b:<20} {r['files_out']} Parquet file, {r['bytes_out'] / mib:.1f} MiB, "
                  f"{r['rows']:,} rows")
    c = s["checks"]
    print()
    print(f"checks  expected unique {c['expected_unique']:,}; ours rows {c['ours_rows']}, "
          f"duplicates {c['ours_duplicates']}, quarantined {c['quarantined']}; duckdb dedupe rows "
          f"{c['duckdb_dedupe_rows']}; polars dedupe rows {c['polars_dedupe_rows']}; "
          f"audit passed {c['audit_passed']}")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="events of the day (before --scale)")
    ap.add_argument("--files", type=int, default=2_000, help="landing files (before --scale)")
    ap.add_argument("--scale", type=int, default=1, help="multiply events (and files) by N")
    ap.add_argument("--fixed-files", action="store_true", help="--scale grows the files, not their number")
    ap.add_argument("--day", default=DEFAULT_DAY, help="the UTC day generated (YYYY-MM-DD)")
    ap.add_argument("--workdir", help="where the temporary lake goes (kept); default: a temp dir, removed")
    ap.add_argument("--keep", action="store_true", help="keep the default temp dir")
    ap.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit for ours and bare")
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads (and POLARS_MAX_THREADS)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="generator processes")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip, e.g. polars_copy")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    ap.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    ap.add_argument("--compact-version", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.phase:  # child mode: run one phase and write its numbers
        out = run_phase(args)
        Path(args.result).write_text(json.dumps(out, default=str))
        return 0

    events = args.events * args.scale
    files = args.files * (1 if args.fixed_files else args.scale)
    if events < files or files < 1:
        ap.error("need at least one event per file")
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        if (workdir / "lake").exists() and any((workdir / "lake").iterdir()):
            ap.error(f"{workdir / 'lake'} is not empty: give a fresh --workdir")
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="lake-bench-"))
    try:
        load_before = _load()
        _log(f"generating {events:,} events in {files:,} files under {workdir} ...")
        gen = generate(workdir / "lake", args.day, events, files, max(1, args.workers))
        _log(f"generated {gen['events']:,} lines ({gen['redeliveries']:,} re-deliveries), "
             f"{gen['bytes'] / 2**20:.1f} MiB in {gen['seconds']} s")
        res: dict[str, dict[str, Any]] = {}
        for phase in PHASES:
            if phase in skip:
                continue
            if phase == "audit":
                if res.get("compact", {}).get("version"):
                    res[phase] = spawn_phase(args, phase, workdir, **{"compact-version": res["compact"]["version"]})
                continue
            res[phase] = spawn_phase(args, phase, workdir)
        summary = summarise(args, gen, res, workdir, load_before)
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            print_table(summary)
        failed = [p for p, r in res.items() if r.get("failed")]
        return 1 if failed else 0
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
