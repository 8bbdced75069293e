"""`etl airflow`: Airflow's own command line, set up for this project in one step.

Airflow reads its settings from the environment; a new user would otherwise have to know five
of them before `airflow standalone` shows the DAGs in the right time zone. Whatever the caller
has set already wins: these are defaults, not overrides.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from etl import private
from etl.orchestrate import project_dir

DAGS = Path(__file__).resolve().parents[1] / "dags"  # beside the code, wherever ETL_HOME is


def airflow_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment `airflow` runs with: the caller's, plus this project's defaults."""
    env = dict(os.environ if environ is None else environ)
    home = project_dir()  # ETL_HOME: where var/ and relative paths are
    defaults = {
        "ETL_HOME": str(home),
        "AIRFLOW_HOME": str(home / "var" / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": "Asia/Shanghai",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    sync = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if sync.startswith(("postgresql", "postgres:")) and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" not in env:
        # Airflow derives postgresql+asyncpg, which is not installed: psycopg 3 does async itself
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = "postgresql+psycopg_async://" + sync.split("://", 1)[1]
    return env


def run_airflow(args: Sequence[str]) -> int:
    """Replace this process with `python -m airflow ARGS` (signals and exit code are Airflow's)."""
    env = airflow_environment()
    private.makedirs(env["AIRFLOW_HOME"])  # its passwords file, logs of runs
    print(f"AIRFLOW_HOME={env['AIRFLOW_HOME']} DAGs={env['AIRFLOW__CORE__DAGS_FOLDER']} "
          f"timezone={env['AIRFLOW__CORE__DEFAULT_TIMEZONE']}", file=sys.stderr, flush=True)
    os.execvpe(sys.executable, [sys.executable, "-m", "airflow", *args], env)
    return 0  # pragma: no cover - execvpe does not return
