"""A real Airflow: API server, scheduler (LocalExecutor) and DAG processor as separate processes
(tests/airflow_cluster.py), driven only through the public REST API (v2) as an operator's
script would drive it.

The metadata database is SQLite in a throwaway AIRFLOW_HOME; the target is PostgreSQL, given as
the Airflow connection `etl_target` (created through the API, with a password that must never
show in a task log); the unit's source is MariaDB, given as an Airflow connection too.

Airflow is never imported in this process: everything goes through subprocesses and HTTP.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from airflow_cluster import AirflowCluster
except ImportError:  # tests/ became a package
    from tests.airflow_cluster import AirflowCluster  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
DAG_ID = "dual_prevention_daily"
UNIT = "api_unit"
RUN_TIMEOUT = 150.0
TARGET_PASSWORD = "api-target-" + secrets.token_hex(6)  # PostgreSQL trusts 127.0.0.1 and ignores it
SHARED_VARIABLE = "API_SHARED_SOURCE_URL"
SHARED_VALUE = f"postgresql+psycopg://reader:shared-{secrets.token_hex(6)}@127.0.0.1:1/ehs"


@pytest.fixture(scope="module")
def airflow_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowCluster]:
    """Airflow (separate components, LocalExecutor, SQLite metadata) on a free loopback port."""
    home = tmp_path_factory.mktemp("airflow-api")
    (home / "mappings").mkdir()
    with AirflowCluster(home, parallelism=8, env={
        "ETL_MAPPINGS_DIR": str(home / "mappings"),
        "ETL_STAGING_DIR": str(home / "staging"),
        "ETL_REPORTS_DIR": str(home / "report"),
        # a decoy: the run must write to the etl_target connection, never here
        "ETL_TARGET_URL": f"sqlite:///{home / 'decoy-target.sqlite'}",
        SHARED_VARIABLE: SHARED_VALUE,  # a unit's url_env Airflow was started with
    }) as cluster:
        yield cluster


def _copy_tables(sqlite_path: Path, url: str) -> None:
    """The demo unit's tables in a server database (mixed SQLite columns become text)."""
    import sqlite3

    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with sqlite3.connect(sqlite_path) as con:
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
            frame = pd.read_sql_query(f'SELECT * FROM "{name}"', con)
            for col in frame.columns:
                if frame[col].dtype == object and len({type(v) for v in frame[col] if v is not None}) > 1:
                    frame[col] = frame[col].map(lambda v: None if v is None else str(v))
            blobs = {c: sa.LargeBinary for c in frame.columns  # attachments' bytes stay bytes
                     if any(isinstance(v, bytes) for v in frame[c])}
            frame.to_sql(name, engine, index=False, dtype=blobs)
    engine.dispose()


def _write_mapping(path: Path, source: dict) -> None:
    import yaml

    raw = yaml.safe_load((MAPPINGS / "demo_suzhou_lift.yaml").read_text(encoding="utf-8"))
    raw["source"] = source
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")


def _table_rows(url: str) -> dict[str, list[tuple]]:
    import sqlalchemy as sa

    from etl import target

    engine = target.connect(url)
    try:
        with engine.connect() as conn:
            return {t: sorted(tuple(r) for r in conn.execute(sa.text(f'SELECT "ID", "rowHash", "busType" FROM {t}')))
                    for t in ("risk_point", "hazard_source", "hidden_danger")}
    finally:
        engine.dispose()


