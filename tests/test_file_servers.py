"""Units' file servers seen from the attacker's side (issue 23): a unit's server that redirects
our worker elsewhere, a plain `http://` base with TLS required, a host name leading to the
worker's own loopback or an intranet, an SSH server whose host key nobody recorded or that
changed. `etl.common.outbound` decides; these are real servers on 127.0.0.1 (HTTP:
tests/test_media.py's `http_files`; SFTP: tests/sftp_server.py), a real pipeline into SQLite."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import paramiko
import pytest

from etl import pipeline, target
from etl.common import outbound
from etl.common.errors import ConfigError
from etl.media.files import FileServerUnreachable, FileSource, MediaError, MediaStore, fetch
from etl.onboarding import sample_files
from helpers import ORG_A, rows_of
from test_media import http_files
from test_media_pipeline import NOW, RULES_MAPPING, _files, _rule, _source

try:
    from sftp_server import sftp_server
except ImportError:  # tests/ became a package
    from tests.sftp_server import sftp_server  # type: ignore[no-redef]

SECRET = b"instance credentials: AKIA-not-for-a-unit"


@pytest.fixture(autouse=True)
def media_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "media"
    monkeypatch.setenv("ETL_MEDIA_URL", str(store))
    monkeypatch.delenv("ETL_REQUIRE_TLS", raising=False)
    return store


def _unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[dict], base: str, *,
          require_tls: bool = False):
    """A unit whose files are at `base` (env UNIT_A_FILES), its mapping loaded."""
    from etl.mapping import load_mapping

    url = _source(tmp_path, "s.sqlite", rows)
    monkeypatch.setenv("UNIT_A_SOURCE_URL", url)
    monkeypatch.setenv("UNIT_A_FILES", base)
    text = RULES_MAPPING.format(org=ORG_A, env="UNIT_A_SOURCE_URL", name="南京某某化工有限公司",
                                file="{base_env: UNIT_A_FILES}")
    if require_tls:
        text = text.replace("source: {url_env: UNIT_A_SOURCE_URL}",
                            "source: {url_env: UNIT_A_SOURCE_URL, require_tls: true}")
        assert "require_tls: true" in text
    p = tmp_path / f"unit_{ORG_A}.yaml"
    p.write_text(text, encoding="utf-8")
    return load_mapping(p)


def _run(db_url: str, mapping):
    engine = target.connect(db_url)
    try:
        [result] = pipeline.run_mapping(engine, mapping, now=NOW)
        return result
    finally:
        engine.dispose()


def _requests(server) -> int:
    return sum(server.requests.values())


def _stored(media_store: Path) -> list[Path]:
    return [p for p in media_store.rglob("*") if p.is_file() and "index" not in p.parts]


def _check(path: Path, capsys) -> tuple[int, str]:
    from etl.cli import main

    code = main(["check", str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


# --- redirects: only within the base's own origin ------------------------------------------------


@pytest.fixture()
def secret_server(tmp_path: Path):
    """Another server on the worker's loopback (another port): an admin page, a metadata
    stand-in. A unit's redirect must never reach it."""
    root = _files(tmp_path / "internal", {"secret.pdf": sample_files.pdf_bytes(SECRET.decode())})
    with http_files(root) as (_, server):
        yield f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_redirect_to_another_server_rejects_the_row_and_reaches_nothing(
        tmp_path, monkeypatch, sqlite_url, media_store, secret_server, host):
    """The unit's server (port P1) answers 302 to another port P2 of the worker's own
    loopback (`127.0.0.1`), or to another host name (`localhost`): the row is rejected
    `file_redirect`, nothing is stored, recorded or linked, and P2 never hears of it."""
    from etl.report import site

    secret_url, secret = secret_server
    pdf = sample_files.pdf_bytes("the unit's own rule")
    root = _files(tmp_path / "www", {"files/ok.pdf": pdf})
    elsewhere = secret_url.replace("127.0.0.1", host) + "/secret.pdf"
    with http_files(root, redirects={"/files/evil.pdf": elsewhere}) as (base, server):
        m = _unit(tmp_path, monkeypatch, [_rule(1, "ok.pdf"), _rule(2, "evil.pdf")], base)
        r = _run(sqlite_url, m)
        assert r.status == "success" and (r.counts.inserted, r.counts.rejected) == (1, 1)
        assert server.requests[("HEAD", "/files/evil.pdf")] + server.requests[("GET", "/files/evil.pdf")] >= 1
    assert _requests(secret) == 0
    [reject] = rows_of(sqlite_url, "ingest_reject")
    assert (reject["rule"], reject["sourceKey"], reject["field"]) == ("file_redirect", "2", "fileAppendix")
    assert f"{host}:{secret.server_address[1]}" in reject["message"] and "not followed" in reject["message"]
    media = rows_of(sqlite_url, "ingest_media")
    assert [x["name"] for x in media] == ["ok.pdf"]
    assert [p.read_bytes() for p in _stored(media_store)] == [pdf]
    engine = target.connect(sqlite_url)
    out = tmp_path / "report"
    site.build(engine, [m], out)
    engine.dispose()
    page = next((out / "units").glob("*.html")).read_text(encoding="utf-8")
    linked = [name for href, name in re.findall(r'<a href="([^"]+)">([^<]+)</a>', page) if "media" in href]
    assert linked == ["ok.pdf"]  # the refused file is a reject on the page, never a link


