"""The Airflow DAGs (dags/dual_prevention.py) and their task bodies (etl/orchestration/tasks.py):
a shard of units is the unit of Airflow work (plan -> extract -> transform -> load -> summarise);
timeliness is a DAG of its own, woken by the ingestion runs' asset and a daily cron.

Airflow reads its configuration when first imported, so tests/conftest.py points `AIRFLOW_HOME`
at a throwaway folder (SQLite metadata database) before any test imports airflow; the database is
created once per session. The end-to-end tests run `dag.test()` (every task in this process)
from real PostgreSQL and MariaDB sources into a real PostgreSQL target and compare the target
with an in-process `pipeline.run_mapping` of the same sources and windows.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import BROKEN_MAPPING

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"
DAG_FILE = DAGS / "dual_prevention.py"
MAPPINGS = ROOT / "mappings"
CST = ZoneInfo("Asia/Shanghai")

INGESTION = ("dual_prevention_daily", "dual_prevention_frequent", "dual_prevention_weekly")
FRESHNESS = "dual_prevention_freshness"
DAG_IDS = tuple(sorted((*INGESTION, FRESHNESS)))
# the standard's 5.4
DAILY, WEEKLY = ("06", "07", "09"), ("01", "02", "03", "04", "05", "08")
# dag.test(logical_date=...) runs the interval that ends at the logical date
DAILY_RUN = datetime(2025, 3, 2, tzinfo=CST)     # window [2025-03-01, 2025-03-02) CST
WEEKLY_RUN = datetime(2025, 3, 3, tzinfo=CST)    # a Monday: window [2025-02-24, 2025-03-03) CST
IN_WINDOW = datetime(2025, 3, 1, 10, 0, 0)       # naive CST, inside both windows
OUT_OF_WINDOW = datetime(2025, 2, 1, 10, 0, 0)   # before both windows and their lookback


# --- Airflow (airflow_db, dagbag, staging: tests/conftest.py) ---------------------------------------


@pytest.fixture(autouse=True)
def _own_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target of the test's own unless the test names one: never the project's
    var/target.sqlite, which `etl demo` (the README's first command) fills."""
    monkeypatch.setenv("ETL_TARGET_URL", f"sqlite:///{tmp_path / 'own-target.sqlite'}")


def _states(dr) -> dict[tuple[str, str | None], tuple[str, int]]:
    """{(task_id, map index label): (state, try_number)} of a finished dag run."""
    out = {}
    for ti in dr.get_task_instances():
        label = ti.rendered_map_index or (str(ti.map_index) if ti.map_index >= 0 else None)
        out[(ti.task_id, label)] = (str(ti.state), ti.try_number)
    return out


# --- DAG integrity ----------------------------------------------------------------------------


def coerce_to_core(timetable):
    from airflow.serialization.encoders import coerce_to_core_timetable

    return coerce_to_core_timetable(timetable)


def test_dagbag_has_no_import_errors(dagbag) -> None:
    bag = dagbag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == list(DAG_IDS)


def test_dag_file_imports_only_the_settings_of_etl_at_top_level() -> None:
    """The DAG file reads its ETL_* settings at parse time through etl.common.settings, its
    notifiers and assets from etl.orchestration.alerts and .assets, and imports the rest of etl
    inside task bodies; none of them pulls in anything heavy."""
    import subprocess
    import sys

    tree = ast.parse(DAG_FILE.read_text(encoding="utf-8"))
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top |= {node.module} if node.module not in ("etl.common", "etl.orchestration") else {
                f"{node.module}.{a.name}" for a in node.names}
    # the settings, the notifiers and assets, and the timetable (the scheduler imports it too)
    assert {t for t in top if t.split(".")[0] == "etl"} == {
        "etl.common.settings", "etl.orchestration.alerts", "etl.orchestration.assets",
        "etl.orchestration.timetable"}, top
    assert not {t.split(".")[0] for t in top} & {"pandas", "sqlalchemy", "pyarrow", "yaml"}, top
    code = ("import sys; import etl.common.settings; print(sorted(m for m in ('pandas', "
            "'sqlalchemy', 'pyarrow', 'yaml', 'airflow') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    # (Airflow itself imports yaml)
    code = ("import sys; import etl.orchestration.timetable, etl.orchestration.alerts, "
            "etl.orchestration.assets; print(sorted(m for m in ('pandas', 'pyarrow', "
            "'etl.mapping', 'etl.pipeline', 'etl.orchestration.tasks', 'etl.target') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize(("dag_id", "cron"), [
    ("dual_prevention_daily", "0 0 * * *"),
    ("dual_prevention_weekly", "0 0 * * 1"),
    ("dual_prevention_frequent", "*/5 * * * *"),
])
def test_schedule_is_a_cst_cron_with_data_intervals(dagbag, dag_id: str, cron: str) -> None:
    from airflow.timetables.interval import CronDataIntervalTimetable

    from etl.orchestration.timetable import CstTimetable

    dag = dagbag().dags[dag_id]
    # daily and weekly: CST days and weeks whatever the browser's zone (tests/test_calendar.py)
    assert isinstance(dag.timetable, CstTimetable) == (dag_id != "dual_prevention_frequent")
    tt = coerce_to_core(dag.timetable)
    assert isinstance(tt, CronDataIntervalTimetable)
    assert tt.summary == cron
    assert getattr(tt._timezone, "name", tt._timezone) == "Asia/Shanghai"
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
        if t.task_id in ("summarise", "reconcile", "report_pages", "report", "freshness"):
            assert t.retries == 0  # they only report; a failed or late unit fails them on purpose
            continue
        assert dag_id != FRESHNESS, t.task_id  # its one task is the check
        assert t.retries >= 2, t.task_id
        assert t.retry_exponential_backoff, t.task_id
        assert t.max_retry_delay is not None, t.task_id


