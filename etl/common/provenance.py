"""Who and what ran a load, kept in each `ingest_run` row: the host, the OS user and the code
version (the mapping file's sha256 and the Airflow DAG run come with the run itself).

Each is looked up once per process and never fails a load: an unknown value is recorded as
such.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from functools import cache
from importlib import metadata

from etl.common.settings import CODE_ROOT

DISTRIBUTION = "dual-prevention-etl"
PROJECT_DIR = CODE_ROOT


@cache
def host() -> str:
    try:
        return socket.gethostname()[:255] or "unknown"
    except OSError:
        return "unknown"


@cache
def os_user() -> str:
    """The account the process runs as (getpass tries LOGNAME, USER, ... then the password
    database, which a container's arbitrary uid may lack: then the uid)."""
    try:
        return getpass.getuser()[:128]
    except Exception:  # getpass raises OSError or KeyError, depending on the Python version
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


@cache
def git_commit() -> str | None:
    """The short commit of the project folder when it is a git checkout (not in an installed
    wheel): which code ran, down to an unreleased change."""
    if not (PROJECT_DIR / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_DIR), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@cache
def code_version() -> str:
    """The package version, plus `+g<commit>` in a git checkout, e.g. `0.1.0+g2af9437`."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "unknown"
    commit = git_commit()
    return (f"{version}+g{commit}" if commit else version)[:64]
