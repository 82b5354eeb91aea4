"""Benchmark: a day of many small raw objects on S3 (the emulator), ours against one GET at a time.

Run by hand (nothing here is imported by the project or its tests)::

    uv run python benchmarks/s3_small_files.py                          # 20,000 objects, no added latency
    uv run python benchmarks/s3_small_files.py --latency-ms 20          # S3-like first-byte latency
    uv run python benchmarks/s3_small_files.py --latency-ms 0,20 --skip-land
    uv run python benchmarks/s3_small_files.py --objects 2000 --concurrency 32,8
    uv run python benchmarks/s3_small_files.py --memory-limit 4GB     # compact_day's DuckDB limit

What it does:

1. Starts the emulator (``pipelines.emulator.emulator()``, moto's server) in a child process and
   writes ONE UTC day of ``--objects`` small raw objects into the raw bucket: gzip NDJSON of our
   normalized columns, 5-20 events each, keys from ``layout.raw_key`` spread over the 24 hours,
   what landing writes. The setup is not timed: it goes straight into moto's in-memory backend
   inside the emulator's process (seconds, where 20,000 HTTP PUTs take minutes of moto's CPU),
   with a fallback to PUTs from a thread pool.
2. For each ``--latency-ms`` L > 0, starts an added-latency TCP proxy (another child process)
   in front of the emulator: every byte the client sends reaches the emulator L ms later (each
   chunk is scheduled L after it arrived, so chunks are not delayed cumulatively), answers come
   back at once. That is a link with a round trip of L, which per request is what S3's
   first-byte latency (about 10-30 ms for small GETs) costs a client. Connection set-up is not
   delayed and TLS is not modelled. (moto's server answers every request with ``Connection:
   close``, so against the emulator every request is a new connection, for both clients.) At
   L = 0 the clients talk to the emulator directly.
3. Times, on the same objects, each in this process with fresh clients:

   - ``list``: listing the day (``list_objects_v2``, pages of 1,000), ours (``S3Storage.list``);
   - ``bare one-at-a-time``: a plain boto3 loop, ``get_object(...)["Body"].read()`` written to a
     file per key, one GET at a time: what a straightforward client does;
   - ``ours c=1``: ``S3Storage.fetch`` with ``LAKE_S3_CONCURRENCY=1``, a sanity check that our
     code adds nothing per request (it should match the bare loop);
   - ``ours c=N``: ``S3Storage.fetch`` with ``--concurrency`` GETs in flight. For the first
     concurrency this is the fetch that ``compact_day`` itself does, metered apart (so the day is
     not fetched twice); the others, and all of them with ``--skip-compact``, run on their own;
   - ``compact_day``: our whole compaction of the day on S3 (list, fetch, DuckDB, upload of the
     Parquet file and the manifest), with the share of it spent in the fetch. If it fails (DuckDB
     out of memory, say), the failure is printed and the other runs go on;
   - unless ``--skip-land``: ``land_inbox`` of ``--land-objects`` small *landing* objects
     (10 Segment-style events each) with the default settings (``LAKE_S3_CONCURRENCY`` =
     the first ``--concurrency``, one worker process per core) against one object at a time
     (``s3_concurrency=1, land_workers=1``), each in a lake of its own.

   For each run it reports the wall time, objects per second, the CPU seconds spent by this
   process and landing's workers (the client) and by the emulator and proxy processes (the
   "server"), and the peak RSS of this process above what it held before the run (objects go
   to disk, so the data never sits in memory). Then the ratios, the latency bound N x L / C,
   and the CPU per GET that bounds the concurrent runs when the latency does not.

One-at-a-time runs of the whole day take N x (L + CPU per request): 20,000 x 29 ms = 10 minutes
at 20 ms here. So they run on the first ``--sample`` keys (``--land-sample`` landing objects) and
are extrapolated linearly to the whole day, which holds for a sequential loop; the table marks
those rows and says from how many they were measured. ``--sample 0`` times them all.

Why the emulator runs in a child process: moto serves requests with Python threads. In this
process it would share the client's GIL, and each GET's server-side work (routing, signature
parsing, XML) would count as client time. In its own process it is closer to a remote service,
but it still shares the machine's cores with the client: on a small machine the emulator's CPU
cost per request, not the latency, is what bounds the concurrent runs. The CPU columns show it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import gzip
import hashlib
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/s3_small_files.py` from anywhere finds `pipelines`
    sys.path.insert(0, str(ROOT))

from benchmarks.common import engine_revision as _engine_revision  # noqa: E402  (after the path fix)

DEFAULT_DAY = "2024-03-14"
MiB = 1 << 20

# ----------------------------------------------------------------------------------------------
# servers, each in a child process (see the module docstring for why)


def _emulator_main(conn: Any) -> None:
    """Child: run the emulator, send the parent its environment, then serve setup commands.

    ``("populate", role, bucket, day, n, total)`` writes objects straight into moto's in-memory
    S3 backend of this process (see :func:`_populate`); ``("stop",)`` ends it.
    """
    from pipelines.emulator import emulator

    with emulator() as env:
        conn.send(env)
        while True:
            msg = conn.recv()
            if msg[0] != "populate":
                return
            try:
                conn.send(("ok", _populate(*msg[1:])))
            except Exception as exc:  # reported to the parent, which then PUTs over HTTP instead
                conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _populate(role: str, bucket: str, day_iso: str, n: int, total: int) -> dict[str, Any]:
    """Setup (untimed), inside the emulator's process: ``n`` objects put into moto's backend
    directly, with the SSE-S3 flag and CRC32 checksum a boto3 PUT of ours would leave.

    Twenty thousand PUTs over HTTP cost moto about as much CPU as the GETs being measured (minutes
    on two shared cores); this takes seconds. Objects read back exactly as if PUT over HTTP.
    """
    import base64
    import zlib

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.get_bucket(bucket)  # raises when the bucket lives elsewhere: the parent falls back
    day = date.fromisoformat(day_iso)
    started = time.perf_counter()
    events = size = 0
    for i in range(n):
        key, data, e = raw_object(day, i, total) if role == "raw" else landing_item(day, i, total)
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        fake = backend.put_object(bucket, key, data, encryption="AES256", checksum_value=crc,
                                  disable_notification=True)
        fake.checksum_algorithm = "CRC32"
        events, size = events + e, size + len(data)
    return {"objects": n, "events": events, "bytes": size, "seconds": time.perf_counter() - started,
            "how": "directly into the emulator's backend"}


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy one direction of a connection; with ``delay``, each chunk leaves ``delay`` s after it came.

    Chunks are queued with their due time and written by a second task, so a request sent in
    several writes (headers, then body) is delayed once, not once per write, and the order of the
    bytes is kept. EOF travels through the same queue, so nothing queued is lost at close.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            pause = due - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            if not data:
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            try:
                data = await reader.read(1 << 16)
            except (ConnectionError, OSError):
                data = b""
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        pass
    finally:
        sender.cancel()
        writer.close()  # the other direction then ends too: HTTP needs no half-open connections


async def _proxy_serve(target: tuple[str, int], delay: float, conn: Any) -> None:
    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection(*target)
        except OSError:
            c_writer.close()
            return
        # requests are delayed, answers are not: the whole round trip is charged to the request
        try:
            await asyncio.gather(_forward(c_reader, s_writer, delay), _forward(s_reader, c_writer, 0.0),
                                 return_exceptions=True)
        except asyncio.CancelledError:  # the proxy is stopping with this connection still open
            c_writer.close()
            s_writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
    conn.send(server.sockets[0].getsockname()[1])
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # until the parent says stop
    server.close()


def _proxy_main(conn: Any, host: str, port: int, latency_ms: float) -> None:
    """Child: an added-latency TCP proxy on 127.0.0.1 in front of ``host:port``; sends its port."""
    asyncio.run(_proxy_serve((host, port), latency_ms / 1000, conn))


@dataclass
class Child:
    """A server in a child process, started with spawn (the parent has threads and sockets)."""

    proc: Any
    conn: Any
    value: Any

    @classmethod
    def start(cls, target: Callable[..., None], *args: Any) -> Child:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        proc.start()
        if not parent.poll(60):
            proc.kill()
            raise RuntimeError(f"{target.__name__} did not start within 60 s")
        return cls(proc, parent, parent.recv())

    def call(self, *msg: Any) -> Any:
        self.conn.send(msg)
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(value)
        return value

    def cpu_seconds(self) -> float:
        import psutil

        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()  # only this child, which we started
            self.proc.join(5)


# ----------------------------------------------------------------------------------------------
# data: raw objects as landing writes them, and landing objects as collectors deliver them


@functools.cache
def _spec() -> Any:
    from pipelines.schema import load_spec

    return load_spec("clickstream", "events")


def _mix(x: int) -> int:
    """splitmix64: a cheap, well-spread 64-bit hash (deterministic data without a RNG)."""
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def events_in(i: int) -> int:
    """Events in raw object ``i``: 5 to 20, as a day of small collector flushes split by hour."""
    return 5 + _mix(i) % 16


def raw_object(day: date, i: int, total: int) -> tuple[str, bytes, int]:
    """(key, gzip bytes, events) of raw object ``i`` of ``total``: our normalized columns, one
    JSON object per line, gzip level 1 like landing's spill files, under ``layout.raw_key``."""
    import orjson

    from pipelines import layout

    hour = i * 24 // total
    d = day.isoformat()
    source = f"web/{d}/{hour:02d}/flush-{i:06d}.ndjson.gz"
    lines = []
    for n in range(events_in(i)):
        h = _mix(i * 64 + n)
        t = f"{d}T{hour:02d}:{(h >> 8) % 60:02d}:{(h >> 16) % 60:02d}.{h % 1000:03d}Z"
        path = f"/p/{h % 500}"
        lines.append(orjson.dumps({
            "event_id": f"e-{i:06d}-{n:02d}", "event_type": "track", "event_name": "Product Viewed",
            "category": None, "anonymous_id": f"anon-{h % 5000:05d}",
            "user_id": f"usr_{h % 900:05d}" if h & 1 else None,
            "event_time": t, "original_timestamp": t, "sent_at": t, "received_at": t,
            "channel": "client", "page_url": "https://shop.example" + path, "page_path": path,
            "page_referrer": "https://www.google.com/" if h & 2 else None, "page_title": "Product",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
            "ip": f"10.{(h >> 24) & 255}.{(h >> 32) & 255}.{(h >> 40) & 255}", "locale": "en-US",
            "library_name": "analytics.js", "library_version": "next-1.64.0",
            "properties": orjson.dumps({"sku": f"sku-{h % 300}", "price": (h % 10_000) / 100,
                                        "currency": "USD"}).decode(),
            "traits": None, "context": '{"timezone":"Europe/Berlin"}', "integrations": "{}",
            "source_object": source, "source_line": n + 1, "ingested_at": f"{d}T23:59:59Z",
        }, option=orjson.OPT_UTC_Z))
    digest = hashlib.blake2b(f"bench-{i}".encode(), digest_size=8).hexdigest()
    key = layout.raw_key(_spec(), day, hour, "web", digest)
    return key, gzip.compress(b"\n".join(lines) + b"\n", compresslevel=1, mtime=0), len(lines)


