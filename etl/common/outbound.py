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
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from etl.common import airflow_home, settings
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
