"""A real Airflow: API server, scheduler (LocalExecutor) and DAG processor as separate processes,
driven only through the public REST API (v2) as an operator's script would drive it.

The metadata database is SQLite in a throwaway AIRFLOW_HOME; the target is PostgreSQL, given as
the Airflow connection `etl_target` (created through the API, with a password that must never
show in a task log); the unit's source is MariaDB, given as an Airflow connection too.

Airflow is never imported in this process: everything goes through subprocesses and HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
DAG_ID = "dual_prevention_daily"
UNIT = "api_unit"
RUN_TIMEOUT = 150.0
TARGET_PASSWORD = "api-target-" + secrets.token_hex(6)  # PostgreSQL trusts 127.0.0.1 and ignores it


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """A tiny client of Airflow's public REST API."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None

    def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201),
             headers: dict[str, str] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, payload = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        if status not in ok:
            raise AssertionError(f"{method} {path} -> {status}: {payload[:2000]!r}")
        return json.loads(payload) if payload else None


@pytest.fixture(scope="module")
def airflow_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Start Airflow (separate components, LocalExecutor) on a free loopback port; yield
    (api client, environment, home); stop every process this fixture started."""
    home = tmp_path_factory.mktemp("airflow-api")
    port = _free_port()
    password = secrets.token_urlsafe(16)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    mappings = home / "mappings"
    mappings.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs this test triggers
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "ETL_MAPPINGS_DIR": str(mappings),
        "ETL_STAGING_DIR": str(home / "staging"),
        # a decoy: the run must write to the etl_target connection, never here
        "ETL_TARGET_URL": f"sqlite:///{home / 'decoy-target.sqlite'}",
    })
    airflow = [sys.executable, "-m", "airflow"]
    migrate = subprocess.run([*airflow, "db", "migrate"], env=env, cwd=home, capture_output=True,
                             text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]

    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for component in ("api-server", "scheduler", "dag-processor"):
        log = open(home / f"{component}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append((component, subprocess.Popen(
            [*airflow, component], env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)))
        log.close()

    def logs() -> str:
        return "\n".join(f"--- {c} ---\n" + (home / f"{c}.log").read_text(errors="replace")[-4000:]
                         for c, _ in procs)

    try:
        api = Api(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while True:
            for c, p in procs:
                assert p.poll() is None, f"airflow {c} exited with {p.returncode}\n{logs()}"
            try:
                api.call("GET", "/api/v2/monitor/health")
                break
            except (urllib.error.URLError, ConnectionError, AssertionError, TimeoutError):
                assert time.monotonic() < deadline, f"the API server did not come up\n{logs()}"
                time.sleep(0.5)
        api.token = api.call("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]
        yield api, env, home, logs
    finally:
        for _, p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for _, p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


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
            frame.to_sql(name, engine, index=False)
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


def _log_text(api: Api, run_id: str, task_id: str, map_index: int = -1) -> str:
    from urllib.parse import quote

    path = (f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/1"
            f"?map_index={map_index}")
    content = api.call("GET", path)["content"]
    return "\n".join(json.dumps(c, ensure_ascii=False) if not isinstance(c, str) else c for c in content)


@pytest.mark.airflow
def test_a_run_triggered_through_the_rest_api_with_params_loads_the_target(
        airflow_cluster, pg_url: str, mariadb_url: str, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    from etl import pipeline, target
    from etl.demo_data import UNIT_A, UNIT_B, make_demo_sources
    from etl.mapping import load_mapping

    api, env, home, logs = airflow_cluster
    made = make_demo_sources(tmp_path / "demo")
    _copy_tables(made[UNIT_B], mariadb_url)
    maria, pg = make_url(mariadb_url), make_url(pg_url)
    mappings = Path(env["ETL_MAPPINGS_DIR"])
    _write_mapping(mappings / f"{UNIT}.yaml", {"conn_id": "api_unit_source"})
    # another unit the params leave out
    _write_mapping(mappings / "other_unit.yaml", {"url": f"sqlite:///{made[UNIT_A]}"})

    api.call("POST", "/api/v2/connections", {
        "connection_id": "etl_target", "conn_type": "postgres", "host": pg.host, "port": pg.port,
        "login": pg.username, "password": TARGET_PASSWORD, "schema": pg.database})
    api.call("POST", "/api/v2/connections", {
        "connection_id": "api_unit_source", "conn_type": "mysql", "host": maria.host,
        "port": maria.port, "login": maria.username, "schema": maria.database})

    deadline = time.monotonic() + 90
    while api.call("GET", f"/api/v2/dags/{DAG_ID}", ok=(200, 404)).get("dag_id") != DAG_ID:
        assert time.monotonic() < deadline, f"the DAG was not parsed\n{logs()}"
        time.sleep(1)

    conf = {"units": [UNIT], "tx_codes": ["06", "07"], "mode": "full"}
    run = api.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    assert run["conf"] == conf
    from urllib.parse import quote

    deadline = time.monotonic() + RUN_TIMEOUT
    while (state := api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")["state"]) \
            not in ("success", "failed"):
        assert time.monotonic() < deadline, f"run {run_id} still {state} after {RUN_TIMEOUT}s\n{logs()}"
        time.sleep(2)
    tis = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=100")
    states = sorted((t["task_id"], t.get("rendered_map_index"), t["state"]) for t in tis["task_instances"])
    assert state == "success", f"{states}\n{logs()}"
    loads = {(t, label) for t, label, s in states if t.endswith(".load") and s == "success"}
    assert loads == {("ingest.load", f"{UNIT} 06"), ("ingest_referencing.load", f"{UNIT} 07")}

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
    assert not (home / "decoy-target.sqlite").exists()

    import sqlalchemy as sa

    engine = target.connect(pg_url)
    with engine.connect() as conn:
        runs = conn.execute(sa.text('SELECT "runId", "mapping", "txCode", "mode", "status" FROM ingest_run')).all()
    engine.dispose()
    assert sorted(runs) == [(f"airflow__{DAG_ID}__{run_id}", UNIT, tx, "full", "success") for tx in ("06", "07")]

    summary = _log_text(api, run_id, "summarise")
    assert "run summary" in summary and f"{UNIT}" in summary and "hazard_source" in summary
    for task_id in ("ingest.extract", "ingest.validate", "ingest.load"):
        assert TARGET_PASSWORD not in _log_text(api, run_id, task_id, 0)
    assert TARGET_PASSWORD not in summary
