"""The Dagster UI in a real browser: backfills launched from the curated asset's page, their
re-run, the backfill concurrency limit, and late data re-published without a manual step.

One ``lake ui`` (``dagster dev``: webserver and daemon) serves the whole module, on 127.0.0.1,
with a temporary DAGSTER_HOME holding a copy of the repo's dagster.yaml and a temporary local
lake. Headless Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright; no browser is
downloaded. Screenshots of the key steps land in each test's ``tmp_path``.

The tests run in file order and build on each other: the first publishes three days, the
re-run and the late-data test start from them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from pipelines.config import LakeSettings
from pipelines.lake import Lake
from pipelines.land import land_inbox
from tests.conftest import event, ndjson
from tests.helpers.dagster_dev import DagsterDev

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STAGED, CURATED = ("clickstream", "events_staged"), ("clickstream", "events")
#: the pool both curated steps run in (assets/curated.py) and its limit (dagster.yaml)
COMPACTION_STEPS = {"clickstream__events_staged", "clickstream__events"}
LIMIT = 2

#: the three days of the browser backfill, with different event counts
DAYS = {"2026-11-01": 5, "2026-11-02": 7, "2026-11-03": 9}
#: the 21-day backfill (3 runs of 7 days); a few of its days hold events, the others report none
WIDE = [str(dt.date(2026, 10, 1) + dt.timedelta(days=i)) for i in range(21)]
WIDE_DATA = {"2026-10-02": 4, "2026-10-09": 3, "2026-10-16": 2}
LATE_DAY = "2026-11-02"

TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_RUNS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { id status numPartitions partitionNames
    runs(limit: 100) { runId status startTime endTime tags { key value }
      stepStats { stepKey status startTime endTime } } }
  ... on PythonError { message } } }"""
RUNS_SINCE = """query($after: Float!) { runsOrError(filter: { createdAfter: $after }, limit: 200) {
  ... on Runs { results { runId jobName status startTime endTime tags { key value } } }
  ... on PythonError { message } } }"""


@dataclass
class Server:
    dev: DagsterDev
    settings: LakeSettings

    def lake(self) -> Lake:
        """The lake the server's runs write, opened with the same settings."""
        return Lake.open(self.settings)

    def published(self) -> dict[str, tuple]:
        """Every published day: (version, rows, files, published_at)."""
        return {p.dt: (p.version, p.rows, p.files, p.published_at)
                for p in self.lake().catalog.list_partitions("events")}


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium; missing: a failure on CI (.ci/run installs it), a skip elsewhere."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        message = (f"{CHROMIUM} is missing: the browser test drives Debian's chromium "
                   "(`apt-get install chromium`; .ci/run installs it; never `playwright install`)")
        if _ci():
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def _land(lake: Lake, counts: dict[str, int], start: int) -> int:
    """One landing file per day with ``counts[day]`` distinct events; returns the next id."""
    n = start
    for day, count in counts.items():
        key = f"web/{day.replace('-', '/')}/10/batch-{n}.ndjson.gz"
        lake.storage.put("landing", key, ndjson([event(n + i, day=day) for i in range(count)]))
        n += count
    return n


@pytest.fixture(scope="module")
def server(tmp_path_factory, chromium) -> Iterator[Server]:
    """Three November days and a few October days landed (not published), then ``lake ui``."""
    root = tmp_path_factory.mktemp("browser")
    settings = LakeSettings(root=str(root / "lake"), duckdb_memory_limit="512MB")
    lake = Lake.open(settings)
    _land(lake, WIDE_DATA, _land(lake, DAYS, 0))
    report = land_inbox(lake)
    assert report.touched == {**DAYS, **WIDE_DATA}
    dev = DagsterDev(root / "dagster_home", root / "lake", root / "dagster.log")
    try:
        dev.start()
        assert (dev.home / "dagster.yaml").read_bytes() == (Path(__file__).parent.parent / "dagster.yaml").read_bytes()
        yield Server(dev, settings)
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def browser(chromium) -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    pg = context.new_page()
    # a fresh instance greets the first visitor with a newsletter prompt: dismiss it whenever shown
    pg.add_locator_handler(pg.get_by_role("button", name="Skip"), lambda skip: skip.click())
    try:
        yield pg
    finally:
        context.close()


