"""Loading one dataset of one unit into the target, as one transaction.

The cleaned rows are streamed into a temporary staging table (COPY on PostgreSQL, multi-row
inserts on MariaDB, executemany on SQLite); everything after that is set-based SQL: dedupe,
the I/U/D diff against the target by `rowHash`, batch numbers, the apply, and the ledger.
Only changed records are written, so a rerun of the same data writes nothing.
"""

from __future__ import annotations

import io
import json
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from etl import standard
from etl.common.columns import cells
from etl.standard import Dataset
from etl.target import schema as target
from etl.target.frame import DELETED, HASH, ID, KEY, REJECTED, SEQ, UPDATED, VANISHED

BUS_TYPES = ("I", "U", "D")


@dataclass
class Counts:
    """Every extracted row ends in exactly one of inserted, updated, deleted (soft), unchanged,
    rejected, duplicates or skipped_deleted (soft-deleted at the source before it was ever
    loaded: nothing to mark); `vanished` are target records gone from a full snapshot, marked D
    (included in `deleted`, not in `extracted`)."""

    extracted: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    rejected: int = 0
    duplicates: int = 0
    warnings: int = 0
    vanished: int = 0
    skipped_deleted: int = 0
    overridden: int = 0  # rows that loaded only because the mapping's `checks:` lowered an error
    batches: dict[str, str] = field(default_factory=dict)

    def balanced(self) -> bool:
        loaded = self.inserted + self.updated + self.deleted - self.vanished
        return self.extracted == (loaded + self.unchanged + self.rejected + self.duplicates
                                  + self.skipped_deleted)


def shown_key(keys: pd.Series) -> pd.Series:
    """Source keys as the target can store and people can read them: a NUL (which PostgreSQL
    text cannot hold) spelt `\\x00`. The record ID is derived from the key as it is."""
    has_nul = keys.str.contains("\x00", regex=False)
    return keys.str.replace("\x00", "\\x00", regex=False) if has_nul.any() else keys


