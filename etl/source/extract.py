"""Extracting from a unit's own database: any SQLAlchemy source, read-only, streamed in chunks.

Memory is bounded by the chunk size, not the table: results are streamed with server-side
cursors (`stream_results`), since pandas' `read_sql(chunksize=...)` on an Engine buffers
everything first. PostgreSQL sources take a faster road with the same result: COPY to CSV,
parsed by pyarrow (see `stream`).
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import postgres, pq
from psycopg.types.string import TextLoader
from sqlalchemy.engine import Connection, Engine, URL
from sqlalchemy.ext.compiler import compiles

from etl.common import clock
from etl.common.errors import SourceDataError, SourceError, SourceSchemaError
from etl.mapping import DatasetSpec, Mapping, SourceSpec
from etl.mapping.sql_guard import select_problem
from etl.source.connect import (CST_NAME, engine_for, is_schema_problem, read_only, resolve_url,
                                safe_error)

DEFAULT_CHUNK_ROWS = 100_000


# --- time zones --------------------------------------------------------------------------------


def to_source_time(moment: datetime, timezone: str) -> datetime:
    """A naive CST window bound as the source's zone-less wall-clock time."""
    if timezone == CST_NAME:
        return moment
    return clock.to_cst(moment).astimezone(ZoneInfo(timezone)).replace(tzinfo=None)


def in_cst(frame: pd.DataFrame, timezone: str) -> pd.DataFrame:
    """Timestamps as naive CST wall-clock times, which is what everything downstream reads:
    zone-aware values (timestamptz, read in the session's zone) converted; zone-less ones taken
    as `timezone`'s wall clock (the mapping's source.timezone; CST: unchanged). Text is left as
    written."""
    zone = ZoneInfo(timezone)
    for name, dtype in frame.dtypes.items():
        if not (dtype == object or dtype.kind == "M"):
            continue  # numbers and text: nothing to convert, and no column to take out
        s = frame[name]
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            frame[name] = s.dt.tz_convert(clock.CST).dt.tz_localize(None)
        elif pd.api.types.is_datetime64_dtype(s.dtype):
            if timezone != CST_NAME:
                frame[name] = (s.dt.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
                               .dt.tz_convert(clock.CST).dt.tz_localize(None))
        elif s.dtype == object and isinstance(s.get(s.first_valid_index()), datetime):
            frame[name] = s.map(lambda v: _value_in_cst(v, zone), na_action="ignore")
    return frame


def _value_in_cst(v: Any, zone: ZoneInfo) -> Any:
    if not isinstance(v, datetime):
        return v
    if v.tzinfo is None:
        if zone.key == CST_NAME:
            return v
        v = v.replace(tzinfo=zone)
    try:
        return v.astimezone(clock.CST).replace(tzinfo=None)
    except (OverflowError, ValueError):  # year 1 or 9999 at the edge of the calendar
        return v.replace(tzinfo=None)


class QueryText(sa.sql.expression.TextClause):
    """A mapping's query, sent as written: unlike `sa.text`, a `:name` in it is never taken
    for a bind parameter (it is text, e.g. inside a literal), and `%` is escaped for drivers
    that interpolate parameters (psycopg, pymysql) like any literal SQL text."""

    inherit_cache = True

    def __init__(self, text: str):  # no bind parameters: TextClause's scan is skipped
        self._bindparams = {}
        self.text = text


@compiles(QueryText)
def _compile_query_text(element: QueryText, compiler: Any, **kw: Any) -> str:
    # the newline: a query ending in a `--` comment must not comment out what wraps it
    return compiler.post_process_text(element.text) + "\n"


def query_text(ds: DatasetSpec) -> str:
    """The query as sent: without surrounding blanks and a final `;`."""
    return (ds.query or "").strip().rstrip(";").rstrip()


def guard_query(mapping: Mapping, tx_code: str, dialect: str) -> None:
    """Refuse, as the dataset's mapping problem, a query that is not exactly one read-only
    SELECT in the source's own dialect (validating the file, the dialect was not known: a
    text may parse as one harmless SELECT in one dialect and as nothing in another)."""
    ds = mapping.datasets[tx_code]
    if ds.query and (problem := select_problem(query_text(ds), dialect)):
        raise SourceSchemaError(f"{mapping.path} [datasets.{tx_code}.query] query: {problem}")