def launch_backfill_from_asset_page(page: Page, server: Server, first: str, last: str,
                                    shots: Path, name: str) -> str:
    """On the clickstream/events page, select both curated assets (the Lineage tab, upstream
    view), open the partition dialog, type the range, launch; returns the backfill id."""
    page.goto(f"{server.dev.base_url}/assets/clickstream/events")
    page.get_by_role("tab", name="Lineage").click()
    page.get_by_role("button", name="Upstream").click()
    page.get_by_text("events_staged", exact=True).first.wait_for()
    page.screenshot(path=shots / f"{name}-1-lineage.png")
    page.get_by_role("button", name="Materialize all…").click()
    # raw_events was landed outside Dagster at first: the UI asks to confirm its absence
    dialog = page.get_by_role("dialog")
    confirm = page.get_by_role("button", name="Confirm")
    launch = dialog.get_by_role("button", name="Launch backfill")
    confirm.or_(launch).first.wait_for()
    if confirm.is_visible():
        confirm.click()
    launch.wait_for()
    # the dialog starts with the last 90 days only (the table goes back to 2024-01-01)
    dialog.get_by_text("Show all partitions").click()
    dialog.get_by_text("All time").wait_for()
    box = dialog.get_by_role("textbox").first
    box.fill(f"[{first}...{last}]")
    box.press("Enter")
    count = (dt.date.fromisoformat(last) - dt.date.fromisoformat(first)).days + 1
    dialog.get_by_text(f"{count} partitions", exact=True).wait_for()
    page.screenshot(path=shots / f"{name}-2-partitions.png")
    launch.click()
    toast = page.get_by_text(re.compile(r"Created backfill \w+"))
    toast.wait_for()
    backfill_id = toast.inner_text().split()[-1]
    page.screenshot(path=shots / f"{name}-3-launched.png")
    return backfill_id


def wait_backfill(server: Server, backfill_id: str, timeout: float = 240) -> dict:
    """Poll the backfill until it is done and every run it started finished (bounded)."""
    deadline, backfill = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        backfill = server.dev.graphql(BACKFILL_RUNS, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        done = backfill["status"] not in ("REQUESTED", "CANCELING")
        if done and backfill["runs"] and all(r["status"] in TERMINAL_RUN for r in backfill["runs"]):
            return backfill
        time.sleep(2)
    pytest.fail(f"backfill {backfill_id} not done within {timeout:.0f} s: {backfill}\n{server.dev.tail()}")


def show_backfill(page: Page, server: Server, backfill_id: str, path: Path) -> None:
    """The backfill's page in the UI says it succeeded."""
    page.goto(f"{server.dev.base_url}/runs/b/{backfill_id}")
    page.get_by_text("Partition selection").wait_for()
    page.get_by_text("Succeeded", exact=True).first.wait_for()
    page.screenshot(path=path)


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end and a start at the same instant: no overlap)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = current = 0
    for _, step in points:
        current += step
        most = max(most, current)
    return most


def _assert_succeeded(backfill: dict, server: Server) -> None:
    failed = [r for r in backfill["runs"] if r["status"] != "SUCCESS"]
    assert backfill["status"] == "COMPLETED_SUCCESS" and not failed, (backfill, server.dev.tail())


@pytest.mark.timeout(300)
def test_backfill_of_three_days_from_the_asset_page_publishes_them(server: Server, page: Page,
                                                                    tmp_path: Path):
    backfill_id = launch_backfill_from_asset_page(page, server, "2026-11-01", "2026-11-03",
                                                  tmp_path, "backfill")
    backfill = wait_backfill(server, backfill_id)
    _assert_succeeded(backfill, server)
    assert sorted(backfill["partitionNames"]) == sorted(DAYS)
    # the three days fit one batch of the backfill policy (7 per run)
    (run,) = backfill["runs"]
    tags = _tags(run)
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) \
        == ("2026-11-01", "2026-11-03")
    show_backfill(page, server, backfill_id, tmp_path / "backfill-4-done.png")
    published = server.published()
    assert {d: published[d][1] for d in DAYS} == DAYS
    assert all(published[d][2] for d in DAYS)  # each day has its Parquet files
    assert not set(published) & set(WIDE)  # only the backfilled days


@pytest.mark.timeout(240)
def test_rerunning_the_backfill_changes_no_published_row(server: Server, page: Page, tmp_path: Path):
    before = server.published()
    assert set(DAYS) <= set(before), "the first backfill did not publish the three days"
    backfill_id = launch_backfill_from_asset_page(page, server, "2026-11-01", "2026-11-03",
                                                  tmp_path, "rerun")
    _assert_succeeded(wait_backfill(server, backfill_id), server)
    # same version, rows and files; not even re-pointed (published_at unchanged)
    assert server.published() == before


