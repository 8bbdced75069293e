"""The bodies of the Airflow tasks in `dags/dual_prevention.py`.

Airflow runs each task in its own process, possibly on another machine, so nothing here is
kept in memory between tasks: a task rebuilds the pipeline's `Plan` from small serialisable
arguments (mapping path, txCode, mode, window as ISO strings, run id, `now`), data moves between
tasks as Parquet files in a staging folder, and XCom carries only small manifests (paths and
counts). The stages are the pipeline's own (`plan`, `extract_chunks`, `prepare`, `load`), so a
DAG run and `etl run` write exactly the same target rows.

Errors: an `EtlError` that is not transient (invalid mapping, missing table, bad configuration)
becomes `AirflowFailException`, so Airflow fails the task at once instead of retrying; transient
ones (a source that went away, a target that rolled back) are raised as they are and retried
with backoff.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import pickle
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Mapping as MappingABC, MutableMapping
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from etl import clock, standard
from etl.errors import ConfigError, EtlError, MappingError

log = logging.getLogger("etl")

#: How often the "frequent" DAG ticks; `hourly` and `Nmin` frequency overrides run on it.
TICK_MINUTES = 5
FREQUENCIES = ("daily", "weekly", "frequent")
TARGET_CONN_ID = "etl_target"
MODES = ("incremental", "full")


# --- where things are -----------------------------------------------------------------------


def project_dir() -> Path:
    """The folder relative paths are resolved against (`ETL_HOME`, default the project root,
    which is where `etl demo` and the demo mappings' `sqlite:///var/...` URLs expect to run)."""
    return Path(os.environ.get("ETL_HOME") or Path(__file__).resolve().parents[1])


def mappings_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    folder = Path(explicit or os.environ.get("ETL_MAPPINGS_DIR") or "mappings")
    return folder if folder.is_absolute() else project_dir() / folder


def staging_dir() -> Path:
    folder = Path(os.environ.get("ETL_STAGING_DIR") or "var/staging")
    return folder if folder.is_absolute() else project_dir() / folder


def chunk_rows() -> int:
    from etl.extract import DEFAULT_CHUNK_ROWS

    return int(os.environ.get("ETL_CHUNK_ROWS") or DEFAULT_CHUNK_ROWS)


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


# --- credentials ------------------------------------------------------------------------------


def mask(secret: str | None) -> None:
    """Register a secret with Airflow's masker, so task logs show *** instead."""
    if not secret:
        return
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - airflow is a dependency
        return
    mask_secret(secret)


def _airflow_connection_uri(conn_id: str) -> str | None:
    """The URI of an Airflow connection, or None when no such connection is defined."""
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # pragma: no cover
        return None
    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    mask(conn.password)
    return conn.get_uri()


def target_url() -> str:
    """The Airflow connection `etl_target` if defined, else `ETL_TARGET_URL`, else the default
    SQLite file under the project folder."""
    from sqlalchemy.engine import make_url

    url = (_airflow_connection_uri(TARGET_CONN_ID) or os.environ.get("ETL_TARGET_URL")
           or f"sqlite:///{project_dir() / 'var' / 'target.sqlite'}")
    try:
        mask(make_url(url).password)
    except Exception:  # an unparsable URL fails in target.connect with a clear message
        pass
    return url


@contextmanager
def _target():
    from etl import target

    engine = target.connect(target_url())
    try:
        yield engine
    finally:
        engine.dispose()


# --- errors ------------------------------------------------------------------------------------


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


def _fail(message: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


# --- planning --------------------------------------------------------------------------------


def _parse_moment(value: Any, name: str) -> datetime | None:
    """A window bound from a param (ISO 8601; CST unless it carries an offset)."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return clock.to_cst(value)
    try:
        return clock.to_cst(datetime.fromisoformat(str(value).strip()))
    except ValueError:
        raise ConfigError(f"param {name}={value!r} is not an ISO 8601 date or time: "
                          f"use e.g. 2025-03-01 or 2025-03-01T08:00:00+08:00") from None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _period_minutes(frequency: str) -> int | None:
    """Minutes between runs of an `hourly` / `Nmin` override on the frequent DAG (a multiple of
    its tick); None for daily and weekly."""
    if frequency == "hourly":
        return 60
    m = re.fullmatch(r"(\d+)min", frequency)
    if not m:
        return None
    return max(TICK_MINUTES, math.ceil(int(m.group(1)) / TICK_MINUTES) * TICK_MINUTES)


def _dag_frequency(frequency: str) -> str:
    return frequency if frequency in ("daily", "weekly") else "frequent"


def context_args(context: MappingABC[str, Any]) -> dict[str, Any]:
    """What the planning needs from an Airflow task context, as plain values."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    dag_run = context.get("dag_run")
    return {
        "params": dict(context.get("params") or {}),
        "interval": (start, end) if start is not None and end is not None else None,
        "dag_id": getattr(context.get("dag"), "dag_id", None) or getattr(dag_run, "dag_id", "dag"),
        "run_id": context.get("run_id") or getattr(dag_run, "run_id", "run"),
    }


def units_for(frequency: str, *, wave: int = 0, mappings: str | os.PathLike[str] | None = None,
              params: MappingABC[str, Any] | None = None,
              interval: tuple[datetime, datetime] | None = None, dag_id: str = "dual_prevention",
              run_id: str = "manual", now: datetime | None = None) -> list[dict[str, Any]]:
    """The (mapping file, txCode) pairs one DAG run ingests, as small dicts for `.expand()`.

    `frequency` is the DAG's: `daily` and `weekly` take each dataset at the standard's frequency
    (5.4) unless its mapping overrides it; `frequent` takes the `hourly` / `Nmin` overrides that
    are due at the end of this tick. Wave 0 holds every dataset another one of the same unit
    refers to, and the rest; wave 1 the datasets that refer to a dataset of wave 0 (03 to 02,
    07 to 06), so they are validated against what this run loaded. A mapping that does not
    validate becomes one item of wave 0 whose extract task fails with the problems listed.

    Windows: `params.since` / `params.until` when given, else the run's data interval (scheduled
    runs, backfills, `dag.test` with a logical date), else (a manual run without logical date)
    from where the last successful run stopped until now.
    """
    from etl.mapping import discover, load_mapping

    if frequency not in FREQUENCIES:
        raise ValueError(f"frequency must be one of {FREQUENCIES}, not {frequency!r}")
    params = dict(params or {})
    now = clock.to_cst(now or clock.now())
    with _airflow_errors(f"{dag_id} params"):
        mode = params.get("mode") or "incremental"
        if mode not in MODES:
            raise ConfigError(f"param mode={mode!r}: use incremental or full")
        wanted_tx = [standard.dataset(c).tx_code for c in (params.get("tx_codes") or [])]
        since = _parse_moment(params.get("since"), "since")
        until = _parse_moment(params.get("until"), "until")
        folder = mappings_dir(mappings)
        with _in_project():
            paths = discover(folder)
        wanted_units = [str(u).strip() for u in params.get("units") or [] if str(u).strip()]
        stems = {p.stem: p for p in paths}
        unknown = [u for u in wanted_units if u not in stems]
        if unknown:
            raise ConfigError(f"param units: no mapping file {', '.join(unknown)} in {folder}; "
                              f"units are {', '.join(sorted(stems)) or '(none)'}")
        if wanted_units:
            paths = [stems[u] for u in wanted_units]
    if not paths:
        log.warning("no mapping files in %s: nothing to ingest", folder)
    tick_end = None  # the end of the data interval, when the run has one and params don't override it
    if since is None and until is None and interval is not None and interval[0] < interval[1]:
        since, until = clock.to_cst(interval[0]), clock.to_cst(interval[1])
        tick_end = until

    selected: list[tuple[Path, str, str | None, str | None]] = []
    invalid: list[tuple[Path, str]] = []
    for path in paths:
        try:
            with _in_project():
                mapping = load_mapping(path)
        except MappingError as e:
            log.error("%s", e)
            invalid.append((path, str(e)))
            continue
        for tx, spec in mapping.datasets.items():
            freq = spec.frequency or standard.dataset(tx).frequency
            if _dag_frequency(freq) != frequency or (wanted_tx and tx not in wanted_tx):
                continue
            item_since, item_until = since, until
            if frequency == "frequent":
                period = _period_minutes(freq)
                assert period is not None
                if tick_end is not None:  # else: a manual run takes every override
                    if int(tick_end.timestamp() // 60) % period:
                        continue  # not due at this tick
                    item_since, item_until = tick_end - timedelta(minutes=period), tick_end
            selected.append((path, tx, _iso(item_since), _iso(item_until)))
    if wanted_tx and not selected and paths:
        log.warning("none of txCodes %s runs %s here: each dataset runs on the DAG of its "
                    "frequency (the standard's 5.4, or the mapping's frequency:)", wanted_tx, frequency)

    chosen = {(path, tx) for path, tx, *_ in selected}

    def wave_of(path: Path, tx: str) -> int:
        refs = [r.tx_code for r in standard.dataset(tx).references]
        return 1 if any((path, r) in chosen for r in refs) else 0

    common = {"mode": mode, "run_id": f"airflow__{dag_id}__{run_id}", "now": now.isoformat(),
              "dag_id": dag_id, "airflow_run_id": run_id}
    items = [{"label": f"{path.stem} {tx}", "mapping": str(path), "tx": tx, "since": s,
              "until": u, **common}
             for path, tx, s, u in selected if wave_of(path, tx) == wave]
    if wave == 0 and frequency != "frequent":
        items += [{"label": f"{path.stem} (invalid mapping)", "mapping": str(path), "tx": None,
                   "since": None, "until": None, "problems": problems[:2000], **common}
                  for path, problems in invalid]
    log.info("%s wave %d: %d dataset(s): %s", frequency, wave, len(items),
             ", ".join(i["label"] for i in items) or "(none)")
    return items


# --- Parquet staging ---------------------------------------------------------------------------

_ENCODED = b"etl.encoded_columns"
# Object columns holding only these pass through Arrow unchanged (values and their Python types).
_NATIVE = {"string", "empty", "date", "boolean", "bytes"}


def _encode(value: Any) -> str | None:
    """One cell of a mixed-type column, with its Python type, as compact JSON."""
    if value is None:
        return None
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    if isinstance(value, bool):
        tagged = ["b", value]
    elif isinstance(value, int):
        tagged = ["i", str(value)]
    elif isinstance(value, float):
        tagged = ["f", repr(value)]
    elif isinstance(value, str):
        tagged = ["s", value]
    elif isinstance(value, Decimal):
        tagged = ["d", str(value)]
    elif isinstance(value, datetime) and type(value) is datetime:
        tagged = ["dt", value.isoformat()]
    elif isinstance(value, date) and type(value) is date:
        tagged = ["da", value.isoformat()]
    elif isinstance(value, time):
        tagged = ["t", value.isoformat()]
    elif isinstance(value, (bytes, bytearray, memoryview)):
        tagged = ["x", bytes(value).hex()]
    else:  # pandas Timestamp, NaT, anything else: exact, if opaque
        tagged = ["p", base64.b64encode(pickle.dumps(value)).decode()]
    return json.dumps(tagged, ensure_ascii=False, separators=(",", ":"))


def _decode(text: str | None) -> Any:
    if text is None:
        return None
    tag, v = json.loads(text)
    return {
        "b": lambda: v, "s": lambda: v, "i": lambda: int(v), "f": lambda: float(v),
        "d": lambda: Decimal(v), "dt": lambda: datetime.fromisoformat(v),
        "da": lambda: date.fromisoformat(v), "t": lambda: time.fromisoformat(v),
        "x": lambda: bytes.fromhex(v), "p": lambda: pickle.loads(base64.b64decode(v)),
    }[tag]()


def write_frame(frame, path: Path) -> None:
    """Write a DataFrame to Parquet so that `read_frame` gives back the same values.

    Source columns often mix types (SQLite text dates next to YYYYMMDD integers, Decimals of
    varying scale): Arrow would refuse or coerce them, which would change what cleaning sees and
    so the record hashes. Such columns are stored as typed JSON text and decoded on reading."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = frame.copy(deep=False)
    encoded = []
    for name in data.columns:
        col = data[name]
        if col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) not in _NATIVE:
            data[name] = col.map(_encode, na_action=None).astype(object)
            encoded.append(str(name))
    table = pa.Table.from_pandas(data, preserve_index=None)
    meta = dict(table.schema.metadata or {})
    meta[_ENCODED] = json.dumps(encoded).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table.replace_schema_metadata(meta), tmp)
    tmp.replace(path)


def read_frame(path: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    encoded = json.loads((table.schema.metadata or {}).get(_ENCODED, b"[]"))
    frame = table.to_pandas()
    for name in encoded:
        frame[name] = frame[name].map(_decode, na_action="ignore").astype(object)
    return frame


def _stage_folder(item: MappingABC[str, Any]) -> Path:
    def safe(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"

    return (staging_dir() / safe(item["dag_id"]) / safe(item["airflow_run_id"])
            / safe(Path(item["mapping"]).stem) / (item["tx"] or "mapping"))


# --- the plan, across processes ----------------------------------------------------------------


def _plan_args(p) -> dict[str, Any]:
    """A Plan without its mapping, as JSON-able values (datetimes tagged)."""
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


def _load_mapping(item: MappingABC[str, Any]):
    from etl.mapping import load_mapping

    with _in_project():
        mapping = load_mapping(item["mapping"])
    if item["tx"] not in mapping.datasets:
        raise MappingError([f"{item['mapping']} [datasets] txCode {item['tx']} is no longer in "
                            f"this mapping: rerun the DAG so it plans afresh"])
    return mapping


def _label(context: MutableMapping[str, Any] | None, item: MappingABC[str, Any]) -> str:
    if context is not None:
        context["label"] = item["label"]  # the map index's name in the UI (map_index_template)
    return item["label"]


# --- the three stages ---------------------------------------------------------------------------


def extract_to_parquet(item: MappingABC[str, Any], context: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Read the dataset's source rows (within the window) into raw Parquet chunks."""
    from etl import pipeline

    label = _label(context, item)
    with _airflow_errors(label):
        if item.get("tx") is None:  # planned from a mapping that did not validate
            from etl.mapping import load_mapping

            with _in_project():
                load_mapping(item["mapping"])  # raises MappingError with every problem
            raise MappingError([f"{item['mapping']}: did not validate when the run was planned "
                                f"but does now; rerun the DAG"])
        mapping = _load_mapping(item)
        with _target() as engine, _in_project():
            p = pipeline.plan(engine, mapping, item["tx"], mode=item["mode"],
                              since=_parse_moment(item["since"], "since"),
                              until=_parse_moment(item["until"], "until"),
                              run_id=item["run_id"], now=datetime.fromisoformat(item["now"]))
        folder = _stage_folder(item)
        shutil.rmtree(folder, ignore_errors=True)  # a retry starts clean
        folder.mkdir(parents=True)
        files, rows = [], 0
        with _in_project():
            for n, raw in enumerate(pipeline.extract_chunks(p, chunk_rows())):
                name = f"raw-{n:05d}.parquet"
                write_frame(raw, folder / name)
                files.append(name)
                rows += len(raw)
    window = f" window [{p.since}, {p.until})" if p.mode == "incremental" else ""
    log.info("%s: %d source rows extracted (%s%s) into %s", label, rows, p.mode, window, folder)
    return {"label": label, "mapping": item["mapping"], "tx": item["tx"], "plan": _plan_args(p),
            "stage": str(folder), "raw": files, "rows": rows}


def validate_parquet(staged: MappingABC[str, Any], context: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Map, clean and validate each raw chunk into a prepared chunk, its findings and the
    cleaning audit (JSON), against the references the target holds now."""
    from etl import pipeline, validate
    from etl.clean import Audit

    label = _label(context, staged)
    folder = Path(staged["stage"])
    with _airflow_errors(label):
        mapping = _load_mapping(staged)
        p = _rebuild_plan(mapping, staged["plan"])
        audit = Audit()
        prepared, findings, rows, errors = [], [], 0, 0
        for n, name in enumerate(staged["raw"]):
            chunk = pipeline.prepare(_read_staged(folder / name, label), p, audit)
            prepared.append(f"prepared-{n:05d}.parquet")
            findings.append(f"findings-{n:05d}.parquet")
            write_frame(chunk.frame, folder / prepared[-1])
            write_frame(chunk.findings, folder / findings[-1])
            rows += len(chunk.frame)
            errors += int((chunk.findings["severity"] == validate.ERROR).sum())
        (folder / "audit.json").write_text(json.dumps(audit.rows(), ensure_ascii=False), encoding="utf-8")
    log.info("%s: %d rows prepared, %d error finding(s)", label, rows, errors)
    return {**{k: staged[k] for k in ("label", "mapping", "tx", "plan", "stage")},
            "prepared": prepared, "findings": findings, "audit": "audit.json", "rows": rows,
            "errors": errors}


def _read_staged(path: Path, label: str):
    if not path.is_file():
        raise ConfigError(f"{label}: staging file {path} is gone (cleaned up after a load?): "
                          f"clear this unit's extract task too, so it stages afresh")
    return read_frame(path)


def _audit_from_json(path: Path):
    from etl.clean import Audit

    audit = Audit()
    for row in json.loads(path.read_text(encoding="utf-8")):
        audit.add(row["field"], row["rule"], row["count"], [tuple(e) for e in row["examples"]])
    return audit


def load_parquet(staged: MappingABC[str, Any], context: MutableMapping[str, Any] | None = None) -> dict[str, Any]:
    """Load every prepared chunk in one target transaction (`pipeline.load`), then remove the
    staging folder. A failure rolls the dataset back and keeps the files for the retry."""
    from etl import pipeline

    label = _label(context, staged)
    folder = Path(staged["stage"])
    with _airflow_errors(label):
        mapping = _load_mapping(staged)
        p = _rebuild_plan(mapping, staged["plan"])
        audit = _audit_from_json(folder / staged["audit"])

        def chunks() -> Iterator[Any]:
            for frame_name, findings_name in zip(staged["prepared"], staged["findings"], strict=True):
                yield pipeline.Prepared(_read_staged(folder / frame_name, label),
                                        _read_staged(folder / findings_name, label))

        with _target() as engine:
            log.info("%s: loading into %s", label, engine.url.render_as_string(hide_password=True))
            result = pipeline.load_checked(engine, p, lambda: (chunks(), audit))
    shutil.rmtree(folder, ignore_errors=True)
    _prune(folder.parent)
    out = result_to_dict(result, label)
    c = out["counts"]
    log.info("%s: %s; inserted %d, updated %d, deleted %d, unchanged %d, rejected %d",
             label, result.status, c["inserted"], c["updated"], c["deleted"], c["unchanged"],
             c["rejected"])
    return out


def _prune(folder: Path) -> None:
    """Remove empty staging folders up to the staging root."""
    root = staging_dir().resolve()
    folder = folder.resolve()
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


# --- results ---------------------------------------------------------------------------------------


def result_to_dict(result, label: str | None = None) -> dict[str, Any]:
    """A DatasetResult as a small JSON-able dict (an XCom value)."""
    return {"label": label or f"{result.mapping} {result.tx_code}", "mapping": result.mapping,
            "org_no": result.org_no, "tx": result.tx_code, "mode": result.mode,
            "status": result.status, "counts": asdict(result.counts),
            "window": [_iso(w) for w in result.window], "message": result.message,
            "reasons": dict(result.reasons)}


def result_from_dict(d: MappingABC[str, Any]):
    from etl.load import Counts
    from etl.pipeline import DatasetResult

    window = tuple(datetime.fromisoformat(w) if w else None for w in d.get("window") or (None, None))
    return DatasetResult(d["mapping"], d.get("org_no", ""), d["tx"], d.get("mode", ""),
                         status=d.get("status", "failed"), counts=Counts(**d.get("counts", {})),
                         window=window, message=d.get("message", ""),
                         reasons=Counter(d.get("reasons") or {}))


def _as_list(value: Any) -> list:
    """XCom of a mapped task as a list: Airflow hands a single mapped result over as the bare
    value, a skipped or failed group as None."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return list(value)


def summarise(planned: list[list[dict[str, Any]] | None],
              results: list[list[dict[str, Any]] | None]) -> dict[str, Any]:
    """Log the run's summary (counts per dataset, top reject reasons) and fail the run, after
    logging, when any planned dataset has no result: the failed unit's own task says why."""
    from etl import report

    unplanned = sum(1 for group in planned if group is None)  # a planning task failed
    items = [i for group in planned for i in _as_list(group)]
    done = [r for group in results for r in _as_list(group) if r]
    by_label = {r["label"]: r for r in done}
    missing = [i for i in items if i["label"] not in by_label]
    shown = [result_from_dict(r) for r in done]
    shown += [result_from_dict({"mapping": Path(i["mapping"]).stem, "tx": i["tx"], "mode": i["mode"],
                                "status": "failed",
                                "message": "no result: see the log of its failed task "
                                           f"(map index {i['label']!r})"})
              for i in missing if i["tx"]]
    shown.sort(key=lambda r: (r.mapping, r.tx_code))
    lines = [report.run_summary(shown)] if shown else ["no datasets were planned for this run"]
    lines += [f"FAILED {i['label']}: {i.get('problems') or 'the mapping did not validate'}"
              for i in missing if not i["tx"]]
    text = "\n".join(lines)
    log.info("run summary\n%s", text)
    if unplanned:
        _fail("planning failed (plan_units or plan_referencing): see its log")
    if missing:
        _fail(f"{len(missing)} of {len(items)} dataset(s) failed: "
              f"{', '.join(i['label'] for i in missing)}; the other units were loaded")
    return {"datasets": len(items), "failed": len(missing),
            "inserted": sum(r.counts.inserted for r in shown),
            "updated": sum(r.counts.updated for r in shown),
            "deleted": sum(r.counts.deleted for r in shown),
            "rejected": sum(r.counts.rejected for r in shown)}
