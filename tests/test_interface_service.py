"""The interface route's service side (issue 27): `etl apps` gives units credentials, `etl serve`
answers the token (B.2) and syndata (B.3) resources over TLS, bounded.

Every server here is the real `etl serve` in a child process on a loopback port it picks itself,
with a certificate signed by a CA made in the test; clients trust only that CA. The targets are
real (SQLite; PostgreSQL and MariaDB where a test says so). What syndata does with an accepted
message is `etl.interface.receive`'s, tested in tests/test_interface_receive.py: here only the
answers given before a message reaches it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from etl.cli import main
from helpers import gb32100, make_tls, query

ROOT = Path(__file__).resolve().parent.parent
TOKEN, SYNDATA = "/jsdspcloud/servlet/token", "/jsdspcloud/servlet/syndata"
JSON_UTF8 = "application/json; charset=utf-8"
MAX_BODY, MAX_RECORDS, PER_MINUTE = 65536, 10, 5
WAIT = 5
BOUNDS = {"ETL_SERVE_MAX_BODY_BYTES": str(MAX_BODY), "ETL_SERVE_MAX_RECORDS": str(MAX_RECORDS),
          "ETL_SERVE_MESSAGES_PER_MINUTE": str(PER_MINUTE), "ETL_SERVE_TIMEOUT_SECONDS": str(WAIT)}

# units by GB 32100's own rule (tests/helpers.gb32100), one per test that pushes
UNITS = {name: gb32100(base) for name, base in {
    "cycle": "91320115MA1R7KX30", "rotate": "91320506MA1MXL6Q2", "rate": "91320200MA1WQ8AP7",
    "other": "91320100MA1N2Y3U5", "bounds": "91320411MA1T4JXG1", "expiry": "91320583MA1P0D3B9",
    "proxy": "91320191MA1X5WLC4"}.items()}


# --- a CA and a server certificate, made here -------------------------------------------------


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Tls:
    return Tls(*make_tls(tmp_path_factory.mktemp("tls"), "归集单位测试 CA"))


# --- the real `etl serve` ---------------------------------------------------------------------


@dataclass
class Served:
    url: str
    port: int
    log: Path
    tls: Tls | None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.tls.context() if self.tls else False,
                            timeout=120)


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_SERVE_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@contextmanager
def serving(target: str, tls: Tls | None, tmp_path: Path, *extra_args: str,
            env: dict[str, str] | None = None) -> Iterator[Served]:
    """`etl serve --port 0` on `target` until the block ends; its stderr in a file."""
    log = tmp_path / f"serve-{time.monotonic_ns()}.log"
    tls_args = ["--certfile", str(tls.cert), "--keyfile", str(tls.key)] if tls else []
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "etl", "serve", "--port", "0", "--target", target,
                                 *tls_args, *extra_args], stdout=subprocess.PIPE, stderr=err,
                                env=_env(env or {}), cwd=tmp_path)
    try:
        line = ""
        while "serving" not in line:
            line = proc.stdout.readline().decode()
            if not line:
                pytest.fail(f"etl serve ended: {log.read_text(encoding='utf-8')}")
        url = re.search(r"(https?://127\.0\.0\.1:\d+)", line).group(1)
        yield Served(url, int(url.rsplit(":", 1)[1]), log, tls)
    finally:
        proc.terminate()
        proc.wait()


def _apps(target: str, *args: str, capsys) -> str:
    capsys.readouterr()
    assert main(["apps", *args, "--target", target]) == 0
    return capsys.readouterr().out


def _credentials(target: str, org: str, capsys, action: str = "add") -> tuple[str, str]:
    out = _apps(target, action, org, capsys=capsys)
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["orgNo"] == org.upper()
    return fields["appid"], fields["secret"]


def _token(client: httpx.Client, appid: str, secret: str) -> str:
    r = client.get(TOKEN, params={"appid": appid, "secret": secret})
    assert r.status_code == 200, r.text
    assert r.json()["rescode"] == "1" and r.json()["msg"] == "success"
    return r.json()["data"]["access_token"]


def _refused(r: httpx.Response, status: int, says: str) -> None:
    """The standard's failure shape, in UTF-8 JSON, with `says` in its message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == JSON_UTF8
    body = json.loads(r.content.decode("utf-8"))
    assert body["rescode"] == "0" and body["data"] is None, body
    assert says in body["msg"], body["msg"]
    assert re.search(r"[\u4e00-\u9fff]", body["msg"])  # Chinese first


