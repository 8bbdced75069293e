"""Where the project's relative paths are anchored: one answer for the CLI, Airflow's tasks,
the staging store and the media store."""

from __future__ import annotations

import os
from pathlib import Path


def project_dir() -> Path:
    """The folder relative paths are resolved against (`ETL_HOME`, default the project root,
    which is where `etl demo` and the demo mappings' `sqlite:///var/...` URLs expect to run)."""
    return Path(os.environ.get("ETL_HOME") or Path(__file__).resolve().parents[1])
