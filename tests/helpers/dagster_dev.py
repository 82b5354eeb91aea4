"""``lake ui`` (``dagster dev``: webserver and daemon) in a process group of its own, for tests.

The instance is a temporary DAGSTER_HOME holding a copy of the repo's dagster.yaml (run queue, tag
limits, pools); the lake is a temporary local folder. :class:`DagsterDev` starts it, waits until
the code location is loaded, answers GraphQL queries and stops the whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

_LOADED = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """One ``lake ui`` process tree on 127.0.0.1; ``base_url`` is the webserver."""

    def __init__(self, home: Path, lake_root: Path, log: Path, dagster_yaml: Path = REPO / "dagster.yaml"):
        self.home, self.lake_root, self.log, self.dagster_yaml = home, lake_root, log, dagster_yaml
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """The environment of the server: this lake and instance, no other LAKE_* setting."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKE_", "DAGSTER_"))}
        return {**env, "DAGSTER_HOME": str(self.home), "LAKE_BACKEND": "local",
                "LAKE_ROOT": str(self.lake_root), "LAKE_DUCKDB_MEMORY_LIMIT": "512MB"}

    def start(self, timeout: float = 150) -> None:
        """Start ``lake ui`` as the README tells users, and wait until the location and the
        daemons are up (bounded by ``timeout`` seconds)."""
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.dagster_yaml, self.home / "dagster.yaml")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "assets.cli", "ui", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env(), cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lake ui exited with {self.proc.returncode}:\n{self.tail()}")
            data = self.graphql(_LOADED, quiet=True)
            if data and self._ready(data):
                return
            time.sleep(1)
        raise RuntimeError(f"lake ui did not load within {timeout:.0f} s:\n{self.tail()}")

    @staticmethod
    def _ready(data: dict) -> bool:
        entries = (data.get("workspaceOrError") or {}).get("locationEntries") or []
        loaded = entries and all(e["locationOrLoadError"] and e["loadStatus"] == "LOADED" for e in entries)
        if loaded and any(e["locationOrLoadError"]["__typename"] != "RepositoryLocation" for e in entries):
            raise RuntimeError(f"code location failed to load: {entries}")
        daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        return bool(loaded) and all(d["healthy"] for d in daemons if d["required"])

    def graphql(self, query: str, variables: dict | None = None, *, quiet: bool = False) -> Any:
        """POST a GraphQL query; its ``data`` (None on a connection error when ``quiet``)."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.base_url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                answer = json.loads(resp.read())
        except (OSError, ValueError):
            if quiet:
                return None
            raise
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def tail(self, chars: int = 4000) -> str:
        """The end of the server's log."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, grace: float = 10) -> None:
        """SIGTERM the whole process group (``lake ui``, ``dagster dev``, webserver, daemon, code
        server, run workers), then SIGKILL whatever is left after ``grace`` seconds: Dagster's
        own shutdown can wait far longer on its children."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.proc.poll()  # reap the leader, so an empty group reads as gone
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=10)
