"""Many workers: the daily DAG on CeleryExecutor (Debian's redis-server as the broker,
PostgreSQL metadata) with two workers that share no folder.

Worker 0 serves the default queue (plan, extract, transform, summarise); worker 1 serves only
the `loads` queue (`ETL_LOAD_QUEUE`), so every shard's data crosses from one worker to the other.
Each worker has its own staging folder, cache folder and working folder, and worker 1 has no
mapping files at all: what the tasks hand each other must go through the staging store, here
the target database (`ETL_STAGING_URL=target`). The sources are database servers (PostgreSQL
and MariaDB), reachable from both, as real units' are. The target must end up exactly as an
in-process `etl run` of the same units leaves it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from test_dags import DAILY, _copy_demo_tables, _snapshot

try:
    from airflow_cluster import AirflowCluster
    from servers import create_database, drop_database
except ImportError:  # tests/ became a package
    from tests.airflow_cluster import AirflowCluster  # type: ignore[no-redef]
    from tests.servers import create_database, drop_database  # type: ignore[no-redef]

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "dual_prevention_daily"


def _mapping(folder: Path, name: str, demo: str, source: dict, org_no: str | None = None) -> Path:
    raw = yaml.safe_load((ROOT / "mappings" / f"{demo}.yaml").read_text(encoding="utf-8"))
    raw["source"] = source
    if org_no:
        raw["unit"]["orgNo"] = org_no
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_two_workers_that_share_no_folder_load_the_same_as_etl_run(
        airflow_metadata_url: str, pg_server: str, pg_url: str, pg_url_2: str, mariadb_url: str,
        redis_url: str, tmp_path: Path) -> None:
    from stdnum.cn import uscc

    from etl import pipeline, target
    from etl.onboarding.demo_data import UNIT_A, UNIT_B, make_demo_sources
    from etl.mapping import load_mapping

    made = make_demo_sources(tmp_path / "demo")
    _copy_demo_tables(made[UNIT_A], pg_url_2, "modify_time")
    _copy_demo_tables(made[UNIT_B], mariadb_url, "last_update")
    third = create_database(pg_server)
    try:
        _copy_demo_tables(made[UNIT_B], third, "last_update")
        mappings = tmp_path / "mappings"
        mappings.mkdir()
        maria = make_url(mariadb_url)
        sources = {
            "UNIT_A_SOURCE_URL": pg_url_2, "UNIT_C_SOURCE_URL": third,
            "AIRFLOW_CONN_UNIT_B_SOURCE": f"mysql://{maria.username}@{maria.host}:{maria.port}/{maria.database}",
        }
        other_org = "91320506MA1W3L8P9" + uscc.calc_check_digit("91320506MA1W3L8P9")
        paths = [_mapping(mappings, "南京化工", UNIT_A, {"url_env": "UNIT_A_SOURCE_URL"}),
                 _mapping(mappings, "苏州电梯", UNIT_B, {"conn_id": "unit_b_source"}),
                 _mapping(mappings, "吴中电梯", UNIT_B, {"url_env": "UNIT_C_SOURCE_URL"}, other_org)]
        pg = make_url(pg_url)
        env = {
            **sources,
            "ETL_MAPPINGS_DIR": str(mappings),
            "ETL_STAGING_URL": "target",
            "ETL_LOAD_QUEUE": "loads",
            "AIRFLOW_CONN_ETL_TARGET": f"postgresql://{pg.username}@{pg.host}:{pg.port}/{pg.database}",
        }
        workers = []
        for n, queue in enumerate(("default", "loads")):
            own = tmp_path / f"worker{n}"
            own.mkdir()
            workers.append({"queues": queue, "concurrency": 2, "cwd": own, "env": {
                "ETL_HOME": str(own), "ETL_STAGING_DIR": str(own / "staging"),
                "ETL_CACHE_DIR": str(own / "cache"),
                **({"ETL_MAPPINGS_DIR": str(own / "no-mappings")} if queue == "loads" else {})}})
        cluster = AirflowCluster(tmp_path / "airflow", metadata_url=airflow_metadata_url, env=env,
                                 celery={"broker_url": redis_url, "workers": workers})
        with cluster:
            cluster.wait_for_dag(DAG_ID, timeout=120)
            run_id = cluster.trigger(DAG_ID, conf={"mode": "full", "units_per_shard": 1})
            state = cluster.wait_for_run(DAG_ID, run_id, timeout=300)
            tis = cluster.task_instances(DAG_ID, run_id)
            # every task succeeds (the units' weekly datasets' timeliness is the freshness DAG's)
            assert state == "success" and all(t["state"] == "success" for t in tis), \
                f"{[(t['task_id'], t['state']) for t in tis]}\n{cluster.logs()}"
        # read after stop: a task reports success before its worker logs the workload's end
        logs = [(tmp_path / "airflow" / f"worker{n}.log").read_text(errors="replace") for n in (0, 1)]

        loads = [t for t in tis if t["task_id"] == "ingest.load"]
        others = [t for t in tis if t["task_id"] != "ingest.load"]
        assert len(loads) == 3 and {t["queue"] for t in loads} == {"loads"}
        assert {t["queue"] for t in others} == {"default"}
        # each task ran on the worker of its queue: the data crossed between them
        assert all(f"workload_id={t['id']}" in logs[1] for t in loads), logs[1][-3000:]
        assert all(f"workload_id={t['id']}" in logs[0] for t in others), logs[0][-3000:]
        # nothing went through a worker's own disk, and the run's staging is gone
        assert not [p for n in (0, 1) for p in (tmp_path / f"worker{n}").rglob("*.parquet")]
        engine = sa.create_engine(pg_url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM ingest_stage")).scalar_one() == 0
        engine.dispose()

        reference = f"sqlite:///{tmp_path / 'reference.sqlite'}"
        ref_engine = target.connect(reference)
        for path, url in zip(paths, (pg_url_2, mariadb_url, third), strict=True):
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            raw["source"] = {"url": make_url(url).render_as_string(hide_password=False)}
            local = tmp_path / "reference" / path.name
            local.parent.mkdir(exist_ok=True)
            local.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
            pipeline.run_mapping(ref_engine, load_mapping(local), list(DAILY), mode="full")
        ref_engine.dispose()
        got, want = _snapshot(pg_url, DAILY), _snapshot(reference, DAILY)
        assert got == want and all(got[t] for t in ("risk_point", "hazard_source", "hidden_danger"))
    finally:
        drop_database(third)
