"""A capture server for the real Segment and RudderStack Python SDKs.

Both SDKs (``segment.analytics`` and ``rudderstack.analytics``) POST ``{"batch": [...], "sentAt":
...}`` to ``<host>/v1/batch`` with HTTP Basic auth (the write key as user, empty password).
RudderStack gzips the body by default, Segment only with ``gzip=True``; Segment also puts
``writeKey`` into the envelope. :class:`CaptureServer` listens on 127.0.0.1 and does what the
vendor's API plus its S3 destination do to an event before it reaches our landing bucket:

* decompress the body when it is gzip (by header or by magic bytes);
* stamp every event with ``receivedAt`` (server time, ISO 8601, milliseconds, ``Z``);
* copy the envelope's ``sentAt`` onto each event that has none;
* keep the events, in arrival order, ready to be written out as NDJSON.

Envelope-only fields (``writeKey``) are not copied onto events, as the vendors' destinations
do not write them either.

Usage::

    with CaptureServer() as server:
        client = segment.analytics.Client("key", host=server.url, sync_mode=True)
        client.track(user_id="u1", event="Signed Up")
        server.wait_for(1, timeout=10)
        data = server.as_ndjson()
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

BATCH_PATH = "/v1/batch"
#: refuse bodies larger than this (the SDKs cap a batch at 500 KB / 4 MiB)
MAX_BODY_BYTES = 32 << 20
_GZIP_MAGIC = b"\x1f\x8b"


def server_time() -> str:
    """Now, the way the vendors write ``receivedAt``: ``2026-11-01T08:15:30.250Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class CapturedRequest:
    """One POST as it arrived (for assertions about transport, not payload)."""

    path: str
    headers: dict[str, str]
    gzipped: bool
    write_key: str | None
    envelope: dict[str, Any]
    status: int
    events: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # a client that stops sending mid-request must not pin a thread forever
    timeout = 10
    error_content_type = "application/json"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        capture = self.server.capture
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self._reply(413, {"code": "too_large", "message": "bad or too large Content-Length"})
            return
        body = self.rfile.read(length)
        gzipped = headers.get("content-encoding", "").lower() == "gzip" or body[:2] == _GZIP_MAGIC
        if path != BATCH_PATH:
            capture._record(CapturedRequest(path, headers, gzipped, None, {}, 404))
            self._reply(404, {"code": "not_found", "message": f"no route {path}"})
            return
        try:
            if gzipped:
                body = gzip.decompress(body)
            envelope = json.loads(body)
            if not isinstance(envelope, dict) or not isinstance(envelope.get("batch"), list):
                raise ValueError("body is not a {'batch': [...]} envelope")
            if not all(isinstance(e, dict) for e in envelope["batch"]):
                raise ValueError("batch items must be objects")
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            capture._record(CapturedRequest(path, headers, gzipped, None, {}, 400))
            self._reply(400, {"code": "invalid_request", "message": str(exc)})
            return

        received_at = server_time()
        sent_at = envelope.get("sentAt")
        events = []
        for raw in envelope["batch"]:
            event = dict(raw)
            event["receivedAt"] = received_at
            if event.get("sentAt") is None and sent_at is not None:
                event["sentAt"] = sent_at
            events.append(event)
        meta = {k: v for k, v in envelope.items() if k != "batch"}
        write_key = _basic_user(headers.get("authorization")) or envelope.get("writeKey")
        capture._record(CapturedRequest(path, headers, gzipped, write_key, meta, 200, events))
        self._reply(200, {"success": True})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _basic_user(header: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header.split(None, 1)[1], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, capture: CaptureServer):
        self.capture = capture
        super().__init__(("127.0.0.1", 0), _Handler)


class CaptureServer:
    """Threaded HTTP server on 127.0.0.1 (ephemeral port) that records SDK batches.

    ``url`` is the base to hand to an SDK as ``host``; ``events`` the recorded events (copies,
    in arrival order); ``requests`` every POST seen, including refused ones.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._requests: list[CapturedRequest] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> CaptureServer:
        if self._httpd is not None:
            return self
        self._httpd = _Server(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sdk-capture-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # what was captured -----------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("CaptureServer is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return [dict(e) for e in self._events]

    @property
    def requests(self) -> list[CapturedRequest]:
        with self._cond:
            return list(self._requests)

    def _record(self, request: CapturedRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._events.extend(request.events)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` events arrived; return them. Raises ``TimeoutError``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._events) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"captured {len(self._events)} of {n} events within {timeout}s "
                        f"({len(self._requests)} requests)"
                    )
                self._cond.wait(remaining)
            return [dict(e) for e in self._events]

    def as_ndjson(self) -> bytes:
        """The captured events, one JSON object per line (as an S3 destination writes them)."""
        return b"".join(orjson.dumps(e) + b"\n" for e in self.events)

    def clear(self) -> None:
        with self._cond:
            self._events.clear()
            self._requests.clear()
