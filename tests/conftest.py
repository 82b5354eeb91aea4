"""Shared fixtures: temporary lakes on the embedded backend."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from pipelines.config import LakeSettings
from pipelines.lake import Lake


@pytest.fixture
def settings(tmp_path: Path) -> LakeSettings:
    return LakeSettings(root=str(tmp_path / "lake"), duckdb_memory_limit="512MB")


@pytest.fixture
def lake(settings: LakeSettings) -> Lake:
    return Lake.open(settings)


def event(n: int, *, day: str = "2026-11-01", hour: int = 10, **extra) -> dict:
    """A valid Segment-style track event with a distinct id."""
    base = {
        "messageId": f"m-{n:06d}",
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": f"anon-{n % 7}",
        "timestamp": f"{day}T{hour:02d}:{n % 60:02d}:00.{n % 1000:03d}Z",
        "receivedAt": f"{day}T{hour:02d}:{n % 60:02d}:01.000Z",
        "sentAt": f"{day}T{hour:02d}:{n % 60:02d}:00.500Z",
        "properties": {"sku": f"sku-{n}", "price": n / 10},
        "context": {"page": {"url": f"https://shop.example/p/{n}", "path": f"/p/{n}"},
                    "library": {"name": "analytics.js", "version": "5.0.0"}},
        "integrations": {},
    }
    base.update(extra)
    return base


def ndjson(events: list, *, gz: bool = True) -> bytes:
    data = b"".join((e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n" for e in events)
    return gzip.compress(data, mtime=0) if gz else data
