"""dagster.yaml: the instance it builds queues runs within the documented limits, and the
commented deployment blocks (Postgres, Kubernetes, ECS) are valid YAML of the right shape."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import yaml

from assets.curated import BACKFILL
from assets.instance import REPO_DAGSTER_YAML


def _instance(tmp_path: Path) -> dg.DagsterInstance:
    shutil.copyfile(REPO_DAGSTER_YAML, tmp_path / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(tmp_path))


def test_runs_queue_and_compaction_runs_two_at_a_time(tmp_path):
    with _instance(tmp_path) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        limits = {(lim["key"], lim.get("value")): lim["limit"] for lim in queue.tag_concurrency_limits}
        assert limits[("lake/stage", "compaction")] == 2
        assert limits[("lake/stage", "landing")] == 1
        # backfills launched from the UI carry dagster/backfill, not the job's tags
        assert limits[("dagster/backfill", None)] == 2
        assert queue.max_concurrent_runs == 4
        # the compaction pool bounds steps across runs, whatever launched them
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2


def test_a_365_day_backfill_is_53_runs_of_at_most_7_days():
    days = 365
    per_run = BACKFILL.max_partitions_per_run
    assert per_run == 7
    assert -(-days // per_run) == 53  # queued, at most 2 of them running at once (above)


def _commented_blocks(text: str, first_line: str) -> list[dict]:
    """The YAML of each commented-out block: ``# first_line`` and the ``#   `` lines after it."""
    lines, out = text.splitlines(), []
    for i, line in enumerate(lines):
        if line.strip() != f"# {first_line}":
            continue
        block = [line[2:]]
        for rest in lines[i + 1:]:
            if not rest.startswith("#   "):
                break
            block.append(rest[2:])
        out.append(yaml.safe_load("\n".join(block)))
    return out


def test_commented_deployment_blocks_are_valid_yaml():
    text = REPO_DAGSTER_YAML.read_text()
    (storage,) = _commented_blocks(text, "storage:")
    pg = storage["storage"]["postgres"]["postgres_db"]
    assert {"hostname", "username", "password", "db_name", "port"} <= set(pg)
    assert pg["password"] == {"env": "DAGSTER_PG_PASSWORD"}  # never a literal secret
    k8s, ecs = (b["run_launcher"] for b in _commented_blocks(text, "run_launcher:"))
    assert (k8s["module"], k8s["class"]) == ("dagster_k8s.launcher", "K8sRunLauncher")
    assert (ecs["module"], ecs["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    assert k8s["config"]["job_image"] == {"env": "LAKE_IMAGE"}