def test_a_same_origin_redirect_is_still_followed(tmp_path):
    pdf = sample_files.pdf_bytes("moved within the server")
    root = _files(tmp_path / "www", {"files/new/规程.pdf": pdf})
    redirects = {"/files/old.pdf": "/files/new/%E8%A7%84%E7%A8%8B.pdf"}
    with http_files(root, redirects=redirects) as (base, server):
        located, stored = fetch(FileSource(base), "old.pdf", MediaStore(str(tmp_path / "m")))
        assert stored.sha256 == hashlib.sha256(pdf).hexdigest()
        assert server.requests[("GET", "/files/new/%E8%A7%84%E7%A8%8B.pdf")] >= 1
        absolute = {"/files/old.pdf": f"{base}/new/%E8%A7%84%E7%A8%8B.pdf"}  # absolute, same origin
        server.redirects = absolute
        assert fetch(FileSource(base), "old.pdf", MediaStore(str(tmp_path / "m2")))[1].sha256 == stored.sha256


def test_etl_check_warns_on_a_base_that_redirects_elsewhere(tmp_path, monkeypatch, capsys, secret_server):
    secret_url, secret = secret_server
    root = _files(tmp_path / "www", {"files/a.pdf": sample_files.pdf_bytes()})
    with http_files(root) as (base, server):
        server.redirects = {"/files": secret_url + "/", "/files/": secret_url + "/"}
        with pytest.raises(MediaError) as err:
            FileSource(base).check()
        assert err.value.rule == "file_redirect"
        m = _unit(tmp_path, monkeypatch, [_rule(1, "a.pdf")], base)
        code, out = _check(m.path, capsys)
        assert code == 0  # the base itself is allowed: what its server does now is a warning
        assert "warning:" in out and "cannot be reached now" in out and "not followed" in out
        assert _requests(server) >= 2
    assert _requests(secret) == 0


# --- TLS required: a plain http:// base is refused before anything is fetched -----------------


@pytest.mark.parametrize("how", ["ETL_REQUIRE_TLS", "source.require_tls"])
def test_tls_required_refuses_a_plain_http_base(tmp_path, monkeypatch, sqlite_url, media_store,
                                               capsys, how):
    root = _files(tmp_path / "www", {"files/a.pdf": sample_files.pdf_bytes()})
    with http_files(root) as (base, server):
        if how == "ETL_REQUIRE_TLS":
            monkeypatch.setenv("ETL_REQUIRE_TLS", "1")
        m = _unit(tmp_path, monkeypatch, [_rule(1, "a.pdf")], base, require_tls=how != "ETL_REQUIRE_TLS")
        r = _run(sqlite_url, m)
        assert r.status == "failed"
        assert "\n" not in r.message and "plain http://" in r.message and "TLS is required" in r.message
        assert ("ETL_REQUIRE_TLS=1" if how == "ETL_REQUIRE_TLS" else "source.require_tls") in r.message
        assert "datasets.04.fields.fileAppendix.file" in r.message
        code, out = _check(m.path, capsys)
        assert code != 0 and "plain http://" in out and "TLS is required" in out
        assert _requests(server) == 0  # neither the load nor the check asked the server anything
    assert rows_of(sqlite_url, "ingest_media") == [] and _stored(media_store) == []
    assert rows_of(sqlite_url, "safety_rule") == []


