"""Smoke tests of tests/airflow_cluster.py, the harness the scale tests and benchmarks/airflow_scale.py
drive Airflow with: a real Airflow (PostgreSQL metadata) runs the daily DAG over one generated unit
(benchmarks/units.py: a copy of the demo unit, SQLite source) into a PostgreSQL target, once with
the LocalExecutor and once with the CeleryExecutor (Redis broker, one worker).

Tasks are looked at only generically (how many, in which state): the DAG's shape is not this
file's business.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from benchmarks.units import Unit, make_units

try:
    from airflow_cluster import AirflowCluster, _descendants
except ImportError:  # tests/ became a package
    from tests.airflow_cluster import AirflowCluster, _descendants  # type: ignore[no-redef]

pytestmark = pytest.mark.airflow

DAG_ID = "dual_prevention_daily"
RUN_TIMEOUT = 100.0


@pytest.fixture
def metadata_url(airflow_metadata_url: str) -> str:
    """Airflow's metadata database: a fresh database on the session's PostgreSQL server."""
    return airflow_metadata_url


def _etl_env(folder: Path, target_url: str) -> dict[str, str]:
    target = make_url(target_url)
    return {
        "ETL_MAPPINGS_DIR": str(folder / "mappings"),
        "ETL_STAGING_DIR": str(folder / "staging"),
        "ETL_REPORTS_DIR": str(folder / "report"),
        "AIRFLOW_CONN_ETL_TARGET": f"postgresql://{target.username}@{target.host}:{target.port}/{target.database}",
        # a decoy: the run must write to the etl_target connection, never here
        "ETL_TARGET_URL": f"sqlite:///{folder / 'decoy-target.sqlite'}",
    }


def _run_one_unit(cluster: AirflowCluster, unit: Unit) -> tuple[str, list[dict[str, Any]]]:
    cluster.wait_for_dag(DAG_ID, timeout=120)
    conf = {"units": [unit.name], "tx_codes": ["06"], "mode": "full"}
    run_id = cluster.trigger(DAG_ID, conf=conf)
    state = cluster.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    tis = cluster.task_instances(DAG_ID, run_id)
    states = sorted((t["task_id"], t["map_index"], t["state"]) for t in tis)
    # every task succeeds: the unit's other datasets' timeliness is the freshness DAG's to say
    assert state == "success", f"{states}\n{cluster.logs()}"
    assert tis and all(t["state"] in ("success", "skipped") for t in tis), states
    assert cluster.run(DAG_ID, run_id)["conf"] == conf
    for ti in tis:  # every log that exists is readable through the API, e.g. a mapped one
        if ti["state"] == "success":
            assert run_id in cluster.task_log(DAG_ID, run_id, ti["task_id"], ti["map_index"]), ti
    return run_id, tis


def _assert_loaded(target_url: str, unit: Unit, run_id: str, folder: Path) -> None:
    engine = sa.create_engine(target_url)
    try:
        with engine.connect() as conn:
            org_nos = conn.execute(sa.text('SELECT DISTINCT "orgNo" FROM risk_point')).scalars().all()
            rows = conn.execute(sa.text("SELECT count(*) FROM risk_point")).scalar_one()
            runs = conn.execute(sa.text('SELECT "runId", "mapping", "txCode", "status" FROM ingest_run')).all()
    finally:
        engine.dispose()
    assert rows > 0 and org_nos == [unit.org_no]
    assert [tuple(r) for r in runs] == [(f"airflow__{DAG_ID}__{run_id}", unit.name, "06", "success")]
    assert not (folder / "decoy-target.sqlite").exists()


def _assert_all_stopped(pids: list[int]) -> None:
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and
             "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1]]
    assert alive == [], f"still running after stop(): {alive}"


def test_local_executor_runs_the_daily_dag_over_one_unit(metadata_url: str, pg_url: str, tmp_path: Path) -> None:
    unit = make_units(tmp_path / "units", 1)[0]
    cluster = AirflowCluster(tmp_path / "airflow", metadata_url=metadata_url, parallelism=4,
                             env=_etl_env(tmp_path / "units", pg_url))
    with cluster:
        run_id, _ = _run_one_unit(cluster, unit)
        started = [p.pid for _, p in cluster.procs]
        started += list(_descendants(started))
        assert {"migrate", "start", "dag_parsed"} <= set(cluster.timings)
    _assert_all_stopped(started)
    _assert_loaded(pg_url, unit, run_id, tmp_path / "units")


def test_celery_executor_runs_the_daily_dag_over_one_unit(metadata_url: str, pg_url: str, redis_url: str,
                                                          tmp_path: Path) -> None:
    unit = make_units(tmp_path / "units", 1)[0]
    celery = {"broker_url": redis_url, "workers": [{"queues": "default", "concurrency": 2}]}
    cluster = AirflowCluster(tmp_path / "airflow", metadata_url=metadata_url, celery=celery,
                             env=_etl_env(tmp_path / "units", pg_url))
    with cluster:
        assert cluster.env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://")
        run_id, tis = _run_one_unit(cluster, unit)
        started = [p.pid for _, p in cluster.procs]
        started += list(_descendants(started))
    ran = [t for t in tis if t["state"] == "success"]
    assert {t["queue"] for t in ran} == {"default"}
    worker_log = (cluster.home / "worker0.log").read_text(errors="replace")  # "Executing workload ... ti=..."
    assert [t["id"] for t in ran if f"id=UUID('{t['id']}')" not in worker_log] == [], worker_log[-3000:]
    _assert_all_stopped(started)
    _assert_loaded(pg_url, unit, run_id, tmp_path / "units")
