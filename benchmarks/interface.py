"""Issue 27: the interface route over HTTPS with 50 concurrent clients, beside the database route
loading the same records, in the same run.

    uv run python benchmarks/interface.py [--units 20] [--messages 10] [--records 100]
                                          [--clients 50] [--target sqlite|pg]

1. A fresh target (a SQLite file; with `--target pg` a database on a throwaway PostgreSQL server,
   `tests/servers.py`); `--units` units get credentials (`etl.interface.apps.add`, as `etl apps
   add`); a CA and a server certificate are made here; the real `etl serve` runs in a child
   process on a loopback port over TLS.
2. Each unit gets a token, then `--clients` asynchronous clients (httpx, HTTP/1.1 keep-alive,
   TLS verified against the CA) push every unit's `--messages` B.3 messages of `--records`
   hidden dangers (09, busType I), taking them from one queue. Every answer must be rescode
   "1" with every record inserted. Timed: the pushes, from the first to the last answer.
3. The database route loads the same records into a second fresh target of the same kind: each
   unit's rows in its own SQLite source, one full `run_dataset` per unit, one after another in
   one process (what `etl run --all` does; Airflow runs units in parallel).
4. The database route again, into a third target, in loads the size of a message: units x
   messages units of `--records` rows each (a load's fixed cost weighs as a message's does).

Prints messages/s and records/s of each and the ratios push/pull of records/s. The machine is
shared (2 cores, other work): compare the ratio, absolute figures drift between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT)]

SYNDATA, TOKEN = "/jsdspcloud/servlet/syndata", "/jsdspcloud/servlet/token"


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for localhost and 127.0.0.1: (ca, cert, key) PEM files."""
    from helpers import make_tls as made

    return made(folder, "benchmark CA")


def _record(i: int) -> dict:
    from receive import _record as hidden_danger  # benchmarks/receive.py: the same A.11 record

    return hidden_danger(i)


def serve(url: str, tls: tuple[Path, Path, Path], folder: Path, messages: int, records: int):
    """`etl serve` on a free loopback port; (process, https URL)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "ETL_SERVE_MESSAGES_PER_MINUTE": str(max(60, messages * 2)),
           "ETL_SERVE_MAX_RECORDS": str(max(1000, records))}
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "etl", "serve", "--port", "0", "--target", url,
                             "--certfile", str(tls[1]), "--keyfile", str(tls[2])],
                            stdout=subprocess.PIPE, stderr=log, env=env, cwd=folder)
    line = ""
    while "serving" not in line:
        line = proc.stdout.readline().decode()
        if not line:
            raise SystemExit(f"etl serve ended: {(folder / 'serve.log').read_text(encoding='utf-8')}")
    return proc, re.search(r"https://127\.0\.0\.1:\d+", line).group(0)


async def push_all(base: str, ca: Path, credentials: dict[str, tuple[str, str]], messages: int,
                   records: int, clients: int) -> tuple[float, float]:
    """Tokens for every unit, then every message through `clients` concurrent clients; the
    seconds the tokens took and the seconds the pushes took."""
    import httpx

    context = ssl.create_default_context(cafile=str(ca))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, verify=context, limits=limits, timeout=600) as client:
        started = time.perf_counter()

        async def token(appid: str, secret: str) -> str:
            r = await client.post(TOKEN, data={"appid": appid, "secret": secret})
            r.raise_for_status()
            return r.json()["data"]["access_token"]

        tokens = dict(zip(credentials, await asyncio.gather(*(token(*c) for c in credentials.values()))))
        tokens_took = time.perf_counter() - started
        queue: asyncio.Queue = asyncio.Queue()
        for m in range(messages):
            for org in credentials:
                queue.put_nowait((org, m))
        bodies = {m: [_record(m * records + j) for j in range(records)] for m in range(messages)}
        failures: list[str] = []

        async def worker() -> None:
            while not queue.empty():
                org, m = queue.get_nowait()
                r = await client.post(SYNDATA, json={
                    "access_token": tokens[org], "batchNo": f"20240708{m + 1:08d}", "txcode": "09",
                    "busType": "I", "data": bodies[m]})
                a = r.json()
                if r.status_code != 200 or a["rescode"] != "1" or a["data"]["inserted"] != records:
                    failures.append(f"{r.status_code} {a['msg']}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        pushes_took = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} messages failed, the first: {failures[0]}")
    return tokens_took, pushes_took


def pull_all(url: str, orgs: list[str], rows: int, folder: Path) -> float:
    """The database route: each unit's `rows` in its own SQLite source, a full load each."""
    folder.mkdir()
    from etl import target
    from etl.mapping import load_mapping
    from etl.pipeline.run import run_dataset
    from helpers import hidden_danger_mapping_text, hidden_danger_row, write_source

    engine = target.connect(url)
    target.upgrade(engine)
    mappings = []
    for k, org in enumerate(orgs):
        env = f"BENCH_SRC_{folder.name}_{k}"
        os.environ[env] = f"sqlite:///{folder / f'src{k}.sqlite'}"
        write_source(os.environ[env], "t_hidden_danger", [hidden_danger_row(i) for i in range(rows)])
        path = folder / f"unit{k}.yaml"
        path.write_text(hidden_danger_mapping_text(org, env=env), encoding="utf-8")
        mappings.append(load_mapping(path))
    started = time.perf_counter()
    for m in mappings:
        r = run_dataset(engine, m, "09", mode="full")
        if r.status != "success" or r.counts.inserted != rows:
            raise SystemExit(f"pull failed: {r.status} {r.counts}")
    took = time.perf_counter() - started
    engine.dispose()
    return took


