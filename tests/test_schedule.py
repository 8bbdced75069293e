"""A unit's life on the schedule (issue 21), driven as Airflow drives it: the daily DAG's
`dag.test()` over consecutive logical dates, every task in this process, into a SQLite target.

Between two runs, as a collecting organisation lives it: a unit's mapping file is dropped into
the folder, a dataset is added to a unit's mapping, a row is deleted at a unit's source, a
source table is emptied by mistake. The next scheduled run must load the new unit's history,
mark the deleted row D, and refuse to mark the emptied table's records until a person confirms.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
CST = ZoneInfo("Asia/Shanghai")
# the demo sources' rows all changed before 2025-08: nothing falls in these days' windows
DAY1 = datetime(2025, 9, 2, tzinfo=CST)   # the run for 1 September (CST)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)
DAILY = ("06", "07", "09")


@pytest.fixture
def demo(tmp_path: Path, sqlite_url: str, staging: Path, monkeypatch: pytest.MonkeyPatch):
    """The demo units' SQLite sources, an empty mappings folder the DAGs read, the target."""
    from etl.onboarding.demo_data import make_demo_sources

    folder = tmp_path / "mappings"
    folder.mkdir()
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    return folder, make_demo_sources(tmp_path / "demo")


def _drop_in(folder: Path, name: str, unit: str, source: Path, without: tuple[str, ...] = ()) -> Path:
    """A demo unit's mapping file, reading its own SQLite source, as an operator drops it in."""
    import yaml

    raw = yaml.safe_load((MAPPINGS / f"{unit}.yaml").read_text(encoding="utf-8"))
    raw["source"] = {"url": f"sqlite:///{source}"}
    for tx in without:
        del raw["datasets"][tx]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def _source_sql(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as con:
        con.execute(sql)


def _runs(url: str, after: int = 0) -> list[dict]:
    from etl import target

    engine = target.connect(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(target.ingest_run).where(target.ingest_run.c.runKey > after)
                .order_by(target.ingest_run.c.runKey))]
    finally:
        engine.dispose()


def _last_key(url: str) -> int:
    return max((r["runKey"] for r in _runs(url)), default=0)


