"""Loading one dataset of one unit into the target, as one transaction.

The cleaned rows are streamed into a temporary staging table (COPY on PostgreSQL, multi-row
inserts on MariaDB, executemany on SQLite); everything after that is set-based SQL: dedupe,
the I/U/D diff against the target by `rowHash`, batch numbers, the apply, and the ledger.
Only changed records are written, so a rerun of the same data writes nothing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from etl import standard, target
from etl.standard import Dataset
from etl.transform import DELETED, HASH, ID, KEY, SEQ, UPDATED

REJECTED = "_rejected"
BUS_TYPES = ("I", "U", "D")


@dataclass
class Counts:
    """Every extracted row ends in exactly one of inserted, updated, deleted (soft), unchanged,
    rejected or duplicates; `vanished` are target records gone from a full snapshot, marked D
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
    batches: dict[str, str] = field(default_factory=dict)

    def balanced(self) -> bool:
        loaded = self.inserted + self.updated + self.deleted - self.vanished
        return self.extracted == loaded + self.unchanged + self.rejected + self.duplicates


def _stage_table(ds: Dataset, meta: sa.MetaData) -> sa.Table:
    """A temporary twin of the target table: same types, plus bookkeeping columns."""
    tgt = target.table(ds.tx_code)
    skip = {"batchNo", "txCode", "busType", "updateDate"}
    cols = [sa.Column(c.name, c.type, nullable=True) for c in tgt.columns if c.name not in skip]
    cols += [sa.Column(KEY, sa.String(500)), sa.Column(SEQ, sa.BigInteger),
             sa.Column(UPDATED, sa.String(26)), sa.Column(DELETED, sa.SmallInteger),
             sa.Column(REJECTED, sa.SmallInteger)]
    return sa.Table(f"stage_{ds.table}", meta, *cols, sa.Index(f"ix_stage_{ds.table}_id", ID),
                    prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


def _change_table(ds: Dataset, meta: sa.MetaData) -> sa.Table:
    return sa.Table(f"chg_{ds.table}", meta, sa.Column(ID, sa.String(64), primary_key=True),
                    sa.Column("busType", sa.String(1), nullable=False),
                    prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


class DatasetLoad:
    """Stage, diff and apply one unit's dataset inside the caller's transaction."""

    def __init__(self, conn: Connection, ds: Dataset, org_no: str):
        self.conn, self.ds, self.org_no = conn, ds, org_no
        self.dialect = conn.dialect.name
        meta = sa.MetaData()
        self.target = target.table(ds.tx_code)
        self.stage = _stage_table(ds, meta)
        self.changes = _change_table(ds, meta)
        for t in (self.stage, self.changes):
            if self.dialect != "postgresql":
                t.drop(conn, checkfirst=True)
            t.create(conn)
        self.staged = 0
        self.stage_columns = [c.name for c in self.stage.columns]

    # --- staging ------------------------------------------------------------------------

    def add(self, frame: pd.DataFrame) -> None:
        """Stage a chunk: valid rows with their fields, rejected ones by ID only."""
        if frame.empty:
            return
        data = frame.reindex(columns=self.stage_columns)
        data[SEQ] = range(self.staged, self.staged + len(frame))
        rejected = data[REJECTED].astype(bool)
        if rejected.any():
            fields = [c for c in self.ds.field_names if c != standard.UNIT_KEY]
            data.loc[rejected, fields] = None
        self.staged += len(frame)
        if self.dialect == "postgresql":
            self._copy(data)
        else:
            self._insert(data)

    def _copy(self, data: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(data.astype(object).where(data.notna(), None), preserve_index=False)
        buf = io.BytesIO()
        pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False))
        cols = ", ".join(f'"{c}"' for c in self.stage_columns)
        raw = self.conn.connection.driver_connection
        with raw.cursor() as cur:
            with cur.copy(f'COPY "{self.stage.name}" ({cols}) FROM STDIN (FORMAT csv)') as copy:
                copy.write(buf.getvalue())

    def _insert(self, data: pd.DataFrame) -> None:
        rows = data.astype(object).where(data.notna(), None).itertuples(index=False, name=None)
        cols = ", ".join(self._q(c) for c in self.stage_columns)
        marks = ", ".join(["%s" if self.dialect != "sqlite" else "?"] * len(self.stage_columns))
        sql = f"INSERT INTO {self._q(self.stage.name)} ({cols}) VALUES ({marks})"
        cur = self.conn.connection.driver_connection.cursor()
        try:
            cur.executemany(sql, list(rows))
        finally:
            cur.close()

    def _q(self, name: str) -> str:
        return self.conn.dialect.identifier_preparer.quote(name)

    # --- dedupe ---------------------------------------------------------------------------

    def dedupe(self) -> list[tuple[int, str, str, str]]:
        """Keep the latest row per ID (by updated_at, then read order); return the others as
        (stage seq, source key, ID, 'duplicate' or 'superseded')."""
        s = self.stage
        if self.dialect == "postgresql":
            self.conn.exec_driver_sql(f'ANALYZE "{s.name}"')
        extra = self.conn.execute(sa.select(sa.func.count() - sa.func.count(sa.distinct(s.c[ID])))).scalar_one()
        if not extra:
            return []
        order = (s.c[UPDATED].is_(None), s.c[UPDATED].desc(), s.c[SEQ].desc())
        ranked = sa.select(
            s.c[SEQ], s.c[KEY], s.c[ID], s.c[HASH],
            sa.func.row_number().over(partition_by=s.c[ID], order_by=order).label("rn"),
            sa.func.first_value(s.c[HASH]).over(partition_by=s.c[ID], order_by=order).label("keep"),
        ).subquery()
        losers = self.conn.execute(sa.select(ranked).where(ranked.c.rn > 1)).all()
        seqs = [r[0] for r in losers]
        for i in range(0, len(seqs), 1000):
            self.conn.execute(sa.delete(s).where(s.c[SEQ].in_(seqs[i:i + 1000])))
        return [(r[0], r[1], r[2], "duplicate" if r[3] == r[5] else "superseded") for r in losers]

    # --- diff -----------------------------------------------------------------------------

    def diff(self, full: bool) -> dict[str, int]:
        """Fill the change table with each changed ID's busType; return counts per busType."""
        s, t, c = self.stage, self.target, self.changes
        ok = sa.and_(s.c[REJECTED] == 0, s.c[DELETED] == 0)
        new = (sa.select(s.c[ID], sa.literal("I")).select_from(s.outerjoin(t, t.c[ID] == s.c[ID]))
               .where(ok, t.c[ID].is_(None)))
        changed = (sa.select(s.c[ID], sa.literal("U")).select_from(s.join(t, t.c[ID] == s.c[ID]))
                   .where(ok, sa.or_(s.c[HASH] != t.c[HASH], t.c.busType == "D")))
        gone = (sa.select(s.c[ID], sa.literal("D")).select_from(s.join(t, t.c[ID] == s.c[ID]))
                .where(s.c[DELETED] == 1, t.c.busType != "D"))
        for stmt in (new, changed, gone):
            self.conn.execute(sa.insert(c).from_select([ID, "busType"], stmt))
        soft = self._count_changes().get("D", 0)
        if full:
            absent = (sa.select(t.c[ID], sa.literal("D"))
                      .where(t.c[standard.UNIT_KEY] == self.org_no, t.c.busType != "D",
                             ~sa.exists().where(s.c[ID] == t.c[ID])))
            self.conn.execute(sa.insert(c).from_select([ID, "busType"], absent))
        counts = self._count_changes()
        self.vanished = counts.get("D", 0) - soft
        return counts

    def _count_changes(self) -> dict[str, int]:
        c = self.changes
        return dict(self.conn.execute(sa.select(c.c.busType, sa.func.count()).group_by(c.c.busType)).all())

    def rejected_count(self) -> int:
        s = self.stage
        return self.conn.execute(sa.select(sa.func.count()).where(s.c[REJECTED] == 1)).scalar_one()

    # --- apply ----------------------------------------------------------------------------

    def apply(self, batches: dict[str, str], today: date) -> None:
        """Write the changes, each busType under its own batch number, and the ledger."""
        s, t, c = self.stage, self.target, self.changes
        data_cols = [col.name for col in t.columns
                     if col.name not in ("batchNo", "txCode", "busType", "updateDate")]
        envelope = {"txCode": self.ds.tx_code, "updateDate": today}
        if "I" in batches:
            sel = (sa.select(*[s.c[n] for n in data_cols],
                             sa.literal(batches["I"], sa.String), sa.literal("I", sa.String),
                             sa.literal(envelope["txCode"], sa.String), sa.literal(today, sa.Date))
                   .select_from(s.join(c, c.c[ID] == s.c[ID])).where(c.c.busType == "I"))
            self.conn.execute(sa.insert(t).from_select(
                [*data_cols, "batchNo", "busType", "txCode", "updateDate"], sel))
        if "U" in batches:
            values = {n: s.c[n] for n in data_cols if n != ID}
            values.update(batchNo=batches["U"], busType="U", updateDate=today)
            self.conn.execute(sa.update(t).values(values)
                              .where(t.c[ID] == s.c[ID], c.c[ID] == s.c[ID], c.c.busType == "U"))
        if "D" in batches:
            ids = sa.select(c.c[ID]).where(c.c.busType == "D")
            if self.dialect in ("mysql", "mariadb"):
                ids = sa.select(ids.subquery().c[ID])  # MySQL: no subquery on the updated table
            self.conn.execute(sa.update(t).values(batchNo=batches["D"], busType="D", updateDate=today)
                              .where(t.c[ID].in_(ids)))
        self._ledger()

    def _json_record(self) -> sa.ColumnElement:
        t = self.target
        names = [col.name for col in t.columns if col.name != target.HASH_COLUMN]
        pairs: list = []
        for n in names:
            pairs += [sa.literal(n, sa.String), t.c[n]]
        fn = {"postgresql": sa.func.json_build_object, "sqlite": sa.func.json_object}.get(
            self.dialect, sa.func.JSON_OBJECT)
        expr = fn(*pairs)
        return sa.cast(expr, sa.Text) if self.dialect == "postgresql" else expr

    def _ledger(self) -> None:
        t, c = self.target, self.changes
        sel = (sa.select(t.c.batchNo, t.c[ID], t.c.busType, self._json_record())
               .select_from(t.join(c, c.c[ID] == t.c[ID])))
        self.conn.execute(sa.insert(target.ingest_change).from_select(
            ["batchNo", "ID", "busType", "record"], sel))

    def close(self) -> None:
        if self.dialect != "postgresql":
            for t in (self.stage, self.changes):
                t.drop(self.conn, checkfirst=True)


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