def landing_object(day: date, i: int, total: int, events: int = 10) -> bytes:
    """Landing object ``i`` of ``total``: ``events`` Segment-style track events (the shape of the
    tests' ``event()``) of one hour, as a collector's flush of a few seconds would hold; landing
    then writes one raw object for it (plus its ledger record)."""
    import orjson

    d = day.isoformat()
    hour = i * 24 // total
    lines = []
    for n in range(events):
        g = i * events + n
        lines.append(orjson.dumps({
            "messageId": f"m-{g:08d}", "type": "track", "event": "Product Viewed",
            "anonymousId": f"anon-{g % 7}", "timestamp": f"{d}T{hour:02d}:{g % 60:02d}:00.{g % 1000:03d}Z",
            "receivedAt": f"{d}T{hour:02d}:{g % 60:02d}:01.000Z",
            "sentAt": f"{d}T{hour:02d}:{g % 60:02d}:00.500Z",
            "properties": {"sku": f"sku-{g}", "price": g / 10},
            "context": {"page": {"url": f"https://shop.example/p/{g}", "path": f"/p/{g}"},
                        "library": {"name": "analytics.js", "version": "5.0.0"}},
            "integrations": {},
        }))
    return gzip.compress(b"\n".join(lines) + b"\n", mtime=0)


