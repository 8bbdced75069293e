"""What each benchmark case does, run in a fresh child process of `run.py` so that its peak
RSS is its own. Every case reads the shared state file (URLs, mapping paths) and returns a
dict with at least `seconds` (the timed work only: imports and connecting happen first) and
`rows`.
"""

from __future__ import annotations

import collections
import functools
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

import source

Result = dict[str, Any]

# The target-shaped projection of the source that cases 1 and 2 move: the same 21 columns as
# `hidden_danger`, values as they are (no cleaning, no validation, no digest but md5 in SQL).
PROJECTION = """
SELECT '{org}09' || md5(id::text) AS "ID", to_char(current_date, 'YYYYMMDD') || '00000001' AS "batchNo",
       '09' AS "txCode", 'I' AS "busType", current_date AS "updateDate", '{org}' AS "orgNo",
       task_no AS "taskNo", left(reg_no, 20) AS "regNo", kind AS "troubleType",
       level AS "troubleLevel", problem AS "mainProblem", checker AS "checkMan",
       check_date AS "checkDate", limit_date AS "limitDate", deal_man AS "dealMan",
       deal_date AS "dealDate", deal_info AS "dealInfo", accept_man AS "acceptMan",
       accept_date AS "acceptDate", accept_info AS "acceptInfo", md5(id::text) AS "rowHash"
FROM {table}"""