@cache
def _stage_table(tx_code: str, indexed: bool = True) -> sa.Table:
    """A temporary twin of the target table: same types, plus bookkeeping columns. PostgreSQL
    joins it by hashing, so it gets no index there: keeping one up to date during the COPY
    cost more than the COPY itself (random 52-character keys).

    Built once per dataset and reused by every load: SQLAlchemy caches a compiled statement
    under its tables, so a `Table` made afresh per load missed that cache for every statement
    on the stage (benchmarks/README.md, small units)."""
    ds = standard.dataset(tx_code)
    tgt = target.table(ds.tx_code)
    skip = {"batchNo", "txCode", "busType", "updateDate"}
    cols = [sa.Column(c.name, c.type, nullable=True) for c in tgt.columns if c.name not in skip]
    cols += [sa.Column(KEY, sa.String(500)), sa.Column(SEQ, sa.BigInteger),
             sa.Column(UPDATED, sa.String(26)), sa.Column(DELETED, sa.SmallInteger),
             sa.Column(REJECTED, sa.SmallInteger)]
    index = [sa.Index(f"ix_stage_{ds.table}_id", ID)] if indexed else []
    return sa.Table(f"stage_{ds.table}", sa.MetaData(), *cols, *index,
                    prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


@cache
def _change_table(tx_code: str, keyed: bool = True) -> sa.Table:
    """Each changed ID, its busType, and whether it is a D because the full snapshot no
    longer has it (IDs are unique by construction: the key only speeds up joins where the
    database cannot hash). Built once per dataset, as `_stage_table`."""
    ds = standard.dataset(tx_code)
    return sa.Table(f"chg_{ds.table}", sa.MetaData(), sa.Column(ID, sa.String(64), primary_key=keyed),
                    sa.Column("busType", sa.String(1), nullable=False),
                    sa.Column(VANISHED, sa.SmallInteger, nullable=False),
                    prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


@cache
def _keys_table(tx_code: str, indexed: bool = True) -> sa.Table:
    """Every record ID the source has now (`DatasetLoad._sweep`); not unique: a source without
    a key constraint may repeat one. PostgreSQL hashes the anti-join: no index there."""
    name = f"keys_{standard.dataset(tx_code).table}"
    index = [sa.Index(f"ix_{name}_id", ID)] if indexed else []
    return sa.Table(name, sa.MetaData(), sa.Column(ID, sa.String(64)), *index,
                    prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


_ORG = sa.bindparam("org_no", type_=sa.String)  # the unit whose records a statement reads
_BATCH = sa.bindparam("batch", type_=sa.String)  # the batch number an apply writes
_TODAY = sa.bindparam("today", type_=sa.Date)  # the CST day an apply writes (updateDate)


@dataclass(frozen=True)
class _Statements:
    """Every statement a load runs on one dataset's stage, change and target tables, built
    once per dataset and dialect with bind parameters for what varies per load (the unit, the
    batch numbers, the day). Built per load, their construction and cache keys cost more than
    SQLite ran them for a small unit (benchmarks/README.md); built once, SQLAlchemy keeps each
    one's cache key and compiled form."""

    stage: sa.Table
    changes_table: sa.Table
    keys: sa.Table
    repeats: sa.Select  # how many staged rows repeat an ID
    losers: sa.Select  # the rows dedupe drops: (seq, key, ID, hash, rn, kept hash)
    drop_seqs: sa.Delete  # param seqs (expanding)
    changes: sa.Insert  # I, U and soft D of the stage against the whole target
    changes_of_unit: sa.Insert  # ...and vanished Ds, a full outer join with the unit's records
    absent_from_stage: sa.Insert  # the unit's records a full snapshot lacks: vanished Ds
    absent_from_keys: sa.Insert  # the unit's records missing from the source's keys
    by_bus_type: sa.Select  # (busType, count, vanished) of the change table
    active: sa.Select  # the unit's active records
    never_held: sa.Select  # soft-deleted source rows the target never held
    rejected: sa.Select  # rejected rows staged
    apply_i: sa.Insert
    apply_u: sa.Update
    apply_d: sa.Update
    ledger: sa.Insert


@cache
def _statements(tx_code: str, dialect: str) -> _Statements:
    pg = dialect == "postgresql"
    s, c = _stage_table(tx_code, indexed=not pg), _change_table(tx_code, keyed=not pg)
    k, t = _keys_table(tx_code, indexed=not pg), target.table(tx_code)
    mine = t.c[standard.UNIT_KEY] == _ORG
    order = (s.c[UPDATED].is_(None), s.c[UPDATED].desc(), s.c[SEQ].desc())
    ranked = sa.select(
        s.c[SEQ], s.c[KEY], s.c[ID], s.c[HASH],
        sa.func.row_number().over(partition_by=s.c[ID], order_by=order).label("rn"),
        sa.func.first_value(s.c[HASH]).over(partition_by=s.c[ID], order_by=order).label("keep"),
    ).subquery()
    vanished_d = (t.c[ID], sa.literal("D"), sa.literal(1, sa.SmallInteger))
    into_changes = [ID, "busType", VANISHED]
    unit_records = sa.select(t.c[ID], t.c[HASH], t.c.busType).where(mine).subquery("t")
    return _Statements(
        stage=s, changes_table=c, keys=k,
        repeats=sa.select(sa.func.count() - sa.func.count(sa.distinct(s.c[ID]))),
        losers=sa.select(ranked).where(ranked.c.rn > 1),
        drop_seqs=sa.delete(s).where(s.c[SEQ].in_(sa.bindparam("seqs", expanding=True))),
        changes=_changes(s, c, t, full_join=False),
        changes_of_unit=_changes(s, c, unit_records, full_join=True),
        absent_from_stage=sa.insert(c).from_select(into_changes, sa.select(*vanished_d).where(
            mine, t.c.busType != "D", ~sa.exists().where(s.c[ID] == t.c[ID]))),
        absent_from_keys=sa.insert(c).from_select(into_changes, sa.select(*vanished_d).where(
            mine, t.c.busType != "D", ~sa.exists().where(k.c[ID] == t.c[ID]),
            ~sa.exists().where(c.c[ID] == t.c[ID]))),
        by_bus_type=sa.select(c.c.busType, sa.func.count(), sa.func.sum(c.c[VANISHED])).group_by(c.c.busType),
        active=sa.select(sa.func.count()).where(mine, t.c.busType != "D"),
        never_held=sa.select(sa.func.count()).select_from(s.outerjoin(t, t.c[ID] == s.c[ID]))
        .where(s.c[DELETED] == 1, s.c[REJECTED] == 0, t.c[ID].is_(None)),
        rejected=sa.select(sa.func.count()).where(s.c[REJECTED] == 1),
        **_applies(s, c, t, tx_code, dialect),
    )


def _changes(s: sa.Table, c: sa.Table, t: sa.FromClause, full_join: bool) -> sa.Insert:
    """I, U and soft D of the stage against `t` (the target, or the unit's records of it);
    with `full_join`, also `t`'s records missing from the stage, as vanished Ds."""
    ok = sa.and_(s.c[REJECTED] == 0, s.c[DELETED] == 0)
    changed = sa.and_(ok, sa.or_(t.c[ID].is_(None), s.c[HASH] != t.c[HASH], t.c.busType == "D"))
    gone = sa.and_(s.c[DELETED] == 1, t.c.busType != "D")
    bus_type = sa.case((s.c[DELETED] == 1, sa.literal("D")), (t.c[ID].is_(None), sa.literal("I")),
                       else_=sa.literal("U"))
    wanted, vanished = [changed, gone], sa.literal(0, sa.SmallInteger)
    if full_join:
        missing = s.c[ID].is_(None)
        wanted.append(sa.and_(missing, t.c.busType != "D"))
        bus_type = sa.case((missing, sa.literal("D")), else_=bus_type)
        vanished = sa.case((missing, sa.literal(1, sa.SmallInteger)), else_=sa.literal(0, sa.SmallInteger))
    found = (sa.select(sa.func.coalesce(s.c[ID], t.c[ID]) if full_join else s.c[ID], bus_type, vanished)
             .select_from(s.join(t, t.c[ID] == s.c[ID], full=full_join, isouter=True))
             .where(sa.or_(*wanted)))
    return sa.insert(c).from_select([ID, "busType", VANISHED], found)


def _applies(s: sa.Table, c: sa.Table, t: sa.Table, tx_code: str, dialect: str) -> dict[str, Any]:
    """The apply of each busType under its batch number (`batch`, `today`), and the ledger."""
    data_cols = [col.name for col in t.columns
                 if col.name not in ("batchNo", "txCode", "busType", "updateDate")]
    sel = (sa.select(*[s.c[n] for n in data_cols], _BATCH, sa.literal("I", sa.String),
                     sa.literal(tx_code, sa.String), _TODAY)
           .select_from(s.join(c, c.c[ID] == s.c[ID])).where(c.c.busType == "I")
           .order_by(s.c[ID]))  # key order: a million new rows cost ~30% less to index
    values: dict[str, Any] = {n: s.c[n] for n in data_cols if n != ID}
    values.update(batchNo=_BATCH, busType="U", updateDate=_TODAY)
    ids = sa.select(c.c[ID]).where(c.c.busType == "D")
    if dialect in ("mysql", "mariadb"):
        ids = sa.select(ids.subquery().c[ID])  # MySQL: no subquery on the updated table
    ledger = (sa.select(t.c.batchNo, t.c[ID], t.c.busType, _json_record(t, dialect))
              .select_from(t.join(c, c.c[ID] == t.c[ID])))
    return dict(
        apply_i=sa.insert(t).from_select([*data_cols, "batchNo", "busType", "txCode", "updateDate"], sel),
        apply_u=sa.update(t).values(values).where(t.c[ID] == s.c[ID], c.c[ID] == s.c[ID], c.c.busType == "U"),
        apply_d=sa.update(t).values(batchNo=_BATCH, busType="D", updateDate=_TODAY).where(t.c[ID].in_(ids)),
        ledger=sa.insert(target.ingest_change).from_select(["batchNo", "ID", "busType", "record"], ledger),
    )


def _json_record(t: sa.Table, dialect: str) -> sa.ColumnElement:
    """The record as loaded, as a JSON object of the target's columns (not rowHash).

    PostgreSQL: `row_to_json` of a row of those columns; with `json_build_object` and its
    42 arguments the ledger statement took ~45% longer (benchmarks/README.md)."""
    names = [col.name for col in t.columns if col.name != target.HASH_COLUMN]
    if dialect == "postgresql":
        row = sa.select(*[t.c[n] for n in names]).correlate(t).subquery("r")
        return sa.select(sa.cast(sa.func.row_to_json(sa.literal_column("r")), sa.Text)) \
            .select_from(row).scalar_subquery()
    pairs: list = []
    for n in names:
        pairs += [sa.literal(n, sa.String), t.c[n]]
    return (sa.func.json_object if dialect == "sqlite" else sa.func.JSON_OBJECT)(*pairs)


# Planner settings for this load's transaction on PostgreSQL (SET LOCAL: nothing else is
# affected). The default work_mem of 4MB makes the stage/target joins of a million rows spill;
# the default random_page_cost of 4 (a spinning disk) makes a 10,000-row incremental load scan
# the whole million-row target three times instead of probing its primary key, whose pages
# the load itself keeps hot.
PG_SETTINGS = {"work_mem": "64MB", "random_page_cost": "1.1"}
# SET LOCAL of each, in one round trip: set_config(..., is_local => true)
_PG_SET_LOCAL = "SELECT " + ", ".join(f"set_config('{name}', '{value}', true)"
                                      for name, value in PG_SETTINGS.items())
#: A chunk of at most this many rows is COPYed in the caller's thread, not in the background.
COPY_AT_ONCE_ROWS = 1000


def _arrow_column(s: pd.Series) -> pa.Array:
    """A stage column as Arrow, typed as `Table.from_pandas` types the column's Python values
    (text, integers, floats, flags; NULL for NA), without boxing a million of them."""
    if isinstance(s.dtype, pd.StringDtype):
        return pa.array(s, type=pa.large_string(), from_pandas=True)
    if s.dtype.kind in "iub":
        return pa.array(s.to_numpy())
    if s.dtype.kind == "f":
        return pa.array(s.to_numpy(), from_pandas=True) if s.notna().any() else pa.nulls(len(s))
    if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) == "string":
        return pa.array(s.to_numpy(), type=pa.large_string(), from_pandas=True)
    return pa.array(s.astype(object).where(s.notna(), None).to_numpy(), from_pandas=True)


def _id_hashes(ids: pd.Series) -> np.ndarray:
    """A 64-bit hash per ID, for spotting repeats: the last 16 hex digits of the digest
    read as raw bytes (no hashing needed), else pandas' hash where IDs are not shaped so."""
    try:
        tail = pc.utf8_slice_codeunits(pa.array(ids, type=pa.large_string()), -16).cast(pa.binary(16))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pd.util.hash_array(ids.to_numpy(dtype=object))
    words = np.frombuffer(tail.buffers()[1], dtype=np.uint64, count=2 * len(tail)).reshape(-1, 2)
    return words[:, 0] ^ (words[:, 1] * np.uint64(0x9E3779B97F4A7C15))


def _copy_csv(raw: Any, sql: str, table: pa.Table, started: threading.Event) -> None:
    with raw.cursor() as cur, cur.copy(sql) as copy:
        started.set()  # the connection's lock is held now: nothing can slip in before the COPY
        for batch in table.to_batches(max_chunksize=10_000):  # a few MB of CSV at a time
            buf = io.BytesIO()
            pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
            copy.write(buf.getbuffer())


class _Background:
    """A COPY running in a thread, whose error surfaces when its result is asked for.

    It starts by taking the connection (psycopg's lock) before the caller goes on, so that
    whatever the caller does next on the connection, a rollback after an error included,
    waits for the COPY instead of running before it."""

    def __init__(self, fn: Any, *args: Any):
        self._error: BaseException | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, *args, started), daemon=True,
                                        name="etl-stage-copy")
        self._thread.start()
        started.wait()
        if self._error is not None:
            self.result()

    def _run(self, fn: Any, *args: Any) -> None:
        started = args[-1]
        try:
            fn(*args)
        except BaseException as e:  # re-raised in the caller's thread
            self._error = e
        finally:
            started.set()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