def landing_item(day: date, i: int, total: int) -> tuple[str, bytes, int]:
    """(key, bytes, events) of landing object ``i`` of ``total``."""
    return f"web/{day.isoformat()}/batch-{i:06d}.ndjson.gz", landing_object(day, i, total), 10


def populate(emu: Child, settings: Any, role: str, day: date, n: int) -> dict[str, Any]:
    """Setup (untimed): ``n`` objects of ``role`` (raw or landing) for ``day``.

    Straight into the emulator's backend when it can (seconds); otherwise PUT over HTTP from a
    thread pool (minutes for 20,000: moto spends milliseconds of CPU per request).
    """
    from pipelines.s3 import S3Storage

    storage = S3Storage(settings)
    storage.ensure_buckets()
    try:
        return emu.call("populate", role, settings.bucket(role), day.isoformat(), n, n)
    except RuntimeError as exc:
        _log(f"direct setup failed ({exc}); PUTting over HTTP instead")
    make = raw_object if role == "raw" else landing_item
    started = time.perf_counter()

    def one(i: int) -> tuple[int, int]:
        key, data, events = make(day, i, n)
        storage.put(role, key, data)
        return events, len(data)

    with ThreadPoolExecutor(settings.s3_concurrency) as pool:
        done = list(pool.map(one, range(n)))
    return {"objects": n, "events": sum(e for e, _ in done), "bytes": sum(b for _, b in done),
            "seconds": time.perf_counter() - started, "how": "over HTTP"}


