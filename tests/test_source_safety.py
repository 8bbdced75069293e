"""A mapping can only read its source: hostile `query:` texts, driver options and missing files
leave the source as it was, and `etl check` / `etl run` say why (issue 11). Real PostgreSQL,
MariaDB and SQLite sources; each test asserts the effect on the source, not only a message."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl.cli import main
from etl.common import outbound
from etl.common.errors import SourceError
from etl.mapping import DatasetSpec, SourceSpec, load_mapping
from etl.source import account, connect, extract
from helpers import ORG_A, QUIRKY_FIELDS

COLUMNS = "id, code, name, kind, reg_date, check_time, level, person, reg_no"

MAPPING = """\
unit: {{orgNo: "{org}", comName: 南京某某化工有限公司}}
source: {source}
datasets:
  "06":
    query: {query}
""" + QUIRKY_FIELDS


def seed(url: str) -> None:
    """A source with the dataset's table and a `victim` table of three rows."""
    e = sa.create_engine(url)
    with e.begin() as c:
        c.exec_driver_sql("CREATE TABLE t_quirky (id INTEGER, code VARCHAR(20), name VARCHAR(50), "
                          "kind INTEGER, reg_date VARCHAR(20), check_time VARCHAR(20), level INTEGER, "
                          "person VARCHAR(50), reg_no VARCHAR(30))")
        c.exec_driver_sql("INSERT INTO t_quirky VALUES (1, 'FX001', '电站 锅炉', 0, '2024-03-01', "
                          "'2024-03-02', 2, '张三', '31103201152024000901')")
        c.exec_driver_sql("CREATE TABLE victim (id INTEGER)")
        c.exec_driver_sql("INSERT INTO victim VALUES (1), (2), (3)")
    e.dispose()


def victim_rows(url: str) -> int | None:
    """The victim's row count, None when the table is gone."""
    e = sa.create_engine(url)
    try:
        with e.connect() as c:
            if not sa.inspect(c).has_table("victim"):
                return None
            return c.exec_driver_sql("SELECT count(*) FROM victim").scalar()
    finally:
        e.dispose()


def write_mapping(tmp_path: Path, query: str, source: str = "{url_env: UNIT_SOURCE_URL}") -> Path:
    path = tmp_path / "unit.yaml"
    path.write_text(MAPPING.format(org=ORG_A, source=source, query=_yaml_string(query)),
                    encoding="utf-8")
    return path


def _yaml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def check_and_run(path: Path, tmp_path: Path, capsys) -> tuple[int, str, int, str]:
    check = main(["check", str(path)])
    check_out = capsys.readouterr()
    run = main(["run", str(path), "--target", f"sqlite:///{tmp_path / 'target.sqlite'}"])
    run_out = capsys.readouterr()
    return check, check_out.out + check_out.err, run, run_out.out + run_out.err


# Texts that a hand-made scanner takes for one SELECT, but that the database splits into
# several statements, balanced so that they survive being wrapped as a subquery.
PG_E_QUOTE = ("SELECT E'\\'' ) x; COMMIT; DELETE FROM victim; SELECT * FROM (SELECT 1 AS a --'\n"
              ", 2 AS b")
PG_DOLLAR = ("SELECT $a$ ' $a$ ) x; COMMIT; DELETE FROM victim; SELECT * FROM (SELECT '$a$' "
             "AS a")
PG_DROP = ("SELECT E'\\'' ) x; COMMIT; DROP TABLE victim; SELECT * FROM (SELECT 1 AS a --'\n"
           ", 2 AS b")
MYSQL_BACKSLASH = ("SELECT 'a\\'' ) x; COMMIT; DELETE FROM victim; COMMIT; SELECT * FROM (SELECT '1' "
                   "AS a")


@pytest.mark.parametrize("payload", [PG_E_QUOTE, PG_DOLLAR, PG_DROP],
                         ids=["E-quote-delete", "dollar-quote-delete", "E-quote-drop"])
