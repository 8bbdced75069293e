"""The Airflow DAGs (dags/dual_prevention.py) and their task bodies (etl/orchestrate.py).

Airflow reads its configuration when first imported, so tests/conftest.py points `AIRFLOW_HOME`
at a throwaway folder (SQLite metadata database) before any test imports airflow; the database is
created once per session. The end-to-end tests run `dag.test()` (every task in this process)
from real PostgreSQL and MariaDB sources into a real PostgreSQL target and compare the target
with an in-process `pipeline.run_mapping` of the same sources and windows.
"""

from __future__ import annotations

import ast
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"
DAG_FILE = DAGS / "dual_prevention.py"
MAPPINGS = ROOT / "mappings"
CST = ZoneInfo("Asia/Shanghai")

DAG_IDS = ("dual_prevention_daily", "dual_prevention_frequent", "dual_prevention_weekly")
# the standard's 5.4
DAILY, WEEKLY = ("06", "07", "09"), ("01", "02", "03", "04", "05", "08")
# dag.test(logical_date=...) runs the interval that ends at the logical date
DAILY_RUN = datetime(2025, 3, 2, tzinfo=CST)     # window [2025-03-01, 2025-03-02) CST
WEEKLY_RUN = datetime(2025, 3, 3, tzinfo=CST)    # a Monday: window [2025-02-24, 2025-03-03) CST
IN_WINDOW = datetime(2025, 3, 1, 10, 0, 0)       # naive CST, inside both windows
OUT_OF_WINDOW = datetime(2025, 2, 1, 10, 0, 0)   # before both windows and their lookback


# --- Airflow ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata database (SQLite in the throwaway AIRFLOW_HOME)."""
    from airflow.utils import db

    db.initdb()


@pytest.fixture
def dagbag(monkeypatch: pytest.MonkeyPatch):
    """Parse the DAGs folder (each test may set ETL_MAPPINGS_DIR first)."""
    from airflow.dag_processing.dagbag import DagBag

    def parse():
        return DagBag(dag_folder=str(DAGS))

    return parse


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "staging"
    monkeypatch.setenv("ETL_STAGING_DIR", str(folder))
    return folder


def _states(dr) -> dict[tuple[str, str | None], tuple[str, int]]:
    """{(task_id, map index label): (state, try_number)} of a finished dag run."""
    out = {}
    for ti in dr.get_task_instances():
        label = ti.rendered_map_index or (str(ti.map_index) if ti.map_index >= 0 else None)
        out[(ti.task_id, label)] = (str(ti.state), ti.try_number)
    return out


# --- DAG integrity ----------------------------------------------------------------------------


def test_dagbag_has_no_import_errors(dagbag) -> None:
    bag = dagbag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == list(DAG_IDS)


def test_dag_file_imports_no_etl_pandas_or_sqlalchemy_at_top_level() -> None:
    tree = ast.parse(DAG_FILE.read_text(encoding="utf-8"))
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert not top & {"etl", "pandas", "sqlalchemy", "pyarrow", "yaml"}, top


@pytest.mark.parametrize(("dag_id", "cron"), [
    ("dual_prevention_daily", "0 0 * * *"),
    ("dual_prevention_weekly", "0 0 * * 1"),
    ("dual_prevention_frequent", "*/5 * * * *"),
])
def test_schedule_is_a_cst_cron_with_data_intervals(dagbag, dag_id: str, cron: str) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    dag = dagbag().dags[dag_id]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == cron
    assert getattr(dag.timetable.timezone, "name", dag.timetable.timezone) == "Asia/Shanghai"
    assert dag.start_date == datetime(2025, 1, 1, tzinfo=CST)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.doc_md and "Dual prevention" in dag.doc_md


