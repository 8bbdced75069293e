"""One run of one unit's dataset: extract -> map -> clean -> validate -> stage -> diff -> load.

The whole dataset is one target transaction: its rows, batches, ledger, rejects, audit and
run record land together or not at all. A failure rolls it back and leaves a `failed` row in
`ingest_run` (written separately) so the failure is visible.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl import standard, target
from etl.common import clock, provenance
from etl.common.errors import EtlError, LoadFailed, MassDeleteRefused, TargetError
from etl.common.masking import MESSAGE_CHARS, RUN_MESSAGE_CHARS, cap, excerpt, personal_kind, shown
from etl.mapping import FieldRule, Mapping, Mode
from etl.media import attachments
from etl.pipeline import transform
from etl.source import extract
from etl.standard import phones, validate
from etl.standard.clean import Audit, binary_values, clean_frame
from etl.target import crypt, history
from etl.target.frame import DELETED, KEY, REJECTED, UPDATED
from etl.target.load import (MASS_DELETE_MIN, MASS_DELETE_SHARE, Counts, DatasetLoad,
                             allocate_batches, insert_rows, mass_delete, record_batches)

log = logging.getLogger("etl")


@dataclass
class DatasetResult:
    """What one run did to one unit's dataset, as printed and as kept in `ingest_run`."""

    mapping: str
    org_no: str
    tx_code: str
    mode: str
    status: str = "running"
    counts: Counts = field(default_factory=Counts)
    window: tuple[datetime | None, datetime | None] = (None, None)
    message: str = ""
    reasons: Counter = field(default_factory=Counter)
    mapping_hash: str | None = None  # sha256 of the mapping file (ingest_run.mappingHash)
    dag_run_id: str | None = None    # the Airflow DAG run, when run in Airflow
    key_columns: str | None = None   # the source key records were identified by (keyColumns)
    swept: int | None = None         # source keys compared to find hard deletes (sweptKeys)

    @property
    def table(self) -> str:
        return standard.dataset(self.tx_code).table


def new_run_id() -> str:
    return f"cli__{clock.now().strftime('%Y%m%dT%H%M%S')}__{uuid.uuid4().hex[:8]}"


def _timestamps(s: pd.Series) -> pd.Series:
    """Source update times as sortable text (for 'keep the latest' among duplicates)."""
    if s.isna().all():
        return pd.Series(None, index=s.index, dtype=object)
    ts = pd.to_datetime(s, errors="coerce", format="mixed") if not pd.api.types.is_datetime64_any_dtype(s) else s
    if ts.dtype.kind == "M" and ts.dt.tz is None and ts.min().year >= 1:
        # Arrow's cast of timestamp[us] to text prints this very format (NULL for NaT) ~5x
        # faster than strftime; not for time zones (it adds an offset) or years before 1.
        # Nanoseconds are floored to microseconds, as strftime's %f shows them.
        text = pa.array(ts.astype("datetime64[us]")).cast(pa.string())
        return pd.Series(text.to_numpy(zero_copy_only=False), index=s.index, name=s.name,
                         dtype=object)
    return ts.dt.strftime("%Y-%m-%d %H:%M:%S.%f").astype(object).where(ts.notna(), None)


def _references(conn: Connection, mapping: Mapping, tx_code: str) -> dict[str, set[str]]:
    """Values other datasets of the same unit must contain (e.g. 07 riskNo in 06)."""
    out = {}
    for ref in standard.dataset(tx_code).references:
        if ref.tx_code not in mapping.datasets:
            continue  # the unit does not deliver that dataset: nothing to check against
        t = target.table(ref.tx_code)
        rows = conn.execute(sa.select(t.c[ref.target_field]).where(
            t.c[standard.UNIT_KEY] == mapping.unit.orgNo, t.c.busType != "D")).scalars()
        out[ref.field] = {v for v in rows if v is not None}
    return out


