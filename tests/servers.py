"""Throwaway PostgreSQL, MariaDB and Redis servers for the test suite.

Each ``start_*`` function creates a private directory under ``/tmp`` (never under
the repository, which may live somewhere the database user cannot reach),
initialises a fresh cluster there, starts the server on a free 127.0.0.1 port
as an unprivileged user and returns a :class:`Server` whose ``admin_url`` is a
SQLAlchemy URL with full privileges.  ``Server.stop()`` shuts the server down
and deletes the directory; every started server is also stopped at interpreter
exit.  Servers left behind by a killed test run (SIGKILL, power loss) are
removed the next time a server is started.

``create_database(admin_url)`` / ``drop_database(url)`` make and remove
uniquely named empty databases on such a server.

Settings worth knowing:

* PostgreSQL: trust authentication on 127.0.0.1, UTF8 encoding, ``C`` locale,
  ``fsync=off``, server ``TimeZone=UTC``.
* MariaDB: real grant tables (root without password, ``CREATE USER`` works),
  ``utf8mb4`` with collation :data:`MARIADB_COLLATION`
  (``utf8mb4_nopad_bin``: code-point comparison without trailing-space
  padding, i.e. the same equality and uniqueness semantics as PostgreSQL's
  ``C`` collation and SQLite's ``BINARY``), server ``time_zone=+00:00``.

* Redis (``start_redis``, a Celery broker): no persistence (``save ""``,
  ``appendonly no``), no password, bound to 127.0.0.1; ``admin_url`` is
  ``redis://127.0.0.1:PORT/0``.

Neither database server follows the machine's time zone, so results do not depend on
where the tests run.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

__all__ = [
    "MARIADB_COLLATION",
    "Server",
    "ServerBinaryMissing",
    "ServerStartError",
    "create_database",
    "database_exists",
    "drop_database",
    "start_mariadb",
    "start_postgres",
    "start_redis",
    "stop_all",
]

#: Parent of every server directory.  Fixed (not ``$TMPDIR``) so that the
#: unprivileged database user can always traverse into it.
SERVER_ROOT: Final = Path("/tmp")
DIR_PREFIX: Final = "etl-test-"
MARIADB_COLLATION: Final = "utf8mb4_nopad_bin"
DEFAULT_TIMEOUT: Final = 60.0
_PORT_ATTEMPTS: Final = 3

Kind = Literal["postgresql", "mariadb", "redis"]


class ServerBinaryMissing(RuntimeError):
    """The server software is not installed on this machine."""

    def __init__(self, kind: Kind, wanted: str, install_hint: str) -> None:
        super().__init__(f"{kind} server binaries not found ({wanted}); install them with: {install_hint}")
        self.kind = kind
        self.install_hint = install_hint


class ServerStartError(RuntimeError):
    """The server software is installed but the server could not be started."""


@dataclass(eq=False)
class Server:
    """A running throwaway server.  ``stop()`` is idempotent."""

    kind: Kind
    admin_url: str
    port: int
    base_dir: Path
    startup_seconds: float
    _shutdown: Callable[[], None] = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        with _LOCK:
            if self._stopped:
                return
            self._stopped = True
            _RUNNING.discard(self)
        try:
            self._shutdown()
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


_LOCK = threading.Lock()
_RUNNING: set[Server] = set()
_swept = False


def stop_all() -> None:
    """Stop every server started by this process (also runs at exit)."""
    with _LOCK:
        servers = list(_RUNNING)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(stop_all)


# --------------------------------------------------------------------------- helpers


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _sweep_stale_dirs() -> None:
    """Remove servers whose owning test process died without cleaning up.

    Only directories created by this module are considered, only when their
    owner process (same PID namespace) is gone, and a server process is only
    signalled if its command line names that directory.
    """
    global _swept
    if _swept:
        return
    _swept = True
    my_ns = _pid_namespace()
    for entry in glob.glob(str(SERVER_ROOT / f"{DIR_PREFIX}*")):
        base = Path(entry)
        try:
            owner = json.loads((base / "owner.json").read_text())
            if owner.get("pidns") != my_ns or _pid_alive(int(owner["pid"])):
                continue
            pid = _read_pid(Path(owner["server_pid_file"]))
            if pid is not None and _pid_alive(pid) and str(base) in _cmdline(pid):
                os.kill(pid, signal.SIGQUIT if owner.get("kind") == "postgresql" else signal.SIGKILL)
                deadline = time.monotonic() + 10
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
            shutil.rmtree(base, ignore_errors=True)
        except (OSError, ValueError, KeyError, TypeError):
            continue


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _service_user(candidates: Sequence[str]) -> _RunAs:
    """The unprivileged account to run a server as (the current user unless root)."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return _RunAs(me.pw_name, me.pw_uid, me.pw_gid)
    for name in (*candidates, "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
    raise ServerStartError(f"none of the users {candidates!r} exist; database servers refuse to run as root")


def _make_base_dir(kind: Kind, user: _RunAs, server_pid_file: str) -> Path:
    _sweep_stale_dirs()
    base = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{kind}-", dir=SERVER_ROOT))
    (base / "owner.json").write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "pidns": _pid_namespace(),
                "kind": kind,
                "server_pid_file": str(base / server_pid_file),
            }
        )
    )
    if os.geteuid() == 0:
        os.chown(base, user.uid, user.gid)
    return base


