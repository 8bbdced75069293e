"""Real-database fixtures (no mocks).

Session scope (started lazily, on first use, and stopped at session end):

* ``pg_server``      -> admin URL ``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres``
* ``mariadb_server`` -> admin URL ``mysql+pymysql://root@127.0.0.1:PORT/mysql?charset=utf8mb4``
* ``redis_url``      -> ``redis://127.0.0.1:PORT/0`` (no persistence; a Celery broker)

Function scope, each a fresh empty database that is dropped afterwards (open
connections do not prevent the drop):

* ``pg_url``, ``mariadb_url``, ``sqlite_url``
* ``db_url``: parametrised over ids ``sqlite``, ``postgresql``, ``mariadb``

Tests using the PostgreSQL / MariaDB / Redis fixtures are marked ``postgres`` /
``mariadb`` / ``redis`` automatically, so ``-m "not mariadb"`` deselects them.

A missing server binary skips those tests locally, but fails them when the
``CI`` environment variable is set (CI must never silently skip).

Nothing here changes process-wide state such as ``TZ``: the servers run in UTC
whatever the machine zone is, and ``Asia/Shanghai`` comes from ``zoneinfo``
(backed by the ``tzdata`` package in the lock file).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

try:
    from servers import (
        Server,
        ServerBinaryMissing,
        ServerStartError,
        create_database,
        drop_database,
        start_mariadb,
        start_postgres,
        start_redis,
    )
except ImportError:  # tests/ became a package
    from tests.servers import (  # type: ignore[no-redef]
        Server,
        ServerBinaryMissing,
        ServerStartError,
        create_database,
        drop_database,
        start_mariadb,
        start_postgres,
        start_redis,
    )

_STARTED: list[Server] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def _unavailable(exc: ServerBinaryMissing) -> NoReturn:
    if _in_ci():
        pytest.fail(f"{exc} (CI is set, so this is a failure, not a skip)", pytrace=False)
    marker = {"postgresql": "postgres", "mariadb": "mariadb", "redis": "redis"}[exc.kind]
    pytest.skip(f"{exc}; or run with -m 'not {marker}'")


def _serve(start: Callable[[], Server]) -> Iterator[str]:
    try:
        server = start()
    except ServerBinaryMissing as exc:
        _unavailable(exc)
    except ServerStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    _STARTED.append(server)
    try:
        yield server.admin_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Admin URL of a throwaway PostgreSQL server (one per session)."""
    yield from _serve(start_postgres)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[str]:
    """Admin URL of a throwaway MariaDB server (one per session)."""
    yield from _serve(start_mariadb)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a throwaway Redis server (one per session), e.g. a Celery broker."""
    yield from _serve(start_redis)


def _fresh_database(admin_url: str, prefix: str = "etl_test") -> Iterator[str]:
    url = create_database(admin_url, prefix=prefix)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database."""
    yield from _fresh_database(pg_server)


@pytest.fixture
def pg_url_2(pg_server: str) -> Iterator[str]:
    """A second fresh PostgreSQL database on the same server (e.g. a unit's source beside the
    target)."""
    yield from _fresh_database(pg_server)


@pytest.fixture
def airflow_metadata_url(pg_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database for Airflow's metadata (a real cluster, Celery)."""
    yield from _fresh_database(pg_server, prefix="airflow_meta")


@pytest.fixture
def mariadb_url(mariadb_server: str) -> Iterator[str]:
    """URL of a fresh, empty MariaDB database (utf8mb4)."""
    yield from _fresh_database(mariadb_server)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty SQLite database file in ``tmp_path``."""
    yield f"sqlite:///{tmp_path / 'test.sqlite3'}"


_DB_URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """A fresh empty database URL; the test runs once per backend."""
    return str(request.getfixturevalue(_DB_URL_FIXTURES[request.param]))


_MARKER_BY_FIXTURE = {
    "pg_server": "postgres",
    "pg_url": "postgres",
    "pg_url_2": "postgres",
    "airflow_metadata_url": "postgres",
    "mariadb_server": "mariadb",
    "mariadb_url": "mariadb",
    "redis_url": "redis",
}
_MARKER_BY_DB_PARAM = {"postgresql": "postgres", "mariadb": "mariadb"}


@pytest.hookimpl(tryfirst=True)  # before -m deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        wanted = {_MARKER_BY_FIXTURE[f] for f in getattr(item, "fixturenames", ()) if f in _MARKER_BY_FIXTURE}
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") in _MARKER_BY_DB_PARAM:
            wanted.add(_MARKER_BY_DB_PARAM[callspec.params["db_url"]])
        for name in sorted(wanted):
            if item.get_closest_marker(name) is None:
                item.add_marker(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for server in _STARTED:
        terminalreporter.write_line(f"throwaway {server.kind} server started in {server.startup_seconds:.1f}s")


def pytest_configure(config: pytest.Config) -> None:
    """Point Airflow at a throwaway home (SQLite metadata) before any test imports it: Airflow
    reads its configuration once, at first import."""
    import atexit
    import shutil
    import tempfile

    config.addinivalue_line("markers", "redis: needs a throwaway Redis server")
    if not os.environ.get("ETL_MEDIA_URL"):  # attachments collected by tests: never the project's var/media
        media = Path(tempfile.mkdtemp(prefix="etl-media-test-"))
        atexit.register(shutil.rmtree, media, ignore_errors=True)
        os.environ["ETL_MEDIA_URL"] = str(media)
    if not os.environ.get("ETL_SSH_KNOWN_HOSTS"):  # SFTP host keys: never the user's ~/.ssh
        keys = Path(tempfile.mkdtemp(prefix="etl-ssh-test-"))
        atexit.register(shutil.rmtree, keys, ignore_errors=True)
        os.environ["ETL_SSH_KNOWN_HOSTS"] = str(keys / "known_hosts")
    if os.environ.get("ETL_TEST_AIRFLOW_HOME"):
        return
    home = Path(tempfile.mkdtemp(prefix="etl-airflow-test-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ.update({
        "ETL_TEST_AIRFLOW_HOME": str(home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parent.parent / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    })


@pytest.fixture
def known_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's known_hosts file for SFTP file servers (`ETL_SSH_KNOWN_HOSTS`), not yet
    written: a test pins a server's key by writing its line (`SftpServer.known_hosts_line`)."""
    path = tmp_path / "ssh" / "known_hosts"
    monkeypatch.setenv("ETL_SSH_KNOWN_HOSTS", str(path))
    monkeypatch.delenv("ETL_SSH_TRUST_NEW_HOSTS", raising=False)
    path.parent.mkdir()
    return path


# --- Airflow in this process (dag.test()) ---------------------------------------------------


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated Airflow metadata database (SQLite in the throwaway AIRFLOW_HOME)."""
    from airflow.utils import db

    from etl.orchestration.airflow_env import ensure_target_pool

    db.initdb()
    ensure_target_pool()  # the loads' pool, as `etl airflow` makes it


@pytest.fixture
def dagbag():
    """Parse the DAGs folder (each test may set ETL_MAPPINGS_DIR first)."""
    from airflow.dag_processing.dagbag import DagBag

    def parse():
        return DagBag(dag_folder=str(Path(__file__).resolve().parent.parent / "dags"))

    return parse


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own staging folder and report site (never the project's var/)."""
    folder = tmp_path / "staging"
    monkeypatch.setenv("ETL_STAGING_DIR", str(folder))
    monkeypatch.setenv("ETL_REPORTS_DIR", str(tmp_path / "report"))
    return folder
