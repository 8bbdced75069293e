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
