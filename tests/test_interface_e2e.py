"""The interface route end to end (issue 27): `etl apps add` gives a unit its credentials, the
unit gets a token from a real `etl serve` (uvicorn, TLS with a CA made in the test, loopback)
and pushes B.3 messages of every dataset; the target (SQLite, PostgreSQL, MariaDB) then holds
them in its tables, ledger, batch records and run records, as the database route would.

And the rule between the two routes: one route per (unit, dataset). A dataset a unit pushed is
not loaded by the database route (that dataset fails, the others load); a dataset the database
route loaded is refused to a pushed message.

Records are valid by the standard, built as tests/test_interface_receive.py builds them (GB
32100 credit codes, GB 11643 ID numbers, libphonenumber's example mobile)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from etl import target
from etl.cli import main
from etl.interface.receive import receive
from helpers import gb32100, hidden_danger_mapping_text, hidden_danger_row, write_source
from test_interface_receive import ID_NO, NOW, record
from test_interface_service import (JSON_UTF8, SYNDATA, TOKEN, _credentials, _refused, _token, serving,
                                    tls)

__all__ = ["tls"]  # a module-scoped fixture of the service tests: the CA and server certificate

UNIT = gb32100("91320115MA1R7KX30")
OTHER = gb32100("91320506MA1MXL6Q2")
BACKENDS = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}
#: the field each dataset's U changes
CHANGED = {"01": "address", "02": "dLinkMan", "03": "authCom", "04": "publisher", "05": "trainAddress",
           "06": "commonAddr", "07": "checkContent", "08": "publisher", "09": "mainProblem"}


def _target(request, backend: str) -> str:
    url = request.getfixturevalue(BACKENDS[backend])
    assert main(["init-target", "--target", url]) == 0
    return url


def _rows(url: str, table: sa.Table, **where) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            q = sa.select(table).where(*[table.c[k] == v for k, v in where.items()])
            return [dict(r._mapping) for r in conn.execute(q)]
    finally:
        engine.dispose()


class Unit:
    """One unit's client: its token and its own batchNo sequence (A.2: date + 8 digits)."""

    def __init__(self, client: httpx.Client, token: str, day: str = "20240708"):
        self.client, self.token, self.day, self.n = client, token, day, 0

    def send(self, tx: str, bus: str, data: list, batch: str | None = None) -> tuple[dict, str]:
        if batch is None:
            self.n += 1
            batch = f"{self.day}{self.n:08d}"
        r = self.client.post(SYNDATA, json={"access_token": self.token, "batchNo": batch,
                                            "txcode": tx, "busType": bus, "data": data})
        assert r.status_code == 200 and r.headers["content-type"] == JSON_UTF8, r.text
        return r.json(), batch


def _gap_free(numbers: list[str]) -> None:
    """Our batch numbers (A.2): per day, 00000001 up with none missing and none twice."""
    by_day: dict[str, list[int]] = {}
    for n in numbers:
        assert len(n) == 16 and n.isdigit(), n
        by_day.setdefault(n[:8], []).append(int(n[8:]))
    for day, seqs in by_day.items():
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), (day, sorted(seqs))


