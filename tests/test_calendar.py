"""CST days whatever the operator's zone (issue 24): a backfill makes the runs of every CST day
its range touches, picked from a UTC browser or a CST one; run ids name the CST day ingested;
`etl airflow` creates the loads' pool; no run is stuck for ever (dagrun_timeout).

Real Airflow: the DAGs parsed into the session's metadata database (tests/conftest.py: SQLite,
`default_timezone` left at UTC, as a browser in UTC sends its dates), then Airflow's own backfill
code (`airflow.models.backfill._create_backfill`, what `airflow backfill create` and the UI's
backfill form call) and its trigger code (`airflow.api.common.trigger_dag`).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parent.parent
CST = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
DAILY, WEEKLY = "dual_prevention_daily", "dual_prevention_weekly"


@pytest.fixture
def parsed(airflow_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DAGs folder parsed into the metadata database, as the DAG processor does."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(tmp_path / "mappings"))  # no units: a fast parse
    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert bag.import_errors == {}
        sync_bag_to_db(bag, bundle.name, bundle.version)


def _backfill(dag_id: str, start: datetime, end: datetime) -> list[tuple[str, str, str]]:
    """(run id, first CST day, last CST day) of the runs a backfill over [start, end] makes;
    the backfill and its runs are then removed, for the next one."""
    from airflow.models.backfill import Backfill, BackfillDagRun, ReprocessBehavior, _create_backfill
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    backfill = _create_backfill(dag_id=dag_id, from_date=start, to_date=end, max_active_runs=1,
                                reverse=False, dag_run_conf=None, triggering_user_name="test",
                                reprocess_behavior=ReprocessBehavior.COMPLETED)
    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.backfill_id == backfill.id)
                               .order_by(DagRun.logical_date)).all()
        out = [(r.run_id, r.data_interval_start.astimezone(CST).date().isoformat(),
                (r.data_interval_end.astimezone(CST) - timedelta(seconds=1)).date().isoformat())
               for r in runs]
        session.execute(delete(BackfillDagRun).where(BackfillDagRun.backfill_id == backfill.id))
        session.execute(delete(DagRun).where(DagRun.backfill_id == backfill.id))
        session.execute(delete(Backfill).where(Backfill.id == backfill.id))
    return out


def test_a_backfill_from_a_utc_browser_makes_the_same_cst_days_as_from_a_cst_one(parsed) -> None:
    utc = _backfill(DAILY, datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 6, 3, tzinfo=UTC))
    cst = _backfill(DAILY, datetime(2025, 6, 1, tzinfo=CST), datetime(2025, 6, 3, tzinfo=CST))
    days = [("2025-06-01", "2025-06-01"), ("2025-06-02", "2025-06-02"), ("2025-06-03", "2025-06-03")]
    assert [(first, last) for _, first, last in utc] == days  # 1 June is not lost
    assert utc == cst
    # Airflow names backfill runs itself, after the run's end in UTC: CST midnight is 16:00 UTC
    # the day before, so the date in the id is the CST day ingested
    assert [run_id for run_id, _, _ in utc] == [f"backfill__{day}T16:00:00+00:00" for day, _ in days]


def test_a_backfill_within_one_day_makes_that_days_run(parsed) -> None:
    """Any time of the day is that day: 10:00 to 14:00 UTC of 5 June is 5 June CST (18:00-22:00)."""
    runs = _backfill(DAILY, datetime(2025, 6, 5, 10, tzinfo=UTC), datetime(2025, 6, 5, 14, tzinfo=UTC))
    assert [(first, last) for _, first, last in runs] == [("2025-06-05", "2025-06-05")]


def test_a_weekly_backfill_makes_every_cst_week_its_range_touches(parsed) -> None:
    """Wednesday to Wednesday, in any zone: the two Mon-Sun weeks they fall in."""
    utc = _backfill(WEEKLY, datetime(2025, 6, 4, tzinfo=UTC), datetime(2025, 6, 11, tzinfo=UTC))
    cst = _backfill(WEEKLY, datetime(2025, 6, 4, tzinfo=CST), datetime(2025, 6, 11, tzinfo=CST))
    weeks = [("2025-06-02", "2025-06-08"), ("2025-06-09", "2025-06-15")]
    assert [(first, last) for _, first, last in utc] == weeks
    assert utc == cst


def test_scheduled_run_ids_name_the_cst_day_or_week_ingested(parsed) -> None:
    """The scheduler names a scheduled run with the timetable it reads from the metadata
    database (deserialised through the plugin)."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunType

    from etl.orchestration.timetable import CstTimetable

    with create_session() as session:
        daily = session.scalar(SerializedDagModel.latest_item_select_object(DAILY)).dag
        weekly = session.scalar(SerializedDagModel.latest_item_select_object(WEEKLY)).dag
    assert isinstance(daily.timetable, CstTimetable)
    assert (daily.timetable.summary, weekly.timetable.summary) == ("0 0 * * *", "0 0 * * 1")
    names = []
    for dag in (daily, weekly):
        info = next(iter(dag.iter_dagrun_infos_between(datetime(2026, 12, 6, 12, tzinfo=UTC),
                                                       datetime(2026, 12, 6, 12, tzinfo=UTC))))
        names.append(dag.timetable.generate_run_id(run_type=DagRunType.SCHEDULED,
                                                   run_after=info.run_after,
                                                   data_interval=info.data_interval))
    assert names == ["scheduled__2026-12-06_CST", "scheduled__2026-11-30~2026-12-06_CST"]


