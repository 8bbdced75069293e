"""The bodies of the Airflow tasks in `dags/dual_prevention.py`: plan, then per shard of units
`ingest` (extract, transform and load in one task, in memory) or extract -> transform -> load
(`ETL_SHARD_TASKS=three`), then summarise.

A task instance may run in its own process on another machine, so nothing is kept in memory
between tasks: the plan, each task's manifest and, with three tasks a shard, the data itself go
to the staging store (`etl.orchestration.staging`: a folder, object storage, or the target
database), and XCom carries only a shard's keys. The stages are the pipeline's own (`plan`,
`extract_chunks`, `prepare`, `load_checked`), so a DAG run and `etl run` write exactly the same
target rows.

Inside a shard, units go one after another, each unit's datasets in txCode order (02 before 03,
06 before 07: references are checked when loading, against what this run has loaded). One
unit's failure never stops the others: each stage records it and goes on, and only `load` fails,
after every other unit is loaded, naming the failed ones. Its retry skips what is loaded and
redoes, for the units that failed transiently, whatever stage they failed in. A failure that
will fail the same way again (an invalid mapping, a missing table) is not retried.
"""

from __future__ import annotations

import hashlib
import logging
import os
import traceback
from collections.abc import Iterator, Mapping as MappingABC, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from etl.common import clock, private, settings
from etl.common.errors import EtlError, MappingError
from etl.common.masking import mask_logs
from etl.common.settings import project_dir
from etl.orchestration import assets, planning, staging

log = logging.getLogger("etl")
mask_logs(log)  # a task's log (Airflow's handlers, not the CLI's) shows no protected value

TARGET_CONN_ID = "etl_target"
PROGRESS_EVERY = 50  # a progress line per this many datasets of a shard


# --- where things are -----------------------------------------------------------------------


def mappings_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    return settings.path("ETL_MAPPINGS_DIR", explicit)


def cache_dir() -> Path:
    """Validated mappings by content hash (`ETL_CACHE_DIR`)."""
    return settings.path("ETL_CACHE_DIR")


def chunk_rows() -> int:
    return settings.integer("ETL_CHUNK_ROWS") or 1


def keep_days() -> int:
    """How long a failed run's staged data is kept for manual retries (`ETL_STAGING_KEEP_DAYS`)."""
    return settings.integer("ETL_STAGING_KEEP_DAYS", minimum=0) or 0


@contextmanager
def _in_project() -> Iterator[None]:
    """Run with the project folder as working directory, as `etl` is run from it: mapping files
    may name sources relative to it (`sqlite:///var/...`)."""
    here = os.getcwd()
    os.chdir(project_dir())
    try:
        yield
    finally:
        os.chdir(here)


# --- credentials and the target ----------------------------------------------------------------


def mask(secret: str | None) -> None:
    """Register a secret with Airflow's masker, so task logs show *** instead."""
    from etl.common.masking import register_secrets

    register_secrets([secret])


def target_url() -> str:
    """The Airflow connection `etl_target` if defined, else `ETL_TARGET_URL`, else the default
    SQLite file under the project folder."""
    from etl.common.masking import register_url_secrets

    from etl.common.outbound import connection_uri

    url = connection_uri(TARGET_CONN_ID, required=False) or settings.target_url(anchored=True)
    register_url_secrets(url)  # never raises: an unparsable URL fails in target.connect, masked
    return url


@contextmanager
def _target_and_store() -> Iterator[tuple[sa.Engine, staging.Store]]:
    """The target (one engine for every unit of the task) and the staging store."""
    from etl import target

    engine = target.connect(target_url(), f"the target URL (Airflow connection {TARGET_CONN_ID} "
                                          f"or ETL_TARGET_URL)")
    target.ensure_schema(engine)  # created or upgraded by the first task that needs it
    store = staging.open_store(engine_factory=lambda: engine)
    try:
        yield engine, store
    finally:
        store.close()
        engine.dispose()


# --- errors ------------------------------------------------------------------------------------


class ShardFailed(EtlError):
    """Some units of a shard failed; the others were loaded. Transient when any failure may
    pass on a retry."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


@contextmanager
def _airflow_errors(label: str) -> Iterator[None]:
    """Terminal EtlErrors fail the task without retries; transient ones are retried."""
    try:
        yield
    except EtlError as e:
        if e.transient:
            raise
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{label}: {e}") from e


def _is_transient(exc: BaseException) -> bool:
    """Would a retry possibly pass? Our own errors say so; database and network errors may;
    anything else is a bug that fails the same way again."""
    if isinstance(exc, EtlError):
        return exc.transient
    return isinstance(exc, (sa.exc.DBAPIError, OSError, TimeoutError))


# --- Airflow's context -------------------------------------------------------------------------


def context_args(context: MappingABC[str, Any]) -> dict[str, Any]:
    """What planning needs from an Airflow task context, as plain values."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    dag_run, dag = context.get("dag_run"), context.get("dag")
    return {
        "params": dict(context.get("params") or {}),
        "interval": (start, end) if start is not None and end is not None else None,
        "dag_id": getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", "dag"),
        "run_id": context.get("run_id") or getattr(dag_run, "run_id", "run"),
        "slots": task_slots(getattr(dag, "max_active_tasks", None)),
        "max_shards": _max_map_length(),
    }