# --- every dataset, I U D, over HTTPS --------------------------------------------------------


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_unit_pushes_every_dataset_over_https_into_the_target(backend, request, tls, tmp_path, capsys):
    url = _target(request, backend)
    appid, secret = _credentials(url, UNIT, capsys)
    other_app = _credentials(url, OTHER, capsys)
    answers: list[tuple[str, str, dict]] = []  # (txcode, busType, answer) of each loading message
    with serving(url, tls, tmp_path) as served, served.client() as client:
        unit = Unit(client, _token(client, appid, secret))
        for tx in ("01", "02", "03", "04", "05", "06", "07", "08", "09"):
            first = [record(tx, 1, org=UNIT)] if tx == "01" else [record(tx, 1), record(tx, 2)]
            a, _ = unit.send(tx, "I", first)
            assert a["rescode"] == "1" and a["data"]["inserted"] == len(first), (tx, a)
            assert a["data"]["rejects"] == [] and a["msg"].startswith("success"), (tx, a)
            changed = {**first[0], CHANGED[tx]: "改过的值"}
            u, _ = unit.send(tx, "U", [changed])
            assert u["rescode"] == "1" and u["data"]["updated"] == 1, (tx, u)
            d, _ = unit.send(tx, "D", [{"ID": first[0]["ID"]}])
            assert d["rescode"] == "1" and d["data"]["deleted"] == 1, (tx, d)
            answers += [(tx, "I", a), (tx, "U", u), (tx, "D", d)]

        # a rejected record comes back in the answer, by its place, and costs only itself
        bad = ID_NO[:-1] + ("0" if ID_NO[-1] != "0" else "1")  # GB 11643's check character broken
        mixed = [record("03", 5), record("03", 6, idCardNo=bad), record("03", 7, authDate="2024-13-45")]
        r, batch = unit.send("03", "I", mixed)
        assert r["rescode"] == "1" and r["msg"].startswith("部分记录被拒收")
        assert (r["data"]["inserted"], r["data"]["rejected"]) == (1, 2)
        assert [(x["index"], x["field"], x["rule"]) for x in r["data"]["rejects"]] == [
            (1, "idCardNo", "idcard"), (2, "authDate", "date")]
        assert bad not in json.dumps(r, ensure_ascii=False)  # personal data masked in the answer
        answers.append(("03", "I", r))

        # the same message again: the same answer, nothing loaded twice
        runs_before = len(_rows(url, target.ingest_run))
        again, _ = unit.send("03", "I", mixed, batch)
        assert again == r
        assert len(_rows(url, target.ingest_run)) == runs_before

        # a record naming another unit is refused; the other unit's record is untouched
        theirs, _ = Unit(client, _token(client, *other_app)).send("09", "I", [record("09", 1)])
        assert theirs["rescode"] == "1"
        foreign, _ = unit.send("09", "U", [record("09", 1, orgNo=OTHER, mainProblem="冒名修改")])
        assert foreign["rescode"] == "0" and [x["rule"] for x in foreign["data"]["rejects"]] == ["unit"]
        assert foreign["data"]["rejects"][0]["message"].startswith(f"orgNo '{OTHER}' 不是本令牌所属单位")

        # revoked: the token and the secret end at once
        assert main(["apps", "revoke", UNIT, "--target", url]) == 0
        _refused(client.post(SYNDATA, json={"access_token": unit.token, "batchNo": "2024070900000001",
                                            "txcode": "09", "busType": "I", "data": [record("09", 9)]}),
                 401, "已失效")
        _refused(client.get(TOKEN, params={"appid": appid, "secret": secret}), 401, "appid 或 secret 错误")

    # the target: each dataset's records as the last message left them
    for tx in CHANGED:
        held = {r["ID"]: r for r in _rows(url, target.table(tx), orgNo=UNIT)}
        expected = 1 if tx == "01" else 2 + (1 if tx == "03" else 0)
        assert len(held) == expected, (tx, held)
        assert all(i.startswith(UNIT + tx) for i in held)
        deleted = [r for r in held.values() if r["busType"] == "D"]
        assert len(deleted) == 1 and deleted[0][CHANGED[tx]] == "改过的值", tx  # a D keeps the record
    assert [r["mainProblem"] for r in _rows(url, target.table("09"), orgNo=OTHER)] == ["安全阀校验过期"]

    # batches, ledger and runs: each loading message under our gap-free batch numbers
    batches = {b["batchNo"]: b for b in _rows(url, target.ingest_batch)}
    _gap_free(list(batches))
    for tx, bus, a in answers:
        ours = a["data"]["batches"][bus]
        b = batches[ours]
        assert (b["orgNo"], b["txCode"], b["busType"]) == (UNIT, tx, bus)
        loaded = a["data"]["inserted"] + a["data"]["updated"] + a["data"]["deleted"]
        assert b["records"] == loaded
        ledger = _rows(url, target.ingest_change, batchNo=ours)
        assert len(ledger) == loaded and {c["busType"] for c in ledger} == {bus}
    runs = _rows(url, target.ingest_run, orgNo=UNIT)
    assert len(runs) == len(answers) + 1  # the message naming another unit loaded nothing, but ran
    assert {(r["mode"], r["status"]) for r in runs} == {("push", "success")}
    assert all(r["extracted"] == r["inserted"] + r["updated"] + r["deleted"] + r["unchanged"]
               + r["rejected"] + r["duplicates"] for r in runs)
    assert {(r["field"], r["rule"]) for r in _rows(url, target.ingest_reject, orgNo=UNIT)} >= {
        ("idCardNo", "idcard"), ("authDate", "date"), ("orgNo", "unit")}
    assert len(_rows(url, target.ingest_push, orgNo=UNIT)) == len(answers) + 1
    log = served.log.read_text(encoding="utf-8")
    assert f"POST {SYNDATA} 200 orgNo={UNIT}" in log and secret not in log and ID_NO not in log

    # freshness lists what the unit pushed as the interface route, no mapping needed
    (tmp_path / "mappings").mkdir()
    capsys.readouterr()
    assert main(["freshness", "--target", url, "--json", "--mappings-dir", str(tmp_path / "mappings"),
                 "--fail-late"]) == 0
    mine = {s["tx_code"]: s for s in json.loads(capsys.readouterr().out) if s["org_no"] == UNIT}
    assert set(mine) == set(CHANGED) and {s["route"] for s in mine.values()} == {"interface"}


