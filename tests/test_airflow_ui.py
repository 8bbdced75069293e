"""Issue 24: a backfill picked in Airflow's own web UI covers the same CST days whatever the
browser's zone. Airflow 3.3's React UI, served by a real API server (tests/airflow_cluster.py:
API server, scheduler and DAG processor as separate processes, SQLite metadata), read and
driven in Debian's Chromium through Playwright (`executable_path`, no `playwright install`).

Two browser contexts, `timezone_id="UTC"` and `timezone_id="Asia/Shanghai"`. In each: log in on
the simple auth manager's form, open `dual_prevention_daily`, Trigger → Backfill, type
2026/12/01 00:00 → 2026/12/03 00:00 into the form's own date and time fields (the UI reads them
in the browser's zone: a UTC browser sends 2026-12-01T00:00Z, a CST one 2026-11-30T16:00Z), Run
Backfill. Then, through the REST API: runs for 1, 2 and 3 December CST, no day lost; and in the
UI's run list: run ids naming those days (`backfill__<end of the interval, UTC>`, whose date is
the CST day ingested, docs/airflow.md). Between the two, the backfill is cancelled and its runs
deleted, so the second starts from nothing. (On a clock earlier than 4 December 2026 CST, the
same days a year before: Airflow backfills no future day.)

The DAG is paused (and the form's "Unpause … on trigger" unticked): the backfill creates its
runs at once, queued; nothing executes, which keeps this cheap.

The UTC browser's run list is docs/airflow-backfill.png: `UPDATE_DOCS_SCREENSHOTS=1` writes it
there; otherwise it goes to the test's temporary folder only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import chromium
import pytest

try:
    from airflow_cluster import AirflowCluster
    from servers import create_database, drop_database
except ImportError:  # tests/ became a package
    from tests.airflow_cluster import AirflowCluster  # type: ignore[no-redef]
    from tests.servers import create_database, drop_database  # type: ignore[no-redef]

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "airflow-backfill.png"
DAG_ID = "dual_prevention_daily"
CST = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
# the dates; a year earlier on a clock before them (Airflow backfills no future day)
YEAR = 2026 if datetime.now(UTC) >= datetime(2026, 12, 4, tzinfo=CST) else datetime.now(UTC).year - 1
# what the user types, in the form's own fields, in the browser's zone
FROM, TO = (f"{YEAR}/12/01", "00:00"), (f"{YEAR}/12/03", "00:00")
CST_DAYS = [f"{YEAR}-12-01", f"{YEAR}-12-02", f"{YEAR}-12-03"]


@pytest.fixture(scope="module")
def browser():
    yield from chromium.launched()


@pytest.fixture(scope="module")
def metadata_url(pg_server: str) -> Iterator[str]:
    """Airflow's metadata on PostgreSQL: on SQLite, Airflow refuses to create a backfill while
    the scheduler holds the database ("Database is locked. Backfill creation is not supported
    on SQLite under concurrent access"), which a loaded machine made this test meet by chance."""
    url = create_database(pg_server, prefix="airflow_ui")
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="module")
def cluster(browser, metadata_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowCluster]:
    """Airflow as tests/test_airflow_api.py starts it (no units: a fast parse), the daily DAG
    parsed and paused."""
    home = tmp_path_factory.mktemp("airflow-ui")
    (home / "mappings").mkdir()
    with AirflowCluster(home, metadata_url=metadata_url, parallelism=2, env={
        "ETL_MAPPINGS_DIR": str(home / "mappings"),
        "ETL_STAGING_DIR": str(home / "staging"),
        "ETL_REPORTS_DIR": str(home / "report"),
        "ETL_TARGET_URL": f"sqlite:///{home / 'target.sqlite'}",
    }) as af:
        af.wait_for_dag(DAG_ID)
        af.api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})
        yield af


def _start_afresh(af: AirflowCluster) -> None:
    """No backfill running (Airflow allows one per DAG) and no run of the DAG left."""
    for backfill in af.api.call("GET", f"/api/v2/backfills?dag_id={DAG_ID}")["backfills"]:
        if not backfill["completed_at"]:
            af.api.call("PUT", f"/api/v2/backfills/{backfill['id']}/cancel")
    for run in af.api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]:
        af.api.call("DELETE", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run['dag_run_id'], safe='')}",
                    ok=(204,))
    assert af.api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["total_entries"] == 0


def _utc(day: str, time: str, zone: ZoneInfo) -> str:
    """What the browser sends for `day time` typed in `zone`: that moment in UTC, as JS's
    `toISOString()` writes it."""
    local = datetime.strptime(f"{day} {time}", "%Y/%m/%d %H:%M").replace(tzinfo=zone)
    return local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai"])