def _max_map_length() -> int:
    """Airflow refuses to map over more (`core.max_map_length`, default 1024)."""
    try:
        from airflow.sdk.configuration import conf

        return conf.getint("core", "max_map_length", fallback=1024)
    except Exception:  # pragma: no cover - outside Airflow
        return 1024


def task_slots(dag_limit: int | None = None) -> int:
    """How many tasks of a run can run at once: Airflow's `parallelism`, capped by the DAG's
    `max_active_tasks` (default `max_active_tasks_per_dag`)."""
    try:
        from airflow.sdk.configuration import conf

        parallelism = conf.getint("core", "parallelism")
        per_dag = dag_limit or conf.getint("core", "max_active_tasks_per_dag")
    except Exception:  # pragma: no cover - outside Airflow
        return 16
    return max(1, min(parallelism, per_dag))


def _try_number(context: MappingABC[str, Any] | None) -> int:
    ti = (context or {}).get("ti")
    return int(getattr(ti, "try_number", 1) or 1)


def _label(context: MutableMapping[str, Any] | None, label: str) -> str:
    if context is not None:
        context["label"] = label  # the map index's name in the UI (map_index_template)
    return label


# --- staging keys ------------------------------------------------------------------------------


def _k(*parts: str) -> str:
    """A staging key from a prefix and more parts (each checked by `staging.key`)."""
    return staging.key(*(p for part in parts for p in part.split("/")))


def _run_prefix(plan: planning.RunPlan) -> str:
    day = datetime.fromisoformat(plan.now).strftime("%Y%m%d")
    return _k(staging.token(plan.dag_id), f"{day}-{staging.token(plan.airflow_run_id)}")


def _unit_part(unit: planning.Unit) -> str:
    """A unit's key part: its orgNo (safe by validation) and a hash of its mapping's path, so two
    files never share one, whatever their names (南京化工.yaml, 苏州电梯.yaml)."""
    digest = hashlib.sha256(unit.path.encode("utf-8")).hexdigest()[:16]
    return f"{unit.org_no or 'invalid'}-{digest}"


def _item_prefix(shard_prefix: str, unit: planning.Unit, tx: str) -> str:
    return _k(shard_prefix, _unit_part(unit), tx)


# --- the plan, across processes ----------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """The run-wide values every stage of every shard shares."""

    dag_id: str
    airflow_run_id: str
    run_id: str
    mode: str
    now: datetime
    choice: planning.Choice
    header: MappingABC[str, Any]

    @classmethod
    def of(cls, header: MappingABC[str, Any]) -> _Run:
        return cls(header["dag_id"], header["airflow_run_id"], header["run_id"], header["mode"],
                   datetime.fromisoformat(header["now"]), planning.Choice.of(header.get("choice")),
                   header)


def _plan_args(p) -> dict[str, Any]:
    """A pipeline Plan without its mapping, as JSON-able values (datetimes tagged)."""
    out = {}
    for f in fields(p):
        if f.name == "mapping":
            continue
        v = getattr(p, f.name)
        out[f.name] = {"datetime": v.isoformat()} if isinstance(v, datetime) else v
    return out


def _rebuild_plan(mapping, args: MappingABC[str, Any]):
    from etl import pipeline

    values = {k: datetime.fromisoformat(v["datetime"]) if isinstance(v, dict) and "datetime" in v
              else v for k, v in args.items()}
    return pipeline.Plan(mapping=mapping, **values)


def _meta(run: _Run, unit: planning.Unit, tx: str) -> dict[str, str]:
    """What every staged file of a unit's dataset carries and is checked against on reading."""
    return {"orgNo": unit.org_no, "mapping": (unit.mapping or {}).get("digest", ""), "tx": tx,
            "run": run.run_id}


# --- plan --------------------------------------------------------------------------------------


