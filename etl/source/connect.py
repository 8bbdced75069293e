"""Connecting to a unit's own database: its URL from the mapping, an environment variable or an
Airflow connection (no password in a mapping; options that would let a query write refused;
SQLite opened read-only), one engine per source with its timeouts, and read-only sessions in
the source's time zone. Reading rows is `etl.source.extract`'s."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, URL

from etl.common import outbound
from etl.common.errors import ConfigError, SourceError
from etl.common.masking import mask_secrets_in_text, mask_url, register_url_secrets, url_secrets
from etl.common.outbound import connection_uri, normalise_url
from etl.common.settings import unset_variable
from etl.mapping import Mapping, SourceSpec
from etl.mapping.sql_guard import unsafe_url_options

CST_NAME = "Asia/Shanghai"


def resolve_url(spec: SourceSpec) -> URL:
    """The SQLAlchemy URL a source spec points to; secrets stay out of mapping files. Options
    that would let a query do more than read are refused; SQLite files are opened read-only."""
    return _sqlite_read_only(_parsed_url(spec))


def _parsed_url(spec: SourceSpec) -> URL:
    if spec.url:
        url = normalise_url(spec.url, "the mapping's url")
    elif spec.url_env:
        value = os.environ.get(spec.url_env)
        if not value:
            raise ConfigError(unset_variable(spec.url_env, "the unit's SQLAlchemy URL, e.g. "
                                                           "postgresql+psycopg://user:***@host/db"))
        url = normalise_url(value, f"environment variable {spec.url_env}")
    else:
        url = normalise_url(connection_uri(spec.conn_id or ""), f"Airflow connection {spec.conn_id}")
    if bad := unsafe_url_options(url):
        raise ConfigError(f"the source URL of {spec.describe()} sets {', '.join(bad)}, which could "
                          f"let a query do more than read: remove it")
    return outbound.enforce(url, outbound.requirement(spec), f"the source URL of {spec.describe()}")


def check_source_urls(mapping: Mapping) -> None:
    """Parse every source URL given in the environment, before anything connects: a malformed
    one is a `ConfigError` (exit 2), not a failure of each dataset. Unset variables and Airflow
    connections are left to `resolve_url`, which reports them per dataset."""
    for tx in sorted(mapping.datasets):
        spec = mapping.source_for(tx)
        if spec.url_env and os.environ.get(spec.url_env):
            try:
                _parsed_url(spec)
            except ConfigError as e:
                raise ConfigError(f"{mapping.path} [datasets.{tx}] {e}") from None


def _sqlite_read_only(url: URL) -> URL:
    """A SQLite file source opened read-only (`mode=ro`): a mistyped path is reported, never
    created as an empty database. Relative paths stay relative to the working directory."""
    if not url.drivername.startswith("sqlite") or url.query.get("uri"):
        return url
    database = url.database or ""
    if database in ("", ":memory:"):
        return url
    if not Path(database).is_file():
        raise ConfigError(f"no such SQLite file {database}: check url")
    return url.set(database=f"file:{quote(database)}?mode=ro").update_query_dict({"uri": "true"})


def is_schema_problem(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "no such table" in text or "no such column" in text


ENGINES_KEPT = 8
_engines: OrderedDict[tuple, Engine] = OrderedDict()
_engines_lock = threading.Lock()
_DEFAULTS = SourceSpec(url="sqlite://")  # the timeouts' defaults


def _connect_args(url: URL, spec: SourceSpec) -> dict[str, Any]:
    """Timeouts a driver takes at connect: connecting, reading (MySQL), a locked file (SQLite).
    PostgreSQL's statement_timeout is set in each read's transaction (`read_only`)."""
    name = url.get_backend_name()
    if name == "postgresql" and url.get_driver_name() == "psycopg":
        return {"connect_timeout": max(2, round(spec.connect_timeout_s))}
    if name in ("mysql", "mariadb") and url.get_driver_name() == "pymysql":
        return {"connect_timeout": max(1, round(spec.connect_timeout_s)),
                "read_timeout": max(1, round(spec.statement_timeout_s)),
                **outbound.mysql_connect_args(url)}
    if name == "sqlite":
        return {"timeout": spec.connect_timeout_s}
    return {}


def _sqlite_text(data: bytes) -> str | bytes:
    """A SQLite TEXT value: UTF-8 as text, anything else as its bytes, so that one undecodable
    value costs its row (cleaning decodes GBK text; other bytes are rejected as binary) rather
    than sqlite3's "Could not decode to UTF-8" failing the whole read."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _sqlite_text_as_read(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.text_factory = _sqlite_text


