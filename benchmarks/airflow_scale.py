"""Issue 10's instrument: can the daily DAG ingest a province's units on one machine, and what does
Airflow cost over one plain `etl run` process doing the same work?

    uv run python benchmarks/airflow_scale.py [--units 200 1000] [--parallelism N] [--dag-slots N]
                                              [--rev REV]
                                              [--markdown FILE] [--json FILE]

The code measured is a copy of the working tree's dags/, etl/ and mappings/ taken at the start, or
with --rev that git revision's (`git archive`); the copy is first on PYTHONPATH of Airflow and of
the CLI. So edits made meanwhile change nothing, and a change to the DAG can be measured before
and after on the same machine and units.

For each size N:

1. N units (benchmarks/units.py): copies of the demo unit `demo_suzhou_lift`, each with its own
   SQLite source, Chinese mapping file name, orgNo and company name.
2. One throwaway PostgreSQL server (tests/servers.py) holds, as separate databases, Airflow's
   metadata, target #1 (Airflow's) and target #2 (the CLI's); both targets get their schema
   before anything is timed.
3. A real Airflow (tests/airflow_cluster.py: API server, scheduler with the LocalExecutor, DAG
   processor) with `core.parallelism` = --parallelism (default 2 x cores),
   `max_active_tasks_per_dag` = --dag-slots (default: the cores; it sizes the shards) and the
   sizing of airflow.cfg.example (max_map_length, max_tis_per_query, pool slots), target #1 as
   the connection `etl_target` (AIRFLOW_CONN_ETL_TARGET). Its setup (db migrate, start, first
   parse of the DAG) is timed apart, and so is one tick of `dual_prevention_frequent` with
   nothing due, waited for (skipped with --cold): the daily run then starts, as in a
   deployment, on a cluster that has served requests. Then `dual_prevention_daily` is triggered with conf
   {"mode": "full"} and a logical date (today 00:00 CST), and polled every second until it ends.
   "Airflow wall" is this process's clock from the trigger request to the poll that saw the end;
   the API's own run duration (start_date to end_date) and queueing (queued_at to start_date)
   are reported too, with the number of task instances, their states, the sum of their
   durations and the CPU seconds of all Airflow processes (the machine may be shared: CPU moves
   less than wall time with other load). Airflow is stopped before step 4 so the two never
   share the CPU.
4. `etl run --all --mappings-dir <units> --tx 06,07,09 --mode full --target <target #2>` in one
   process (the venv's `etl` console script): wall time including interpreter start, and CPU.
5. Both targets must hold the same records: per table of 06, 07, 09 the sorted (ID, rowHash,
   busType). The script prints "same records: yes/no" and exits 1 on no, or if a run failed.

The report: per size, Airflow wall and s/unit, task instances, CLI wall and s/unit, the ratio
Airflow/CLI (issue 26's goal at 200 units: <= 1.0), and a 10,000-unit figure EXTRAPOLATED linearly from the slope between
the two largest sizes (issue 26's goal: 10,000 units within 15 minutes), plus the machine (cores, CPU, load average
before and after each size). What the DAG looks like is not this script's business: it counts
task instances and reads their states through the REST API, so it measures whatever dags/ holds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from benchmarks.units import make_units  # noqa: E402
from tests.airflow_cluster import AirflowCluster  # noqa: E402
from tests.servers import Server, create_database, start_postgres  # noqa: E402

DAG_ID = "dual_prevention_daily"
FREQUENT_DAG_ID = "dual_prevention_frequent"
TX_CODES = ("06", "07", "09")
TABLES = {"06": "risk_point", "07": "hazard_source", "09": "hidden_danger"}
PROVINCE = 10_000
GOAL_SECONDS = 900.0   # issue 26: 10,000 units within 15 minutes
GOAL_RATIO = 1.0       # issue 26: Airflow/`etl run` at 200 units
CST = timezone(timedelta(hours=8))


@dataclass
class Measurement:
    units: int
    airflow_wall_s: float = 0.0          # this process's clock: trigger request -> end seen
    airflow_run_s: float | None = None   # the API's start_date -> end_date
    airflow_queued_s: float | None = None  # the API's queued_at -> start_date
    run_state: str = ""
    task_instances: int = 0
    ti_states: dict[str, int] = field(default_factory=dict)
    ti_seconds: float = 0.0              # sum of the task instances' durations
    task_seconds: dict[str, list[float]] = field(default_factory=dict)  # each task's instances' durations
    failures: list[str] = field(default_factory=list)
    setup_s: dict[str, float] = field(default_factory=dict)  # migrate, start, dag_parsed, warm_up
    airflow_cpu_s: float = 0.0           # CPU of every Airflow process, setup and teardown included
    cli_wall_s: float = 0.0
    cli_cpu_s: float = 0.0
    cli_exit: int = 0
    same_records: bool = False
    records: dict[str, int] = field(default_factory=dict)
    load_before: str = ""
    load_after: str = ""

    @property
    def airflow_per_unit(self) -> float:
        return self.airflow_wall_s / self.units

    @property
    def cli_per_unit(self) -> float:
        return self.cli_wall_s / self.units

    @property
    def ratio(self) -> float:
        return self.airflow_wall_s / self.cli_wall_s if self.cli_wall_s else float("nan")

    @property
    def ok(self) -> bool:
        return self.run_state == "success" and self.cli_exit == 0 and self.same_records


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, Any]:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    version = subprocess.run([sys.executable, "-c", "import airflow; print(airflow.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "airflow": version}


def children_cpu() -> float:
    """CPU seconds of every descendant this process (and they, down the chain) has waited for:
    Airflow's components, their task processes, the CLI. Not the PostgreSQL server's. On a shared
    machine this moves less than wall time does."""
    t = os.times()
    return t.children_user + t.children_system


def _iso_seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def _conn_uri(url: str) -> str:
    """An Airflow connection URI for a SQLAlchemy PostgreSQL URL of the throwaway server."""
    u = make_url(url)
    return f"postgresql://{u.username}@{u.host}:{u.port}/{u.database}"


@dataclass(frozen=True)
class Code:
    """Which dags/ and etl/ run: the working tree's, or a revision's exported copy."""

    label: str
    dags: Path
    env: dict[str, str]  # PYTHONPATH for an exported revision


CODE_DIRS = ("dags", "etl", "mappings")


def snapshot_working_tree(dest: Path) -> Code:
    """A copy of the working tree's dags/, etl/ and mappings/: edits made while the benchmark
    runs (the tree is shared) do not change what it measures."""
    for d in CODE_DIRS:
        shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dirty = _git("status", "--porcelain", "--", "dags", "etl")
    label = (f"snapshot of the working tree at {datetime.now(CST):%Y-%m-%d %H:%M} CST, HEAD "
             f"{_git('rev-parse', '--short', 'HEAD')}" + (" + uncommitted changes in dags/ or etl/" if dirty else ""))
    return _compiled(Code(label, dest / "dags", {"PYTHONPATH": str(dest)}), dest)


def export_rev(rev: str, dest: Path) -> Code:
    """`git archive REV dags etl mappings` into `dest`."""
    dest.mkdir(parents=True)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, *CODE_DIRS], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return _compiled(Code(f"revision {_git('rev-parse', '--short', rev)} ({rev})", dest / "dags",
                          {"PYTHONPATH": str(dest)}), dest)


def _compiled(code: Code, dest: Path) -> Code:
    """Byte-compile the copy: every task is a fresh process, and where PYTHONDONTWRITEBYTECODE is
    set it would recompile every module it imports (the venv's packages are compiled by uv)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest)], check=True)
    return code


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def _etl(code: Code, *args: str, log: Path, cwd: Path, extra: dict[str, str] | None = None) -> int:
    """The venv's `etl` console script on `code`'s package, output to `log`; its exit code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
    with open(log, "ab") as out:
        return subprocess.run([str(Path(sys.executable).parent / "etl"), *args],
                              env={**env, **code.env, **(extra or {})},
                              cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode


def _init_target(code: Code, url: str, folder: Path) -> None:
    if _etl(code, "init-target", "--target", url, log=folder / "init-target.log", cwd=folder) != 0:
        raise RuntimeError(f"etl init-target failed: {(folder / 'init-target.log').read_text()[-2000:]}")


def airflow_env(code: Code, folder: Path, target_url: str, units: int,
                dag_slots: int | None = None) -> dict[str, str]:
    """The ETL's settings and airflow.cfg.example's sizing for many units."""
    return {
        **({"AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(dag_slots)} if dag_slots else {}),
        **code.env,
        "ETL_MAPPINGS_DIR": str(folder / "mappings"),
        "ETL_STAGING_DIR": str(folder / "staging"),
        "ETL_CACHE_DIR": str(folder / "cache"),
        "AIRFLOW_CONN_ETL_TARGET": _conn_uri(target_url),
        "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(20_000, units * 9)),
        "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "128",
        "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "128",
    }


def warm_up_tick(cluster: AirflowCluster, timeout: float) -> float:
    """One tick of the 5-minute DAG (nothing is due: it plans no shard), waited for; seconds.

    In a deployment the daily run starts on a cluster that has served the frequent DAG's ticks
    all day. A cluster started just before it pays the API server's first execution request in
    the daily run's first task instead: `PATCH /execution/task-instances/{id}/run` took 4.0 s
    there against ~0.03 s after (200 units, 2026-12-08), a start-up cost, not the daily run's."""
    t0 = time.monotonic()
    cluster.wait_for_dag(FREQUENT_DAG_ID, timeout=300)
    run_id = cluster.trigger(FREQUENT_DAG_ID)
    if (state := cluster.wait_for_run(FREQUENT_DAG_ID, run_id, timeout=timeout, poll=0.5)) != "success":
        raise RuntimeError(f"the warm-up tick of {FREQUENT_DAG_ID} ended {state}\n{cluster.logs()}")
    return time.monotonic() - t0


def run_airflow(m: Measurement, code: Code, folder: Path, metadata_url: str, target_url: str,
                parallelism: int, timeout: float, warm_up: bool = True,
                dag_slots: int | None = None) -> None:
    """Step 3: the daily DAG over every unit, through a real scheduler."""
    cpu = children_cpu()
    cluster = AirflowCluster(folder / "airflow", metadata_url=metadata_url, parallelism=parallelism,
                             env=airflow_env(code, folder, target_url, m.units, dag_slots),
                             dags_folder=code.dags)
    with cluster:
        cluster.wait_for_dag(DAG_ID, timeout=300)
        if warm_up:
            cluster.timings["warm_up"] = warm_up_tick(cluster, timeout)
        m.setup_s = {k: round(v, 1) for k, v in cluster.timings.items()}
        logical = datetime.now(CST).replace(hour=0, minute=0, second=0, microsecond=0)
        print(f"  airflow: set up in {sum(m.setup_s.values()):.1f} s {m.setup_s}; triggering", flush=True)
        t0 = time.monotonic()
        run_id = cluster.trigger(DAG_ID, conf={"mode": "full"}, logical_date=logical)
        m.run_state = cluster.wait_for_run(DAG_ID, run_id, timeout=timeout, poll=1)
        m.airflow_wall_s = time.monotonic() - t0
        run = cluster.run(DAG_ID, run_id)
        m.airflow_run_s = _iso_seconds(run.get("start_date"), run.get("end_date"))
        m.airflow_queued_s = _iso_seconds(run.get("queued_at"), run.get("start_date"))
        tis = cluster.task_instances(DAG_ID, run_id)
        if m.run_state != "success":
            (folder / "airflow-components.log").write_text(cluster.logs(20_000))
    m.airflow_cpu_s = round(children_cpu() - cpu, 1)
    m.task_instances = len(tis)
    m.ti_states = dict(collections.Counter(str(t["state"]) for t in tis))
    m.ti_seconds = round(sum(t.get("duration") or 0.0 for t in tis), 1)
    for t in sorted(tis, key=lambda t: (t["task_id"], t["map_index"])):
        m.task_seconds.setdefault(t["task_id"], []).append(round(t.get("duration") or 0.0, 1))
    m.failures = [f"{t['task_id']}[{t.get('rendered_map_index') or t['map_index']}]: {t['state']}"
                  for t in tis if t["state"] not in ("success", "skipped")]


def run_cli(m: Measurement, code: Code, folder: Path, target_url: str) -> None:
    """Step 4: the same units and datasets in one `etl run` process."""
    t0, cpu = time.monotonic(), children_cpu()
    m.cli_exit = _etl(code, "run", "--all", "--mappings-dir", str(folder / "mappings"), "--tx",
                      ",".join(TX_CODES), "--mode", "full", "--target", target_url,
                      log=folder / "cli.log", cwd=folder)
    m.cli_wall_s = time.monotonic() - t0
    m.cli_cpu_s = round(children_cpu() - cpu, 1)


def records(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t: sorted(tuple(r) for r in conn.execute(sa.text(f'SELECT "ID", "rowHash", "busType" FROM {t}')))
                    for t in TABLES.values()}
    finally:
        engine.dispose()


def compare(m: Measurement, airflow_target: str, cli_target: str) -> None:
    """Step 5: the same records in both targets."""
    a, c = records(airflow_target), records(cli_target)
    m.records = {t: len(rows) for t, rows in a.items()}
    m.same_records = a == c and all(a.values())


def measure(n: int, code: Code, server: Server, workdir: Path, parallelism: int, timeout: float,
            warm: bool = False, *, warm_up: bool = True, dag_slots: int | None = None) -> Measurement:
    m = Measurement(units=n, load_before=loadavg())
    folder = workdir / f"units{n}"
    print(f"\n== {n} units: generating ...", flush=True)
    make_units(folder, n)
    if warm:  # as on every day after a file's first: its validated model is in the cache
        if _etl(code, "check", "--offline", str(folder / "mappings"), log=folder / "warm.log",
                cwd=folder, extra={"ETL_CACHE_DIR": str(folder / "cache")}) != 0:
            raise RuntimeError(f"etl check failed: {(folder / 'warm.log').read_text()[-2000:]}")
    metadata = create_database(server.admin_url, "airflow_meta")
    targets = [create_database(server.admin_url, name) for name in ("target_airflow", "target_cli")]
    for url in targets:
        _init_target(code, url, folder)
    run_airflow(m, code, folder, metadata, targets[0], parallelism, timeout, warm_up, dag_slots)
    print(f"  airflow: {m.run_state} in {m.airflow_wall_s:.1f} s, {m.task_instances} task instances "
          f"{m.ti_states}", flush=True)
    run_cli(m, code, folder, targets[1])
    print(f"  cli: exit {m.cli_exit} in {m.cli_wall_s:.1f} s", flush=True)
    compare(m, *targets)
    m.load_after = loadavg()
    print(f"  same records: {'yes' if m.same_records else 'no'} {m.records}", flush=True)
    return m


def extrapolate(ms: list[Measurement], units: int, attr: str) -> float | None:
    """Linear in the number of units, from the two largest sizes (one size: proportional)."""
    pts = sorted((m.units, getattr(m, attr)) for m in ms)
    if not pts:
        return None
    if len(pts) == 1 or pts[-1][0] == pts[-2][0]:
        return pts[-1][1] / pts[-1][0] * units
    (n1, t1), (n2, t2) = pts[-2], pts[-1]
    return t2 + (t2 - t1) / (n2 - n1) * (units - n2)


def report(ms: list[Measurement], info: dict[str, Any]) -> str:
    lines = [
        f"Code: {info['code']}.",
        "",
        f"Airflow {info['airflow']}, LocalExecutor, parallelism {info['parallelism']}"
        f"{', max_active_tasks_per_dag ' + str(info['dag_slots']) if info.get('dag_slots') else ''}, PostgreSQL "
        f"metadata; {info['cores']} cores ({info['cpu']}); load average before {info['load_before']}, "
        f"after {info['load_after']}."
        + (" Mapping cache warm (`--warm-cache`): every file validated before the run, as on "
           "every day after its first." if info.get("warm_cache") else "")
        + (" One tick of the 5-minute DAG ran first (nothing due), as in a deployment: the daily "
           "run is not the new cluster's first." if info.get("warm_up") else ""),
        "",
        f"| units | Airflow wall s | task instances | Airflow s/unit | CLI wall s | CLI s/unit | Airflow/CLI (goal ≤ {GOAL_RATIO:.1f}) | same records |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for m in ms:
        lines.append(f"| {m.units:,} | {m.airflow_wall_s:.1f} | {m.task_instances:,} | {m.airflow_per_unit:.2f} | "
                     f"{m.cli_wall_s:.1f} | {m.cli_per_unit:.3f} | {m.ratio:.1f} | {'yes' if m.same_records else 'no'} |")
    a, c = extrapolate(ms, PROVINCE, "airflow_wall_s"), extrapolate(ms, PROVINCE, "cli_wall_s")
    if a is not None and c is not None:
        lines.append(f"| {PROVINCE:,} (extrapolated) | {a:,.0f} | | {a / PROVINCE:.2f} | {c:,.0f} | "
                     f"{c / PROVINCE:.3f} | {a / c:.1f} | |")
        verdict = "meets" if a <= GOAL_SECONDS else "misses"
        how = ("linear in units, slope between the two largest sizes" if len({m.units for m in ms}) > 1
               else "proportional to units, from one size only")
        lines += ["", f"Extrapolated, not measured: {PROVINCE:,} units would take ~{a / 3600:.1f} h on "
                      f"Airflow ({verdict} the {GOAL_SECONDS / 60:.0f} min goal) and ~{c / 3600:.2f} h in "
                      f"one `etl run` process ({how})."]
        ac, cc = extrapolate(ms, PROVINCE, "airflow_cpu_s"), extrapolate(ms, PROVINCE, "cli_cpu_s")
        cores = info.get("cores") or 1
        if ac is not None and cc is not None:
            lines += ["", f"CPU, which moves less with other load than wall time: Airflow "
                          f"{ms[-1].airflow_cpu_s / ms[-1].units:.3f} s a unit at {ms[-1].units:,} units "
                          f"(every component and task), `etl run` {ms[-1].cli_cpu_s / ms[-1].units:.3f} s "
                          f"(ratio {ms[-1].airflow_cpu_s / ms[-1].cli_cpu_s:.2f}); extrapolated to "
                          f"{PROVINCE:,} units ~{ac:,.0f} s of Airflow CPU, i.e. ~{ac / cores / 60:.0f} min "
                          f"of wall time at best on {cores} cores of our own."]
    lines += ["", "| units | run (API start→end) s | queued s | Σ task s | TI states | Airflow CPU s | CLI CPU s | migrate s | start s | DAG parsed s | warm-up tick s | load before → after |",
              "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for m in ms:
        states = ", ".join(f"{k} {v}" for k, v in sorted(m.ti_states.items()))
        fmt = lambda x: "?" if x is None else f"{x:.1f}"  # noqa: E731
        lines.append(f"| {m.units:,} | {fmt(m.airflow_run_s)} | {fmt(m.airflow_queued_s)} | {m.ti_seconds:.1f} | "
                     f"{states} | {m.airflow_cpu_s:.1f} | {m.cli_cpu_s:.1f} | {m.setup_s.get('migrate', 0):.1f} | {m.setup_s.get('start', 0):.1f} | "
                     f"{m.setup_s.get('dag_parsed', 0):.1f} | {fmt(m.setup_s.get('warm_up'))} | "
                     f"{m.load_before} → {m.load_after} |")
    for m in ms:
        if m.task_seconds:
            lines += ["", f"Task instances' durations at {m.units:,} units (s): " + "; ".join(
                f"`{task}` {', '.join(f'{d:.1f}' for d in ds)}" for task, ds in m.task_seconds.items())]
    for m in ms:
        if m.failures:
            lines += ["", f"Failures at {m.units} units: " + "; ".join(m.failures[:20])]
    lines += ["", "Airflow wall: from the trigger request to the poll (every 1 s) that saw the run end; "
                  "setup (migrate, start, first parse) is not in it. CLI wall: the whole `etl run` "
                  "process, interpreter start included. CPU: user + system seconds of the processes "
                  "(Airflow: all components and tasks over the cluster's whole life, setup included; "
                  "the PostgreSQL server's own CPU is in neither)."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--units", type=int, nargs="+", default=[200, 1000], help="sizes (default 200 1000)")
    ap.add_argument("--parallelism", type=int, default=2 * (os.cpu_count() or 1),
                    help="core.parallelism (default 2 x cores)")
    ap.add_argument("--dag-slots", type=int, default=os.cpu_count() or 1,
                    help="core.max_active_tasks_per_dag, which sizes the shards (default: the cores: "
                         "one shard a core ran 1,000 units ~20%% faster than two, 2026-12-08)")
    ap.add_argument("--rev", help="measure this git revision's dags/ and etl/ (default: the working tree)")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="per Airflow run, seconds")
    ap.add_argument("--markdown", type=Path, help="write the report here")
    ap.add_argument("--json", type=Path, help="write the measurements here")
    ap.add_argument("--keep", action="store_true", help="keep the working folder (units, logs)")
    ap.add_argument("--warm-cache", action="store_true",
                    help="validate the mapping files into the tasks' cache first (untimed), as "
                         "every daily run after a file's first finds them; `etl run` validates "
                         "its files either way")
    ap.add_argument("--cold", action="store_true",
                    help="no warm-up tick: the daily run is the new cluster's first (and pays the "
                         "API server's first execution request, ~4 s here)")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="measure nothing: print (and --markdown) the report of a --json file")
    return ap.parse_args(argv)


def render(path: Path) -> str:
    """The report of measurements saved with --json."""
    saved = json.loads(path.read_text())
    known = {f for f in Measurement.__dataclass_fields__}
    ms = [Measurement(**{k: v for k, v in m.items() if k in known}) for m in saved["sizes"]]
    return report(ms, saved["machine"])


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the finally blocks stop Airflow and PostgreSQL


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        text = render(args.render)
        print(text)
        if args.markdown:
            args.markdown.write_text(f"# Airflow at scale\n\n{text}\n")
        return 0
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    info = {**machine(), "parallelism": args.parallelism, "dag_slots": args.dag_slots,
            "load_before": loadavg(),
            "warm_cache": args.warm_cache, "warm_up": not args.cold}
    workdir = Path(tempfile.mkdtemp(prefix="etl-scale-"))
    code = export_rev(args.rev, workdir / "code") if args.rev else snapshot_working_tree(workdir / "code")
    info["code"] = code.label
    print(f"code: {code.label}", flush=True)
    server = start_postgres()
    ms: list[Measurement] = []
    finished = False
    try:
        for n in sorted(args.units):
            ms.append(measure(n, code, server, workdir, args.parallelism, args.timeout,
                              args.warm_cache, warm_up=not args.cold, dag_slots=args.dag_slots))
        finished = True
    finally:
        server.stop()
        info["load_after"] = loadavg()
        if args.keep or not finished or not all(m.ok and not m.failures for m in ms):
            print(f"working folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(ms, info)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(f"# Airflow at scale ({datetime.now(CST):%Y-%m-%d %H:%M} CST)\n\n{text}\n")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "sizes": [asdict(m) for m in ms]},
                                        ensure_ascii=False, indent=1))
    ok = all(m.ok for m in ms)
    print(f"\nsame records: {'yes' if all(m.same_records for m in ms) else 'no'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