def test_daily_interval_is_the_cst_day_before(dagbag) -> None:
    from airflow.serialization.encoders import coerce_to_core_timetable

    tt = coerce_to_core_timetable(dagbag().dags["dual_prevention_daily"].timetable)
    interval = tt.infer_manual_data_interval(run_after=DAILY_RUN)
    assert interval.start == datetime(2025, 3, 1, tzinfo=CST)
    assert interval.end == datetime(2025, 3, 2, tzinfo=CST)


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_dag_has_tags_and_every_work_task_retries_with_backoff(dagbag, dag_id: str) -> None:
    dag = dagbag().dags[dag_id]
    assert {"dual-prevention", "etl"} <= set(dag.tags)
    for t in dag.tasks:
        if t.task_id == "summarise":
            assert t.retries == 0  # it only reports; a failed unit fails it on purpose
            continue
        assert t.retries >= 2, t.task_id
        assert t.retry_exponential_backoff, t.task_id
        assert t.max_retry_delay is not None, t.task_id


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_task_graph_fans_out_per_unit_and_dataset(dagbag, dag_id: str) -> None:
    from airflow.sdk import TriggerRule

    dag = dagbag().dags[dag_id]
    edges = {(up, t.task_id) for t in dag.tasks for up in t.upstream_task_ids}
    assert set(dag.task_ids) == {
        "plan_units", "ingest.extract", "ingest.validate", "ingest.load", "plan_referencing",
        "ingest_referencing.extract", "ingest_referencing.validate", "ingest_referencing.load",
        "summarise"}
    for group in ("ingest", "ingest_referencing"):
        assert (f"{group}.extract", f"{group}.validate") in edges
        assert (f"{group}.validate", f"{group}.load") in edges
        for stage in ("extract", "validate", "load"):
            task = dag.get_task(f"{group}.{stage}")
            assert type(task.task_group).__name__ == "MappedTaskGroup", task  # one per dataset
            assert task.trigger_rule == TriggerRule.ALL_SUCCESS
    assert ("plan_units", "ingest.extract") in edges
    assert ("ingest.load", "plan_referencing") in edges
    assert ("plan_referencing", "ingest_referencing.extract") in edges
    assert dag.get_task("plan_referencing").trigger_rule == TriggerRule.ALL_DONE
    summarise = dag.get_task("summarise")
    assert summarise.trigger_rule == TriggerRule.ALL_DONE
    assert {"plan_units", "plan_referencing", "ingest.load", "ingest_referencing.load"} <= summarise.upstream_task_ids


def test_trigger_form_offers_units_tx_codes_mode_and_window(dagbag) -> None:
    dag = dagbag().dags["dual_prevention_daily"]
    params = dag.params
    assert set(params.keys()) == {"units", "tx_codes", "mode", "since", "until"}
    assert params["mode"] == "incremental"
    assert params["units"] == [] and params["tx_codes"] == []
    assert params.get_param("mode").schema["enum"] == ["incremental", "full"]
    assert set(params.get_param("units").schema["examples"]) >= {"demo_jinling_chem", "demo_suzhou_lift"}


