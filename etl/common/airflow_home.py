"""This project's Airflow: the environment `etl airflow` starts Airflow with, and the one `etl`
commands read Airflow's connections under, so that a connection added with `etl airflow
connections add` is the one `etl check` and `etl run` find.

Whatever the caller has set already wins: these are defaults, not overrides. Airflow reads its
configuration once, when it is first imported, so `use_project_airflow` must run before that.
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from etl.common.settings import CODE_ROOT, project_dir

DAGS = CODE_ROOT / "dags"  # beside the code, wherever ETL_HOME is
#: Where the local API server (`etl airflow`, `etl airflow api-server`) listens unless
#: AIRFLOW__API__HOST or `[api] host` in airflow.cfg says otherwise: this machine only.
LOCAL_HOST = "127.0.0.1"


def _configured(env: Mapping[str, str], section: str, key: str) -> bool:
    """Whether Airflow's configuration file (AIRFLOW_CONFIG, else AIRFLOW_HOME/airflow.cfg) sets
    `key` in `section`: then an environment default from here would override the user's file."""
    path = env.get("AIRFLOW_CONFIG") or str(Path(env["AIRFLOW_HOME"]).expanduser() / "airflow.cfg")
    cfg = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        cfg.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return False
    return cfg.has_option(section, key)


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
    if "AIRFLOW__API__HOST" not in env and not _configured(env, "api", "host"):
        env["AIRFLOW__API__HOST"] = LOCAL_HOST  # Airflow's own default is every interface
    sync = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    if sync.startswith(("postgresql", "postgres:")) and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" not in env:
        # Airflow derives postgresql+asyncpg, which is not installed: psycopg 3 does async itself
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = "postgresql+psycopg_async://" + sync.split("://", 1)[1]
    return env


#: What locates Airflow's configuration and metadata database: all an `etl` command needs
#: from the project's Airflow environment to read its connections.
_LOCATING = ("AIRFLOW_HOME", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC")


def use_project_airflow() -> bool:
    """Point this process's Airflow at the project's (AIRFLOW_HOME, as `etl airflow` sets it),
    unless the caller set one, before Airflow is first imported; False when Airflow was
    imported already (its configuration is read then, and stays)."""
    if "airflow" in sys.modules:
        return False
    env = airflow_environment()
    for key in _LOCATING:
        if key in env:
            os.environ.setdefault(key, env[key])
    return True


def airflow_home() -> str:
    """The AIRFLOW_HOME Airflow uses in this process (for messages)."""
    return os.environ.get("AIRFLOW_HOME") or str(Path("~/airflow").expanduser())