@private.private_files  # whatever the worker's umask: owner-only files
def plan(frequency: str, context: MutableMapping[str, Any] | None = None, *,
         mappings: str | os.PathLike[str] | None = None, **args: Any) -> list[dict[str, Any]]:
    """Plan the run, store each shard's part of the plan, and return one small reference per
    shard for `.expand()`. `args` (params, interval, dag_id, run_id, slots, now) default to what
    the Airflow context says."""
    args = {**(context_args(context) if context is not None else {}), **args}
    with _airflow_errors(f"{args.get('dag_id', 'dag')} plan"):
        with _in_project():
            run_plan = planning.plan_run(frequency, mappings=mappings_dir(mappings),
                                         cache_dir=cache_dir(), **args)
        if not run_plan.shards:  # nothing due (most ticks of the 5-minute DAG): no target to open
            _prune_idle(run_plan)
            log.info("planned no shards: nothing is due")
            return []
        with _target_and_store() as (engine, store):
            prefix = _run_prefix(run_plan)
            _prune(store, _k(staging.token(run_plan.dag_id)), prefix)
            refs = []
            for shard in run_plan.shards:
                shard_prefix = _k(prefix, f"s{shard.index:04d}")
                store.put_json(_k(shard_prefix, "plan.json"),
                                 planning.shard_to_dict(run_plan, shard))
                refs.append({"shard": shard.index, "of": shard.of, "label": shard.label,
                             "prefix": shard_prefix,
                             "run": prefix, "units": len(shard.units),
                             "datasets": sum(len(u.datasets) for u in shard.units)})
    log.info("planned %d shard(s) in %s:\n%s", len(refs), store.describe(),
             "\n".join(r["label"] for r in refs) or "(none)")
    return refs


def _prune_idle(run_plan: planning.RunPlan) -> None:
    """`_prune` for a run that stages nothing: the target is opened only when it is the store."""
    def engine() -> sa.Engine:
        from etl import target

        return target.connect(target_url(), f"the target URL (Airflow connection {TARGET_CONN_ID} "
                                             f"or ETL_TARGET_URL)")

    store = staging.open_store(engine_factory=engine)
    try:
        _prune(store, _k(staging.token(run_plan.dag_id)), _run_prefix(run_plan))
    finally:
        store.close()


def _prune(store: staging.Store, dag_prefix: str, keep: str) -> None:
    """Remove staged runs of this DAG older than `keep_days()` (failed runs keep their data for
    manual retries; successful ones are removed by `summarise`)."""
    oldest = (clock.now() - timedelta(days=keep_days())).strftime("%Y%m%d")
    runs = {k[len(dag_prefix) + 1:].split("/", 1)[0] for k in store.keys(dag_prefix + "/")}
    for run in sorted(runs):
        if run[:8] < oldest and _k(dag_prefix, run) != keep:
            store.delete(_k(dag_prefix, run) + "/")
            log.info("removed staged data of an old run: %s", run)


# --- the three stages --------------------------------------------------------------------------


@dataclass
class _Item:
    """One unit's dataset inside a stage task."""

    unit: planning.Unit
    tx: str | None
    prefix: str
    record: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.unit.name} {self.tx}" if self.tx else f"{self.unit.name} (invalid mapping)"

    @property
    def id(self) -> str:
        return f"{_unit_part(self.unit)}/{self.tx or '-'}"


def _shard(store: staging.Store, ref: MappingABC[str, Any]) -> tuple[_Run, planning.Shard]:
    header, shard = planning.shard_from_dict(store.get_json(_k(ref["prefix"], "plan.json")))
    return _Run.of(header), shard


def _items(shard: planning.Shard, shard_prefix: str, records: MappingABC[str, Any]) -> Iterator[_Item]:
    """The shard's units' datasets in order (units as planned, datasets in txCode order)."""
    for unit in shard.units:
        if unit.problems:
            yield _Item(unit, None, "", records.get(f"{_unit_part(unit)}/-", {}))
            continue
        for ds in sorted(unit.datasets, key=lambda d: d["tx"]):
            item = _Item(unit, ds["tx"], _item_prefix(shard_prefix, unit, ds["tx"]), {})
            item.record = dict(records.get(item.id) or {"dataset": ds})
            yield item


def _message(exc: BaseException) -> str:
    """What a failure says, personal data masked (it goes to logs and the run record)."""
    return _message_text(str(exc) if isinstance(exc, EtlError) else f"{type(exc).__name__}: {exc}")


def _message_text(text: str) -> str:
    """A message as logged and stored: secrets and personal data masked, length capped."""
    from etl.common.masking import RUN_MESSAGE_CHARS, cap

    return cap(text, RUN_MESSAGE_CHARS)


def _fail_item(engine: sa.Engine, run: _Run, item: _Item, stage: str, exc: BaseException) -> dict[str, Any]:
    """Record a unit's dataset that failed in `stage`: in the task log, in `ingest_run` (the run
    record), and in the manifest the next stages read."""
    from etl import pipeline

    message = _message(exc)[:2000]
    transient = _is_transient(exc)
    if isinstance(exc, EtlError):
        log.error("%s: %s failed (%s): %s", item.label, stage, "transient" if transient else "terminal", message)
    else:
        log.error("%s: %s failed: %s", item.label, stage,
                  _message_text("".join(traceback.format_exception(exc))))
    window = item.record.get("plan") or {}
    result = pipeline.DatasetResult(
        item.unit.name, item.unit.org_no, item.tx or "", run.mode, status="failed",
        window=tuple(datetime.fromisoformat(w["datetime"]) if isinstance(w, dict) else None
                     for w in (window.get("since"), window.get("until"))),
        message=message, mapping_hash=_mapping_hash(item.unit), dag_run_id=run.airflow_run_id)
    pipeline.record_run(engine, result, run.run_id, run.now)
    return {**item.record, "state": "failed", "stage": stage, "transient": transient,
            "message": message}


