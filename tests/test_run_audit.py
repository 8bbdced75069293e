"""The audit trail (issue 14): each `ingest_run` row says who and what ran the load: the run, the
Airflow DAG run (in Airflow), the host, the OS user, the mapping file's sha256 and the code
version, from `etl run` and from an Airflow `dag.test()` run alike."""

from __future__ import annotations

import getpass
import hashlib
import socket
from datetime import datetime
from importlib import metadata
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
import yaml
from helpers import BROKEN_MAPPING

from etl import target
from etl.cli import main as cli_main
from etl.common import provenance
from etl.onboarding.demo_data import UNIT_B, make_demo_sources

ROOT = Path(__file__).resolve().parent.parent
CST = ZoneInfo("Asia/Shanghai")


def _runs(url: str) -> list[dict]:
    engine = target.connect(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(target.ingest_run).order_by(target.ingest_run.c.runKey))]
    finally:
        engine.dispose()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unit(tmp_path: Path, name: str = "苏州电梯") -> Path:
    """A demo unit reading its own SQLite source."""
    made = make_demo_sources(tmp_path / "demo")
    raw = yaml.safe_load((ROOT / "mappings" / f"{UNIT_B}.yaml").read_text(encoding="utf-8"))
    raw["source"] = {"url": f"sqlite:///{made[UNIT_B]}"}
    folder = tmp_path / "mappings"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_code_version_is_the_package_version_and_the_checkout_commit() -> None:
    provenance.git_commit.cache_clear()  # once per process; the checkout may have moved since
    provenance.code_version.cache_clear()
    version = provenance.code_version()
    assert version.startswith(metadata.version("dual-prevention-etl"))
    if (ROOT / ".git").exists():
        import subprocess

        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert version.endswith(f"+g{commit}")


def test_etl_run_records_host_user_mapping_hash_and_code_version(tmp_path: Path, sqlite_url: str) -> None:
    mapping = _unit(tmp_path)
    assert cli_main(["-q", "run", str(mapping), "--tx", "06,07", "--target", sqlite_url]) == 0
    runs = _runs(sqlite_url)
    assert [r["txCode"] for r in runs] == ["06", "07"]
    for r in runs:
        assert r["runId"].startswith("cli__")
        assert r["dagRunId"] is None
        assert r["host"] == socket.gethostname()
        assert r["osUser"] == getpass.getuser()
        assert r["mappingHash"] == _sha256(mapping)
        assert r["codeVersion"] == provenance.code_version()


@pytest.mark.airflow
def test_a_dag_run_records_its_dag_run_id_for_loaded_and_failed_units(
        airflow_db, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    good = _unit(tmp_path)
    broken = good.with_name("南京化工.yaml")
    broken.write_text(BROKEN_MAPPING, encoding="utf-8")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(good.parent))
    monkeypatch.setenv("ETL_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["dual_prevention_daily"]
    dr = dag.test(logical_date=datetime(2025, 4, 2, tzinfo=CST),
                  run_conf={"tx_codes": ["06"], "mode": "full"})
    runs = {r["mapping"]: r for r in _runs(sqlite_url)}
    assert (runs["苏州电梯"]["status"], runs["南京化工"]["status"]) == ("success", "failed")
    for name, path in (("苏州电梯", good), ("南京化工", broken)):
        r = runs[name]
        assert r["dagRunId"] == dr.run_id
        assert r["runId"] == f"airflow__dual_prevention_daily__{dr.run_id}"
        assert (r["host"], r["osUser"]) == (socket.gethostname(), getpass.getuser())
        assert r["mappingHash"] == _sha256(path)
        assert r["codeVersion"] == provenance.code_version()