def test_postgresql_payloads_leave_the_source_unchanged(payload, pg_url, tmp_path, monkeypatch, capsys):
    seed(pg_url)
    monkeypatch.setenv("UNIT_SOURCE_URL", pg_url)
    check, check_out, run, run_out = check_and_run(write_mapping(tmp_path, payload), tmp_path, capsys)
    assert victim_rows(pg_url) == 3
    assert check == 2 and "[datasets.06.query] query:" in check_out
    assert run in (1, 2) and "[datasets.06.query] query:" in run_out


@pytest.mark.parametrize("flag", ["", "?client_flag=65536"], ids=["plain", "client_flag"])
def test_mysql_backslash_payload_leaves_the_source_unchanged(flag, mariadb_url, tmp_path,
                                                             monkeypatch, capsys):
    seed(mariadb_url)
    monkeypatch.setenv("UNIT_SOURCE_URL", mariadb_url + ("&" if "?" in mariadb_url else "?")
                       + flag.lstrip("?") if flag else mariadb_url)
    check, check_out, run, run_out = check_and_run(write_mapping(tmp_path, MYSQL_BACKSLASH),
                                                   tmp_path, capsys)
    assert victim_rows(mariadb_url) == 3
    assert check == 2 and "[datasets.06.query] query:" in check_out
    assert run in (1, 2) and "[datasets.06.query] query:" in run_out


def test_a_multi_statement_client_flag_in_a_source_url_is_refused(mariadb_url, tmp_path,
                                                                 monkeypatch, capsys):
    seed(mariadb_url)
    sep = "&" if "?" in mariadb_url else "?"
    monkeypatch.setenv("UNIT_SOURCE_URL", f"{mariadb_url}{sep}client_flag=65536")
    check, check_out, run, run_out = check_and_run(
        write_mapping(tmp_path, f"SELECT {COLUMNS} FROM t_quirky"), tmp_path, capsys)
    assert check == 2 and "sets client_flag" in check_out and "remove it" in check_out
    assert run == 2 and "sets client_flag" in run_out  # refused before anything connects
    with pytest.raises(ValueError, match="sets client_flag, init_command"):
        SourceSpec(url="mysql+pymysql://u@h/db?client_flag=65536&init_command=DELETE+FROM+victim")


def test_postgresql_sends_one_statement_only_even_past_the_parser(pg_url):
    """Were the parser fooled, the source still runs one statement: check's and the row path's
    server-side cursor and COPY's prior parse use the extended protocol."""
    seed(pg_url)
    ds = DatasetSpec.model_construct(query="SELECT 1 AS a) x; COMMIT; DELETE FROM victim; "
                                     "SELECT * FROM (SELECT 1 AS a", key=["a"], fields={})
    engine = connect.engine_for(outbound.normalise_url(pg_url))
    with connect.read_only(engine) as conn:
        with pytest.raises(sa.exc.DBAPIError, match="multiple commands"):
            account._source_columns(conn, ds)
    with connect.read_only(engine) as conn:
        raw = conn.connection.driver_connection
        with pytest.raises(Exception, match="multiple commands"):
            extract._parse_once(raw, "COPY (SELECT 1) TO STDOUT; COMMIT; DELETE FROM victim")
    assert victim_rows(pg_url) == 3


def test_mysql_sends_one_statement_only_even_past_the_parser(mariadb_url):
    seed(mariadb_url)
    ds = DatasetSpec.model_construct(query="SELECT 1 AS a FROM victim) x; COMMIT; DELETE FROM victim; "
                                     "SELECT * FROM (SELECT 1 AS a", key=["a"], fields={})
    engine = connect.engine_for(outbound.normalise_url(mariadb_url))
    with connect.read_only(engine) as conn:
        with pytest.raises(sa.exc.DBAPIError, match="syntax"):
            account._source_columns(conn, ds)
    assert victim_rows(mariadb_url) == 3


POSITIVE = ("SELECT id, code, REPLACE(name, ' ', '') AS name, kind, reg_date, check_time, level, "
            "':name' AS person, reg_no FROM t_quirky WHERE '100%' LIKE '100%%' OR reg_no LIKE '%'")


