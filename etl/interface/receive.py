"""What one message a unit pushed (5.2.2, B.3) does to the target: the database route's
standard, load path and bookkeeping, with I/U/D given by the message's `busType`.

A message is a chunk of records of one dataset: it is mapped one to one (the records carry the
standard's identifiers), cleaned, validated and identified by `etl.pipeline.run.prepare`, and
loaded by `run.load_within` in one transaction with its `ingest_push` row: its rows, our batch
numbers (gap-free, allocated in that transaction), the ledger, rejects, audit and one
`ingest_run` row (mode `push`). A repeat of (orgNo, txcode, the unit's batchNo) is answered from
`ingest_push` and loads nothing; of two concurrent copies only one commits (its primary key).

Record identity: each record carries the unit's own record ID (A.2 `ID`, at most 64
characters); the target's `ID` is `transform.record_ids(that ID, orgNo, txCode)`, as the
database route derives it from a source key: orgNo + txCode + a digest. The orgNo is the
token's, never the record's, so no message can name another unit's record; U and D find the
record by the same derivation and touch only the records they name.

busType: I and U write the record (the ledger says I for a record new to the target, U for a
changed or revived one; an identical one is unchanged, so a resent message under a new batchNo
is harmless); U and D of a record the target does not hold are rejected (`not_found`); D marks
the named records deleted (their fields are not read), never any other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Mapping as MappingType
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl import standard, target
from etl.common import clock
from etl.common.errors import EtlError, LoadFailed, TargetError
from etl.common.masking import MESSAGE_CHARS, RUN_MESSAGE_CHARS, cap, excerpt
from etl.mapping import Mapping, MappingModel
from etl.pipeline import run
from etl.standard import validate
from etl.standard.clean import Audit
from etl.target.frame import ID, KEY, REJECTED
from etl.target import routes
from etl.target.history import PUSH_MODE

log = logging.getLogger("etl")

BUS_TYPES = ("I", "U", "D")
#: B.3's batchNo, as A.2 fixes it: C16, the data's date YYYYMMDD + an 8-digit daily sequence.
BATCH_NO = re.compile(r"(\d{8})(\d{8})")
RECORD_ID = "ID"  # the unit's own record ID in each record (A.2)
ID_CHARS = 64
#: Keys of a record that are the A.2 envelope, not business fields: known, not loaded (ours
#: are assigned); `ID` identifies the record.
ENVELOPE_KEYS = frozenset(f.name for f in standard.ENVELOPE) | {"txcode"}
_PUSH_DELETED = "_push_deleted"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: At most this many rejects and warnings are listed in an answer (all are in ingest_reject).
LISTED = 1000
ATTEMPTS = 3  # a deadlock or a concurrent copy's commit: read ingest_push again, then retry


@dataclass(frozen=True)
class Envelope:
    batch_no: str
    tx_code: str
    bus_type: str
    data: list


def answer(rescode: str, msg: str, data: Any = "") -> dict[str, Any]:
    """B.3.4's answer: rescode "1" success, "0" failure; msg says why."""
    return {"rescode": rescode, "msg": msg, "data": data}


def receive(engine: Engine, org_no: str, message: MappingType[str, Any],
            *, now: datetime | None = None) -> dict[str, Any]:
    """Take one B.3 message from the unit `org_no` (already authenticated by its token; the
    service has removed `access_token` and checked size and record-count bounds). `message` has
    the B.3 keys `batchNo`, `txcode`, `busType`, `data` (as the unit sent them, unvalidated).
    Returns the standard's answer {"rescode": "1" | "0", "msg": str, "data": ...}: never raises
    for anything the unit sent (bad txcode/busType/batchNo/data shape, rejected records, a record
    naming another orgNo): those are rescode "0" (or "1" with per-record rejects in data) with a
    Chinese-first msg saying what to fix. Raises only for our own failures (database down)."""
    now = clock.to_cst(now or clock.now())
    envelope = read_envelope(message)
    if isinstance(envelope, str):
        return answer("0", envelope)
    digest = content_digest(envelope)
    target.ensure_schema(engine)
    for attempt in range(1, ATTEMPTS + 1):
        with engine.connect() as conn:
            known = _known(conn, org_no, envelope)
            other_route = None if known else routes.pulled_message(conn, org_no, envelope.tx_code)
        if known is not None:
            return _repeat(known, envelope, digest)
        if other_route is not None:
            log.warning("%s %s %s: refused, the database route loads this dataset (one route per "
                        "unit and dataset)", org_no, envelope.tx_code, envelope.batch_no)
            return answer("0", other_route)
        try:
            return _load_message(engine, org_no, envelope, digest, now)
        except _Retry as e:
            if attempt == ATTEMPTS:
                _record_failure(engine, e.plan, e)
                raise TargetError(f"{org_no} txcode {envelope.tx_code} batchNo {envelope.batch_no}: "
                                  f"the load was rolled back {ATTEMPTS} times ({e}); send it again") from e
            log.warning("%s %s %s: %s, trying again (%d/%d)", org_no, envelope.tx_code,
                        envelope.batch_no, e, attempt, ATTEMPTS)
    raise AssertionError("unreachable")


