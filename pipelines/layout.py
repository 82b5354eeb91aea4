"""Where every object lives: key builders for each bucket role, with validated inputs.

Values that come from events (a date, an hour) or from users (a table name) are checked here
before they become part of a key.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime

from pipelines.schema import TableSpec

_SOURCE = re.compile(r"[^a-z0-9]+")
_VERSION = re.compile(r"^v-[0-9a-f]{16}$")


def parse_dt(value: str | date) -> date:
    """A partition date from ``YYYY-MM-DD`` (or a date), with a clear error otherwise."""
    if isinstance(value, datetime):  # a datetime is a date too; its key part is the day alone
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"invalid date {value!r}: expected YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid date {value!r}: no such day") from None


def check_version(version: str) -> str:
    if not _VERSION.match(version or ""):
        raise ValueError(f"invalid version id {version!r}")
    return version


def table_prefix(spec: TableSpec) -> str:
    return f"{spec.namespace}/{spec.table}"


def raw_day_prefix(spec: TableSpec, dt: str | date) -> str:
    return f"{table_prefix(spec)}/dt={parse_dt(dt).isoformat()}/"


def raw_key(spec: TableSpec, dt: date, hour: int, source: str, digest: str) -> str:
    if not 0 <= hour <= 23:
        raise ValueError(f"invalid hour {hour}")
    return f"{table_prefix(spec)}/dt={dt.isoformat()}/hour={hour:02d}/{source}-{digest}.ndjson.gz"


def ledger_prefix(spec: TableSpec) -> str:
    return f"_ledger/{table_prefix(spec)}/"


def ledger_key(spec: TableSpec, digest: str) -> str:
    return f"{ledger_prefix(spec)}{digest}.json"


def partition_prefix(spec: TableSpec, dt: str | date) -> str:
    return f"{table_prefix(spec)}/{spec.partition_key}={parse_dt(dt).isoformat()}/"


def version_prefix(spec: TableSpec, dt: str | date, version: str) -> str:
    return f"{partition_prefix(spec, dt)}{check_version(version)}/"


def manifest_key(spec: TableSpec, dt: str | date, version: str) -> str:
    return f"{version_prefix(spec, dt, version)}_manifest.json"


def audit_key(spec: TableSpec, dt: str | date, version: str) -> str:
    return f"{version_prefix(spec, dt, version)}_audit.json"


def part_key(spec: TableSpec, dt: str | date, version: str, n: int) -> str:
    return f"{version_prefix(spec, dt, version)}part-{n:05d}.parquet"


def quarantine_lines_key(spec: TableSpec, arrival: date, source: str, digest: str) -> str:
    return f"{table_prefix(spec)}/lines/arrival={arrival.isoformat()}/{source}-{digest}.ndjson"


def quarantine_file_key(spec: TableSpec, arrival: date, source: str, digest: str) -> str:
    return f"{table_prefix(spec)}/files/arrival={arrival.isoformat()}/{source}-{digest}.bin"


def source_name(landing_key: str) -> str:
    """A short, key-safe name for where an object came from (its first path segment)."""
    first = landing_key.split("/", 1)[0] if "/" in landing_key else landing_key.rsplit(".", 1)[0]
    name = _SOURCE.sub("-", first.lower()).strip("-")[:32]
    return name or "src"


def object_digest(key: str, etag: str) -> str:
    """Identity of one landing object version: the same key and ETag give the same digest."""
    return hashlib.blake2b(f"{key}\n{etag}".encode(), digest_size=8).hexdigest()
