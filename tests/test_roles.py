"""Least privilege in the target (issue 14): `etl init-target --roles` makes an owner, a loader,
a reader and unit-scoped readers; each role, logged in with its own password, is refused what it
must not do, and the whole ingestion runs as the loader.

The PostgreSQL roles log in with scram passwords (a pg_hba line asks them, and only them, for
one; the test server trusts everyone else); the MariaDB loader is a user with a password holding
the `etl_loader` role.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from etl import cli, target
from etl.common import clock
from etl.onboarding.demo_data import UNIT_A, UNIT_B, make_demo_sources
from etl.target import roles
from tests.helpers import ORG_A, hidden_danger_mapping, hidden_danger_row, query, write_source

PASSWORD = "R0le-Pw_14"
MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
SECURITY_MD = Path(__file__).resolve().parent.parent / "docs" / "security.md"
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
LATER = "etl_later_table"  # stands for "a table a later migration adds"


def _orgs_of_demo() -> tuple[str, str]:
    import yaml

    return tuple(yaml.safe_load((MAPPINGS / f"{stem}.yaml").read_text(encoding="utf-8"))["unit"]["orgNo"]
                 for stem in (UNIT_A, UNIT_B))


@pytest.fixture(scope="module")
def scram_roles(pg_server):
    """pg_hba asks the pipeline's login roles (and unit roles) for their scram password."""
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        hba = conn.exec_driver_sql("SHOW hba_file").scalar()
        rules = Path(hba).read_text(encoding="utf-8")
        line = f"host all {roles.LOADER},{roles.READER},+{roles.UNIT_READER} 127.0.0.1/32 scram-sha-256\n"
        if line not in rules:
            Path(hba).write_text(line + rules, encoding="utf-8")
            conn.exec_driver_sql("SELECT pg_reload_conf()")
    admin.dispose()


def _login(admin_url: str, role: str) -> str:
    """The URL of `role` after the operator set its password (as the hint says)."""
    with sa.create_engine(admin_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f"ALTER ROLE \"{role}\" PASSWORD '{PASSWORD}'")
    url = make_url(admin_url).set(username=role)
    with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
        sa.create_engine(url.set(password="wrong")).connect()  # the password really is asked
    return url.set(password=PASSWORD).render_as_string(hide_password=False)


def _init(url: str, *extra: str) -> int:
    return cli.main(["init-target", "--target", url, "--roles", *extra])


def _refused(url: str, sql: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError, match=".") as e:
            conn.exec_driver_sql(sql)
            pytest.fail(f"not refused: {sql}")
    finally:
        engine.dispose()
    assert roles.is_permission_error(e.value), sql
    return str(e.value.orig)


def _demo_units(tmp_path: Path, monkeypatch) -> None:
    """The demo units' sources and mapping files, in `tmp_path` as the working folder."""
    monkeypatch.chdir(tmp_path)
    make_demo_sources(tmp_path / "var")
    (tmp_path / "mappings").mkdir()
    for stem in (UNIT_A, UNIT_B):  # absolute source paths: a cached engine of a relative one
        text = (MAPPINGS / f"{stem}.yaml").read_text(encoding="utf-8")  # may hold another cwd's file
        (tmp_path / "mappings" / f"{stem}.yaml").write_text(
            text.replace("sqlite:///var/", f"sqlite:///{tmp_path}/var/"), encoding="utf-8")


@pytest.fixture
def demo_target(pg_url, scram_roles, tmp_path, monkeypatch):
    """A PostgreSQL target set up with roles and unit roles, the demo units loaded as the loader."""
    _demo_units(tmp_path, monkeypatch)
    a, b = _orgs_of_demo()
    assert _init(pg_url, "--unit-roles", a, b) == 0
    loader = _login(pg_url, roles.LOADER)
    monkeypatch.setenv("ETL_TARGET_URL", loader)
    assert cli.main(["run", "--all"]) == 0
    return pg_url, loader, (a, b)


# --- PostgreSQL ------------------------------------------------------------------------------


