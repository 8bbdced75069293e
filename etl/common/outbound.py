"""Outbound connections, one home for the rules every connection follows: to units' sources,
the target and file servers. Database URLs get the project's drivers (`normalise_url`); an
Airflow connection becomes a URI one way (`connection_uri`), its password masked; and TLS.

Encrypted transport to PostgreSQL and MySQL/MariaDB sources and targets.

TLS options come from the URL (an Airflow connection's extras arrive as its query parameters):
psycopg reads libpq's own (`sslmode=verify-full&sslrootcert=/path/ca.pem`); MySQL URLs take
`ssl_ca`, `ssl_capath`, `ssl_cert`, `ssl_key`, `ssl_cipher`, `ssl_verify_cert`,
`ssl_verify_identity` (alias `ssl_check_hostname`), `ssl_disabled` and `ssl=true`, translated
here into what pymysql understands: SQLAlchemy moves some of them into an `ssl` dict and
passes the rest on as strings, so `ssl_ca` with `ssl_verify_cert=true` would lose the CA and
`ssl_verify_cert=false` would count as true.

When TLS is required (`require_tls: true` under a mapping's `source:`, or `ETL_REQUIRE_TLS=1`
for every source and the target) a URL that asks for no TLS is refused before connecting, and
every new connection is checked to be encrypted by the server's own account of the session.
SQLite is a local file, not a network connection: the requirement does not apply to it.

Units' file servers (`etl.media.files`). The base (a mapping's `file:`, the variable or Airflow
connection it names) is the collecting organisation's word for where a unit's files are; the
server at it, what it answers and the DNS its name resolves through may be the unit's, and are
not trusted. So (`check_file_base`, `http_client`, `ssh_client`):

* TLS: the unit's `source.require_tls` covers its file bases too, `ETL_REQUIRE_TLS=1` every
  base; then only `https://` and `sftp://` are allowed (local and mounted folders are not a
  connection of ours). A plain `http://` base is refused before anything is fetched.
* Redirects are followed within the base's own origin (scheme, host, port) only: a hop to
  another one is refused before it is sent (`RedirectRefused`, an aiohttp client middleware).
* Addresses: a host name may lead only to public addresses; loopback, private, link-local,
  shared and reserved ones are refused (`AddressRefused`) unless the base names that very
  address (a unit's intranet server at `http://10.1.2.3/`). Cloud metadata addresses are
  refused even then. The check is made on the resolver's answer that the connection then uses
  (aiohttp's connector connects to what its resolver returned; SSH gets a socket connected
  here), so a name is resolved once per connection and cannot answer one address for the check
  and another for the fetch.
* SSH host keys are checked against `ETL_SSH_KNOWN_HOSTS`: an unknown key is refused unless
  `ETL_SSH_TRUST_NEW_HOSTS=1` (then recorded), a changed key always (`HostKeyRefused`), before
  any password is sent.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from etl.common import airflow_home, private, settings
from etl.common.errors import ConfigError
from etl.common.masking import mask_url, register_secrets, register_url_secrets

_SCHEMES = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}


def normalise_url(url: str | URL, origin: str = "the URL") -> URL:
    """Pick the project's drivers (psycopg 3, pymysql) when a URL names none. A URL that does
    not parse, or names a database SQLAlchemy cannot load, is a `ConfigError` naming `origin`
    (where the URL came from) and showing the URL masked."""
    try:
        parsed = make_url(url)
        if parsed.drivername in _SCHEMES:
            parsed = parsed.set(drivername=_SCHEMES[parsed.drivername])
        parsed.get_dialect()
    except (sa.exc.ArgumentError, ValueError, TypeError) as e:
        reason = ("unknown database or driver" if isinstance(e, sa.exc.NoSuchModuleError)
                  else "bad port" if isinstance(e, ValueError) else "not a SQLAlchemy URL")
        raise ConfigError(f"{origin} is not a usable database URL ({reason}): {mask_url(url)}; "
                          f"write it as dialect+driver://user@host:port/database") from None
    if parsed.drivername.startswith("mysql") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def connection_uri(conn_id: str, *, required: bool = True) -> str | None:
    """An Airflow connection's URI, through the chain Airflow itself reads connections with:
    inside a task the Task SDK's (AIRFLOW_CONN_*, configured backends, the API server's metadata
    database); elsewhere (`etl check`, `etl run`) Airflow's server-side chain with this project's
    AIRFLOW_HOME (`airflow_home.use_project_airflow`), whose metadata database is where `etl
    airflow connections add` writes. The SDK's `Connection.get` outside a task reads only
    environment variables. Its password is registered with the masker. A connection not defined
    is a `ConfigError` saying where it was looked for and how to add it, or None when not
    `required`."""
    in_task = settings.in_airflow_task()
    if not in_task:
        airflow_home.use_project_airflow()
    try:
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # pragma: no cover - airflow is a dependency
        raise ConfigError(f"conn_id {conn_id!r} needs Airflow installed") from None
    try:
        if in_task:
            from airflow.sdk import Connection

            conn = Connection.get(conn_id)
        else:
            from airflow.models.connection import Connection as StoredConnection

            conn = StoredConnection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        if not required:
            return None
        raise ConfigError(f"Airflow connection {conn_id!r} not found in {_searched(conn_id, in_task)}: "
                          f"add it with `etl airflow connections add {conn_id} --conn-uri ...` "
                          f"(or in the Airflow UI)") from None
    register_secrets([conn.password])
    uri = conn.get_uri()
    register_url_secrets(uri)
    return uri


def _searched(conn_id: str, in_task: bool) -> str:
    """Where Airflow looked for a connection, for the not-found message: the environment
    variable, each secrets backend, the metadata database (masked) and its AIRFLOW_HOME."""
    env = f"environment variable AIRFLOW_CONN_{conn_id.upper()}"
    if in_task:
        return f"{env}, the secrets backends or the metadata database this task reaches"
    from airflow.configuration import conf, ensure_secrets_loaded

    places = []
    for backend in ensure_secrets_loaded():
        name = type(backend).__name__
        if name == "EnvironmentVariablesBackend":
            places.append(env)
        elif name == "MetastoreBackend":
            db = mask_url(conf.get("database", "sql_alchemy_conn", fallback="") or "?")
            places.append(f"the metadata database {db} (AIRFLOW_HOME={airflow_home.airflow_home()})")
        else:
            places.append(f"secrets backend {name}")
    return ", ".join(places) or env


ENV = "ETL_REQUIRE_TLS"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_PLAIN_SSLMODES = ("disable", "allow", "prefer")  # libpq may then talk in clear
MYSQL_TLS_OPTIONS = ("ssl", "ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher",
                     "ssl_check_hostname", "ssl_verify_cert", "ssl_verify_identity", "ssl_disabled")
# pymysql.connect's own keywords among them: given in connect_args to override the URL's strings
_PYMYSQL_KWARGS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_disabled", "ssl_verify_cert",
                   "ssl_verify_identity")


def requirement(spec: Any = None) -> str | None:
    """Why TLS is required here (for messages), or None: `ETL_REQUIRE_TLS` (sources and the
    target) or the source spec's `require_tls`."""
    if settings.flag(ENV):
        return f"{ENV}={settings.raw(ENV)}"
    if spec is not None and getattr(spec, "require_tls", False):
        return "source.require_tls"
    return None


