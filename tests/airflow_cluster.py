"""A real Airflow as separate processes, driven only through its public REST API (v2).

    with AirflowCluster(home, metadata_url=pg, executor="LocalExecutor", parallelism=8,
                        env={"ETL_MAPPINGS_DIR": ..., "AIRFLOW_CONN_ETL_TARGET": ...}) as af:
        af.wait_for_dag("dual_prevention_daily")
        run_id = af.trigger("dual_prevention_daily", conf={"mode": "full"})
        af.clear("dual_prevention_daily", run_id, [("ingest.load", 0)])  # Clear, with downstream
        assert af.wait_for_run("dual_prevention_daily", run_id, timeout=300) == "success", af.logs()
        states = [ti["state"] for ti in af.task_instances("dual_prevention_daily", run_id)]

`start()` runs `airflow db migrate`, then starts the API server, the scheduler and the DAG
processor (and, with `celery=`, `airflow celery worker` processes) on free loopback ports, each
with its own log file in `home`, and logs in as `admin`. `stop()` (also on leaving the `with`
block, and when `start()` fails half-way) kills every process it started and their descendants,
including task processes, which Airflow 3's supervisor puts in process groups of their own.

Nothing here imports Airflow: the cluster is subprocesses and HTTP, as an operator's script
would see it, so the tests and the benchmark can use it whatever DAG `dags/` holds. Tasks are
identified by what the API lists (count them, read their states), never by task ids.

Settings (all as AIRFLOW__* environment variables of every process; `env=` adds or overrides):

* metadata: SQLite in `home` by default; a `postgresql+psycopg://` URL otherwise, with
  `sql_alchemy_conn_async` set to the same URL on `postgresql+psycopg_async` (left unset,
  Airflow derives `postgresql+asyncpg`, which is not installed);
* simple auth manager, user `admin` with a random password kept in `home/passwords.json`;
  JWT secret, fernet key, `execution_api_server_url` on the API server's port;
* no scheduled runs (`scheduler.use_job_schedule = False`): only the runs triggered here;
  DAGs unpaused at creation; examples off; `default_timezone = Asia/Shanghai`;
* `core.parallelism` and `core.max_active_tasks_per_dag` = `parallelism`;
* the log servers of the scheduler and of every worker on free ports (not 8793, which
  another Airflow on the machine may hold);
* `celery={"broker_url": "redis://...", "result_backend": optional, "workers": [
  {"queues": "default", "concurrency": 2, "env": {...}, "cwd": path}, ...]}`: CeleryExecutor; the result
  backend defaults to the metadata database (`db+postgresql+psycopg://...`: the Celery
  provider passes psycopg 3 URLs through, psycopg2 is not installed). Each worker gets its own
  log server port, `--queues`, `--concurrency`, a node name `workerN@host` (or `name`), its log
  in `home/workerN.log`, and may override any variable and its working directory (two workers
  with different ETL_* settings or working folders). `start()` returns once each said "ready".

Environment variables of the caller starting with AIRFLOW or ETL_ are not passed on.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

ROOT = Path(__file__).resolve().parent.parent
DAGS = ROOT / "dags"
TERMINAL_RUN_STATES = ("success", "failed")
PAGE = 100  # the API's default maximum_page_limit


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """A tiny client of Airflow's public REST API. Logs in again once when a token expired."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None
        self._credentials: tuple[str, str] | None = None

    def login(self, username: str, password: str) -> None:
        self._credentials = (username, password)
        self.token = None
        self.token = self.call("POST", "/auth/token", {"username": username, "password": password})["access_token"]

    def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201),
             headers: dict[str, str] | None = None, timeout: float = 30) -> Any:
        status, payload = self._send(method, path, body, headers, timeout)
        if status == 401 and self._credentials and not path.startswith("/auth/"):
            self.login(*self._credentials)
            status, payload = self._send(method, path, body, headers, timeout)
        if status not in ok:
            raise AssertionError(f"{method} {path} -> {status}: {payload[:2000]!r}")
        return json.loads(payload) if payload else None

    def _send(self, method: str, path: str, body: Any, headers: dict[str, str] | None,
              timeout: float) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def _descendants(roots: list[int]) -> dict[int, int]:
    """Every live descendant of `roots` (not the roots): pid -> start time."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append((int(entry), stat[1]))
    found: dict[int, int] = {}
    todo = list(roots)
    while todo:
        for pid, started in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def _signal_if_same(pid: int, started: int, sig: int) -> None:
    """Signal `pid` only if it is still the process seen earlier (not a reused pid)."""
    stat = _proc_stat(pid)
    if stat is not None and stat[1] == started:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class AirflowCluster:
    """API server, scheduler, DAG processor (and Celery workers) of one throwaway Airflow."""

    def __init__(self, home: Path, *, metadata_url: str | None = None,
                 executor: str = "LocalExecutor", parallelism: int = 8,
                 env: dict[str, str] | None = None, celery: dict[str, Any] | None = None,
                 dags_folder: Path = DAGS, startup_timeout: float = 180) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.metadata_url = metadata_url or f"sqlite:///{self.home / 'airflow.db'}"
        self.executor = "CeleryExecutor" if celery else executor
        self.celery = celery
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.api = Api(f"http://127.0.0.1:{self.port}")
        self.env = self._base_env(dags_folder, parallelism)
        self.env.update(env or {})
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.timings: dict[str, float] = {}  # seconds: migrate, start, dag_parsed
        self._up_at = time.monotonic()

    # ------------------------------------------------------------------ configuration

    def _base_env(self, dags_folder: Path, parallelism: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "Asia/Shanghai",
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),  # 64 bytes: SHA512 wants >= 64
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs triggered here
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        })
        if self.metadata_url.startswith("postgresql"):
            scheme, rest = self.metadata_url.split("://", 1)
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = f"postgresql+psycopg_async://{rest}"
            if scheme == "postgresql":
                env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"postgresql+psycopg://{rest}"
        if self.celery:
            env["AIRFLOW__CELERY__BROKER_URL"] = self.celery["broker_url"]
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = self.celery.get("result_backend") or (
                "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        return env

    def _airflow(self) -> list[str]:
        return [sys.executable, "-m", "airflow"]

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> AirflowCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Migrate the metadata database, start every component, log in. On any failure
        everything started so far is stopped before the error propagates."""
        (self.home / "passwords.json").write_text(json.dumps({"admin": self.password}))
        t0 = time.monotonic()
        self.run_cli("db", "migrate", timeout=600)
        # the loads' pool, as `etl airflow` makes it (ETL_TARGET_POOL, ETL_TARGET_POOL_SLOTS)
        done = subprocess.run([sys.executable, "-c", "from etl.orchestration.airflow_env import "
                               "ensure_target_pool; ensure_target_pool()"], env=self.env,
                              cwd=self.home, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        self.timings["migrate"] = time.monotonic() - t0
        t0 = time.monotonic()
        try:
            for component in ("api-server", "scheduler", "dag-processor"):
                self._spawn(component, [component], self.env)
            for n, worker in enumerate((self.celery or {}).get("workers", [])):
                self._spawn_worker(n, worker)
            self._wait_for_api()
            self.api.login("admin", self.password)
            self._wait_for_workers()
        except BaseException:
            self.stop()
            raise
        self._up_at = time.monotonic()
        self.timings["start"] = self._up_at - t0

    def run_cli(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
        """`airflow ARGS` with the cluster's settings; its output, or AssertionError."""
        done = subprocess.run([*self._airflow(), *args], env={**self.env, **(env or {})},
                              cwd=self.home, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"airflow {' '.join(args)}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    def _spawn(self, name: str, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        with open(self.home / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([*self._airflow(), *args], env=env, cwd=cwd or self.home, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs.append((name, proc))

    def _spawn_worker(self, n: int, worker: dict[str, Any]) -> None:
        env = {**self.env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
               **worker.get("env", {})}
        args = ["celery", "worker", "--queues", worker.get("queues", "default"),
                "--concurrency", str(worker.get("concurrency", 2)),
                "--celery-hostname", f"{worker.get('name', f'worker{n}')}@%h"]
        self._spawn(f"worker{n}", args, env, worker.get("cwd"))

    def _check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"airflow {name} exited with {proc.returncode}\n{self.logs()}")

    def _wait_for_api(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self._check_alive()
            try:
                self.api.call("GET", "/api/v2/monitor/health", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, AssertionError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the API server did not come up\n{self.logs()}") from None
                time.sleep(0.5)

    def _wait_for_workers(self) -> None:
        """Until every Celery worker has said it is ready (it then consumes its queues)."""
        deadline = time.monotonic() + self.startup_timeout
        for name, _ in self.procs:
            if not name.startswith("worker"):
                continue
            while " ready." not in (self.home / f"{name}.log").read_text(errors="replace"):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise AssertionError(f"celery {name} did not become ready\n{self.logs()}")
                time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM every started process group and every descendant (task processes run in
        groups of their own), then SIGKILL whatever is left after 20 s. Idempotent."""
        if not self.procs:
            return
        roots = [p.pid for _, p in self.procs]
        seen = _descendants(roots)
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for pid, started in seen.items():
            _signal_if_same(pid, started, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        seen.update(_descendants(roots))
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        for pid, started in seen.items():
            _signal_if_same(pid, started, signal.SIGKILL)
        self.procs.clear()

    def logs(self, chars: int = 4000) -> str:
        """The tail of each component's log, for assertion messages."""
        parts = []
        for path in sorted(self.home.glob("*.log")):
            parts.append(f"--- {path.stem} ---\n" + path.read_text(errors="replace")[-chars:])
        return "\n".join(parts)

    # ------------------------------------------------------------------ DAGs and runs

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        """Until the DAG processor has stored `dag_id`; unpause it if needed. Its details."""
        t0 = time.monotonic()
        while (dag := self.api.call("GET", f"/api/v2/dags/{quote(dag_id)}", ok=(200, 404))).get("dag_id") != dag_id:
            self._check_alive()
            if time.monotonic() - t0 > timeout:
                errors = self.api.call("GET", "/api/v2/importErrors")
                raise AssertionError(f"{dag_id} was not parsed in {timeout}s; import errors: "
                                     f"{json.dumps(errors, ensure_ascii=False)[:3000]}\n{self.logs()}")
            time.sleep(0.5)
        if dag.get("is_paused"):
            dag = self.api.call("PATCH", f"/api/v2/dags/{quote(dag_id)}", {"is_paused": False})
        self.timings.setdefault("dag_parsed", time.monotonic() - self._up_at)  # since start() ended
        return dag

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None,
                logical_date: datetime | str | None = None) -> str:
        """Trigger a run (a manual run: no logical date unless given); its run id."""
        if isinstance(logical_date, datetime):
            if logical_date.tzinfo is None:
                raise ValueError("logical_date needs a time zone")
            logical_date = logical_date.isoformat()
        run = self.api.call("POST", f"/api/v2/dags/{quote(dag_id)}/dagRuns",
                            {"logical_date": logical_date, "conf": conf or {}})
        return str(run["dag_run_id"])

    def clear(self, dag_id: str, run_id: str, task_ids: list[str | tuple[str, int]], *,
              downstream: bool = True) -> list[dict[str, Any]]:
        """Clear task instances of a run as the UI's "Clear Task Instance" does (with its
        downstream tasks by default): the scheduler runs them again. The cleared instances."""
        body = {"dag_run_id": run_id, "task_ids": [list(t) if isinstance(t, tuple) else t
                                                   for t in task_ids],
                "include_downstream": downstream, "only_failed": False, "dry_run": False}
        cleared = self.api.call("POST", f"/api/v2/dags/{quote(dag_id)}/clearTaskInstances", body)
        return list(cleared.get("task_instances", []))

    def create_connection(self, connection_id: str, **fields: Any) -> None:
        """An Airflow connection through the API (conn_type, host, port, login, password, schema...)."""
        self.api.call("POST", "/api/v2/connections", {"connection_id": connection_id, **fields})

    def create_pool(self, name: str, slots: int, description: str = "") -> None:
        self.api.call("POST", "/api/v2/pools", {"name": name, "slots": slots, "description": description})

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """The run as the API shows it (state, queued_at, start_date, end_date, conf...)."""
        return dict(self.api.call("GET", f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}"))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300, poll: float = 2) -> str:
        """Until the run is success or failed; that state. AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while (state := self.run(dag_id, run_id)["state"]) not in TERMINAL_RUN_STATES:
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {state} after {timeout}s\n{self.logs()}")
            time.sleep(poll)
        return str(state)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (mapped ones each), paging through the API's limit."""
        path = f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        found: list[dict[str, Any]] = []
        while True:
            page = self.api.call("GET", f"{path}?{urlencode({'limit': PAGE, 'offset': len(found), 'order_by': 'id'})}")
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1,
                 try_number: int = 1) -> str:
        """A task instance's log as text, one line per record."""
        path = (f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id, safe='')}/taskInstances/"
                f"{quote(task_id)}/logs/{try_number}?map_index={map_index}")
        content = self.api.call("GET", path)["content"]
        return "\n".join(_log_line(c) for c in content)


def _log_line(record: Any) -> str:
    if isinstance(record, str):
        return record
    rest = {k: v for k, v in record.items() if k not in ("timestamp", "level", "event")}
    line = f"[{record.get('timestamp', '')}] {record.get('level', '')} {record.get('event', '')}"
    return line + (" " + json.dumps(rest, ensure_ascii=False, default=str) if rest else "")