class DatasetLoad:
    """Stage, diff and apply one unit's dataset inside the caller's transaction."""

    def __init__(self, conn: Connection, ds: Dataset, org_no: str):
        self.conn, self.ds, self.org_no = conn, ds, org_no
        self.dialect = conn.dialect.name
        self.target = target.table(ds.tx_code)
        if self.dialect == "postgresql":
            conn.exec_driver_sql(_PG_SET_LOCAL)
        self.sql = _statements(ds.tx_code, self.dialect)
        self.stage, self.changes = self.sql.stage, self.sql.changes_table
        for t in (self.stage, self.changes):
            if self.dialect != "postgresql":  # a leftover of a failed load on this connection
                _drop_temporary(conn, t, if_exists=True)
            _create_temporary(conn, t)
        self.staged = 0
        self.stage_columns = [c.name for c in self.stage.columns]
        self._copying: _Background | None = None
        self._rejected = 0  # rejected rows staged, until dedupe drops any
        self._deleted = 0  # soft-deleted rows staged
        self._id_hashes: list[np.ndarray] = []  # 64-bit hashes of staged IDs (dedupe's shortcut)
        self.keys: sa.Table | None = None  # every ID the source has now (`_sweep`), when compared
        self.swept: int | None = None  # how many source keys `_sweep` compared
        self.vanished = 0

    # --- staging ------------------------------------------------------------------------

    def add(self, frame: pd.DataFrame) -> None:
        """Stage a chunk: valid rows with their fields, rejected and soft-deleted ones by ID
        only. Deleted rows are not validated and their fields are never read (a D keeps the
        target's values), so a value that does not fit its column must not fail the COPY."""
        if frame.empty:
            return
        n = len(frame)
        rejected, deleted = frame[REJECTED], frame[DELETED]
        by_id_only = (rejected.astype(bool) | deleted.astype(bool)).to_numpy()
        blanked = [name for name in self.ds.field_names if name != standard.UNIT_KEY]
        first = self.staged
        self.staged += n
        self._rejected += int((rejected == 1).sum())
        self._deleted += int(((deleted == 1) & (rejected == 0)).sum())
        self._id_hashes.append(_id_hashes(frame[ID]))
        if self.dialect == "postgresql":
            hide = by_id_only if by_id_only.any() else None
            self._copy(pa.table({name: self._arrow_stage_column(frame, name, first, hide, blanked)
                                 for name in self.stage_columns}))
            return
        # SQLite, MariaDB: the rows as tuples, column by column (a frame-wide `astype(object)`
        # cost more than the insert itself on a small unit's chunk), blanked cell by cell
        blank = set(blanked) if by_id_only.any() else set()
        columns = []
        for name in self.stage_columns:
            if name == SEQ:
                column = list(range(first, first + n))
            elif name == KEY:
                column = cells(shown_key(frame[KEY]))
            elif name in frame.columns:
                column = cells(frame[name])
            else:
                column = [None] * n
            if name in blank:
                column = [None if hide else v for v, hide in zip(column, by_id_only)]
            columns.append(column)
        self._insert(list(zip(*columns)))

    @staticmethod
    def _arrow_stage_column(frame: pd.DataFrame, name: str, first: int, hide: np.ndarray | None,
                            blanked: Sequence[str]) -> pa.Array:
        """One stage column of a chunk as Arrow: its sequence numbers, its shown keys, the
        frame's column (NULL where the frame has none), NULL on `hide` rows of `blanked` fields.
        A text column is blanked by Arrow (a pandas `mask` per field cost more than the COPY);
        any other as pandas masks it (an integer column becomes floats with NaN)."""
        n = len(frame)
        if name == SEQ:
            return pa.array(np.arange(first, first + n, dtype=np.int64))
        if name == KEY:
            return _arrow_column(shown_key(frame[KEY]))
        if name not in frame.columns:
            return pa.nulls(n)
        s = frame[name]
        if hide is None or name not in blanked:
            return _arrow_column(s)
        if isinstance(s.dtype, pd.StringDtype):
            text = _arrow_column(s)
            return pc.if_else(pa.array(hide), pa.scalar(None, text.type), text)
        return _arrow_column(s.mask(hide))

    def _copy(self, table: pa.Table) -> None:
        """COPY the chunk; a large one in a background thread while the caller prepares the
        next one: the server parses and stores rows on one core while Python cleans on the
        other. Each DatasetLoad method that reads the stage waits for it first (`_flush`). A
        small chunk is copied at once: a thread costs more than it could overlap."""
        self._flush()
        cols = ", ".join(f'"{c}"' for c in self.stage_columns)
        sql = f'COPY "{self.stage.name}" ({cols}) FROM STDIN (FORMAT csv)'
        raw = self.conn.connection.driver_connection
        if table.num_rows <= COPY_AT_ONCE_ROWS:
            _copy_csv(raw, sql, table, threading.Event())
            return
        self._copying = _Background(_copy_csv, raw, sql, table)

    def _flush(self) -> None:
        """Wait for a COPY still running; raise its error here if it failed."""
        if self._copying is not None:
            copying, self._copying = self._copying, None
            copying.result()

    def _insert(self, rows: list[tuple]) -> None:
        """Insert staged rows (tuples in `stage_columns` order) with the driver's executemany:
        one multi-row statement on MariaDB, a prepared statement reused on SQLite."""
        cols = ", ".join(self._q(c) for c in self.stage_columns)
        marks = ", ".join(["%s" if self.dialect != "sqlite" else "?"] * len(self.stage_columns))
        sql = f"INSERT INTO {self._q(self.stage.name)} ({cols}) VALUES ({marks})"
        cur = self.conn.connection.driver_connection.cursor()
        try:
            cur.executemany(sql, rows)
        finally:
            cur.close()

    def _q(self, name: str) -> str:
        return self.conn.dialect.identifier_preparer.quote(name)

    # --- dedupe ---------------------------------------------------------------------------

    def dedupe(self) -> list[tuple[int, str, str, str]]:
        """Keep the latest row per ID (by updated_at, then read order); return the others as
        (stage seq, source key, ID, 'duplicate' or 'superseded')."""
        self._flush()
        if self.dialect == "postgresql":
            self.conn.exec_driver_sql(f'ANALYZE "{self.stage.name}"')
        if not self._maybe_duplicates():
            return []
        st = self.sql
        if not self.conn.execute(st.repeats).scalar_one():
            return []
        losers = self.conn.execute(st.losers).all()
        seqs = [r[0] for r in losers]
        for i in range(0, len(seqs), 1000):
            self.conn.execute(st.drop_seqs, {"seqs": seqs[i:i + 1000]})
        self._rejected = -1  # some staged rows are gone: count rejected ones in SQL
        return [(r[0], r[1], r[2], "duplicate" if r[3] == r[5] else "superseded") for r in losers]

    def _maybe_duplicates(self) -> bool:
        """Whether two staged IDs share a 64-bit hash: if none do, no ID repeats, and the
        server need not sort every ID to find out."""
        hashes = np.concatenate(self._id_hashes) if self._id_hashes else np.empty(0, np.uint64)
        self._id_hashes = []
        hashes.sort()
        return bool((hashes[1:] == hashes[:-1]).any())

    # --- diff -----------------------------------------------------------------------------

    def diff(self, full: bool, keys: Iterable[pd.Series] | None = None) -> dict[str, int]:
        """Fill the change table with each changed ID's busType; return counts per busType.

        One pass of the stage against the target: new (I), changed or revived (U) and
        soft-deleted (D) rows come out of a single outer join rather than three joins. A full
        load also marks the unit's records its snapshot lacks (D, vanished): on PostgreSQL in
        the same pass, a full outer join with the unit's records (MariaDB has no full join).
        An incremental load given `keys` (the record IDs of every row the source has now, in
        chunks) marks the unit's active records missing from them (D, vanished) the same way:
        hard deletes at the source, found without reading more than the keys."""
        self._flush()
        st, unit = self.sql, {"org_no": self.org_no}
        if full and self.dialect == "postgresql":
            self.conn.execute(st.changes_of_unit, unit)
        else:
            self.conn.execute(st.changes)
            if full:
                self.conn.execute(st.absent_from_stage, unit)
        if keys is not None:
            self._sweep(keys)
        if self.dialect == "postgresql":
            self.conn.exec_driver_sql(f'ANALYZE "{self.changes.name}"')
        rows = self.conn.execute(st.by_bus_type).all()
        self.vanished = sum(int(v or 0) for _, _, v in rows)
        return {bt: n for bt, n, _ in rows}

    def _sweep(self, keys: Iterable[pd.Series]) -> None:
        """Stage every ID the source has now, then mark the unit's active records that are not
        among them, and that this load does not change otherwise, as vanished Ds."""
        pg = self.dialect == "postgresql"
        self.keys = self.sql.keys
        name = self.keys.name
        if not pg:
            _drop_temporary(self.conn, self.keys, if_exists=True)
        _create_temporary(self.conn, self.keys)
        self.swept = 0
        for ids in keys:
            self.swept += len(ids)
            if len(ids):
                self._insert_ids(ids.tolist())
        if pg:
            self.conn.exec_driver_sql(f'ANALYZE "{name}"')
        self.conn.execute(self.sql.absent_from_keys, {"org_no": self.org_no})

    def _insert_ids(self, ids: list[str]) -> None:
        """Record IDs (ASCII: orgNo, txCode, hex) into the keys table: COPY on PostgreSQL."""
        assert self.keys is not None
        if self.dialect == "postgresql":
            raw = self.conn.connection.driver_connection
            with raw.cursor() as cur, cur.copy(f'COPY "{self.keys.name}" ("{ID}") FROM STDIN') as copy:
                copy.write("\n".join(ids) + "\n")
            return
        mark = "?" if self.dialect == "sqlite" else "%s"
        cur = self.conn.connection.driver_connection.cursor()
        try:
            cur.executemany(f"INSERT INTO {self._q(self.keys.name)} ({self._q(ID)}) VALUES ({mark})",
                            [(i,) for i in ids])
        finally:
            cur.close()

    def active_count(self) -> int:
        """The unit's active records in the target, before this load applies anything."""
        return self.conn.execute(self.sql.active, {"org_no": self.org_no}).scalar_one()

    def skipped_deleted_count(self) -> int:
        """Soft-deleted source rows the target never held: there is nothing to mark D."""
        self._flush()
        if not self._deleted:
            return 0
        return self.conn.execute(self.sql.never_held).scalar_one()

    def rejected_count(self) -> int:
        self._flush()
        if self._rejected >= 0:
            return self._rejected
        return self.conn.execute(self.sql.rejected).scalar_one()

    # --- apply ----------------------------------------------------------------------------

    def apply(self, batches: dict[str, str], today: date) -> None:
        """Write the changes, each busType under its own batch number, and the ledger."""
        self._flush()
        for bus_type, stmt in (("I", self.sql.apply_i), ("U", self.sql.apply_u), ("D", self.sql.apply_d)):
            if bus_type in batches:
                self.conn.execute(stmt, {"batch": batches[bus_type], "today": today})
        self._ledger()

    def _ledger(self) -> None:
        """Each changed record as it now stands, as JSON, under its batch number."""
        self.conn.execute(self.sql.ledger)

    def close(self) -> None:
        self._flush()
        if self.dialect != "postgresql":
            for t in (self.stage, self.changes, self.keys):
                if t is not None:  # made by this load: no need to ask whether they exist
                    _drop_temporary(self.conn, t)