# ----------------------------------------------------------------------------------------------
# measurement


class PeakRss(threading.Thread):
    """Polls this process's RSS every 10 ms; ``peak`` is the highest seen (the client's memory)."""

    def __init__(self, interval: float = 0.01):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _client_cpu() -> float:
    """CPU seconds of this process and of its children that have exited (landing's workers);
    the emulator and proxy children are still running, so they are not in it."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Result:
    """One timed run. With ``measured < objects`` the time is extrapolated from a sample."""

    name: str
    objects: int  # what the figure is for (the day)
    measured: int  # how many were actually done in the timed run
    measured_seconds: float
    client_cpu: float  # for ``measured``: CPU seconds of this process (+ landing's workers)
    server_cpu: float  # for ``measured``: CPU seconds of the emulator (+ proxy) processes
    rss_base_mib: float
    rss_peak_mib: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """For all ``objects``: linear in the objects, which holds for one-at-a-time runs."""
        return self.measured_seconds * self.objects / max(1, self.measured)

    @property
    def extrapolated(self) -> bool:
        return self.measured < self.objects


class Meter:
    """Wall time, client and server CPU, and this process's peak RSS over a ``with`` block."""

    def __init__(self, servers: list[Child]):
        self.servers = servers

    def __enter__(self) -> Meter:
        self.rss = PeakRss()
        self.server = sum(s.cpu_seconds() for s in self.servers)
        self.rss.start()
        self.cpu = _client_cpu()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu = _client_cpu() - self.cpu
        self.rss.stop()
        self.server = sum(s.cpu_seconds() for s in self.servers) - self.server

    def result(self, name: str, objects: int, measured: int, **extra: Any) -> Result:
        return Result(name, objects, measured, self.seconds, self.cpu, self.server,
                      self.rss.base / MiB, self.rss.peak / MiB, extra)


