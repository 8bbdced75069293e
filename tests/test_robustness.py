"""What lands in the target is complete and never duplicated, whatever fails: SIGKILL at
several points of a load, and eight loaders at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from helpers import hidden_danger_mapping_text, hidden_danger_row, org_no, rows_of, write_source

ROWS = 3000


def make_unit(tmp_path: Path, n: int, source_url: str, rows: int = ROWS) -> tuple[Path, dict]:
    org = org_no(f"9132011{n}MA1R7KX3{n}")
    table = f"t_hd_{n}"
    write_source(source_url, table, [hidden_danger_row(i, task_no=f"YH{n}{i:07d}") for i in range(1, rows + 1)])
    env = f"UNIT_{n}_SOURCE_URL"
    path = tmp_path / f"unit{n}.yaml"
    path.write_text(hidden_danger_mapping_text(org, env, table), encoding="utf-8")
    return path, {env: source_url}


def etl(args: list[str], env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "etl", "-v", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def target_state(url: str) -> dict:
    """The target's content that must not depend on how many attempts it took."""
    return {
        "rows": sorted((r["ID"], r["batchNo"], r["busType"], r["rowHash"])
                       for r in rows_of(url, "hidden_danger")),
        "batches": sorted((r["batchNo"], r["busType"], r["records"]) for r in rows_of(url, "ingest_batch")),
        "changes": sorted((r["batchNo"], r["ID"], r["busType"]) for r in rows_of(url, "ingest_change")),
        "runs": [(r["status"], r["inserted"]) for r in rows_of(url, "ingest_run") if r["status"] == "success"],
    }


# Each blocker holds a lock on what the loader writes at one point of its transaction, so the
# loader is provably stopped there (waiting on the lock) when it is killed.
BLOCKERS = {
    "batch allocation": "SELECT * FROM ingest_batch_seq FOR UPDATE",
    "applying rows": 'LOCK TABLE hidden_danger IN EXCLUSIVE MODE',
    "writing the ledger": "LOCK TABLE ingest_change IN EXCLUSIVE MODE",
    "recording the run": "LOCK TABLE ingest_run IN EXCLUSIVE MODE",
}


def _wait_until_blocked(admin: sa.engine.Connection, proc: subprocess.Popen, point: str,
                        timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = admin.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()")).scalar_one()
        admin.rollback()  # pg_stat_activity is a per-transaction snapshot
        if n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the loader ended before {point}: {proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"the loader never blocked at {point}")


@pytest.mark.parametrize("point", list(BLOCKERS))
def test_sigkill_at_any_point_then_rerun_equals_one_clean_run(point, pg_server, tmp_path):
    from servers import create_database, drop_database

    from etl import target

    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    mapping, env = make_unit(tmp_path, 1, source)
    killed_url, clean_url = create_database(pg_server), create_database(pg_server)
    try:
        for url in (killed_url, clean_url):
            e = target.connect(url)
            target.upgrade(e)
            e.dispose()
        # seed the day's counter row so FOR UPDATE has a row to hold
        subprocess.run([sys.executable, "-m", "etl", "-q", "run", str(mapping), "--target", killed_url],
                       env={**os.environ, **env}, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "etl", "-q", "run", str(mapping), "--target", clean_url],
                       env={**os.environ, **env}, check=True, capture_output=True)
        # now change every row, so the next load has work at every point
        write_source(source, "t_hd_1", [hidden_danger_row(i, task_no=f"YH1{i:07d}", problem="复查")
                                        for i in range(1, ROWS + 1)])
        blocker = sa.create_engine(killed_url)
        with blocker.connect() as lock_conn, blocker.connect() as watch:
            lock_conn.begin()
            lock_conn.execute(sa.text(BLOCKERS[point]))
            proc = etl(["run", str(mapping), "--target", killed_url], env)
            try:
                _wait_until_blocked(watch, proc, point)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            lock_conn.rollback()
        blocker.dispose()
        assert proc.returncode == -signal.SIGKILL
        done = subprocess.run([sys.executable, "-m", "etl", "-q", "run", str(mapping), "--target", killed_url],
                              env={**os.environ, **env}, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        subprocess.run([sys.executable, "-m", "etl", "-q", "run", str(mapping), "--target", clean_url],
                       env={**os.environ, **env}, check=True, capture_output=True)
        assert target_state(killed_url) == target_state(clean_url)
    finally:
        drop_database(killed_url)
        drop_database(clean_url)


def _has_table(url: str, table: str) -> bool:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).has_table(table)
    finally:
        engine.dispose()


def test_sigkill_mid_load_on_sqlite_leaves_nothing_half_done(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    mapping, env = make_unit(tmp_path, 1, source, rows=20000)
    killed, clean = f"sqlite:///{tmp_path / 'killed.sqlite'}", f"sqlite:///{tmp_path / 'clean.sqlite'}"
    for delay in (0.5, 1.5, 3.0):
        proc = etl(["run", str(mapping), "--target", killed], env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # killed before the schema existed (the private target file is created first): nothing
        rows = rows_of(killed, "hidden_danger") if _has_table(killed, "hidden_danger") else []
        assert len(rows) in (0, 20000)  # all or nothing
    for url in (killed, clean):
        subprocess.run([sys.executable, "-m", "etl", "-q", "run", str(mapping), "--target", url],
                       env={**os.environ, **env}, check=True, capture_output=True)
    assert target_state(killed)["rows"] == target_state(clean)["rows"]
    assert target_state(killed)["batches"] == target_state(clean)["batches"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_eight_loaders_at_once_get_unique_ordered_batch_numbers(kind, request, tmp_path):
    url = request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "pg_url",
                                   "mariadb": "mariadb_url"}[kind])
    from etl import target

    e = target.connect(url)
    target.upgrade(e)
    e.dispose()
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    units = [make_unit(tmp_path, n, source, rows=500) for n in range(1, 9)]
    env = {k: v for _, e_ in units for k, v in e_.items()}
    procs = [etl(["run", str(p), "--target", url], env) for p, _ in units]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, "\n".join(outputs)
    batches = rows_of(url, "ingest_batch")
    numbers = sorted(b["batchNo"] for b in batches)
    assert len(numbers) == 8 == len(set(numbers))
    day = numbers[0][:8]
    assert numbers == [f"{day}{i:08d}" for i in range(1, 9)]  # no gaps, no collisions
    by_time = [b["batchNo"] for b in sorted(batches, key=lambda b: (b["createdAt"], b["batchNo"]))]
    assert len(rows_of(url, "hidden_danger")) == 8 * 500
    assert by_time  # every unit's batch was recorded with its time
