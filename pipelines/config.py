"""Lake settings, resolved from environment variables when a run starts.

Every variable has the prefix ``LAKE_``. Nothing here is read at import time: call
:meth:`LakeSettings.from_env` at the start of a command or a Dagster run.
"""

from __future__ import annotations

import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError

ENV_PREFIX = "LAKE_"
ROLES = ("landing", "raw", "curated", "quarantine")

MiB = 1 << 20
# the longest role suffix is "-quarantine" (11); bucket names stop at 63 characters
_BUCKET_PREFIX = re.compile(r"[a-z0-9][a-z0-9-]{1,38}[a-z0-9]")
_GLUE_NAME = re.compile(r"[a-z0-9_]{1,255}")
# S3 refuses bucket names starting with these (AWS "General purpose bucket naming rules")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")


@dataclass(frozen=True)
class LakeSettings:
    """Where the lake lives and how its stages behave.

    The embedded default (``backend="local"``) keeps one folder per bucket role under ``root``
    and the catalog in ``root/_catalog``. Field names map to ``LAKE_<FIELD>`` variables.
    """

    backend: str = "local"
    root: str = "lake"
    bucket_prefix: str = "clickstream-lake"
    table: str = "events"
    #: largest accepted landing line. Segment's SDKs cap an event at 32 KiB, RudderStack's at
    #: 4 MiB; server-side enrichment adds a few hundred bytes, so 5 MiB admits every real event.
    max_line_bytes: int = 5 * MiB
    target_file_bytes: int = 256 * MiB
    row_group_rows: int = 122_880
    #: processes that land files in parallel; 0 means one per core
    land_workers: int = 0
    duckdb_memory_limit: str = "1GB"
    duckdb_threads: int = 2
    #: how long a superseded version stays readable for queries already planned against it
    retire_grace_seconds: int = 6 * 3600
    #: how late an event may arrive and still be expected; a day closes after this
    lateness_seconds: int = 2 * 3600
    #: events whose time is further than this beyond their arrival are quarantined
    future_tolerance_seconds: int = 24 * 3600
    # S3 / Glue (used by the s3 backend)
    #: where the catalog lives: ``local`` (SQLite under ``root``) or ``glue``; empty means
    #: ``glue`` on the s3 backend and ``local`` on the local one (MinIO users pick ``local``)
    catalog: str = ""
    #: an S3-compatible endpoint (MinIO, LocalStack, the emulator); empty means AWS itself
    s3_endpoint_url: str | None = None
    #: a Glue endpoint; empty means AWS itself (the emulator serves S3 and Glue on one URL)
    glue_endpoint_url: str | None = None
    #: an SQS endpoint for the ``queue`` landing trigger; empty means AWS itself
    sqs_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    aws_profile: str | None = None
    glue_database: str = "clickstream"
    #: botocore retry attempts (``standard`` mode: exponential backoff with jitter, throttling
    #: and 5xx retried); the first try counts
    aws_max_attempts: int = 8
    #: S3 requests in flight at once when listing and reading many small objects
    s3_concurrency: int = 32
    #: server-side encryption of every PUT: ``AES256`` (SSE-S3) or ``aws:kms`` (SSE-KMS)
    s3_sse: str = "AES256"
    #: the KMS key for ``aws:kms``; empty means the account's ``aws/s3`` key
    s3_kms_key_id: str | None = None
    #: uploads above this size go multipart (parts of this size, ``s3_concurrency`` at once)
    s3_multipart_bytes: int = 64 * MiB
    # tiering (see pipelines/tier.py): curated partitions move by their own date
    #: ``AGE:CLASS`` pairs, comma separated: a partition that many days old belongs in CLASS
    tier_transitions: str = "30:STANDARD_IA,90:GLACIER_IR"
    #: raw objects expire this many days after landing, once their day is compacted
    raw_expire_days: int = 7
    quarantine_expire_days: int = 30
    #: landing objects expire this many days after landing, once recorded in the ledger (tagged
    #: ``lake-state=landed``); 0 keeps them forever
    landing_expire_days: int = 30
    #: superseded object versions (versioned buckets) are removed this many days later
    noncurrent_expire_days: int = 30
    abort_multipart_days: int = 1
    #: how long a restored archived partition stays readable (and published)
    restore_days: int = 7
    #: a JSON file of USD per GiB-month by storage class, over the built-in list prices
    prices_file: str | None = None
    # operating from Dagster (see assets/)
    #: what starts landing runs: ``listing`` (list the landing bucket) or ``queue`` (S3 event
    #: notifications read from the SQS queue ``landing_queue_url``)
    landing_trigger: str = "listing"
    #: the SQS queue S3 sends the landing bucket's ObjectCreated events to (``lake init --notifications``)
    landing_queue_url: str | None = None
    #: hour (UTC) by which yesterday must be published, or the freshness check fails
    publish_deadline_hour: int = 6
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> LakeSettings:
        """Build settings from ``LAKE_*`` variables (``env`` defaults to ``os.environ``).

        Keyword ``overrides`` that are not ``None`` win over the environment.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, f.type, raw)
        for key, value in overrides.items():
            if value is not None:
                values[key] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        """The ``LAKE_*`` variables that reproduce these settings (fields left at their default
        are omitted), e.g. for a process or a Dagster run started from here."""
        default = LakeSettings()
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)
                if f.name != "extra" and getattr(self, f.name) != getattr(default, f.name)
                and getattr(self, f.name) is not None}

    @property
    def io_threads(self) -> int:
        """How many small object requests to run side by side: ``s3_concurrency`` on S3, where
        each is a round trip; one on the local folder, where threads only add overhead."""
        return self.s3_concurrency if self.backend == "s3" else 1

    def with_(self, **changes: Any) -> LakeSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def validate(self) -> None:
        """Refuse settings that cannot work, with a message saying which variable to fix."""
        if self.landing_trigger not in ("listing", "queue"):
            raise ConfigError(f"LAKE_LANDING_TRIGGER must be 'listing' or 'queue', not {reprlib.repr(self.landing_trigger)}")
        if self.landing_trigger == "queue" and self.backend != "s3":
            raise ConfigError("LAKE_LANDING_TRIGGER=queue needs LAKE_BACKEND=s3: S3 event notifications come from "
                              "an S3 bucket; the embedded backend uses LAKE_LANDING_TRIGGER=listing")
        if self.landing_trigger == "queue" and not self.landing_queue_url:
            raise ConfigError("LAKE_LANDING_TRIGGER=queue needs LAKE_LANDING_QUEUE_URL (see `lake init --notifications`)")
        if not 0 <= self.publish_deadline_hour <= 23:
            raise ConfigError("LAKE_PUBLISH_DEADLINE_HOUR must be an hour of the day, 0-23 (UTC)")
        if self.backend not in ("local", "s3"):
            raise ConfigError(f"LAKE_BACKEND must be 'local' or 's3', not {self.backend!r}")
        if self.max_line_bytes < 64 * 1024:
            raise ConfigError("LAKE_MAX_LINE_BYTES must admit at least 64 KiB (SDK events reach 32 KiB)")
        if self.target_file_bytes < MiB:
            raise ConfigError("LAKE_TARGET_FILE_BYTES must be at least 1 MiB")
        if self.land_workers < 0:
            raise ConfigError("LAKE_LAND_WORKERS must be 0 (one per core) or more")
        if self.duckdb_threads < 1:
            raise ConfigError("LAKE_DUCKDB_THREADS must be at least 1")
        if self.catalog not in ("", "local", "glue"):
            raise ConfigError(f"LAKE_CATALOG must be 'local' or 'glue', not {self.catalog!r}")
        if self.catalog_kind == "glue" and self.backend != "s3":
            raise ConfigError("LAKE_CATALOG=glue needs LAKE_BACKEND=s3: Glue locations are s3:// URIs")
        if self.s3_sse not in ("AES256", "aws:kms"):
            raise ConfigError(f"LAKE_S3_SSE must be 'AES256' (SSE-S3) or 'aws:kms' (SSE-KMS), not {self.s3_sse!r}")
        if self.s3_kms_key_id and self.s3_sse != "aws:kms":
            raise ConfigError("LAKE_S3_KMS_KEY_ID is set but LAKE_S3_SSE is not 'aws:kms'")
        if not 1 <= self.aws_max_attempts <= 50:
            raise ConfigError("LAKE_AWS_MAX_ATTEMPTS must be between 1 and 50")
        if not 1 <= self.s3_concurrency <= 512:
            raise ConfigError("LAKE_S3_CONCURRENCY must be between 1 and 512")
        if self.s3_multipart_bytes < 5 * MiB:
            raise ConfigError("LAKE_S3_MULTIPART_BYTES must be at least 5 MiB (the S3 minimum part size)")
        if (not isinstance(self.bucket_prefix, str) or not _BUCKET_PREFIX.fullmatch(self.bucket_prefix)
                or self.bucket_prefix.startswith(_RESERVED_BUCKET_PREFIXES)):
            raise ConfigError(
                f"LAKE_BUCKET_PREFIX {reprlib.repr(self.bucket_prefix)} cannot name S3 buckets: use 3-40 "
                "lowercase letters, digits and hyphens, starting and ending with a letter or digit "
                f"(and not starting with {', '.join(_RESERVED_BUCKET_PREFIXES)})")
        for name in ("raw_expire_days", "quarantine_expire_days", "noncurrent_expire_days",
                     "abort_multipart_days", "restore_days"):
            if getattr(self, name) < 1:
                raise ConfigError(f"LAKE_{name.upper()} must be at least 1 (day)")
        if self.landing_expire_days < 0:
            raise ConfigError("LAKE_LANDING_EXPIRE_DAYS must be 0 (keep landing objects) or at least 1 (day)")
        if not isinstance(self.glue_database, str) or not _GLUE_NAME.fullmatch(self.glue_database):
            raise ConfigError(f"LAKE_GLUE_DATABASE {reprlib.repr(self.glue_database)} must be 1-255 lowercase "
                              "letters, digits and underscores (Athena folds names to lowercase)")

    @property
    def catalog_kind(self) -> str:
        """``local`` or ``glue``: the catalog these settings use."""
        return self.catalog or ("glue" if self.backend == "s3" else "local")

    @property
    def location(self) -> str:
        """Where the lake's data lives, for people: the folder, or the S3 buckets and endpoint."""
        if self.backend == "local":
            return str(self.root_path)
        return f"s3://{self.bucket_prefix}-{{{','.join(ROLES)}}} ({self.s3_endpoint_url or 'AWS ' + self.aws_region})"

    @property
    def root_path(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def bucket(self, role: str) -> str:
        """The bucket name for a role: ``<prefix>-<role>``."""
        if role not in ROLES:
            raise ValueError(f"unknown bucket role {role!r}")
        return f"{self.bucket_prefix}-{role}"


def _coerce(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("int"):
            return int(raw.replace("_", ""))
        return raw
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be an integer, got {raw!r}") from None