def _mapping_hash(unit: planning.Unit) -> str | None:
    """The sha256 of the unit's mapping file as planned; of the file as it is now when it did
    not validate (the audit trail names which version of a broken file failed)."""
    if unit.mapping:
        return unit.mapping.get("digest") or None
    try:
        return hashlib.sha256(Path(unit.path).read_bytes()).hexdigest()
    except OSError:
        return None


def _plan_item(engine: sa.Engine, run: _Run, item: _Item):
    """The pipeline's plan of a unit's dataset: mode and window from the target's memory."""
    from etl import pipeline

    ds = item.record["dataset"]
    with _in_project():
        return pipeline.plan(engine, item.unit.validated(), item.tx, mode=run.mode,
                             since=planning.parse_moment(ds["since"], "since"),
                             until=planning.parse_moment(ds["until"], "until"),
                             scheduled=run.choice.scheduled, run_id=run.run_id, now=run.now,
                             dag_run_id=run.airflow_run_id,
                             allow_mass_delete=run.choice.allow_mass_delete)


def _read_window(p) -> str:
    window = f" window [{p.since}, {p.until})" if p.mode == "incremental" else ""
    return f"{p.mode}{window}{f'; {p.message}' if p.message else ''}"


def _extract_item(engine: sa.Engine, store: staging.Store, run: _Run, item: _Item) -> dict[str, Any]:
    from etl import pipeline

    ds = item.record["dataset"]
    p = _plan_item(engine, run, item)
    record = {"dataset": ds, "plan": _plan_args(p)}
    store.delete(item.prefix + "/")  # a retry starts clean
    files, keys, rows, swept = [], [], 0, 0
    meta = _meta(run, item.unit, item.tx)
    with _in_project():
        for n, raw in enumerate(pipeline.extract_chunks(p, chunk_rows())):
            files.append(f"raw-{n:05d}.parquet")
            store.put_frame(_k(item.prefix, files[-1]), raw, meta)
            rows += len(raw)
        if p.sweep:  # every key the source has now: the load marks the rest D
            for n, ids in enumerate(pipeline.key_chunks(p, chunk_rows())):
                keys.append(f"keys-{n:05d}.parquet")
                store.put_frame(_k(item.prefix, keys[-1]), ids.to_frame(), meta)
                swept += len(ids)
    log.info("%s: %d source rows extracted (%s)%s", item.label, rows, _read_window(p),
             f"; {swept} keys to find hard deletes" if p.sweep else "")
    return {**record, "state": "extracted", "raw": files, "rows": rows, "keys": keys}


def _transform_item(store: staging.Store, run: _Run, item: _Item) -> dict[str, Any]:
    """Map, clean and validate each raw chunk into a prepared chunk, its findings and the
    cleaning audit."""
    from etl import pipeline
    from etl.standard import validate
    from etl.standard.clean import Audit

    p = _rebuild_plan(item.unit.validated(), item.record["plan"])
    meta = _meta(run, item.unit, item.tx)
    audit = Audit()
    prepared, findings, errors = [], [], 0
    for n, name in enumerate(item.record["raw"]):
        raw = store.get_frame(_k(item.prefix, name), expect=meta)
        chunk = pipeline.prepare(raw, p, audit)
        prepared.append(f"prepared-{n:05d}.parquet")
        findings.append(f"findings-{n:05d}.parquet")
        store.put_frame(_k(item.prefix, prepared[-1]), chunk.frame, meta)
        store.put_frame(_k(item.prefix, findings[-1]), chunk.findings, meta)
        errors += int((chunk.findings["severity"] == validate.ERROR).sum())
    store.put_json(_k(item.prefix, "audit.json"), audit.rows())
    log.info("%s: %d rows prepared, %d error finding(s)", item.label, item.record["rows"], errors)
    return {**item.record, "state": "transformed", "prepared": prepared, "findings": findings}


