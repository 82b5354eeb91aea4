"""The engine never imports the Dagster layer or Dagster itself."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_engine_does_not_import_dagster_or_assets():
    offenders = {}
    for path in sorted((ROOT / "pipelines").rglob("*.py")):
        bad = _imports(path) & {"dagster", "dagster_webserver", "assets"}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_walker_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import dagster as dg\nfrom assets.x import y\n")
    assert {"dagster", "assets"} <= _imports(probe)
