"""Encrypted transport (issue 14): PostgreSQL and MariaDB servers of this module's own, started
with a certificate signed by a CA the test makes with `cryptography`.

verify-full / ssl_ca with the right CA connects and the server says the session is encrypted;
a wrong CA is refused; TLS required (`source.require_tls`, `ETL_REQUIRE_TLS`) refuses a URL
that asks for a plain connection, in one line, before connecting; a full `etl run` goes over
TLS from source to target.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.engine import make_url

from helpers import hidden_danger_mapping_text, hidden_danger_row, write_source
from servers import (Server, ServerBinaryMissing, create_database, drop_database, start_mariadb,
                     start_postgres)

from etl import target
from etl.cli import main as cli_main
from etl.common import outbound
from etl.common.errors import ConfigError, SourceError
from etl.mapping import SourceSpec
from etl.source import connect

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb]


# --- a CA and a server certificate -------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _server_cert(ca_key, ca_cert: x509.Certificate) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | bytes]:
    folder = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = _ca("etl test CA")
    _, wrong_cert = _ca("some other CA")
    key, cert = _server_cert(ca_key, ca_cert)
    (folder / "ca.pem").write_bytes(_pem(ca_cert))
    (folder / "wrong-ca.pem").write_bytes(_pem(wrong_cert))
    return {"ca": folder / "ca.pem", "wrong_ca": folder / "wrong-ca.pem",
            "files": {"ca.pem": _pem(ca_cert), "server.crt": _pem(cert), "server.key": _pem_key(key)}}


def _serve(start) -> Iterator[Server]:
    try:
        server = start()
    except ServerBinaryMissing as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_pg(certs) -> Iterator[Server]:
    yield from _serve(lambda: start_postgres(
        settings={"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"},
        files=certs["files"]))


@pytest.fixture(scope="module")
def tls_maria(certs) -> Iterator[Server]:
    yield from _serve(lambda: start_mariadb(
        args=["--ssl-ca={dir}/ca.pem", "--ssl-cert={dir}/server.crt", "--ssl-key={dir}/server.key"],
        files=certs["files"]))


@pytest.fixture
def pg_db(tls_pg: Server) -> Iterator[str]:
    url = create_database(tls_pg.admin_url)
    yield url
    drop_database(url)


@pytest.fixture
def maria_db(tls_maria: Server) -> Iterator[str]:
    url = create_database(tls_maria.admin_url)
    yield url
    drop_database(url)


@pytest.fixture(autouse=True)
def _no_global_requirement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(outbound.ENV, raising=False)


def _with(url: str, **query: str) -> str:
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


def _source_encrypted(url: str, **spec) -> bool:
    """Connect as the pipeline reads a source and ask the server whether the session is encrypted."""
    s = SourceSpec(url=url, **spec)
    engine = connect.engine_for(connect.resolve_url(s), s)
    with connect.read_only(engine) as conn:
        if engine.dialect.name == "postgresql":
            return bool(conn.exec_driver_sql(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").scalar())
        return bool(conn.exec_driver_sql("SHOW STATUS LIKE 'Ssl_cipher'").one()[1])


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


# --- PostgreSQL --------------------------------------------------------------------------------


def test_postgres_verify_full_with_the_right_ca_connects_encrypted(pg_db: str, certs) -> None:
    url = _with(pg_db, sslmode="verify-full", sslrootcert=str(certs["ca"]))
    assert _source_encrypted(url, require_tls=True)
    assert not _source_encrypted(_with(pg_db, sslmode="disable"))  # the server takes both


def test_postgres_with_a_wrong_ca_is_refused(pg_db: str, certs) -> None:
    url = _with(pg_db, sslmode="verify-full", sslrootcert=str(certs["wrong_ca"]))
    with pytest.raises(SourceError, match="certificate verify failed"):
        _source_encrypted(url)


def test_postgres_host_name_is_verified(pg_db: str, certs) -> None:
    """verify-full checks the name too: the certificate names 127.0.0.1 and localhost only."""
    url = make_url(_with(pg_db, sslmode="verify-full", sslrootcert=str(certs["ca"]), hostaddr="127.0.0.1"))
    with pytest.raises(SourceError, match="does not match"):
        _source_encrypted(url.set(host="db.example.net").render_as_string(hide_password=False))


def test_require_tls_refuses_a_plain_postgres_url_before_connecting(pg_db: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _with(pg_db, sslmode="disable")
    with pytest.raises(ConfigError, match="sslmode=disable but TLS is required .source.require_tls."):
        _source_encrypted(plain, require_tls=True)
    monkeypatch.setenv(outbound.ENV, "1")
    with pytest.raises(ConfigError, match="sslmode=disable but TLS is required .ETL_REQUIRE_TLS=1.") as e:
        target.connect(plain, "ETL_TARGET_URL")
    assert _one_line(e).startswith("ETL_TARGET_URL sets sslmode=disable")


def test_require_tls_makes_a_postgres_url_without_sslmode_demand_tls(pg_db: str, pg_url: str) -> None:
    """libpq's default, sslmode=prefer, talks in clear to a server without TLS; required, the
    URL gets sslmode=require: a server without TLS (the suite's own) is then refused."""
    assert connect.resolve_url(SourceSpec(url=pg_db, require_tls=True)).query["sslmode"] == "require"
    assert _source_encrypted(pg_db, require_tls=True)
    assert not _source_encrypted(pg_url)
    with pytest.raises(SourceError, match="server does not support SSL"):
        _source_encrypted(pg_url, require_tls=True)


def test_a_session_the_server_left_plain_is_refused_after_connecting(pg_db: str) -> None:
    """The check after connecting asks the server itself (pg_stat_ssl), whatever the URL said."""
    engine = sa.create_engine(_with(pg_db, sslmode="disable"))
    outbound.verify_on_connect(engine, "ETL_REQUIRE_TLS=1", "the target")
    with pytest.raises(ConfigError, match="accepted a connection without TLS"):
        engine.connect()
    engine.dispose()


# --- MariaDB -----------------------------------------------------------------------------------


def test_mariadb_verified_with_the_right_ca_connects_encrypted(maria_db: str, certs) -> None:
    url = _with(maria_db, ssl_ca=str(certs["ca"]), ssl_verify_cert="true", ssl_verify_identity="true")
    assert _source_encrypted(url, require_tls=True)
    assert _source_encrypted(_with(maria_db, ssl_ca=str(certs["ca"])), require_tls=True)


def test_mariadb_with_a_wrong_ca_is_refused(maria_db: str, certs) -> None:
    for url in (_with(maria_db, ssl_ca=str(certs["wrong_ca"])),
                _with(maria_db, ssl_ca=str(certs["wrong_ca"]), ssl_verify_cert="true")):
        with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            _source_encrypted(url)


def test_require_tls_refuses_a_mariadb_url_without_tls_options(maria_db: str, certs,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="has no TLS options but TLS is required") as e:
        _source_encrypted(maria_db, require_tls=True)
    assert "ssl_ca=" in _one_line(e)
    with pytest.raises(ConfigError, match="has no TLS options"):
        _source_encrypted(_with(maria_db, ssl_ca=str(certs["ca"]), ssl_disabled="true"), require_tls=True)
    monkeypatch.setenv(outbound.ENV, "1")
    with pytest.raises(ConfigError, match="ETL_TARGET_URL has no TLS options but TLS is required"):
        target.connect(maria_db, "ETL_TARGET_URL")


def test_sqlite_is_local_and_needs_no_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(outbound.ENV, "1")
    engine = target.connect(f"sqlite:///{tmp_path / 't.sqlite'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    engine.dispose()


# --- Airflow connections and a whole run -------------------------------------------------------


def test_airflow_connection_extras_arrive_as_url_options(monkeypatch: pytest.MonkeyPatch, certs) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TLS_PG", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "etl", "schema": "src",
        "extra": {"sslmode": "verify-full", "sslrootcert": str(certs["ca"])}}))
    monkeypatch.setenv("AIRFLOW_CONN_TLS_MARIA", json.dumps({
        "conn_type": "mysql", "host": "127.0.0.1", "port": 3306, "login": "etl", "schema": "src",
        "extra": {"ssl_ca": str(certs["ca"]), "ssl_verify_identity": "true"}}))
    pg = connect.resolve_url(SourceSpec(conn_id="tls_pg", require_tls=True))
    assert (pg.query["sslmode"], pg.query["sslrootcert"]) == ("verify-full", str(certs["ca"]))
    maria = connect.resolve_url(SourceSpec(conn_id="tls_maria", require_tls=True))
    assert outbound.mysql_connect_args(maria)["ssl"] == {
        "ca": str(certs["ca"]), "verify_mode": True, "check_hostname": True}