def _drop_temporary(conn: Connection, table: sa.Table, *, if_exists: bool = False) -> None:
    """Drop one of a load's temporary tables (SQLite, MySQL/MariaDB) without asking first
    whether it exists. MySQL and MariaDB are told it is TEMPORARY: their plain `DROP TABLE IF
    EXISTS` checks the DROP privilege on a permanent table of that name, which the loader role
    does not hold, when there is no temporary one."""
    if conn.dialect.name in ("mysql", "mariadb"):
        name = conn.dialect.identifier_preparer.quote(table.name)
        conn.exec_driver_sql(f"DROP TEMPORARY TABLE {'IF EXISTS ' if if_exists else ''}{name}")
    else:
        conn.exec_driver_sql(_compiled_ddl(conn.dialect, table, f"drop{'?' if if_exists else ''}")[0])


def _create_temporary(conn: Connection, table: sa.Table) -> None:
    """CREATE one of a load's temporary tables and its indexes, as `Table.create` does."""
    for sql in _compiled_ddl(conn.dialect, table, "create"):
        conn.exec_driver_sql(sql)


_DDL: weakref.WeakKeyDictionary[Any, dict[tuple[sa.Table, str], tuple[str, ...]]] = weakref.WeakKeyDictionary()


def _compiled_ddl(dialect: Any, table: sa.Table, what: str) -> tuple[str, ...]:
    """A temporary table's CREATE (with its indexes) or DROP, compiled once per dialect: every
    load makes and drops two or three of them, and SQLAlchemy compiles DDL afresh each time
    (a sixth of a small dataset's load, benchmarks/README.md)."""
    per_dialect = _DDL.setdefault(dialect, {})
    key = (table, what)
    if key not in per_dialect:
        if what == "create":
            statements = [sa.schema.CreateTable(table),
                          *(sa.schema.CreateIndex(i) for i in sorted(table.indexes, key=lambda i: i.name))]
        else:
            statements = [sa.schema.DropTable(table, if_exists=what.endswith("?"))]
        per_dialect[key] = tuple(str(st.compile(dialect=dialect)).strip() for st in statements)
    return per_dialect[key]