def test_the_owner_owns_every_pipeline_table_and_the_roles_have_no_password(pg_url, scram_roles, capsys):
    assert _init(pg_url) == 0
    out = capsys.readouterr().out
    assert "\\password etl_loader" in out and "ETL_TARGET_URL" in out
    owners = query(pg_url, "SELECT relname, pg_get_userbyid(relowner) FROM pg_class WHERE relkind IN "
                           "('r', 'S') AND relnamespace = 'public'::regnamespace")
    assert {name for name, _ in owners} >= {*roles.pipeline_tables(), "alembic_version", "etl_unit_role"}
    assert {o for _, o in owners} == {roles.OWNER}
    assert query(pg_url, "SELECT rolname, rolcanlogin, rolpassword IS NULL, rolsuper, rolcreaterole, "
                         "rolbypassrls FROM pg_authid WHERE rolname IN ('etl_owner', 'etl_loader', 'etl_reader', "
                         "'etl_unit_reader') ORDER BY 1") == [
        ("etl_loader", True, True, False, False, False), ("etl_owner", False, True, False, False, False),
        ("etl_reader", True, True, False, False, False),
        ("etl_unit_reader", False, True, False, False, False)]


def test_a_schema_everyone_may_create_in_is_named(pg_url, scram_roles, capsys):
    with sa.create_engine(pg_url).begin() as conn:
        conn.exec_driver_sql("GRANT CREATE ON SCHEMA public TO PUBLIC")  # PostgreSQL 14's default
    assert _init(pg_url) == 0
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in capsys.readouterr().out


def test_a_target_made_before_roles_is_handed_to_the_owner(pg_url, scram_roles):
    assert cli.main(["init-target", "--target", pg_url]) == 0  # as the DBA, no roles yet
    assert _init(pg_url) == 0
    assert query(pg_url, "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relkind IN "
                         "('r', 'S') AND relnamespace = 'public'::regnamespace") == [(roles.OWNER,)]


def _catalogue(url: str) -> list:
    """Everything --roles decides, as the catalogue holds it."""
    return [query(url, sql) for sql in (
        "SELECT rolname, rolcanlogin, rolinherit FROM pg_roles WHERE rolname LIKE 'etl\\_%%' ORDER BY 1",
        "SELECT r.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid "
        "JOIN pg_roles m ON m.oid = a.member WHERE r.rolname LIKE 'etl\\_%%' ORDER BY 1, 2",
        "SELECT relname, pg_get_userbyid(relowner), relacl::text, relrowsecurity FROM pg_class "
        "WHERE relnamespace = 'public'::regnamespace ORDER BY 1",
        "SELECT tablename, policyname, roles::text, cmd, qual, with_check FROM pg_policies ORDER BY 1, 2",
        "SELECT defaclobjtype, defaclacl::text FROM pg_default_acl ORDER BY 1",
        "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public'",
        "SELECT datacl::text FROM pg_database WHERE datname = current_database()",
        "SELECT * FROM etl_unit_role ORDER BY 1",
        "SELECT version_num FROM alembic_version")]


def test_rerunning_init_target_roles_changes_nothing(pg_url, scram_roles):
    assert _init(pg_url, "--unit-roles", ORG_A) == 0
    before = _catalogue(pg_url)
    assert _init(pg_url, "--unit-roles", ORG_A) == 0
    assert cli.main(["init-target", "--target", pg_url]) == 0  # re-applies grants: still the same
    assert _catalogue(pg_url) == before


def test_the_loader_may_not_change_the_schema_nor_remove_records(demo_target):
    admin, loader, _ = demo_target
    assert query(admin, "SELECT count(*) FROM risk_point")[0][0] > 0
    for sql in ("CREATE TABLE x (a int)", "DROP TABLE risk_point", "ALTER TABLE risk_point ADD COLUMN x int",
                "ALTER TABLE ingest_change DROP COLUMN record", "CREATE INDEX ix ON risk_point (\"riskNo\")",
                "DELETE FROM risk_point", "DELETE FROM ingest_change", "DELETE FROM ingest_batch",
                "DELETE FROM ingest_run", "DELETE FROM ingest_reject", "TRUNCATE risk_point",
                "TRUNCATE ingest_change", "DROP POLICY etl_unit_rows ON risk_point",
                "ALTER TABLE risk_point DISABLE ROW LEVEL SECURITY", "UPDATE alembic_version SET version_num = 'x'",
                "INSERT INTO etl_unit_role VALUES ('etl_loader', '91320115MA1R7KX30X')",
                "SET ROLE etl_owner"):
        _refused(loader, sql)
    rights = query(admin, "SELECT c.relname, p FROM pg_class c, unnest(ARRAY['DELETE', 'TRUNCATE', "
                          "'REFERENCES', 'TRIGGER']) p WHERE c.relnamespace = 'public'::regnamespace AND "
                          "c.relkind = 'r' AND has_table_privilege('etl_loader', c.oid, p)")
    assert rights == [("ingest_stage", "DELETE")]
    updatable = query(admin, "SELECT c.relname FROM pg_class c WHERE c.relnamespace = "
                             "'public'::regnamespace AND c.relkind IN ('r', 'p') AND "
                             "has_table_privilege('etl_loader', c.oid, 'UPDATE') ORDER BY 1")
    assert [n for (n,) in updatable] == sorted(n for n, r in roles.LOADER_WRITES.items() if "UPDATE" in r)
    with sa.create_engine(loader).begin() as conn:  # what staging needs: its rows only
        conn.exec_driver_sql("DELETE FROM ingest_stage WHERE \"stageKey\" = 'none'")


