"""Extracting from a unit's own database: any SQLAlchemy source, read-only, streamed in chunks.

Memory is bounded by the chunk size, not the table: results are streamed with server-side
cursors (`stream_results`), since pandas' `read_sql(chunksize=...)` on an Engine buffers
everything first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, URL, make_url

from etl.errors import ConfigError, SourceError, SourceSchemaError
from etl.mapping import DatasetSpec, Mapping, SourceSpec

DEFAULT_CHUNK_ROWS = 100_000

_SCHEMES = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}


def normalise_url(url: str | URL) -> URL:
    """Pick the project's drivers (psycopg 3, pymysql) when a URL names none."""
    parsed = make_url(url)
    if parsed.drivername in _SCHEMES:
        parsed = parsed.set(drivername=_SCHEMES[parsed.drivername])
    if parsed.drivername.startswith("mysql") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def resolve_url(spec: SourceSpec) -> URL:
    """The SQLAlchemy URL a source spec points to; secrets stay out of mapping files."""
    if spec.url:
        return normalise_url(spec.url)
    if spec.url_env:
        value = os.environ.get(spec.url_env)
        if not value:
            raise ConfigError(f"environment variable {spec.url_env} is not set: export it with the "
                              f"unit's SQLAlchemy URL, e.g. postgresql+psycopg://user:***@host/db")
        return normalise_url(value)
    return normalise_url(connection_uri(spec.conn_id or ""))


def connection_uri(conn_id: str) -> str:
    """An Airflow connection's URI, through whatever secrets backend Airflow is set up with."""
    try:
        from airflow.sdk import Connection
    except ImportError:  # pragma: no cover - airflow is a dependency
        raise ConfigError(f"conn_id {conn_id!r} needs Airflow installed") from None
    try:
        conn = Connection.get(conn_id)
    except Exception as e:  # the SDK raises its own not-found types
        raise ConfigError(f"Airflow connection {conn_id!r} not found ({type(e).__name__}): "
                          f"add it with `airflow connections add {conn_id} --conn-uri ...`") from None
    _mask_secret(conn.password)
    return conn.get_uri()


def _mask_secret(secret: str | None) -> None:
    if not secret:
        return
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:
        return
    mask_secret(secret)


@cache
def engine_for(url: URL) -> Engine:
    """One engine per source URL and process, so many datasets share a pool."""
    _mask_secret(url.password)
    return sa.create_engine(url, pool_pre_ping=True)


def safe_error(exc: BaseException, url: URL) -> str:
    """The driver's reason in one line, with the password never shown."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    if url.password:
        text = text.replace(str(url.password), "***")
    return text[:300]


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection inside a read-only transaction: extraction can never write to a source."""
    try:
        conn = engine.connect()
    except sa.exc.DBAPIError as e:
        raise SourceError(f"cannot connect to {engine.url.render_as_string(hide_password=True)}: "
                          f"{safe_error(e, engine.url)}") from None
    try:
        name = engine.dialect.name
        if name == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        elif name in ("mysql", "mariadb"):
            conn.rollback()
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


def _source(ds: DatasetSpec) -> sa.FromClause:
    names = ds.columns()
    if ds.query:
        query = ds.query.strip().rstrip(";")
        return sa.text(query).columns(*[sa.column(c) for c in names]).subquery("src")
    schema, _, name = ds.table.rpartition(".")  # type: ignore[union-attr]
    return sa.table(name, *[sa.column(c) for c in names], schema=schema or None)


def select_statement(ds: DatasetSpec, since: datetime | None = None,
                     until: datetime | None = None) -> sa.Select:
    """The dataset's SELECT: mapped columns only, within the window when one is given."""
    src = _source(ds)
    stmt = sa.select(*[src.c[c] for c in ds.columns()])
    if ds.updated_at and since:
        stmt = stmt.where(src.c[ds.updated_at] >= sa.bindparam("since", since, type_=sa.DateTime))
    if ds.updated_at and until:
        stmt = stmt.where(src.c[ds.updated_at] < sa.bindparam("until", until, type_=sa.DateTime))
    return stmt


def stream(mapping: Mapping, tx_code: str, *, since: datetime | None = None,
           until: datetime | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield the dataset's source rows as DataFrames of at most `chunk_rows` rows."""
    ds = mapping.datasets[tx_code]
    url = resolve_url(mapping.source_for(tx_code))
    engine = engine_for(url)
    stmt = select_statement(ds, since, until)
    with read_only(engine) as conn:
        try:
            result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(stmt)
        except sa.exc.ProgrammingError as e:
            raise SourceSchemaError(f"{mapping.path} [datasets.{tx_code}] the source refused the "
                                    f"query: {safe_error(e, url)}; run `etl check` on this mapping") from None
        except sa.exc.OperationalError as e:
            raise SourceError(f"{mapping.path} [datasets.{tx_code}] reading the source failed: "
                              f"{safe_error(e, url)}") from None
        columns = list(result.keys())
        for rows in result.partitions(chunk_rows):
            yield pd.DataFrame.from_records(rows, columns=columns, coerce_float=False)


# --- checking a source against its mapping ---------------------------------------------------


def source_problems(mapping: Mapping) -> list[str]:
    """Connect to each source and check that every table and column the mapping names exists."""
    problems: list[str] = []
    for tx, ds in mapping.datasets.items():
        where = f"{mapping.path} [datasets.{tx}]"
        try:
            url = resolve_url(mapping.source_for(tx))
        except ConfigError as e:
            problems.append(f"{where} {e}")
            continue
        try:
            with read_only(engine_for(url)) as conn:
                present = _source_columns(conn, ds)
        except SourceError as e:
            problems.append(f"{where} {e}")
            continue
        except sa.exc.DBAPIError as e:
            problems.append(f"{where} the source refused the {'query' if ds.query else 'table'}: "
                            f"{safe_error(e, url)}")
            continue
        if present is None:
            problems.append(f"{where}.table no table {ds.table!r} in the source: check its name")
            continue
        lower = {c.lower(): c for c in present}
        for col in ds.columns():
            if col not in present and col.lower() not in lower:
                problems.append(f"{where} no column {col!r} in "
                                f"{'the query' if ds.query else repr(ds.table)}: columns are "
                                f"{', '.join(sorted(present))[:300]}")
    return problems


def _source_columns(conn: Connection, ds: DatasetSpec) -> set[str] | None:
    if ds.query:
        result = conn.execute(sa.text(f"SELECT * FROM ({ds.query.strip().rstrip(';')}) src WHERE 1=0"))
        return set(result.keys())
    schema, _, name = ds.table.rpartition(".")  # type: ignore[union-attr]
    inspector = sa.inspect(conn)
    if not inspector.has_table(name, schema=schema or None):
        return None
    return {c["name"] for c in inspector.get_columns(name, schema=schema or None)}
