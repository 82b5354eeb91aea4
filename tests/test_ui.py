"""`lake ui` starts Dagster's webserver and daemon on our definitions, and the asset graph loads."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

QUERY = """{ assetNodes { assetKey { path } }
  workspaceOrError { ... on Workspace { locationEntries { name
    locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int) -> dict | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": QUERY}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())["data"]
    except (OSError, ValueError, KeyError):
        return None


def test_lake_ui_serves_the_asset_graph_without_warnings(tmp_path: Path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home"), "LAKE_ROOT": str(tmp_path / "lake")}
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "assets.cli", "ui", "--port", str(port)], env=env,
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        data, deadline = None, time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            data = _graphql(port)
            if data and data["assetNodes"]:
                break
            time.sleep(1)
        assert data, log.read_text()[-3000:]
        keys = {"/".join(n["assetKey"]["path"]) for n in data["assetNodes"]}
        assert keys == {"clickstream/raw_events", "clickstream/events_staged", "clickstream/events",
                        "clickstream/tiering_plan"}
        (entry,) = data["workspaceOrError"]["locationEntries"]
        assert entry["name"] == "clickstream_lake"
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    text = log.read_text()
    # warnings from loading our definitions (the daemon's first-start cursor notice is Dagster's own)
    offending = [line for line in text.splitlines()
                 if ("Warning" in line or "WARNING" in line or "Error" in line) and "No cursor for event type" not in line]
    assert offending == [], "\n".join(offending)
