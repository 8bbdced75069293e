"""Automated comparison of a unit's source with the target (5.3: the collecting organisation
confirms ingestion results "by manual comparison and automated tool comparison").

A dataset *agrees* when every valid source record is in the target, active, with equal
standard fields, and no other active record of the unit is. Source rows that fail validation
are listed as *not ingested* with their reasons: they never count as agreement nor hide, and
by themselves they do not make a dataset differ (the target rightly lacks them).

The source is read as a load reads it (`pipeline.prepare`, chunk by chunk) into the load's own
temporary staging table in the target, then compared there with SQL: `rowHash` equality settles
most records, the rest are compared field by field. The transaction is rolled back, so the
target is never changed; memory holds the rejected rows' findings and at most `CAP` examples
of each kind, however large the dataset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl import pipeline, standard, target
from etl.common import clock
from etl.common.errors import EtlError
from etl.common.masking import MESSAGE_CHARS, RUN_MESSAGE_CHARS, cap, shown
from etl.mapping import Mapping
from etl.source import extract
from etl.target.history import PUSH_MODE
from etl.standard import validate
from etl.standard.clean import Audit
from etl.target.frame import DELETED, HASH, ID, KEY, REJECTED, SEQ
from etl.target.load import DatasetLoad

#: At most this many examples of each kind (missing, extra, differing fields, not ingested)
#: are kept per dataset, stored and printed; the counts are always exact.
CAP = 200
#: How much of a value a field difference shows (masked).
VALUE_CHARS = 100
STATES = ("agree", "differ", "failed", "pushed")
#: What reconcile says of a dataset a unit pushes (the interface route, 5.2.2): there is no source.
NO_SOURCE = ("pushed over the interface (5.2.2): the unit has no source database to compare "
             "with the target")
ALSO_PUSHED = ("the unit also pushes this dataset over the interface (5.2.2): the records it "
               "pushed have no source row here and show as only in the target")


@dataclass
class FieldDiff:
    id: str
    source_key: str
    field: str
    source: str | None
    target: str | None   # values as a person may see them (etl.common.masking.shown)


@dataclass
class DatasetReconciliation:
    org_no: str
    tx_code: str
    table: str
    state: str            # "agree" | "differ" | "failed" | "pushed" (no source: `pushed`)
    source_valid: int
    target_active: int
    missing: list[str] = field(default_factory=list)     # masked source keys, valid at the source, not active in the target
    extra: list[str] = field(default_factory=list)       # target IDs active there but not (validly) at the source
    differing: list[FieldDiff] = field(default_factory=list)
    not_ingested: list[tuple[str, str, str]] = field(default_factory=list)  # (masked key, field:rule, message)
    message: str | None = None
    # exact counts (the lists above stop at CAP)
    missing_count: int = 0
    extra_count: int = 0
    differing_count: int = 0     # records with at least one differing field
    not_ingested_count: int = 0  # rejected source rows
    checked_at: datetime | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checked_at"] = self.checked_at.isoformat() if self.checked_at else None
        d["not_ingested"] = [list(x) for x in self.not_ingested]
        return d


def _shown(value: object, field: standard.Field) -> str | None:
    """A compared value (valid, so no longer than its field) as people read it."""
    if value is None:
        return None
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return cap(shown(text, field), VALUE_CHARS)


def reconcile(engine: Engine, mapping: Mapping, tx_codes: list[str] | None = None,
              now: datetime | None = None,
              chunk_rows: int = extract.DEFAULT_CHUNK_ROWS) -> list[DatasetReconciliation]:
    """Compare every selected dataset of the unit with the target; the target is not changed.
    A dataset whose source cannot be read is `failed` with the reason; the others go on."""
    now = clock.to_cst(now or clock.now())
    target.ensure_schema(engine)
    out = []
    also = {tx for _, tx in pushed_datasets(engine, mapping.unit.orgNo)}
    for tx in sorted(mapping.datasets):
        if tx_codes and tx not in tx_codes:
            continue
        try:
            out.append(_dataset(engine, mapping, tx, now, chunk_rows))
            if tx in also:
                out[-1].message = ALSO_PUSHED
        except EtlError as e:
            with engine.connect() as conn:
                active = _active_count(conn, mapping.unit.orgNo, tx)
            out.append(DatasetReconciliation(
                mapping.unit.orgNo, tx, standard.dataset(tx).table, "failed", 0, active,
                message=cap(str(e), RUN_MESSAGE_CHARS), checked_at=now))
    return out


def pushed_datasets(engine: Engine, org_no: str | None = None) -> list[tuple[str, str]]:
    """(orgNo, txCode) of the datasets units pushed over the interface (runs of mode `push`)."""
    r = target.ingest_run
    q = sa.select(r.c.orgNo, r.c.txCode).where(r.c.mode == PUSH_MODE).distinct()
    if org_no is not None:
        q = q.where(r.c.orgNo == org_no)
    with engine.connect() as conn:
        return sorted((row.orgNo, row.txCode) for row in conn.execute(q))


def pushed(engine: Engine, org_no: str, tx_codes: list[str] | None = None,
           now: datetime | None = None) -> list[DatasetReconciliation]:
    """What reconcile says of a unit that pushes its data: each pushed dataset, its active
    records, and that there is no source to compare them with (state `pushed`)."""
    now = clock.to_cst(now or clock.now())
    target.ensure_schema(engine)
    out = []
    with engine.connect() as conn:
        for org, tx in pushed_datasets(engine, org_no):
            if tx_codes and tx not in tx_codes:
                continue
            out.append(DatasetReconciliation(org, tx, standard.dataset(tx).table, "pushed", 0,
                                             _active_count(conn, org, tx), message=NO_SOURCE,
                                             checked_at=now))
    return out


def _active_count(conn: Connection, org: str, tx: str) -> int:
    t = target.table(tx)
    return conn.execute(sa.select(sa.func.count()).where(
        t.c[standard.UNIT_KEY] == org, t.c.busType != "D")).scalar_one()


def _dataset(engine: Engine, mapping: Mapping, tx: str, now: datetime,
             chunk_rows: int) -> DatasetReconciliation:
    p = pipeline.plan(engine, mapping, tx, mode="full", run_id="reconcile", now=now)
    ds, org = p.dataset, mapping.unit.orgNo
    spec = mapping.datasets[ds.tx_code]
    shown_key = pipeline.masked_source_key(ds, spec.key, spec.fields)
    refs = pipeline.references(engine, p)
    audit = Audit()
    result = DatasetReconciliation(org, ds.tx_code, ds.table, "agree", 0, 0, checked_at=now)
    with engine.connect() as conn, conn.begin() as txn:
        loader = DatasetLoad(conn, ds, org)
        errors: list[tuple[int, str, str, str]] = []  # (stage seq, source key, field:rule, message)
        for raw in pipeline.extract_chunks(p, chunk_rows):
            chunk = pipeline.check_references(pipeline.prepare(raw, p, audit), p, refs)
            base, keys = loader.staged, chunk.frame[KEY]
            errors += [(base + pos, keys.iat[pos], f"{fld}:{rule}", msg)
                       for pos, fld, rule, sev, msg in chunk.findings.itertuples(index=False, name=None)
                       if sev == validate.ERROR]
            loader.add(chunk.frame)
        lost = {seq for seq, *_ in loader.dedupe()}
        result.not_ingested_count = loader.rejected_count()
        result.not_ingested = [(shown_key(key), rule, cap(msg, MESSAGE_CHARS))
                               for seq, key, rule, msg in sorted(errors) if seq not in lost][:CAP]
        _compare(conn, loader, result, shown_key)
        loader.close()
        txn.rollback()
    if result.missing_count or result.extra_count or result.differing_count:
        result.state = "differ"
    return result


def _compare(conn: Connection, loader: DatasetLoad, result: DatasetReconciliation,
             shown_key) -> None:
    s, t, ds, org = loader.stage, loader.target, loader.ds, loader.org_no
    valid = sa.and_(s.c[REJECTED] == 0, s.c[DELETED] == 0)
    mine = sa.and_(t.c[standard.UNIT_KEY] == org, t.c.busType != "D")
    count = sa.func.count()
    result.source_valid = conn.execute(sa.select(count).where(valid)).scalar_one()
    result.target_active = _active_count(conn, org, ds.tx_code)

    absent = sa.and_(valid, ~sa.exists().where(t.c[ID] == s.c[ID], t.c.busType != "D"))
    result.missing_count = conn.execute(sa.select(count).where(absent)).scalar_one()
    if result.missing_count:
        result.missing = [shown_key(k) for k in conn.execute(
            sa.select(s.c[KEY]).where(absent).order_by(s.c[SEQ]).limit(CAP)).scalars()]

    unmatched = sa.and_(mine, ~sa.exists().where(s.c[ID] == t.c[ID], valid))
    result.extra_count = conn.execute(sa.select(count).where(unmatched)).scalar_one()
    if result.extra_count:
        result.extra = list(conn.execute(
            sa.select(t.c[ID]).where(unmatched).order_by(t.c[ID]).limit(CAP)).scalars())

    # rowHash settles equal records; the others are compared field by field (a hash computed
    # by an older release may differ while every field is equal: that is agreement)
    names = list(ds.field_names)
    fields = {n: ds.field(n) for n in names}
    rows = conn.execution_options(yield_per=2000).execute(
        sa.select(s.c[ID], s.c[KEY], *[s.c[n].label(f"s{i}") for i, n in enumerate(names)],
                  *[t.c[n].label(f"t{i}") for i, n in enumerate(names)])
        .select_from(s.join(t, t.c[ID] == s.c[ID]))
        .where(valid, t.c.busType != "D", s.c[HASH] != t.c[HASH]).order_by(s.c[SEQ]))
    width = len(names)
    for row in rows:
        rid, key, values = row[0], row[1], row[2:]
        diffs = [FieldDiff(rid, shown_key(key), n, _shown(values[i], fields[n]),
                           _shown(values[width + i], fields[n]))
                 for i, n in enumerate(names) if not _equal(values[i], values[width + i])]
        if diffs:
            result.differing_count += 1
            result.differing += diffs[:max(CAP - len(result.differing), 0)]


def _equal(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return a == b or str(a) == str(b)


# --- keeping results for the report ------------------------------------------------------------


def _details(r: DatasetReconciliation) -> str:
    return json.dumps({"table": r.table, "message": r.message,
                       "missing": r.missing[:CAP], "extra": r.extra[:CAP],
                       "differing": [asdict(d) for d in r.differing[:CAP]],
                       "not_ingested": [list(x) for x in r.not_ingested[:CAP]]},
                      ensure_ascii=False)


def save(engine: Engine, run_id: str, results: list[DatasetReconciliation]) -> None:
    """Keep the results in `ingest_reconcile` (counts exact, examples masked and capped)."""
    target.ensure_schema(engine)
    rows = [{"runId": run_id, "orgNo": r.org_no, "txCode": r.tx_code, "state": r.state,
             "sourceValid": r.source_valid, "targetActive": r.target_active,
             "missing": r.missing_count, "differing": r.differing_count, "extra": r.extra_count,
             "notIngested": r.not_ingested_count, "details": _details(r),
             "checkedAt": r.checked_at or clock.now()} for r in results]
    if rows:
        with engine.begin() as conn:
            conn.execute(sa.insert(target.ingest_reconcile), rows)