def _scalar(url: str, sql: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


def _states(dr) -> dict[tuple[str, str | None], str]:
    return {(ti.task_id, ti.rendered_map_index): str(ti.state) for ti in dr.get_task_instances()}


def _ingested(dr) -> None:
    """The run and every task of it succeeded."""
    bad = {k: v for k, v in _states(dr).items() if v != "success"}
    assert not bad and str(dr.state) == "success", bad


def _source_count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as con:
        return int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.mark.airflow
def test_a_unit_and_a_dataset_added_between_two_daily_runs_get_their_history_on_the_next(
        airflow_db, dagbag, demo, sqlite_url: str) -> None:
    from etl.onboarding.demo_data import UNIT_A, UNIT_B

    folder, made = demo
    _drop_in(folder, "苏州电梯", UNIT_B, made[UNIT_B], without=("09",))
    daily = dagbag().dags["dual_prevention_daily"]
    _ingested(daily.test(logical_date=DAY1))
    first = _runs(sqlite_url)
    assert {(r["mapping"], r["txCode"], r["mode"]) for r in first} == {
        ("苏州电梯", "06", "full"), ("苏州电梯", "07", "full")}
    assert all(r["message"].startswith("first load") for r in first)
    assert [r["extracted"] for r in first] == [_source_count(made[UNIT_B], "fxd_xx"),
                                               _source_count(made[UNIT_B], "wxy_xx")]

    # between the runs: a new unit's file dropped in, and 09 added to the first unit's mapping
    _drop_in(folder, "南京化工", UNIT_A, made[UNIT_A])
    _drop_in(folder, "苏州电梯", UNIT_B, made[UNIT_B])
    before = _last_key(sqlite_url)
    _ingested(daily.test(logical_date=DAY2))
    second = {(r["mapping"], r["txCode"]): r for r in _runs(sqlite_url, before)}
    assert {k: r["mode"] for k, r in second.items()} == {
        ("南京化工", "06"): "full", ("南京化工", "07"): "full", ("南京化工", "09"): "full",
        ("苏州电梯", "06"): "incremental", ("苏州电梯", "07"): "incremental",
        ("苏州电梯", "09"): "full"}
    assert second[("南京化工", "09")]["extracted"] == _source_count(made[UNIT_A], "t_hidden_danger")
    assert second[("苏州电梯", "09")]["extracted"] == _source_count(made[UNIT_B], "yh_pc")
    assert second[("苏州电梯", "06")]["extracted"] == 0  # nothing changed in its window
    assert _scalar(sqlite_url, "SELECT COUNT(*) FROM hidden_danger") > 0

    before = _last_key(sqlite_url)
    _ingested(daily.test(logical_date=DAY3))
    assert {r["mode"] for r in _runs(sqlite_url, before)} == {"incremental"}  # afterwards


@pytest.mark.airflow
def test_a_row_deleted_at_the_source_between_two_daily_runs_is_d_after_the_next(
        airflow_db, dagbag, demo, sqlite_url: str) -> None:
    from etl.onboarding.demo_data import UNIT_B

    folder, made = demo
    _drop_in(folder, "苏州电梯", UNIT_B, made[UNIT_B])
    daily = dagbag().dags["dual_prevention_daily"]
    _ingested(daily.test(logical_date=DAY1))
    hidden = _source_count(made[UNIT_B], "yh_pc")
    with sqlite3.connect(made[UNIT_B]) as con:  # a hard delete: this ERP keeps no delete flag
        gone = [r[0] for r in con.execute("SELECT yhbh FROM yh_pc ORDER BY yhbh LIMIT 2")]
        con.execute(f"DELETE FROM yh_pc WHERE yhbh IN ({', '.join('?' * len(gone))})", gone)

    before = _last_key(sqlite_url)
    _ingested(daily.test(logical_date=DAY2))
    run = next(r for r in _runs(sqlite_url, before) if r["txCode"] == "09")
    assert (run["mode"], run["extracted"], run["deleted"], run["sweptKeys"]) == (
        "incremental", 0, 2, hidden - 2)
    assert _scalar(sqlite_url, "SELECT COUNT(*) FROM hidden_danger WHERE \"busType\" = 'D'") == 2
    assert _scalar(sqlite_url, "SELECT COUNT(*) FROM ingest_batch WHERE \"busType\" = 'D'") == 1


@pytest.mark.airflow
def test_a_source_table_emptied_by_mistake_fails_its_dataset_and_marks_nothing_until_confirmed(
        airflow_db, dagbag, demo, sqlite_url: str) -> None:
    from etl.onboarding.demo_data import UNIT_A, UNIT_B

    folder, made = demo
    _drop_in(folder, "苏州电梯", UNIT_B, made[UNIT_B])
    _drop_in(folder, "南京化工", UNIT_A, made[UNIT_A])
    daily = dagbag().dags["dual_prevention_daily"]
    _ingested(daily.test(logical_date=DAY1))
    active = "SELECT COUNT(*) FROM risk_point WHERE \"orgNo\" = '91320506MA1W3L8P7L' AND \"busType\" != 'D'"
    points = _scalar(sqlite_url, active)
    assert points > 10
    _source_sql(made[UNIT_B], "DELETE FROM fxd_xx")  # a cleanup script run on the wrong table

    before = _last_key(sqlite_url)
    dr = daily.test(logical_date=DAY2)
    states = _states(dr)
    load = next(k for k in states if k[0] == "ingest.load")
    assert states[load] == "failed" and "苏州电梯 06" in load[1]
    assert str(dr.state) == "failed"
    runs = {(r["mapping"], r["txCode"]): r for r in _runs(sqlite_url, before)}
    refused = runs[("苏州电梯", "06")]
    assert refused["status"] == "failed"
    assert f"returned 0 keys where the target holds {points} active records" in refused["message"]
    assert "allow_mass_delete" in refused["message"]
    assert {k: r["status"] for k, r in runs.items() if k != ("苏州电梯", "06")} == dict.fromkeys(
        [("南京化工", tx) for tx in DAILY] + [("苏州电梯", "07"), ("苏州电梯", "09")], "success")
    assert _scalar(sqlite_url, active) == points  # nothing was marked

    # a person checked: the unit really removed its risk points; a manual run confirms
    before = _last_key(sqlite_url)
    _ingested(daily.test(logical_date=DAY2 + timedelta(hours=1), run_conf={
        "units": ["苏州电梯"], "tx_codes": ["06"], "allow_mass_delete": True}))
    (run,) = _runs(sqlite_url, before)
    assert (run["status"], run["deleted"]) == ("success", points)
    assert _scalar(sqlite_url, active) == 0


# --- fix, then clear the failed shard (a real scheduler) ------------------------------------------


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.mark.airflow
def test_fixing_a_failed_unit_then_clearing_its_shards_load_loads_it(tmp_path: Path) -> None:
    """As an operator does it: a run fails naming its broken units; the operator fixes their
    mapping files and clears the failed `ingest.load` (with its downstream tasks), as the
    failure text says. The scheduler runs the load again: it reads the fixed files and loads
    those units from their sources, leaves the unit it loaded alone, and refuses, by name, a unit
    whose file now names another orgNo and one whose file is gone."""
    from etl.onboarding.demo_data import ORG_B, UNIT_A, UNIT_B, make_demo_sources
    from helpers import org_no

    try:
        from airflow_cluster import AirflowCluster
    except ImportError:  # tests/ became a package
        from tests.airflow_cluster import AirflowCluster  # type: ignore[no-redef]

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    _drop_in(folder, "苏州电梯", UNIT_B, made[UNIT_B])
    nanjing = _drop_in(folder, "南京化工", UNIT_A, made[UNIT_A])
    _rewrite(nanjing, "riskNo:", "riskNumber:")  # invalid: no such field
    wuxi, changzhou, taizhou = (_drop_in(folder, name, UNIT_B, made[UNIT_B])
                                for name in ("无锡机械", "常州电梯", "泰州锅炉"))
    orgs = {wuxi: org_no("91320211MA1N2P3Q4"), changzhou: org_no("91320412MA1N2P3Q5"),
            taizhou: org_no("91321202MA1N2P3Q6")}
    for path, org in orgs.items():
        _rewrite(path, ORG_B, org)
        _rewrite(path, "table: yh_pc", "table: yh_pc_v2")  # no such table: fails at extract
    _rewrite(changzhou, "riskNo:", "riskNumber:")          # and invalid too
    target = tmp_path / "target.sqlite"
    with AirflowCluster(tmp_path / "airflow", parallelism=4, env={
            "ETL_MAPPINGS_DIR": str(folder), "ETL_STAGING_DIR": str(tmp_path / "staging"),
            "ETL_REPORTS_DIR": str(tmp_path / "report"), "ETL_TARGET_URL": f"sqlite:///{target}",
    }) as af:
        af.wait_for_dag("dual_prevention_daily")
        run_id = af.trigger("dual_prevention_daily", logical_date=DAY1)
        assert af.wait_for_run("dual_prevention_daily", run_id, timeout=240) == "failed", af.logs()
        (load,) = [t for t in af.task_instances("dual_prevention_daily", run_id)
                   if t["task_id"] == "ingest.load"]
        assert load["state"] == "failed"
        for name in ("南京化工", "无锡机械", "常州电梯", "泰州锅炉"):
            assert name in load["rendered_map_index"]
        assert "then clear this load task" in af.task_log("dual_prevention_daily", run_id,
                                                          "ingest.load", 0)

        # the fixes: two files mended, one mended under another orgNo, one removed
        _rewrite(nanjing, "riskNumber:", "riskNo:")
        _rewrite(wuxi, "table: yh_pc_v2", "table: yh_pc")
        _rewrite(changzhou, "riskNumber:", "riskNo:")
        _rewrite(changzhou, orgs[changzhou], org_no("91320412MA1N2P3Q7"))
        taizhou.unlink()
        cleared = af.clear("dual_prevention_daily", run_id, [("ingest.load", 0)])
        assert {t["task_id"] for t in cleared} >= {"ingest.load", "summarise"}
        assert af.wait_for_run("dual_prevention_daily", run_id, timeout=240) == "failed", af.logs()

    url = f"sqlite:///{target}"
    runs = _runs(url)
    ok = {(r["mapping"], r["txCode"]) for r in runs if r["status"] == "success"}
    assert ok == {(u, tx) for u in ("苏州电梯", "南京化工", "无锡机械") for tx in DAILY} | {
        ("泰州锅炉", "06"), ("泰州锅炉", "07")}  # its 09 failed, then its file was removed
    assert sum(1 for r in runs if r["mapping"] == "苏州电梯") == 3  # loaded once, left alone
    assert [r["mode"] for r in runs if r["mapping"] == "无锡机械" and r["txCode"] == "09"
            and r["status"] == "success"] == ["full"]  # its first load, once it could be read
    last = {r["mapping"]: r for r in runs if r["status"] == "failed"}
    assert "is now 91320412MA1N2P3Q7" in last["常州电梯"]["message"]
    assert "planned the file as " + orgs[changzhou] in last["常州电梯"]["message"]
    assert "gone since this run was planned" in last["泰州锅炉"]["message"]