@pytest.mark.airflow
def test_a_run_triggered_through_the_rest_api_with_params_loads_the_target(
        airflow_cluster: AirflowCluster, pg_url: str, mariadb_url: str, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    from etl import pipeline, target
    from etl.onboarding.demo_data import UNIT_A, UNIT_B, make_demo_sources
    from etl.mapping import load_mapping

    cluster = airflow_cluster
    made = make_demo_sources(tmp_path / "demo")
    _copy_tables(made[UNIT_B], mariadb_url)
    maria, pg = make_url(mariadb_url), make_url(pg_url)
    mappings = Path(cluster.env["ETL_MAPPINGS_DIR"])
    _write_mapping(mappings / f"{UNIT}.yaml", {"conn_id": "api_unit_source"})
    # another unit the params leave out
    _write_mapping(mappings / "other_unit.yaml", {"url": f"sqlite:///{made[UNIT_A]}"})

    cluster.create_connection("etl_target", conn_type="postgres", host=pg.host, port=pg.port,
                              login=pg.username, password=TARGET_PASSWORD, schema=pg.database)
    cluster.create_connection("api_unit_source", conn_type="mysql", host=maria.host,
                              port=maria.port, login=maria.username, schema=maria.database)
    cluster.wait_for_dag(DAG_ID, timeout=90)
    # the datasets' assets exist once the DAGs are parsed, before any load emits to them
    listed = cluster.api.call("GET", "/api/v2/assets?limit=100")["assets"]
    assert {f"dual_prevention_0{n}" for n in range(1, 10)} <= {a["name"] for a in listed}, listed

    conf = {"units": [UNIT], "tx_codes": ["06", "07"], "mode": "full"}
    run_id = cluster.trigger(DAG_ID, conf=conf)
    assert cluster.run(DAG_ID, run_id)["conf"] == conf
    state = cluster.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    tis = cluster.task_instances(DAG_ID, run_id)
    states = sorted((t["task_id"], t.get("rendered_map_index"), t["state"]) for t in tis)
    shard = f"1/1 {UNIT} (1 unit)"  # the units the params chose, in one shard
    # the run loaded everything it was asked to: green, whatever the units' other datasets'
    # timeliness (that is the freshness DAG's to say)
    assert (state, states) == ("success", [  # a shard is one task: extract, transform, load
        ("ingest.load", shard, "success"), ("plan", None, "success"),
        ("report", None, "success"), ("report_pages", "1/1", "success"),
        ("summarise", None, "success")]), \
        f"{states}\n{cluster.logs()}"
    # its load updated the assets of the txCodes it loaded (06, 07), its report the ingestion
    # asset, which queued a run of the freshness DAG
    events = cluster.api.call("GET", f"/api/v2/assets/events?source_dag_id={DAG_ID}")["asset_events"]
    assert sorted((e["name"], e["source_task_id"], e["source_run_id"]) for e in events) == [
        ("dual_prevention_06", "ingest.load", run_id), ("dual_prevention_07", "ingest.load", run_id),
        ("dual_prevention_ingestion", "report", run_id)], events
    ingested = next(e["asset_id"] for e in events if e["name"] == "dual_prevention_ingestion")
    cluster.wait_for_dag("dual_prevention_freshness")
    queued = cluster.api.call("GET", "/api/v2/dags/dual_prevention_freshness/assets/queuedEvents")
    assert [q["asset_id"] for q in queued["queued_events"]] == [ingested], queued

    # the target holds what an in-process run of the same mapping makes of the same source
    reference_mapping = tmp_path / f"{UNIT}.yaml"
    _write_mapping(reference_mapping, {"url": mariadb_url})
    reference = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    engine = target.connect(reference)
    pipeline.run_mapping(engine, load_mapping(reference_mapping), ["06", "07"], mode="full")
    engine.dispose()
    got = _table_rows(pg_url)
    assert got == _table_rows(reference)
    assert len(got["risk_point"]) > 0 and len(got["hazard_source"]) > 0 and got["hidden_danger"] == []
    assert not (cluster.home / "decoy-target.sqlite").exists()

    import sqlalchemy as sa

    engine = target.connect(pg_url)
    with engine.connect() as conn:
        runs = conn.execute(sa.text('SELECT "runId", "mapping", "txCode", "mode", "status" FROM ingest_run')).all()
    engine.dispose()
    assert sorted(runs) == [(f"airflow__{DAG_ID}__{run_id}", UNIT, tx, "full", "success") for tx in ("06", "07")]

    summary = cluster.task_log(DAG_ID, run_id, "summarise")
    assert "run summary" in summary and f"{UNIT}" in summary and "hazard_source" in summary
    for task_id, map_index in (("plan", -1), ("ingest.load", 0)):
        assert TARGET_PASSWORD not in cluster.task_log(DAG_ID, run_id, task_id, map_index)
    assert TARGET_PASSWORD not in summary


@pytest.mark.airflow
def test_check_names_a_url_env_variable_the_running_scheduler_lacks_never_its_value(
        airflow_cluster: AirflowCluster, tmp_path: Path) -> None:
    """The issue: a variable exported in the shell after Airflow started is not Airflow's.
    `etl check` (its own process, as a user runs it) reads the running scheduler's environment
    and names the variable and the scheduler, not the URL; a variable Airflow started with,
    with the same value, is fine; with another value it is named again."""
    cluster = airflow_cluster
    mappings = Path(cluster.env["ETL_MAPPINGS_DIR"])
    scheduler = next(p.pid for name, p in cluster.procs if name == "scheduler")
    late = mappings / "无锡化工.yaml"
    shared = mappings / "苏州电梯.yaml"
    _write_mapping(late, {"url_env": "WUXI_EXPORTED_LATE_URL"})
    _write_mapping(shared, {"url_env": SHARED_VARIABLE})
    late_value = f"postgresql+psycopg://reader:late-{secrets.token_hex(6)}@127.0.0.1:1/ehs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
    env.update({"WUXI_EXPORTED_LATE_URL": late_value, SHARED_VARIABLE: SHARED_VALUE,
                "ETL_CACHE_DIR": str(tmp_path / "cache")})
    restart = ("Airflow's processes read environment variables when they start; set it where "
               "they start and restart them, or use an Airflow connection (conn_id:), which needs "
               "no restart")

    def check(**override: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "etl", "check", "--offline", str(late), str(shared)],
                              cwd=ROOT, env={**env, **override}, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert late_value not in done.stdout + done.stderr
        assert SHARED_VALUE not in done.stdout + done.stderr
        return [line for line in done.stdout.splitlines() if "warning:" in line or "note:" in line]

    missing = (f"{late} [source.url_env] warning: WUXI_EXPORTED_LATE_URL is not in the "
               f"environment of the running Airflow scheduler (pid {scheduler}): {restart}")
    try:
        assert check() == [missing]
        assert check(**{SHARED_VARIABLE: SHARED_VALUE + "2"}) == [
            missing, f"{shared} [source.url_env] warning: {SHARED_VARIABLE} has another value in "
                     f"the environment of the running Airflow scheduler (pid {scheduler}) than in "
                     f"this shell: {restart}"]
    finally:
        late.unlink()
        shared.unlink()