@pytest.mark.timeout(240)
def test_late_events_republish_exactly_their_day_without_a_manual_step(server: Server):
    before = server.published()
    assert set(DAYS) <= set(before), "the first backfill did not publish the three days"
    started = time.time()
    # 3 new events and a duplicate of one already published (event 5 is the first of 2026-11-02)
    late = [event(9000 + i, day=LATE_DAY, hour=23) for i in range(3)] + [event(5, day=LATE_DAY)]
    server.lake().storage.put("landing", "web/2026/11/02/23/late.ndjson.gz", ndjson(late))

    # inbox_sensor lands it, late_data_sensor asks for a compaction run of that day: both are
    # running by default, on 30 s intervals; nothing is started by hand here
    deadline, runs = time.monotonic() + 200, []
    while time.monotonic() < deadline:
        runs = server.dev.graphql(RUNS_SINCE, {"after": started})["runsOrError"]["results"]
        republished = server.published()[LATE_DAY][0] != before[LATE_DAY][0]
        compactions = [r for r in runs if r["jobName"] == "compact_day"]
        if republished and compactions and all(r["status"] in TERMINAL_RUN for r in runs):
            break
        time.sleep(2)
    else:
        pytest.fail(f"{LATE_DAY} not re-published within 200 s; runs: {runs}\n{server.dev.tail()}")

    after = server.published()
    assert after[LATE_DAY][1] == DAYS[LATE_DAY] + 3  # the duplicate is dropped
    assert {d: v for d, v in after.items() if d != LATE_DAY} == \
        {d: v for d, v in before.items() if d != LATE_DAY}
    assert all(r["status"] == "SUCCESS" for r in runs), runs
    by_job: dict[str, list[dict]] = {}
    for r in runs:
        if "dagster/schedule_name" not in _tags(r):  # a schedule tick (03:00 UTC) is not ours to judge
            by_job.setdefault(r["jobName"], []).append(r)
    assert set(by_job) == {"land_inbox", "compact_day"}, runs
    assert all(_tags(r).get("dagster/sensor_name") == "inbox_sensor" for r in by_job["land_inbox"])
    # the sensor re-ran exactly the late day, once
    (compaction,) = by_job["compact_day"]
    assert _tags(compaction).get("dagster/sensor_name") == "late_data_sensor"
    assert _tags(compaction).get("dagster/partition") == LATE_DAY


@pytest.mark.timeout(300)
def test_backfill_of_21_days_runs_at_most_two_batches_at_once(server: Server, page: Page,
                                                              tmp_path: Path):
    backfill_id = launch_backfill_from_asset_page(page, server, WIDE[0], WIDE[-1], tmp_path, "wide")
    backfill = wait_backfill(server, backfill_id, timeout=270)
    _assert_succeeded(backfill, server)
    show_backfill(page, server, backfill_id, tmp_path / "wide-4-done.png")
    runs = backfill["runs"]
    # BackfillPolicy.multi_run(max_partitions_per_run=7): three batches of seven days
    ranges = sorted((_tags(r)["dagster/asset_partition_range_start"],
                     _tags(r)["dagster/asset_partition_range_end"]) for r in runs)
    assert ranges == [(WIDE[0], WIDE[6]), (WIDE[7], WIDE[13]), (WIDE[14], WIDE[20])]
    # dagster.yaml: at most 2 backfill runs at once, and at most 2 compaction steps at once
    run_overlap = _max_overlap([(r["startTime"], r["endTime"]) for r in runs])
    steps = [(s["startTime"], s["endTime"]) for r in runs for s in r["stepStats"]
             if s["stepKey"] in COMPACTION_STEPS]
    assert len(steps) == 2 * len(runs)
    step_overlap = _max_overlap(steps)
    print(f"21-day backfill: {len(runs)} runs, at most {run_overlap} runs and {step_overlap} "
          "compaction steps at once")
    assert run_overlap <= LIMIT
    assert step_overlap <= LIMIT
    # the days with events are published with them; the others were reported, not failed
    published = server.published()
    assert {d: published[d][1] for d in WIDE if d in published} == WIDE_DATA


@pytest.mark.timeout(60)
def test_the_server_log_has_no_errors(server: Server):
    """Last: nothing the module did made Dagster or our code log an error or a traceback."""
    text = server.dev.log.read_text(errors="replace")
    assert "RUN_SUCCESS" in text or "STEP_SUCCESS" in text  # run output reaches this log
    noise = ("No cursor for event type",)  # the daemon's first-start notice
    offending = [line for line in text.splitlines()
                 if re.search(r"Traceback|Error|ERROR|Exception|WARNING|Warning", line)
                 and not any(n in line for n in noise)]
    assert offending == [], "\n".join(offending[:40])