def _child_env(base: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PG", "MYSQL", "MARIADB")) and k not in {"TZ", "LANG", "LANGUAGE"} and not k.startswith("LC_")
    }
    env.update(HOME=str(base), LC_ALL="C", TZ="UTC")
    return env


def _run(cmd: Sequence[str | os.PathLike[str]], user: _RunAs, base: Path, timeout: float) -> str:
    argv = [os.fspath(c) for c in cmd]
    try:
        proc = subprocess.run(
            argv,
            cwd=base,
            env=_child_env(base),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            start_new_session=True,
            **user.popen_kwargs(),
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerStartError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        raise ServerStartError(
            f"command failed with exit code {proc.returncode}: {' '.join(argv)}\n{proc.stdout[-4000:]}"
        )
    return str(proc.stdout)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"


def _bind_failed(log: str) -> bool:
    return "Address already in use" in log or "could not bind" in log or "Bind on TCP/IP port" in log


def _wait_connectable(url: str, timeout: float, alive: Callable[[], bool]) -> None:
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=_connect_timeout_args(url))
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if not alive():
                raise ServerStartError("server process exited during startup")
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                return
            except sa.exc.OperationalError as exc:
                last = exc
                time.sleep(0.1)
    finally:
        engine.dispose()
    raise ServerStartError(f"server did not accept connections within {timeout}s: {last}")


def _connect_timeout_args(url: str | URL) -> dict[str, Any]:
    backend = make_url(url).get_backend_name()
    return {"connect_timeout": 10} if backend in {"postgresql", "mysql", "mariadb"} else {}


def _register(server: Server) -> Server:
    with _LOCK:
        _RUNNING.add(server)
    return server


# --------------------------------------------------------------------------- PostgreSQL

_PG_INSTALL_HINT: Final = "apt-get install postgresql"