def _flag(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, tuple):  # a key repeated in the query string: the last one counts
        value = value[-1]
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"URL option {name}={str(value)[:20]!r} is not a yes/no value: use true or false")


def _mysql_options(url: URL) -> dict[str, str]:
    return {k.lower(): (v[-1] if isinstance(v, tuple) else v) for k, v in url.query.items()
            if k.lower() in MYSQL_TLS_OPTIONS}


def mysql_connect_args(url: URL) -> dict[str, Any]:
    """pymysql's TLS arguments for a MySQL URL's ssl options ({} when it has none). A CA
    (`ssl_ca`, `ssl_capath`) means verify the server's certificate and host name unless
    `ssl_verify_cert` / `ssl_verify_identity` say false; `ssl=true` alone encrypts without
    verifying (like libpq's sslmode=require)."""
    q = _mysql_options(url)
    if not q:
        return {}
    overrides: dict[str, Any] = {k: None for k in _PYMYSQL_KWARGS}
    if _flag(q.get("ssl_disabled"), "ssl_disabled", False):
        return {**overrides, "ssl": None, "ssl_disabled": True}
    has_ca = bool(q.get("ssl_ca") or q.get("ssl_capath"))
    verify = _flag(q.get("ssl_verify_cert"), "ssl_verify_cert", has_ca)
    identity = _flag(q.get("ssl_verify_identity", q.get("ssl_check_hostname")),
                     "ssl_verify_identity", verify)
    wanted = (has_ca or verify or identity or bool(q.get("ssl_cert") or q.get("ssl_key"))
              or _flag(q.get("ssl"), "ssl", False))
    if not wanted:
        return {**overrides, "ssl": None}
    ssl: dict[str, Any] = {"verify_mode": verify, "check_hostname": identity and verify}
    for key in ("ca", "capath", "cert", "key", "cipher"):
        if q.get(f"ssl_{key}"):
            ssl[key] = q[f"ssl_{key}"]
    return {**overrides, "ssl": ssl}