@pytest.mark.parametrize("shard_tasks", ["one", "three", "queue"])
@pytest.mark.parametrize("dag_id", INGESTION)
def test_task_graph_is_plan_then_ingest_per_shard_then_summary(
        dagbag, dag_id: str, shard_tasks: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard is one task (`ingest.load`: extract, transform, load in memory) by default, or
    extract -> transform -> load (`ETL_SHARD_TASKS=three`, and by default when loads have their
    own Celery queue)."""
    from airflow.sdk import TriggerRule

    if shard_tasks == "queue":
        monkeypatch.setenv("ETL_LOAD_QUEUE", "loads")
    else:
        monkeypatch.setenv("ETL_SHARD_TASKS", shard_tasks)
    stages = ("load",) if shard_tasks == "one" else ("extract", "transform", "load")
    dag = dagbag().dags[dag_id]
    edges = {(up, t.task_id) for t in dag.tasks for up in t.upstream_task_ids}
    # then, before summarise (the leaf, whose state is the run's): the report site (timeliness
    # is a DAG's own), after the weekly reconciliation
    after = {"dual_prevention_frequent": {("ingest.load", "summarise")},
             "dual_prevention_daily": {("plan", "report_pages"), ("ingest.load", "report_pages"),
                                       ("report_pages", "report"), ("report", "summarise")},
             "dual_prevention_weekly": {("plan", "reconcile"), ("ingest.load", "reconcile"),
                                        ("plan", "report_pages"), ("reconcile", "report_pages"),
                                        ("report_pages", "report"), ("report", "summarise")}}[dag_id]
    shard = [f"ingest.{stage}" for stage in stages]
    assert set(dag.task_ids) == {"plan", *shard, "summarise"} | {t for edge in after for t in edge}
    assert {("plan", shard[0]), *zip(shard, shard[1:]), ("ingest.load", "summarise"),
            ("plan", "summarise")} | after == edges
    for t in {t for edge in after for t in edge} - {"plan", "ingest.load"}:
        assert dag.get_task(t).trigger_rule == TriggerRule.ALL_DONE, t  # whatever the loads did
    assert [t.task_id for t in dag.tasks if not t.downstream_task_ids] == ["summarise"]
    assert not any(t.is_setup or t.is_teardown for t in dag.tasks)
    for stage in stages:
        task = dag.get_task(f"ingest.{stage}")
        assert type(task.task_group).__name__ == "MappedTaskGroup", task  # one per shard
        assert task.trigger_rule == TriggerRule.ALL_SUCCESS
    load = dag.get_task("ingest.load")  # the one that writes the target: pool, queue, assets
    assert load.pool == "dual_prevention_target"
    assert load.queue == ("loads" if shard_tasks == "queue" else "default")
    assert load.python_callable.__name__ == ("ingest_shard" if shard_tasks == "one" else "load")
    assert dag.get_task("summarise").trigger_rule == TriggerRule.ALL_DONE


def test_an_unknown_shard_tasks_value_is_an_import_error_naming_it(
        dagbag, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_SHARD_TASKS", "two")
    errors = dagbag().import_errors
    assert len(errors) == 1
    assert "ETL_SHARD_TASKS='two': give one or three" in next(iter(errors.values()))


@pytest.mark.parametrize("dag_id", INGESTION)
def test_only_the_daily_and_weekly_report_updates_the_ingestion_asset(dagbag, dag_id: str) -> None:
    """The report runs after every daily or weekly run, whatever the loads did (ALL_DONE), so its
    asset event says "the target's bookkeeping changed" after each of them; the 5-minute DAG,
    with no report, would wake the freshness DAG 288 times a day."""
    from airflow.sdk import Asset, AssetAlias

    dag = dagbag().dags[dag_id]
    assert "freshness" not in dag.task_ids  # lateness never fails an ingestion run
    outlets = {t.task_id: t.outlets for t in dag.tasks if t.outlets}
    # every load adds, through its alias, events to the assets of the txCodes it loaded
    loads = {"ingest.load": [AssetAlias(name="dual_prevention_loaded", group="dual-prevention")]}
    if dag_id == "dual_prevention_frequent":
        assert outlets == loads
    else:
        assert outlets == {**loads, "report": [Asset(name="dual_prevention_ingestion",
                                                     uri="x-dual-prevention://target/ingest_run",
                                                     group="dual-prevention")]}
    # the nine assets are declared (summarise's inlets), so the DAG processor registers them
    # at parse: two loads emitting a first event at once never both create one (a load failed so)
    summarise = dag.get_task("summarise")
    assert summarise.inlets == [Asset(name=f"dual_prevention_0{n}", uri=f"x-dual-prevention://target/0{n}",
                                      group="dual-prevention") for n in range(1, 10)]


def test_the_freshness_dag_runs_on_the_ingestion_asset_or_a_cst_cron(dagbag) -> None:
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    dag = dagbag().dags[FRESHNESS]
    report = dagbag().dags["dual_prevention_daily"].get_task("report")
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert dag.timetable.asset_condition == report.outlets[0]
    cron = dag.timetable.timetable
    assert isinstance(cron, CronTriggerTimetable)
    assert cron.expression == "0 8 * * *"
    assert getattr(cron.timezone, "name", cron.timezone) == "Asia/Shanghai"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.start_date == datetime(2025, 1, 1, tzinfo=CST)
    assert dag.task_ids == ["freshness"] and dag.get_task("freshness").retries == 0
    assert "freshness" in dag.tags and "pending first load" in dag.doc_md


def test_trigger_form_offers_optional_units_and_tx_codes_mode_resume_window_and_shard_size(dagbag) -> None:
    dag = dagbag().dags["dual_prevention_daily"]
    params = dag.params
    assert set(params.keys()) == {"units", "tx_codes", "mode", "resume", "since", "until",
                                  "allow_mass_delete", "units_per_shard"}
    assert params["mode"] == "incremental" and params["resume"] is False
    assert params["allow_mass_delete"] is False  # a mass delete is confirmed run by run
    assert params["units"] is None and params["tx_codes"] is None
    # the form marks a field required unless its type allows null: empty means all
    for name in ("units", "tx_codes", "since", "until", "units_per_shard"):
        assert "null" in params.get_param(name).schema["type"], name
    assert params.get_param("mode").schema["enum"] == ["incremental", "full"]
    assert set(params.get_param("units").schema["examples"]) >= {"demo_jinling_chem", "demo_suzhou_lift"}
    assert params.get_param("tx_codes").schema["examples"] == ["06", "07", "09"]


def test_a_new_mapping_file_shows_in_the_form_at_the_next_parse(dagbag, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", folder / "苏州电梯.yaml")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    assert dagbag().dags["dual_prevention_daily"].params.get_param("units").schema["examples"] == ["苏州电梯"]
    shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", folder / "unit_two.yaml")
    assert dagbag().dags["dual_prevention_daily"].params.get_param("units").schema["examples"] == [
        "unit_two", "苏州电梯"]


def test_with_thousands_of_units_the_form_takes_names_as_text(dagbag, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    for n in range(2000):  # names only: parsing the DAG file reads no mapping
        (folder / f"单位{n:04d}.yaml").write_text("", encoding="utf-8")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    units = dagbag().dags["dual_prevention_daily"].params.get_param("units")
    assert "examples" not in units.schema  # a 2,000-entry dropdown is not usable; a text box is
    assert "全部 2000 个单位" in units.description and "南京*" in units.description


def test_the_trigger_form_speaks_chinese_and_keeps_its_param_names(dagbag) -> None:
    """The form's readers are Chinese; the param names are an interface (REST API, CLI)."""
    params = dagbag().dags["dual_prevention_daily"].params
    assert sorted(params.keys()) == sorted(["units", "tx_codes", "mode", "resume", "since", "until",
                                            "allow_mass_delete", "units_per_shard"])
    titles = {k: params.get_param(k).schema["title"] for k in params.keys()}
    assert titles["units"] == "使用单位" and titles["tx_codes"] == "数据信息类别（txCode）"
    for k in params.keys():
        text = titles[k] + params.get_param(k).description
        assert re.search("[\u4e00-\u9fff]", text), k


def test_terminal_errors_fail_at_once_and_transient_ones_are_left_to_retries() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from etl.orchestration import tasks as orchestrate
    from etl.common.errors import MappingError, SourceError, SourceSchemaError

    with pytest.raises(AirflowFailException, match="unit 06: .*broken.yaml"):
        with orchestrate._airflow_errors("unit 06"):
            raise MappingError(["broken.yaml [datasets.06] ..."])
    with pytest.raises(AirflowFailException, match="no column"):
        with orchestrate._airflow_errors("unit 06"):
            raise SourceSchemaError("no column 'x'")
    with pytest.raises(SourceError, match="connection reset"):  # Airflow retries it
        with orchestrate._airflow_errors("unit 06"):
            raise SourceError("connection reset")


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
            blobs = {c: sa.LargeBinary for c in frame.columns  # attachments' bytes stay bytes
                     if any(isinstance(v, bytes) for v in frame[c])}
            frame.to_sql(name, engine, index=False, dtype=blobs)
    engine.dispose()


@pytest.fixture
def real_sources(tmp_path: Path, pg_url: str, mariadb_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The two demo units on real servers: unit A in PostgreSQL (url_env), unit B in MariaDB
    (an Airflow connection, conn_id). Returns the mappings folder."""
    import yaml
    from sqlalchemy.engine import make_url

    from etl.onboarding.demo_data import UNIT_A, UNIT_B, make_demo_sources

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
        _files_under(raw, tmp_path / "demo")
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    return folder


def _files_under(raw: dict, var: Path) -> None:
    """Point a demo mapping's attachment folders (`file: {base: var/...}`) at `var`."""
    for ds in raw["datasets"].values():
        for rule in ds["fields"].values():
            if isinstance(rule, dict) and str((rule.get("file") or {}).get("base", "")).startswith("var/"):
                rule["file"]["base"] = str(var / rule["file"]["base"].removeprefix("var/"))


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
    """What an in-process incremental run of the same scheduled window makes of the same
    sources (a dataset never loaded is loaded in full, as on the schedule)."""
    from etl import pipeline, target
    from etl.orchestration import tasks as orchestrate
    from etl.mapping import discover, load_mapping

    engine = target.connect(url)
    try:
        with orchestrate._in_project():
            for path in discover(mappings):
                pipeline.run_mapping(engine, load_mapping(path), list(tx_codes), mode="incremental",
                                     since=since, until=until, scheduled=True)
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
    """Every task succeeded (or was skipped), and so did the run."""
    states = _states(dr)
    bad = {k: v for k, v in states.items() if v[0] not in ("success", "skipped")}
    assert not bad, bad
    assert str(dr.state) == "success"


def _loaded(url: str) -> set[tuple[str, str]]:
    """(unit, txCode) with a successful run record."""
    import sqlalchemy as sa

    from etl import target

    engine = target.connect(url)
    try:
        with engine.connect() as conn:
            return {tuple(r) for r in conn.execute(sa.text(
                'SELECT "mapping", "txCode" FROM ingest_run WHERE "status" = \'success\''))}
    finally:
        engine.dispose()


def _run_and_compare(dagbag, dag_id: str, logical_date, period: timedelta, tx_codes,
                     sources: Path, pg_target: str, tmp_path: Path, conf: dict | None = None) -> dict:
    """Run the DAG, check every unit × dataset was loaded, and compare the target with an
    in-process run of the same window; returns the target's snapshot."""
    dr = dagbag().dags[dag_id].test(logical_date=logical_date, run_conf=conf)
    _assert_all_succeeded(dr)
    assert _loaded(pg_target) == {(u, tx) for u in ("demo_jinling_chem", "demo_suzhou_lift")
                                  for tx in tx_codes}

    reference = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    _reference_run(sources, tx_codes, logical_date - period, logical_date, reference)
    got, want = _snapshot(pg_target, tx_codes), _snapshot(reference, tx_codes)
    assert got == want
    return got


@pytest.mark.airflow
@pytest.mark.parametrize("shard_tasks", ["one", "three"])
def test_daily_dag_loads_its_window_from_postgres_and_mariadb_into_postgres_and_reruns_add_nothing(
        airflow_db, dagbag, real_sources: Path, pg_target: str, staging: Path, tmp_path: Path,
        shard_tasks: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_SHARD_TASKS", shard_tasks)  # both forms write exactly etl run's rows
    got = _run_and_compare(dagbag, "dual_prevention_daily", DAILY_RUN, timedelta(days=1), DAILY,
                           real_sources, pg_target, tmp_path, conf={"units_per_shard": 1})
    assert all(got[t] for t in ("risk_point", "hazard_source", "hidden_danger"))
    # never loaded: each dataset's first scheduled run loads its history, and says so
    assert _count(pg_target, 'SELECT SUM("extracted") FROM ingest_run') == 231  # every daily row
    assert _count(pg_target, "SELECT COUNT(*) FROM ingest_run WHERE \"mode\" = 'full' "
                             "AND \"message\" LIKE 'first load%'") == 6
    assert not [p for p in staging.rglob("*") if p.is_file()]  # a successful run leaves no staging

    from airflow.sdk.log import _secrets_masker  # the target password was registered for masking
    assert TARGET_PASSWORD not in _secrets_masker().redact(f"url with {TARGET_PASSWORD} in it")

    # the next day is incremental: its window (and lookback) only, stale source rows not read
    runs = _count(pg_target, "SELECT COUNT(*) FROM ingest_run")
    next_day = DAILY_RUN + timedelta(days=1)
    _assert_all_succeeded(dagbag().dags["dual_prevention_daily"].test(logical_date=next_day))
    new_runs = f'FROM ingest_run WHERE "runKey" > {runs}'
    assert 0 < _count(pg_target, f'SELECT SUM("extracted") {new_runs}') < 231
    assert _count(pg_target, f"SELECT COUNT(*) {new_runs} AND \"mode\" = 'incremental' AND "
                             f"\"windowStart\" = '2025-03-02 00:00:00' AND "
                             f"\"windowEnd\" = '2025-03-03 00:00:00'") == 6

    batches = _count(pg_target, "SELECT COUNT(*) FROM ingest_batch")
    runs = _count(pg_target, "SELECT COUNT(*) FROM ingest_run")
    again = dagbag().dags["dual_prevention_daily"].test(logical_date=next_day)
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
    # unit A has no updated_at on its weekly tables, unit B's were never loaded: full loads
    modes = {(org, tx): mode for org, tx, mode, *_ in got["runs"]}
    assert set(modes.values()) == {"full"} and len(modes) == 12
    # the weekly DAG reconciled every dataset of both units (5.3) and kept the results
    kept = _count(pg_target, 'SELECT COUNT(DISTINCT "orgNo" || "txCode") FROM ingest_reconcile')
    assert kept == 18
    assert (tmp_path / "report" / "reconcile.html").is_file()


def _asset_events(run_id: str) -> list[tuple[str, str]]:
    """(source DAG, source task) of the ingestion asset's events from a run."""
    import sqlalchemy as sa
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return [tuple(r) for r in session.execute(
            sa.select(AssetEvent.source_dag_id, AssetEvent.source_task_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "dual_prevention_ingestion", AssetEvent.source_run_id == run_id))]


def _age(path: Path, when: datetime) -> None:
    """Set a mapping file's modification time: when its unit was onboarded, for freshness."""
    os.utime(path, (when.timestamp(), when.timestamp()))


@pytest.mark.airflow
def test_lateness_fails_the_freshness_dag_never_an_ingestion_run_that_loaded_everything(
        airflow_db, dagbag, tmp_path: Path, sqlite_url: str, staging: Path,
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """A fresh deployment: the daily run loads its datasets and succeeds, though the unit's
    weekly datasets were never loaded (their first load is not due yet: pending); its report
    updates the asset, which queues the freshness DAG. That DAG passes while datasets are only
    pending, fails naming them once they are overdue, and passes once the weekly run loaded them."""
    import sqlalchemy as sa
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    from etl import target
    from etl.report import freshness
    from etl.onboarding.demo_data import UNIT_B, make_demo_sources

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    mapping = _demo_unit_mapping(folder, "苏州电梯", {"url": f"sqlite:///{made[UNIT_B]}"})
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    today = datetime.now(CST).replace(hour=0, minute=0, second=0, microsecond=0)
    check = dagbag().dags[FRESHNESS]

    def statuses() -> dict[str, str]:
        engine = target.connect(sqlite_url)
        try:
            return {s.tx_code: s.status for s in freshness.statuses(engine, freshness.load_units(folder))}
        finally:
            engine.dispose()

    # deployed just now, nothing loaded: the 08:00 check has nothing to alert about
    _assert_all_succeeded(check.test(logical_date=today + timedelta(hours=8)))
    assert set(statuses().values()) == {"pending"}

    with create_session() as session:  # the operator unpauses it (DAGs start paused)
        session.get(DagModel, FRESHNESS).is_paused = False
    try:
        dr = dagbag().dags["dual_prevention_daily"].test(logical_date=today, run_conf={"mode": "full"})
        _assert_all_succeeded(dr)  # green: it loaded everything it had to
        states = _states(dr)
        assert {task for task, _ in states} == {"plan", "ingest.load", "report_pages", "report",
                                                 "summarise"}
        assert states[("report_pages", "1/1")] == ("success", 1)  # the unit pages, one share
        assert statuses() == {**{tx: "on_time" for tx in DAILY}, **{tx: "pending" for tx in WEEKLY}}
        assert "苏州吴中电梯安装维保有限公司" in (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
        assert _asset_events(dr.run_id) == [("dual_prevention_daily", "report")]
        with create_session() as session:  # the report's asset event queued a freshness run
            asset = session.scalar(sa.select(AssetModel).where(
                AssetModel.name == "dual_prevention_ingestion"))
            assert session.scalars(sa.select(AssetDagRunQueue.target_dag_id).where(
                AssetDagRunQueue.asset_id == asset.id)).all() == [FRESHNESS]
    finally:
        with create_session() as session:
            session.get(DagModel, FRESHNESS).is_paused = True

    _assert_all_succeeded(check.test(logical_date=today + timedelta(hours=9)))

    # nine days on, still no weekly load: the weekly datasets are overdue, and only this DAG says so
    _age(mapping, datetime.now(CST) - timedelta(days=9))
    capfd.readouterr()
    dr = check.test(logical_date=today + timedelta(hours=10))
    assert _states(dr) == {("freshness", None): ("failed", 1)} and str(dr.state) == "failed"
    log = "".join(capfd.readouterr())  # the task's log: its failure names every overdue dataset
    assert ("AirflowFailException: 6 dataset(s) late, failing or never loaded: 苏州电梯 01 never, "
            "苏州电梯 02 never") in log, log[-3000:]

    weekly = dagbag().dags["dual_prevention_weekly"]
    _assert_all_succeeded(weekly.test(logical_date=today - timedelta(days=today.weekday()),
                                      run_conf={"mode": "full"}))
    assert set(statuses().values()) == {"on_time"}
    _assert_all_succeeded(check.test(logical_date=today + timedelta(hours=11)))


def _demo_unit_mapping(folder: Path, name: str, source: dict) -> Path:
    import yaml

    from etl.onboarding.demo_data import UNIT_B

    raw = yaml.safe_load((MAPPINGS / f"{UNIT_B}.yaml").read_text(encoding="utf-8"))
    raw["source"] = source
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path




@pytest.mark.airflow
def test_a_broken_mapping_fails_its_shard_by_name_without_retries_after_the_other_units_load(
        airflow_db, dagbag, tmp_path: Path, sqlite_url: str, staging: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy as sa

    from etl import target
    from etl.onboarding.demo_data import UNIT_B, make_demo_sources

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    _demo_unit_mapping(folder, "苏州电梯", {"url": f"sqlite:///{made[UNIT_B]}"})
    (folder / "南京化工.yaml").write_text(BROKEN_MAPPING, encoding="utf-8")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)

    dag = dagbag().dags["dual_prevention_daily"]
    dr = dag.test(logical_date=datetime(2025, 4, 2, tzinfo=CST),
                  run_conf={"tx_codes": ["06"], "mode": "full"})
    states = _states(dr)
    shard = "1/1 南京化工 … 苏州电梯 (2 units)"
    # the shard's load fails naming the unit, at once (an invalid mapping fails every try)
    assert states[("ingest.load", f"{shard} — failed: 南京化工 (invalid mapping)")] == ("failed", 1)
    assert states[("summarise", None)][0] == "failed"
    assert str(dr.state) == "failed"  # red, though the report after it succeeded
    assert states[("report", None)][0] == "success"  # and told the freshness DAG, as after any run
    assert _asset_events(dr.run_id) == [("dual_prevention_daily", "report")]
    assert _count(sqlite_url, "SELECT COUNT(*) FROM risk_point") == 20  # the other unit is loaded
    engine = target.connect(sqlite_url)
    with engine.connect() as conn:
        runs = conn.execute(sa.text('SELECT "mapping", "orgNo", "txCode", "status", "message" '
                                    'FROM ingest_run ORDER BY "runKey"')).all()
    engine.dispose()
    assert [(m, o, tx, st) for m, o, tx, st, _ in runs] == [
        ("南京化工", "91320115MA1R7KX30X", "", "failed"), ("苏州电梯", "91320506MA1W3L8P7L", "06", "success")]
    assert "datasets.06.fields.riskNumber" in runs[0][4]  # the run record says what to fix


@pytest.mark.airflow
def test_a_variable_missing_from_the_workers_environment_says_restart_or_use_a_connection(
        airflow_db, dagbag, tmp_path: Path, sqlite_url: str, staging: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Exporting a variable in a shell does not reach Airflow: inside a task, a missing
    `url_env` (extract) or `base_env` (transform, attachments) says to restart Airflow's
    processes with it, or to use a connection. Outside a task the same code says `export`."""
    import sqlalchemy as sa
    import yaml

    from etl import target
    from etl.common.settings import in_airflow_task
    from etl.onboarding.demo_data import UNIT_A, make_demo_sources
    from etl.common.errors import ConfigError
    from etl.source.connect import resolve_url
    from etl.mapping import SourceSpec

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    _demo_unit_mapping(folder, "无锡电梯", {"url_env": "WUXI_NOT_EXPORTED_URL"})
    raw = yaml.safe_load((MAPPINGS / f"{UNIT_A}.yaml").read_text(encoding="utf-8"))
    raw["source"] = {"url": f"sqlite:///{made[UNIT_A]}"}
    raw["datasets"] = {"08": {**raw["datasets"]["08"], "frequency": "daily"}}  # files, on the daily DAG
    raw["datasets"]["08"]["fields"]["riskFile"]["file"] = {"base_env": "NANJING_NOT_EXPORTED_FILES"}
    (folder / "南京化工.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    for name in ("WUXI_NOT_EXPORTED_URL", "NANJING_NOT_EXPORTED_FILES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)

    dr = dagbag().dags["dual_prevention_daily"].test(logical_date=datetime(2025, 4, 2, tzinfo=CST),
                                                     run_conf={"mode": "full"})
    assert str(dr.state) == "failed"
    engine = target.connect(sqlite_url)
    with engine.connect() as conn:
        failed = dict(conn.execute(sa.text('SELECT "mapping" || \' \' || "txCode", "message" FROM '
                                           'ingest_run WHERE "status" = \'failed\'')).all())
    engine.dispose()
    restart = ("is not in this Airflow worker's environment: Airflow's processes see only the "
               "variables set when they started; set it where the scheduler (LocalExecutor) or the "
               "Celery workers start and restart them, or use an Airflow connection (conn_id:), "
               "which needs no restart")
    assert sorted(failed) == ["南京化工 08", "无锡电梯 06", "无锡电梯 07", "无锡电梯 09"]
    assert failed["无锡电梯 06"].endswith(f"environment variable WUXI_NOT_EXPORTED_URL {restart}")
    assert failed["南京化工 08"].endswith(f"[datasets.08.fields.riskFile.file]: environment variable "
                                          f"NANJING_NOT_EXPORTED_FILES {restart}")
    # the task is over: this process is no Airflow task, though AIRFLOW_CTX_* stay set in it
    assert not in_airflow_task()
    with pytest.raises(ConfigError, match="WUXI_NOT_EXPORTED_URL is not set: export it with"):
        resolve_url(SourceSpec(url_env="WUXI_NOT_EXPORTED_URL"))


@pytest.mark.airflow
def test_units_with_purely_chinese_file_names_each_land_under_their_own_org_no(
        airflow_db, dagbag, tmp_path: Path, sqlite_url: str, staging: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: staging once named folders by the file name's ASCII letters only, so every
    purely Chinese name became `_`: two units shared one folder and one's rows were loaded under
    the other's orgNo. Each source's rows must land under its own unit, none lost."""
    import yaml

    from etl.cli import main as cli_main
    from etl.onboarding.demo_data import ORG_A, ORG_B, UNIT_A, UNIT_B, make_demo_sources

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    for name, unit in (("南京化工", UNIT_A), ("苏州电梯", UNIT_B)):
        raw = yaml.safe_load((MAPPINGS / f"{unit}.yaml").read_text(encoding="utf-8"))
        raw["source"] = {"url": f"sqlite:///{made[unit]}"}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)

    def points(url: str) -> dict[str, set[str]]:
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = con.execute('SELECT "orgNo", "riskNo" FROM risk_point WHERE "busType" != \'D\'').fetchall()
        finally:
            con.close()
        out: dict[str, set[str]] = {}
        for org, no in rows:
            out.setdefault(org, set()).add(no)
        return out

    dr = dagbag().dags["dual_prevention_daily"].test(
        logical_date=datetime(2025, 4, 2, tzinfo=CST), run_conf={"tx_codes": ["06"], "mode": "full"})
    _assert_all_succeeded(dr)
    # each unit alone, outside Airflow, into a target of its own
    expected: dict[str, set[str]] = {}
    for name in ("南京化工", "苏州电梯"):
        alone = f"sqlite:///{tmp_path / name}.sqlite"
        assert cli_main(["-q", "run", str(folder / f"{name}.yaml"), "--tx", "06",
                         "--target", alone]) == 0
        expected.update(points(alone))
    got = points(sqlite_url)
    assert set(got) == {ORG_A, ORG_B}
    assert got[ORG_A] and got[ORG_B] and not got[ORG_A] & got[ORG_B]
    assert got == expected


@pytest.mark.airflow
def test_bad_params_fail_the_run_at_planning_without_retries(airflow_db, dagbag, staging: Path) -> None:
    dag = dagbag().dags["dual_prevention_weekly"]
    dr = dag.test(logical_date=datetime(2025, 4, 7, tzinfo=CST), run_conf={"units": ["no_such_unit"]})
    states = _states(dr)
    assert states[("plan", None)] == ("failed", 1)
    assert states[("summarise", None)][0] == "failed"
    assert str(dr.state) == "failed"


# --- shards: retries and scale ---------------------------------------------------------------------


def _scale_units(folder: Path, count: int) -> list:
    """`count` copies of the demo unit, each its own SQLite source, Chinese file names."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from units import make_units
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return make_units(folder, count)


@pytest.mark.airflow
@pytest.mark.parametrize("shard_tasks", ["one", "three"])
def test_a_shards_retry_loads_only_the_unit_that_failed(
        airflow_db, dagbag, tmp_path: Path, pg_server: str, pg_url: str, staging: Path,
        monkeypatch: pytest.MonkeyPatch, shard_tasks: str) -> None:
    """One unit's source refuses connections (a transient failure): the shard's load loads the
    other units, then fails naming it; once the source is back, the retry loads that unit alone."""
    monkeypatch.setenv("ETL_SHARD_TASKS", shard_tasks)
    import threading

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from etl.onboarding.demo_data import UNIT_B, make_demo_sources
    from servers import create_database, drop_database

    units = _scale_units(tmp_path / "units", 3)
    folder = tmp_path / "units" / "mappings"
    source = create_database(pg_server)
    _copy_demo_tables(make_demo_sources(tmp_path / "demo")[UNIT_B], source, "last_update")
    monkeypatch.setenv("FLAKY_SOURCE_URL", source)
    _demo_unit_mapping(folder, "南京化工", {"url_env": "FLAKY_SOURCE_URL"})
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_TARGET_URL", pg_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    monkeypatch.setenv("ETL_RETRY_DELAY_SECONDS", "1")

    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    flaky = make_url(source).database

    def allow(yes: bool) -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{flaky}" WITH ALLOW_CONNECTIONS {str(yes).lower()}')

    others = {(u.name, tx) for u in units for tx in DAILY}
    flipped = threading.Event()

    def source_comes_back() -> None:
        """Once the flaky unit failed and every other unit is loaded, the source returns."""
        while not flipped.is_set():
            try:
                failed = _count(pg_url, "SELECT COUNT(*) FROM ingest_run WHERE \"mapping\" = '南京化工' "
                                        "AND \"status\" = 'failed'")
                if failed and _loaded(pg_url) >= others:
                    allow(True)
                    flipped.set()
            except Exception:  # the target's schema may not exist yet
                pass
            flipped.wait(0.2)

    allow(False)
    watcher = threading.Thread(target=source_comes_back, daemon=True)
    watcher.start()
    try:
        dr = dagbag().dags["dual_prevention_daily"].test(
            logical_date=DAILY_RUN, run_conf={"mode": "full"})
    finally:
        flipped.set()
        watcher.join(10)
        allow(True)
        admin.dispose()
    states = _states(dr)
    shard = "1/1 南京化工 … 苏州电梯0003 (4 units)"
    assert states[("ingest.load", shard)] == ("success", 2)  # failed once, then its retry passed
    _assert_all_succeeded(dr)
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        runs = conn.execute(sa.text('SELECT "mapping", "txCode", "status" FROM ingest_run '
                                    'ORDER BY "runKey"')).all()
    engine.dispose()
    flaky_runs = [(tx, st) for m, tx, st in runs if m == "南京化工"]
    assert flaky_runs == [(tx, "failed") for tx in DAILY] + [(tx, "success") for tx in DAILY]
    # the other units were loaded once, before the failure was raised, and not again
    assert sorted((m, tx) for m, tx, st in runs if m != "南京化工") == sorted(others)
    assert {st for m, tx, st in runs if m != "南京化工"} == {"success"}
    first_flaky_success = next(n for n, (m, _, st) in enumerate(runs) if m == "南京化工" and st == "success")
    assert all(n < first_flaky_success for n, (m, *_) in enumerate(runs) if m != "南京化工")
    drop_database(source)


def test_a_retry_after_a_try_lost_its_manifest_loads_nothing_twice(
        tmp_path: Path, sqlite_url: str, staging: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One task a shard: a try killed before it stored its manifest (a worker lost, a timeout)
    left its loads in the run records only; the retry skips them instead of loading them again."""
    from types import SimpleNamespace

    from etl.onboarding.demo_data import UNIT_B, make_demo_sources
    from etl.orchestration import staging as store_of, tasks as orchestrate

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    _demo_unit_mapping(folder, "苏州电梯", {"url": f"sqlite:///{made[UNIT_B]}"})
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    end = DAILY_RUN
    (ref,) = orchestrate.plan("daily", None, params={"mode": "full"},
                              interval=(end - timedelta(days=1), end),
                              dag_id="dual_prevention_daily", run_id="lost-manifest", slots=1)
    first = orchestrate.ingest(ref, None)
    assert first["loaded"] == 3 and first["failed"] == []
    runs = _count(sqlite_url, "SELECT COUNT(*) FROM ingest_run")
    assert runs == 3
    store = store_of.open_store()
    try:
        store.delete(f"{ref['prefix']}/load.json")  # as if the try died before storing it
    finally:
        store.close()
    again = orchestrate.ingest(ref, {"ti": SimpleNamespace(try_number=2)})
    assert again["loaded"] == 0 and again["failed"] == []
    assert _count(sqlite_url, "SELECT COUNT(*) FROM ingest_run") == runs  # nothing ran twice
    # a first try of another run of the same day loads them again (unchanged), as it should
    (other,) = orchestrate.plan("daily", None, params={"mode": "full"},
                                interval=(end - timedelta(days=1), end),
                                dag_id="dual_prevention_daily", run_id="next", slots=1)
    assert orchestrate.ingest(other, None)["loaded"] == 3
    assert _count(sqlite_url, "SELECT COUNT(*) FROM ingest_run") == runs + 3


@pytest.mark.airflow
@pytest.mark.parametrize(("dag_id", "tx_codes", "logical_date"), [
    ("dual_prevention_daily", DAILY, DAILY_RUN),
    ("dual_prevention_weekly", WEEKLY, WEEKLY_RUN),
])
def test_more_units_than_max_map_length_allowed_before(
        airflow_db, dagbag, tmp_path: Path, sqlite_url: str, staging: Path,
        monkeypatch: pytest.MonkeyPatch, dag_id: str, tx_codes: tuple[str, ...], logical_date) -> None:
    """12 units with max_map_length 8: one mapped instance per (unit, dataset) would need 24
    (daily) or 60 (weekly); two shards of 6 need 2. The target equals `etl run` of the same
    units."""
    from etl import pipeline, target
    from etl.mapping import load_mapping

    units = _scale_units(tmp_path / "units", 12)
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(tmp_path / "units" / "mappings"))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "8")
    dr = dagbag().dags[dag_id].test(logical_date=logical_date,
                                    run_conf={"mode": "full", "units_per_shard": 6})
    _assert_all_succeeded(dr)
    loads = [label for (task, label) in _states(dr) if task == "ingest.load"]
    assert sorted(loads) == ["1/2 苏州电梯0001 … 苏州电梯0006 (6 units)",
                             "2/2 苏州电梯0007 … 苏州电梯0012 (6 units)"]
    assert _loaded(sqlite_url) == {(u.name, tx) for u in units for tx in tx_codes}

    reference = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    engine = target.connect(reference)
    for u in units:
        pipeline.run_mapping(engine, load_mapping(u.mapping), list(tx_codes), mode="full")
    engine.dispose()
    assert _snapshot(sqlite_url, tx_codes) == _snapshot(reference, tx_codes)


@pytest.mark.airflow
def test_a_frequent_tick_with_nothing_due_plans_no_shard_and_succeeds(
        airflow_db, dagbag, staging: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    dr = dagbag().dags["dual_prevention_frequent"].test(logical_date=datetime(2025, 4, 2, 10, 5, tzinfo=CST))
    states = _states(dr)
    assert states[("plan", None)][0] == states[("summarise", None)][0] == "success"
    assert str(dr.state) == "success"
    # nothing due opens no target (issue 26: an idle tick's CPU): no run record, not even a schema
    import sqlalchemy as sa

    engine = sa.create_engine(sqlite_url)
    try:
        assert "ingest_run" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.airflow
def test_a_task_encrypts_under_the_airflow_variable_etl_data_key(
        airflow_db, dagbag, tmp_path: Path, sqlite_url: str, staging: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The data key may live in Airflow (the variable `etl_data_key`, docs/security.md) instead of
    ETL_DATA_KEY: a real task asks for it (`crypt._airflow_key`, only while a task runs), and the
    weekly DAG's 02 and 03 store phones and ID numbers encrypted under it."""
    import base64

    import yaml

    from etl.onboarding.demo_data import UNIT_A, make_demo_sources
    from etl.target import crypt

    made = make_demo_sources(tmp_path / "demo")
    folder = tmp_path / "mappings"
    folder.mkdir()
    raw = yaml.safe_load((MAPPINGS / f"{UNIT_A}.yaml").read_text(encoding="utf-8"))
    raw["source"] = {"url": f"sqlite:///{made[UNIT_A]}"}
    (folder / "南京化工.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    key = base64.b64encode(bytes(range(32))).decode()
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_TARGET_URL", sqlite_url)
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    monkeypatch.delenv("ETL_DATA_KEY", raising=False)
    monkeypatch.setenv("AIRFLOW_VAR_ETL_DATA_KEY", key)

    dr = dagbag().dags["dual_prevention_weekly"].test(logical_date=WEEKLY_RUN,
                                                      run_conf={"tx_codes": ["02", "03"], "mode": "full"})
    _assert_all_succeeded(dr)
    con = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    try:
        stored = con.execute('SELECT "keyId" FROM ingest_key').fetchall()
        ids = [v for (v,) in con.execute('SELECT "idCardNo" FROM unit_person WHERE "idCardNo" IS NOT NULL')]
        phones = [v for (v,) in con.execute('SELECT "dLinkTel" FROM unit_dept WHERE "dLinkTel" IS NOT NULL')]
    finally:
        con.close()
    assert stored == [(crypt.parse_key(key, "test").id,)]
    assert ids and phones  # loaded, and as ciphertexts: no ID number or phone in clear
    assert not any(v[:17].isdigit() for v in ids) and not any(v[-8:].isdigit() for v in phones)
