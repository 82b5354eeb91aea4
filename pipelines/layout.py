"""Where every object lives: key builders for each bucket role, with validated inputs.

Values that come from events (a date, an hour) or from users (a table name) are checked here
before they become part of a key.
"""

from __future__ import annotations

import hashlib
import re
import reprlib
from datetime import date, datetime

from pipelines.schema import TableSpec, check_ident

_SOURCE = re.compile(r"[^a-z0-9]+")
# fullmatch everywhere: "$" also matches before a trailing newline; [0-9], not \d (any digit)
_VERSION = re.compile(r"v-[0-9a-f]{16}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
#: what source_name() and object_digest() produce; raw and quarantine names are built from them
_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_DIGEST = re.compile(r"[0-9a-f]{16}")


def parse_dt(value: str | date) -> date:
    """A partition date from ``YYYY-MM-DD`` (or a date), with a clear error otherwise."""
    if isinstance(value, datetime):  # a datetime is a date too; its key part is the day alone
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError(f"invalid date {reprlib.repr(value)}: expected YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"invalid date {value!r}: no such day") from None


def check_version(version: str) -> str:
    """Return ``version`` if it is a version id (``v-`` and 16 hex digits); raise ``ValueError``."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(f"invalid version id {reprlib.repr(version)}: expected v- and 16 hex digits")
    return version


def _check(kind: str, value: str, pattern: re.Pattern) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid {kind} {reprlib.repr(value)} for an object name")
    return value


def _check_hour(hour: int) -> int:
    if not isinstance(hour, int) or isinstance(hour, bool) or not 0 <= hour <= 23:
        raise ValueError(f"invalid hour {reprlib.repr(hour)}: expected an integer 0-23")
    return hour


def table_prefix(spec: TableSpec) -> str:
    """``<namespace>/<table>``: the names are checked again, a spec can be built by hand."""
    return f"{check_ident('namespace', spec.namespace)}/{check_ident('table', spec.table)}"


def raw_day_prefix(spec: TableSpec, dt: str | date) -> str:
    return f"{table_prefix(spec)}/dt={parse_dt(dt).isoformat()}/"


def raw_key(spec: TableSpec, dt: date, hour: int, source: str, digest: str) -> str:
    """``<table>/dt=<day>/hour=<HH>/<source>-<digest>.ndjson.gz``, every part validated."""
    return (f"{table_prefix(spec)}/dt={parse_dt(dt).isoformat()}/hour={_check_hour(hour):02d}/"
            f"{_check('source name', source, _SOURCE_NAME)}-{_check('digest', digest, _DIGEST)}.ndjson.gz")


def ledger_prefix(spec: TableSpec) -> str:
    return f"_ledger/{table_prefix(spec)}/"


def ledger_key(spec: TableSpec, digest: str) -> str:
    """The ledger record of one landing object version at the flat path lakes before the per-key
    index used (``_ledger/<table>/<digest>.json``): still read, no longer written."""
    return f"{ledger_prefix(spec)}{_check('digest', digest, _DIGEST)}.json"


def landing_key_hash(landing_key: str) -> str:
    """A short, key-safe name for one landing key (any versions of it share it)."""
    return hashlib.blake2b(landing_key.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def ledger_key_prefix(spec: TableSpec, landing_key: str) -> str:
    """``_ledger/<table>/key=<hash of the landing key>/``: every ledger record of that key.

    The per-key index: listing it finds every version (ETag) of one landing key without reading
    the whole ledger, and the hash spreads the records over S3 prefixes."""
    return f"{ledger_prefix(spec)}key={landing_key_hash(landing_key)}/"


def ledger_record_key(spec: TableSpec, landing_key: str, digest: str) -> str:
    """Where landing writes the ledger record of one landing object version (key + ETag)."""
    return f"{ledger_key_prefix(spec, landing_key)}{_check('digest', digest, _DIGEST)}.json"


def ledger_digest(record_key: str) -> str | None:
    """The object digest a ledger record's key names (either layout), or None for another key."""
    name = record_key.rsplit("/", 1)[-1].removesuffix(".json")
    return name if _DIGEST.fullmatch(name) and record_key.endswith(".json") else None


def partition_prefix(spec: TableSpec, dt: str | date) -> str:
    return f"{table_prefix(spec)}/{spec.partition_key}={parse_dt(dt).isoformat()}/"


def version_prefix(spec: TableSpec, dt: str | date, version: str) -> str:
    return f"{partition_prefix(spec, dt)}{check_version(version)}/"


def manifest_key(spec: TableSpec, dt: str | date, version: str) -> str:
    return f"{version_prefix(spec, dt, version)}_manifest.json"


def audit_key(spec: TableSpec, dt: str | date, version: str) -> str:
    return f"{version_prefix(spec, dt, version)}_audit.json"


def part_key(spec: TableSpec, dt: str | date, version: str, n: int) -> str:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"invalid part number {reprlib.repr(n)}")
    return f"{version_prefix(spec, dt, version)}part-{n:05d}.parquet"


def _quarantine_name(arrival: date, source: str, digest: str) -> str:
    return (f"arrival={parse_dt(arrival).isoformat()}/"
            f"{_check('source name', source, _SOURCE_NAME)}-{_check('digest', digest, _DIGEST)}")


def quarantine_lines_key(spec: TableSpec, arrival: date, source: str, digest: str) -> str:
    return f"{table_prefix(spec)}/lines/{_quarantine_name(arrival, source, digest)}.ndjson"


def quarantine_file_key(spec: TableSpec, arrival: date, source: str, digest: str) -> str:
    return f"{table_prefix(spec)}/files/{_quarantine_name(arrival, source, digest)}.bin"


def source_name(landing_key: str) -> str:
    """A short, key-safe name for where an object came from (its first path segment)."""
    first = landing_key.split("/", 1)[0] if "/" in landing_key else landing_key.rsplit(".", 1)[0]
    name = _SOURCE.sub("-", first.lower()).strip("-")[:32]
    return name or "src"


def object_digest(key: str, etag: str) -> str:
    """Identity of one landing object version: the same key and ETag give the same digest."""
    return hashlib.blake2b(f"{key}\n{etag}".encode(), digest_size=8).hexdigest()