def _check_chunk(frame: pd.DataFrame, ds: standard.Dataset, mapping: Mapping,
                 today) -> list[validate.Finding]:
    """Errors and warnings of a chunk's live rows, as the mapping's `checks:` lowers them;
    warnings only for rows that load."""
    deleted = frame[DELETED].to_numpy(dtype=bool)
    live = frame[~deleted] if deleted.any() else frame  # a mask that keeps all is a copy
    found = validate.findings(live, ds)
    if ds.tx_code == "01":
        other = live["orgNo"].notna() & (live["orgNo"] != mapping.unit.orgNo)
        found += [validate.Finding(i, "orgNo", "unit", f"orgNo {excerpt(live.at[i, 'orgNo'])} is not "
                                   f"the mapping's unit.orgNo {mapping.unit.orgNo}") for i in live.index[other]]
    overrides = mapping.checks_for(ds.tx_code)
    found = validate.lower(found, overrides)
    errors = list({f.row for f in found if f.severity == validate.ERROR})
    found = [f for f in found if f.severity == validate.ERROR or f.row not in errors]
    loading = live[~live.index.isin(errors)] if errors else live
    return found + validate.lower(validate.warnings(loading, ds, today), overrides)


def check_references(chunk: "Prepared", p: "Plan", refs: dict[str, set[str]]) -> "Prepared":
    """Reject live rows that refer to what the unit's other dataset does not hold (07 riskNo in
    06, 03 deptName in 02). Checked when loading, against the target as it is then: after this
    run loaded what they refer to, whichever process prepared them."""
    frame, ds = chunk.frame, p.dataset
    live = frame[frame[DELETED] == 0]
    found = []
    for ref in ds.references:
        if ref.field not in refs:
            continue
        col = live[ref.field]
        bad = col.notna() & ~col.isin(refs[ref.field])
        field = ds.field(ref.field)
        found += [(int(i), ref.field, "reference", validate.ERROR,
                   f"{ref.field} {excerpt(col[i], field)} is not a {ref.target_field} of this unit's "
                   f"{standard.dataset(ref.tx_code).zh} ({ref.tx_code})") for i in live.index[bad]]
    if not found:
        return chunk
    frame = frame.copy(deep=False)
    rejected = frame[REJECTED].to_numpy(copy=True)
    rejected[[pos for pos, *_ in found]] = 1
    frame[REJECTED] = rejected
    earlier = chunk.findings
    if len(earlier):  # a row rejected now loses its warnings: they are listed for rows that load
        dropped = earlier["severity"].ne(validate.ERROR) & earlier["pos"].isin([pos for pos, *_ in found])
        earlier = earlier[~dropped]
    findings = pd.concat([earlier, pd.DataFrame(found, columns=list(Prepared.FINDING_COLUMNS))],
                         ignore_index=True) if len(earlier) else pd.DataFrame(
        found, columns=list(Prepared.FINDING_COLUMNS))
    return Prepared(frame, findings)


@dataclass(frozen=True)
class Plan:
    """What one dataset run reads and how: resolved before anything is extracted, so that
    separate tasks (Airflow's extract, validate, load) agree on it."""

    mapping: Mapping
    tx_code: str
    mode: str
    run_id: str
    now: datetime
    since: datetime | None = None   # the window recorded in ingest_run (CST, naive)
    until: datetime | None = None
    read_since: datetime | None = None  # since minus the lookback
    message: str = ""
    dag_run_id: str | None = None  # the Airflow DAG run (ingest_run.dagRunId)
    sweep: bool = False  # compare every source key with the target: hard deletes become D
    allow_mass_delete: bool = False  # a person confirmed that the source lost many records
    rekeyed: bool = False  # a full load because the mapping's record key changed

    @property
    def dataset(self) -> standard.Dataset:
        return standard.dataset(self.tx_code)

    @property
    def key_columns(self) -> str:
        return history.key_columns(self.mapping.datasets[self.tx_code].key)

    @property
    def today(self):
        return self.now.date()


@dataclass
class Prepared:
    """A cleaned, validated chunk ready to stage, with its findings by row position."""

    frame: pd.DataFrame
    findings: pd.DataFrame  # columns: pos, field, rule, severity, message

    FINDING_COLUMNS = ("pos", "field", "rule", "severity", "message")


