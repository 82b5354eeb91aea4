"""The lake as a Dagster resource: settings resolved from ``LAKE_*`` variables when a run starts."""

from __future__ import annotations

import dagster as dg

from pipelines.config import LakeSettings
from pipelines.lake import Lake


class LakeResource(dg.ConfigurableResource):
    """Opens the lake for a run. Unset fields fall back to ``LAKE_*`` variables, then defaults."""

    root: str | None = None
    backend: str | None = None
    table: str | None = None

    def settings(self) -> LakeSettings:
        """Settings for this run; read from the environment now, not at import."""
        return LakeSettings.from_env(root=self.root, backend=self.backend, table=self.table)

    def open(self) -> Lake:
        """A lake handle for this run."""
        return Lake.open(self.settings())