def test_tls_required_still_allows_https_sftp_and_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("ETL_REQUIRE_TLS", "1")
    for base in ("https://files.unit.example/docs", "sftp://u:pw@files.unit.example/docs",
                 str(tmp_path), f"file://{tmp_path}"):
        outbound.check_file_base(base, outbound.requirement(), "unit.yaml", base)
    with pytest.raises(ConfigError) as err:
        FileSource("ftp://files.unit.example/docs", where="unit.yaml [x]")
    assert "TLS is required" in str(err.value) and "unit.yaml [x]" in str(err.value)


# --- addresses: a name may lead only to public addresses ---------------------------------------


def test_a_name_resolving_to_loopback_is_refused_a_literal_base_is_not(
        tmp_path, monkeypatch, sqlite_url, media_store):
    pdf = sample_files.pdf_bytes()
    root = _files(tmp_path / "www", {"files/a.pdf": pdf})
    with http_files(root) as (base, server):
        by_name = base.replace("127.0.0.1", "localhost")
        m = _unit(tmp_path, monkeypatch, [_rule(1, "a.pdf")], by_name)
        r = _run(sqlite_url, m)
        assert r.status == "failed" and "\n" not in r.message
        assert "localhost resolves to 127.0.0.1 (loopback)" in r.message and "refused" in r.message
        assert _requests(server) == 0 and rows_of(sqlite_url, "ingest_media") == []
        with pytest.raises(FileServerUnreachable) as err:
            fetch(FileSource(by_name), "a.pdf", MediaStore(str(tmp_path / "m")))
        assert not err.value.transient  # the rules' refusal: no retry
        m = _unit(tmp_path, monkeypatch, [_rule(1, "a.pdf")], base)  # the base names 127.0.0.1
        r = _run(sqlite_url, m)
        assert r.status == "success" and r.counts.inserted == 1
        assert _requests(server) >= 1
    assert [x["name"] for x in rows_of(sqlite_url, "ingest_media")] == ["a.pdf"]


@pytest.mark.parametrize("base", ["http://169.254.169.254/latest/meta-data",
                                  "https://169.254.169.254/", "http://100.100.100.200/",
                                  "http://[fd00:ec2::254]/", "sftp://u:pw@169.254.170.2/x"])
def test_a_metadata_address_base_is_refused_at_check(tmp_path, monkeypatch, capsys, base):
    if base.startswith("http://["):  # FileSource refuses an IPv6 host anyway; the rule still holds
        with pytest.raises(ConfigError) as err:
            outbound.check_file_base(base, None, "unit.yaml", base)
        assert "cloud metadata address" in str(err.value)
        return
    with pytest.raises(ConfigError) as err:
        FileSource(base, where="unit.yaml [datasets.04.fields.fileAppendix.file]")
    assert "cloud metadata address" in str(err.value) and "pw" not in str(err.value)
    m = _unit(tmp_path, monkeypatch, [_rule(1, "a.pdf")], base)
    code, out = _check(m.path, capsys)
    assert code != 0 and "cloud metadata address" in out


