"""Airflow's environment: what `etl airflow` starts Airflow with, what the running Airflow
processes have, and whether this code runs inside one of their tasks.

Airflow reads its settings from the environment; a new user would otherwise have to know five
of them before `airflow standalone` shows the DAGs in the right time zone. Whatever the caller
has set already wins: these are defaults, not overrides (`etl.common.airflow_home`, where `etl`
commands read them too, to find Airflow's connections).

A process reads its environment when it starts. A variable exported afterwards (a unit's
`url_env`, a file base's `base_env`, `ETL_*`) reaches Airflow's tasks only once the processes
that fork them (the scheduler with LocalExecutor, the Celery workers) are restarted with it.
So `etl check` compares the variables its mappings name with those of the running processes
(`task_processes`, `environment_warnings`), and a task missing one says so
(`etl.common.settings.unset_variable`).
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from etl.common import private, settings
from etl.common.airflow_home import airflow_environment

if TYPE_CHECKING:
    from etl.mapping import Mapping as UnitMapping

NAMES_SHOWN = 10  # variables named in one line; beyond, a count


def run_airflow(args: Sequence[str]) -> int:
    """Replace this process with `python -m airflow ARGS` (signals and exit code are Airflow's).
    `standalone`, `scheduler` and `db migrate` also set up the loads' pool (`ensure_target_pool`)."""
    env = airflow_environment()
    private.makedirs(env["AIRFLOW_HOME"])  # its passwords file, logs of runs
    print(f"AIRFLOW_HOME={env['AIRFLOW_HOME']} DAGs={env['AIRFLOW__CORE__DAGS_FOLDER']} "
          f"timezone={env['AIRFLOW__CORE__DEFAULT_TIMEZONE']} "
          f"api host={env.get('AIRFLOW__API__HOST', '[api] host of airflow.cfg')}",
          file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "airflow", *args]
    if list(args[:2]) == ["db", "migrate"]:  # the pool needs the tables this makes
        import subprocess

        done = subprocess.run(command, env=env, check=False).returncode
        return done or _pool_line(env, migrate=False)
    if args[:1] and args[0] in ("standalone", "scheduler"):
        _pool_line(env, migrate=args[0] == "standalone")  # standalone migrates anyway: first
    os.execvpe(sys.executable, command, env)
    return 0  # pragma: no cover - execvpe does not return


def _pool_line(env: Mapping[str, str], *, migrate: bool) -> int:
    """`ensure_target_pool` in this process with Airflow's environment (Airflow reads its
    configuration when first imported: nothing here imported it before), said in one line."""
    os.environ.update(env)
    try:
        name, slots = ensure_target_pool(migrate=migrate)
    except Exception as exc:  # noqa: BLE001 - the DB not migrated yet, unreachable: say, go on
        print(f"pool {settings.text('ETL_TARGET_POOL')} not set up: {exc.__class__.__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''} (uv run etl airflow db migrate "
              f"creates the metadata database and the pool)", file=sys.stderr, flush=True)
        return 1
    print(f"pool {name}: {slots} slots (ETL_TARGET_POOL_SLOTS)", file=sys.stderr, flush=True)
    return 0


def ensure_target_pool(*, migrate: bool = False) -> tuple[str, int]:
    """Create the Airflow pool the loads run in (`ETL_TARGET_POOL`), or set its size to
    `ETL_TARGET_POOL_SLOTS`: idempotent, at every start of `etl airflow`. The pool caps the loads
    into the target at once, one connection each; without it Airflow queues them forever (a
    task whose pool does not exist never runs). `default_pool` is left as it is: every other
    task runs in it. `migrate`: create or upgrade the metadata database first."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    if migrate:
        db.initdb()
    name = settings.text("ETL_TARGET_POOL") or settings.BY_NAME["ETL_TARGET_POOL"].default or ""
    slots = settings.integer("ETL_TARGET_POOL_SLOTS") or 4
    if name == Pool.DEFAULT_POOL_NAME:
        default = Pool.get_default_pool()
        return name, default.slots if default else 0
    Pool.create_or_update_pool(name, slots, "loads into the target database at once "
                               "(ETL_TARGET_POOL_SLOTS, set by etl airflow)", include_deferred=False)
    return name, slots


# --- running Airflow processes ----------------------------------------------------------------


@dataclass(frozen=True)
class AirflowProcess:
    """A running Airflow process whose environment its tasks inherit."""

    pid: int
    role: str                           # "scheduler", "standalone" or "celery worker"
    user: str | None = field(default=None, compare=False)
    environ: dict[str, str] | None = field(default=None, compare=False)  # None: not readable
    cwd: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.role} (pid {self.pid})"

    def setting(self, section: str, key: str) -> str | None:
        """An Airflow setting as this process sees it: its AIRFLOW__SECTION__KEY variable,
        else its airflow.cfg (AIRFLOW_CONFIG, else in AIRFLOW_HOME); None when unset."""
        env = self.environ or {}
        if (value := env.get(f"AIRFLOW__{section.upper()}__{key.upper()}")) is not None:
            return value
        cfg = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            cfg.read(self._path(env.get("AIRFLOW_CONFIG")) or self.home() / "airflow.cfg",
                     encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            return None
        value = cfg.get(section, key, fallback=None)
        return None if value is None else value.replace("{AIRFLOW_HOME}", str(self.home()))

    def home(self) -> Path:
        """Its AIRFLOW_HOME (Airflow's default: ~/airflow)."""
        return self._path((self.environ or {}).get("AIRFLOW_HOME") or "~/airflow") or Path("airflow")

    def _path(self, value: str | None) -> Path | None:
        """A path as this process reads it: `~` its HOME, relative to its working directory."""
        if not value:
            return None
        if value.startswith("~"):
            value = (self.environ or {}).get("HOME", "/") + value[1:]
        path = Path(value)
        return path if path.is_absolute() or not self.cwd else Path(self.cwd) / path

    def runs_tasks(self) -> bool:
        """A scheduler forks task processes only with a local executor (Airflow 3's default,
        also forced by `airflow standalone`); with Celery the workers do."""
        if self.role != "scheduler" or self.environ is None:
            return True
        return "localexecutor" in (self.setting("core", "executor") or "LocalExecutor").lower()

    def mappings_folder(self) -> Path | None:
        """The folder of mapping files this Airflow plans, as dags/dual_prevention.py finds it
        (`settings.path`: ETL_MAPPINGS_DIR, default mappings, relative to its ETL_HOME, else to
        its DAGs folder's parent, the project folder); None when its environment cannot be read."""
        if self.environ is None:
            return None
        dags = self._path(self.setting("core", "dags_folder")) or self.home() / "dags"
        home = self._path(self.environ.get("ETL_HOME")) or dags.resolve().parent
        folder = self.environ.get("ETL_MAPPINGS_DIR") or settings.BY_NAME["ETL_MAPPINGS_DIR"].default
        return (home / (folder or "mappings")).resolve()


def process_role(cmdline: Sequence[str]) -> str | None:
    """The role of a process by its command line, if it is one whose children run tasks:
    `python -m airflow scheduler`, `.../bin/python .../bin/airflow standalone` (a console script
    runs under its interpreter), `... airflow celery worker`. Celery renames its main process
    `[celeryd: host:MainProcess] -active- (celery worker ...)`, showing the arguments after the
    program's name: `celery worker` there is Airflow's. Launchers (`uv run airflow ...`, `etl
    airflow ...` before it replaces itself) are not Airflow and are not matched."""
    words = [w for w in cmdline if w]
    if len(words) == 1:  # a title set by setproctitle, as one string
        words = words[0].split()
    if not words:
        return None
    if words[0].startswith("[celeryd"):
        text = " ".join(words)
        return "celery worker" if "(celery worker" in text else None
    if not Path(words[0]).name.startswith("python"):
        return None
    i = 1
    while i < len(words) and words[i].startswith("-") and words[i] not in ("-m", "-c"):
        i += 2 if words[i] in ("-X", "-W") else 1  # interpreter options
    if words[i:i + 2] == ["-m", "airflow"]:
        rest = words[i + 2:]
    elif i < len(words) and Path(words[i]).name == "airflow":
        rest = words[i + 1:]
    else:
        return None
    if rest[:1] in (["scheduler"], ["standalone"]):
        return rest[0]
    return "celery worker" if rest[:2] == ["celery", "worker"] else None


def task_processes() -> list[AirflowProcess]:
    """The running Airflow processes on this machine whose environment tasks inherit: a
    scheduler running a local executor (it forks the task processes), `airflow standalone`
    (its scheduler does), Celery workers. DAG processors, API servers and triggerers run no
    tasks. Of a process and a matched descendant (standalone and its scheduler, a Celery worker
    and its forks) only the descendant is kept: its environment is the one tasks get."""
    import psutil

    parent: dict[int, int] = {}
    found: dict[int, AirflowProcess] = {}
    for proc in psutil.process_iter(["ppid", "cmdline", "username"]):
        parent[proc.pid] = proc.info["ppid"] or 0
        role = process_role(proc.info["cmdline"] or [])
        if role is None or proc.pid == os.getpid():
            continue
        try:
            environ, cwd = proc.environ(), proc.cwd()
        except psutil.AccessDenied:
            environ = cwd = None
        except psutil.Error:  # gone meanwhile
            continue
        found[proc.pid] = AirflowProcess(proc.pid, role, proc.info["username"], environ, cwd)
    outer: set[int] = set()
    for pid in found:
        up, seen = parent.get(pid, 0), {pid}
        while up and up not in seen:
            seen.add(up)
            if up in found:
                outer.add(up)
            up = parent.get(up, 0)
    return sorted((p for pid, p in found.items() if pid not in outer and p.runs_tasks()),
                  key=lambda p: p.pid)


# --- etl check --------------------------------------------------------------------------------


def environment_names(mapping: UnitMapping) -> dict[str, list[str]]:
    """The environment variables a mapping reads (a source's `url_env`, a file base's
    `base_env`), each with the keys that name it: {"WUXI_SRC": ["source.url_env"]}."""
    out: dict[str, list[str]] = {}
    for tx, ds in mapping.datasets.items():
        spec = mapping.source_for(tx)
        if spec.url_env:
            key = f"datasets.{tx}.source.url_env" if ds.source else "source.url_env"
            out.setdefault(spec.url_env, [])
            if key not in out[spec.url_env]:
                out[spec.url_env].append(key)
        for name, rule in ds.fields.items():
            if rule.file is not None and rule.file.base_env:
                out.setdefault(rule.file.base_env, []).append(f"datasets.{tx}.fields.{name}.file.base_env")
    return out


def _restart(many: bool) -> str:
    """The fix, said once for one variable or for several."""
    if many:
        return ("Airflow's processes read environment variables when they start; set them where "
                "they start and restart them, or use Airflow connections (conn_id:), which need "
                "no restart")
    return ("Airflow's processes read environment variables when they start; set it where they "
            "start and restart them, or use an Airflow connection (conn_id:), which needs no "
            "restart")


def _processes_text(processes: Sequence[AirflowProcess]) -> str:
    named = [str(p) for p in processes]
    return "the running Airflow " + (named[0] if len(named) == 1
                                      else ", ".join(named[:-1]) + " and " + named[-1])


def _listed(names: Sequence[str], label: dict[str, str] | None = None) -> str:
    """Up to NAMES_SHOWN names (each with its label), then how many in all."""
    shown = ", ".join(f"{n} ({label[n]})" if label else n for n in names[:NAMES_SHOWN])
    return shown + (f" … ({len(names)} in all)" if len(names) > NAMES_SHOWN else "")


def environment_warnings(mappings: Iterable[UnitMapping],
                         processes: Sequence[AirflowProcess] | None = None,
                         here: Mapping[str, str] | None = None) -> list[str]:
    """`warning:` lines for the environment variables the mappings name that the Airflow
    processes running them lack, or hold with another value than `here` (this shell has), one
    line per variable or, when several share a finding, per finding (a thousand units make a
    few lines); names and pids only, never a value. A `note:` when no running Airflow runs
    these mappings, so nothing could be compared. `processes`: `task_processes()` unless given."""
    here = os.environ if here is None else here
    uses: dict[str, list[tuple[Path, str]]] = {}   # variable -> (file, key) naming it
    askers: dict[str, list[AirflowProcess]] = {}
    folders: dict[AirflowProcess, Path | None] | None = None
    for m in mappings:
        names = environment_names(m)
        if not names:
            continue
        if folders is None:  # looked for once, and only when a mapping names a variable
            folders = {p: p.mappings_folder() for p in
                       (task_processes() if processes is None else processes)}
        # only the Airflow whose mappings folder holds the file runs it: another Airflow on the
        # machine (another project's, another engineer's) is not asked; an unreadable one may be it
        unit_folder = Path(m.path).resolve().parent
        mine = [p for p, folder in folders.items() if folder is None or folder == unit_folder]
        for name, keys in names.items():
            uses.setdefault(name, []).extend((Path(m.path), k) for k in keys)
            known = askers.setdefault(name, [])
            known.extend(p for p in mine if p not in known)
    if not uses:
        return []
    if not any(askers.values()):
        return [f"note: no Airflow scheduler or Celery worker running on this machine runs these "
                f"mappings, so whether Airflow's processes have {_listed(list(uses))} was not "
                f"checked; they read environment variables when they start (README, "
                f"\"Onboarding a unit\")"]
    found: dict[tuple[str, tuple[AirflowProcess, ...]], list[str]] = {}
    unreadable: dict[AirflowProcess, list[str]] = {}
    for name, procs in askers.items():
        by_state: dict[str, list[AirflowProcess]] = {}
        for p in procs:
            if p.environ is None:
                unreadable.setdefault(p, []).append(name)
            elif name not in p.environ:
                by_state.setdefault("missing", []).append(p)
            elif name in here and p.environ[name] != here[name]:
                by_state.setdefault("differs", []).append(p)
        for state, ps in by_state.items():
            found.setdefault((state, tuple(ps)), []).append(name)
    out = []
    for (state, procs), names in found.items():
        where = _processes_text(procs)
        if len(names) == 1:
            (path, key), *others = uses[names[0]]
            more = f" (and {len(others)} more)" if others else ""
            what = (f"is not in the environment of {where}" if state == "missing" else
                    f"has another value in the environment of {where} than in this shell")
            out.append(f"{path} [{key}]{more} warning: {names[0]} {what}: {_restart(False)}")
        else:
            what = (f"are not in the environment of {where}" if state == "missing" else
                    f"have other values in the environment of {where} than in this shell")
            files = {n: uses[n][0][0].name for n in names}
            out.append(f"warning: {len(names)} environment variables of the mappings {what}: "
                       f"{_listed(names, files)}: {_restart(True)}")
    for p, names in unreadable.items():
        out.append(f"warning: the environment of {_processes_text([p])}, user {p.user or '?'}, "
                   f"could not be read: run etl check as that user to see whether it has "
                   f"{_listed(names)}; {_restart(len(names) > 1)}")
    return out
