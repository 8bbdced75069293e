"""Settings: what the `ETL_*` environment variables and a mapping's `url_env` / `base_env` give,
and what to say when one is missing. Inside an Airflow task a variable exported in a shell is
no fix: the process that forked the task started without it (`unset_variable`)."""

from __future__ import annotations

import sys


def in_airflow_task() -> bool:
    """Whether this code runs inside an Airflow task. Airflow 3's task runner holds the task's
    context for exactly as long as the task runs (`task_runner.run`: `set_current_context`),
    in a worker's task process and in `dag.test()` alike. The AIRFLOW_CTX_* variables it also
    exports are not proof: they stay in `os.environ` after `dag.test()` and pass to children."""
    if "airflow.sdk" not in sys.modules:  # a task process has imported it; the CLI need not
        return False
    try:
        from airflow.sdk import get_current_context

        get_current_context()
    except Exception:  # RuntimeError: no task is running here
        return False
    return True


def unset_variable(name: str, holding: str) -> str:
    """What to do about environment variable `name` (holding `holding`, e.g. "the unit's
    SQLAlchemy URL") not being set. Inside an Airflow task exporting it in a shell is no fix:
    the process that forked the task started without it and has to be restarted."""
    if not in_airflow_task():
        return f"environment variable {name} is not set: export it with {holding}"
    return (f"environment variable {name} is not in this Airflow worker's environment: Airflow's "
            f"processes see only the variables set when they started; set it where the scheduler "
            f"(LocalExecutor) or the Celery workers start and restart them, or use an Airflow "
            f"connection (conn_id:), which needs no restart")