def source_of(ds: DatasetSpec) -> sa.FromClause:
    names = ds.columns()
    if ds.query:
        return QueryText(query_text(ds)).columns(*[sa.column(c) for c in names]).subquery("src")
    schema, _, name = ds.table.rpartition(".")  # type: ignore[union-attr]
    return sa.table(name, *[sa.column(c) for c in names], schema=schema or None)


def select_statement(ds: DatasetSpec, since: datetime | None = None,
                     until: datetime | None = None) -> sa.Select:
    """The dataset's SELECT: mapped columns only, within the window when one is given."""
    src = source_of(ds)
    stmt = sa.select(*[src.c[c] for c in ds.columns()])
    if ds.updated_at and since:
        stmt = stmt.where(src.c[ds.updated_at] >= sa.bindparam("since", since, type_=sa.DateTime))
    if ds.updated_at and until:
        stmt = stmt.where(src.c[ds.updated_at] < sa.bindparam("until", until, type_=sa.DateTime))
    return stmt


def stream(mapping: Mapping, tx_code: str, *, since: datetime | None = None,
           until: datetime | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Yield the dataset's source rows as DataFrames of at most `chunk_rows` rows.

    PostgreSQL sources (psycopg, UTF-8) are read with `COPY (SELECT ...) TO STDOUT` parsed by
    pyarrow, several times faster than fetching rows; the frames are the same as the row
    path's (values, dtypes), so nothing downstream can tell which path read them. Every path
    sends the mapping's text so that a source runs one statement only: PostgreSQL's extended
    protocol (a server-side cursor; COPY's text parsed first), one statement per call in
    pymysql and sqlite3."""
    ds = mapping.datasets[tx_code]
    spec = mapping.source_for(tx_code)
    url = resolve_url(spec)
    engine = engine_for(url, spec)
    zone = spec.timezone
    stmt = select_statement(ds, since and to_source_time(since, zone), until and to_source_time(until, zone))
    where = f"{mapping.path} [datasets.{tx_code}]"
    guard_query(mapping, tx_code, engine.dialect.name)
    for frame in _stream(engine, spec, ds, stmt, chunk_rows, where, url):
        yield in_cst(frame, zone)


def stream_keys(mapping: Mapping, tx_code: str, *,
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The dataset's key columns of every source row, whatever its window: what rows deleted at
    the source are found from (the target's active records whose keys are no longer there).
    Only the key travels, by the same paths and in the same types as `stream`'s, so each key
    reads as the same text and so the same record ID."""
    ds = mapping.datasets[tx_code]
    spec = mapping.source_for(tx_code)
    url = resolve_url(spec)
    engine = engine_for(url, spec)
    src = source_of(ds)
    stmt = sa.select(*[src.c[c] for c in ds.key])
    where = f"{mapping.path} [datasets.{tx_code}]"
    guard_query(mapping, tx_code, engine.dialect.name)
    for frame in _stream(engine, spec, ds, stmt, chunk_rows, where, url):
        yield in_cst(frame, spec.timezone)


def _stream(engine: Engine, spec: SourceSpec, ds: DatasetSpec, stmt: sa.Select, chunk_rows: int,
            where: str, url: URL) -> Iterator[pd.DataFrame]:
    with read_only(engine, spec.statement_timeout_s, spec.timezone) as conn:
        fast = copy_fast_path(conn)
        try:
            result = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows).execute(
                stmt.limit(0) if fast else stmt)
        except sa.exc.ProgrammingError as e:
            raise refused(where, ds, e, url) from None
        except sa.exc.OperationalError as e:
            if is_schema_problem(e):  # SQLite reports a missing table or column this way
                raise refused(where, ds, e, url) from None
            raise _failed(where, e, url) from None
        columns = list(result.keys())
        if fast:
            oids = [d[1] for d in result.cursor.description]
            result.close()
            yield from _copy_frames(conn, stmt, columns, oids, chunk_rows, where, url, ds)
            return
        try:
            for rows in result.partitions(chunk_rows):
                yield pd.DataFrame.from_records(rows, columns=columns, coerce_float=False)
        except sa.exc.DataError as e:
            raise _bad_data(where, e, url) from None
        except sa.exc.OperationalError as e:
            raise _failed(where, e, url) from None
        except sa.exc.DBAPIError as e:
            raise refused(where, ds, e, url) from None


def _bad_data(where: str, e: BaseException, url: URL) -> SourceDataError:
    return SourceDataError(f"{where} the source failed on a value mid-read: {safe_error(e, url)}: "
                           f"fix the value at the source, or make the query's casts accept it")


def refused(where: str, ds: DatasetSpec, e: BaseException, url: URL) -> SourceSchemaError:
    what = "query" if ds.query else "table"
    return SourceSchemaError(f"{where} the source refused the {what}: {safe_error(e, url)}: "
                             f"fix {what}: or the column names in the mapping")


def _failed(where: str, e: BaseException, url: URL) -> SourceError:
    text = safe_error(e, url)
    hint = ""
    if "statement timeout" in text or "timed out" in text:
        hint = ("; it ran longer than the source's timeout: raise source.statement_timeout_s "
                "in the mapping or narrow the query")
    return SourceError(f"{where} reading the source failed: {text}{hint}")


# --- the PostgreSQL fast path ----------------------------------------------------------------


def copy_fast_path(conn: Connection) -> bool:
    """Whether `conn` can stream a query with COPY into Arrow: psycopg 3 on PostgreSQL, text
    arriving as UTF-8 (what pyarrow parses), distinct column names."""
    if conn.dialect.name != "postgresql":
        return False
    raw = conn.connection.driver_connection
    return isinstance(raw, psycopg.Connection) and raw.info.encoding == "utf-8"


def _copy_frames(conn: Connection, stmt: sa.Select, columns: list[str], oids: list[int],
                 chunk_rows: int, where: str, url: URL, ds: DatasetSpec) -> Iterator[pd.DataFrame]:
    if len(set(columns)) != len(columns):
        raise SourceSchemaError(f"{where} the query returns a column name twice: "
                                f"{', '.join(columns)}; give each column its own name")
    raw = conn.connection.driver_connection
    compiled = stmt.compile(dialect=conn.dialect)
    sql = copy_statement(raw, str(compiled), dict(compiled.params))
    with raw.cursor() as cur:
        columns_of = _column_readers(cur, columns, oids)
        try:
            _parse_once(raw, sql)
            yield from _copy_out(cur, sql, None, chunk_rows,
                                 lambda data, rows: _frame(data, rows, columns, columns_of))
        except psycopg.DataError as e:
            raise _bad_data(where, e, url) from None
        except psycopg.OperationalError as e:
            raise _failed(where, e, url) from None
        except psycopg.ProgrammingError as e:
            raise refused(where, ds, e, url) from None


def copy_statement(raw: psycopg.Connection, select: str, params: dict[str, Any]) -> str:
    """`COPY (select) TO STDOUT` with the parameters merged in (COPY takes none from the
    server); SQLAlchemy's `%%` (for psycopg's interpolation) undone when there are none."""
    sql = f"COPY ({select}) TO STDOUT (FORMAT csv)"
    if params:
        return psycopg.ClientCursor(raw).mogrify(sql, params)
    return sql.replace("%%", "%")


def _parse_once(raw: psycopg.Connection, sql: str) -> None:
    """Have the server parse `sql` by the extended protocol, which refuses a text of several
    statements, before psycopg sends it for COPY by the simple protocol, which would run
    them all."""
    res = raw.pgconn.prepare(b"", sql.encode(raw.info.encoding))
    if res.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.ProgrammingError(" ".join((res.get_error_message() or "parse failed").split()))


class _Stop(Exception):
    """Raised inside the COPY block when the reader must quit early: psycopg then cancels the
    COPY and drains the connection instead of leaving it mid-COPY."""


_DONE = object()


def _copy_out(cur: psycopg.Cursor, sql: str, params: dict | None, chunk_rows: int,
              parse: Callable[[bytearray, int], pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """`chunk_rows` rows at a time (each COPY message is one row), parsed. A thread reads and
    parses (pyarrow's CSV parser runs without the GIL) while the caller works on the
    previous chunk."""
    chunks: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    def read() -> None:
        try:
            with cur.copy(sql, params) as copy:
                data, rows = bytearray(), 0
                for row in copy:  # copied at once: libpq's buffer of each row is freed now
                    data += row
                    rows += 1
                    if rows == chunk_rows:
                        put(parse(data, rows))
                        data, rows = bytearray(), 0
                if rows:
                    put(parse(data, rows))
            put(_DONE)
        except _Stop:
            pass
        except BaseException as e:  # handed to the caller's thread
            try:
                put(e)
            except _Stop:
                pass

    reader = threading.Thread(target=read, name="etl-copy-out", daemon=True)
    _READERS[reader] = stop
    reader.start()
    try:
        while (item := chunks.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


# Readers still running when the interpreter exits (a generator kept alive by a traceback is
# only closed during finalisation, when daemon threads can no longer run): stop them while
# they can still cancel their COPY, or the final rollback waits on a connection mid-COPY.
_READERS: weakref.WeakKeyDictionary[threading.Thread, threading.Event] = weakref.WeakKeyDictionary()


@atexit.register
def _stop_readers() -> None:
    for reader, stop in list(_READERS.items()):
        stop.set()
        reader.join(timeout=30)


# How a column arrives from COPY and becomes what psycopg would have returned: text as Arrow
# strings, integers and timestamps parsed by Arrow, anything else through psycopg's own
# loader, once per distinct value.
_ColumnReader = Callable[[pa.Array], pd.Series]


def _column_readers(cur: psycopg.Cursor, columns: list[str], oids: list[int]) -> dict[str, _ColumnReader]:
    return {name: _reader(cur, oid) for name, oid in zip(columns, oids)}


_TEXT_LOADERS = {TextLoader, psycopg.adapters.get_loader(postgres.types["text"].oid, pq.Format.TEXT)}
_INT_OIDS = {postgres.types[n].oid for n in ("int2", "int4", "int8")}
_TIMESTAMP_OID = postgres.types["timestamp"].oid


def _reader(cur: psycopg.Cursor, oid: int) -> _ColumnReader:
    loader_cls = cur.adapters.get_loader(oid, pq.Format.TEXT)
    if loader_cls in _TEXT_LOADERS:
        return _as_is
    loader = loader_cls(oid, cur)  # type: ignore[misc]
    if oid in _INT_OIDS:
        return lambda a: _cast(a, pa.int64(), loader)
    if oid == _TIMESTAMP_OID:
        return lambda a: _cast(a, pa.timestamp("us"), loader)
    return lambda a: _loaded(a, loader)


def _as_is(a: pa.Array) -> pd.Series:
    return a.to_pandas()


def _cast(a: pa.Array, to: pa.DataType, loader: Any) -> pd.Series:
    """Arrow's parse of the text, which equals the loader's for the spellings PostgreSQL
    prints; anything else (BC dates, infinity) goes through the loader."""
    try:
        return a.cast(to).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _loaded(a, loader)


def _loaded(a: pa.Array, loader: Any) -> pd.Series:
    """Each distinct value through the psycopg loader, then the dtype pandas infers for those
    objects in `DataFrame.from_records` (the row path), expanded back with one take."""
    encoded = a.dictionary_encode()
    values = [loader.load(v) for v in encoded.dictionary.cast(pa.large_binary()).to_pylist()]
    codes = encoded.indices.fill_null(len(values)).to_numpy(zero_copy_only=False)
    if encoded.null_count:
        values.append(None)
    typed = pd.DataFrame.from_records([(v,) for v in values], columns=["v"], coerce_float=False)["v"]
    return pd.Series(typed.array.take(codes))


def _frame(data: bytearray, rows: int, columns: list[str],
           readers: dict[str, _ColumnReader]) -> pd.DataFrame:
    """One chunk's CSV (`rows` rows) as the DataFrame `from_records` would have built from
    psycopg's rows. The parser's slower quoted-newline mode only where a value holds a
    newline, i.e. the chunk has more newlines than rows (a third less CPU without it)."""
    table = pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(data)),
        read_options=pacsv.ReadOptions(column_names=columns, use_threads=False,
                                       block_size=max(len(data), 1 << 20)),
        parse_options=pacsv.ParseOptions(newlines_in_values=data.count(b"\n") != rows),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.large_string() for c in columns}, strings_can_be_null=True,
            quoted_strings_can_be_null=False))
    out: dict[str, pd.Series] = {}
    for name in columns:
        col = table.column(name).combine_chunks()
        if col.null_count == len(col):  # from_records: a column of None only stays object
            out[name] = pd.Series([None] * len(col), dtype=object)
        else:
            out[name] = readers[name](col)
    return pd.DataFrame(out, columns=columns)
