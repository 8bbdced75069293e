"""Traps for the careless at the command line (issue 24, items 5 and 7), each run through the
real `etl` on real files: a connection added the documented way, a mistyped target or
variable, a tab in a mapping, a txCode no unit maps, the API server's address."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from etl.cli import main
from helpers import hidden_danger_mapping_text, hidden_danger_row, rows_of, write_source


def _clean_env(home: Path) -> dict[str, str]:
    """This test's own project folder: no Airflow or ETL_* setting of the caller's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
    env["ETL_HOME"] = str(home)
    return env


def _etl(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "etl", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


# --- item 5: a connection added with `etl airflow connections add` -------------------------


def test_a_connection_added_with_etl_airflow_is_found_by_check_and_run(tmp_path):
    env = _clean_env(tmp_path)
    source = tmp_path / "wuxi.sqlite"
    write_source(f"sqlite:///{source}", "t_hidden_danger", [hidden_danger_row(i) for i in (1, 2)])
    unit = tmp_path / "wuxi.yaml"
    unit.write_text(hidden_danger_mapping_text().replace("source: {url_env: UNIT_A_SOURCE_URL}",
                                                         "source: {conn_id: wuxi_src}"),
                    encoding="utf-8")
    missing = _etl(env, tmp_path, "check", str(unit))
    assert missing.returncode == 2
    assert "Airflow connection 'wuxi_src' not found in " in missing.stderr
    assert "AIRFLOW_CONN_WUXI_SRC" in missing.stderr
    assert f"AIRFLOW_HOME={tmp_path / 'var' / 'airflow'}" in missing.stderr
    assert "add it with `etl airflow connections add wuxi_src --conn-uri" in missing.stderr

    for args in (["db", "migrate"], ["connections", "add", "wuxi_src", "--conn-uri", f"sqlite:///{source}"]):
        done = _etl(env, tmp_path, "airflow", *args)
        assert done.returncode == 0, done.stderr[-2000:]
    checked = _etl(env, tmp_path, "check", str(unit))
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "1 mapping(s) valid" in checked.stdout
    target = f"sqlite:///{tmp_path / 'target.sqlite'}"
    ran = _etl(env, tmp_path, "run", str(unit), "--target", target)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert len(rows_of(target, "hidden_danger")) == 2


# --- item 7: commands that only read the target never create one ---------------------------


KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes


@pytest.fixture
def unit(tmp_path, monkeypatch):
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 4)])
    monkeypatch.setenv("UNIT_A_SOURCE_URL", source)
    folder = tmp_path / "mappings"
    folder.mkdir()
    path = folder / "unit_a.yaml"
    path.write_text(hidden_danger_mapping_text(), encoding="utf-8")
    return path


def _reading_commands(unit: Path, out: Path) -> dict[str, list[str]]:
    folder = str(unit.parent)
    return {"report": ["report", "--mappings-dir", folder, "--out", str(out)],
            "freshness": ["freshness", "--mappings-dir", folder],
            "reconcile": ["reconcile", str(unit)],
            "decrypt": ["decrypt", "--org", "91320100MA1NDKB69T", "--tx", "09"],
            "rotate-key": ["rotate-key"]}


@pytest.mark.parametrize("command", ["report", "freshness", "reconcile", "decrypt", "rotate-key"])
def test_a_reading_command_on_a_mistyped_sqlite_target_creates_nothing(command, unit, tmp_path,
                                                                      monkeypatch, capsys):
    monkeypatch.setenv("ETL_DATA_KEY", KEY)
    typo = tmp_path / "var" / "tagret.sqlite"
    args = _reading_commands(unit, tmp_path / "report")[command]
    assert main([*args, "--target", f"sqlite:///{typo}"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: no target at sqlite:///{typo}: check --target / "
                                        f"ETL_TARGET_URL, or run etl init-target"]
    assert not typo.exists() and not typo.parent.exists()


def test_a_database_without_the_pipelines_tables_is_no_target(unit, tmp_path, capsys):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    assert main(["freshness", "--mappings-dir", str(unit.parent), "--target", f"sqlite:///{empty}"]) == 2
    assert "no target at" in capsys.readouterr().err
    assert empty.stat().st_size == 0  # not made into one either


def test_a_postgresql_database_without_the_pipelines_tables_is_no_target(unit, pg_url, capsys):
    assert main(["freshness", "--mappings-dir", str(unit.parent), "--target", pg_url]) == 2
    err = capsys.readouterr().err
    assert "no target at" in err and "without the pipeline's tables" in err


def test_reading_commands_read_an_existing_target(unit, tmp_path, capsys):
    target = f"sqlite:///{tmp_path / 't.sqlite'}"
    assert main(["-q", "run", str(unit), "--target", target]) == 0
    assert main(["freshness", "--mappings-dir", str(unit.parent), "--target", target]) == 0
    assert main(["report", "--mappings-dir", str(unit.parent), "--out", str(tmp_path / "r"),
                 "--target", target]) == 0


# --- item 7: the local API server listens on this machine only -----------------------------


def test_etl_airflow_binds_the_api_server_to_localhost_unless_told(tmp_path):
    from etl.common.airflow_home import airflow_environment

    home = tmp_path / "home"
    assert airflow_environment({"AIRFLOW_HOME": str(home)})["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert airflow_environment({"AIRFLOW_HOME": str(home),
                                "AIRFLOW__API__HOST": "0.0.0.0"})["AIRFLOW__API__HOST"] == "0.0.0.0"
    home.mkdir()
    (home / "airflow.cfg").write_text("[api]\nhost = 10.0.0.5\n", encoding="utf-8")
    assert "AIRFLOW__API__HOST" not in airflow_environment({"AIRFLOW_HOME": str(home)})  # the file's

    got = _etl(_clean_env(tmp_path), tmp_path, "airflow", "config", "get-value", "api", "host")
    assert got.returncode == 0, got.stderr[-2000:]
    assert got.stdout.strip().splitlines()[-1] == "127.0.0.1"