def timed(name: str, objects: int, measured: int, servers: list[Child],
          fn: Callable[[], dict[str, Any] | None]) -> Result:
    """Run ``fn`` once under a :class:`Meter`."""
    gc.collect()  # garbage of the setup or the previous run is not this run's memory
    with Meter(servers) as m:
        extra = fn() or {}
    return m.result(name, objects, measured, **extra)


def bare_fetcher(endpoint: str, bucket: str, keys: list[str], dest: Path) -> Callable[[], dict[str, Any]]:
    """The bare client: a plain boto3 client, ``get_object(...)["Body"].read()`` one key at a
    time, each body written to a file. The client is built here, outside the timing."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    dest.mkdir(parents=True, exist_ok=True)

    def run() -> dict[str, Any]:
        size = 0
        for n, key in enumerate(keys):
            data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            (dest / f"{n:07d}").write_bytes(data)
            size += len(data)
        return {"bytes": size}

    return run


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _numbers(text: str, kind: type) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def _load() -> str:
    """Load averages: on a shared machine they say how much the figures are worth."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# ----------------------------------------------------------------------------------------------
# one latency setting


def run_latency(args: argparse.Namespace, base: Any, emu: Child, keys: list[str], day: date,
                latency_ms: float, work: Path) -> tuple[list[Result], list[str]]:
    """Every measured run at one added latency; returns the results and the ratio lines."""
    from pipelines import layout
    from pipelines.compact import compact_day
    from pipelines.lake import Lake
    from pipelines.land import land_inbox
    from pipelines.s3 import S3Storage

    proxy = None
    servers = [emu]
    endpoint = base.s3_endpoint_url
    if latency_ms > 0:
        host, port = endpoint.removeprefix("http://").rsplit(":", 1)
        proxy = Child.start(_proxy_main, host, int(port), latency_ms)
        servers.append(proxy)
        endpoint = f"http://127.0.0.1:{proxy.value}"
    try:
        settings = base.with_(s3_endpoint_url=endpoint, glue_endpoint_url=endpoint)
        n = len(keys)
        sample = keys[: args.sample] if 0 < args.sample < n else keys
        results: list[Result] = []
        tag = f"L={latency_ms:g}ms"

        def fresh(name: str) -> Path:
            path = work / name
            shutil.rmtree(path, ignore_errors=True)
            return path

        # listing is sequential by nature: each page's continuation token comes from the last one
        _log(f"{tag}: list ...")
        lister = S3Storage(settings)
        prefix = layout.raw_day_prefix(_spec(), day)
        listing = timed("list (ours, pages of 1,000)", n, n, servers,
                        lambda: {"listed": sum(1 for _ in lister.list("raw", prefix))})
        if listing.extra["listed"] != n:
            raise RuntimeError(f"listed {listing.extra['listed']} raw objects, wrote {n}")
        results.append(listing)

        _log(f"{tag}: bare boto3, one GET at a time, {len(sample):,} keys ...")
        run = bare_fetcher(endpoint, settings.bucket("raw"), sample, fresh("bare"))
        bare = timed("bare boto3, one GET at a time", n, len(sample), servers, run)
        results.append(bare)
        shutil.rmtree(work / "bare", ignore_errors=True)

        ours: dict[int, Result] = {}
        c_main = args.concurrency[0]
        standalone = [1, *args.concurrency[0 if args.skip_compact else 1:]]
        for c in standalone:
            keys_c = sample if c == 1 else keys
            _log(f"{tag}: ours S3Storage.fetch, concurrency {c}, {len(keys_c):,} keys ...")
            storage = S3Storage(settings.with_(s3_concurrency=c))  # client built outside the timing
            dest = fresh(f"ours-{c}")
            ours[c] = timed(f"ours fetch, c={c}", n, len(keys_c), servers,
                            lambda s=storage, k=keys_c, d=dest: {"paths": len(s.fetch("raw", k, d))})
            results.append(ours[c])
            shutil.rmtree(dest, ignore_errors=True)

        compacted: Result | None = None
        failed: Result | None = None
        if not args.skip_compact:
            _log(f"{tag}: ours compact_day, concurrency {c_main} (its fetch metered apart) ...")
            clake = Lake.open(settings.with_(s3_concurrency=c_main))
            # a version compacted before would be reused (its id is a digest of the inputs):
            # remove the day's curated objects so that every latency compacts for real
            clake.storage.delete("curated", list(clake.storage.list_keys(
                "curated", layout.partition_prefix(clake.spec, day))))
            fetches: list[Meter] = []
            real_fetch = clake.storage.fetch

            def metered_fetch(*a: Any, **k: Any) -> Any:
                with Meter(servers) as m:
                    paths = real_fetch(*a, **k)
                fetches.append(m)
                return paths

            clake.storage.fetch = metered_fetch  # type: ignore[method-assign]  # this instance only

            def compact() -> dict[str, Any]:
                res = compact_day(clake, day)
                return {"rows": res.counts["rows"], "files_in": res.counts["files_in"],
                        "files_out": res.counts["files_out"], "reused": res.reused}

            name = f"ours compact_day, c={c_main}"
            try:
                compacted = timed(name, n, n, servers, compact)
            except Exception as exc:  # e.g. DuckDB out of memory: reported, not fatal to the rest
                _log(f"{tag}: compact_day failed: {type(exc).__name__}: {exc}")
                failed = Result(name, n, n, 0.0, 0.0, 0.0, 0.0, 0.0,
                                {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"})
            else:
                if compacted.extra["reused"]:
                    raise RuntimeError(f"compact_day reused a version: {compacted.extra}")
            if len(fetches) != 1:
                raise RuntimeError(f"compact_day fetched {len(fetches)} times, not once")
            ours[c_main] = fetches[0].result(f"ours fetch, c={c_main} (in compact_day)", n, n)
            results += [ours[c_main], compacted or failed]

        land: dict[str, Result] = {}
        if not args.skip_land:
            for kind in ("ours", "one"):
                m = args.land_objects
                if kind == "one" and 0 < args.land_sample < m:
                    m = args.land_sample
                lset = settings.with_(bucket_prefix=f"{args.bucket_prefix}-l{int(latency_ms)}-{kind}")
                # one at a time: one object, hence one request, in flight (no worker processes)
                lset = (lset.with_(s3_concurrency=1, land_workers=1) if kind == "one"
                        else lset.with_(s3_concurrency=c_main))
                _log(f"{tag}: land setup, {m:,} landing objects (untimed) ...")
                populate(emu, lset.with_(s3_endpoint_url=base.s3_endpoint_url), "landing", day, m)
                llake = Lake.open(lset)
                label = (f"ours land_inbox, c={c_main}, {lset.land_workers or os.cpu_count()} procs"
                         if kind == "ours" else "land_inbox one at a time (c=1, 1 proc)")
                _log(f"{tag}: {label}, {m:,} objects ...")

                def do_land(lk: Any = llake) -> dict[str, Any]:
                    rep = land_inbox(lk)
                    return {"files": len(rep.files), "landed": rep.total("landed"),
                            "quarantined": rep.total("quarantined")}

                land[kind] = timed(label, args.land_objects, m, servers, do_land)
                if land[kind].extra["files"] != m or land[kind].extra["quarantined"]:
                    raise RuntimeError(f"landing went wrong: {land[kind].extra}")
                results.append(land[kind])
        return results, summary_lines(tag, latency_ms, n, bare, ours, compacted, failed, land,
                                      proxy is not None)
    finally:
        if proxy is not None:
            proxy.stop()


def summary_lines(tag: str, latency_ms: float, n: int, bare: Result, ours: dict[int, Result],
                  compacted: Result | None, failed: Result | None, land: dict[str, Result],
                  proxied: bool) -> list[str]:
    """The ratios and what bounds each run, one line each."""
    lines = []
    for c, r in sorted(ours.items()):
        if c == 1:
            lines.append(f"{tag}  ours c=1 vs bare one-at-a-time: {bare.seconds / r.seconds:.2f} "
                         "(sanity check: about 1 means our code adds nothing per request)")
            continue
        lines.append(f"{tag}  ours fetch c={c} vs one-GET-at-a-time: x{bare.seconds / r.seconds:.1f} faster"
                     + (f"  (one-at-a-time extrapolated from {bare.measured:,} of {n:,} keys)"
                        if bare.extrapolated else ""))
        if latency_ms > 0:
            bound = n * latency_ms / 1000 / c
            lines.append(f"{tag}    latency bound N x L / c = {n:,} x {latency_ms:g} ms / {c} = {bound:.1f} s; "
                         f"ours took {r.seconds:.1f} s")
        lines.append(f"{tag}    CPU during it: client {r.client_cpu:.1f} s ({r.client_cpu / r.measured_seconds:.0%} "
                     f"of one core), emulator{'+proxy' if proxied else ''} {r.server_cpu:.1f} s "
                     f"({r.server_cpu / r.measured_seconds:.0%}); per GET {r.client_cpu / n * 1000:.2f} ms "
                     f"client + {r.server_cpu / n * 1000:.2f} ms server on 2 cores -> at most "
                     f"{2 / ((r.client_cpu + r.server_cpu) / n):,.0f} GET/s here")
        lines.append(f"{tag}    memory during it: +{r.rss_peak_mib - r.rss_base_mib:.0f} MiB peak RSS "
                     "(objects stream to files)")
    if compacted is None and failed is not None:
        lines.append(f"{tag}  compact_day FAILED after its fetch: {failed.extra['failed']}")
    if compacted is not None:
        fetch = next((r for r in ours.values() if r.name.endswith("(in compact_day)")), None)
        fs = fetch.measured_seconds if fetch else 0.0
        lines.append(f"{tag}  compact_day: {compacted.seconds:.1f} s end to end, of which fetch {fs:.1f} s "
                     f"({fs / compacted.seconds:.0%}); {compacted.extra['rows']:,} rows from "
                     f"{compacted.extra['files_in']:,} objects into {compacted.extra['files_out']} Parquet file(s); "
                     f"peak RSS +{compacted.rss_peak_mib - compacted.rss_base_mib:.0f} MiB (DuckDB)")
    if len(land) == 2:
        o, one = land["ours"], land["one"]
        lines.append(f"{tag}  land_inbox ours vs one at a time: x{one.seconds / o.seconds:.1f} faster"
                     + (f"  (one at a time extrapolated from {one.measured:,} of {one.objects:,} objects)"
                        if one.extrapolated else ""))
    return lines


def print_table(args: argparse.Namespace, setup: dict[str, Any],
                runs: list[tuple[float, list[Result], list[str]]], load_before: str) -> None:
    print(f"\nclickstream-lake S3 small-objects benchmark  ({os.cpu_count()} cpus, python "
          f"{platform.python_version()}, engine {_engine_revision()}, load average before "
          f"{load_before}, after {_load()})")
    print(f"day {args.day}: {setup['objects']:,} raw objects, {setup['events']:,} events, "
          f"{setup['bytes'] / MiB:.1f} MiB gzip (avg {setup['bytes'] / setup['objects'] / 1024:.1f} KiB), "
          f"written {setup['how']} in {setup['seconds']:.1f} s (untimed); emulator: moto in a child process; "
          f"DuckDB memory_limit {args.memory_limit or 'default (1GB)'}")
    head = (f"{'latency':>7}  {'run':<40}{'seconds':>9} {'obj/s':>8}{'client CPU':>12}"
            f"{'server CPU':>12}{'RSS MiB':>9}{'+peak':>7}")
    print()
    print(head)
    print("-" * len(head))
    for latency, results, _ in runs:
        for r in results:
            if r.extra.get("failed"):
                print(f"{latency:>5g}ms  {r.name:<40}  FAILED, see below")
                continue
            print(f"{latency:>5g}ms  {r.name:<40}{r.seconds:>8.1f}{'*' if r.extrapolated else ' '}"
                  f"{r.objects / r.seconds:>8,.0f}{r.client_cpu:>12.1f}{r.server_cpu:>12.1f}"
                  f"{r.rss_base_mib:>9.0f}{r.rss_peak_mib - r.rss_base_mib:>7.0f}")
    marked = [(latency, r) for latency, results, _ in runs for r in results if r.extrapolated]
    if marked:
        print("\n* extrapolated linearly to the whole day from a timed run over the first keys:")
        for latency, r in marked:
            print(f"  {latency:g} ms  {r.name}: {r.measured:,} of {r.objects:,} in {r.measured_seconds:.1f} s")
    print("\nCPU columns are for the objects actually timed (client: this process and landing's "
          "workers; server: the emulator\nand proxy processes). RSS MiB: this process before the "
          "run; +peak: its highest RSS during the run above that.")
    print()
    for _, _, lines in runs:
        for line in lines:
            print(line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=20_000, help="raw objects of the day")
    ap.add_argument("--concurrency", default="32",
                    help="GETs in flight for ours (LAKE_S3_CONCURRENCY); a list like 8,32 runs each "
                         "(compact_day and land use the first)")
    ap.add_argument("--latency-ms", default="0",
                    help="added request latency through the proxy; a list like 0,20 runs each")
    ap.add_argument("--sample", type=int, default=2_000,
                    help="one-at-a-time GET runs time the first N keys and extrapolate (0: all)")
    ap.add_argument("--memory-limit", default=None,
                    help="LAKE_DUCKDB_MEMORY_LIMIT for compact_day (default: the lake's, 1GB)")
    ap.add_argument("--skip-compact", action="store_true", help="leave out compact_day")
    ap.add_argument("--skip-land", action="store_true", help="leave out the land_inbox runs")
    ap.add_argument("--land-objects", type=int, default=2_000, help="landing objects for land_inbox")
    ap.add_argument("--land-sample", type=int, default=300,
                    help="landing one at a time does the first N and extrapolates (0: all)")
    ap.add_argument("--day", default=DEFAULT_DAY, help="the UTC day (YYYY-MM-DD)")
    ap.add_argument("--bucket-prefix", default="bench-small", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.concurrency = [c for c in _numbers(args.concurrency, int) if c > 1] or [32]
    latencies = _numbers(args.latency_ms, float)
    if args.objects < 1 or not latencies or any(v < 0 for v in latencies):
        ap.error("need --objects >= 1 and latencies >= 0")

    from pipelines import layout
    from pipelines.config import LakeSettings
    from pipelines.s3 import S3Storage

    day = date.fromisoformat(args.day)
    load_before = _load()
    work = Path(tempfile.mkdtemp(prefix="lake-bench-s3-"))
    _log("starting the emulator in a child process ...")
    emu = Child.start(_emulator_main)
    try:
        os.environ.update(emu.value)  # the dummy credentials, for every client of this process
        for k in ("AWS_PROFILE", "LAKE_AWS_PROFILE"):
            os.environ.pop(k, None)
        url = emu.value["LAKE_S3_ENDPOINT_URL"]
        # catalog=local: compaction does not touch the catalog, and Glue is not what is measured
        base = LakeSettings(backend="s3", root=str(work / "lake"), bucket_prefix=args.bucket_prefix,
                            s3_endpoint_url=url, glue_endpoint_url=url, catalog="local",
                            s3_concurrency=args.concurrency[0])
        if args.memory_limit:
            base = base.with_(duckdb_memory_limit=args.memory_limit)
        base.validate()
        _log(f"writing {args.objects:,} raw objects of {day} (untimed) ...")
        setup = populate(emu, base, "raw", day, args.objects)
        _log(f"wrote {setup['objects']:,} objects, {setup['events']:,} events, "
             f"{setup['bytes'] / MiB:.1f} MiB {setup['how']} in {setup['seconds']:.1f} s")
        keys = list(S3Storage(base).list_keys("raw", layout.raw_day_prefix(_spec(), day)))
        runs = []
        for latency in latencies:
            results, lines = run_latency(args, base, emu, keys, day, latency, work)
            runs.append((latency, results, lines))
        print_table(args, setup, runs, load_before)
        return 0
    finally:
        emu.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