def asks_for_tls(url: URL) -> bool:
    """Does the URL itself make the driver encrypt (or refuse to connect)?"""
    backend = url.get_backend_name()
    if backend == "postgresql":
        return url.query.get("sslmode", "prefer") not in _PLAIN_SSLMODES
    if backend in ("mysql", "mariadb"):
        return bool(mysql_connect_args(url).get("ssl"))
    return False


def enforce(url: URL, why: str | None, origin: str) -> URL:
    """The URL to connect with when TLS is required (`why`), else `url` as given. PostgreSQL
    without an sslmode gets `sslmode=require`; a URL that asks for a plain connection
    (sslmode disable/allow/prefer; a MySQL URL without ssl_ca or ssl=true) is a `ConfigError`.
    SQLite is local: returned unchanged."""
    backend = url.get_backend_name()
    if why is None or backend == "sqlite":
        return url
    if backend == "postgresql":
        mode = url.query.get("sslmode")
        if mode is None:
            return url.update_query_dict({"sslmode": "require"})
        if mode in _PLAIN_SSLMODES:
            raise ConfigError(f"{origin} sets sslmode={mode} but TLS is required ({why}): use "
                              f"sslmode=verify-full&sslrootcert=/path/to/ca.pem (or at least "
                              f"sslmode=require)")
        return url
    if backend in ("mysql", "mariadb"):
        if not asks_for_tls(url):
            raise ConfigError(f"{origin} has no TLS options but TLS is required ({why}): add "
                              f"?ssl_ca=/path/to/ca.pem (verifies the server) or ?ssl=true")
        return url
    raise ConfigError(f"{origin}: TLS is required ({why}) but cannot be checked for a "
                      f"{backend} database: use PostgreSQL or MySQL/MariaDB, or unset it")


def _encrypted(dbapi_conn: Any, backend: str) -> bool:
    cur = dbapi_conn.cursor()
    try:
        if backend == "postgresql":
            cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            row = cur.fetchone()
            return bool(row and row[0])
        cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
        row = cur.fetchone()
        return bool(row and row[1])
    finally:
        cur.close()
        dbapi_conn.rollback()


def verify_on_connect(engine: Engine, why: str, origin: str) -> None:
    """Check each new connection of `engine` is encrypted, by asking the server; a plain one is
    closed and refused (`ConfigError`)."""
    backend = engine.dialect.name
    if backend not in ("postgresql", "mysql", "mariadb"):
        return

    @sa.event.listens_for(engine, "connect")
    def _check(dbapi_conn: Any, _record: Any) -> None:
        if not _encrypted(dbapi_conn, backend):
            dbapi_conn.close()
            raise ConfigError(f"{origin}: the server accepted a connection without TLS, but TLS "
                              f"is required ({why}): turn on TLS in the URL (sslmode=verify-full "
                              f"or ssl_ca=...) and on the server")


# --- file servers ------------------------------------------------------------------------------

log = logging.getLogger("etl")

KNOWN_HOSTS_ENV = "ETL_SSH_KNOWN_HOSTS"
TRUST_NEW_HOSTS_ENV = "ETL_SSH_TRUST_NEW_HOSTS"
#: Schemes of file bases whose transport is encrypted (and, for https, the server verified).
ENCRYPTED_FILE_SCHEMES = frozenset({"https", "sftp", "ssh"})
#: A local or mounted folder: no connection of ours, so no TLS to require.
LOCAL_FILE_SCHEMES = frozenset({"", "file"})
#: Cloud instance metadata services: never a unit's file server, even when a base names one.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, Azure, Google Cloud, Huawei Cloud, Baidu, OpenStack
    "169.254.170.2",    # AWS ECS task metadata
    "169.254.0.23",     # Tencent Cloud
    "100.100.100.200",  # Alibaba Cloud
    "fd00:ec2::254",    # AWS over IPv6
))