def test_a_new_mapping_file_shows_in_the_form_at_the_next_parse(dagbag, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", folder / "unit_one.yaml")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    assert dagbag().dags["dual_prevention_daily"].params.get_param("units").schema["examples"] == ["unit_one"]
    shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", folder / "unit_two.yaml")
    assert dagbag().dags["dual_prevention_daily"].params.get_param("units").schema["examples"] == [
        "unit_one", "unit_two"]


# --- planning (etl.orchestrate.units_for) ------------------------------------------------------


def _pairs(items: list[dict]) -> list[tuple[str, str | None]]:
    return [(Path(i["mapping"]).stem, i["tx"]) for i in items]


def test_daily_and_weekly_take_the_standards_frequencies() -> None:
    from etl import orchestrate

    daily = orchestrate.units_for("daily", wave=0, mappings=MAPPINGS) + orchestrate.units_for(
        "daily", wave=1, mappings=MAPPINGS)
    weekly = orchestrate.units_for("weekly", wave=0, mappings=MAPPINGS) + orchestrate.units_for(
        "weekly", wave=1, mappings=MAPPINGS)
    for unit in ("demo_jinling_chem", "demo_suzhou_lift"):
        assert sorted(tx for u, tx in _pairs(daily) if u == unit) == list(DAILY)
        assert sorted(tx for u, tx in _pairs(weekly) if u == unit) == list(WEEKLY)
    assert orchestrate.units_for("frequent", mappings=MAPPINGS) == []


def test_referencing_datasets_wait_for_the_ones_they_refer_to() -> None:
    from etl import orchestrate

    assert {tx for _, tx in _pairs(orchestrate.units_for("daily", wave=0, mappings=MAPPINGS))} == {"06", "09"}
    assert {tx for _, tx in _pairs(orchestrate.units_for("daily", wave=1, mappings=MAPPINGS))} == {"07"}
    assert {tx for _, tx in _pairs(orchestrate.units_for("weekly", wave=1, mappings=MAPPINGS))} == {"03"}
    # 07 alone: nothing of this run to wait for
    alone = orchestrate.units_for("daily", wave=0, mappings=MAPPINGS, params={"tx_codes": ["07"]})
    assert {tx for _, tx in _pairs(alone)} == {"07"}


def test_windows_come_from_the_data_interval_unless_params_give_them() -> None:
    from etl import orchestrate

    start, end = datetime(2025, 3, 1, tzinfo=CST), datetime(2025, 3, 2, tzinfo=CST)
    items = orchestrate.units_for("daily", mappings=MAPPINGS, interval=(start, end),
                                  dag_id="d", run_id="scheduled__x")
    assert {(i["since"], i["until"], i["mode"]) for i in items} == {
        ("2025-03-01T00:00:00+08:00", "2025-03-02T00:00:00+08:00", "incremental")}
    assert {i["run_id"] for i in items} == {"airflow__d__scheduled__x"}
    manual = orchestrate.units_for("daily", mappings=MAPPINGS, interval=(start, end), params={
        "mode": "full", "since": "2025-01-01", "until": "2025-01-05T12:00:00+00:00"})
    assert {(i["since"], i["until"], i["mode"]) for i in manual} == {
        ("2025-01-01T00:00:00+08:00", "2025-01-05T20:00:00+08:00", "full")}
    # a manual run without logical date: no interval; the pipeline resumes from the last window
    assert {(i["since"], i["until"]) for i in orchestrate.units_for("daily", mappings=MAPPINGS)} == {(None, None)}


def test_units_and_tx_codes_params_select(tmp_path: Path) -> None:
    from etl import orchestrate

    items = orchestrate.units_for("daily", mappings=MAPPINGS, params={
        "units": ["demo_suzhou_lift"], "tx_codes": ["6", "09"]})
    assert _pairs(items) == [("demo_suzhou_lift", "06"), ("demo_suzhou_lift", "09")]


def test_unknown_unit_or_bad_param_fails_the_plan_without_retry() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from etl import orchestrate

    with pytest.raises(AirflowFailException, match="no mapping file nope.*demo_jinling_chem"):
        orchestrate.units_for("daily", mappings=MAPPINGS, params={"units": ["nope"]})
    with pytest.raises(AirflowFailException, match="mode='sometimes'"):
        orchestrate.units_for("daily", mappings=MAPPINGS, params={"mode": "sometimes"})
    with pytest.raises(AirflowFailException, match="since='yesterday'"):
        orchestrate.units_for("daily", mappings=MAPPINGS, params={"since": "yesterday"})


def _with_frequency(folder: Path, overrides: dict[str, str]) -> Path:
    """The suzhou demo mapping with `frequency:` set on some datasets."""
    import yaml

    raw = yaml.safe_load((MAPPINGS / "demo_suzhou_lift.yaml").read_text(encoding="utf-8"))
    for tx, freq in overrides.items():
        raw["datasets"][tx]["frequency"] = freq
    folder.mkdir(exist_ok=True)
    path = folder / "fast_unit.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return folder


def test_frequency_overrides_move_datasets_between_dags(tmp_path: Path) -> None:
    from etl import orchestrate

    folder = _with_frequency(tmp_path / "m", {"06": "hourly", "09": "15min", "01": "daily"})
    every = lambda f: orchestrate.units_for(f, wave=0, mappings=folder) + orchestrate.units_for(  # noqa: E731
        f, wave=1, mappings=folder)
    assert sorted(tx for _, tx in _pairs(every("daily"))) == ["01", "07"]
    assert "01" not in [tx for _, tx in _pairs(every("weekly"))]

    def tick(hh: int, mm: int) -> list[dict]:
        end = datetime(2025, 3, 1, hh, mm, tzinfo=CST)
        return orchestrate.units_for("frequent", mappings=folder,
                                     interval=(end - timedelta(minutes=5), end))

    assert [(i["tx"], i["since"], i["until"]) for i in tick(10, 0)] == [
        ("06", "2025-03-01T09:00:00+08:00", "2025-03-01T10:00:00+08:00"),
        ("09", "2025-03-01T09:45:00+08:00", "2025-03-01T10:00:00+08:00")]
    assert [i["tx"] for i in tick(10, 15)] == ["09"]
    assert tick(10, 5) == []
    # a manual run without logical date takes every override, from where each last stopped
    assert [(i["tx"], i["since"]) for i in orchestrate.units_for("frequent", mappings=folder)] == [
        ("06", None), ("09", None)]


def test_an_invalid_mapping_is_planned_as_one_failing_item(tmp_path: Path) -> None:
    from etl import orchestrate

    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", folder / "good.yaml")
    (folder / "broken.yaml").write_text(BROKEN_MAPPING, encoding="utf-8")
    items = orchestrate.units_for("daily", mappings=folder)
    bad = [i for i in items if i["tx"] is None]
    assert [i["label"] for i in bad] == ["broken (invalid mapping)"]
    assert "datasets.06.fields.riskNumber" in bad[0]["problems"]
    assert {tx for u, tx in _pairs(items) if u == "good"} == {"06", "09"}


BROKEN_MAPPING = """\
unit:
  orgNo: "91320115MA1R7KX30X"
  comName: 南京某某化工有限公司
source:
  url_env: BROKEN_UNIT_SOURCE_URL
datasets:
  "06":
    table: t_risk_point
    key: [id]
    fields:
      riskNumber: point_no
"""


def test_terminal_errors_fail_at_once_and_transient_ones_are_left_to_retries() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from etl import orchestrate
    from etl.errors import MappingError, SourceError, SourceSchemaError

    with pytest.raises(AirflowFailException, match="unit 06: .*broken.yaml"):
        with orchestrate._airflow_errors("unit 06"):
            raise MappingError(["broken.yaml [datasets.06] ..."])
    with pytest.raises(AirflowFailException, match="no column"):
        with orchestrate._airflow_errors("unit 06"):
            raise SourceSchemaError("no column 'x'")
    with pytest.raises(SourceError, match="connection reset"):  # Airflow retries it
        with orchestrate._airflow_errors("unit 06"):
            raise SourceError("connection reset")


# --- Parquet staging ---------------------------------------------------------------------------


def test_parquet_staging_keeps_every_value_and_its_type(tmp_path: Path) -> None:
    from datetime import date
    from decimal import Decimal

    import numpy as np
    import pandas as pd

    from etl.orchestrate import read_frame, write_frame

    frame = pd.DataFrame({
        "mixed": ["2024-01-05", 20240105, None, 3.5, "20240105"],
        "decimals": [Decimal("1.5"), Decimal("2.25"), None, Decimal("10"), Decimal("0.100")],
        "text": ["a", None, "c", "  d ", "\u3000"],
        "dates": [date(2024, 1, 1), None, date(9999, 12, 31), date(1, 1, 1), date(2024, 2, 29)],
        "ints": [1, 2, 3, 4, 5],
        "floats": [1.0, np.nan, 2.5, 3.0, 4.0],
        "stamps": pd.to_datetime(["2024-01-01 10:00", None, "2024-01-02 00:00", "2024-01-03 00:00", "2024-01-04 00:00"]),
        "flags": [True, False, None, True, False],
        "binary": [b"\x00\x01", None, b"", b"x", b"y"],
        "huge": [datetime(9999, 12, 31, 23, 59), datetime(2024, 1, 1), None, datetime(1, 1, 1), datetime(2024, 1, 1)],
    })
    path = tmp_path / "chunk.parquet"
    write_frame(frame, path)
    back = read_frame(path)
    assert list(back.columns) == list(frame.columns)
    assert back.dtypes.to_dict() == frame.dtypes.to_dict()
    for col in frame.columns:
        for a, b in zip(frame[col], back[col], strict=True):
            if a is None or (isinstance(a, float) and np.isnan(a)) or a is pd.NaT:
                assert b is None or (isinstance(b, float) and np.isnan(b)) or b is pd.NaT, (col, a, b)
            else:
                assert (type(a), a) == (type(b), b), (col, a, b)
    assert str(back["decimals"][4]) == "0.100"


# --- dag.test() end to end -----------------------------------------------------------------------


def _copy_demo_tables(sqlite_path: Path, url: str, updated_at: str, stale_every: int = 4) -> None:
    """Copy a demo unit's SQLite tables into a server database, as a real source would hold
    them: the update-time column becomes a TIMESTAMP, set inside the test window except every
    `stale_every`-th row, which is set long before it."""
    import pandas as pd
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with sqlite3.connect(sqlite_path) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for name in tables:
            frame = pd.read_sql_query(f'SELECT * FROM "{name}"', con)
            for col in frame.columns:
                if frame[col].dtype == object:
                    kinds = {type(v) for v in frame[col] if v is not None}
                    if len(kinds) > 1:  # SQLite's mixed columns become text, as in any typed database
                        frame[col] = frame[col].map(lambda v: None if v is None else str(v))
            if updated_at in frame.columns:
                frame[updated_at] = [OUT_OF_WINDOW if n % stale_every == stale_every - 1 else IN_WINDOW
                                     for n in range(len(frame))]
            frame.to_sql(name, engine, index=False)
    engine.dispose()


@pytest.fixture
def real_sources(tmp_path: Path, pg_url: str, mariadb_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The two demo units on real servers: unit A in PostgreSQL (url_env), unit B in MariaDB
    (an Airflow connection, conn_id). Returns the mappings folder."""
    import yaml
    from sqlalchemy.engine import make_url

    from etl.demo_data import UNIT_A, UNIT_B, make_demo_sources

    made = make_demo_sources(tmp_path / "demo")
    _copy_demo_tables(made[UNIT_A], pg_url, "modify_time")
    _copy_demo_tables(made[UNIT_B], mariadb_url, "last_update")
    folder = tmp_path / "mappings"
    folder.mkdir()
    monkeypatch.setenv("TEST_UNIT_A_SOURCE_URL", pg_url)
    maria = make_url(mariadb_url)
    monkeypatch.setenv("AIRFLOW_CONN_TEST_UNIT_B_SOURCE",
                       f"mysql://{maria.username}@{maria.host}:{maria.port}/{maria.database}")
    for stem, source in ((UNIT_A, {"url_env": "TEST_UNIT_A_SOURCE_URL"}),
                         (UNIT_B, {"conn_id": "test_unit_b_source"})):
        raw = yaml.safe_load((MAPPINGS / f"{stem}.yaml").read_text(encoding="utf-8"))
        raw["source"] = source
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    return folder


TARGET_PASSWORD = "s3cret-target-pw"  # the test server trusts 127.0.0.1 and ignores it


@pytest.fixture
def pg_target(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The target, given as the Airflow connection etl_target (with a password to mask)."""
    from sqlalchemy.engine import make_url

    u = make_url(pg_url)
    monkeypatch.delenv("ETL_TARGET_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_ETL_TARGET",
                       f"postgres://{u.username}:{TARGET_PASSWORD}@{u.host}:{u.port}/{u.database}")
    return pg_url


def _reference_run(mappings: Path, tx_codes: tuple[str, ...], since: datetime, until: datetime,
                   url: str) -> None:
    """What `etl run --mode incremental --since --until` makes of the same sources."""
    from etl import orchestrate, pipeline, target
    from etl.mapping import discover, load_mapping

    engine = target.connect(url)
    try:
        with orchestrate._in_project():
            for path in discover(mappings):
                pipeline.run_mapping(engine, load_mapping(path), list(tx_codes), mode="incremental",
                                     since=since, until=until)
    finally:
        engine.dispose()


def _snapshot(url: str, tx_codes: tuple[str, ...]) -> dict:
    """Per table the (ID, rowHash, busType) rows, and the counts of each ingest_run row."""
    import sqlalchemy as sa

    from etl import standard, target

    engine = target.connect(url)
    out: dict = {}
    try:
        with engine.connect() as conn:
            for tx in tx_codes:
                t = standard.dataset(tx).table
                out[t] = sorted(tuple(r) for r in conn.execute(
                    sa.text(f'SELECT "ID", "rowHash", "busType" FROM {t}')))
            out["runs"] = sorted(tuple(r) for r in conn.execute(sa.text(
                'SELECT "orgNo", "txCode", "mode", "status", "extracted", "inserted", "updated", '
                '"deleted", "unchanged", "rejected", "duplicates", "warnings" FROM ingest_run')))
    finally:
        engine.dispose()
    return out


def _count(url: str, sql: str) -> int:
    import sqlalchemy as sa

    from etl import target

    engine = target.connect(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())
    finally:
        engine.dispose()


def _assert_all_succeeded(dr) -> None:
    states = _states(dr)
    bad = {k: v for k, v in states.items() if v[0] not in ("success", "skipped")}
    assert not bad, bad
    assert str(dr.state) == "success"


def _run_and_compare(dagbag, dag_id: str, logical_date, period: timedelta, tx_codes,
                     sources: Path, pg_target: str, tmp_path: Path) -> dict:
    """Run the DAG, check every unit × dataset was loaded, and compare the target with an
    in-process run of the same window; returns the target's snapshot."""
    dr = dagbag().dags[dag_id].test(logical_date=logical_date)
    _assert_all_succeeded(dr)
    labels = {label for (task, label) in _states(dr) if task.endswith(".load")}
    assert labels == {f"{u} {tx}" for u in ("demo_jinling_chem", "demo_suzhou_lift") for tx in tx_codes}

    reference = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    _reference_run(sources, tx_codes, logical_date - period, logical_date, reference)
    got, want = _snapshot(pg_target, tx_codes), _snapshot(reference, tx_codes)
    assert got == want
    return got


@pytest.mark.airflow
def test_daily_dag_loads_its_window_from_postgres_and_mariadb_into_postgres_and_reruns_add_nothing(
        airflow_db, dagbag, real_sources: Path, pg_target: str, staging: Path, tmp_path: Path) -> None:
    got = _run_and_compare(dagbag, "dual_prevention_daily", DAILY_RUN, timedelta(days=1), DAILY,
                           real_sources, pg_target, tmp_path)
    assert all(got[t] for t in ("risk_point", "hazard_source", "hidden_danger"))
    # the window held: stale source rows were not read
    extracted = _count(pg_target, 'SELECT SUM("extracted") FROM ingest_run')
    assert 0 < extracted < 231  # 231 = every daily source row of both units
    assert _count(pg_target, "SELECT COUNT(*) FROM ingest_run WHERE \"windowStart\" <> '2025-03-01 00:00:00'"
                             " OR \"windowEnd\" <> '2025-03-02 00:00:00'") == 0
    assert not any(staging.rglob("*.parquet"))  # staging removed after each load

    from airflow.sdk.log import _secrets_masker  # the target password was registered for masking
    assert TARGET_PASSWORD not in _secrets_masker().redact(f"url with {TARGET_PASSWORD} in it")

    batches = _count(pg_target, "SELECT COUNT(*) FROM ingest_batch")
    runs = _count(pg_target, "SELECT COUNT(*) FROM ingest_run")
    again = dagbag().dags["dual_prevention_daily"].test(logical_date=DAILY_RUN)
    _assert_all_succeeded(again)
    assert _count(pg_target, "SELECT COUNT(*) FROM ingest_batch") == batches
    assert _count(pg_target, "SELECT COUNT(*) FROM ingest_run") == runs + 6
    assert _count(pg_target, f'SELECT SUM("inserted" + "updated" + "deleted") FROM ingest_run '
                             f'WHERE "runKey" > {runs}') == 0


@pytest.mark.airflow
def test_weekly_dag_loads_from_postgres_and_mariadb_into_postgres(
        airflow_db, dagbag, real_sources: Path, pg_target: str, staging: Path, tmp_path: Path) -> None:
    got = _run_and_compare(dagbag, "dual_prevention_weekly", WEEKLY_RUN, timedelta(days=7), WEEKLY,
                           real_sources, pg_target, tmp_path)
    assert all(got[t] for t in ("unit_info", "unit_dept", "unit_person", "safety_rule",
                                "safety_training", "risk_gallery"))
    # unit A has no updated_at on its weekly tables: full loads; unit B's are incremental
    modes = {(org, tx): mode for org, tx, mode, *_ in got["runs"]}
    from etl.demo_data import ORG_A, ORG_B
    assert {modes[(ORG_A, tx)] for tx in WEEKLY} == {"full"}
    assert {modes[(ORG_B, tx)] for tx in WEEKLY} == {"incremental"}


@pytest.mark.airflow
def test_a_broken_mapping_fails_only_its_own_unit(airflow_db, dagbag, tmp_path: Path, sqlite_url: str,
                                                 staging: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from etl.demo_data import UNIT_B, make_demo_sources

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    raw = yaml.safe_load((MAPPINGS / f"{UNIT_B}.yaml").read_text(encoding="utf-8"))
    raw["source"] = {"url": f"sqlite:///{made[UNIT_B]}"}
    (folder / "good_unit.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    (folder / "broken_unit.yaml").write_text(BROKEN_MAPPING, encoding="utf-8")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)

    dag = dagbag().dags["dual_prevention_daily"]
    dr = dag.test(logical_date=datetime(2025, 4, 2, tzinfo=CST),
                  run_conf={"tx_codes": ["06"], "mode": "full"})
    states = _states(dr)
    assert states[("ingest.extract", "broken_unit (invalid mapping)")] == ("failed", 1)  # no retries
    assert states[("ingest.validate", "1")][0] == "upstream_failed"
    for stage in ("extract", "validate", "load"):
        assert states[(f"ingest.{stage}", "good_unit 06")][0] == "success"
    assert states[("summarise", None)][0] == "failed"
    assert str(dr.state) == "failed"
    assert _count(sqlite_url, "SELECT COUNT(*) FROM risk_point") == 20


@pytest.mark.airflow
def test_bad_params_fail_the_run_at_planning_without_retries(airflow_db, dagbag, staging: Path) -> None:
    dag = dagbag().dags["dual_prevention_weekly"]
    dr = dag.test(logical_date=datetime(2025, 4, 7, tzinfo=CST), run_conf={"units": ["no_such_unit"]})
    states = _states(dr)
    assert states[("plan_units", None)] == ("failed", 1)
    assert states[("summarise", None)][0] == "failed"
    assert str(dr.state) == "failed"
