"""The `etl` command: help for every command, exit codes, one clear line for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from etl.cli import main
from helpers import hidden_danger_mapping_text, hidden_danger_row, rows_of, write_source

COMMANDS = ["demo", "run", "check", "init-target", "reconcile", "freshness", "report", "airflow"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: etl " + command in capsys.readouterr().out


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "etl", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(c in out.stdout for c in COMMANDS)


@pytest.fixture
def unit(tmp_path, monkeypatch):
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 4)])
    monkeypatch.setenv("UNIT_A_SOURCE_URL", source)
    path = tmp_path / "unit_a.yaml"
    path.write_text(hidden_danger_mapping_text(), encoding="utf-8")
    return path


def test_run_loads_and_prints_a_summary(unit, tmp_path, capsys):
    target = f"sqlite:///{tmp_path / 't.sqlite'}"
    assert main(["run", str(unit), "--target", target]) == 0
    out = capsys.readouterr().out
    assert "hidden_danger" in out and "total" in out
    assert len(rows_of(target, "hidden_danger")) == 3


def test_target_comes_from_the_environment(unit, tmp_path, monkeypatch):
    target = f"sqlite:///{tmp_path / 'env.sqlite'}"
    monkeypatch.setenv("ETL_TARGET_URL", target)
    assert main(["-q", "run", str(unit)]) == 0
    assert len(rows_of(target, "hidden_danger")) == 3


def test_invalid_mapping_exits_2_and_writes_nothing(unit, tmp_path, capsys):
    unit.write_text(unit.read_text(encoding="utf-8").replace("taskNo:", "taskNO:"), encoding="utf-8")
    target = tmp_path / "t.sqlite"
    assert main(["run", str(unit), "--target", f"sqlite:///{target}"]) == 2
    err = capsys.readouterr().err
    assert "[datasets.09.fields.taskNO]" in err and "did you mean 'taskNo'" in err
    assert not target.exists()


def test_missing_source_variable_says_what_to_set(unit, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("UNIT_A_SOURCE_URL")
    assert main(["run", str(unit), "--target", f"sqlite:///{tmp_path / 't.sqlite'}"]) == 1
    out = capsys.readouterr()
    assert "UNIT_A_SOURCE_URL is not set" in out.out + out.err


def test_bad_tx_code_is_a_usage_error(unit, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(unit), "--tx", "10"])
    assert e.value.code == 2 and "unknown txCode '10'" in capsys.readouterr().err


def test_run_without_mappings_says_how(capsys):
    assert main(["run"]) == 2
    assert "--all" in capsys.readouterr().err


def test_check_prints_coverage_and_passes(unit, capsys):
    assert main(["check", str(unit)]) == 0
    out = capsys.readouterr().out
    assert "taskNo" in out and "column" in out and "1 mapping(s) valid" in out
    assert "(not mapped)" in out  # datasets the unit does not deliver


def test_check_names_missing_table_and_column(unit, tmp_path, capsys):
    unit.write_text(unit.read_text(encoding="utf-8").replace("problem", "problm")
                    .replace("table: t_hidden_danger", "table: t_hidden_danger"), encoding="utf-8")
    assert main(["check", str(unit)]) == 2
    err = capsys.readouterr().err
    assert "no column 'problm'" in err
    unit.write_text(unit.read_text(encoding="utf-8").replace("t_hidden_danger", "t_nope"), encoding="utf-8")
    assert main(["check", str(unit)]) == 2
    assert "no table 't_nope'" in capsys.readouterr().err


def test_check_reports_unreachable_source_without_password(unit, monkeypatch, capsys):
    monkeypatch.setenv("UNIT_A_SOURCE_URL", "postgresql+psycopg://etl:s3cretpw@127.0.0.1:1/nodb")
    assert main(["check", str(unit)]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" in err and "s3cretpw" not in err


def test_init_target_twice_is_harmless(tmp_path, capsys):
    target = f"sqlite:///{tmp_path / 't.sqlite'}"
    assert main(["init-target", "--target", target]) == 0
    assert main(["init-target", "--target", target]) == 0
    out = capsys.readouterr().out
    assert "created" in out and "already at revision" in out


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_init_target_on_real_servers(kind, request):
    url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}[kind])
    for _ in range(2):
        out = subprocess.run([sys.executable, "-m", "etl", "init-target", "--target", url],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    assert "already at revision" in out.stdout


def test_reconcile_tells_agree_from_differ(unit, tmp_path, capsys):
    target = f"sqlite:///{tmp_path / 't.sqlite'}"
    main(["-q", "run", str(unit), "--target", target])
    capsys.readouterr()
    assert main(["reconcile", str(unit), "--target", target]) == 0
    assert "agree" in capsys.readouterr().out
    write_source(os.environ["UNIT_A_SOURCE_URL"], "t_hidden_danger",
                 [hidden_danger_row(1, problem="改了"), hidden_danger_row(2)])
    assert main(["reconcile", str(unit), "--target", target]) == 1
    out = capsys.readouterr().out
    assert "differ" in out and "mainProblem: '改了' -> '安全阀校验过期 1'" in out
    assert len(rows_of(target, "ingest_batch")) == 1  # reconcile wrote nothing


def test_demo_runs_twice_and_changes_nothing_the_second_time(tmp_path):
    project = Path(__file__).resolve().parent.parent
    (tmp_path / "mappings").mkdir()
    for m in (project / "mappings").glob("demo_*.yaml"):
        (tmp_path / "mappings" / m.name).write_text(m.read_text(encoding="utf-8"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("ETL_TARGET_URL", "ETL_REPORTS_DIR")}
    first = subprocess.run([sys.executable, "-m", "etl", "demo"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.rstrip().endswith("report: var/report/index.html")
    assert (tmp_path / "var" / "report" / "index.html").is_file()
    target = f"sqlite:///{tmp_path / 'var' / 'target.sqlite'}"
    tables = ["unit_info", "unit_dept", "unit_person", "safety_rule", "safety_training", "risk_point",
              "hazard_source", "risk_gallery", "hidden_danger"]
    assert all(rows_of(target, t) for t in tables)
    batches, changes = len(rows_of(target, "ingest_batch")), len(rows_of(target, "ingest_change"))
    second = subprocess.run([sys.executable, "-m", "etl", "demo"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert (len(rows_of(target, "ingest_batch")), len(rows_of(target, "ingest_change"))) == (batches, changes)


def test_etl_airflow_runs_airflow_set_up_for_the_project_without_overriding_the_callers_settings(tmp_path):
    """`etl airflow ARGS` is Airflow's own command line with the project's defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
    env.update({"ETL_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "True"})
    got = {}
    for key in ("core dags_folder", "core default_timezone", "core load_examples"):
        out = subprocess.run([sys.executable, "-m", "etl", "airflow", "config", "get-value", *key.split()],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        got[key] = out.stdout.strip().splitlines()[-1]
    assert got == {"core dags_folder": str(Path(__file__).resolve().parents[1] / "dags"),
                   "core default_timezone": "Asia/Shanghai",
                   "core load_examples": "True"}  # the caller's setting wins
    assert (tmp_path / "var" / "airflow" / "airflow.cfg").is_file()  # AIRFLOW_HOME under ETL_HOME


def test_etl_airflow_derives_the_async_url_of_a_postgresql_metadata_database():
    from etl.orchestration.airflow_env import airflow_environment

    env = airflow_environment({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
                               "postgresql+psycopg://airflow:***@db:5432/airflow"})
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == \
        "postgresql+psycopg_async://airflow:***@db:5432/airflow"
    given = airflow_environment({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://a@b/c",
                                 "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": "mine"})
    assert given["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == "mine"
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" not in airflow_environment({})