def test_a_stolen_loader_password_cannot_rewrite_the_ledger_or_move_a_batch(demo_target):
    admin, loader, (a, b) = demo_target
    ledger = query(admin, 'SELECT "changeId", "batchNo", "ID", "busType", record FROM ingest_change ORDER BY 1')
    batches = query(admin, 'SELECT * FROM ingest_batch ORDER BY 1')
    runs = query(admin, 'SELECT "runKey", status, inserted FROM ingest_run ORDER BY 1')
    assert ledger and batches and runs
    for sql in ("UPDATE ingest_change SET record = '{}'",
                f"UPDATE ingest_batch SET \"orgNo\" = '{b}' WHERE \"orgNo\" = '{a}'",
                "UPDATE ingest_change SET \"batchNo\" = (SELECT min(\"batchNo\") FROM ingest_batch)",
                "UPDATE ingest_run SET status = 'success', inserted = 0",
                "UPDATE ingest_reject SET message = ''", "DELETE FROM ingest_audit",
                "DELETE FROM ingest_key", "UPDATE ingest_key SET \"keyId\" = '00000000'"):
        _refused(loader, sql)
    assert query(admin, 'SELECT "changeId", "batchNo", "ID", "busType", record FROM ingest_change ORDER BY 1') == ledger
    assert query(admin, 'SELECT * FROM ingest_batch ORDER BY 1') == batches
    assert query(admin, 'SELECT "runKey", status, inserted FROM ingest_run ORDER BY 1') == runs


def _documented() -> list[tuple[list[str], dict[str, set[str]]]]:
    """docs/security.md's table of privileges: ([table, ...], {role: {privilege, ...}}) per row;
    "a table a later migration adds" stands as LATER."""
    text = SECURITY_MD.read_text(encoding="utf-8")
    section = text.split("### Privileges by role and table", 1)[1].split("\n\n|", 1)[1]
    lines = ("|" + section).split("\n\n", 1)[0].splitlines()
    head = [c.strip().split()[0].strip("`") for c in lines[0].strip("|").split("|")]
    assert head[1:] == [roles.LOADER, roles.READER, roles.UNIT_READER], head
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        tables = re.findall(r"`([a-z_]+)`", cells[0]) or ([LATER] if "later migration" in cells[0] else [])
        assert tables, line
        rows.append((tables, {role: {p for p in PRIVILEGES if re.search(rf"\b{p}\b", cell)}
                              for role, cell in zip(head[1:], cells[1:])}))
    return rows


def _attempts(conn_url: str, table: str, dialect: str) -> dict[str, bool]:
    """Whether the login of `conn_url` may SELECT, INSERT, UPDATE, DELETE and TRUNCATE `table`:
    each tried for real (no row matches; PostgreSQL rolls each back), refused = a permission error."""
    q = (lambda n: f'"{n}"') if dialect == "postgresql" else (lambda n: f"`{n}`")
    engine = sa.create_engine(conn_url)
    try:
        with engine.connect() as conn:
            column = sa.inspect(conn).get_columns(table)[0]["name"] if dialect != "postgresql" else \
                conn.exec_driver_sql("SELECT attname FROM pg_attribute WHERE attrelid = %(t)s::regclass "
                                     "AND attnum = 1", {"t": table}).scalar()
        never = "false" if dialect == "postgresql" else "1 = 0"
        tried = {"SELECT": f"SELECT 1 FROM {q(table)} LIMIT 0",
                 "INSERT": f"INSERT INTO {q(table)} SELECT * FROM {q(table)} WHERE {never}",
                 "UPDATE": f"UPDATE {q(table)} SET {q(column)} = NULL WHERE {never}",
                 "DELETE": f"DELETE FROM {q(table)} WHERE {never}",
                 "TRUNCATE": f"TRUNCATE TABLE {q(table)}"}
        out = {}
        for privilege, sql in tried.items():
            with engine.connect() as conn:
                try:
                    with conn.begin() as tx:
                        conn.exec_driver_sql(sql)
                        tx.rollback()
                    out[privilege] = True
                except sa.exc.DBAPIError as e:
                    out[privilege] = not roles.is_permission_error(e)
        return out
    finally:
        engine.dispose()