def plan(engine: Engine, mapping: Mapping, tx_code: str, *, mode: Mode = "full",
         since: datetime | None = None, until: datetime | None = None, scheduled: bool = False,
         run_id: str | None = None, now: datetime | None = None,
         dag_run_id: str | None = None, allow_mass_delete: bool = False) -> Plan:
    """Resolve mode and window from the target's memory of the dataset (`etl.target.history`).

    `full` reads everything and marks what the source lacks as D. `incremental` reads the rows
    updated in the window, starting, without `since`, where the last successful load's read
    ended; a `scheduled` window (the run's data interval, not one a person gave) reaches back
    there too when a failed day left a gap. An incremental run without a person's window is a
    full load when the dataset has no successful load under its record key yet (a new unit, a
    newly mapped dataset, a changed key), or has no `updated_at`. Incremental runs compare every
    source key with the target as often as `hard_deletes:` says. `until` of a full load is `now`:
    the next incremental reads from there (less the lookback)."""
    ds = standard.dataset(tx_code)
    spec = mapping.datasets[ds.tx_code]
    now = clock.to_cst(now or clock.now())
    run_id = run_id or new_run_id()
    common = dict(dag_run_id=dag_run_id, allow_mass_delete=allow_mass_delete)
    full = Plan(mapping, ds.tx_code, "full", run_id, now, until=clock.naive(now), **common)
    if mode == "full":
        return full
    if not spec.updated_at:
        msg = "no updated_at in the mapping: ran a full load instead of incremental"
        log.warning("%s %s: %s", mapping.name, ds.tx_code, msg)
        return replace(full, message=msg)
    target.ensure_schema(engine)
    key = history.key_columns(spec.key)
    with engine.connect() as conn:
        past = history.read(conn, mapping.unit.orgNo, ds.tx_code, key)
    automatic = since is None or scheduled
    if automatic and (why := past.why_full(key)):
        log.info("%s %s: %s", mapping.name, ds.tx_code, why)
        return replace(full, message=why, rekeyed=bool(past.other_keys))
    until = clock.naive(until) if until else clock.naive(now)
    message = ""
    if since is None:
        since = past.covered_until
    else:
        since = clock.naive(since)
        if scheduled and past.covered_until is not None and past.covered_until < since:
            message = (f"read from {past.covered_until:%Y-%m-%d %H:%M} (where the last successful "
                       f"load ended), not {since:%Y-%m-%d %H:%M}: no successful load in between")
            since = past.covered_until
    read_since = since - timedelta(hours=spec.lookback_hours) if since else None
    sweep = history.sweep_due(spec.hard_deletes, past.last_sweep, now)
    return Plan(mapping, ds.tx_code, "incremental", run_id, now, since, until, read_since,
                message=message, sweep=sweep, **common)


