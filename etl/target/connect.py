"""Connecting to the target: the URL a command or task was given, and an engine set up for
loading (SQLite's writer lock at BEGIN, InnoDB's READ COMMITTED, TLS when required)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.common import outbound, private, settings
from etl.common.errors import ConfigError
from etl.common.masking import mask_url, register_url_secrets
from etl.common.outbound import normalise_url

DEFAULT_URL = settings.BY_NAME["ETL_TARGET_URL"].default or ""


def target_url(explicit: str | None = None) -> str:
    """`--target`, else `ETL_TARGET_URL`, else the embedded default (relative to the cwd)."""
    return settings.target_url(explicit)


def target_origin(explicit: str | None = None) -> str:
    """Where `target_url(explicit)` came from, for messages."""
    if explicit:
        return "--target"
    return "ETL_TARGET_URL" if settings.is_set("ETL_TARGET_URL") else DEFAULT_URL


def connect(url: str, origin: str = "the target URL") -> Engine:
    """An engine for the target. SQLite gets a writer lock at BEGIN and a long busy timeout,
    so parallel loaders queue instead of failing. A malformed URL is a `ConfigError` naming
    `origin` (`--target`, `ETL_TARGET_URL`); its password is masked wherever it shows.
    A statement's parameters (the rows a load writes, personal data among them) never show in
    its errors, so not in a run's message nor a log (`hide_parameters`)."""
    register_url_secrets(url)
    why = outbound.requirement()  # ETL_REQUIRE_TLS; SQLite is local and never needs it
    parsed = outbound.enforce(normalise_url(url, origin), why, origin)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
            # the target holds personal data: its file (and so SQLite's journals, which take
            # its mode) 0600 and a folder we make 0700, whoever creates them
            private.makedirs(Path(parsed.database).parent)
            private.touch(parsed.database)
        engine = sa.create_engine(parsed, connect_args={"timeout": 300}, hide_parameters=True)

        @sa.event.listens_for(engine, "connect")
        def _no_pysqlite_transactions(dbapi_conn, _):
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.drivername.startswith(("mysql", "mariadb")):
        # READ COMMITTED: InnoDB's default REPEATABLE READ takes gap locks in INSERT ... SELECT,
        # which makes loaders of different units deadlock on shared tables.
        engine = sa.create_engine(parsed, pool_pre_ping=True, isolation_level="READ COMMITTED",
                                  connect_args=outbound.mysql_connect_args(parsed),
                                  hide_parameters=True)
    else:
        engine = sa.create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    if why:
        outbound.verify_on_connect(engine, why, origin)
    return engine


#: A table every target has from its first revision: without it a database is not a target.
MARKER_TABLE = "ingest_run"


def _no_target(url: str, why: str = "") -> ConfigError:
    return ConfigError(f"no target at {mask_url(url)}{why}: check --target / ETL_TARGET_URL, "
                       f"or run etl init-target")


def connect_existing(url: str, origin: str = "the target URL") -> Engine:
    """`connect` for commands that only read the target (report, freshness, reconcile, decrypt,
    rotate-key): a mistyped URL must not create an empty target whose every dataset then reads
    as never loaded. A SQLite file that does not exist, or any database without the pipeline's
    tables, is a `ConfigError` (exit 2) saying how to give the right one."""
    parsed = normalise_url(url, origin)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:") \
            and not parsed.query.get("uri") and not Path(parsed.database).is_file():
        raise _no_target(url)
    engine = connect(url, origin)
    try:
        found = sa.inspect(engine).has_table(MARKER_TABLE)
    except Exception:
        engine.dispose()
        raise
    if not found:
        engine.dispose()
        raise _no_target(url, " (a database without the pipeline's tables)")
    return engine