# --- the envelope ------------------------------------------------------------------------


def read_envelope(message: Any) -> Envelope | str:
    """The message's B.3 keys, or what is wrong with them (Chinese first)."""
    if not isinstance(message, MappingType):
        return "报文应为 JSON 对象 / the message must be a JSON object"
    missing = [k for k in ("batchNo", "txcode", "busType", "data") if k not in message]
    if missing:
        return (f"缺少 {', '.join(missing)}：B.3 报文须含 batchNo、txcode、busType、data / "
                f"missing {', '.join(missing)}: a B.3 message has batchNo, txcode, busType and data")
    tx, bus, batch, data = (message["txcode"], message["busType"], message["batchNo"],
                            message["data"])
    if not isinstance(tx, str) or tx not in standard.TX_CODES:
        return (f"txcode {excerpt(tx)} 无效：应为 {'、'.join(standard.TX_CODES)} 之一的两位字符串 "
                f"(附录 A) / txcode must be one of {', '.join(standard.TX_CODES)}, as a string")
    if not isinstance(bus, str) or bus not in BUS_TYPES:
        return (f"busType {excerpt(bus)} 无效：应为 I（新增）、U（修改）或 D（删除）(A.2) / "
                f"busType must be I (insert), U (update) or D (delete)")
    if (problem := batch_no_problem(batch)) is not None:
        return problem
    if not isinstance(data, list) or not data:
        return ("data 应为非空的记录数组 [{...}, ...] / data must be a non-empty JSON array of "
                "records")
    return Envelope(batch, tx, bus, data)


def batch_no_problem(batch: Any) -> str | None:
    """Why `batch` is not A.2's batchNo (16 digits: a real date YYYYMMDD, then 8 digits of the
    day's sequence from 00000001), or None."""
    m = BATCH_NO.fullmatch(batch) if isinstance(batch, str) else None
    ok = m is not None and int(m.group(2)) > 0
    if ok:
        try:
            date(int(batch[:4]), int(batch[4:6]), int(batch[6:8]))
        except ValueError:
            ok = False
    if ok:
        return None
    return (f"batchNo {excerpt(batch)} 无效：应为 16 位数字，即数据日期 YYYYMMDD 加当日 8 位序号 "
            f"（如 2024010100000001，A.2）/ batchNo must be 16 digits: the data's date YYYYMMDD and "
            f"the day's 8-digit sequence from 00000001")