# --- many units at once -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_concurrent_pushes_of_many_units_keep_batch_numbers_unique_and_gap_free(backend, request, tls,
                                                                                tmp_path, capsys):
    url = _target(request, backend)
    units = [gb32100(f"9132011{k:02d}MA1R7KX3") for k in range(20)]
    creds = {org: _credentials(url, org, capsys) for org in units}
    messages, per_message = 5, 3
    answers: list[tuple[str, dict]] = []
    errors: list[BaseException] = []

    def unit(org: str, served) -> None:
        try:
            with served.client() as client:
                u = Unit(client, _token(client, *creds[org]))
                for k in range(messages):
                    data = [record("09", k * per_message + j, taskNo=f"YH{k}{j}") for j in range(per_message)]
                    a, batch = u.send("09", "I", data)
                    answers.append((org, a))
                    if k == 0:  # a resend, as when an answer was lost on the way
                        answers.append((org, u.send("09", "I", data, batch)[0]))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with serving(url, tls, tmp_path) as served:
        threads = [threading.Thread(target=unit, args=(org, served)) for org in units]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert len(answers) == len(units) * (messages + 1)
    assert all(a["rescode"] == "1" and a["data"]["rejects"] == [] for _, a in answers)
    ours = [a["data"]["batches"]["I"] for _, a in answers]
    assert len(set(ours)) == len(units) * messages  # a resend is answered with its first batch
    batches = _rows(url, target.ingest_batch)
    assert sorted(b["batchNo"] for b in batches) == sorted(set(ours))
    _gap_free([b["batchNo"] for b in batches])
    assert Counter(b["orgNo"] for b in batches) == {org: messages for org in units}
    held = _rows(url, target.table("09"))
    assert Counter(r["orgNo"] for r in held) == {org: messages * per_message for org in units}
    runs = _rows(url, target.ingest_run)
    assert len(runs) == len(units) * messages and {r["status"] for r in runs} == {"success"}
    assert len(_rows(url, target.ingest_change)) == len(held)


# --- one route per (unit, dataset) -------------------------------------------------------------

DEPT_MAPPING = """\
  "02":
    table: t_dept
    key: [id]
    fields:
      deptName: name
      dParentName: parent
      isSecDept: is_safety
      dLinkMan: link_man
      dLinkTel: link_tel
"""


def _unit_mapping(tmp_path: Path, monkeypatch, org: str) -> Path:
    """A unit mapped for 02 and 09, its source a SQLite file holding two of each."""
    src = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(src, "t_hidden_danger", [hidden_danger_row(1), hidden_danger_row(2)])
    write_source(src, "t_dept", [{"id": i, "name": f"安全部{i}", "parent": "南京某某化工有限公司",
                                  "is_safety": "1", "link_man": "王五", "link_tel": "13912345678"}
                                 for i in (1, 2)], columns=("id", "name", "parent", "is_safety",
                                                            "link_man", "link_tel"))
    monkeypatch.setenv("ROUTE_SOURCE_URL", src)
    path = tmp_path / "unit.yaml"
    path.write_text(hidden_danger_mapping_text(org, env="ROUTE_SOURCE_URL") + DEPT_MAPPING, encoding="utf-8")
    return path