def extract_chunks(p: Plan, chunk_rows: int = extract.DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The plan's source rows, raw, in chunks."""
    return extract.stream(p.mapping, p.tx_code, since=p.read_since,
                          until=p.until if p.mode == "incremental" else None, chunk_rows=chunk_rows)


def key_chunks(p: Plan, chunk_rows: int = extract.DEFAULT_CHUNK_ROWS) -> Iterator[pd.Series]:
    """The record ID of every row the source has now, in chunks (`extract.stream_keys`): what
    an incremental load with `sweep` compares the target's active records with."""
    spec = p.mapping.datasets[p.tx_code]
    for raw in extract.stream_keys(p.mapping, p.tx_code, chunk_rows=chunk_rows):
        keys = transform.source_key(raw.reset_index(drop=True), spec.key)
        yield transform.record_ids(keys, p.mapping.unit.orgNo, p.tx_code)


def references(engine: Engine, p: Plan) -> dict[str, set[str]]:
    """What `check_references` checks against: read just before the dataset is loaded."""
    target.ensure_schema(engine)
    with engine.connect() as conn:
        return _references(conn, p.mapping, p.tx_code)


def prepare(raw: pd.DataFrame, p: Plan, audit: Audit) -> Prepared:
    """Map, clean, fill, validate and identify one raw chunk. Needs nothing from the target:
    references to the unit's other datasets are checked when loading (`check_references`)."""
    ds, mapping, org = p.dataset, p.mapping, p.mapping.unit.orgNo
    frame = transform.apply_mapping(raw.reset_index(drop=True), mapping, ds.tx_code)
    frame, binary = binary_values(frame, ds)
    frame = clean_frame(frame, ds, audit, phones.city_of_org(mapping.unit.orgNo))
    frame = transform.fill_rules(frame, ds, mapping)
    frame[UPDATED] = _timestamps(frame[UPDATED])
    found = _check_chunk(frame, ds, mapping, p.today)
    binary = [b for b in binary if not frame.at[b[0], DELETED]]  # a D keeps the target's values
    if binary:
        emptied = {(row, name) for row, name, _ in binary}
        rows = {row for row, _ in emptied}
        found = [validate.Finding(row, name, "binary", f"binary value in field {name} "
                                  f"({ds.field(name).zh}): {n} bytes that are not text: map a "
                                  f"text column, or convert it in the dataset's query:")
                 for row, name, n in binary] + [
            f for f in found if (f.row, f.field) not in emptied
            and (f.severity == validate.ERROR or f.row not in rows)]  # warnings: rows that load
    errors = {f.row for f in found if f.severity == validate.ERROR}
    media = attachments.collect(frame, raw.reset_index(drop=True), mapping, ds.tx_code, errors)
    if media:  # a refused file rejects its row, which then loses its warnings
        refused = {f.row for f in media}
        found = [f for f in found if f.severity == validate.ERROR or f.row not in refused] + media
        errors |= refused
    frame = transform.add_identity(frame, org, ds.tx_code)
    is_error = frame.index.isin(list(errors))
    if ds.tx_code == "01":
        frame[standard.UNIT_KEY] = frame[standard.UNIT_KEY].where(~is_error, org)
    else:
        frame[standard.UNIT_KEY] = org
    frame[REJECTED] = is_error.astype(int)
    frame[DELETED] = frame[DELETED].astype(int)
    key = crypt.data_key()
    if key is not None:  # after rowHash: change detection reads the plaintext
        frame = crypt.encrypt_frame(frame, ds, key, (frame[REJECTED] == 0) & (frame[DELETED] == 0))
    findings = pd.DataFrame([(int(f.row), f.field, f.rule, f.severity, f.message) for f in found],
                            columns=list(Prepared.FINDING_COLUMNS))
    return Prepared(frame, findings)


def run_dataset(engine: Engine, mapping: Mapping, tx_code: str, *, mode: Mode = "full",
                since: datetime | None = None, until: datetime | None = None,
                run_id: str | None = None, now: datetime | None = None,
                chunk_rows: int = extract.DEFAULT_CHUNK_ROWS, scheduled: bool = False,
                allow_mass_delete: bool = False) -> DatasetResult:
    """Ingest one dataset of one unit in one process, streaming chunks through every stage
    (`plan` says what `scheduled` and `allow_mass_delete` change)."""
    p = plan(engine, mapping, tx_code, mode=mode, since=since, until=until, scheduled=scheduled,
             run_id=run_id, now=now, allow_mass_delete=allow_mass_delete)
    return run_planned(engine, p, chunk_rows)


def run_planned(engine: Engine, p: Plan, chunk_rows: int = extract.DEFAULT_CHUNK_ROWS) -> DatasetResult:
    """Extract, prepare and load what `p` says, chunks streaming through every stage."""
    def read() -> tuple[Iterator[Prepared], Audit]:
        audit = Audit()
        return (prepare(raw, p, audit) for raw in extract_chunks(p, chunk_rows)), audit

    return load_checked(engine, p, read, (lambda: key_chunks(p, chunk_rows)) if p.sweep else None)


def load_checked(engine: Engine, p: Plan, read: Callable[[], tuple[Iterable[Prepared], Audit]],
                 keys: Callable[[], Iterable[pd.Series]] | None = None) -> DatasetResult:
    """Check references against the target as it is now, then `load`; a deadlock (the
    database rolled the load back) is retried with the chunks (and `keys`, the source's
    record IDs when the plan sweeps) read afresh. A dataset the unit pushes is not loaded."""
    from etl.target import routes  # one route per (unit, dataset): docs/interface.md

    routes.refuse_pushed(engine, p.mapping.unit.orgNo, p.tx_code)
    for attempt in range(1, DEADLOCK_RETRIES + 1):
        refs = references(engine, p)
        chunks, audit = read()
        try:
            return load(engine, p, (check_references(c, p, refs) for c in chunks), audit,
                        keys() if keys is not None else None)
        except TargetError as e:
            if attempt == DEADLOCK_RETRIES or not is_deadlock(e.__cause__):
                raise
            log.warning("%s %s: deadlock in the target, retrying (%d/%d)", p.mapping.name,
                        p.tx_code, attempt, DEADLOCK_RETRIES)
    raise AssertionError("unreachable")


DEADLOCK_RETRIES = 3


def is_deadlock(exc: BaseException | None) -> bool:
    """Deadlocks and serialisation failures: the database rolled back; a retry may pass."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig is not None and orig.args else None)
    return code in ("40P01", "40001", 1213, 1205) or "database is locked" in str(orig)


def load(engine: Engine, p: Plan, chunks: Iterable[Prepared], audit: Audit,
         keys: Iterable[pd.Series] | None = None) -> DatasetResult:
    """Stage every prepared chunk and apply the changes, as one target transaction; with
    `keys` (the source's record IDs), also mark the unit's records the source no longer has.
    A failure rolls it all back and leaves a `failed` row in ingest_run."""
    result = new_result(p)
    target.ensure_schema(engine)
    try:
        with engine.connect() as conn, conn.begin():
            _load(conn, p, chunks, audit, result, keys)
    except Exception as e:
        result.status = "failed"
        result.message = cap(str(e) if isinstance(e, EtlError) else f"{type(e).__name__}: {e}",
                             RUN_MESSAGE_CHARS)
        record_run(engine, result, p.run_id, p.now)
        error: EtlError
        if isinstance(e, EtlError):
            error = e
        elif isinstance(e, sa.exc.DBAPIError):
            error = TargetError(f"{p.mapping.name} {p.tx_code}: the load was rolled back: "
                                f"{result.message[:300]}")
        else:
            log.exception("%s %s: the load failed", p.mapping.name, p.tx_code)
            error = LoadFailed(f"{p.mapping.name} {p.tx_code}: the load was rolled back: "
                               f"{result.message[:300]}", isinstance(e, (OSError, TimeoutError)))
        error.run_recorded = True
        if error is e:
            raise
        raise error from e
    return result


def new_result(p: Plan) -> DatasetResult:
    """The result a load of `p` fills in."""
    return DatasetResult(p.mapping.name, p.mapping.unit.orgNo, p.tx_code, p.mode,
                         window=(p.since, p.until), message=p.message,
                         mapping_hash=p.mapping.digest or None, dag_run_id=p.dag_run_id,
                         key_columns=p.key_columns)


def load_within(conn: Connection, p: Plan, chunks: Iterable[Prepared], audit: Audit) -> DatasetResult:
    """`load`'s work inside the caller's transaction, for a caller that writes more in it (the
    interface route's `ingest_push` row) and records a failure itself (`record_run`)."""
    result = new_result(p)
    _load(conn, p, chunks, audit, result)
    return result


def _load(conn: Connection, p: Plan, chunks: Iterable[Prepared], audit: Audit,
          result: DatasetResult, source_ids: Iterable[pd.Series] | None = None) -> None:
    ds, org = p.dataset, p.mapping.unit.orgNo
    key = crypt.data_key()
    stored = crypt.stored_key(conn)
    crypt.check_key(stored, key)  # another key, or none where values are encrypted: refused
    loader = DatasetLoad(conn, ds, org)
    counts = result.counts
    findings: list[tuple[int, str, validate.Finding]] = []  # (stage seq, source key, finding)
    media: list[tuple[int, dict]] = []  # (stage seq, ingest_media row) of rows that may load
    for chunk in chunks:
        base, keys = loader.staged, chunk.frame[KEY]
        media += [(base + pos, row) for pos, row in attachments.facts_of(chunk.frame)]
        findings += [(base + pos, keys.iat[pos], validate.Finding(pos, fld, rule, msg, sev))
                     for pos, fld, rule, sev, msg in chunk.findings.itertuples(index=False, name=None)]
        counts.extracted += len(chunk.frame)
        crypt.check_frame(chunk.frame, ds, key)
        loader.add(chunk.frame)
        log.info("%s %s: %d rows staged", p.mapping.name, p.tx_code, counts.extracted)
    dropped = loader.dedupe()
    counts.duplicates = len(dropped)
    by_type = loader.diff(full=p.mode == "full", keys=source_ids)
    counts.inserted, counts.updated = by_type.get("I", 0), by_type.get("U", 0)
    counts.deleted, counts.vanished = by_type.get("D", 0), loader.vanished
    result.swept = loader.swept
    if counts.vanished and not p.allow_mass_delete:
        _guard_mass_delete(p, counts.vanished, loader.active_count(),
                           loader.swept if loader.swept is not None else counts.extracted)
    counts.rejected = loader.rejected_count()
    counts.skipped_deleted = loader.skipped_deleted_count()
    counts.unchanged = (loader.staged - counts.duplicates - counts.rejected - counts.inserted
                        - counts.updated - (counts.deleted - counts.vanished) - counts.skipped_deleted)
    present = [bt for bt in ("I", "U", "D") if by_type.get(bt)]
    if key is not None and stored is None and {"I", "U"} & set(present) \
            and standard.encrypted_fields(ds):  # before the batch counter's lock: no deadlock
        crypt.claim(conn, key, p.run_id, p.now)
    if present:
        numbers = allocate_batches(conn, p.today, len(present))
        counts.batches = dict(zip(present, numbers))
        loader.apply(counts.batches, p.today)
        record_batches(conn, counts.batches, by_type, org, p.tx_code, p.run_id, p.now)
    loader.close()
    if media:  # the files of rows that load: not rejected, deleted or dropped as duplicates
        lost = {seq for seq, *_ in dropped}
        attachments.record(conn, [row for seq, row in media if seq not in lost], org,
                           p.tx_code, p.run_id)
    spec = p.mapping.datasets[ds.tx_code]
    _record_findings(conn, result, p.run_id, p.now, findings, dropped,
                     masked_source_key(ds, spec.key, spec.fields))
    _record_audit(conn, result, p.run_id, audit)
    result.status = "success"
    _insert_run(conn, result, p.run_id, p.now)


def _guard_mass_delete(p: Plan, vanished: int, active: int, read: int) -> None:
    """Refuse, before anything is written, to mark many records deleted on the source's word."""
    if not mass_delete(vanished, active, read, p.rekeyed):
        return
    what = "keys" if p.mode == "incremental" else "rows"
    share = "all" if vanished >= active else f"more than {MASS_DELETE_SHARE:.0%}"
    raise MassDeleteRefused(
        f"{p.mapping.path} [datasets.{p.tx_code}] the source returned {read:,} {what} where the "
        f"target holds {active:,} active records of this unit: {vanished:,} ({share}) would be "
        f"marked deleted (D), so nothing of this dataset was loaded. Check the source (an emptied "
        f"table, a broken view, a wrong schema look like this); if it really lost them, confirm "
        f"with `etl run {p.mapping.path} --tx {p.tx_code} --allow-mass-delete` or an Airflow run "
        f"with the params units={p.mapping.name}, tx_codes={p.tx_code}, allow_mass_delete on "
        f"(needed for more than {MASS_DELETE_SHARE:.0%} and at least {MASS_DELETE_MIN} records, "
        f"or any when the source returns nothing)")


KEY_CHARS = 500  # ingest_reject.sourceKey


def masked_source_key(ds: standard.Dataset, columns: list[str],
                      fields: dict[str, FieldRule]) -> Callable[[str], str]:
    """How `ingest_reject.sourceKey` shows a source key (`transform.source_key`: the key
    columns' values joined by `|`) to the people who read rejects: each part as the protected
    field its column fills is shown (`masking.shown`: ID number, region and last 4; phone;
    name, family name; certificate number, its ends), any other part where it looks like an ID
    number or a mobile. Enough for the unit to find the row, not whose row it is. A key whose
    values hold `|` themselves cannot be split by column: then every part keeps only its first
    character when any key column is protected."""
    filled: list[standard.Field | None] = []
    for c in columns:
        found = [ds.field(name) for name, rule in fields.items()
                 if rule.column == c and name in ds.field_names]
        filled.append(next((f for f in found if personal_kind(f)), None))
    personal = any(filled)

    def masked(key: str) -> str:
        parts = key.replace("\x00", "\\x00").split("|")
        if len(parts) == len(filled):
            parts = [shown(p[:KEY_CHARS], f) if f and p else p for p, f in zip(parts, filled)]
        elif personal:
            parts = [p[:1] + "*" * min(len(p) - 1, KEY_CHARS) if p else p for p in parts]
        return cap("|".join(parts), KEY_CHARS)

    return masked


def _record_findings(conn: Connection, result: DatasetResult, run_id: str, now: datetime,
                     findings: list[tuple[int, str, validate.Finding]],
                     dropped: list[tuple[int, str, str, str]],
                     shown_key: Callable[[str], str] = lambda key: cap(key, KEY_CHARS)) -> None:
    """Rejects, warnings and dropped duplicates into `ingest_reject`: keys masked
    (`masked_source_key`), every message masked and capped (`masking.cap`) here, whatever
    built it."""
    lost = {seq for seq, *_ in dropped}
    rows = [{"runId": run_id, "orgNo": result.org_no, "txCode": result.tx_code,
             "sourceKey": shown_key(key), "field": f.field, "rule": f.rule,
             "severity": f.severity, "message": cap(f.message, MESSAGE_CHARS), "createdAt": now}
            for seq, key, f in findings if seq not in lost and f.severity != validate.OFF]
    rows += [{"runId": run_id, "orgNo": result.org_no, "txCode": result.tx_code,
              "sourceKey": shown_key(key),
              "field": "ID", "rule": kind, "severity": validate.DUPLICATE,
              "message": ("an exact duplicate of another source row (dropped)" if kind == "duplicate"
                          else f"same record ID {rid} as a later source row (kept the later one)"),
              "createdAt": now} for _, key, rid, kind in dropped]
    result.counts.warnings = sum(1 for r in rows if r["severity"] == validate.WARNING)
    result.counts.overridden = len({seq for seq, _, f in findings if seq not in lost and (
        f.severity == validate.OFF or f.message.endswith(validate.LOWERED))})
    result.reasons = Counter(f"{r['field']}:{r['rule']}" for r in rows if r["severity"] == validate.ERROR)
    insert_rows(conn, target.ingest_reject, rows)


def _record_audit(conn: Connection, result: DatasetResult, run_id: str, audit: Audit) -> None:
    import json

    rows = [{"runId": run_id, "orgNo": result.org_no, "txCode": result.tx_code, "field": a["field"],
             "rule": a["rule"], "count": a["count"],
             "examples": json.dumps([[cap(str(x), MESSAGE_CHARS) for x in ex] for ex in a["examples"]],
                                    ensure_ascii=False)} for a in audit.rows()]
    insert_rows(conn, target.ingest_audit, rows)


def _run_row(result: DatasetResult, run_id: str, now: datetime) -> dict:
    c = result.counts
    return {"runId": run_id, "mapping": result.mapping, "orgNo": result.org_no,
            "txCode": result.tx_code, "mode": result.mode, "windowStart": result.window[0],
            "windowEnd": result.window[1], "status": result.status,
            "extracted": c.extracted, "inserted": c.inserted, "updated": c.updated,
            "deleted": c.deleted, "unchanged": c.unchanged, "rejected": c.rejected,
            "duplicates": c.duplicates, "warnings": c.warnings, "skippedDeleted": c.skipped_deleted,
            "overridden": c.overridden,
            "message": cap(result.message, RUN_MESSAGE_CHARS) if result.message else None,
            "startedAt": now, "endedAt": clock.now(),
            "dagRunId": result.dag_run_id, "host": provenance.host(), "osUser": provenance.os_user(),
            "mappingHash": result.mapping_hash, "codeVersion": provenance.code_version(),
            "keyColumns": result.key_columns, "sweptKeys": result.swept}


def _insert_run(conn: Connection, result: DatasetResult, run_id: str, now: datetime) -> None:
    conn.execute(sa.insert(target.ingest_run), [_run_row(result, run_id, now)])


def record_run(engine: Engine, result: DatasetResult, run_id: str, now: datetime) -> None:
    """Keep a run row on its own (a failure's): what failed stays visible in `ingest_run`."""
    try:
        with engine.begin() as conn:
            _insert_run(conn, result, run_id, now)
    except sa.exc.DBAPIError:
        log.exception("could not record the failed run of %s %s", result.mapping, result.tx_code)


def run_mapping(engine: Engine, mapping: Mapping, tx_codes: list[str] | None = None,
                **kwargs) -> list[DatasetResult]:
    """Every selected dataset of one unit, in txCode order (02 before 03, 06 before 07, so
    references check against what this run loaded). A failed dataset doesn't stop the rest."""
    results: list[DatasetResult] = []
    for tx in sorted(mapping.datasets):
        if tx_codes and tx not in tx_codes:
            continue
        try:
            results.append(run_dataset(engine, mapping, tx, **kwargs))
        except EtlError as e:
            message = cap(str(e), RUN_MESSAGE_CHARS)
            log.error("%s %s failed: %s", mapping.name, tx, message)
            r = DatasetResult(mapping.name, mapping.unit.orgNo, tx, kwargs.get("mode", "full"),
                              status="failed", message=message)
            results.append(r)
    return results
