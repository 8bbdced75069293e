"""Throughput benchmark of the pipeline on A.11 hidden-danger records (txCode 09).

    uv run python benchmarks/run.py [--rows N] [--rounds 3] [--units 1000]

Starts two throwaway PostgreSQL servers (a unit's source, the target), generates N source
rows in SQL, writes a mapping for them, and measures, each case in a fresh process (so its
peak RSS is its own) and each round interleaving the cases:

  1. raw_copy     COPY out of the source piped into COPY into a copy of the target table
  2. pandas       pandas read_sql(chunksize) + to_sql into a copy of the target table
  3. full         the pipeline's full load (extract, clean, validate, load, ledger), empty target
  4. rerun        a full-mode rerun of the same data (no change)
  5. incremental  an incremental run after 1% of the rows changed
  6. units        1,000 units of 1,000 rows each, one after another in one process

and prints the medians with rows/s, peak RSS and ratios to cases 1 and 2; writes
benchmarks/results/latest.json and (with --markdown) a table to commit, RESULTS.md.
`--memory-rows 2000000,3000000` adds one full load at each size, for how peak RSS scales.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import sqlalchemy as sa  # noqa: E402

import cases  # noqa: E402
import source  # noqa: E402

ENV = "BENCH_UNIT_SOURCE_URL"
ORDER = ("raw_copy", "pandas", "full", "rerun", "incremental", "units")
LABELS = {
    "raw_copy": "1. raw COPY → COPY (the physical limit)",
    "pandas": "2. pandas read_sql + to_sql (naive peer)",
    "full": "3. pipeline full load, empty target",
    "rerun": "4. full-mode rerun, no change",
    "incremental": "5. incremental, 1% changed",
    "units": "6. many small units",
}
TARGETS = (  # (what, value of, bound, comparison)
    ("full load ≥ 0.5 × raw COPY rate", "full_vs_raw", 0.5, ">="),
    ("full load ≥ 3 × pandas to_sql rate", "full_vs_pandas", 3.0, ">="),
    ("no-change rerun ≤ 0.5 × full-load time", "rerun_vs_full", 0.5, "<="),
    ("1% incremental ≤ 0.05 × full-load time", "incremental_vs_full", 0.05, "<="),
    ("per-unit overhead < 0.5 s", "unit_overhead_s", 0.5, "<"),
    ("peak RSS at 10M rows < 1 GiB", "rss_10m_mb", 1024.0, "<"),
)


# --- child side ----------------------------------------------------------------------------------


def child(case: str, state_path: Path, result_path: Path) -> None:
    state = json.loads(state_path.read_text())
    result = cases.CASES[case](state)
    result_path.write_text(json.dumps(result))


# --- parent side ---------------------------------------------------------------------------------


def run_case(case: str, state: dict, workdir: Path) -> dict:
    """One case in a fresh interpreter; peak RSS from the kernel's accounting of that child."""
    state_path = workdir / "state.json"
    state_path.write_text(json.dumps(state))
    result_path = workdir / f"{case}.json"
    result_path.unlink(missing_ok=True)
    log = open(workdir / f"{case}.log", "ab")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", case,
                             str(state_path), str(result_path)], stdout=log, stderr=log)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if proc.returncode != 0:
        tail = (workdir / f"{case}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"case {case} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(result_path.read_text())
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def target_reset(url: str) -> None:
    """An empty target: the dataset table and every bookkeeping table, and fresh copies of the
    target table for cases 1 and 2."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE hidden_danger, ingest_change, ingest_reject, ingest_run, "
                             "ingest_audit, ingest_batch, ingest_batch_seq")
        for copy in ("bench_copy", "bench_pandas"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {copy}")
            conn.exec_driver_sql(f"CREATE TABLE {copy} (LIKE hidden_danger INCLUDING ALL)")
    engine.dispose()
    settle(url)


def settle(url: str) -> None:
    """Untimed, between cases: bring the target's statistics up to date and finish the
    vacuuming the previous case's writes call for, as autovacuum would have done by the next
    scheduled run. Otherwise a case is measured against stale plans (a target that ANALYZE
    last saw empty) and the previous case's background vacuum."""
    engine = sa.create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
        conn.exec_driver_sql("CHECKPOINT")
    engine.dispose()


def machine(source_url: str) -> dict:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version()}
    with open("/proc/meminfo") as f:
        info["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    with open("/proc/cpuinfo") as f:
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    engine = sa.create_engine(source_url)
    with engine.connect() as conn:
        info["postgresql"] = conn.exec_driver_sql("SHOW server_version").scalar()
    engine.dispose()
    import pandas
    import pyarrow
    info["pandas"], info["pyarrow"] = pandas.__version__, pyarrow.__version__
    info["server_settings"] = "tests/servers.py: fsync=off, synchronous_commit=off, shared_buffers=64MB"
    return info


def summarise(runs: dict[str, list[dict]], n: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for case, results in runs.items():
        if not results:
            continue
        seconds = statistics.median(r["seconds"] for r in results)
        out[case] = {"seconds": round(seconds, 3), "runs": [round(r["seconds"], 3) for r in results],
                     "rows": results[0]["rows"],
                     "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results), 1)}
        if case in ("raw_copy", "pandas", "full", "rerun"):
            out[case]["rows_per_s"] = round(n / seconds)
        if case == "units":
            per = statistics.median(r["per_unit_median"] for r in results)
            out[case].update(units=results[0]["units"], per_unit_s=round(per, 4),
                             per_unit_first_s=round(statistics.median(r["per_unit_first"] for r in results), 3),
                             per_unit_p90_s=round(statistics.median(r["per_unit_p90"] for r in results), 4))
        for key in ("counts", "stages"):
            if key in results[0]:
                out[case][key] = results[len(results) // 2][key] if key == "counts" else _median_stages(results)
    return out


def _median_stages(results: list[dict]) -> dict[str, float]:
    labels = {k for r in results for k in r.get("stages", {})}
    return {k: round(statistics.median(r.get("stages", {}).get(k, 0.0) for r in results), 3)
            for k in sorted(labels, key=lambda k: -results[0].get("stages", {}).get(k, 0.0))}


def ratios(s: dict[str, dict], memory: list[dict]) -> dict[str, float]:
    r: dict[str, float] = {}
    if "full" in s and "raw_copy" in s:
        r["full_vs_raw"] = s["full"]["rows_per_s"] / s["raw_copy"]["rows_per_s"]
    if "full" in s and "pandas" in s:
        r["full_vs_pandas"] = s["full"]["rows_per_s"] / s["pandas"]["rows_per_s"]
    if "full" in s and "rerun" in s:
        r["rerun_vs_full"] = s["rerun"]["seconds"] / s["full"]["seconds"]
    if "full" in s and "incremental" in s:
        r["incremental_vs_full"] = s["incremental"]["seconds"] / s["full"]["seconds"]
    if "units" in s and "full" in s:
        rows_each = s["units"]["rows"] / s["units"]["units"]
        r["unit_overhead_s"] = s["units"]["per_unit_s"] - rows_each / s["full"]["rows_per_s"]
    points = [(m["rows"], m["peak_rss_mb"]) for m in memory]
    if len(points) >= 2:
        (x0, y0), (x1, y1) = min(points), max(points)
        slope = (y1 - y0) / (x1 - x0) if x1 != x0 else 0.0
        r["rss_mb_per_million_rows"] = slope * 1e6
        r["rss_10m_mb"] = y1 + slope * (10_000_000 - x1)
    elif len(points) == 1 and points[0][0] >= 10_000_000:
        r["rss_10m_mb"] = points[0][1]
    return {k: round(v, 4) for k, v in r.items()}


def verdicts(r: dict[str, float]) -> list[tuple[str, str, str]]:
    out = []
    for what, key, bound, cmp in TARGETS:
        if key not in r:
            out.append((what, "not measured", "—"))
            continue
        v = r[key]
        ok = {">=": v >= bound, "<=": v <= bound, "<": v < bound}[cmp]
        out.append((what, f"{v:.3g}", "met" if ok else "NOT met"))
    return out


def table(s: dict[str, dict], r: dict[str, float], n: int) -> str:
    raw = s.get("raw_copy", {}).get("rows_per_s")
    pandas = s.get("pandas", {}).get("rows_per_s")
    full = s.get("full", {}).get("seconds")
    lines = ["| case | rows | seconds (median) | rows/s | × raw COPY | × pandas | × full-load time | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for case in ORDER:
        if case not in s:
            continue
        c = s[case]
        rate = c.get("rows_per_s") or (c["rows"] / c["seconds"] if c["seconds"] else 0)
        label = LABELS[case]
        if case == "units":
            label += f": {c['units']} × {c['rows'] // max(c['units'], 1):,} rows, {c['per_unit_s']:.3f} s per unit"
        rows = f"{c['rows']:,}" + (" read" if case == "incremental" else "")
        vs_raw = f"{rate / raw:.2f}" if raw and case != "incremental" else "—"
        vs_pandas = f"{rate / pandas:.2f}" if pandas and case != "incremental" else "—"
        vs_full = f"{c['seconds'] / full:.3f}" if full and case in ("full", "rerun", "incremental") else "—"
        lines.append(f"| {label} | {rows} | {c['seconds']:.2f} | {rate:,.0f} | {vs_raw} | {vs_pandas} | "
                     f"{vs_full} | {c['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def memory_table(memory: list[dict], r: dict[str, float]) -> str:
    if not memory:
        return ""
    lines = ["| rows (full load) | seconds | rows/s | peak RSS MB |", "|---:|---:|---:|---:|"]
    for m in sorted(memory, key=lambda m: m["rows"]):
        lines.append(f"| {m['rows']:,} | {m['seconds']:.1f} | {m['rows'] / m['seconds']:,.0f} | {m['peak_rss_mb']:.0f} |")
    if "rss_10m_mb" in r:
        measured = any(m["rows"] >= 10_000_000 for m in memory)
        lines.append(f"\nPeak RSS grows by {r.get('rss_mb_per_million_rows', 0):.1f} MB per million rows: "
                     f"{r['rss_10m_mb']:.0f} MB at 10M rows "
                     f"({'measured' if measured else 'extrapolated'}).")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    m = report["machine"]
    parts = [
        "# Benchmark results",
        "",
        f"Generated by `uv run python benchmarks/run.py {report['argv']}` on {report['finished'][:16]} UTC "
        f"(took {report['wall_minutes']:.0f} min). Hand-written notes: `benchmarks/README.md`.",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory_gb']} GB memory, PostgreSQL "
        f"{m['postgresql']} ({m['server_settings']}), Python {m['python']}, pandas {m['pandas']}, "
        f"pyarrow {m['pyarrow']}. Load average before/after: {report['load_before']} / "
        f"{report['load_after']} (the machine is shared: absolute figures drift, ratios hold better).",
        "",
        f"{report['rows']:,} A.11 rows, medians of {report['rounds']} rounds (cases interleaved per round), "
        f"chunks of {report['chunk_rows']:,} rows.",
        "",
        table(report["summary"], report["ratios"], report["rows"]),
        "",
        "| target | measured | verdict |",
        "|---|---:|---|",
        *[f"| {what} | {value} | {verdict} |" for what, value, verdict in report["verdicts"]],
    ]
    if report.get("memory"):
        parts += ["", "## Peak RSS by size", "", memory_table(report["memory"], report["ratios"])]
    stages = {case: report["summary"][case].get("stages") for case in ("full", "rerun")
              if report["summary"].get(case, {}).get("stages")}
    if stages:
        parts += ["", "## Where the pipeline's wall time goes (seconds, median round)", "",
                  "Stages overlap: the source is read and the stage table filled in background "
                  "threads, so `extract` and `stage` show only the waits.", "",
                  "| stage | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
        labels = list(dict.fromkeys(k for st in stages.values() for k in st))
        for label in labels:
            parts.append(f"| {label} | " + " | ".join(f"{st.get(label, 0):.2f}" for st in stages.values()) + " |")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000, help="source rows (default 1,000,000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each case's median is reported")
    ap.add_argument("--cases", default=",".join(ORDER), help=f"comma-separated subset of {','.join(ORDER)}")
    ap.add_argument("--units", type=int, default=1000, help="units in case 6 (default 1000)")
    ap.add_argument("--unit-rows", type=int, default=1000, help="rows per unit in case 6")
    ap.add_argument("--unit-rounds", type=int, default=None, help="rounds of case 6 (default --rounds)")
    ap.add_argument("--chunk-rows", type=int, default=100_000, help="pipeline chunk size")
    ap.add_argument("--memory-rows", default="", help="extra full loads at these sizes, e.g. 2000000,3000000")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    ap.add_argument("--markdown", type=Path, default=None, help="also write this Markdown report (RESULTS.md)")
    ap.add_argument("--child", nargs=3, metavar=("CASE", "STATE", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0

    from tests.servers import create_database, start_postgres
    from etl import target

    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    started = time.monotonic()
    load_before = os.getloadavg()
    src_server, tgt_server = start_postgres(), start_postgres()
    try:
        source_url = create_database(src_server.admin_url, "bench_source")
        target_url = create_database(tgt_server.admin_url, "bench_target")
        target.upgrade(target.connect(target_url))
        workdir = Path(tempfile.mkdtemp(prefix="etl-bench-"))
        org = source.org_no(1)
        state = {"source_url": source_url, "target_url": target_url, "env": ENV, "org": org,
                 "table": source.TABLE, "chunk_rows": args.chunk_rows,
                 "mapping": str(source.write_mapping(workdir, org, ENV)),
                 "units_dir": str(workdir / "units")}
        src = sa.create_engine(source_url, isolation_level="AUTOCOMMIT")
        print(f"generating {args.rows:,} source rows ...", flush=True)
        with src.connect() as conn:
            t0 = time.perf_counter()
            source.create(conn, args.rows)
            print(f"  {time.perf_counter() - t0:.1f} s", flush=True)
            if "units" in wanted:
                print(f"generating {args.units} units × {args.unit_rows} rows ...", flush=True)
                t0 = time.perf_counter()
                cases.make_unit_sources(conn, args.units, args.unit_rows, Path(state["units_dir"]), ENV)
                print(f"  {time.perf_counter() - t0:.1f} s", flush=True)

        runs: dict[str, list[dict]] = {c: [] for c in ORDER}
        unit_rounds = args.unit_rounds if args.unit_rounds is not None else args.rounds
        for round_no in range(1, args.rounds + 1):
            target_reset(target_url)
            for case in ("raw_copy", "pandas", "full", "rerun", "incremental"):
                if case not in wanted:
                    continue
                if case == "incremental":
                    state["since"] = _touch_one_percent(src, round_no)
                settle(target_url)
                result = run_case(case, state, workdir)
                runs[case].append(result)
                print(f"round {round_no} {case}: {result['seconds']:.2f} s, {result['rows']:,} rows, "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
            if "units" in wanted and round_no <= unit_rounds:
                target_reset(target_url)
                result = run_case("units", state, workdir)
                runs["units"].append(result)
                print(f"round {round_no} units: {result['seconds']:.1f} s for {result['units']} units, "
                      f"median {result['per_unit_median']:.3f} s per unit", flush=True)

        memory: list[dict] = []
        sizes = [int(x) for x in args.memory_rows.split(",") if x.strip()]
        if sizes and "full" in wanted:
            memory.append({"rows": args.rows, "seconds": statistics.median(r["seconds"] for r in runs["full"]),
                           "peak_rss_mb": max(r["peak_rss_mb"] for r in runs["full"])})
            for size in sizes:
                print(f"memory: generating {size:,} rows ...", flush=True)
                with src.connect() as conn:
                    source.create(conn, size)
                target_reset(target_url)
                result = run_case("full", state, workdir)
                memory.append({"rows": result["rows"], "seconds": result["seconds"],
                               "peak_rss_mb": result["peak_rss_mb"]})
                print(f"memory {size:,}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB",
                      flush=True)

        summary = summarise(runs, args.rows)
        r = ratios(summary, memory)
        report = {
            "argv": " ".join(sys.argv[1:] if argv is None else argv), "rows": args.rows,
            "rounds": args.rounds, "chunk_rows": args.chunk_rows,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_minutes": (time.monotonic() - started) / 60,
            "load_before": " ".join(f"{x:.1f}" for x in load_before),
            "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "machine": machine(source_url), "summary": summary, "ratios": r,
            "verdicts": verdicts(r), "memory": memory,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print()
        print(table(summary, r, args.rows))
        print()
        for what, value, verdict in report["verdicts"]:
            print(f"  {verdict:>12}  {what}: {value}")
        if memory:
            print()
            print(memory_table(memory, r))
        if args.markdown:
            args.markdown.write_text(markdown(report), encoding="utf-8")
        print(f"\nwrote {args.json}" + (f" and {args.markdown}" if args.markdown else ""))
    finally:
        src_server.stop()
        tgt_server.stop()
    return 0


def _touch_one_percent(src: sa.Engine, round_no: int) -> str:
    """Change 1% of the source rows now (CST wall clock, as sources keep it) and return the
    window start the incremental run reads from. Rows an earlier round touched get an old
    update time back first, so each incremental run reads only its own 1%."""
    from etl.common import clock

    now = clock.naive(clock.now())
    with src.begin() as conn:
        conn.execute(sa.text(f"UPDATE {source.TABLE} SET modify_time = current_date - 7 "
                             f"WHERE modify_time > current_date - 2"))
        source.change_some(conn, 0.01, (now - timedelta(minutes=1)).isoformat(sep=" "), round_no)
    return (now - timedelta(minutes=30)).isoformat()


if __name__ == "__main__":
    raise SystemExit(main())