def _message(token: str, records: int = 1, **over) -> dict:
    return {"access_token": token, "batchNo": "2024010100000001", "txcode": "09", "busType": "I",
            "data": [{"ID": f"r{i}"} for i in range(records)], **over}


def _tokens(url: str) -> list[dict]:
    from etl.target.schema import ingest_token

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(ingest_token))]
    finally:
        engine.dispose()


def _target(url: str) -> str:
    assert main(["init-target", "--target", url]) == 0
    return url


@pytest.fixture(scope="module")
def sqlite_target(tmp_path_factory) -> str:
    return _target(f"sqlite:///{tmp_path_factory.mktemp('target') / 'target.sqlite'}")


@pytest.fixture(scope="module")
def server(sqlite_target, tls, tmp_path_factory) -> Iterator[Served]:
    with serving(sqlite_target, tls, tmp_path_factory.mktemp("serve"), env=BOUNDS) as served:
        yield served


# --- etl apps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["apps", "serve"])
def test_every_new_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and f"usage: etl {command}" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_apps_add_list_rotate_revoke_show_a_secret_once_and_store_only_its_hash(backend, request, capsys):
    from etl.interface.apps import secret_matches

    url = _target(request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "pg_url"}[backend]))
    org = UNITS["cycle"]
    appid, secret = _credentials(url, org.lower(), capsys)  # any case: the code's upper case is kept
    listed = _apps(url, "list", capsys=capsys)
    assert re.search(rf"{org}\s+{appid}\s+\d{{4}}-\d\d-\d\d \d\d:\d\d\s+-\s+active", listed)
    assert secret not in listed
    stored = query(url, 'SELECT "secretHash" FROM ingest_app')
    assert len(stored) == 1 and stored[0][0].startswith("scrypt$") and secret not in stored[0][0]
    assert secret_matches(secret, stored[0][0]) and not secret_matches(secret + "x", stored[0][0])

    assert main(["apps", "add", org, "--target", url]) == 2  # one app per unit
    assert f"unit {org} has app {appid} already" in capsys.readouterr().err

    again, rotated = _credentials(url, org, capsys, "rotate")
    assert again == appid and rotated != secret
    assert not secret_matches(secret, query(url, 'SELECT "secretHash" FROM ingest_app')[0][0])
    assert "revoked app" in _apps(url, "revoke", org, capsys=capsys)
    assert re.search(rf"{org}\s+{appid}\s+.*revoked", _apps(url, "list", capsys=capsys))
    assert main(["apps", "rotate", org, "--target", url]) == 2
    assert f"unit {org} has no active app: give it one with `etl apps add {org}`" in capsys.readouterr().err
    newer, _ = _credentials(url, org, capsys)  # a revoked unit may be given new credentials
    assert newer != appid


def test_apps_refuses_an_invalid_orgno_and_a_missing_target_writing_nothing(tmp_path, capsys):
    missing = f"sqlite:///{tmp_path / 'nothing.sqlite'}"
    assert main(["apps", "add", UNITS["cycle"][:-1] + "0", "--target", missing]) == 2
    assert "is not a unified social credit code (GB 32100" in capsys.readouterr().err
    assert main(["apps", "add", UNITS["cycle"], "--target", missing]) == 2
    assert "no target at" in capsys.readouterr().err
    assert not (tmp_path / "nothing.sqlite").exists()
    assert main(["apps", "rotate", "--target", missing]) == 2
    assert "needs the unit's ORGNO" in capsys.readouterr().err


# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_tokens_life_cycle_issue_use_rotate_revoke(backend, request, tls, tmp_path, capsys):
    url = _target(request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "pg_url",
                                           "mariadb": "mariadb_url"}[backend]))
    org = UNITS["rotate"]
    appid, secret = _credentials(url, org, capsys)
    with serving(url, tls, tmp_path) as served, served.client() as client:
        _refused(client.get(TOKEN, params={"appid": appid, "secret": secret[:-1]}), 401, "appid 或 secret 错误")
        _refused(client.get(TOKEN, params={"appid": "0" * 16, "secret": secret}), 401, "appid 或 secret 错误")
        r = client.get(TOKEN, params={"appid": appid, "secret": secret})
        assert r.headers["content-type"] == JSON_UTF8 and r.headers["cache-control"] == "no-store"
        assert r.json()["data"]["expires_in"] == 7200
        token = r.json()["data"]["access_token"]
        # the token names the unit: the message gets past authentication to its shape
        _refused(client.post(SYNDATA, json=_message(token, txcode=9)), 422, "txcode 应为字符串")
        _refused(client.post(SYNDATA, json=_message(token[:-1] + "x")), 401, "access_token 无效")
        _refused(client.post(SYNDATA, json=_message(None)), 401, "缺少 access_token")

        form = client.post(TOKEN, content=f"appid={appid}&secret={secret}",  # the secret out of the URL
                           headers={"content-type": "application/x-www-form-urlencoded"})
        assert form.status_code == 200 and form.json()["data"]["access_token"] != token

        _, newer = _credentials(url, org, capsys, "rotate")
        _refused(client.post(SYNDATA, json=_message(token, txcode=9)), 401, "已失效")
        _refused(client.get(TOKEN, params={"appid": appid, "secret": secret}), 401, "appid 或 secret 错误")
        fresh = _token(client, appid, newer)
        _refused(client.post(SYNDATA, json=_message(fresh, txcode=9)), 422, "txcode")
        assert re.search(rf"{org}\s+{appid}\s+\S+ \S+\s+\d{{4}}-\d\d-\d\d \d\d:\d\d\s+active",
                         _apps(url, "list", capsys=capsys))  # last used: the last token

        _apps(url, "revoke", org, capsys=capsys)
        _refused(client.post(SYNDATA, json=_message(fresh, txcode=9)), 401, "已失效")
        _refused(client.get(TOKEN, params={"appid": appid, "secret": newer}), 401, "appid 或 secret 错误")
    tokens = _tokens(url)
    assert len(tokens) == 3 and all(t["revokedAt"] is not None for t in tokens)
    assert all(re.fullmatch(r"[0-9a-f]{64}", t["tokenHash"]) for t in tokens)  # hashes, never a token
    log = served.log.read_text(encoding="utf-8")
    assert f"GET {TOKEN} 200" in log and f"POST {SYNDATA} 401" in log
    for secret_text in (secret, newer, token, fresh):  # neither a secret nor a token in the log
        assert secret_text not in log


def test_a_token_expires(sqlite_target, tls, tmp_path, capsys):
    appid, secret = _credentials(sqlite_target, UNITS["expiry"], capsys)
    with serving(sqlite_target, tls, tmp_path, env={"ETL_SERVE_TOKEN_SECONDS": "2"}) as served, \
            served.client() as client:
        r = client.get(TOKEN, params={"appid": appid, "secret": secret})
        issued = time.monotonic()
        assert r.json()["data"]["expires_in"] == 2
        time.sleep(max(0.0, issued + 3 - time.monotonic()))  # past its end, whatever the machine's pace
        _refused(client.post(SYNDATA, json=_message(r.json()["data"]["access_token"])), 401, "已过期")


# --- bounds -----------------------------------------------------------------------------------


def _raw(served: Served, head: bytes, parts: list[bytes]) -> tuple[int, dict, int]:
    """Send `head` and as many of `parts` as the server takes, without ending the body; the
    status and JSON of its answer and how many body bytes were sent."""
    sent = 0
    with socket.create_connection(("127.0.0.1", served.port), timeout=60) as raw, \
            served.tls.context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(head)
        for part in parts:
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
            sent += len(part)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head_text, body = data.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length: (\d+)", head_text).group(1))
        while len(body) < length:
            body += s.recv(65536)
    return int(head_text.split()[1]), json.loads(body.decode("utf-8")), sent


def test_a_body_declared_too_large_is_refused_before_it_is_read(server):
    head = (f"POST {SYNDATA} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {1 << 30}\r\n\r\n").encode()
    status, body, sent = _raw(server, head, [])  # the answer comes before a byte of the gigabyte
    assert status == 413 and body["rescode"] == "0" and f"{MAX_BODY} 字节" in body["msg"]
    assert sent == 0