def count(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM hidden_danger")).scalar_one()
    engine.dispose()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=20)
    ap.add_argument("--messages", type=int, default=10, help="messages per unit")
    ap.add_argument("--records", type=int, default=100, help="records per message")
    ap.add_argument("--clients", type=int, default=50, help="concurrent HTTPS clients")
    ap.add_argument("--target", choices=("sqlite", "pg"), default="sqlite")
    a = ap.parse_args()
    from etl import target
    from etl.interface import apps
    from helpers import gb32100

    orgs = [gb32100(f"91320115MA{k:07d}") for k in range(a.units)]
    n_msgs, n_recs = a.units * a.messages, a.units * a.messages * a.records
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if a.target == "pg":
            from servers import create_database, start_postgres

            server = start_postgres()
            push_url, pull_url, small_url = (create_database(server.admin_url, p)
                                             for p in ("bench_push", "bench_pull", "bench_small"))
        else:
            push_url, pull_url, small_url = (f"sqlite:///{folder / f'{p}.sqlite'}"
                                             for p in ("push", "pull", "small"))
        try:
            engine = target.connect(push_url)
            target.upgrade(engine)
            credentials = {}
            for org in orgs:
                app, secret = apps.add(engine, org)
                credentials[org] = (app.app_id, secret)
            engine.dispose()
            tls = make_tls(folder)
            proc, base = serve(push_url, tls, folder, a.messages, a.records)
            try:
                tokens_took, pushed = asyncio.run(push_all(base, tls[0], credentials, a.messages,
                                                           a.records, a.clients))
            finally:
                proc.terminate()
                proc.wait()
            pulled = pull_all(pull_url, orgs, a.messages * a.records, folder / "daily")
            small = [gb32100(f"91320116MA{k:07d}") for k in range(n_msgs)]
            pulled_small = pull_all(small_url, small, a.records, folder / "small")
            held = count(push_url), count(pull_url), count(small_url)
        finally:
            if server is not None:
                server.stop()
    if held != (n_recs,) * 3:
        raise SystemExit(f"the targets hold {held} records, expected {n_recs} in each")
    print(f"{a.units} units x {a.messages} messages x {a.records} records (09, I), {a.clients} "
          f"concurrent HTTPS clients; target {'PostgreSQL' if a.target == 'pg' else 'SQLite'}; "
          f"{os.cpu_count()} cores")
    print(f"tokens ({a.units}, scrypt):        {tokens_took:7.2f} s")
    print(f"push (etl serve, HTTPS):     {pushed:7.2f} s  {n_msgs / pushed:8.1f} messages/s  "
          f"{n_recs / pushed:9.1f} records/s")
    print(f"pull (run_dataset, full):    {pulled:7.2f} s  {a.units / pulled:8.1f} units/s     "
          f"{n_recs / pulled:9.1f} records/s  ({a.messages * a.records} rows per unit, one load each)")
    print(f"pull (run_dataset, full):    {pulled_small:7.2f} s  {n_msgs / pulled_small:8.1f} loads/s     "
          f"{n_recs / pulled_small:9.1f} records/s  ({a.records} rows per load, {n_msgs} units)")
    print(f"ratio push/pull records/s:   {pulled / pushed:.2f} (against loads of "
          f"{a.messages * a.records} rows), {pulled_small / pushed:.2f} (against loads of "
          f"{a.records} rows)")


if __name__ == "__main__":
    main()
