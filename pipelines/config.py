"""Lake settings, resolved from environment variables when a run starts.

Every variable has the prefix ``LAKE_``. Nothing here is read at import time: call
:meth:`LakeSettings.from_env` at the start of a command or a Dagster run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError

ENV_PREFIX = "LAKE_"
ROLES = ("landing", "raw", "curated", "quarantine")

MiB = 1 << 20


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
    s3_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    aws_profile: str | None = None
    glue_database: str = "clickstream"
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

    def with_(self, **changes: Any) -> LakeSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def validate(self) -> None:
        """Refuse settings that cannot work, with a message saying which variable to fix."""
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