def test_a_streamed_body_is_refused_once_past_the_bound_without_waiting_for_its_end(server):
    head = (f"POST {SYNDATA} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b" " * 16384
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk) + 1)  # never the last chunk
    status, body, _ = _raw(server, head, parts)
    assert status == 413 and "请分批发送" in body["msg"]


def test_a_request_head_over_16_kib_is_refused_unbuffered(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as raw, \
            server.tls.context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(f"GET {TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ".encode() + b"a" * 65536)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")  # uvicorn's own answer: the application never saw it


def test_a_body_that_does_not_arrive_in_time_is_408(server):
    head = (f"POST {SYNDATA} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: 100\r\n\r\n").encode()
    status, body, _ = _raw(server, head, [b'{"access_token": '])  # and then nothing
    assert status == 408 and f"{WAIT} 秒内未传完" in body["msg"]


def test_more_records_than_the_bound_is_413(server, sqlite_target, capsys):
    appid, secret = _credentials(sqlite_target, UNITS["bounds"], capsys)
    with server.client() as client:
        token = _token(client, appid, secret)
        _refused(client.post(SYNDATA, json=_message(token, MAX_RECORDS + 1)), 413,
                 f"每条消息至多 {MAX_RECORDS} 条记录")


def test_too_many_messages_from_one_unit_is_429_and_other_units_go_on(server, sqlite_target, capsys):
    busy, calm = (_credentials(sqlite_target, UNITS[u], capsys) for u in ("rate", "other"))
    with server.client() as client:
        token = _token(client, *busy)
        for _ in range(PER_MINUTE):
            _refused(client.post(SYNDATA, json=_message(token, txcode=9)), 422, "txcode")
        r = client.post(SYNDATA, json=_message(token, txcode=9))
        _refused(r, 429, f"每分钟至多 {PER_MINUTE} 条消息")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        _refused(client.post(SYNDATA, json=_message(_token(client, *calm), txcode=9)), 422, "txcode")


@pytest.mark.parametrize(("body", "says"), [
    (b'{"access_token": "x", "data": [', "不是合法的 JSON"),
    (b"[1, 2]", "应为 JSON 对象"),
    (b'"text"', "应为 JSON 对象"),
    (b"{\"batchNo\": \"\xb2\xe2\xca\xd4\"}", "不是 UTF-8"),  # GBK, not UTF-8
    (b'{"x": NaN}', "不是合法的 JSON"),
    (b"[" * 30000 + b"]" * 30000, "不是合法的 JSON"),  # nesting deeper than any parser's stack
    (b"", "不是合法的 JSON"),
])
def test_a_malformed_body_is_400(server, body, says):
    with server.client() as client:
        _refused(client.post(SYNDATA, content=body, headers={"content-type": "application/json"}), 400, says)


def test_missing_keys_and_wrong_types_are_422_naming_each(server, sqlite_target, capsys):
    org = UNITS["proxy"]
    appid, secret = _credentials(sqlite_target, org, capsys)
    with server.client() as client:
        token = _token(client, appid, secret)
        r = client.post(SYNDATA, json={"access_token": token, "batchNo": 2024010100000001, "data": {}})
        _refused(r, 422, "batchNo 应为字符串")
        for said in ("缺少 txcode", "缺少 busType", "data 应为记录数组"):
            assert said in r.json()["msg"]
        _refused(client.get(TOKEN, params={"appid": appid}), 422, "secret")


def test_unknown_resources_and_methods_answer_in_the_standards_shape(server):
    with server.client() as client:
        _refused(client.get("/jsdspcloud/servlet/../../etc/passwd"), 404, "没有这个资源")
        _refused(client.get("/jsdspcloud/servlet/syndata"), 405, "不支持该请求方法")
        _refused(client.delete(TOKEN), 405, "不支持该请求方法")


def test_the_openapi_page_describes_both_resources_in_chinese(server):
    with server.client() as client:
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    assert spec["paths"][SYNDATA]["post"]["summary"] == "推送数据（B.3）"
    assert {"get", "post"} <= set(spec["paths"][TOKEN])
    schema = spec["paths"][SYNDATA]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"access_token", "batchNo", "txcode", "busType", "data"}
    assert {"401", "413", "429"} <= set(spec["paths"][SYNDATA]["post"]["responses"])