def _find_pg_bindir() -> Path:
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)

    def version(p: str) -> tuple[int, ...]:
        return tuple(int(x) for x in Path(p).parent.name.split(".") if x.isdigit())

    candidates += [
        Path(p)
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    ]
    for bindir in candidates:
        if all(os.access(bindir / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise ServerBinaryMissing("postgresql", "initdb, pg_ctl, postgres", _PG_INSTALL_HINT)


def _pg_conf(base: Path) -> str:
    return "\n".join(
        [
            "",
            "# --- throwaway test server (tests/servers.py) ---",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{base}'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "shared_buffers = 64MB",
            "max_connections = 100",
            "jit = off",
            "timezone = 'UTC'",
            "log_timezone = 'UTC'",
            "lc_messages = 'C'",
            "",
        ]
    )


def _place_files(folder: Path, files: dict[str, bytes] | None, user: _RunAs) -> None:
    """Write `files` (name: content) into `folder`, owned by the server's user, mode 0600
    (PostgreSQL refuses a key file others can read)."""
    for name, content in (files or {}).items():
        path = folder / name
        path.write_bytes(content)
        path.chmod(0o600)
        if os.geteuid() == 0:
            os.chown(path, user.uid, user.gid)


def start_postgres(timeout: float = DEFAULT_TIMEOUT, *, settings: dict[str, str] | None = None,
                   files: dict[str, bytes] | None = None) -> Server:
    """Start a throwaway PostgreSQL cluster; returns once it accepts connections.

    `files` (name: bytes) are written into the data directory before start, and `settings`
    appended to postgresql.conf as ``key = 'value'`` (relative paths there are relative to the
    data directory), e.g. ``settings={"ssl": "on", "ssl_cert_file": "server.crt", ...}``."""
    bindir = _find_pg_bindir()
    user = _service_user(("postgres", "mysql"))
    started = time.monotonic()
    base = _make_base_dir("postgresql", user, "data/postmaster.pid")
    data = base / "data"
    log = base / "postgres.log"

    def pg_ctl(*args: str, t: float = timeout) -> str:
        return _run([bindir / "pg_ctl", "-D", data, *args], user, base, t + 10)

    def shutdown() -> None:
        for mode in ("fast", "immediate"):
            try:
                pg_ctl("-m", mode, "-w", "-t", "30", "stop", t=30)
                return
            except ServerStartError:
                continue
        pid = _read_pid(data / "postmaster.pid")
        if pid is not None and _pid_alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    try:
        _run(
            [bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            user,
            base,
            timeout,
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(_pg_conf(base))
            conf.writelines(f"{k} = '{v}'\n" for k, v in (settings or {}).items())
        _place_files(data, files, user)
        for attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            try:
                pg_ctl("-l", str(log), "-w", "-t", str(int(timeout)), "-o", f"-p {port}", "start")
                break
            except ServerStartError as exc:
                if attempt + 1 < _PORT_ATTEMPTS and _bind_failed(_tail(log)):
                    log.unlink(missing_ok=True)
                    continue
                raise ServerStartError(f"PostgreSQL failed to start: {exc}\n--- {log} ---\n{_tail(log)}") from exc
        admin_url = URL.create(
            "postgresql+psycopg", username="postgres", host="127.0.0.1", port=port, database="postgres"
        ).render_as_string(hide_password=False)
        _wait_connectable(admin_url, timeout, lambda: (data / "postmaster.pid").exists())
    except BaseException:
        with contextlib.suppress(Exception):
            shutdown()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return _register(
        Server("postgresql", admin_url, port, base, time.monotonic() - started, shutdown)
    )


# --------------------------------------------------------------------------- MariaDB

_MARIADB_INSTALL_HINT: Final = "apt-get install mariadb-server"


def _find_exe(names: Sequence[str], dirs: Sequence[str]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for d in dirs:
            p = os.path.join(d, name)
            if os.access(p, os.X_OK):
                return p
    return None


def _find_mariadb() -> tuple[str, str]:
    dirs = ("/usr/sbin", "/usr/libexec", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/usr/local/mysql/bin")
    server = _find_exe(("mariadbd", "mysqld"), dirs)
    install_db = _find_exe(("mariadb-install-db", "mysql_install_db"), dirs)
    if server is None or install_db is None:
        raise ServerBinaryMissing("mariadb", "mariadbd, mariadb-install-db", _MARIADB_INSTALL_HINT)
    return server, install_db


def _mariadb_innodb_args() -> list[str]:
    return [
        "--skip-log-bin",
        "--innodb-buffer-pool-size=64M",
        "--innodb-log-file-size=16M",
        "--innodb-log-buffer-size=8M",
        "--innodb-flush-log-at-trx-commit=0",
        "--innodb-doublewrite=0",
        "--innodb-use-native-aio=0",
        "--skip-name-resolve",
    ]


def _terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a server process: SIGTERM, then SIGKILL after 30 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def start_mariadb(timeout: float = DEFAULT_TIMEOUT, *, args: Sequence[str] = (),
                  files: dict[str, bytes] | None = None) -> Server:
    """Start a throwaway MariaDB server; returns once it accepts connections.

    `files` (name: bytes) are written into the server's directory before start, and `args`
    added to the server's command line with ``{dir}`` standing for that directory, e.g.
    ``args=["--ssl-ca={dir}/ca.pem", ...]``."""
    server_exe, install_db = _find_mariadb()
    user = _service_user(("mysql", "postgres"))
    started = time.monotonic()
    base = _make_base_dir("mariadb", user, "mariadb.pid")
    data = base / "data"
    log = base / "mariadb.err"
    proc: subprocess.Popen[bytes] | None = None

    def shutdown() -> None:
        _terminate(proc)

    try:
        _run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                f"--basedir={Path(server_exe).resolve().parent.parent}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *_mariadb_innodb_args(),
            ],
            user,
            base,
            timeout,
        )
        _place_files(base, files, user)
        for attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            log.unlink(missing_ok=True)
            proc = subprocess.Popen(
                [
                    server_exe,
                    "--no-defaults",
                    f"--datadir={data}",
                    f"--socket={base / 'mariadb.sock'}",
                    f"--pid-file={base / 'mariadb.pid'}",
                    f"--log-error={log}",
                    f"--tmpdir={base}",
                    f"--port={port}",
                    "--bind-address=127.0.0.1",
                    "--character-set-server=utf8mb4",
                    f"--collation-server={MARIADB_COLLATION}",
                    "--default-time-zone=+00:00",
                    "--performance-schema=OFF",
                    "--max-connections=200",
                    *_mariadb_innodb_args(),
                    *(a.replace("{dir}", str(base)) for a in args),
                ],
                cwd=base,
                env=_child_env(base),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                **user.popen_kwargs(),
            )
            admin_url = URL.create(
                "mysql+pymysql",
                username="root",
                host="127.0.0.1",
                port=port,
                database="mysql",
                query={"charset": "utf8mb4"},
            ).render_as_string(hide_password=False)
            running = proc
            try:
                _wait_connectable(admin_url, timeout, lambda: running.poll() is None)
                break
            except ServerStartError as exc:
                shutdown()
                if attempt + 1 < _PORT_ATTEMPTS and _bind_failed(_tail(log)):
                    continue
                raise ServerStartError(f"MariaDB failed to start: {exc}\n--- {log} ---\n{_tail(log)}") from exc
    except BaseException:
        with contextlib.suppress(Exception):
            shutdown()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return _register(Server("mariadb", admin_url, port, base, time.monotonic() - started, shutdown))


# --------------------------------------------------------------------------- Redis

_REDIS_INSTALL_HINT: Final = "apt-get install redis-server"


def _redis_conf(base: Path, port: int) -> str:
    return "\n".join(
        [
            "# --- throwaway test server (tests/servers.py) ---",
            "bind 127.0.0.1",
            f"port {port}",
            "daemonize no",
            f"dir {base}",
            f"pidfile {base / 'redis.pid'}",
            f"logfile {base / 'redis.log'}",
            'save ""',
            "appendonly no",
            # the process title keeps the config path: the stale-server sweep matches its folder
            'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
            "",
        ]
    )


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(timeout: float = DEFAULT_TIMEOUT) -> Server:
    """Start a throwaway Redis server (no persistence); returns once it answers PING."""
    exe = _find_exe(("redis-server",), ("/usr/bin", "/usr/sbin", "/usr/local/bin"))
    if exe is None:
        raise ServerBinaryMissing("redis", "redis-server", _REDIS_INSTALL_HINT)
    user = _service_user(("redis", "postgres", "mysql"))
    started = time.monotonic()
    base = _make_base_dir("redis", user, "redis.pid")
    log = base / "redis.log"
    conf = base / "redis.conf"
    proc: subprocess.Popen[bytes] | None = None

    def shutdown() -> None:
        _terminate(proc)

    try:
        for attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            log.unlink(missing_ok=True)
            conf.write_text(_redis_conf(base, port))
            if os.geteuid() == 0:
                os.chown(conf, user.uid, user.gid)
            proc = subprocess.Popen(
                [exe, str(conf)],
                cwd=base,
                env=_child_env(base),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                **user.popen_kwargs(),
            )
            deadline = time.monotonic() + timeout
            while proc.poll() is None and not _redis_ping(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None and _redis_ping(port):
                break
            shutdown()
            if attempt + 1 < _PORT_ATTEMPTS and _bind_failed(_tail(log)):
                continue
            raise ServerStartError(f"Redis failed to start\n--- {log} ---\n{_tail(log)}")
    except BaseException:
        with contextlib.suppress(Exception):
            shutdown()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return _register(Server("redis", f"redis://127.0.0.1:{port}/0", port, base, time.monotonic() - started, shutdown))


# --------------------------------------------------------------------------- databases


@contextlib.contextmanager
def _autocommit(url: URL) -> Iterator[sa.Connection]:
    engine = sa.create_engine(
        url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=_connect_timeout_args(url)
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _admin_database(backend: str) -> str:
    return "postgres" if backend == "postgresql" else "mysql"


def create_database(admin_url: str | URL, prefix: str = "etl_test") -> str:
    """Create an empty, uniquely named database next to ``admin_url``'s and return its URL."""
    url = make_url(admin_url)
    backend = url.get_backend_name()
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with _autocommit(url) as conn:
        if backend == "postgresql":
            conn.exec_driver_sql(
                f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            )
        elif backend in {"mysql", "mariadb"}:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE {MARIADB_COLLATION}")
        else:
            raise ValueError(f"create_database does not support {backend!r} URLs")
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str | URL) -> None:
    """Drop the database ``url`` points at, even if connections to it are still open."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    name = parsed.database
    if not name:
        raise ValueError(f"URL names no database: {parsed!r}")
    if backend == "sqlite":
        if name != ":memory:":
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(name + suffix).unlink(missing_ok=True)
        return
    if name == _admin_database(backend):
        raise ValueError(f"refusing to drop the admin database {name!r}")
    with _autocommit(parsed.set(database=_admin_database(backend))) as conn:
        if backend == "postgresql":
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        elif backend in {"mysql", "mariadb"}:
            conn.exec_driver_sql("SET SESSION lock_wait_timeout = 30")
            ids = conn.execute(
                sa.text("SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"),
                {"db": name},
            ).scalars()
            for conn_id in list(ids):
                with contextlib.suppress(sa.exc.DBAPIError):  # may have gone away meanwhile
                    conn.exec_driver_sql(f"KILL CONNECTION {int(conn_id)}")
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        else:
            raise ValueError(f"drop_database does not support {backend!r} URLs")


def database_exists(url: str | URL) -> bool:
    """Whether the database ``url`` points at exists (server backends only)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    with _autocommit(parsed.set(database=_admin_database(backend))) as conn:
        if backend == "postgresql":
            query = "SELECT 1 FROM pg_database WHERE datname = :db"
        else:
            query = "SELECT 1 FROM information_schema.schemata WHERE schema_name = :db"
        return conn.execute(sa.text(query), {"db": parsed.database}).first() is not None
