"""Issue 27 follow-up: what the report site's pages of units that push cost.

    uv run python benchmarks/report_pushed.py [--units 30] [--messages 20] [--records 10] [--target URL]

Into a fresh SQLite target (or `--target`, an empty database), each of `--units` units pushes
its 01 and `--messages` messages of `--records` hidden dangers (09), one record of each message
refused (no mainProblem); then `etl report`'s build runs over the target with no mapping file:
every unit is a unit that only pushes, and gets its page and exports. Prints the build's time,
per unit page, beside the overview alone (what the site cost for these units before they had
pages), and the findings read both ways: one statement per 500 runs (`site._of_runs`) against
one per run (as mapped datasets' last runs were read), as a ratio. The machine is shared:
compare the ratios, absolute figures drift.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]


def _load(engine, orgs: list[str], messages: int, records: int) -> None:
    from etl.common import clock
    from etl.interface.receive import receive
    from test_interface_receive import record

    now = clock.now()
    for org in orgs:
        receive(engine, org, {"batchNo": "2024070800000001", "txcode": "01", "busType": "I",
                              "data": [record("01", 1, org=org)]}, now=now)
        for m in range(messages):
            data = [record("09", m * records + j, org=org) for j in range(records)]
            data[0]["mainProblem"] = None
            a = receive(engine, org, {"batchNo": f"20240708{m + 2:08d}", "txcode": "09",
                                      "busType": "I", "data": data}, now=now)
            assert a["rescode"] == "1" and a["data"]["rejected"] == 1, a["msg"]


def _per_run(engine, org: str, place: dict) -> int:
    import sqlalchemy as sa

    from etl import target

    rej, n = target.ingest_reject, 0
    with engine.connect() as conn:
        for tx, run_id in place:
            n += len(conn.execute(sa.select(rej).where(rej.c.runId == run_id, rej.c.orgNo == org,
                                                       rej.c.txCode == tx)).all())
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=30)
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--records", type=int, default=10)
    ap.add_argument("--target")
    args = ap.parse_args()

    import sqlalchemy as sa

    from etl import target
    from etl.common import clock
    from etl.report import freshness, site
    from helpers import org_no

    folder = Path(tempfile.mkdtemp(prefix="report_pushed_"))
    url = args.target or f"sqlite:///{folder / 'target.sqlite'}"
    engine = target.connect(url)
    target.upgrade(engine)
    orgs = [org_no(f"9132050{i:03d}MA1W3L8") for i in range(args.units)]
    t0 = time.perf_counter()
    _load(engine, orgs, args.messages, args.records)
    loaded = time.perf_counter() - t0
    now = clock.now()

    t0 = time.perf_counter()
    built = site.build(engine, [], folder / "report", now=now)
    build = time.perf_counter() - t0
    assert built.failed == [], built.failed
    pages = len(list((folder / "report" / "units").glob("*.html")))
    assert pages == args.units, pages
    t0 = time.perf_counter()
    site.write_overview(folder / "overview", site._named(freshness.statuses(engine, [], now=now),
                                                         engine), now)
    overview = time.perf_counter() - t0

    r = target.ingest_run
    with engine.connect() as conn:
        runs = conn.execute(sa.select(r.c.orgNo, r.c.txCode, r.c.runId)).all()
    places: dict[str, dict] = {}
    for org, tx, run_id in runs:
        places.setdefault(org, {})[(tx, run_id)] = (tx, len(places.get(org, {})))
    t0 = time.perf_counter()
    with engine.connect() as conn:
        one = sum(len(site._of_runs(conn, target.ingest_reject, target.ingest_reject.c.rejectId, org, p))
                  for org, p in places.items())
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    each = sum(_per_run(engine, org, p) for org, p in places.items())
    per_run = time.perf_counter() - t0
    assert one == each == args.units * args.messages, (one, each)

    print(f"{args.units} units pushing, {args.messages} messages of {args.records} records each "
          f"({len(runs)} runs) loaded in {loaded:.1f} s; target {url.split(':', 1)[0]}")
    print(f"site build: {build:.2f} s, {1000 * build / args.units:.1f} ms per unit page "
          f"(pages and exports); overview alone {overview:.2f} s; ratio {build / overview:.1f}x")
    print(f"findings read: one statement per 500 runs {batched:.3f} s, one per run {per_run:.3f} s; "
          f"ratio per-run/batched {per_run / batched:.1f}x")


if __name__ == "__main__":
    main()
