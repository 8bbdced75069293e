"""Where the project's relative paths are anchored: one answer for the CLI, Airflow's tasks,
the staging store and the media store."""

from __future__ import annotations

import os
from pathlib import Path

#: The folder that holds the code (`etl/`, `dags/`, `mappings/` in a checkout).
CODE_ROOT = Path(__file__).resolve().parents[2]


def project_dir() -> Path:
    """The folder relative paths are resolved against (`ETL_HOME`, default the project root,
    which is where `etl demo` and the demo mappings' `sqlite:///var/...` URLs expect to run)."""
    return Path(os.environ.get("ETL_HOME") or CODE_ROOT)
