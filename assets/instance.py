"""The Dagster instance the CLI uses: ``$DAGSTER_HOME``, or ``./.dagster`` with the repo's dagster.yaml."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

REPO_DAGSTER_YAML = Path(__file__).resolve().parent.parent / "dagster.yaml"


def dagster_home() -> Path:
    """``$DAGSTER_HOME`` if set, else ``./.dagster``; makes sure it holds a dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or ".dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists() and REPO_DAGSTER_YAML.exists():
        shutil.copyfile(REPO_DAGSTER_YAML, target)
    return home


def open_instance() -> dg.DagsterInstance:
    """A persistent instance, so runs started by the CLI show in the UI afterwards."""
    return dg.DagsterInstance.from_config(str(dagster_home()))