def test_each_role_may_do_on_each_table_exactly_what_docs_security_md_says(pg_url, scram_roles):
    assert _init(pg_url, "--unit-roles", ORG_A) == 0
    with sa.create_engine(pg_url).begin() as conn:  # what a later migration does, as the owner
        conn.exec_driver_sql(f'SET LOCAL ROLE "{roles.OWNER}"')
        conn.exec_driver_sql(f"CREATE TABLE {LATER} (a int)")
    documented = _documented()
    assert sorted(t for tables, _ in documented for t in tables) == sorted(
        [*roles.pipeline_tables(), roles.VERSION_TABLE, roles.UNIT_ROLE_TABLE, LATER])
    logins = {roles.LOADER: _login(pg_url, roles.LOADER), roles.READER: _login(pg_url, roles.READER),
              roles.UNIT_READER: _login(pg_url, roles.unit_role(ORG_A))}
    wrong = []
    for tables, allowed in documented:
        for table in tables:
            for role, url in logins.items():
                for privilege, done in _attempts(url, table, "postgresql").items():
                    if done != (privilege in allowed[role]):
                        wrong.append(f"{role} {privilege} {table}: {'allowed' if done else 'refused'}")
    assert wrong == []


def test_rerunning_init_target_roles_takes_away_what_earlier_versions_granted(pg_url, scram_roles):
    assert _init(pg_url, "--unit-roles", ORG_A) == 0
    fresh = _catalogue(pg_url)
    with sa.create_engine(pg_url).begin() as conn:  # what --roles granted before issue 23
        conn.exec_driver_sql("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO etl_loader")
        conn.exec_driver_sql("GRANT UPDATE ON ALL SEQUENCES IN SCHEMA public TO etl_loader")
        conn.exec_driver_sql("ALTER DEFAULT PRIVILEGES FOR ROLE etl_owner IN SCHEMA public "
                             "GRANT SELECT, INSERT, UPDATE ON TABLES TO etl_loader")
        conn.exec_driver_sql("GRANT UPDATE, DELETE ON ingest_change TO PUBLIC")
    loader = _login(pg_url, roles.LOADER)
    assert _attempts(loader, "ingest_change", "postgresql")["UPDATE"]  # the old grants took
    assert _init(pg_url, "--unit-roles", ORG_A) == 0
    assert _catalogue(pg_url) == fresh
    assert not _attempts(loader, "ingest_change", "postgresql")["UPDATE"]
    with sa.create_engine(pg_url).begin() as conn:
        conn.exec_driver_sql(f'SET LOCAL ROLE "{roles.OWNER}"')
        conn.exec_driver_sql(f"CREATE TABLE {LATER} (a int)")
    assert _attempts(loader, LATER, "postgresql") == {
        "SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False}


def _key() -> str:
    import base64
    import os

    return base64.b64encode(os.urandom(32)).decode()


def test_the_loader_records_the_first_key_and_only_the_owner_moves_it(pg_url, scram_roles, tmp_path,
                                                                       monkeypatch, capsys):
    from etl.target import crypt

    _demo_units(tmp_path, monkeypatch)
    assert _init(pg_url) == 0
    loader = _login(pg_url, roles.LOADER)
    old, new = _key(), _key()
    monkeypatch.setenv("ETL_DATA_KEY", old)
    assert cli.main(["run", "--all", "--target", loader]) == 0
    first = crypt.parse_key(old, "old")
    assert query(pg_url, 'SELECT "keyId", fingerprint FROM ingest_key') == [(first.id, first.fingerprint)]
    values = 'SELECT "idCardNo" FROM unit_person UNION ALL SELECT record FROM ingest_change ORDER BY 1'
    before = query(pg_url, values)
    assert before and all(first.id in v for (v,) in before if "enc:v1:" in v)
    monkeypatch.setenv("ETL_DATA_KEY", new)
    monkeypatch.setenv("ETL_DATA_KEY_OLD", old)
    capsys.readouterr()
    assert cli.main(["rotate-key", "--target", loader]) == 2
    assert "run it as the owner (etl_owner or a member of it)" in capsys.readouterr().err
    assert query(pg_url, values) == before  # refused before a value changed
    assert query(pg_url, 'SELECT "keyId" FROM ingest_key') == [(first.id,)]
    with sa.create_engine(pg_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql("CREATE ROLE alice23 LOGIN")  # a person holding the owner role
        conn.exec_driver_sql(f"GRANT {roles.OWNER} TO alice23")
    alice = make_url(pg_url).set(username="alice23").render_as_string(hide_password=False)
    assert cli.main(["rotate-key", "--target", alice]) == 0
    second = crypt.parse_key(new, "new")
    assert query(pg_url, 'SELECT "keyId", fingerprint, "setBy" FROM ingest_key') == [
        (second.id, second.fingerprint, "etl rotate-key")]
    assert all(second.id in v for (v,) in query(pg_url, values) if "enc:v1:" in v)
    monkeypatch.delenv("ETL_DATA_KEY_OLD")
    assert cli.main(["run", "--all", "--target", loader]) == 0
    monkeypatch.setenv("ETL_DATA_KEY", old)
    capsys.readouterr()
    assert cli.main(["run", "--all", "--target", loader]) == 2
    assert f"under key {second.id}" in capsys.readouterr().err


def test_the_loader_hands_objects_over_in_the_target_staging_table(demo_target):
    from etl.orchestration import staging

    _, loader, _ = demo_target
    store = staging.open_store("target", engine_factory=lambda: target.connect(loader))
    try:
        store.put("run/unit/06.parquet", b"x" * 10)
        assert store.get("run/unit/06.parquet") == b"x" * 10
        store.delete("run/")
        assert store.keys("run/") == set()
    finally:
        store.close()


def test_the_reader_reads_everything_and_writes_nothing(demo_target):
    admin, _, _ = demo_target
    reader = _login(admin, roles.READER)
    for t in ("risk_point", "ingest_change", "ingest_reject", "unit_info"):
        assert query(reader, f"SELECT count(*) FROM {t}") == query(admin, f"SELECT count(*) FROM {t}")
    for sql in ("INSERT INTO ingest_batch_seq VALUES ('20990101', 1)", "UPDATE risk_point SET \"riskName\" = 'x'",
                "DELETE FROM risk_point", "CREATE TABLE x (a int)", "TRUNCATE ingest_run"):
        _refused(reader, sql)


def test_a_unit_role_sees_only_its_units_rows(demo_target):
    admin, _, (a, b) = demo_target
    unit_a = _login(admin, roles.unit_role(a))
    for t in ("unit_info", "risk_point", "hidden_danger", "ingest_reject", "ingest_run", "ingest_batch"):
        mine = query(admin, f"SELECT count(*) FROM {t} WHERE \"orgNo\" = '{a}'")[0][0]
        theirs = query(admin, f"SELECT count(*) FROM {t} WHERE \"orgNo\" = '{b}'")[0][0]
        assert mine > 0 and theirs > 0, t  # both units have rows: the filter is really tested
        assert query(unit_a, f"SELECT \"orgNo\", count(*) FROM {t} GROUP BY 1") == [(a, mine)], t
        assert query(unit_a, f"SELECT count(*) FROM {t} WHERE \"orgNo\" = '{b}'") == [(0,)], t
    ledger = query(admin, f"SELECT count(*) FROM ingest_change c JOIN ingest_batch b USING (\"batchNo\") "
                          f"WHERE b.\"orgNo\" = '{a}'")
    assert query(unit_a, "SELECT count(*) FROM ingest_change") == ledger
    assert query(unit_a, "SELECT \"orgNo\" FROM etl_unit_role") == [(a,)]
    # a setting cannot widen it, nor can becoming the group role
    assert query(unit_a, f"SELECT set_config('etl.org_no', '{b}', false), count(*) FROM risk_point "
                         f"WHERE \"orgNo\" = '{b}'")[0][1] == 0
    for sql in ("SELECT * FROM ingest_stage", "SELECT * FROM alembic_version", "INSERT INTO etl_unit_role "
                f"VALUES (current_user, '{b}')", "UPDATE risk_point SET \"riskName\" = 'x'",
                f"SET ROLE {roles.unit_role(b)}", "SET ROLE etl_reader"):
        _refused(unit_a, sql)


def test_unit_roles_for_every_unit_the_target_holds(demo_target, capsys):
    admin, _, (a, b) = demo_target
    assert _init(admin, "--unit-roles") == 0
    assert {roles.unit_role(a), roles.unit_role(b)} <= set(capsys.readouterr().out.split())
    assert query(admin, "SELECT \"orgNo\" FROM etl_unit_role ORDER BY 1") == sorted([(a,), (b,)])


def test_an_orgno_that_is_not_one_is_refused(pg_url, capsys):
    assert _init(pg_url, "--unit-roles", "x; DROP ROLE etl_owner") == 2
    assert "not an orgNo" in capsys.readouterr().err


def _mutate(url: str, sql: str, *params) -> None:
    with sqlite3.connect(make_url(url).database) as conn:
        conn.execute(sql, params)


def test_incremental_updates_and_a_full_run_marking_d_run_as_the_loader(demo_target, capsys):
    admin, _, (a, _) = demo_target
    source = f"sqlite:///{Path.cwd() / 'var' / f'{UNIT_A}.sqlite'}"
    now = clock.naive(clock.now()).strftime("%Y-%m-%d %H:%M:%S")
    _mutate(source, "UPDATE t_hidden_danger SET description = description || ' (复查)', modify_time = ? "
                    "WHERE id = (SELECT min(id) FROM t_hidden_danger WHERE del_flag = 0)", now)
    _mutate(source, "DELETE FROM t_risk_point WHERE id = (SELECT max(id) FROM t_risk_point WHERE del_flag = 0)")
    mapping = f"mappings/{UNIT_A}.yaml"
    assert cli.main(["run", mapping, "--tx", "09", "--mode", "incremental"]) == 0
    assert cli.main(["run", mapping, "--tx", "06"]) == 0
    capsys.readouterr()
    runs = query(admin, f"SELECT \"txCode\", mode, status, updated, deleted FROM ingest_run WHERE \"orgNo\" "
                        f"= '{a}' AND (updated > 0 OR deleted > 0) ORDER BY 1")
    assert runs == [("06", "full", "success", 0, 1), ("09", "incremental", "success", 1, 0)]
    assert query(admin, f"SELECT count(*) FROM ingest_batch WHERE \"orgNo\" = '{a}' AND \"busType\" "
                        f"IN ('U', 'D')") == [(2,)]


def test_a_loader_meeting_an_old_schema_says_to_run_init_target_as_the_owner(demo_target, capsys):
    admin, _, _ = demo_target
    with sa.create_engine(admin).begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0003'")
    target.migrate._ready.clear()
    assert cli.main(["run", f"mappings/{UNIT_A}.yaml", "--tx", "06"]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAILED")]
    assert failed == [f"FAILED {UNIT_A} 06: the target schema is at 0003, the code needs "
                      f"{target.head_revision()}: run `etl init-target` as the owner (etl_owner or a "
                      f"member of it)"]


# --- MariaDB and SQLite ----------------------------------------------------------------------


def _grants(url: str) -> list:
    """Each role's grants (MariaDB lists them in no stable order once one was revoked)."""
    return [sorted(query(url, f"SHOW GRANTS FOR {r}")) for r in (roles.OWNER, roles.LOADER, roles.READER)]


@pytest.fixture
def mariadb_loader(mariadb_url):
    assert _init(mariadb_url) == 0
    before = _grants(mariadb_url)
    assert _init(mariadb_url) == 0
    assert _grants(mariadb_url) == before  # rerunning changes nothing
    admin = make_url(mariadb_url)
    user = "etl_load14"
    with sa.create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f"CREATE USER IF NOT EXISTS '{user}'@'%%' IDENTIFIED BY '{PASSWORD}'")
        conn.exec_driver_sql(f"GRANT {roles.LOADER} TO '{user}'@'%%'")
        conn.exec_driver_sql(f"SET DEFAULT ROLE {roles.LOADER} FOR '{user}'@'%%'")
    return mariadb_url, admin.set(username=user, password=PASSWORD).render_as_string(hide_password=False)


def test_mariadb_loader_loads_and_may_not_change_the_schema_nor_remove_records(
        mariadb_loader, tmp_path, monkeypatch):
    admin, loader = mariadb_loader
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 5)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    monkeypatch.setenv("ETL_TARGET_URL", loader)
    assert cli.main(["run", str(m.path)]) == 0
    write_source(source, "t_hidden_danger", [hidden_danger_row(i, problem="改") for i in range(1, 4)])
    assert cli.main(["run", str(m.path)]) == 0
    assert query(admin, "SELECT busType, count(*) FROM hidden_danger GROUP BY 1 ORDER BY 1") == [
        ("D", 1), ("U", 3)]
    for sql in ("CREATE TABLE x (a int)", "DROP TABLE hidden_danger", "ALTER TABLE hidden_danger ADD x int",
                "DELETE FROM hidden_danger", "DELETE FROM ingest_change", "TRUNCATE TABLE ingest_change",
                "TRUNCATE TABLE hidden_danger", "UPDATE alembic_version SET version_num = 'x'"):
        _refused(loader, sql)


def _mariadb_user(admin_url: str, user: str, role: str) -> str:
    with sa.create_engine(admin_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f"CREATE USER IF NOT EXISTS '{user}'@'%%' IDENTIFIED BY '{PASSWORD}'")
        conn.exec_driver_sql(f"GRANT {role} TO '{user}'@'%%'")
        conn.exec_driver_sql(f"SET DEFAULT ROLE {role} FOR '{user}'@'%%'")
    return make_url(admin_url).set(username=user, password=PASSWORD).render_as_string(hide_password=False)


def test_mariadb_loader_and_reader_may_do_exactly_what_docs_security_md_says(mariadb_loader):
    admin, loader = mariadb_loader
    reader = _mariadb_user(admin, "etl_read23", roles.READER)
    with sa.create_engine(admin).begin() as conn:  # a later migration: no default privileges here
        conn.exec_driver_sql(f"CREATE TABLE {LATER} (a int)")
    wrong = []
    for tables, allowed in _documented():
        for table in tables:
            if table in (roles.UNIT_ROLE_TABLE,):  # row-level security's lookup: PostgreSQL only
                continue
            for role, url in ((roles.LOADER, loader), (roles.READER, reader)):
                expected = {"SELECT"} if table == LATER else allowed[role]  # until --roles again
                for privilege, done in _attempts(url, table, "mariadb").items():
                    if done != (privilege in expected):
                        wrong.append(f"{role} {privilege} {table}: {'allowed' if done else 'refused'}")
    assert wrong == []


def test_mariadb_rerun_takes_away_what_earlier_versions_granted(mariadb_loader):
    admin, loader = mariadb_loader
    fresh = _grants(admin)
    db = make_url(admin).database
    with sa.create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:  # before issue 23
        for table in ("ingest_change", "ingest_batch", "ingest_run", "ingest_stage"):
            conn.exec_driver_sql(f"GRANT INSERT, UPDATE ON `{db}`.`{table}` TO {roles.LOADER}")
    assert _attempts(loader, "ingest_change", "mariadb")["UPDATE"]
    assert _init(admin) == 0
    assert _grants(admin) == fresh
    assert not _attempts(loader, "ingest_change", "mariadb")["UPDATE"]


def test_mariadb_loader_records_the_first_key_and_may_not_rotate(mariadb_loader, tmp_path, monkeypatch, capsys):
    from etl.target import crypt

    admin, loader = mariadb_loader
    _demo_units(tmp_path, monkeypatch)
    key = _key()
    monkeypatch.setenv("ETL_DATA_KEY", key)
    assert cli.main(["run", f"mappings/{UNIT_A}.yaml", "--target", loader]) == 0
    k = crypt.parse_key(key, "k")
    assert query(admin, "SELECT keyId, fingerprint FROM ingest_key") == [(k.id, k.fingerprint)]
    monkeypatch.setenv("ETL_DATA_KEY", _key())
    monkeypatch.setenv("ETL_DATA_KEY_OLD", key)
    capsys.readouterr()
    assert cli.main(["rotate-key", "--target", loader]) == 2
    assert "run it as the owner" in capsys.readouterr().err
    assert cli.main(["rotate-key", "--target", admin]) == 0


def test_unit_roles_are_refused_where_there_is_no_row_level_security(mariadb_url, sqlite_url, capsys):
    assert _init(mariadb_url, "--unit-roles", ORG_A) == 2
    assert "no row-level security" in capsys.readouterr().err
    assert _init(sqlite_url) == 2
    assert "SQLite has no roles" in capsys.readouterr().err
