"""Settings: every `ETL_*` environment variable, defined once (name, default, one line of doc)
and read through here, so that `etl` commands and Airflow's tasks resolve them alike; and what
to say when a variable a mapping names (`url_env`, `base_env`) is missing.

A relative folder is resolved against `ETL_HOME` when it is set (`etl airflow` sets it for every
Airflow process). Unset, Airflow's tasks and the stores resolve against the project folder
(`project_dir`: a task process's working directory means nothing), and `etl` commands against
the working directory, as the contract fixes for the target (`sqlite:///var/target.sqlite`) and
as `etl demo` makes its sources under `var/` there. `path()` takes the base.

docs/airflow.md's settings table is `markdown_table()`'s output (tests/test_settings.py checks).
Stdlib only: the DAG file reads its settings at parse time.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from etl.common.errors import ConfigError

#: The folder that holds the code (`etl/`, `dags/`, `mappings/` in a checkout).
CODE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None   # as it would be written in the environment; None: unset
    doc: str              # one line, for the docs' table
    shown: str = ""       # how the docs show the default, where it is not a value

    @property
    def shown_default(self) -> str:
        return self.shown or (f"`{self.default}`" if self.default is not None else "")


SETTINGS: tuple[Setting, ...] = (
    Setting("ETL_HOME", None, "where relative paths (`var/...`, `sqlite:///var/...` in mappings) "
            "resolve", "the project folder"),
    Setting("ETL_TARGET_URL", "sqlite:///var/target.sqlite", "the target, when neither "
            "`--target` nor the Airflow connection `etl_target` gives one"),
    Setting("ETL_MAPPINGS_DIR", "mappings", "one YAML per unit"),
    Setting("ETL_CACHE_DIR", "var/cache/mappings", "validated mappings by content hash (a cache: "
            "safe to delete)"),
    Setting("ETL_CHUNK_ROWS", "100000", "rows per chunk read, staged and prepared (memory per "
            "task; `etl run --chunk-rows` for one run)"),
    Setting("ETL_UNITS_PER_SHARD", None, "units per shard (the tasks that ingest them)",
            "one shard per task slot, ≥ 50 units"),
    Setting("ETL_SHARD_TASKS", None, "how a shard is ingested: `one` task (`ingest.load` reads, "
            "transforms and loads each dataset in memory, as `etl run`; nothing staged but the "
            "plan) or `three` (`ingest.extract` → `ingest.transform` → `ingest.load`, handing "
            "the data over through the staging store: loads on their own Celery queue)",
            "`one`; `three` when `ETL_LOAD_QUEUE` is set"),
    Setting("ETL_STAGING_URL", None, "where tasks hand data to each other: `target` (the target "
            "database's `ingest_stage` table; PostgreSQL or MariaDB: refused for a SQLite target, "
            "whose one write lock the load holds while it reads the stage), or an object-storage "
            "URL (`s3://bucket/staging`, any fsspec URL, through Airflow's `ObjectStoragePath`)",
            "(unset: `ETL_STAGING_DIR`)"),
    Setting("ETL_STAGING_CONN_ID", None, "the Airflow connection with the object storage's "
            "credentials"),
    Setting("ETL_STAGING_DIR", "var/staging", "a local folder, when `ETL_STAGING_URL` is unset: "
            "one machine only"),
    Setting("ETL_STAGING_KEEP_DAYS", "7", "how long a failed run's staged data is kept"),
    Setting("ETL_TARGET_POOL", "dual_prevention_target", "the Airflow pool of the load tasks, "
            "which caps how many load into the target at once; `etl airflow` creates it"),
    Setting("ETL_TARGET_POOL_SLOTS", "4", "the pool's size, set by `etl airflow` at every start: "
            "loads at once, each one connection to the target (below its connection limit "
            "less what else connects)"),
    Setting("ETL_LOAD_QUEUE", None, "the Celery queue of the load tasks (workers near the "
            "target)", "Airflow's default queue"),
    Setting("ETL_RETRY_DELAY_SECONDS", "120", "the first retry's delay (then doubling, at most 30 "
            "minutes)"),
    Setting("ETL_REPORTS_DIR", "var/report", "the report site the daily and weekly DAGs refresh"),
    Setting("ETL_REPORT_LANGUAGE", "zh_CN", "the report site's language: `zh_CN` (Chinese, the "
            "standard's terms) or `en`; `etl report --lang` for one build"),
    Setting("ETL_FRESHNESS_GRACE_HOURS", None, "how late a dataset may be before the freshness "
            "DAG fails (and how long past its first period a new mapping's dataset stays pending)",
            "daily 6, weekly 24, frequent one period"),
    Setting("ETL_MEDIA_URL", "var/media", "where attachments are stored: a folder, or an fsspec "
            "URL (`s3://bucket/media`)"),
    Setting("ETL_MEDIA_CONN_ID", None, "the Airflow connection with the media store's "
            "credentials"),
    Setting("ETL_REQUIRE_TLS", "0", "1: refuse to connect to any source, the target or a "
            "unit's file server without TLS (file servers: `https://` or `sftp://`)"),
    Setting("ETL_SSH_KNOWN_HOSTS", "~/.ssh/known_hosts", "the known_hosts file (OpenSSH's "
            "format) SFTP file servers' host keys are checked against: a key not in it is "
            "refused"),
    Setting("ETL_SSH_TRUST_NEW_HOSTS", "0", "1: accept an SFTP server's host key on first sight "
            "and add it to `ETL_SSH_KNOWN_HOSTS` (trust on first use); a key that differs from "
            "the recorded one is refused all the same"),
    Setting("ETL_DATA_KEY", None, "the data key personal data is encrypted under (base64 of 32 "
            "random bytes; README, Encryption at rest)", "none: stored in clear"),
    Setting("ETL_DATA_KEY_OLD", None, "earlier data keys, comma-separated, while `etl "
            "rotate-key` re-encrypts"),
    Setting("ETL_ALERT_EMAIL", None, "addresses, comma-separated, e-mailed when an ingestion or "
            "the freshness DAG run fails (through Airflow's SMTP connection, `smtp_default`)",
            "none: no e-mail"),
    Setting("ETL_ALERT_WEBHOOK_CONN_ID", None, "an Airflow HTTP connection holding a DingTalk or "
            "WeCom group robot's URL (host) and token (password), told when such a run fails",
            "none: no webhook"),
    Setting("ETL_SERVE_TOKEN_SECONDS", "7200", "how long an access_token `etl serve` issues "
            "stays valid (B.2)"),
    Setting("ETL_SERVE_MAX_BODY_BYTES", "16777216", "the largest request body `etl serve` reads "
            "(16 MiB); a larger one is refused with HTTP 413 before it is read"),
    Setting("ETL_SERVE_MAX_RECORDS", "1000", "the most records (`data`) one pushed message may "
            "carry (HTTP 413 beyond)"),
    Setting("ETL_SERVE_MESSAGES_PER_MINUTE", "60", "messages one unit may push per minute, "
            "per `etl serve` process (HTTP 429 beyond)"),
    Setting("ETL_SERVE_TIMEOUT_SECONDS", "120", "how long `etl serve` waits for a request's "
            "body (HTTP 408) and for its message to be taken (HTTP 503)"),
)
BY_NAME = {s.name: s for s in SETTINGS}


#: `ETL_*` variables that are not the application's: the test suite's own.
NOT_SETTINGS_PREFIX = "ETL_TEST_"
_warned_unknown = False


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A `warning:` line per `ETL_*` variable set that no setting declares (a misspelt
    target variable missing its `_URL` is otherwise ignored without a word), with the closest
    setting's name; names only, never a value."""
    env = os.environ if environ is None else environ
    out = []
    for name in sorted(k for k in env if k.startswith("ETL_") and k not in BY_NAME
                       and not k.startswith(NOT_SETTINGS_PREFIX)):
        close = difflib.get_close_matches(name, list(BY_NAME), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "the settings are listed in docs/airflow.md"
        out.append(f"warning: environment variable {name} is not an etl setting and is ignored "
                   f"(unless a mapping names it as url_env or base_env): {hint}")
    return out


def warn_unknown_variables() -> None:
    """Print `unknown_variables()` to stderr, once per process (the CLI's start, `etl check`)."""
    global _warned_unknown
    if _warned_unknown:
        return
    _warned_unknown = True
    for line in unknown_variables():
        print(line, file=sys.stderr)


def is_set(name: str) -> bool:
    """Whether the variable is set to something other than blanks (its default aside)."""
    return bool(os.environ.get(BY_NAME[name].name, "").strip())


def raw(name: str) -> str | None:
    """The variable as set (blank counts as unset), else its default."""
    setting = BY_NAME[name]
    value = os.environ.get(name, "").strip()
    return value or setting.default


def text(name: str) -> str | None:
    return raw(name)


def integer(name: str, minimum: int = 1) -> int | None:
    value = raw(name)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ConfigError(f"{name}={value!r}: give a whole number, {minimum} or more")
    return number


def number(name: str, minimum: float = 0) -> float | None:
    value = raw(name)
    if value is None:
        return None
    try:
        out = float(value)
    except ValueError:
        out = minimum - 1
    if not out >= minimum:
        raise ConfigError(f"{name}={value!r}: give a number, {minimum:g} or more")
    return out


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def flag(name: str) -> bool:
    value = (raw(name) or "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE or not value:
        return False
    raise ConfigError(f"{name}={value[:20]!r} is not a yes/no value: use 1 or 0")


SHARD_TASKS = ("one", "three")


def shard_tasks() -> str:
    """`ETL_SHARD_TASKS`: `one` task a shard, or `three` (extract, transform, load); unset,
    `three` when loads have their own queue (`ETL_LOAD_QUEUE`: only the load task goes there)."""
    value = (raw("ETL_SHARD_TASKS") or "").lower()
    if not value:
        return "three" if text("ETL_LOAD_QUEUE") else "one"
    if value not in SHARD_TASKS:
        raise ConfigError(f"ETL_SHARD_TASKS={value[:20]!r}: give one or three (the tasks a shard "
                          f"of units is ingested in)")
    return value


def project_dir() -> Path:
    """The folder relative paths are resolved against (`ETL_HOME`, default the project root,
    which is where `etl demo` and the demo mappings' `sqlite:///var/...` URLs expect to run)."""
    return Path(raw("ETL_HOME") or CODE_ROOT)


def path(name: str, explicit: str | os.PathLike[str] | None = None,
         base: Path | None = None) -> Path:
    """A folder setting (or `explicit`, given instead of it); a relative one under `base`,
    default `project_dir()`."""
    value = explicit or raw(name)
    if value is None:
        raise ConfigError(f"{name} is not set: give a folder")
    folder = Path(value).expanduser()
    return folder if folder.is_absolute() else (base or project_dir()) / folder


def target_url(explicit: str | None = None, *, anchored: bool = False) -> str:
    """`explicit` (`--target`), else `ETL_TARGET_URL`, else the embedded default: relative to the
    working directory (`etl` commands, the contract), or, `anchored` (Airflow's tasks), under
    `project_dir()`."""
    if explicit or is_set("ETL_TARGET_URL"):
        return explicit or raw("ETL_TARGET_URL") or ""
    if anchored:
        return f"sqlite:///{project_dir() / 'var' / 'target.sqlite'}"
    return BY_NAME["ETL_TARGET_URL"].default or ""


def markdown_table() -> str:
    """The docs' table of settings (docs/airflow.md)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.shown_default} | {s.doc} |" for s in SETTINGS]
    return "\n".join(lines)


# --- a variable a mapping names -----------------------------------------------------------------


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
