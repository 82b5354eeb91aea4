"""A lake handle: settings, storage, catalog and table spec, opened once per command or run."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from pipelines.catalog import Catalog, open_catalog
from pipelines.config import LakeSettings
from pipelines.schema import TableSpec, load_spec
from pipelines.storage import Storage, open_storage


@dataclass
class Lake:
    """Everything a stage needs to touch the lake."""

    settings: LakeSettings
    storage: Storage
    spec: TableSpec

    @classmethod
    def open(cls, settings: LakeSettings | None = None, *, table: str | None = None) -> Lake:
        """Open the lake the settings describe (``LakeSettings.from_env()`` when None)."""
        settings = settings or LakeSettings.from_env()
        spec = load_spec("clickstream", table or settings.table)
        return cls(settings=settings, storage=open_storage(settings), spec=spec)

    @cached_property
    def catalog(self) -> Catalog:
        return open_catalog(self.settings)
