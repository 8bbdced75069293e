"""Issue 26: the cost of a small unit, beside the least a program can do with it.

    uv run python benchmarks/small_units.py [--small 20] [--large 120] [--rounds 1]
    uv run python benchmarks/small_units.py --profile 60      # cProfile of `etl run` in-process

Makes `--large` copies of the demo unit (`units.py`: own SQLite source and mapping each) and
runs, into a fresh SQLite target each time:

  etl      `python -m etl run --all --mappings-dir ... --tx 06,07,09 --mode full` over the first
           `--small` units and over all `--large`, each in its own process: the slope,
           (t_large - t_small) / (large - small), is the per-unit cost with process start and
           imports cancelled out.
  minimal  the same durable work written plainly (sqlite3): for each unit and each of its three
           daily tables, read the rows, insert each row into the target table and a JSON copy
           of it into a ledger table, commit once per dataset; same slope, also in a child.

Both run side by side in one invocation (interleaved per round): compare the ratio, the
machine is shared and absolute figures drift.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

TX_CODES = ("06", "07", "09")
TABLES = {"06": "fxd_xx", "07": "wxy_xx", "09": "yh_pc"}  # the demo unit's source tables


# --- the minimal program -------------------------------------------------------------------------


def minimal(sources: list[Path], target: Path) -> None:
    """Read each unit's three daily tables; insert each row and a JSON ledger copy of it;
    one commit per dataset."""
    tgt = sqlite3.connect(target)
    # SQLite's defaults (rollback journal, synchronous FULL), as the pipeline's target has them
    tgt.execute("CREATE TABLE IF NOT EXISTS ledger (tx TEXT, id TEXT, record TEXT)")
    created: set[str] = set()
    for path in sources:
        src = sqlite3.connect(path)
        for tx, table in TABLES.items():
            cur = src.execute(f"SELECT * FROM {table}")
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
            name = f"t{tx}"
            if name not in created:
                tgt.execute(f"CREATE TABLE IF NOT EXISTS {name} (unit TEXT, "
                            + ", ".join(f'"{c}"' for c in cols) + ")")
                created.add(name)
            marks = ", ".join("?" * (len(cols) + 1))
            unit = path.stem
            tgt.executemany(f"INSERT INTO {name} VALUES ({marks})", [(unit, *r) for r in rows])
            tgt.executemany("INSERT INTO ledger VALUES (?, ?, ?)",
                            [(tx, f"{unit}{r[0]}", json.dumps(dict(zip(cols, r)), ensure_ascii=False,
                                                              default=str)) for r in rows])
            tgt.commit()
        src.close()
    tgt.close()


# --- timing --------------------------------------------------------------------------------------



class Seconds(float):
    """Wall seconds of a child, with its CPU seconds (user + system) as `.cpu`: on a shared
    machine the CPU figure drifts less than the wall one."""
    cpu: float = 0.0


def _timed(cmd: list[str], log: Path, code: Path | None = None) -> Seconds:
    """Seconds `cmd` took; with `code`, the `etl` package is imported from that folder."""
    env = {**os.environ, "PYTHONPATH": str(code)} if code else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        rc = subprocess.call(cmd, stdout=out, stderr=out, cwd=code or ROOT, env=env)
    seconds = Seconds(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exit {rc}: see {log}")
    return seconds


def run_etl(mappings: Path, target: Path, log: Path, code: Path | None = None) -> Seconds:
    target.unlink(missing_ok=True)
    return _timed([sys.executable, "-m", "etl", "run", "--all", "--mappings-dir", str(mappings),
                   "--tx", ",".join(TX_CODES), "--mode", "full", "--target",
                   f"sqlite:///{target}"], log, code)


def checkout(rev: str, folder: Path) -> Path:
    """The tree of git revision `rev` (its `etl` package), extracted into `folder`."""
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "etl"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run_minimal(sources: list[Path], target: Path, log: Path) -> Seconds:
    target.unlink(missing_ok=True)
    listing = target.with_suffix(".sources.json")
    listing.write_text(json.dumps([str(s) for s in sources]))
    return _timed([sys.executable, str(Path(__file__).resolve()), "--minimal-child", str(listing),
                   str(target)], log)


def setup(folder: Path, small: int, large: int) -> tuple[dict[int, Path], dict[int, list[Path]]]:
    """`large` units; a mappings folder (and source list) for the first `small` and for all."""
    import units

    made = units.make_units(folder / "units", large)
    dirs, sources = {}, {}
    for n in (small, large):
        d = folder / f"mappings{n}"
        d.mkdir(exist_ok=True)
        for u in made[:n]:
            shutil.copyfile(u.mapping, d / u.mapping.name)
        dirs[n], sources[n] = d, [u.source for u in made[:n]]
    return dirs, sources


def check_etl(target: Path, count: int) -> dict[str, int]:
    """What one `etl run` left: records per table and ledger rows, all successful."""
    con = sqlite3.connect(target)
    try:
        out = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
               for t in ("risk_point", "hazard_source", "hidden_danger", "ingest_change")}
        runs = con.execute("SELECT status, count(*) FROM ingest_run GROUP BY status").fetchall()
    finally:
        con.close()
    if dict(runs) != {"success": count * len(TX_CODES)}:
        raise RuntimeError(f"etl run: {runs}, expected {count * len(TX_CODES)} successes")
    return out


#: What must come out the same (run IDs, hosts and times aside, which differ by run)
COMPARED = {
    "risk_point": None, "hazard_source": None, "hidden_danger": None,
    "ingest_change": 'SELECT "ID", "busType", record FROM ingest_change ORDER BY "ID", "busType"',
    "ingest_batch": 'SELECT "batchNo", "orgNo", "txCode", "busType", records FROM ingest_batch ORDER BY "batchNo"',
    "ingest_reject": 'SELECT "orgNo", "txCode", "sourceKey", field, rule, severity, message FROM ingest_reject ORDER BY rowid',
    "ingest_audit": 'SELECT "orgNo", "txCode", field, rule, count, examples FROM ingest_audit ORDER BY rowid',
    "ingest_run": ("SELECT \"orgNo\", \"txCode\", status, extracted, inserted, updated, deleted, "
                   "unchanged, rejected, duplicates, warnings, \"skippedDeleted\", overridden "
                   "FROM ingest_run ORDER BY rowid"),
}


def same_results(a: Path, b: Path) -> bool:
    """Whether two targets hold the same rows (run IDs and times aside)."""
    out = []
    for table, sql in COMPARED.items():
        rows = []
        for path in (a, b):
            con = sqlite3.connect(path)
            try:
                if sql is None:
                    cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")
                            ]
                    q = f"SELECT {', '.join(chr(34) + c + chr(34) for c in cols)} FROM {table} ORDER BY \"ID\""
                else:
                    q = sql
                rows.append(con.execute(q).fetchall())
            finally:
                con.close()
        if rows[0] != rows[1]:
            print(f"  differs: {table}")
        out.append(rows[0] == rows[1])
    return all(out)


def profile(folder: Path, count: int, out: Path) -> None:
    """`etl run` of `count` units in this process under cProfile (after one warm-up unit)."""
    import cProfile
    import pstats

    dirs, _ = setup(folder, 1, count)
    from etl import commands

    commands.run(sorted(dirs[1].glob("*.yaml")), tx_codes=list(TX_CODES), mode="full",
                 target_url=f"sqlite:///{folder / 'warm.sqlite'}")
    paths = sorted(dirs[count].glob("*.yaml"))
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    commands.run(paths, tx_codes=list(TX_CODES), mode="full",
                 target_url=f"sqlite:///{folder / 'profiled.sqlite'}")
    prof.disable()
    seconds = time.perf_counter() - t0
    prof.dump_stats(out)
    print(f"\n{count} units in {seconds:.2f} s under cProfile: {seconds / count * 1000:.0f} ms per unit")
    for key in ("cumulative", "tottime"):
        print(f"\n--- sorted by {key} ---")
        pstats.Stats(str(out)).sort_stats(key).print_stats(40)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--small", type=int, default=20)
    ap.add_argument("--large", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=1, help="rounds; medians are reported")
    ap.add_argument("--profile", type=int, metavar="UNITS", help="profile `etl run` of this many units")
    ap.add_argument("--rev", action="append", default=[],
                    help="also time `etl run` as of this git revision (before/after); repeatable")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--minimal-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.minimal_child:
        minimal([Path(p) for p in json.loads(Path(args.minimal_child[0]).read_text())],
                Path(args.minimal_child[1]))
        return 0

    folder = Path(tempfile.mkdtemp(prefix="etl-small-units-"))
    try:
        if args.profile:
            profile(folder, args.profile, folder / "small_units.prof")
            return 0
        t0 = time.perf_counter()
        dirs, sources = setup(folder, args.small, args.large)
        print(f"{args.large} units made in {time.perf_counter() - t0:.1f} s ({folder})", flush=True)
        log = folder / "runs.log"
        olds = {rev: checkout(rev, folder / f"rev{i}") for i, rev in enumerate(args.rev)}
        who = [*olds, "etl", "minimal"]
        times: dict[tuple[str, int], list[Seconds]] = {}
        for r in range(args.rounds):
            for n in (args.small, args.large):
                for i, (rev, code) in enumerate(olds.items()):
                    times.setdefault((rev, n), []).append(
                        run_etl(dirs[n], folder / f"rev{i}-{n}.sqlite", log, code))
                times.setdefault(("etl", n), []).append(run_etl(dirs[n], folder / f"etl{n}.sqlite", log))
                times.setdefault(("minimal", n), []).append(
                    run_minimal(sources[n], folder / f"min{n}.sqlite", log))
                print(f"round {r + 1}, {n} units: " + ", ".join(
                    f"{w} {times[w, n][-1]:.2f} s" for w in who), flush=True)
        counts = check_etl(folder / f"etl{args.large}.sqlite", args.large)
        print(f"\netl run left {counts} for {args.large} units")
        for i, rev in enumerate(olds):
            same = same_results(folder / f"rev{i}-{args.large}.sqlite", folder / f"etl{args.large}.sqlite")
            print(f"same records, ledger, rejects, audit, batches and run counts as {rev}: {same}")
        span = args.large - args.small
        med = {k: statistics.median(v) for k, v in times.items()}
        cpu = {k: statistics.median(x.cpu for x in v) for k, v in times.items()}
        per = {w: (med[w, args.large] - med[w, args.small]) / span * 1000 for w in who}
        per_cpu = {w: (cpu[w, args.large] - cpu[w, args.small]) / span * 1000 for w in who}
        print(f"\nper unit (slope {args.small} -> {args.large} units, medians of {args.rounds}; "
              f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}):")
        print(f"  {'':24} {'wall ms':>8} {'x minimal':>10} {'CPU ms':>8} {'x minimal':>10}")
        for w in who:
            label = "minimal" if w == "minimal" else ("etl run (this tree)" if w == "etl" else f"etl run as of {w}")
            print(f"  {label:24} {per[w]:8.1f} {per[w] / per['minimal']:10.1f} {per_cpu[w]:8.1f} "
                  f"{per_cpu[w] / per_cpu['minimal']:10.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