# --- the mass-delete guard ---------------------------------------------------------------------

#: A load that would mark more than this share of a unit's active records deleted because the
#: source no longer has them (and at least MASS_DELETE_MIN of them), or any of them when the
#: source returned nothing at all, is refused until a person confirms: an emptied table, a
#: broken view or a wrong schema look exactly like a source that deleted them, and the
#: standard's records must not go on a source's word alone. Below that, deletions are a
#: unit's daily life.
MASS_DELETE_SHARE = 0.2
MASS_DELETE_MIN = 10


def mass_delete(vanished: int, active: int, returned: int, rekeyed: bool = False) -> bool:
    """Whether marking `vanished` of a unit's `active` records deleted, after the source
    `returned` that many rows or keys, needs a person's word. A mapping whose key changed
    (`rekeyed`) replaces every record by design: only an empty source is suspect then."""
    if vanished <= 0:
        return False
    if returned == 0 or rekeyed:
        return returned == 0
    return vanished >= MASS_DELETE_MIN and vanished > MASS_DELETE_SHARE * active


# --- batch numbers ---------------------------------------------------------------------------


def _bump(conn: Connection, key: str, count: int) -> int:
    """Add `count` to the day's counter in one statement and return the new value.

    A single upsert takes the row's exclusive lock at once; an insert-if-missing followed by an
    update deadlocks on InnoDB when two loaders start a new day together."""
    seq = target.ingest_batch_seq
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        ins = (postgresql.insert(seq) if name == "postgresql" else sqlite.insert(seq)).values(
            day=key, lastSeq=count)
        stmt = ins.on_conflict_do_update(index_elements=[seq.c.day],
                                         set_={"lastSeq": seq.c.lastSeq + count})
        return conn.execute(stmt.returning(seq.c.lastSeq)).scalar_one()
    ins = mysql.insert(seq).values(day=key, lastSeq=count)
    conn.execute(ins.on_duplicate_key_update(lastSeq=seq.c.lastSeq + count))
    return conn.execute(sa.select(seq.c.lastSeq).where(seq.c.day == key)).scalar_one()