# --- item 7: a misnamed ETL_* variable ------------------------------------------------------


def test_a_misnamed_etl_variable_is_named_once_with_the_setting_meant(unit, tmp_path):
    env = {**_clean_env(tmp_path), "ETL_TARGET": "sqlite:///var/elsewhere.sqlite",
           "ETL_MAPINGS_DIR": "x", "ETL_TEST_ANYTHING": "1", "UNIT_A_SOURCE_URL": os.environ["UNIT_A_SOURCE_URL"]}
    done = _etl(env, tmp_path, "check", "--offline", str(unit))
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("warning: environment variable")]
    assert len(lines) == 2, done.stderr  # once per process, though the CLI and check both look
    assert "ETL_MAPINGS_DIR is not an etl setting" in lines[0] and "did you mean ETL_MAPPINGS_DIR?" in lines[0]
    assert "ETL_TARGET is not an etl setting" in lines[1] and "did you mean ETL_TARGET_URL?" in lines[1]
    assert "elsewhere" not in done.stderr  # names, never values


def test_declared_variables_raise_no_warning():
    from etl.common import settings

    assert settings.unknown_variables({"ETL_TARGET_URL": "x", "ETL_TEST_AIRFLOW_HOME": "y", "PATH": "z"}) == []


# --- item 7: one broken mapping does not stop `etl run --all` -------------------------------


def test_run_all_loads_every_valid_unit_and_names_the_invalid_file_at_the_end(unit, tmp_path, capsys):
    from helpers import org_no

    other = unit.parent / "unit_b.yaml"
    other.write_text(hidden_danger_mapping_text(org_no("91320117MA1R7KX30")), encoding="utf-8")
    broken = unit.parent / "broken.yaml"
    broken.write_text(hidden_danger_mapping_text().replace("    table:", "\ttable:"), encoding="utf-8")
    target = f"sqlite:///{tmp_path / 't.sqlite'}"
    assert main(["run", "--all", "--mappings-dir", str(unit.parent), "--target", target]) == 2
    captured = capsys.readouterr()
    assert len(rows_of(target, "hidden_danger")) == 6  # both valid units loaded
    assert "1 mapping file(s) invalid, not loaded" in captured.err
    assert f"{broken}:5: a tab indents this line; YAML indents with spaces" in captured.err


def test_named_files_are_still_all_valid_before_anything_runs(unit, tmp_path, capsys):
    broken = unit.parent / "broken.yaml"
    broken.write_text(hidden_danger_mapping_text().replace("    table:", "\ttable:"), encoding="utf-8")
    target = tmp_path / "t.sqlite"
    assert main(["run", str(unit), str(broken), "--target", f"sqlite:///{target}"]) == 2
    assert "a tab indents this line" in capsys.readouterr().err
    assert not target.exists()


def test_a_tab_in_a_mapping_is_named_as_a_tab_by_check(unit, capsys):
    unit.write_text(unit.read_text(encoding="utf-8").replace("      regNo:", "\t  regNo:"), encoding="utf-8")
    assert main(["check", "--offline", str(unit)]) == 2
    assert f"{unit}:11: a tab indents this line; YAML indents with spaces" in capsys.readouterr().err


# --- item 7: --tx asks for a dataset a unit does not map ------------------------------------


def test_tx_a_unit_does_not_map_is_a_warning_naming_what_it_maps(unit, tmp_path, capsys):
    target = f"sqlite:///{tmp_path / 't.sqlite'}"
    assert main(["run", str(unit), "--tx", "07,09", "--target", target]) == 0  # 09 is mapped
    err = capsys.readouterr().err
    assert f"warning: {unit} (" in err and "maps no dataset 07 of --tx 07,09: it maps 09" in err
    assert len(rows_of(target, "hidden_danger")) == 3


def test_tx_no_selected_unit_maps_exits_2_and_creates_nothing(unit, tmp_path, capsys):
    target = tmp_path / "t.sqlite"
    assert main(["run", str(unit), "--tx", "07", "--target", f"sqlite:///{target}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --tx 07: no selected mapping maps it (1 mapping(s); they map 09): "
                   "pick txCodes they map"]
    assert not target.exists()