def test_etl_run_goes_over_tls_from_source_to_target(pg_db: str, maria_db: str, certs, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    write_source(pg_db, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 6)])
    maria = make_url(maria_db)
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_TLS", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": make_url(pg_db).port,
        "login": make_url(pg_db).username, "schema": make_url(pg_db).database,
        "extra": {"sslmode": "verify-full", "sslrootcert": str(certs["ca"])}}))
    mapping = tmp_path / "unit.yaml"
    mapping.write_text(hidden_danger_mapping_text().replace("{url_env: UNIT_A_SOURCE_URL}",
                                                            "{conn_id: unit_tls, require_tls: true}"),
                       encoding="utf-8")
    monkeypatch.setenv(outbound.ENV, "1")
    target_url = _with(maria_db, ssl_ca=str(certs["ca"]), ssl_verify_cert="true",
                       ssl_verify_identity="true")
    assert cli_main(["-q", "run", str(mapping), "--target", target_url]) == 0
    engine = target.connect(target_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM hidden_danger").scalar() == 5
        assert conn.exec_driver_sql("SHOW STATUS LIKE 'Ssl_cipher'").one()[1]
    engine.dispose()
    # the same run with a plain target is refused, exit 2, nothing written
    assert cli_main(["-q", "run", str(mapping), "--target", maria_db]) == 2
    assert maria.database