def allocate_batches(conn: Connection, day: date, count: int) -> list[str]:
    """`count` consecutive batch numbers of `day` (CST): YYYYMMDD + 8-digit sequence.

    The day's counter row stays locked until the caller's transaction ends, so concurrent
    loads get distinct, ordered numbers and a rolled-back load leaves no gap.
    """
    if count <= 0:
        return []
    key = day.strftime("%Y%m%d")
    last = _bump(conn, key, count)
    if last > 99_999_999:
        raise OverflowError(f"more than 99,999,999 batches on {key}")
    return [f"{key}{n:08d}" for n in range(last - count + 1, last + 1)]


def record_batches(conn: Connection, batches: dict[str, str], counts: dict[str, int], org_no: str,
                   tx_code: str, run_id: str, now: datetime) -> None:
    conn.execute(sa.insert(target.ingest_batch), [
        {"batchNo": b, "orgNo": org_no, "txCode": tx_code, "busType": bt, "records": counts[bt],
         "runId": run_id, "createdAt": now} for bt, b in batches.items()])


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[dict]) -> None:
    for i in range(0, len(rows), 5000):
        conn.execute(sa.insert(table), list(rows[i:i + 5000]))


def as_json(examples: Iterable) -> str:
    return json.dumps(list(examples), ensure_ascii=False)
