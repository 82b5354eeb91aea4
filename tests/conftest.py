"""Shared fixtures: temporary lakes on both backends.

``settings`` and ``lake`` are parametrized: every test that uses them runs on the embedded
backend (a folder and SQLite) and on S3 + Glue served by a moto server on 127.0.0.1, reached
over real HTTP by botocore, s3fs and pyarrow. ``local_settings`` / ``local_lake`` are for the
tests that are about the embedded backend itself.
"""

from __future__ import annotations

import gzip
import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipelines.config import LakeSettings
from pipelines.lake import Lake

#: credentials for the emulator only; set before any client is built
EMULATOR_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_names = itertools.count()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server (S3, Glue, ...) on 127.0.0.1, one per test session; yields its URL."""
    from pipelines.emulator import moto_server, patched_environ

    with patched_environ(EMULATOR_ENV, remove=("AWS_PROFILE",)), moto_server() as url:
        yield url


def s3_settings_for(endpoint: str, root: Path, **changes) -> LakeSettings:
    """Settings for a fresh lake on the emulator: its own buckets and Glue database."""
    tag = f"{uuid.uuid4().hex[:8]}{next(_names)}"
    settings = LakeSettings(
        backend="s3", root=str(root), bucket_prefix=f"t-{tag}", glue_database=f"t_{tag}",
        s3_endpoint_url=endpoint, glue_endpoint_url=endpoint, sqs_endpoint_url=endpoint, duckdb_memory_limit="512MB",
        retire_grace_seconds=6 * 3600, **changes)
    settings.validate()
    from pipelines.s3 import S3Storage

    S3Storage(settings).ensure_buckets()
    return settings


def settings_on(backend: str, root: Path, request) -> LakeSettings:
    """Settings of a fresh lake at ``root`` on ``backend``, for module-scoped fixtures (the
    function-scoped ``settings`` fixture also exports them to the environment)."""
    if backend == "local":
        return LakeSettings(root=str(root), duckdb_memory_limit="512MB")
    return s3_settings_for(request.getfixturevalue("moto_endpoint"), root)


@pytest.fixture
def local_settings(tmp_path: Path) -> LakeSettings:
    return LakeSettings(root=str(tmp_path / "lake"), duckdb_memory_limit="512MB")


@pytest.fixture
def local_lake(local_settings: LakeSettings) -> Lake:
    return Lake.open(local_settings)


@pytest.fixture(params=["local", "s3"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def settings(backend: str, tmp_path: Path, request, monkeypatch) -> LakeSettings:
    settings = settings_on(backend, tmp_path / "lake", request)
    if backend == "local":
        return settings
    # Dagster runs and child processes resolve their settings from LAKE_* variables, as a
    # deployment does: point them at this test's buckets and database
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    return settings


@pytest.fixture
def lake(settings: LakeSettings) -> Lake:
    return Lake.open(settings)


def arrow_file(lake: Lake, uri: str):
    """Open a stored object by its ``uri()`` with pyarrow's own filesystems (its S3 client on S3),
    so tests read what was uploaded through a client the pipeline does not use for it."""
    from pyarrow import fs as pafs

    if not uri.startswith("s3://"):
        return pafs.LocalFileSystem().open_input_file(uri)
    creds = {k: os.environ[k] for k in EMULATOR_ENV}
    endpoint = lake.settings.s3_endpoint_url or ""
    s3 = pafs.S3FileSystem(
        access_key=creds["AWS_ACCESS_KEY_ID"], secret_key=creds["AWS_SECRET_ACCESS_KEY"],
        session_token=creds["AWS_SESSION_TOKEN"], region=lake.settings.aws_region,
        endpoint_override=endpoint.split("://", 1)[-1], scheme=endpoint.split("://", 1)[0] or "https")
    return s3.open_input_file(uri.removeprefix("s3://"))


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