def content_digest(e: Envelope) -> str:
    """sha256 of what the message asks for (busType and data as sent): a repeat must match."""
    text = json.dumps({"busType": e.bus_type, "data": e.data}, ensure_ascii=False,
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- repeats -------------------------------------------------------------------------------


def _known(conn: Connection, org_no: str, e: Envelope) -> sa.Row | None:
    p = target.ingest_push
    return conn.execute(sa.select(p.c.digest, p.c.answer).where(
        p.c.orgNo == org_no, p.c.txCode == e.tx_code, p.c.unitBatchNo == e.batch_no)).first()


def _repeat(known: sa.Row, e: Envelope, digest: str) -> dict[str, Any]:
    if known.digest == digest:
        return json.loads(known.answer)
    return answer("0", f"批次号 {e.batch_no} 已用于本单位另一份内容不同的 txcode {e.tx_code} 报文："
                       f"新的数据请用新的批次号；本报文未加载 / batchNo {e.batch_no} was already used "
                       f"for a different txcode {e.tx_code} message of this unit: send new data "
                       f"under a new batchNo; nothing of this message was loaded")


# --- the records ---------------------------------------------------------------------------


@lru_cache(maxsize=256)
def unit_mapping(org_no: str, com_name: str) -> Mapping:
    """The pushing unit as the pipeline sees a unit: every dataset, each record key to its
    field of the same name, keyed by the record's `ID`, `_push_deleted` marking a D. Nothing
    is ever read from its `table`."""
    datasets = {}
    for ds in standard.DATASETS:
        fields: dict[str, Any] = {f.name: {"column": f.name} for f in ds.fields}
        if ds.tx_code == "01":
            fields[standard.UNIT_KEY] = {"column": standard.UNIT_KEY, "default": "{unit.orgNo}"}
        datasets[ds.tx_code] = {"table": "interface", "key": [RECORD_ID], "fields": fields,
                                "deleted": {"column": _PUSH_DELETED, "value": 1}}
    model = MappingModel.model_validate({"unit": {"orgNo": org_no, "comName": com_name},
                                         "datasets": datasets})
    return Mapping(Path(f"interface:{org_no}"), model)


def _com_name(conn: Connection, org_no: str) -> str:
    """The unit's name from its unit_info (01), "" when the target holds none."""
    t = target.table("01")
    name = conn.execute(sa.select(t.c.comName).where(t.c.orgNo == org_no, t.c.busType != "D")
                        .order_by(t.c.updateDate.desc()).limit(1)).scalar()
    return name or ""


def records(e: Envelope, ds: standard.Dataset, org_no: str,
            com_name: str) -> tuple[pd.DataFrame, list[validate.Finding]]:
    """The records as a raw chunk of the unit's mapping, and what is wrong with their shape
    before the standard's checks: not an object, no usable `ID`, another unit's orgNo, a value
    that is not text or a number (errors); keys the structure does not have (warnings)."""
    known = set(ds.field_names) | ENVELOPE_KEYS | {standard.UNIT_KEY}
    deleting = e.bus_type == "D"
    rows, found = [], []
    for i, rec in enumerate(e.data):
        row: dict[str, Any] = {n: None for n in ds.field_names}
        row[_PUSH_DELETED] = 1 if deleting else 0
        row[RECORD_ID] = _placeholder(i)
        if not isinstance(rec, MappingType):
            found.append(validate.Finding(i, "data", "shape", f"第 {i} 条记录不是 JSON 对象 / record "
                                          f"{i} is not a JSON object"))
            rows.append(row)
            continue
        rid = rec.get(RECORD_ID)
        if isinstance(rid, int) and not isinstance(rid, bool):
            rid = str(rid)
        if not isinstance(rid, str) or not rid.strip() or len(rid) > ID_CHARS or _CONTROL.search(rid):
            found.append(validate.Finding(i, RECORD_ID, "required", (
                f"ID {excerpt(rid)} 无效：每条记录须带本单位的记录 ID（至多 {ID_CHARS} 个字符，无控制字符，A.2）"
                f" / ID: each record needs the unit's own record ID (at most {ID_CHARS} characters)")))
        else:
            row[RECORD_ID] = rid.strip()
        org = rec.get(standard.UNIT_KEY)
        foreign = org not in (None, "") and _spelt(org) != org_no
        if foreign:
            found.append(validate.Finding(i, standard.UNIT_KEY, "unit", (
                f"orgNo {excerpt(org)} 不是本令牌所属单位的统一社会信用代码 {org_no}：单位只能报送"
                f"本单位的数据 / orgNo is not the token's unit {org_no}: a unit pushes only its own records")))
        for name in ds.field_names:
            value = None if foreign and name == standard.UNIT_KEY else rec.get(name)
            if isinstance(value, (dict, list)):
                found.append(validate.Finding(i, name, "type", (
                    f"{name}（{ds.field(name).zh}）应为文本、数字或 null，不是 JSON 对象或数组 / "
                    f"{name} must be text, a number or null")))
            else:
                row[name] = value
        unknown = sorted(k for k in rec if k not in known)
        found += [validate.Finding(i, cap(str(k), 40), "unknown", (
            f"{ds.structure}（{ds.zh}）没有字段 {excerpt(k)}：已忽略；字段名区分大小写 / "
            f"{ds.structure} has no field {excerpt(k)}: ignored (names are case-sensitive)"),
            validate.WARNING) for k in unknown[:10]]
        if ds.tx_code == "02" and not deleting and not com_name \
                and rec.get("dParentName") in (None, ""):
            found.append(validate.Finding(i, "dParentName", "required", (
                "上级部门为空，而目标库中没有本单位的单位基本信息（01）可作顶级部门的上级：请填写 "
                "dParentName，或先报送 01 / dParentName is empty and the target holds no unit_info "
                "(01) of this unit to stand as a top department's parent: fill it or push 01 first")))
        rows.append(row)
    return pd.DataFrame(rows, dtype=object), found


def _spelt(org: Any) -> str:
    """An orgNo as cleaning spells it (full-width, case, spaces aside), to compare."""
    return unicodedata.normalize("NFKC", str(org)).replace(" ", "").strip().upper()


def with_findings(chunk: run.Prepared, found: list[validate.Finding], org_no: str,
                  tx_code: str) -> run.Prepared:
    """`chunk` with more findings: rows with an error are rejected and lose their warnings."""
    if not found:
        return chunk
    frame = chunk.frame.copy(deep=False)
    bad = sorted({int(f.row) for f in found if f.severity == validate.ERROR})
    rejected = frame[REJECTED].to_numpy(copy=True)
    rejected[bad] = 1
    frame[REJECTED] = rejected
    if tx_code == "01" and bad:
        units = frame[standard.UNIT_KEY].to_numpy(copy=True)
        units[bad] = org_no
        frame[standard.UNIT_KEY] = units
    earlier = chunk.findings
    rejected_now = set(bad)
    if len(earlier):  # a record that is no object has no fields to find fault with
        shapeless = [int(f.row) for f in found if f.rule == "shape"]
        earlier = earlier[(earlier["severity"].eq(validate.ERROR) | ~earlier["pos"].isin(bad))
                          & ~earlier["pos"].isin(shapeless)]
    more = pd.DataFrame([(int(f.row), f.field, f.rule, f.severity, f.message) for f in found
                         if f.severity == validate.ERROR or int(f.row) not in rejected_now],
                        columns=list(run.Prepared.FINDING_COLUMNS))
    findings = pd.concat([earlier, more], ignore_index=True) if len(earlier) else more
    return run.Prepared(frame, findings)


def _not_found(conn: Connection, chunk: run.Prepared, e: Envelope) -> list[validate.Finding]:
    """U and D of records the target does not hold (of this unit: the ID says whose)."""
    if e.bus_type == "I":
        return []
    frame = chunk.frame
    wanted = frame.index[frame[REJECTED] == 0]
    t = target.table(e.tx_code)
    ids = frame.loc[wanted, ID]
    held: set[str] = set()
    unique = list(dict.fromkeys(ids))
    for i in range(0, len(unique), 1000):
        held.update(conn.execute(sa.select(t.c[ID]).where(t.c[ID].in_(unique[i:i + 1000]))).scalars())
    what = "修改" if e.bus_type == "U" else "删除"
    return [validate.Finding(int(i), RECORD_ID, "not_found", (
        f"没有 ID {excerpt(frame.at[i, KEY])} 的记录可{what}：新记录请用 busType I 报送 / no record "
        f"with this ID to {'update' if e.bus_type == 'U' else 'delete'}: push a new one with busType I"))
        for i in wanted if frame.at[i, ID] not in held]


# --- the load ------------------------------------------------------------------------------


class _Retry(Exception):
    """The transaction was rolled back by the database (a deadlock, a concurrent copy of this
    message or of its records committed first): read ingest_push again and retry."""

    def __init__(self, why: str, plan: run.Plan):
        super().__init__(why)
        self.plan = plan


def _plan(mapping: Mapping, tx_code: str, now: datetime) -> run.Plan:
    run_id = f"push__{now:%Y%m%dT%H%M%S}__{uuid.uuid4().hex[:8]}"
    return run.Plan(mapping, tx_code, PUSH_MODE, run_id, now)


def _load_message(engine: Engine, org_no: str, e: Envelope, digest: str,
                  now: datetime) -> dict[str, Any]:
    ds = standard.dataset(e.tx_code)
    with engine.connect() as conn:
        com_name = _com_name(conn, org_no)
    p = _plan(unit_mapping(org_no, com_name), e.tx_code, now)
    raw, found = records(e, ds, org_no, com_name)
    audit = Audit()
    chunk = with_findings(run.prepare(raw, p, audit), found, org_no, e.tx_code)
    chunk = run.check_references(chunk, p, run.references(engine, p))
    try:
        with engine.connect() as conn, conn.begin():
            chunk = with_findings(chunk, _not_found(conn, chunk, e), org_no, e.tx_code)
            result = run.load_within(conn, p, [chunk], audit)
            reply = _answer(e, result, chunk)
            conn.execute(sa.insert(target.ingest_push).values(
                orgNo=org_no, txCode=e.tx_code, unitBatchNo=e.batch_no, digest=digest,
                batches=json.dumps(result.counts.batches), runId=p.run_id, receivedAt=now,
                answer=json.dumps(reply, ensure_ascii=False)))
    except sa.exc.IntegrityError as err:
        raise _Retry("a concurrent message committed the same batchNo or records first", p) from err
    except Exception as err:
        if isinstance(err, (sa.exc.DBAPIError, TargetError)) and run.is_deadlock(
                err if isinstance(err, sa.exc.DBAPIError) else err.__cause__):
            raise _Retry("the target rolled the load back (a deadlock)", p) from err
        _record_failure(engine, p, err)
        if isinstance(err, EtlError):
            raise
        raise (TargetError if isinstance(err, sa.exc.DBAPIError) else LoadFailed)(
            f"{org_no} txcode {e.tx_code} batchNo {e.batch_no}: the load was rolled back: "
            f"{cap(str(err), 300)}") from err
    log.info("%s %s %s: %s", org_no, e.tx_code, e.batch_no, reply["msg"])
    return reply


def _record_failure(engine: Engine, p: run.Plan, err: BaseException) -> None:
    result = run.new_result(p)
    result.status = "failed"
    result.message = cap(str(err) if isinstance(err, EtlError) else f"{type(err).__name__}: {err}",
                         RUN_MESSAGE_CHARS)
    run.record_run(engine, result, p.run_id, p.now)


def _answer(e: Envelope, result: run.DatasetResult, chunk: run.Prepared) -> dict[str, Any]:
    """rescode "1" unless every record was refused; data: the counts, our batch numbers, and
    each reject and warning by the record's place in `data` (0-based), masked."""
    c, ds, frame = result.counts, standard.dataset(e.tx_code), chunk.frame
    rejects, warnings = [], []
    for pos, fld, rule, sev, msg in chunk.findings.sort_values("pos", kind="stable").itertuples(
            index=False, name=None):
        item = {"index": int(pos), "ID": _shown_id(frame.at[pos, KEY]), "field": fld,
                "name": ds.field(fld).zh if fld in ds.field_names else "", "rule": rule,
                "message": cap(msg, MESSAGE_CHARS)}
        (rejects if sev == validate.ERROR else warnings).append(item)
    rejects += _duplicates(frame)
    rejects.sort(key=lambda r: r["index"])
    loaded = c.inserted + c.updated + c.deleted
    refused = c.rejected + c.duplicates
    data = {"batchNo": e.batch_no, "txcode": e.tx_code, "busType": e.bus_type,
            "received": c.extracted, "inserted": c.inserted, "updated": c.updated,
            "deleted": c.deleted, "unchanged": c.unchanged, "rejected": c.rejected,
            "duplicates": c.duplicates, "batches": c.batches,
            "rejects": rejects[:LISTED], "warnings": warnings[:LISTED]}
    if len(rejects) > LISTED or len(warnings) > LISTED:
        data["notListed"] = max(len(rejects) - LISTED, 0) + max(len(warnings) - LISTED, 0)
    summary = (f"接收 {c.extracted} 条：新增 {c.inserted}，修改 {c.updated}，删除 {c.deleted}，"
               f"未变 {c.unchanged}，拒收 {refused}")
    english = (f"received {c.extracted}: {c.inserted} inserted, {c.updated} updated, "
               f"{c.deleted} deleted, {c.unchanged} unchanged, {refused} refused")
    if not refused:
        return answer("1", f"success：{summary} / {english}", data)
    fix = "改正 data.rejects 所列记录后以新的批次号重报 / fix the records data.rejects lists and push them under a new batchNo"
    if loaded + c.unchanged == 0:
        return answer("0", f"全部记录被拒收：{summary}；{fix}", data)
    return answer("1", f"部分记录被拒收：{summary}；{fix}", data)


def _placeholder(i: int) -> str:
    """The key of a record without a usable ID: no unit's ID can be it (NUL is a control
    character), and people reading ingest_reject see which record it was (shown as `\\x00#3 ...`)."""
    return f"\x00#{i} (无 ID / no ID)"


def _shown_id(key: str) -> str:
    return "" if key.startswith("\x00") else cap(key, ID_CHARS)


def _duplicates(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Records whose ID a later record of the message repeats: the later one is taken (the
    loader's rule for rows without an update time)."""
    ids = frame[ID]
    earlier = ids.duplicated(keep="last")
    return [{"index": int(i), "ID": _shown_id(frame.at[i, KEY]), "field": RECORD_ID, "name": "记录ID",
             "rule": "duplicate", "message": "同一报文中后面的记录有相同的 ID，取后者 / a later record "
             "of this message has the same ID: the later one was taken"} for i in frame.index[earlier]]