def _load_item(engine: sa.Engine, store: staging.Store, run: _Run, item: _Item):
    """Load the prepared chunks (and, when the plan compares keys, the source's record IDs) in
    one target transaction, then drop the dataset's staging."""
    from etl import pipeline
    from etl.target.frame import ID
    from etl.standard.clean import Audit

    p = _rebuild_plan(item.unit.validated(), item.record["plan"])
    meta = _meta(run, item.unit, item.tx)
    audit = Audit()
    for row in store.get_json(_k(item.prefix, "audit.json")):
        audit.add(row["field"], row["rule"], row["count"], [tuple(e) for e in row["examples"]])

    def read():
        def chunks() -> Iterator[Any]:
            for frame_name, findings_name in zip(item.record["prepared"], item.record["findings"],
                                                 strict=True):
                yield pipeline.Prepared(
                    store.get_frame(_k(item.prefix, frame_name), expect=meta),
                    store.get_frame(_k(item.prefix, findings_name), expect=meta))
        return chunks(), audit

    def keys() -> Iterator[Any]:
        for name in item.record.get("keys") or ():
            yield store.get_frame(_k(item.prefix, name), expect=meta)[ID]

    result = pipeline.load_checked(engine, p, read, keys if p.sweep else None)
    store.delete(item.prefix + "/")
    c = result.counts
    log.info("%s: %s; inserted %d, updated %d, deleted %d, unchanged %d, rejected %d", item.label,
             result.status, c.inserted, c.updated, c.deleted, c.unchanged, c.rejected)
    return result


def _ingest_item(engine: sa.Engine, run: _Run, item: _Item):
    """Extract, transform and load a unit's dataset in this process, chunks streaming through
    every stage as in `etl run` (`pipeline.run_dataset`): nothing is staged. Returns the
    dataset's record for the manifest and the load's result."""
    from etl import pipeline

    p = _plan_item(engine, run, item)
    record = {"dataset": item.record["dataset"], "plan": _plan_args(p)}
    with _in_project():  # sources named relative to the project folder
        result = pipeline.run_planned(engine, p, chunk_rows())
    c = result.counts
    log.info("%s: %s (%s); extracted %d: inserted %d, updated %d, deleted %d, unchanged %d, "
             "rejected %d", item.label, result.status, _read_window(p), c.extracted, c.inserted,
             c.updated, c.deleted, c.unchanged, c.rejected)
    return record, result


def _refresh(engine: sa.Engine, store: staging.Store, ref: MappingABC[str, Any], run: _Run,
             shard: planning.Shard, records: dict[str, Any]) -> tuple[planning.Shard, dict[str, Any]]:
    """A retry takes fixes: each unit of the shard this run has not loaded yet is planned again
    from its mapping file as it is now when the file changed since planning, or did not
    validate then (`planning.replan`), and its earlier stages' records are dropped, so it is read
    again from its source. The shard's plan is stored again for the stages after this one."""
    loaded = _loaded(engine, run.run_id)
    units, dropped = [], set()
    with _in_project():
        for unit in shard.units:
            done = unit.datasets and all((unit.org_no, ds["tx"]) in loaded for ds in unit.datasets)
            fresh = unit if done else planning.replan(run.choice, unit, cache_dir())
            if fresh is not unit:
                log.info("%s: its mapping file changed since the run was planned: %s", unit.name,
                         f"planned again, {len(fresh.datasets)} dataset(s)" if not fresh.problems
                         else f"not loaded: {fresh.problems[:300]}")
                dropped.add(_unit_part(unit))
            units.append(fresh)
    if not dropped:
        return shard, records
    shard = planning.Shard(shard.index, shard.of, units)
    store.put_json(_k(ref["prefix"], "plan.json"), planning.shard_dict(run.header, shard))
    return shard, {k: v for k, v in records.items() if k.split("/", 1)[0] not in dropped}


def _stage(ref: MappingABC[str, Any], context: MutableMapping[str, Any] | None, name: str,
           source: str | None, work) -> dict[str, Any]:
    """Run `work(engine, store, run, item)` for each of the shard's datasets that the previous
    stage passed on, record failures and go on; store this stage's manifest. A retry (a try
    after the first: Airflow's, or a person clearing the task) takes fixes (`_refresh`) and
    runs failed datasets again from the source."""
    label = _label(context, ref["label"])
    retry = _try_number(context) > 1
    with _airflow_errors(label), _target_and_store() as (engine, store):
        run, shard = _shard(store, ref)
        records = store.get_json(_k(ref["prefix"], source))["items"] if source else {}
        if retry:
            shard, records = _refresh(engine, store, ref, run, shard, records)
        out, done, failed = {}, 0, 0
        items = list(_items(shard, ref["prefix"], records))
        for n, item in enumerate(items, 1):
            if n % PROGRESS_EVERY == 0:
                log.info("%s: %s %d of %d dataset(s), %d failed so far", label, name, n, len(items), failed)
            if item.tx is None:  # an invalid mapping: its run record, once
                out[item.id] = item.record or _fail_item(engine, run, item, "plan",
                                                         MappingError([item.unit.problems]))
                continue
            state = item.record.get("state")
            if state == "failed" and not retry:
                out[item.id] = item.record
                continue
            stage = name
            try:
                if source is not None and state != "extracted":  # failed, or planned again
                    stage = "extract"
                    item.record = _extract_item(engine, store, run, item)
                    stage = name
                out[item.id] = work(engine, store, run, item)
                done += 1
            except Exception as e:  # one unit's failure never stops the others
                out[item.id] = _fail_item(engine, run, item, stage, e)
                failed += 1
        store.put_json(_k(ref["prefix"], f"{name}.json"), {"items": out})
    log.info("%s: %s %d dataset(s), %d failed", label, name, done, failed)
    return {**ref, "manifest": f"{name}.json"}