# --- how it runs ------------------------------------------------------------------------------


def _serve_exit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "etl", "serve", "--port", "0", *args],
                          capture_output=True, text=True, env=_env({}), cwd=cwd)


def test_plain_http_is_refused_without_behind_proxy(sqlite_target, tmp_path):
    done = _serve_exit("--target", sqlite_target, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: refusing to serve plain HTTP")


def test_a_certificate_that_cannot_be_loaded_is_one_line(sqlite_target, tls, tmp_path):
    done = _serve_exit("--target", sqlite_target, "--certfile", str(tls.cert), "--keyfile",
                       str(tls.ca), cwd=tmp_path)  # a certificate is no key
    assert done.returncode == 2 and "cannot be loaded" in done.stderr
    assert "Traceback" not in done.stderr


def test_behind_a_proxy_it_serves_plain_http_saying_so_once(sqlite_target, tmp_path):
    with serving(sqlite_target, None, tmp_path, "--behind-proxy") as served, served.client() as client:
        assert served.url.startswith("http://")
        _refused(client.get(TOKEN, params={"appid": "x", "secret": "y"}), 401, "appid 或 secret 错误")
    warnings = [line for line in served.log.read_text(encoding="utf-8").splitlines() if "warning" in line]
    assert len(warnings) == 1 and "plain HTTP" in warnings[0]


def test_the_service_never_creates_a_target(tmp_path):
    done = _serve_exit("--target", f"sqlite:///{tmp_path / 'typo.sqlite'}", "--behind-proxy", cwd=tmp_path)
    assert done.returncode == 2 and "no target at" in done.stderr
    assert not (tmp_path / "typo.sqlite").exists()


# --- the schema and the roles -----------------------------------------------------------------


def test_0011_adds_the_credential_tables_to_a_target_made_before_it(db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from etl import target

    engine = target.connect(db_url)
    target.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE ingest_token")
        conn.exec_driver_sql("DROP TABLE ingest_app")
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0010'"))
    before, after = target.upgrade(engine)
    assert before == "0010" and after >= "0011"
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), target.metadata)
    engine.dispose()
    assert [d for d in diffs if "ingest_app" in repr(d) or "ingest_token" in repr(d)] == []


def test_the_service_runs_as_the_loader_and_only_the_owner_changes_credentials(pg_url, tls, tmp_path, capsys):
    """--roles: the loader issues and checks tokens; rotating (an UPDATE) is the owner's."""
    from etl.target import roles

    assert main(["init-target", "--target", pg_url, "--roles"]) == 0
    password = "Svc-Loader_27"
    _set_password(pg_url, roles.LOADER, f"'{password}'")
    try:
        _run_as_loader(pg_url, password, tls, tmp_path, capsys)
    finally:  # roles belong to the server, which later tests share: leave the loader as init made it
        _set_password(pg_url, roles.LOADER, "NULL")


def _set_password(pg_url: str, role: str, password: str) -> None:
    with sa.create_engine(pg_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f"ALTER ROLE {role} PASSWORD {password}")


def _run_as_loader(pg_url: str, password: str, tls, tmp_path, capsys) -> None:
    from sqlalchemy.engine import make_url

    from etl.target import roles

    loader = make_url(pg_url).set(username=roles.LOADER, password=password).render_as_string(hide_password=False)
    org = UNITS["cycle"]
    appid, secret = _credentials(pg_url, org, capsys)
    assert main(["apps", "rotate", org, "--target", loader]) == 1  # the loader may not rewrite an app
    assert "permission denied" in capsys.readouterr().err
    with serving(loader, tls, tmp_path) as served, served.client() as client:
        token = _token(client, appid, secret)
        _refused(client.post(SYNDATA, json=_message(token, txcode=9)), 422, "txcode")
        _credentials(pg_url, org, capsys, "rotate")  # as the owner
        _refused(client.post(SYNDATA, json=_message(token, txcode=9)), 401, "已失效")
    assert password not in served.log.read_text(encoding="utf-8")