# RFC 1918 (private), RFC 6890 (special-purpose registries), RFC 6598 (shared), RFC 4193 (ULA),
# RFC 4291 (loopback, link-local, IPv4-mapped)
@pytest.mark.parametrize("address, kind", [
    ("10.0.0.1", "private"), ("10.255.255.254", "private"),
    ("172.16.0.1", "private"), ("172.31.255.254", "private"),
    ("192.168.0.1", "private"), ("192.168.255.254", "private"),
    ("169.254.1.1", "link-local"), ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"),
    ("::1", "loopback"), ("fe80::1", "link-local"), ("fc00::1", "private"),
    ("fd12:3456::1", "private"), ("100.64.0.1", "not public"), ("100.127.255.254", "not public"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.1.2.3", "private"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("169.254.169.254", "cloud metadata address"),
])
def test_address_problem_refuses_what_a_name_may_not_lead_to(address, kind):
    problem = outbound.address_problem(address, "files.unit.example")
    assert problem is not None and kind in problem


@pytest.mark.parametrize("address", ["8.8.8.8", "172.32.0.1", "172.15.255.255", "192.169.0.1",
                                     "100.128.0.1", "2001:4860:4860::8888"])
def test_address_problem_allows_public_addresses(address):
    assert outbound.address_problem(address, "files.unit.example") is None


def test_a_base_naming_an_intranet_address_may_use_it_but_not_metadata():
    assert outbound.address_problem("10.1.2.3", "10.1.2.3") is None
    assert outbound.address_problem("127.0.0.1", "127.0.0.1") is None
    assert outbound.address_problem("10.1.2.4", "10.1.2.3") is not None  # not the one it names
    assert "metadata" in (outbound.address_problem("169.254.169.254", "169.254.169.254") or "")


def test_connect_socket_refuses_a_name_leading_to_loopback():
    with pytest.raises(outbound.AddressRefused) as err:
        outbound.connect_socket("localhost", 22, 1.0)
    assert "localhost resolves to" in err.value.reason and "loopback" in err.value.reason


# --- SFTP host keys: pinned, or trusted on first use when the setting says so -----------------


def _sftp_base(port: int) -> str:
    return f"sftp://collector:Sh1ny-pa55@127.0.0.1:{port}/unit"


@pytest.fixture()
def unit_folder(tmp_path: Path) -> Path:
    return _files(tmp_path / "srv" / "unit", {"a.pdf": sample_files.pdf_bytes("over sftp")})


def test_an_unknown_host_key_is_refused_before_the_password_is_sent(unit_folder, known_hosts, tmp_path):
    with sftp_server(unit_folder.parent, "collector", "Sh1ny-pa55") as server:
        with pytest.raises(FileServerUnreachable) as err:
            fetch(FileSource(_sftp_base(server.port), label="无锡"), "a.pdf", MediaStore(str(tmp_path / "m")))
        assert server.connections and server.logins == [] and server.opened == []
    text = str(err.value)
    assert not err.value.transient and "refused" in text and "Sh1ny-pa55" not in text
    assert server.host_key.fingerprint in text and str(known_hosts) in text
    assert "ETL_SSH_TRUST_NEW_HOSTS" in text and not known_hosts.exists()


def test_trust_on_first_use_records_the_key_then_pins_it(unit_folder, known_hosts, tmp_path, monkeypatch):
    known_hosts.write_text("# the collector's pinned servers\n")
    monkeypatch.setenv("ETL_SSH_TRUST_NEW_HOSTS", "1")
    with sftp_server(unit_folder.parent, "collector", "Sh1ny-pa55") as server:
        stored = fetch(FileSource(_sftp_base(server.port)), "a.pdf", MediaStore(str(tmp_path / "m")))[1]
        assert stored.copied and server.logins == ["collector"]
        lines = known_hosts.read_text().splitlines()
        assert lines[0] == "# the collector's pinned servers"  # appended, not rewritten
        assert lines[1:] == [server.known_hosts_line().strip()]
        monkeypatch.delenv("ETL_SSH_TRUST_NEW_HOSTS")  # now pinned: accepted without the setting
        assert fetch(FileSource(_sftp_base(server.port)), "a.pdf", MediaStore(str(tmp_path / "m2")))[1].copied
        assert known_hosts.read_text().count(server.host_key.get_base64()) == 1


@pytest.mark.parametrize("trust_new", [False, True])
def test_a_changed_host_key_is_always_refused(unit_folder, known_hosts, tmp_path, monkeypatch, trust_new):
    if trust_new:
        monkeypatch.setenv("ETL_SSH_TRUST_NEW_HOSTS", "1")
    with sftp_server(unit_folder.parent, "collector", "Sh1ny-pa55") as first:
        port = first.port
        known_hosts.write_text(first.known_hosts_line())
        assert fetch(FileSource(_sftp_base(port)), "a.pdf", MediaStore(str(tmp_path / "m")))[1].copied
    pinned = known_hosts.read_text()
    impostor = paramiko.ECDSAKey.generate()
    with sftp_server(unit_folder.parent, "collector", "Sh1ny-pa55", host_key=impostor, port=port) as second:
        with pytest.raises(FileServerUnreachable) as err:
            fetch(FileSource(_sftp_base(port)), "a.pdf", MediaStore(str(tmp_path / "m2")))
        assert second.connections and second.logins == [] and second.opened == []
    text = str(err.value)
    assert not err.value.transient and "Sh1ny-pa55" not in text
    assert impostor.fingerprint in text and first.host_key.fingerprint in text
    assert "intercepting" in text
    assert known_hosts.read_text() == pinned  # the recorded key is never replaced