@private.private_files
def extract(ref: MappingABC[str, Any], context: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Read each dataset's source rows (within its window) into raw Parquet chunks."""
    return _stage(ref, context, "extract", None,
                  lambda engine, store, run, item: _extract_item(engine, store, run, item))


@private.private_files
def transform(ref: MappingABC[str, Any], context: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Map, clean and validate what `extract` staged (needs nothing from the target)."""
    return _stage(ref, context, "transform", "extract.json",
                  lambda engine, store, run, item: _transform_item(store, run, item))


@private.private_files
def load(ref: MappingABC[str, Any], context: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Load every transformed dataset of the shard, unit after unit, each in its own target
    transaction; then fail, naming them, if any unit failed at any stage.

    A retry (try 2 and later: Airflow's, or a person clearing this task after a fix) skips what
    an earlier try loaded, takes fixed mapping files (`_refresh`), and runs every dataset that
    failed again from its source; only a load that failed because the target was away loads
    what is staged."""
    return _load_shard(ref, context, staged=True)


@private.private_files
def ingest(ref: MappingABC[str, Any], context: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Extract, transform and load every dataset of the shard in this one task, unit after
    unit, chunks streaming through the stages as in `etl run`: no data is staged, only the
    shard's plan and this task's manifest. Fails, naming them, if any unit failed; a retry skips
    what an earlier try loaded, takes fixed mapping files and reads the rest from the source."""
    return _load_shard(ref, context, staged=False)


def _load_shard(ref: MappingABC[str, Any], context: MutableMapping[str, Any] | None, *,
                staged: bool) -> dict[str, Any]:
    """`load` (`staged`: what `transform` staged) or `ingest` (each dataset from its source)."""
    label = _label(context, ref["label"])
    retry = _try_number(context) > 1
    results, failures = 0, []
    with _airflow_errors(label), _target_and_store() as (engine, store):
        run, shard = _shard(store, ref)
        records = store.get_json(_k(ref["prefix"], "transform.json"))["items"] if staged else {}
        kept: set[int] = set()
        if retry:
            try:  # what an earlier try of this task loaded or failed to
                records = {**records, **store.get_json(_k(ref["prefix"], "load.json"))["items"]}
            except staging.StagingMissing:
                pass
            planned = {id(u) for u in shard.units}
            shard, records = _refresh(engine, store, ref, run, shard, records)
            # one task a shard, an earlier try that ended before its manifest was stored (killed,
            # timed out): what it loaded is in the run records, not the manifest; a unit planned
            # again from a changed file is read again whole, as with three tasks
            kept = {id(u) for u in shard.units} & planned
        in_store = {k.rsplit("/", 1)[0] for k in store.keys(ref["prefix"] + "/")} if staged else set()
        loaded = _loaded(engine, run.run_id)
        out: dict[str, Any] = {}
        items = list(_items(shard, ref["prefix"], records))
        for n, item in enumerate(items, 1):
            if n % PROGRESS_EVERY == 0:
                log.info("%s: load %d of %d dataset(s), %d failed so far", label, n, len(items),
                         len(failures))
            if item.tx is None:  # invalid, or refused when planned again: its run record, once
                out[item.id] = item.record or _fail_item(engine, run, item, "plan",
                                                         MappingError([item.unit.problems]))
                failures.append((item.label, "plan", item.unit.problems, False))
                continue
            state = item.record.get("state")
            done = (item.unit.org_no, item.tx) in loaded
            if state == "loaded" or done and (
                    (state == "transformed" and item.prefix not in in_store)
                    or (not staged and state is None and retry and id(item.unit) in kept)):
                log.info("%s: loaded by an earlier try", item.label)
                out[item.id] = {**item.record, "state": "loaded"}
                continue
            if state == "failed" and not retry:
                failures.append((item.label, item.record["stage"], item.record["message"],
                                 item.record["transient"]))
                out[item.id] = item.record
                continue
            staged_ok = staged and (state == "transformed" or (
                state == "failed" and item.record.get("stage") == "load"
                and item.record.get("transient") and item.prefix in in_store))
            if state == "failed" and not staged_ok:
                log.info("%s: %s failed in an earlier try: reading it again", item.label,
                         item.record["stage"])
            stage = "extract" if staged else "ingest"
            try:
                if not staged:  # from the source, in this process
                    item.record, result = _ingest_item(engine, run, item)
                else:
                    if not staged_ok:  # failed in an earlier try, or planned again: from the source
                        item.record = _extract_item(engine, store, run, item)
                        stage = "transform"
                        item.record = _transform_item(store, run, item)
                    stage = "load"
                    result = _load_item(engine, store, run, item)
                c = result.counts
                out[item.id] = {**item.record, "state": "loaded", "counts": {
                    "inserted": c.inserted, "updated": c.updated, "deleted": c.deleted,
                    "unchanged": c.unchanged}}
                results += 1
            except Exception as e:
                if not (isinstance(e, EtlError) and e.run_recorded):  # the load records its own
                    _fail_item(engine, run, item, stage, e)
                message, transient = _message(e)[:500], _is_transient(e)
                failures.append((item.label, stage, message, transient))
                out[item.id] = {**item.record, "state": "failed", "stage": stage,
                                "transient": transient, "message": message}
        store.put_json(_k(ref["prefix"], "load.json"), {"items": out})
        # the assets of the txCodes loaded (this try or an earlier one): events if this try succeeds
        emitted = assets.emit(context, [
            {"unit": i.unit.name, "orgNo": i.unit.org_no, "tx": i.tx, **out[i.id].get("counts", {})}
            for i in items if i.tx and out.get(i.id, {}).get("state") == "loaded"], run.airflow_run_id)
        if emitted:
            log.info("%s: asset events for txCode %s", label, ", ".join(emitted))
    out_ref = {**ref, "loaded": results,
               "failed": [f"{lbl} ({stage})" for lbl, stage, *_ in failures[:200]]}
    if failures:
        names = ", ".join(lbl for lbl, *_ in failures[:5]) + (" …" if len(failures) > 5 else "")
        _label(context, f"{ref['label']} — failed: {names}")
        lines = "\n".join(f"  {lbl} [{stage}]: {msg}" for lbl, stage, msg, _ in failures)
        transient = any(t for *_, t in failures)
        log.error("%s: %d dataset(s) failed, the other %d loaded:\n%s", label, len(failures),
                  results, lines)
        with _airflow_errors(label):
            raise ShardFailed(f"{len(failures)} failed ({names}); {results} loaded"
                              + ("; a retry reads them again" if transient else
                                 "; these fail the same way on every try: fix them (mapping file, "
                                 "source, or an environment variable: restart Airflow after "
                                 "setting one), then clear this load task: it reads their mapping "
                                 "files and sources again"), transient)
    return out_ref


def _loaded(engine: sa.Engine, run_id: str) -> set[tuple[str, str]]:
    """(orgNo, txCode) this run has loaded so far (any try)."""
    from etl import target

    target.ensure_schema(engine)
    r = target.ingest_run
    with engine.connect() as conn:
        return {(org, tx) for org, tx in conn.execute(
            sa.select(r.c.orgNo, r.c.txCode).where(r.c.runId == run_id, r.c.status == "success"))}


# --- summary ---------------------------------------------------------------------------------------


@private.private_files
def summarise(refs: list[dict[str, Any]] | None, context: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Log the run's summary from the target's run records (counts per dataset, top reject
    reasons, every failure by name) and fail the run, after logging, when anything failed.
    A successful run's staging is removed; a failed one's is kept for retries."""
    from etl.report import results

    if refs is None:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("planning failed: see the plan task's log")
    if not refs:  # nothing was due: no target to open
        log.info("run summary\nno datasets were planned for this run")
        return {"datasets": 0, "failed": 0}
    with _target_and_store() as (engine, store):
        planned: list[tuple[str, str]] = []   # (unit name, tx); "" for an invalid mapping
        problems: dict[str, str] = {}
        run_id = None
        for ref in refs:
            run, shard = _shard(store, ref)
            run_id = run.run_id
            for unit in shard.units:
                planned += [(unit.name, ds["tx"]) for ds in unit.datasets]
                if unit.problems:
                    planned.append((unit.name, ""))
                    problems[unit.name] = unit.problems
        if run_id is None:
            log.info("run summary\nno datasets were planned for this run")
            return {"datasets": 0, "failed": 0}
        summary = results.summarise(engine, run_id, planned, problems)
        log.info("run summary\n%s", summary.text)
        if not summary.failed:
            for ref in {r["run"] for r in refs}:
                store.delete(ref + "/")
    if summary.failed:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            f"{len(summary.failed)} of {len(planned)} dataset(s) failed: "
            f"{', '.join(summary.failed[:20])}{' …' if len(summary.failed) > 20 else ''}; "
            f"the other units were loaded")
    return summary.totals



# --- after the loads: reconciliation, the report site, timeliness ------------------------------


@private.private_files
def reconcile(ref: MappingABC[str, Any], context: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Compare every mapped dataset of the shard's units with the target (5.3) and keep the
    results in `ingest_reconcile` for the report. A difference is a finding for the report, not
    a task failure; a dataset whose source cannot be read is kept as `failed`."""
    from etl.report import reconcile as rec

    label = _label(context, ref["label"])
    states: dict[str, int] = {}
    differ: list[str] = []
    with _airflow_errors(label), _target_and_store() as (engine, store), _in_project():
        run, shard = _shard(store, ref)
        for unit in shard.units:
            if unit.problems:
                continue
            found = rec.reconcile(engine, unit.validated(), chunk_rows=chunk_rows())
            rec.save(engine, run.run_id, found)
            for r in found:
                states[r.state] = states.get(r.state, 0) + 1
                if r.state != "agree":
                    differ.append(f"{unit.name} {r.tx_code} {r.state}")
    log.info("%s: reconciled %s%s", label, ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
             ("; not in agreement: " + ", ".join(differ[:50]) + (" …" if len(differ) > 50 else ""))
             if differ else "")
    return {"label": ref["label"], **states}


def _units(share: tuple[int, int] = (0, 1)) -> list:
    from etl.report import freshness

    with _in_project():
        return freshness.load_units(mappings_dir(), cache_dir(), share=share)


def _reports_dir() -> Path:
    from etl.report import site

    out = site.reports_dir()
    return out if out.is_absolute() else project_dir() / out


@private.private_files
def build_report_pages(ref: MappingABC[str, Any], context: MutableMapping[str, Any] | None = None
                       ) -> dict[str, Any]:
    """Write a share of the report's unit pages, while other tasks write the others: those of
    every `of`-th mapping file from the shard's index (not the shard's units: every mapping
    file has a page). Returns what it wrote, for `build_report`, which completes the site."""
    from etl.report import site

    label = _label(context, f"{ref['shard'] + 1}/{ref['of']}")
    with _airflow_errors(f"report pages {label}"):
        units = _units((ref["shard"], ref["of"]))
        with _target_and_store() as (engine, _store):
            pages = site.build_pages(engine, units, _reports_dir())
    log.info("report pages %s: %d unit page(s) written, %d not built", label, len(pages.built),
             len(pages.failed))
    return pages.to_dict()


@private.private_files
def build_report(context: MutableMapping[str, Any] | None = None,
                 parts: Sequence[MappingABC[str, Any] | None] | None = None) -> str:
    """Refresh the report site (`ETL_REPORTS_DIR`, default var/report under the project) from
    the target's bookkeeping tables and the mapping files. `parts` are what `build_report_pages`
    tasks wrote: those unit pages are not written again; any other unit's page is (a share whose
    task failed, or none: nothing was due)."""
    from etl.report import site

    out = _reports_dir()
    units = _units()
    # one slice, one request: Airflow's lazy sequence fetches items one by one when iterated,
    # and logs an error for the one past the end
    shares = [site.Pages.of(dict(p)) for p in (parts[:] if parts is not None else []) if p]
    with _target_and_store() as (engine, _store):
        built = site.build(engine, units, out, parts=shares)
    for failure in built.failed:  # logged, not raised: the rest of the site is current
        log.error("report: %s", failure.line())
    if built.kept:
        log.warning("report: kept %d file(s) in %s/units that etl report did not write: %s",
                    len(built.kept), out, site.visible(", ".join(built.kept[:site.KEPT_SHOWN])))
    log.info("report site refreshed: %s (%d units, %d by %d share task(s); %d page(s) not built)",
             built.index, len(units), sum(len(p.built) for p in shares), len(shares), len(built.failed))
    return str(built.index)


def freshness_statuses() -> list:
    """Every mapped unit's datasets' timeliness as of now, the most urgent first."""
    from etl.report import freshness

    with _target_and_store() as (engine, _store):
        return sorted(freshness.statuses(engine, _units()), key=freshness.sort_key)


@private.private_files
def check_freshness(context: MutableMapping[str, Any] | None = None) -> dict[str, int]:
    """Every unit's datasets on time, late, failing, never loaded or pending (4.2, 5.4), as of
    now: the data's age is the question, whenever the run was scheduled. Fail, so that the
    freshness DAG's alerting fires, when any mapped unit's dataset is late, failing or never
    loaded; a pending one (first load not due yet) is not an alarm."""
    from etl.report import freshness
    from etl.report import text as report

    found = freshness_statuses()
    counts = {s: sum(1 for x in found if x.status == s) for s in freshness.STATUSES}
    bad = [s for s in found if freshness.needs_attention(s)]
    log.info("freshness\n%s", report.freshness(found))
    if bad:
        from airflow.sdk.exceptions import AirflowFailException

        names = ", ".join(f"{s.mapping or s.org_no} {s.tx_code} {s.status}" for s in bad[:20])
        raise AirflowFailException(f"{len(bad)} dataset(s) late, failing or never loaded: {names}"
                                   f"{' …' if len(bad) > 20 else ''}; see the report site")
    return counts