def libpq_url(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


# --- 1. the physical limit ---------------------------------------------------------------------


def raw_copy(state: dict) -> Result:
    """COPY (SELECT ...) TO STDOUT from the source piped into COPY FROM STDIN of a copy of the
    target table (same columns, types and indexes): moving the bytes, nothing else."""
    sql = PROJECTION.format(org=state["org"], table=state["table"])
    with psycopg.connect(libpq_url(state["source_url"])) as src, \
            psycopg.connect(libpq_url(state["target_url"])) as tgt:
        def move() -> int:
            rows = 0
            with src.cursor().copy(f"COPY ({sql}) TO STDOUT") as out, \
                    tgt.cursor().copy("COPY bench_copy FROM STDIN") as into:
                for data in out:
                    into.write(data)
                    rows += 1
            tgt.commit()
            return rows

        seconds, rows = _timed(move)
    return {"seconds": seconds, "rows": rows}


# --- 2. the naive peer -------------------------------------------------------------------------


def pandas_peer(state: dict) -> Result:
    """What a pandas user writes first: `read_sql(chunksize=...)` on an Engine, `to_sql` with
    its defaults into a copy of the target table."""
    import pandas as pd

    sql = PROJECTION.format(org=state["org"], table=state["table"])
    src = sa.create_engine(state["source_url"])
    tgt = sa.create_engine(state["target_url"])

    def move() -> int:
        rows = 0
        for chunk in pd.read_sql(sa.text(sql), src, chunksize=100_000):
            chunk.to_sql("bench_pandas", tgt, if_exists="append", index=False)
            rows += len(chunk)
        return rows

    seconds, rows = _timed(move)
    return {"seconds": seconds, "rows": rows}


# --- 3-5. this pipeline ------------------------------------------------------------------------

_STAGES = (  # (module, function, label): where the pipeline's wall time goes
    ("pipeline", "extract_chunks", "extract (wait for next chunk)"),
    ("transform", "apply_mapping", "map"),
    ("pipeline", "clean_frame", "clean"),
    ("pipeline", "_timestamps", "timestamps"),
    ("pipeline", "_check_chunk", "validate"),
    ("transform", "add_identity", "identity"),
    ("DatasetLoad", "add", "stage"),
    ("DatasetLoad", "dedupe", "dedupe"),
    ("DatasetLoad", "diff", "diff"),
    ("DatasetLoad", "apply", "apply+ledger"),
    ("DatasetLoad", "_ledger", "ledger"),
    ("pipeline", "_record_findings", "findings"),
)


def _instrument() -> collections.Counter:
    """Wrap the pipeline's stage functions to sum their wall time (microseconds per call of
    overhead, a dozen calls per chunk)."""
    from etl.pipeline import run, transform  # the modules whose names the stages call
    from etl.target import load

    spent: collections.Counter = collections.Counter()
    owners = {"pipeline": run, "transform": transform, "DatasetLoad": load.DatasetLoad}

    def timed(fn: Callable, label: str) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.perf_counter() - started
        return wrapper

    def timed_iter(fn: Callable, label: str) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Iterator:
            it = iter(fn(*args, **kwargs))
            while True:
                started = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    spent[label] += time.perf_counter() - started
                yield item
        return wrapper

    for owner, name, label in _STAGES:
        obj = owners[owner]
        fn = getattr(obj, name)
        setattr(obj, name, (timed_iter if name == "extract_chunks" else timed)(fn, label))
    return spent


def _import_lazily_loaded() -> None:
    """Import what the pipeline imports on first use (Alembic for the schema check, pandera's
    pandas backends at the first validation), so that the timed span excludes imports as it
    says: they are a per-process cost (~1 s without compiled bytecode), not a per-run one."""
    import alembic.command  # noqa: F401
    import alembic.runtime.migration  # noqa: F401
    import pandera.backends.pandas.builtin_checks  # noqa: F401
    import pandera.backends.pandas.register  # noqa: F401


def _run(state: dict, mode: str, since: datetime | None = None, mapping: str | None = None,
         chunk_rows: int | None = None) -> tuple[float, Any, dict]:
    from etl import pipeline, target
    from etl.mapping import load_mapping

    _import_lazily_loaded()
    spent = _instrument()
    os.environ[state["env"]] = state["source_url"]
    m = load_mapping(Path(mapping or state["mapping"]))
    engine = target.connect(state["target_url"])
    kwargs: dict[str, Any] = {"mode": mode, "chunk_rows": chunk_rows or state["chunk_rows"]}
    if since is not None:
        kwargs["since"] = since
    seconds, result = _timed(lambda: pipeline.run_dataset(engine, m, "09", **kwargs))
    if result.status != "success":
        raise RuntimeError(f"{mode} run failed: {result.message}")
    return seconds, result, {k: round(v, 3) for k, v in spent.most_common()}


def _counts(result: Any) -> dict:
    c = result.counts
    return {k: getattr(c, k) for k in ("extracted", "inserted", "updated", "deleted", "unchanged",
                                       "rejected", "duplicates", "warnings")}


def full_load(state: dict) -> Result:
    seconds, result, stages = _run(state, "full")
    counts = _counts(result)
    if counts["inserted"] == 0:
        raise RuntimeError(f"the full load inserted nothing (target not empty?): {counts}")
    return {"seconds": seconds, "rows": counts["extracted"], "counts": counts, "stages": stages}


def rerun(state: dict) -> Result:
    seconds, result, stages = _run(state, "full")
    counts = _counts(result)
    if counts["inserted"] or counts["updated"]:
        raise RuntimeError(f"a rerun of unchanged data changed records: {counts}")
    return {"seconds": seconds, "rows": counts["extracted"], "counts": counts, "stages": stages}


def incremental(state: dict) -> Result:
    seconds, result, stages = _run(state, "incremental", since=datetime.fromisoformat(state["since"]))
    counts = _counts(result)
    return {"seconds": seconds, "rows": counts["extracted"], "counts": counts, "stages": stages}


# --- 6. many small units -----------------------------------------------------------------------


def units(state: dict) -> Result:
    """Every unit's mapping in turn, in one process, as `etl run --all` does: the per-unit
    time is the overhead the process adds around each unit's 1,000 rows."""
    from etl import pipeline, target
    from etl.mapping import load_mapping

    os.environ[state["env"]] = state["source_url"]
    engine = target.connect(state["target_url"])
    paths = sorted(Path(state["units_dir"]).glob("*.yaml"))
    times: list[float] = []
    rows = 0

    def all_units() -> None:
        nonlocal rows
        for path in paths:
            started = time.perf_counter()
            result = pipeline.run_dataset(engine, load_mapping(path), "09", mode="full")
            times.append(time.perf_counter() - started)
            if result.status != "success":
                raise RuntimeError(f"{path.name}: {result.message}")
            rows += result.counts.extracted

    seconds, _ = _timed(all_units)
    ordered = sorted(times)
    return {"seconds": seconds, "rows": rows, "units": len(times),
            "per_unit_median": ordered[len(ordered) // 2], "per_unit_first": times[0],
            "per_unit_p90": ordered[int(len(ordered) * 0.9)], "per_unit_max": ordered[-1]}


CASES: dict[str, Callable[[dict], Result]] = {
    "raw_copy": raw_copy, "pandas": pandas_peer, "full": full_load, "rerun": rerun,
    "incremental": incremental, "units": units,
}


def make_unit_sources(conn: sa.Connection, count: int, rows: int, directory: Path, env: str) -> None:
    """`count` source tables of `rows` rows and a mapping per unit (distinct orgNo)."""
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(1, count + 1):
        table = f"t_hd_unit{n:04d}"
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(source.DDL.format(table=table))
        conn.execute(sa.text(source.insert_sql(table, rows, first_id=n * 1_000_000)))
        source.write_mapping(directory, source.org_no(1000 + n), env, table=table,
                             name=f"第{n}家使用单位")