def _push(url: str, org: str, tx: str, data: list, n: int) -> dict:
    engine = target.connect(url)
    try:
        return receive(engine, org, {"batchNo": f"2024070800{n:06d}", "txcode": tx, "busType": "I",
                                     "data": data}, now=NOW)
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_pushed_dataset_is_not_loaded_by_the_database_route_and_the_others_are(
        backend, request, tmp_path, monkeypatch, capsys):
    url = _target(request, backend)
    mapping = _unit_mapping(tmp_path, monkeypatch, UNIT)
    pushed = _push(url, UNIT, "09", [record("09", 1), record("09", 2)], 1)
    assert pushed["data"]["inserted"] == 2
    capsys.readouterr()
    assert main(["run", str(mapping), "--target", url]) == 1  # the pushed dataset failed
    said = capsys.readouterr()
    line = next(ln for ln in (said.out + said.err).splitlines() if "pushes txCode 09" in ln)
    assert f"unit {UNIT} pushes txCode 09 over the interface route" in line
    assert 'remove dataset "09" from the mapping' in line
    held = _rows(url, target.table("09"), orgNo=UNIT)
    assert len(held) == 2 and {r["busType"] for r in held} == {"I"}  # not marked D by a full load
    assert {r["deptName"] for r in _rows(url, target.table("02"), orgNo=UNIT)} == {"安全部1", "安全部2"}
    pulled = [(r["txCode"], r["status"]) for r in _rows(url, target.ingest_run, orgNo=UNIT)
              if r["mode"] != "push"]
    assert ("02", "success") in pulled and ("09", "success") not in pulled
    # the unit goes on pushing 09
    assert _push(url, UNIT, "09", [record("09", 3)], 2)["data"]["inserted"] == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_dataset_the_database_route_loaded_refuses_pushed_messages(backend, request, tmp_path,
                                                                     monkeypatch, capsys):
    url = _target(request, backend)
    mapping = _unit_mapping(tmp_path, monkeypatch, UNIT)
    assert main(["run", str(mapping), "--target", url]) == 0
    before = {tx: _rows(url, target.table(tx), orgNo=UNIT) for tx in ("02", "09")}
    for n, tx in enumerate(("09", "02"), start=1):
        a = _push(url, UNIT, tx, [record(tx, 7)], n)
        assert a["rescode"] == "0", a
        assert a["msg"].startswith(f"txcode {tx} 的数据已由数据库方式（5.2.1）从本单位数据库归集")
        assert _rows(url, target.table(tx), orgNo=UNIT) == before[tx]
    assert _rows(url, target.ingest_push) == []
    assert {r["mode"] for r in _rows(url, target.ingest_run, orgNo=UNIT)} == {"full"}
    # a dataset the mapping does not map may be pushed; another unit may push 09
    assert _push(url, UNIT, "06", [record("06", 1)], 3)["rescode"] == "1"
    assert _push(url, OTHER, "09", [record("09", 1)], 1)["rescode"] == "1"
    assert main(["run", str(mapping), "--target", url]) == 0  # and the database route goes on


# --- as the README runs it: the service as the loader role ---------------------------------------


def test_the_service_as_the_loader_role_loads_updates_and_deletes(pg_url, tls, tmp_path, capsys):
    """`init-target --roles`, credentials given by the owner, `etl serve` as `etl_loader` (the
    least privilege docs/interface.md asks for): a pushed message goes all the way in."""
    from sqlalchemy.engine import make_url

    from etl.target import roles

    assert main(["init-target", "--target", pg_url, "--roles"]) == 0
    password = "E2e-Loader_27"
    loader = make_url(pg_url).set(username=roles.LOADER, password=password).render_as_string(
        hide_password=False)
    appid, secret = _credentials(pg_url, UNIT, capsys)
    with sa.create_engine(pg_url, isolation_level="AUTOCOMMIT").connect() as admin:
        admin.exec_driver_sql(f"ALTER ROLE {roles.LOADER} PASSWORD '{password}'")
        try:
            with serving(loader, tls, tmp_path) as served, served.client() as client:
                unit = Unit(client, _token(client, appid, secret))
                for bus, data in (("I", [record("09", 1), record("09", 2)]),
                                  ("U", [record("09", 1, mainProblem="改过的值")]), ("D", [{"ID": "R2"}])):
                    a, _ = unit.send("09", bus, data)
                    assert a["rescode"] == "1" and a["data"]["rejects"] == [], a
        finally:  # roles are the server's, shared by later tests: leave the loader as init made it
            admin.exec_driver_sql(f"ALTER ROLE {roles.LOADER} PASSWORD NULL")
    held = sorted((r["mainProblem"], r["busType"]) for r in _rows(pg_url, target.table("09")))
    assert held == [("安全阀校验过期", "D"), ("改过的值", "U")]
    assert len(_rows(pg_url, target.ingest_push)) == 3 and len(_rows(pg_url, target.ingest_batch)) == 3
    assert password not in served.log.read_text(encoding="utf-8")
