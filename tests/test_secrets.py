"""Secrets never escape: no password from a URL (user info or query string) in any output,
log, or bookkeeping table; literal mapping URLs with a password are refused; a malformed URL
in the environment or on the command line is one clear line and exit 2.

The PostgreSQL target is owned by a role that must give its password (the test server trusts
everyone else), and the MariaDB one by a user with a password, so the connections below really
carry the secret that must not show.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from etl.cli import main
from etl.common import masking
from etl.common.masking import holds_secret, is_secret_param, mask_secrets_in_text, mask_url
from helpers import hidden_danger_mapping_text, hidden_danger_row, write_source

MARK = "S3cr3t"  # in every spelling of the password: raw, percent-encoded, quote_plus
PASSWORD = f"{MARK}:p@ss/9"
ROLE = "etl_secret_owner"


# --- mask_url and friends ------------------------------------------------------------------


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://etl:hunter22@db.example:5432/src", "postgresql+psycopg://etl:***@db.example:5432/src"),
    ("postgresql://etl@h/db?password=hunter22&sslmode=require", "postgresql://etl@h/db?password=***&sslmode=require"),
    ("postgresql://etl@h/db?sslpassword=hunter22&sslkey=k.pem", "postgresql://etl@h/db?sslkey=k.pem&sslpassword=***"),
    ("mysql+pymysql://root:hunter22@127.0.0.1:3306/x?charset=utf8mb4", "mysql+pymysql://root:***@127.0.0.1:3306/x?charset=utf8mb4"),
    ("mysql+pymysql://root@h/x?passwd=hunter22", "mysql+pymysql://root@h/x?passwd=***"),
    ("mssql+pyodbc://u@h/x?PWD=hunter22&Token=abcd1234", "mssql+pyodbc://u@h/x?PWD=***&Token=***"),
    ("sqlite:///var/unit_a.sqlite", "sqlite:///var/unit_a.sqlite"),
    ("sqlite:////abs/path/unit.sqlite?mode=ro", "sqlite:////abs/path/unit.sqlite?mode=ro"),
])
def test_mask_url_hides_user_info_and_secret_parameters(url, shown):
    assert mask_url(url) == shown
    assert mask_url(make_url(url)) == shown


@pytest.mark.parametrize("url", [
    f"postgresql://u:{quote(PASSWORD, safe='')}@h/db",  # percent-encoded @ : /
    f"postgresql://u@h/db?password={quote(PASSWORD, safe='')}",
    f"postgresql://u:{PASSWORD}@h/db",  # careless: raw @ and / in the password
    f"postgresql://u:{PASSWORD}@h:notaport/db",  # not a valid URL
    f"not a url, but password={PASSWORD} and key={MARK}x",
    f"host=127.0.0.1 port=5432 password='{PASSWORD} x' dbname=src",  # libpq conninfo
    f"connect(**{{'user': 'u', 'password': '{PASSWORD}'}})",
    f"mysql+pymysql://u:{MARK}@h/x?client_secret={MARK}&api_key={MARK}",
    f"(psycopg.OperationalError) invalid dsn: postgresql://u:{MARK}xx@h:1/db?token={MARK}",
])
def test_mask_url_hides_every_spelling_of_the_password(url):
    assert MARK not in mask_url(url)
    assert MARK not in mask_secrets_in_text(url)


@pytest.mark.parametrize("garbage", ["", "://", "not a url", "::@@//??==&&", "a" * 10_000, "\x00\udcff"])
def test_mask_url_never_raises(garbage):
    assert isinstance(mask_url(garbage), str)
    assert isinstance(mask_secrets_in_text(garbage), str)


def test_masking_keeps_ordinary_text():
    text = "Access denied for user 'u'@'127.0.0.1' (using password: YES); sslkey=/etc/k.pem port=5432"
    assert mask_secrets_in_text(text) == text


def test_a_registered_secret_is_hidden_wherever_it_shows():
    masking.register_url_secrets("postgresql://u:Unus4alPw@h/db")
    assert mask_secrets_in_text("driver said: wrong password 'Unus4alPw' for u") == \
        "driver said: wrong password '***' for u"


def test_a_message_masked_before_its_secret_was_registered_is_masked_again_after():
    """`mask_message` keeps short texts it masked (the report masks the same ones thousands of
    times): a secret registered later must still be hidden in a text seen before."""
    text = "wrong password 'Lat3rKnownPw' for u"
    assert masking.mask_message(text) == text  # not a secret yet: shown, and kept
    assert masking.mask_message(text) == text
    masking.register_secrets(["Lat3rKnownPw"])
    assert masking.mask_message(text) == "wrong password '***' for u"
    long_text = f"{'x' * 300} Lat3rKnownPw"  # longer than kept texts: masked each time
    assert masking.mask_message(long_text) == f"{'x' * 300} ***"


def test_a_secret_registered_while_a_message_is_masked_is_never_kept_unmasked():
    """Another thread registers a secret between the masking of a text and its keeping: the
    result, masked without that secret, is not kept."""
    import threading

    text = "said 'Rac3dSecretPw' twice"
    inside = threading.Event()
    real = masking._mask_message

    def slow(t: str) -> str:
        out = real(t)
        if t == text:
            inside.set()
            registered.wait(5)
        return out

    registered = threading.Event()
    masking._mask_message = slow
    try:
        first = []
        worker = threading.Thread(target=lambda: first.append(masking.mask_message(text)))
        worker.start()
        assert inside.wait(5)
        masking.register_secrets(["Rac3dSecretPw"])
        registered.set()
        worker.join(5)
    finally:
        masking._mask_message = real
    assert first == [text]  # masked before the secret was known, as any earlier call was
    assert masking.mask_message(text) == "said '***' twice"


def test_registered_secrets_reach_airflows_log_masker():
    from airflow.sdk.log import _secrets_masker  # imported: etl registers with Airflow too

    masking.register_url_secrets("postgresql://u@h/db?password=Airfl0wTaskPw")
    assert "Airfl0wTaskPw" not in _secrets_masker().redact("connecting with Airfl0wTaskPw")


@pytest.mark.parametrize("name", ["password", "PWD", "passwd", "sslpassword", "secret", "token",
                                  "key", "api-key", "aws_secret_access_key", "auth_token"])
def test_secret_parameter_names(name):
    assert is_secret_param(name)


@pytest.mark.parametrize("name", ["sslkey", "sslcert", "sslmode", "charset", "host", "user", "mode"])
def test_ordinary_parameter_names(name):
    assert not is_secret_param(name)


def test_holds_secret():
    assert holds_secret("postgresql://u:p@h/db") and holds_secret("postgresql://u@h/db?password=x")
    assert holds_secret("garbage password=x") and not holds_secret("sqlite:///var/t.sqlite")


# --- the mapping's literal url ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["postgresql://etl@h/src?password=hunter22",
                                 "mysql+pymysql://etl@h/src?passwd=hunter22",
                                 "postgresql://etl:hunter22@h/src",
                                 "postgresql://etl@h/src?sslmode=require&token=hunter22"])
def test_a_password_in_a_literal_mapping_url_is_refused(url, tmp_path, capsys):
    path = tmp_path / "unit.yaml"
    path.write_text(hidden_danger_mapping_text().replace("{url_env: UNIT_A_SOURCE_URL}", f"{{url: '{url}'}}"),
                    encoding="utf-8")
    assert main(["check", "--offline", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "[source] url holds a password" in err and "url_env" in err and "conn_id" in err
    assert "hunter22" not in err and len(err.splitlines()) == 1


# --- a target that needs its password ------------------------------------------------------


@pytest.fixture(scope="module")
def password_role(pg_server):
    """A role that must log in with PASSWORD: pg_hba asks it (and only it) for scram."""
    admin = sa.create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP ROLE IF EXISTS {ROLE}")
        conn.exec_driver_sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        hba = conn.exec_driver_sql("SHOW hba_file").scalar()
        with open(hba, encoding="utf-8") as f:
            rules = f.read()
        line = f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n"
        if line not in rules:
            with open(hba, "w", encoding="utf-8") as f:
                f.write(line + rules)
            conn.exec_driver_sql("SELECT pg_reload_conf()")
    admin.dispose()
    return ROLE


@pytest.fixture
def pg_target(password_role, pg_url):
    """(admin URL, URL with the password in user info, URL with it in ?password=)."""
    admin = make_url(pg_url)
    with sa.create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{admin.database}" OWNER TO {ROLE}')
        conn.exec_driver_sql(f"ALTER SCHEMA public OWNER TO {ROLE}")
    base = admin.set(username=ROLE)
    wrong = base.set(password="wrong-password")
    with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
        sa.create_engine(wrong).connect()  # the password really is checked
    return (pg_url, base.set(password=PASSWORD).render_as_string(hide_password=False),
            base.update_query_dict({"password": PASSWORD}).render_as_string(hide_password=False))


@pytest.fixture
def mariadb_target(mariadb_url):
    admin = make_url(mariadb_url)
    user = "etl_secret"
    with sa.create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f"CREATE USER IF NOT EXISTS '{user}'@'%%' IDENTIFIED BY '{PASSWORD}'")
        conn.exec_driver_sql(f"GRANT ALL ON `{admin.database}`.* TO '{user}'@'%%'")
    base = admin.set(username=user)
    with pytest.raises(sa.exc.OperationalError, match="Access denied"):
        sa.create_engine(base.set(password="wrong-password")).connect()
    return (mariadb_url, base.set(password=PASSWORD).render_as_string(hide_password=False),
            base.update_query_dict({"password": PASSWORD}).render_as_string(hide_password=False))


@pytest.fixture
def unit(tmp_path, monkeypatch):
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 4)]
                 + [hidden_danger_row(4, check_date="not a date")])  # one reject row
    monkeypatch.setenv("UNIT_A_SOURCE_URL", source)
    path = tmp_path / "unit_a.yaml"
    path.write_text(hidden_danger_mapping_text(), encoding="utf-8")
    return path


def _bookkeeping_text(admin_url: str) -> str:
    """Every text value of the target's run record and reject report."""
    engine = sa.create_engine(admin_url)
    out = []
    with engine.connect() as conn:
        for table in ("ingest_run", "ingest_reject", "ingest_audit", "ingest_batch"):
            out += [repr(tuple(r)) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
    engine.dispose()
    return "\n".join(out)


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
@pytest.mark.parametrize("where", ["userinfo", "query"])
@pytest.mark.parametrize("given", ["--target", "ETL_TARGET_URL"])
def test_no_command_shows_the_target_password(kind, where, given, unit, monkeypatch, capsys, request):
    admin, in_userinfo, in_query = request.getfixturevalue(f"{'pg' if kind == 'postgresql' else kind}_target")
    url = in_userinfo if where == "userinfo" else in_query
    if given == "--target":
        opt = ["--target", url]
    else:
        monkeypatch.setenv("ETL_TARGET_URL", url)
        opt = []
    assert main(["init-target", *opt]) == 0
    assert main(["run", str(unit), *opt]) == 0
    assert main(["check", str(unit)]) == 0
    assert main(["reconcile", str(unit), *opt]) == 0
    monkeypatch.setenv("UNIT_A_SOURCE_URL", f"postgresql://{ROLE}@127.0.0.1:1/nodb?password={quote(PASSWORD)}")
    assert main(["run", str(unit), *opt]) == 1  # the source is unreachable: a failure recorded
    out = capsys.readouterr()
    assert "***" in out.out and MARK not in out.out + out.err
    warning = "a password on the command line is visible to other users"
    assert (warning in out.err) == (given == "--target")
    rows = _bookkeeping_text(admin)
    assert "cannot connect" in rows
    assert "failed" in rows and MARK not in rows


def test_a_failed_runs_message_is_masked_in_the_run_record(pg_target, unit, monkeypatch, capsys):
    admin, in_userinfo, _ = pg_target
    monkeypatch.setenv("UNIT_A_SOURCE_URL",
                       f"postgresql://{ROLE}:{quote(PASSWORD, safe='')}@127.0.0.1:1/nodb?token={MARK}tok")
    assert main(["run", str(unit), "--target", in_userinfo]) == 1
    out = capsys.readouterr()
    assert MARK not in out.out + out.err
    engine = sa.create_engine(admin)
    with engine.connect() as conn:
        message = conn.execute(sa.text("SELECT message FROM ingest_run WHERE status = 'failed'")).scalar_one()
    engine.dispose()
    assert "cannot connect to postgresql+psycopg://etl_secret_owner:***@127.0.0.1:1/nodb" in message
    assert MARK not in message


def test_check_masks_a_source_url_from_the_environment(pg_target, unit, monkeypatch, capsys):
    _, in_userinfo, in_query = pg_target
    for url in (in_userinfo, in_query):  # reachable, with the right password; the table is missing
        monkeypatch.setenv("UNIT_A_SOURCE_URL", url)
        assert main(["check", str(unit)]) == 2
        out = capsys.readouterr()
        assert "t_hidden_danger" in out.err and MARK not in out.out + out.err
    monkeypatch.setenv("UNIT_A_SOURCE_URL", make_url(in_query).set(port=1).render_as_string(False))
    assert main(["check", str(unit)]) == 2  # unreachable: the message quotes the URL, masked
    out = capsys.readouterr()
    assert "cannot connect" in out.err and "password=***" in out.err and MARK not in out.out + out.err


# --- malformed URLs ------------------------------------------------------------------------


BAD_URLS = ["not a url", f"postgresql://u:{MARK}@host:notaport/db", f"nosuchdb://u:{MARK}@h/db"]


@pytest.mark.parametrize("bad", BAD_URLS)
@pytest.mark.parametrize("given", ["--target", "ETL_TARGET_URL"])
def test_a_malformed_target_url_is_one_line_and_exit_2(bad, given, monkeypatch, capsys):
    if given == "--target":
        code = main(["init-target", "--target", bad])
    else:
        monkeypatch.setenv("ETL_TARGET_URL", bad)
        code = main(["init-target"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and given in lines[0] and "Traceback" not in err and MARK not in err


@pytest.mark.parametrize("bad", BAD_URLS)
@pytest.mark.parametrize("command", ["run", "check"])
def test_a_malformed_source_url_in_the_environment_is_one_line_and_exit_2(bad, command, unit, tmp_path,
                                                                         monkeypatch, capsys):
    monkeypatch.setenv("UNIT_A_SOURCE_URL", bad)
    target = tmp_path / "t.sqlite"
    argv = [command, str(unit)] + (["--target", f"sqlite:///{target}"] if command == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "UNIT_A_SOURCE_URL" in err
    assert "Traceback" not in err and MARK not in err
    assert not target.exists()  # nothing written


# --- Airflow ------------------------------------------------------------------------------


@pytest.mark.airflow
def test_airflow_run_logs_and_records_no_password(pg_target, tmp_path, monkeypatch, capsys, caplog):
    """A unit whose source (password in the query string) is down fails in the DAG; neither
    the task logs nor the run record show the source's or the target's password."""
    import logging
    from datetime import datetime

    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db
    from test_dags import CST, DAGS, _demo_unit_mapping, _states

    admin, _, in_query = pg_target
    folder = tmp_path / "mappings"
    folder.mkdir()
    _demo_unit_mapping(folder, "苏州电梯", {"url_env": "SECRET_SOURCE_URL"})
    monkeypatch.setenv("SECRET_SOURCE_URL", f"postgresql://{ROLE}@127.0.0.1:1/nodb?password={quote(PASSWORD)}")
    monkeypatch.setenv("ETL_MAPPINGS_DIR", str(folder))
    monkeypatch.setenv("ETL_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("ETL_TARGET_URL", in_query)
    monkeypatch.setenv("ETL_RETRY_DELAY_SECONDS", "0")
    monkeypatch.delenv("AIRFLOW_CONN_ETL_TARGET", raising=False)
    caplog.set_level(logging.INFO)
    db.initdb()  # the throwaway Airflow home's metadata database
    dag = DagBag(dag_folder=str(DAGS)).dags["dual_prevention_daily"]
    dr = dag.test(logical_date=datetime(2025, 4, 2, tzinfo=CST), run_conf={"tx_codes": ["06"], "mode": "full"})
    assert str(dr.state) == "failed"
    assert _states(dr)[("ingest.load", "1/1 苏州电梯 (1 unit) — failed: 苏州电梯 06")] == ("failed", 4)
    out = capsys.readouterr()
    logs = out.out + out.err + caplog.text
    assert "cannot connect" in logs and MARK not in logs
    rows = _bookkeeping_text(admin)
    assert "cannot connect" in rows and MARK not in rows


@pytest.mark.parametrize("command", ["init-target", "run"])
def test_a_wrong_target_password_is_one_line_without_the_password(command, pg_target, unit, monkeypatch, capsys):
    _, in_userinfo, _ = pg_target
    wrong = make_url(in_userinfo).set(password=f"{MARK}-wrong").render_as_string(False)
    monkeypatch.setenv("ETL_TARGET_URL", wrong)
    assert main([command] + ([str(unit)] if command == "run" else [])) == 1
    err = capsys.readouterr().err.strip()
    assert "password authentication failed" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err and MARK not in err