def test_replace_colon_and_percent_queries_read_the_right_values(db_url, tmp_path, monkeypatch, capsys):
    seed(db_url)
    monkeypatch.setenv("UNIT_SOURCE_URL", db_url)
    path = write_mapping(tmp_path, POSITIVE)
    frames = list(extract.stream(load_mapping(path), "06"))
    assert [(r.name, r.person) for r in frames[0].itertuples()] == [("电站锅炉", ":name")]
    check, check_out, run, run_out = check_and_run(path, tmp_path, capsys)
    assert check == 0 and "1 mapping(s) valid" in check_out
    assert run == 0, run_out
    e = sa.create_engine(f"sqlite:///{tmp_path / 'target.sqlite'}")
    with e.connect() as c:
        assert c.exec_driver_sql('SELECT "riskName", "dutyMan" FROM risk_point').all() == [("电站锅炉", ":name")]
    e.dispose()


def test_percent_in_a_query_survives_the_postgresql_copy_path(pg_url, tmp_path, monkeypatch):
    seed(pg_url)
    monkeypatch.setenv("UNIT_SOURCE_URL", pg_url)
    query = POSITIVE.replace("':name' AS person", "'100%' AS person")
    frames = list(extract.stream(load_mapping(write_mapping(tmp_path, query)), "06"))
    assert list(frames[0]["person"]) == ["100%"]
    engine = connect.engine_for(outbound.normalise_url(pg_url))
    with connect.read_only(engine) as conn:  # with a window's parameters merged in
        raw = conn.connection.driver_connection
        sql = extract.copy_statement(raw, "SELECT %(since)s AS a, '100%%' AS b",
                                     {"since": datetime(2024, 3, 1, 8, 30)})
        extract._parse_once(raw, sql)
        with raw.cursor() as cur, cur.copy(sql) as copy:
            assert b"".join(bytes(row) for row in copy) == b"2024-03-01 08:30:00,100%\n"


def test_postgresql_statement_timeout_comes_from_the_mapping(pg_url, tmp_path, monkeypatch):
    seed(pg_url)
    engine = connect.engine_for(outbound.normalise_url(pg_url))
    with connect.read_only(engine, 1.5) as conn:
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
    with connect.read_only(engine) as conn:  # the default
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1h"
    monkeypatch.setenv("UNIT_SOURCE_URL", pg_url)
    slow = (f"SELECT {COLUMNS} FROM t_quirky WHERE (SELECT count(*) FROM generate_series(1, "
            f"1000000000)) > 0")
    path = write_mapping(tmp_path, slow, "{url_env: UNIT_SOURCE_URL, statement_timeout_s: 1}")
    with pytest.raises(SourceError, match="statement timeout.*statement_timeout_s"):
        list(extract.stream(load_mapping(path), "06"))


def test_mysql_and_sqlite_timeouts_come_from_the_mapping(mariadb_url, tmp_path):
    spec = SourceSpec(url_env="X", statement_timeout_s=7, connect_timeout_s=3)
    engine = connect.engine_for(outbound.normalise_url(mariadb_url), spec)
    with connect.read_only(engine, spec.statement_timeout_s) as conn:
        raw = conn.connection.driver_connection
        assert (raw._read_timeout, raw.connect_timeout) == (7, 3)
    sqlite = f"sqlite:///{tmp_path / 's.sqlite'}"
    seed(sqlite)
    engine = connect.engine_for(connect._sqlite_read_only(outbound.normalise_url(sqlite)), spec)
    with connect.read_only(engine) as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 3000


@pytest.fixture
def pg_role(pg_url):
    """Make a login role on the source database with the given grants; dropped afterwards."""
    admin = sa.create_engine(pg_url)
    made: list[str] = []

    def make(*grants: str) -> str:
        name = f"etl_src_{uuid.uuid4().hex[:8]}"
        with admin.begin() as c:
            c.exec_driver_sql(f"CREATE ROLE {name} LOGIN")
            for grant in grants:
                c.exec_driver_sql(f"GRANT {grant} TO {name}")
        made.append(name)
        return str(sa.make_url(pg_url).set(username=name))

    yield make
    with admin.begin() as c:
        for name in made:
            c.exec_driver_sql(f"DROP OWNED BY {name}")
            c.exec_driver_sql(f"DROP ROLE {name}")
    admin.dispose()


