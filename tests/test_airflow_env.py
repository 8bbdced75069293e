"""Airflow's processes and their environment (etl/orchestration/airflow_env.py): which running processes give
tasks their environment, and `etl check`'s warnings when a variable a mapping names is not in it.

The processes are real: a stand-in `airflow` console script (an interpreter running a file named
`airflow`, as `.venv/bin/airflow scheduler` shows in `ps`) started with an environment of the
test's choosing. Real Airflow runs are in test_airflow_api.py (a running scheduler) and
test_dags.py (the message inside a task).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import gb32100, hidden_danger_mapping_text

from etl.cli import main
from etl.orchestration.airflow_env import process_role, task_processes

SLEEPER = """\
import subprocess, sys, time
if sys.argv[1:2] == ["standalone"]:  # like airflow standalone: a scheduler of its own
    subprocess.Popen([sys.executable, __file__, "scheduler"])
time.sleep(120)
"""


class FakeAirflow:
    """Processes that look like Airflow's to `ps`, each stopped at the end (its children too)."""

    def __init__(self, folder: Path) -> None:
        self.script = folder / "bin" / "airflow"
        self.script.parent.mkdir(parents=True)
        self.script.write_text(SLEEPER)
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, env: dict[str, str]) -> int:
        proc = subprocess.Popen([sys.executable, str(self.script), *args], env=env,
                                stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while psutil.Process(proc.pid).cmdline()[1:2] != [str(self.script)]:  # exec done
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return proc.pid

    def stop(self) -> None:
        for proc in self.procs:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()


@pytest.fixture
def airflow(tmp_path: Path) -> Iterator[FakeAirflow]:
    fake = FakeAirflow(tmp_path / "fake")
    try:
        yield fake
    finally:
        fake.stop()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
    return {**env, **extra}


def by_pid() -> dict[int, tuple[str, dict[str, str] | None]]:
    return {p.pid: (p.role, p.environ) for p in task_processes()}


# --- which processes ------------------------------------------------------------------------


@pytest.mark.parametrize(("cmdline", "role"), [
    # as psutil showed a real cluster (tests/airflow_cluster.py) and airflow standalone
    (["/work/.venv/bin/python", "-m", "airflow", "scheduler"], "scheduler"),
    (["/work/.venv/bin/python", "/work/.venv/bin/airflow", "scheduler"], "scheduler"),
    (["/usr/local/bin/python3.11", "-u", "-m", "airflow", "standalone"], "standalone"),
    (["/work/.venv/bin/python", "-m", "airflow", "celery", "worker", "--queues", "default"], "celery worker"),
    (["[celeryd: worker0@vm:MainProcess] -active- (celery worker --queues default --concurrency 1)", "", ""],
     "celery worker"),
    (["/work/.venv/bin/python", "-m", "airflow", "dag-processor"], None),
    (["/work/.venv/bin/python", "-m", "airflow", "triggerer"], None),
    (["airflow api_server -- host:127.0.0.1 port:40093", "", "", ""], None),
    (["airflow worker -- LocalExecutor: <idle>", "", "", ""], None),  # forked by the scheduler
    (["airflow", "worker", "--", "01a24ed3-e112-76e0-9805-9efd98cc2b8b"], None),  # a task
    (["airflow serve-logs"], None),
    (["[celeryd: worker0@vm:ForkPoolWorker-1]"], None),
    (["[celeryd: w@h:MainProcess] -active- (-A proj worker)"], None),  # another project's Celery
    (["uv", "run", "airflow", "scheduler"], None),  # a launcher: its child is the scheduler
    (["/work/.venv/bin/python", "/work/.venv/bin/etl", "airflow", "scheduler"], None),  # before exec
    (["/work/.venv/bin/python", "-c", "import time", "airflow", "scheduler"], None),
    (["less", "airflow", "scheduler"], None),
])
def test_process_roles_by_command_line(cmdline: list[str], role: str | None) -> None:
    assert process_role(cmdline) == role


def test_a_running_scheduler_is_found_with_its_environment(airflow: FakeAirflow, tmp_path: Path) -> None:
    pid = airflow.start("scheduler", env=clean_env(AIRFLOW_HOME=str(tmp_path), WUXI_SRC="sqlite:///x"))
    role, environ = by_pid()[pid]
    assert role == "scheduler" and environ is not None and environ["WUXI_SRC"] == "sqlite:///x"


def test_processes_that_run_no_tasks_are_left_out(airflow: FakeAirflow, tmp_path: Path) -> None:
    """DAG processor, API server, triggerer; a scheduler whose executor is Celery, by its
    environment or by its airflow.cfg. A Celery worker is in."""
    home = tmp_path / "celery-home"
    home.mkdir()
    (home / "airflow.cfg").write_text("[core]\nexecutor = CeleryExecutor\n")
    left_out = [airflow.start(c, env=clean_env(AIRFLOW_HOME=str(tmp_path)))
                for c in ("dag-processor", "api-server", "triggerer")]
    left_out.append(airflow.start("scheduler", env=clean_env(AIRFLOW_HOME=str(tmp_path),
                                                             AIRFLOW__CORE__EXECUTOR="CeleryExecutor")))
    left_out.append(airflow.start("scheduler", env=clean_env(AIRFLOW_HOME=str(home))))
    worker = airflow.start("celery", "worker", env=clean_env(AIRFLOW_HOME=str(home)))
    found = by_pid()
    assert not set(left_out) & set(found)
    assert found[worker][0] == "celery worker"


def test_of_standalone_and_its_scheduler_the_scheduler_is_named(airflow: FakeAirflow, tmp_path: Path) -> None:
    standalone = airflow.start("standalone", env=clean_env(AIRFLOW_HOME=str(tmp_path)))
    deadline = time.monotonic() + 10
    while not (children := psutil.Process(standalone).children()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    scheduler = children[0].pid
    while process_role(psutil.Process(scheduler).cmdline()) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    found = by_pid()
    assert found[scheduler][0] == "scheduler" and standalone not in found


# --- etl check ------------------------------------------------------------------------------


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project folder with dags/ and mappings/, and the environment its Airflow starts with."""
    (tmp_path / "project" / "dags").mkdir(parents=True)
    (tmp_path / "project" / "mappings").mkdir()
    return tmp_path / "project", clean_env(AIRFLOW_HOME=str(tmp_path / "airflow-home"),
                                           AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path / "project" / "dags"))


def unit_file(folder: Path, name: str, variable: str, n: int = 1) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(hidden_danger_mapping_text(gb32100(f"9132010{n:010d}"), variable, name=name),
                    encoding="utf-8")
    return path


def check(*paths: Path, capsys) -> list[str]:
    assert main(["check", "--offline", *map(str, paths)]) == 0
    return [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("note:") or "warning:" in line]


def test_check_names_a_variable_the_scheduler_lacks_or_holds_otherwise_never_its_value(
        airflow: FakeAirflow, deployment, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    project, env = deployment
    wuxi = unit_file(project / "mappings", "无锡化工", "WUXI_SRC")
    changed = unit_file(project / "mappings", "常州电梯", "CHANGZHOU_SRC", 2)
    same = unit_file(project / "mappings", "苏州电梯", "SUZHOU_SRC", 3)
    pid = airflow.start("scheduler", env={**env, "SUZHOU_SRC": "sqlite:///same.sqlite",
                                           "CHANGZHOU_SRC": "sqlite:///old-secret.sqlite"})
    monkeypatch.setenv("WUXI_SRC", "postgresql://etl:wuxi-secret@db/ehs")
    monkeypatch.setenv("SUZHOU_SRC", "sqlite:///same.sqlite")
    monkeypatch.setenv("CHANGZHOU_SRC", "sqlite:///new-secret.sqlite")
    restart = ("Airflow's processes read environment variables when they start; set it where "
               "they start and restart them, or use an Airflow connection (conn_id:), which needs "
               "no restart")
    lines = check(wuxi, changed, same, capsys=capsys)
    assert sorted(lines) == sorted([
        f"{wuxi} [source.url_env] warning: WUXI_SRC is not in the environment of the running "
        f"Airflow scheduler (pid {pid}): {restart}",
        f"{changed} [source.url_env] warning: CHANGZHOU_SRC has another value in the environment "
        f"of the running Airflow scheduler (pid {pid}) than in this shell: {restart}"])
    assert not any("secret" in line or "same.sqlite" in line for line in lines)


def test_a_thousand_units_missing_their_variables_make_one_line(
        airflow: FakeAirflow, deployment, capsys) -> None:
    project, env = deployment
    for n in range(1000):
        unit_file(project / "mappings", f"unit{n:04d}", f"UNIT{n:04d}_SRC", n)
    pid = airflow.start("scheduler", env=env)
    assert main(["check", "--offline", str(project / "mappings")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "warning:" in line]
    assert len(lines) == 1, lines[:3]
    assert lines[0].startswith(
        f"warning: 1000 environment variables of the mappings are not in the environment of the "
        f"running Airflow scheduler (pid {pid}): UNIT0000_SRC (unit0000.yaml), UNIT0001_SRC "
        f"(unit0001.yaml), ")
    assert "… (1000 in all): Airflow's processes read environment variables when they start; " \
           "set them where they start and restart them, or use Airflow connections" in lines[0]


def test_another_airflow_is_not_asked_and_a_note_says_nothing_was_compared(
        airflow: FakeAirflow, deployment, tmp_path: Path, capsys) -> None:
    """A draft outside the running Airflow's mappings folder (or another project's Airflow on
    the machine) is not that Airflow's business: one note, no warning."""
    project, env = deployment
    airflow.start("scheduler", env=env)
    (tmp_path / "drafts").mkdir()
    draft = unit_file(tmp_path / "drafts", "无锡化工", "WUXI_SRC")
    assert check(draft, capsys=capsys) == [
        "note: no Airflow scheduler or Celery worker running on this machine runs these mappings, "
        "so whether Airflow's processes have WUXI_SRC was not checked; they read environment "
        "variables when they start (README, \"Onboarding a unit\")"]


def test_a_mapping_without_environment_variables_gets_neither(airflow: FakeAirflow, deployment,
                                                              capsys) -> None:
    project, env = deployment
    airflow.start("scheduler", env=env)
    path = project / "mappings" / "literal.yaml"
    path.write_text(hidden_danger_mapping_text().replace("url_env: UNIT_A_SOURCE_URL",
                                                         "url: sqlite:///var/x.sqlite"), encoding="utf-8")
    assert check(path, capsys=capsys) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="looks as another user: needs root")
def test_another_users_airflow_is_said_to_be_unchecked(airflow: FakeAirflow, deployment) -> None:
    """Seen by another user (nobody), root's scheduler's environment cannot be read (the kernel
    refuses /proc/PID/environ): `etl check` says so instead of guessing."""
    from etl.orchestration.airflow_env import environment_warnings
    from etl.mapping import load_mapping

    project, env = deployment
    mapping = load_mapping(unit_file(project / "mappings", "无锡化工", "WUXI_SRC"))
    pid = airflow.start("scheduler", env=env)
    os.seteuid(65534)
    try:
        processes = task_processes()
    finally:
        os.seteuid(0)
    seen = next(p for p in processes if p.pid == pid)
    assert seen.environ is None and seen.user == "root"
    assert environment_warnings([mapping], [seen], here={"WUXI_SRC": "sqlite:///x"}) == [
        f"warning: the environment of the running Airflow scheduler (pid {pid}), user root, could "
        f"not be read: run etl check as that user to see whether it has WUXI_SRC; Airflow's "
        f"processes read environment variables when they start; set it where they start and "
        f"restart them, or use an Airflow connection (conn_id:), which needs no restart"]
