"""Issue 27: what one pushed message costs, called directly (no HTTP), beside the database
route loading the same records.

    uv run python benchmarks/receive.py [--units 20] [--messages 5] [--records 50] [--threads 4]
                                        [--target URL]

Into a fresh SQLite target (or `--target`, an empty database), each of `--units` units pushes
`--messages` B.3 messages of `--records` hidden dangers (09, busType I), from `--threads`
threads; then the same units' same records are loaded by the database route (`run_dataset`,
a SQLite source per unit, full mode) into a second fresh SQLite target, one load per
message's worth of new records. Prints messages/s and records/s of each and the ratio push/pull per record. The machine is
shared: compare the ratio, absolute figures drift. The 50-client HTTP benchmark is separate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]


def _record(i: int) -> dict:
    return {"ID": f"R{i}", "taskNo": f"YH{i:08d}", "regNo": f"3110320115{i:010d}",
            "troubleType": "设备类", "troubleLevel": "一般事故隐患", "mainProblem": f"安全阀校验过期 {i}",
            "checkMan": "张三", "checkDate": "2024-04-16", "limitDate": "2024-05-16", "dealMan": "李四",
            "dealDate": "2024-05-10", "dealInfo": "已整改", "acceptMan": "王五",
            "acceptDate": "2024-05-17", "acceptInfo": "整改验收合格"}


def push(url: str, orgs: list[str], messages: int, records: int, threads: int) -> float:
    from etl import target
    from etl.interface.receive import receive

    engine = target.connect(url)
    target.upgrade(engine)
    work = [(org, m) for m in range(messages) for org in orgs]
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if not work:
                    return
                org, m = work.pop()
            data = [_record(m * records + j) for j in range(records)]
            a = receive(engine, org, {"batchNo": f"20240708{m + 1:08d}", "txcode": "09",
                                      "busType": "I", "data": data})
            if a["rescode"] != "1" or a["data"]["inserted"] != records:
                failures.append(a["msg"])

    start = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    took = time.perf_counter() - start
    engine.dispose()
    if failures:
        raise SystemExit(f"push failed: {failures[0]}")
    return took


def pull(url: str, orgs: list[str], messages: int, records: int, folder: Path) -> float:
    """The database route over the same records: after each message's worth is added to a unit's
    source, a full load (it re-reads the earlier rows, which are unchanged: the database route's
    daily run reads a window, so this favours push a little when messages > 1)."""
    import os

    from etl import target
    from etl.mapping import load_mapping
    from etl.pipeline.run import run_dataset
    from helpers import hidden_danger_mapping_text, hidden_danger_row, write_source

    engine = target.connect(url)
    target.upgrade(engine)
    took = 0.0
    for k, org in enumerate(orgs):
        src = folder / f"src{k}.sqlite"
        path = folder / f"unit{k}.yaml"
        env = f"BENCH_SRC_{k}"
        os.environ[env] = f"sqlite:///{src}"
        path.write_text(hidden_danger_mapping_text(org, env=env), encoding="utf-8")
        mapping = load_mapping(path)
        rows: list[dict] = []
        for m in range(messages):
            rows += [hidden_danger_row(m * records + j) for j in range(records)]
            write_source(f"sqlite:///{src}", "t_hidden_danger", rows)
            start = time.perf_counter()
            r = run_dataset(engine, mapping, "09", mode="full")
            took += time.perf_counter() - start
            if r.status != "success" or r.counts.inserted != records:
                raise SystemExit(f"pull failed: {r.status} {r.counts}")
    engine.dispose()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=20)
    ap.add_argument("--messages", type=int, default=5)
    ap.add_argument("--records", type=int, default=50)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--target", help="an empty target database (default: a fresh SQLite file)")
    a = ap.parse_args()
    from helpers import org_no

    orgs = [org_no(f"91320115MA{i:07d}") for i in range(a.units)]
    n_msgs, n_recs = a.units * a.messages, a.units * a.messages * a.records
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pushed = push(a.target or f"sqlite:///{folder / 'push.sqlite'}", orgs, a.messages,
                      a.records, a.threads)
        pulled = pull(f"sqlite:///{folder / 'pull.sqlite'}", orgs, a.messages, a.records, folder)
    print(f"{a.units} units x {a.messages} messages x {a.records} records (09, I), "
          f"{a.threads} threads; target {'given' if a.target else 'SQLite'}")
    print(f"push (receive, direct): {pushed:7.2f} s  {n_msgs / pushed:8.1f} messages/s  "
          f"{n_recs / pushed:9.1f} records/s")
    print(f"pull (run_dataset):     {pulled:7.2f} s  {n_msgs / pulled:8.1f} loads/s     "
          f"{n_recs / pulled:9.1f} records/s  (SQLite target, one load per message's records)")
    print(f"ratio push/pull records/s: {pulled / pushed:.2f}")


if __name__ == "__main__":
    main()