@pytest.mark.parametrize("logical_date", [datetime(2025, 6, 6, tzinfo=UTC),
                                          datetime(2025, 6, 6, tzinfo=CST)],
                         ids=["utc-browser", "cst-browser"])
def test_a_manual_run_reads_the_whole_cst_day_before_its_logical_date_and_says_so(
        parsed, logical_date: datetime) -> None:
    """What the trigger form posts (a logical date, no interval), read by the REST API's code."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dag = session.scalar(SerializedDagModel.latest_item_select_object(DAILY)).dag
    run = TriggerDAGRunPostBody(logical_date=logical_date).validate_context(dag)
    assert run["data_interval"].start == datetime(2025, 6, 5, tzinfo=CST)
    assert run["data_interval"].end == datetime(2025, 6, 6, tzinfo=CST)
    assert run["run_id"].startswith("manual__2025-06-05_CST__")


def test_every_dag_run_has_a_timeout_before_its_next_period(dagbag) -> None:
    dags = dagbag().dags
    timeouts = {dag_id: dags[dag_id].dagrun_timeout for dag_id in dags}
    assert timeouts == {DAILY: timedelta(hours=20), WEEKLY: timedelta(days=6),
                        "dual_prevention_frequent": timedelta(hours=1),
                        "dual_prevention_freshness": timedelta(hours=2)}


def test_loads_run_in_the_target_pool(dagbag) -> None:
    for dag_id in (DAILY, WEEKLY, "dual_prevention_frequent"):
        assert dagbag().dags[dag_id].get_task("ingest.load").pool == "dual_prevention_target"


def test_etl_airflow_db_migrate_creates_the_loads_pool_and_resizes_it(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    db = home / "airflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
    env.update({"ETL_HOME": str(tmp_path), "AIRFLOW_HOME": str(home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}",
                "ETL_TARGET_POOL_SLOTS": "3"})

    def etl_airflow(*args: str, **extra: str) -> str:
        done = subprocess.run([sys.executable, "-m", "etl", "airflow", *args], env={**env, **extra},
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    def pools() -> dict[str, int]:
        with sqlite3.connect(db) as con:
            return dict(con.execute("SELECT pool, slots FROM slot_pool"))

    assert "pool dual_prevention_target: 3 slots" in etl_airflow("db", "migrate")
    assert pools()["dual_prevention_target"] == 3
    etl_airflow("db", "migrate", ETL_TARGET_POOL_SLOTS="6")  # again: the same pool, resized
    assert pools() == {"default_pool": 128, "dual_prevention_target": 6}
