"""What finding hard deletes costs a daily incremental run (issue 21).

    uv run python benchmarks/sweep.py [--rows 150000] [--changed 60] [--deleted 10] [--rounds 5]

A unit's hidden dangers (txCode 09, `source.py`'s generated rows) in a throwaway PostgreSQL
source, loaded in full into a PostgreSQL target. Then, each round (a day): `--changed` rows get
a new update time and `--deleted` other rows are deleted at the source, and the day's
incremental run is timed twice on the same target (restored in between):

  without   `hard_deletes: never`: reads the window only (today's behaviour before issue 21)
  with      `hard_deletes: each_run` (the default): also reads every key and marks the
            vanished records D

It prints each run's time, the medians, the difference (the cost of the comparison), the key
read alone (`pipeline.key_chunks`: source read and record IDs) and the ratio with/without.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import sqlalchemy as sa  # noqa: E402

import source  # noqa: E402

ENV = "BENCH_SWEEP_SOURCE_URL"


def _mapping(directory: Path, setting: str) -> Path:
    return source.write_mapping(directory, source.org_no(1), ENV, hard_deletes=setting,
                                file_name=f"{setting}.yaml")


def _change(src: sa.Engine, rows: int, changed: int, deleted: int, round_no: int,
            stamp: datetime) -> None:
    """`changed` rows touched today, `deleted` others deleted, different rows each round."""
    with src.begin() as conn:
        first = (round_no * (changed + deleted) * 37) % max(1, rows // 2)
        conn.execute(sa.text(f"UPDATE {source.TABLE} SET modify_time = :t, problem = problem || '（复查）' "
                             f"WHERE id IN (SELECT id FROM {source.TABLE} ORDER BY id OFFSET :o LIMIT :n)"),
                     {"t": stamp, "o": first, "n": changed})
        conn.execute(sa.text(f"DELETE FROM {source.TABLE} WHERE id IN "
                             f"(SELECT id FROM {source.TABLE} ORDER BY id OFFSET :o LIMIT :n)"),
                     {"o": first + changed, "n": deleted})


def _snapshot(url: str, save: bool) -> None:
    """Keep (or bring back) the target's dataset and bookkeeping tables, so both runs of a
    round start from the same target."""
    tables = ("hidden_danger", "ingest_run", "ingest_batch", "ingest_batch_seq", "ingest_change",
              "ingest_reject", "ingest_audit")
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for t in tables:
            if save:
                conn.exec_driver_sql(f'DROP TABLE IF EXISTS "keep_{t}"')
                conn.exec_driver_sql(f'CREATE TABLE "keep_{t}" AS SELECT * FROM "{t}"')
            else:
                conn.exec_driver_sql(f'TRUNCATE "{t}"')
                conn.exec_driver_sql(f'INSERT INTO "{t}" SELECT * FROM "keep_{t}"')
        conn.exec_driver_sql("VACUUM ANALYZE hidden_danger")
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=150_000)
    ap.add_argument("--changed", type=int, default=60)
    ap.add_argument("--deleted", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)

    import os

    from etl import pipeline, target
    from etl.common import clock
    from etl.mapping import load_mapping
    from tests.servers import create_database, start_postgres

    src_server, tgt_server = start_postgres(), start_postgres()
    try:
        source_url = create_database(src_server.admin_url, "sweep_source")
        target_url = create_database(tgt_server.admin_url, "sweep_target")
        os.environ[ENV] = source_url
        work = Path(tempfile.mkdtemp(prefix="etl-sweep-"))
        mappings = {s: load_mapping(_mapping(work, s)) for s in ("never", "each_run")}
        src = sa.create_engine(source_url, isolation_level="AUTOCOMMIT")
        with src.connect() as conn:
            source.create(conn, args.rows)
        engine = target.connect(target_url)
        now = clock.now()
        full = pipeline.run_dataset(engine, mappings["never"], "09", mode="full", now=now)
        print(f"{args.rows:,} source rows; full load: {full.counts.inserted:,} records", flush=True)

        times: dict[str, list[float]] = {"without": [], "with": []}
        key_reads: list[float] = []
        for n in range(1, args.rounds + 1):
            day = now + timedelta(days=n)
            _change(src, args.rows, args.changed, args.deleted, n,
                    clock.naive(day - timedelta(hours=2)))
            _snapshot(target_url, save=True)
            for case in ("without", "with"):  # "with" last: it leaves the target as the day does
                _snapshot(target_url, save=False)
                m = mappings["never" if case == "without" else "each_run"]
                t0 = time.perf_counter()
                r = pipeline.run_dataset(engine, m, "09", mode="incremental", now=day)
                times[case].append(time.perf_counter() - t0)
                c = r.counts
                print(f"round {n} {case:7}: {times[case][-1]:.3f} s  extracted {c.extracted}, "
                      f"updated {c.updated}, deleted {c.deleted}, keys compared {r.swept}",
                      flush=True)
            p = pipeline.plan(engine, mappings["each_run"], "09", mode="full", now=day)
            t0 = time.perf_counter()
            keys = sum(len(ids) for ids in pipeline.key_chunks(p))
            key_reads.append(time.perf_counter() - t0)
        without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"\nmedians over {args.rounds} rounds, {args.rows:,} rows, {args.changed} changed, "
              f"{args.deleted} deleted a day:")
        print(f"  incremental without the comparison  {without:.3f} s")
        print(f"  incremental with the comparison     {with_:.3f} s  ({with_ / without:.1f}x)")
        print(f"  cost of the comparison              {with_ - without:.3f} s")
        print(f"  of which reading {keys:,} keys and their IDs  {statistics.median(key_reads):.3f} s")
        engine.dispose()
    finally:
        src_server.stop()
        tgt_server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