class Refused(Exception):
    """A file server connection these rules refuse, raised inside a client library's hook (an
    aiohttp middleware or resolver, paramiko's host key policy) and found by the caller in the
    library's error chain; `reason` is one line without credentials."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class RedirectRefused(Refused):
    """The server redirected to another origin (`target`: scheme://host:port only, since a
    redirect's path or query may carry a token)."""

    def __init__(self, origin: str, target: str):
        self.origin, self.target = origin, target
        super().__init__(f"redirected to {target}, another server than {origin}")


class AddressRefused(Refused):
    """A host name led to addresses a file server may not be reached at."""


class HostKeyRefused(Refused):
    """An SSH server's host key is not the one recorded for it, or none is."""


def _file_scheme(base: str) -> str:
    scheme = urlsplit(base).scheme.lower() if "://" in base else ""
    return "" if len(scheme) == 1 else scheme  # C:\... is a drive


def _literal(host: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally (canonical forms only: `127.1` is a name here)."""
    try:
        return ipaddress.ip_address((host or "").strip("[]").split("%")[0])
    except ValueError:
        return None


def check_file_base(base: str, why: str | None, where: str, shown: str) -> None:
    """Refuse, before anything is fetched, a file base these rules forbid whatever its server
    does (`ConfigError`, one line naming `where` the base comes from and the base as `shown`):
    a scheme without TLS when TLS is required (`why`, from `requirement`); a cloud metadata
    address."""
    scheme = _file_scheme(base)
    if why and scheme not in LOCAL_FILE_SCHEMES | ENCRYPTED_FILE_SCHEMES:
        if scheme == "http":
            raise ConfigError(f"{where}: the file base {shown} is plain http:// but TLS is "
                              f"required ({why}): use https:// (the unit's server must offer it) "
                              f"or sftp://")
        raise ConfigError(f"{where}: TLS is required ({why}) but cannot be checked for the "
                          f"{scheme}:// file base {shown}: use https:// or sftp://")
    ip = _literal(urlsplit(base).hostname) if scheme not in LOCAL_FILE_SCHEMES else None
    if ip is not None and _plain(ip) in METADATA_ADDRESSES:
        raise ConfigError(f"{where}: the file base {shown} names {ip}, a cloud metadata "
                          f"address, not a file server: give the unit's file server")


def _plain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped if mapped is not None else ip


def address_problem(address: str, host: str) -> str | None:
    """Why a file server reached by `host` (the base's host: a name or a literal address) may
    not be connected to at `address`, or None. A name may lead only to public addresses; the
    address a base names literally is where the unit's server is, wherever that is; a cloud
    metadata address never."""
    ip = _literal(address)
    if ip is None:
        return f"{address} (not an address)"
    ip = _plain(ip)
    if ip in METADATA_ADDRESSES:
        return f"{ip} (a cloud metadata address)"
    named = _literal(host)
    if named is not None and _plain(named) == ip:
        return None
    if ip.is_global and not ip.is_multicast:
        return None
    kind = ("loopback" if ip.is_loopback else "link-local" if ip.is_link_local
            else "unspecified" if ip.is_unspecified else "multicast" if ip.is_multicast
            else "private" if ip.is_private else "not public")
    return f"{ip} ({kind})"


def _refuse_addresses(host: str, problems: list[str]) -> AddressRefused:
    return AddressRefused(f"{host} resolves to {', '.join(dict.fromkeys(problems))}, an address "
                          f"the base does not name: a name may lead only to public addresses "
                          f"(if the unit's server really is there, write its address in the "
                          f"base)")


class _PublicResolver:
    """aiohttp's resolver contract (`resolve`, `close`) over the system's resolver (getaddrinfo,
    as aiohttp's default `ThreadedResolver`): the answer without the addresses the rules refuse
    (`address_problem`); `AddressRefused` when none is left. aiohttp's connector connects only
    to what this returns (a literal address in the URL never comes here: it is the base's own,
    redirects elsewhere being refused)."""

    def __init__(self) -> None:
        from aiohttp.resolver import ThreadedResolver

        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[dict[str, Any]]:
        answer = await self._inner.resolve(host, port, family)
        problems = [address_problem(a["host"], host) for a in answer]
        kept = [a for a, problem in zip(answer, problems) if problem is None]
        if not kept:
            raise _refuse_addresses(host, [p for p in problems if p])
        return kept

    async def close(self) -> None:
        await self._inner.close()


def http_client(base: str) -> Callable[..., Awaitable[Any]]:
    """fsspec `HTTPFileSystem`'s `get_client` for a file base: an aiohttp session whose every
    request, the first and each redirect hop, must stay at the base's origin (a client
    middleware refuses another before it is sent: `RedirectRefused`), and whose connector
    resolves names through `_PublicResolver`. Same-origin redirects (`/docs` -> `/docs/`) are
    followed as before."""
    import yarl

    origin = yarl.URL(base).origin()

    async def same_origin(req: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        if req.url.origin() != origin:
            raise RedirectRefused(str(origin), str(req.url.origin()))
        return await handler(req)

    async def get_client(**kwargs: Any) -> Any:
        import aiohttp

        connector = aiohttp.TCPConnector(resolver=_PublicResolver())
        return aiohttp.ClientSession(connector=connector, middlewares=(same_origin,), **kwargs)

    return get_client


def connect_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP socket connected to `host` at an address the rules allow (`address_problem`),
    resolved once: the caller speaks its protocol over this socket and resolves nothing again.
    `AddressRefused` when every address is refused; the last connection error when none
    answers."""
    answer = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    problems = [address_problem(sockaddr[0], host) for *_, sockaddr in answer]
    allowed = [a for a, problem in zip(answer, problems) if problem is None]
    if not allowed:
        raise _refuse_addresses(host, [p for p in problems if p])
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in allowed:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    assert error is not None
    raise error


def known_hosts_path() -> Path:
    """The known_hosts file SSH file servers' keys are checked against (`ETL_SSH_KNOWN_HOSTS`)."""
    return settings.path(KNOWN_HOSTS_ENV)


def _key_shown(key: Any) -> str:
    return f"{key.get_name()} {key.fingerprint}"


@functools.cache
def _host_key_policies() -> tuple[type, type]:
    import paramiko

    class RefuseUnknown(paramiko.MissingHostKeyPolicy):
        """paramiko asks this only for a host the known_hosts file does not hold."""

        def __init__(self, path: Path, host: str, port: int):
            self.path, self.host, self.port = path, host, port

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise HostKeyRefused(
                f"{hostname} presented the host key {_key_shown(key)}, which {self.path} does "
                f"not hold: confirm that fingerprint with the unit, then add the key "
                f"(ssh-keyscan -p {self.port} {self.host} >> {self.path}), or set "
                f"{TRUST_NEW_HOSTS_ENV}=1 to trust a new server's key on first use")

    class TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
        """Accept a host not in the file and append its key as one line (never rewriting the
        file: paramiko's own AutoAddPolicy would save only the lines it understood)."""

        def __init__(self, path: Path, host: str, port: int):
            self.path = path

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            client.get_host_keys().add(hostname, key.get_name(), key)
            line = paramiko.hostkeys.HostKeyEntry([hostname], key).to_line()
            private.makedirs(self.path.parent)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, private.FILE_MODE)
            with os.fdopen(fd, "a", encoding="ascii") as f:
                f.write(line)
            log.warning("trusting %s's host key %s on first use (%s=1): recorded in %s",
                        hostname, _key_shown(key), TRUST_NEW_HOSTS_ENV, self.path)

    return RefuseUnknown, TrustOnFirstUse


def ssh_client(host: str, port: int = 22, *, timeout: float = 30.0, **connect: Any) -> Any:
    """A paramiko `SSHClient` connected and authenticated to a file server (`connect`:
    username, password ... as `SSHClient.connect` takes them). The host key is checked before
    any password is sent: against `known_hosts_path()` (entries `host` for port 22,
    `[host]:port` otherwise, hashed or not); an unknown one is refused unless
    `ETL_SSH_TRUST_NEW_HOSTS`, a changed one always (`HostKeyRefused`). The socket comes from
    `connect_socket`."""
    import paramiko

    path = known_hosts_path()
    refuse, trust = _host_key_policies()
    client = paramiko.SSHClient()
    try:
        if path.exists():
            client.load_host_keys(str(path))
    except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
        raise HostKeyRefused(f"the known_hosts file {path} cannot be read ({type(exc).__name__}: "
                             f"{exc}): fix it ({KNOWN_HOSTS_ENV})") from None
    policy = trust if settings.flag(TRUST_NEW_HOSTS_ENV) else refuse
    client.set_missing_host_key_policy(policy(path, host, port))
    sock = connect_socket(host, port, timeout)
    try:
        client.connect(host, port, sock=sock, timeout=timeout, **connect)
    except paramiko.BadHostKeyException as exc:
        client.close()
        sock.close()
        name = host if port == 22 else f"[{host}]:{port}"
        raise HostKeyRefused(
            f"{name} presented the host key {_key_shown(exc.key)}, but {path} holds "
            f"{_key_shown(exc.expected_key)} for it: someone may be intercepting the connection, "
            f"or the unit reinstalled the server; confirm the new fingerprint with the unit, then "
            f"replace its line in {path}") from None
    except BaseException:
        client.close()
        sock.close()
        raise
    return client