def engine_for(url: URL, spec: SourceSpec | None = None) -> Engine:
    """One engine per source URL (and timeouts), so a unit's datasets share a pool. Only the
    most recently used few are kept: a process loading a thousand units one after another must
    not hold a thousand pools of idle connections open; an evicted engine closes its
    connections."""
    spec = spec or _DEFAULTS
    why = outbound.requirement(spec)
    key = (url, spec.connect_timeout_s, spec.statement_timeout_s, why)
    with _engines_lock:
        engine = _engines.pop(key, None)
        if engine is None:
            register_url_secrets(url)
            # hide_parameters: a failed read's error never quotes the values it was bound with
            # (today a window's bounds; whatever a query binds tomorrow)
            engine = sa.create_engine(url, pool_pre_ping=True, hide_parameters=True,
                                      connect_args=_connect_args(url, spec))
            if url.get_backend_name() == "sqlite":
                sa.event.listen(engine, "connect", _sqlite_text_as_read)
            elif why:
                outbound.verify_on_connect(engine, why, f"the source {mask_url(url)}")
        _engines[key] = engine
        evicted = [_engines.popitem(last=False)[1] for _ in range(len(_engines) - ENGINES_KEPT)]
    for old in evicted:
        old.dispose()
    return engine


def safe_error(exc: BaseException, url: URL) -> str:
    """The driver's reason in one line, with the password never shown."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return mask_secrets_in_text(text, url_secrets(url))[:300]


@contextmanager
def read_only(engine: Engine, statement_timeout_s: float | None = None,
              timezone: str = CST_NAME) -> Iterator[Connection]:
    """A connection inside a read-only transaction: extraction can never write to a source
    through it (the source account's own rights are the real guard: README). On PostgreSQL,
    each statement is stopped after `statement_timeout_s` (default: SourceSpec's). The session
    runs in `timezone` (the source's, default CST), whatever the server's own zone: zone-aware
    values (timestamptz, MySQL TIMESTAMP) and zone-less window bounds then mean one instant."""
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as e:
        raise SourceError(f"cannot connect to {mask_url(engine.url)}: "
                          f"{safe_error(e, engine.url)}") from None
    try:
        name = engine.dialect.name
        if name == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            timeout_ms = round(1000 * (statement_timeout_s or _DEFAULTS.statement_timeout_s))
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
            conn.exec_driver_sql("SELECT set_config('TimeZone', %s, true)", (timezone,))
        elif name in ("mysql", "mariadb"):
            conn.rollback()
            _mysql_time_zone(conn, timezone)
            conn.exec_driver_sql("START TRANSACTION READ ONLY")
        elif name == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
        yield conn
    finally:
        try:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA query_only = OFF")
            conn.rollback()
        finally:
            conn.close()


def _mysql_time_zone(conn: Connection, timezone: str) -> None:
    """The session's time_zone: the named zone where the server has its tables, else the zone's
    current offset (Asia/Shanghai has had no daylight saving since 1991)."""
    try:
        conn.exec_driver_sql("SET time_zone = %s", (timezone,))
    except sa.exc.DBAPIError:
        conn.rollback()
        offset = datetime.now(ZoneInfo(timezone)).strftime("%z")
        conn.exec_driver_sql("SET time_zone = %s", (f"{offset[:3]}:{offset[3:]}",))
