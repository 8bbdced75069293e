"""The database fixtures themselves: real, empty, isolated, utf8mb4-clean."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

try:
    from servers import MARIADB_COLLATION, create_database, database_exists, drop_database
except ImportError:  # tests/ became a package
    from tests.servers import MARIADB_COLLATION, create_database, database_exists, drop_database  # type: ignore[no-redef]

COMPANY = "南京某某化工有限公司"
FOUR_BYTE = "𠮷野家🏭"  # outside the BMP: needs real utf8mb4, not utf8mb3


def _table_names(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def _create_and_fill(url: str, table: str = "company") -> list[tuple[int, str]]:
    metadata = sa.MetaData()
    t = sa.Table(
        table,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(t.insert(), [{"id": 1, "name": COMPANY}, {"id": 2, "name": FOUR_BYTE}])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.id, t.c.name).order_by(t.c.id)).all()
            found = conn.execute(sa.select(t.c.id).where(t.c.name == COMPANY)).scalar_one()
        assert found == 1
        return [tuple(r) for r in rows]
    finally:
        engine.dispose()


def test_fresh_database_round_trips_chinese(db_url: str) -> None:
    assert _table_names(db_url) == []
    assert _create_and_fill(db_url) == [(1, COMPANY), (2, FOUR_BYTE)]
    assert _table_names(db_url) == ["company"]


_seen_urls: dict[str, set[str]] = {}


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_its_own_empty_database(db_url: str, attempt: int) -> None:
    backend = make_url(db_url).get_backend_name()
    seen = _seen_urls.setdefault(backend, set())
    assert db_url not in seen
    seen.add(db_url)
    assert _table_names(db_url) == []  # the previous attempt's table is gone
    _create_and_fill(db_url, table="leak_check")


def test_db_url_carries_its_backend_marker(db_url: str, request: pytest.FixtureRequest) -> None:
    backend = make_url(db_url).get_backend_name()
    assert (request.node.get_closest_marker("postgres") is not None) == (backend == "postgresql")
    assert (request.node.get_closest_marker("mariadb") is not None) == (backend == "mysql")


def test_server_fixtures_are_marked(pg_url: str, mariadb_url: str, request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("postgres") is not None
    assert request.node.get_closest_marker("mariadb") is not None


def _check_two_databases_are_distinct(admin_url: str, first: str) -> None:
    second = create_database(admin_url)
    try:
        assert make_url(first).database != make_url(second).database
        _create_and_fill(first, table="only_in_first")
        assert _table_names(second) == []
    finally:
        drop_database(second)
    assert not database_exists(second)


def test_two_postgres_databases_are_distinct(pg_server: str, pg_url: str) -> None:
    _check_two_databases_are_distinct(pg_server, pg_url)


def test_two_mariadb_databases_are_distinct(mariadb_server: str, mariadb_url: str) -> None:
    _check_two_databases_are_distinct(mariadb_server, mariadb_url)


def _check_drop_despite_open_connection(admin_url: str) -> None:
    url = create_database(admin_url)
    engine = sa.create_engine(url)
    conn = engine.connect()
    try:
        conn.exec_driver_sql("CREATE TABLE t (x INT)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # transaction left open, holding locks
        drop_database(url)
        assert not database_exists(url)
    finally:
        try:
            conn.close()
        except sa.exc.DBAPIError:
            pass  # the server killed this session
        engine.dispose()


def test_postgres_drop_despite_open_connection(pg_server: str) -> None:
    _check_drop_despite_open_connection(pg_server)


def test_mariadb_drop_despite_open_connection(mariadb_server: str) -> None:
    _check_drop_despite_open_connection(mariadb_server)


def test_postgres_settings(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW server_encoding").scalar_one() == "UTF8"
            assert conn.exec_driver_sql("SHOW TimeZone").scalar_one() == "UTC"
            assert conn.exec_driver_sql("SELECT current_user").scalar_one() == "postgres"
    finally:
        engine.dispose()


def test_mariadb_settings(mariadb_url: str) -> None:
    engine = sa.create_engine(mariadb_url)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT @@character_set_database, @@collation_database, @@character_set_connection, @@time_zone"
            ).one()
            assert tuple(row) == ("utf8mb4", MARIADB_COLLATION, "utf8mb4", "+00:00")
    finally:
        engine.dispose()


def test_mariadb_has_real_users(mariadb_server: str, mariadb_url: str) -> None:
    db = make_url(mariadb_url).database
    admin = sa.create_engine(mariadb_server)
    user_url = make_url(mariadb_url).set(username="etl_test_user", password="s3cr@t:/pw#1")
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql("CREATE USER 'etl_test_user'@'127.0.0.1' IDENTIFIED BY 's3cr@t:/pw#1'")
            conn.exec_driver_sql(f"GRANT ALL PRIVILEGES ON `{db}`.* TO 'etl_test_user'@'127.0.0.1'")
        assert _create_and_fill(user_url.render_as_string(hide_password=False)) == [(1, COMPANY), (2, FOUR_BYTE)]
        with pytest.raises(sa.exc.OperationalError):
            _table_names(user_url.set(password="wrong").render_as_string(hide_password=False))
        with pytest.raises(sa.exc.OperationalError):  # no access to other databases
            _table_names(user_url.set(database="mysql").render_as_string(hide_password=False))
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql("DROP USER IF EXISTS 'etl_test_user'@'127.0.0.1'")
        admin.dispose()


def test_shanghai_rule_is_available_whatever_the_machine_zone() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    assert datetime(2024, 1, 15, 12, tzinfo=shanghai).utcoffset() == timedelta(hours=8)
    assert datetime(2024, 7, 15, 12, tzinfo=shanghai).utcoffset() == timedelta(hours=8)  # no DST


def test_redis_server_is_private_and_keeps_nothing_on_disk(redis_url: str, request: pytest.FixtureRequest) -> None:
    import os
    import socket

    import redis

    assert redis_url.startswith("redis://127.0.0.1:") and redis_url.endswith("/0")
    assert request.node.get_closest_marker("redis") is not None
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        client.set("企业", COMPANY)
        assert client.get("企业").decode() == COMPANY
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        server_pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    if os.geteuid() == 0:  # like the database servers: never as root
        assert os.stat(f"/proc/{server_pid}").st_uid != 0
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):  # loopback 127.0.0.1 only
        socket.create_connection(("127.0.0.2", port), timeout=1).close()


def test_a_stopped_redis_server_leaves_nothing_behind(redis_url: str) -> None:
    """(`redis_url` only for its skip-or-fail rule when redis-server is missing.)"""
    import socket

    try:
        from servers import start_redis
    except ImportError:  # tests/ became a package
        from tests.servers import start_redis  # type: ignore[no-redef]

    server = start_redis()
    assert server.base_dir.is_dir() and server.port != int(redis_url.rsplit(":", 1)[1].split("/")[0])
    server.stop()
    server.stop()  # idempotent
    assert not server.base_dir.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