def test_check_warns_when_the_postgresql_source_account_can_write(pg_url, pg_role, tmp_path,
                                                                  monkeypatch, capsys):
    seed(pg_url)
    path = write_mapping(tmp_path, f"SELECT {COLUMNS} FROM t_quirky")
    monkeypatch.setenv("UNIT_SOURCE_URL", pg_role("SELECT ON t_quirky"))
    assert main(["check", str(path)]) == 0
    assert "warning" not in capsys.readouterr().out
    monkeypatch.setenv("UNIT_SOURCE_URL", pg_role("SELECT, INSERT ON t_quirky"))
    assert main(["check", str(path)]) == 0  # a warning, not a failure
    out = capsys.readouterr().out
    assert "[source] warning: the source account can write (INSERT/UPDATE/DELETE/TRUNCATE on " \
           "public.t_quirky)" in out and "read-only account" in out
    monkeypatch.setenv("UNIT_SOURCE_URL", pg_url)  # the superuser
    assert main(["check", str(path)]) == 0
    assert "can write (superuser" in capsys.readouterr().out


@pytest.fixture
def mariadb_user(mariadb_url):
    admin = sa.create_engine(mariadb_url)
    db = sa.make_url(mariadb_url).database
    made: list[str] = []

    def make(grant: str) -> str:
        name = f"etl_src_{uuid.uuid4().hex[:8]}"
        with admin.begin() as c:
            c.exec_driver_sql(f"CREATE USER '{name}'@'%%'")
            c.exec_driver_sql(f"GRANT {grant.format(db=db)} TO '{name}'@'%%'")
        made.append(name)
        return str(sa.make_url(mariadb_url).set(username=name))

    yield make
    with admin.begin() as c:
        for name in made:
            c.exec_driver_sql(f"DROP USER '{name}'@'%%'")
    admin.dispose()


def test_check_warns_when_the_mariadb_source_account_can_write(mariadb_url, mariadb_user, tmp_path,
                                                               monkeypatch, capsys):
    seed(mariadb_url)
    path = write_mapping(tmp_path, f"SELECT {COLUMNS} FROM t_quirky")
    monkeypatch.setenv("UNIT_SOURCE_URL", mariadb_user("SELECT, SHOW VIEW ON `{db}`.*"))
    assert main(["check", str(path)]) == 0
    assert "warning" not in capsys.readouterr().out
    monkeypatch.setenv("UNIT_SOURCE_URL", mariadb_user("SELECT, INSERT ON `{db}`.`t_quirky`"))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: the source account can write (INSERT ON" in out and "t_quirky" in out


def test_a_missing_sqlite_file_is_reported_and_never_created(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "typo.sqlite"
    path = write_mapping(tmp_path, f"SELECT {COLUMNS} FROM t_quirky", f"{{url: 'sqlite:///{missing}'}}")
    check, check_out, run, run_out = check_and_run(path, tmp_path, capsys)
    assert not missing.exists()
    assert check == 2 and f"no such SQLite file {missing}: check url" in check_out
    assert run == 1 and "no such SQLite file" in run_out


def test_a_relative_sqlite_path_is_read_read_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    seed("sqlite:///src.sqlite")
    path = write_mapping(tmp_path, f"SELECT {COLUMNS} FROM t_quirky", "{url: 'sqlite:///src.sqlite'}")
    assert main(["check", str(path)]) == 0
    url = connect.resolve_url(load_mapping(path).source_for("06"))
    with connect.engine_for(url).connect() as conn:  # even outside read_only: mode=ro
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            conn.exec_driver_sql("DELETE FROM victim")
    assert victim_rows("sqlite:///src.sqlite") == 3


def test_a_query_the_source_refuses_is_reported_alike_by_check_and_run(pg_url, tmp_path,
                                                                       monkeypatch, capsys):
    seed(pg_url)
    monkeypatch.setenv("UNIT_SOURCE_URL", pg_url)
    query = f"SELECT {COLUMNS} FROM t_quirky WHERE no_such_column = 1"
    check, check_out, run, run_out = check_and_run(write_mapping(tmp_path, query), tmp_path, capsys)
    said = 'the source refused the query: column "no_such_column" does not exist'
    assert check == 2 and said in check_out and "fix query: or the column names" in check_out
    assert run == 1 and said in run_out and "fix query: or the column names" in run_out
    assert "etl check" not in run_out