def test_a_backfill_picked_in_the_ui_covers_the_same_cst_days_in_any_browser_zone(
        browser, cluster: AirflowCluster, zone: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    af = cluster
    _start_afresh(af)
    base = af.api.base
    context = browser.new_context(timezone_id=zone, viewport={"width": 1280, "height": 640},
                                  locale="en-US")
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sent: list[dict] = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data or "{}"))
            if r.method == "POST" and r.url == f"{base}/api/v2/backfills" else None)
    try:
        # the simple auth manager's login form
        page.goto(f"{base}/dags/{DAG_ID}")
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(af.password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/dags/{DAG_ID}")
        # the UI's zone is the browser's (nobody picked one in the user menu)
        offset = datetime(YEAR, 12, 1, tzinfo=ZoneInfo(zone)).strftime("%z")
        page.get_by_role("button", name=f"{offset[:3]}:{offset[3:]}").wait_for()

        # Trigger → Backfill, the dates typed into the form's date and time fields
        page.get_by_test_id("trigger-dag-button").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Backfill", exact=True).click()
        pickers = dialog.get_by_test_id("datetime-input")
        for n, (day, time) in enumerate((FROM, TO)):
            pickers.nth(n).click()
            popover = page.locator("[data-scope=popover][data-part=content][data-state=open]")
            assert popover.inner_text().startswith(zone), popover.inner_text()[:80]
            popover.get_by_placeholder("YYYY/MM/DD").fill(day)
            popover.get_by_placeholder("HH:mm").fill(time)
            page.keyboard.press("Escape")
            popover.wait_for(state="hidden")
        assert pickers.nth(0).inner_text().strip() == f"Dec 01, {YEAR} 00:00"
        assert pickers.nth(1).inner_text().strip() == f"Dec 03, {YEAR} 00:00"
        dialog.get_by_text("3 runs will be triggered.").wait_for()  # the form's dry run
        # the DAG stays paused: the runs are made, none executes
        dialog.get_by_text(f"Unpause {DAG_ID} on trigger", exact=True).click()
        expect(dialog.get_by_role("checkbox", name=f"Unpause {DAG_ID} on trigger")).not_to_be_checked()
        with page.expect_response(lambda r: r.url == f"{base}/api/v2/backfills"
                                  and r.request.method == "POST") as created:
            dialog.get_by_role("button", name="Run Backfill", exact=True).click()
        assert created.value.status == 200, created.value.text()
        dialog.wait_for(state="hidden")

        # what the browser sent: midnight in its zone, in UTC
        assert [(b["from_date"], b["to_date"]) for b in sent] == [
            (_utc(*FROM, ZoneInfo(zone)), _utc(*TO, ZoneInfo(zone)))]

        # the runs: 1, 2 and 3 December CST, each one whole CST day, no day lost
        runs = af.api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")
        intervals = sorted((datetime.fromisoformat(r["data_interval_start"]).astimezone(CST),
                            datetime.fromisoformat(r["data_interval_end"]).astimezone(CST))
                           for r in runs["dag_runs"])
        assert [start.date().isoformat() for start, _ in intervals] == CST_DAYS, runs
        for start, end in intervals:
            assert (start.time().isoformat(), end - start) == ("00:00:00", timedelta(days=1))
        assert {r["run_type"] for r in runs["dag_runs"]} == {"backfill"}

        # the UI's run list names them by the CST day they ingest
        page.goto(f"{base}/dags/{DAG_ID}/runs")  # the DAG's "Runs" tab
        table = page.get_by_role("table")
        for day in CST_DAYS:
            link = table.get_by_role("link", name=f"backfill__{day}T16:00:00+00:00")
            link.wait_for()
        page.get_by_text("3 Dag Runs", exact=True).wait_for()
        assert table.get_by_role("link", name=f"backfill__{YEAR}-11-30").count() == 0
        ids = sorted(r["dag_run_id"] for r in runs["dag_runs"])
        assert ids == [f"backfill__{day}T16:00:00+00:00" for day in CST_DAYS]

        if zone == "UTC":
            shot = tmp_path / SCREENSHOT.name
            # the whole viewport: the sidebar's "+00:00" (the UI's zone), the backfill's range
            # as picked, the three runs
            page.screenshot(path=str(shot))
            assert shot.stat().st_size < 300_000
            if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
                SCREENSHOT.write_bytes(shot.read_bytes())
        assert not errors, errors
    finally:
        context.close()
