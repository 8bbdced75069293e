"""The interface route's receiving side (issue 27): what one pushed B.3 message does to the
target, through `etl.interface.receive.receive`, on SQLite, PostgreSQL and MariaDB.

Records are built from the standard's rules: credit codes by GB 32100 (python-stdnum's check
character), ID numbers by GB 11643 (`helpers.gb11643`), mobiles of libphonenumber's examples."""

from __future__ import annotations

import json
import threading
from datetime import datetime

import pytest
import sqlalchemy as sa

from etl import target
from etl.common import clock
from etl.interface.receive import receive
from etl.mapping import load_mapping
from helpers import ORG_A, gb11643, org_no

ORG_B = org_no("91320506MA1W3L8P7")
NOW = datetime(2024, 7, 8, 10, 0, tzinfo=clock.CST)
ID_NO = gb11643("32011519900104124")   # a resident ID number by GB 11643
MOBILE = "13912345678"                 # libphonenumber's example mobile for CN is 131 2345 6789


def record(tx: str, i: int, org: str = ORG_A, **over) -> dict:
    """A valid record of dataset `tx`, the unit's own ID `R<i>`."""
    base: dict[str, dict] = {
        "01": {"comName": "南京某某化工有限公司", "orgNo": org, "deputy": "张三", "cityCode": "320100",
               "aeraCode": "320115", "address": "江苏省南京市江宁区某某路1号", "linkMan": "李四",
               "linkTel": MOBILE},
        "02": {"deptName": f"安全部{i}", "dParentName": "南京某某化工有限公司", "isSecDept": 1,
               "dLinkMan": "王五", "dLinkTel": MOBILE},
        "03": {"psnName": "赵六", "idCardNo": ID_NO, "deptName": "安全部2", "isSecChief": 0,
               "isSecManager": 1, "isOpr": 1, "isRes": 0, "lcnsKind": "特种设备安全管理",
               "certNo": f"TS{i:06d}", "authDate": "2024-01-08", "endDate": "2028-01-07",
               "authCom": "南京市市场监督管理局"},
        "04": {"fileName": f"安全管理制度{i}", "fileAppendix": f"制度{i}.doc", "uploadDate": "2024-07-01",
               "publisher": "张三"},
        "05": {"planNo": f"PX{i:04d}", "planName": "年度培训", "startDate": "2024-03-01",
               "endDate": "2024-03-02", "trainTitle": "电梯安全", "trainDate": "2024-03-01",
               "trainAddress": "会议室", "trainContent": "规程", "trainFile": "签到表.pdf"},
        "06": {"riskNo": f"FX{i:04d}", "regNo": f"3110320115{i:010d}", "riskName": "储罐区",
               "riskType": "0", "registDate": "2024-01-01", "accidentType": "泄漏",
               "commonAddr": "厂区东侧", "inherentriskLevel": "较大风险", "remainriskLevel": "一般风险",
               "controlLevel": "公司（厂）级", "dutyName": "安全部1", "dutyMan": "张三",
               "checkMan": "李四", "checkDate": "2024-06-01"},
        "07": {"sourceNo": f"WX{i:04d}", "riskNo": "FX0002", "checkItem": "安全阀",
               "checkContent": "校验", "inherentriskLevel": "较大风险", "remainriskLevel": "一般风险",
               "controlLevel": "公司（厂）级", "accidentType": "爆炸", "measureContent": "定期校验",
               "measureType": "管理措施", "dutyName": "安全部1", "dutyMan": "张三"},
        "08": {"riskfileType": "风险四色分布图", "riskFile": f"四色图{i}.png", "uploadDate": "2024-07-01",
               "publisher": "张三"},
        "09": {"taskNo": f"YH{i:06d}", "regNo": f"3110320115{i:010d}", "troubleType": "设备类",
               "troubleLevel": "一般事故隐患", "mainProblem": "安全阀校验过期", "checkMan": "张三",
               "checkDate": "2024-04-16", "limitDate": "2024-05-16", "dealMan": "李四",
               "dealDate": "2024-05-10", "dealInfo": "已整改", "acceptMan": "王五",
               "acceptDate": "2024-05-17", "acceptInfo": "整改验收合格"},
    }
    return {"ID": f"R{i}", **base[tx], **over}


def message(tx: str, bus: str, data: list, batch: str = "2024070800000001") -> dict:
    return {"batchNo": batch, "txcode": tx, "busType": bus, "data": data}


@pytest.fixture
def engine(db_url):
    e = target.connect(db_url)
    target.upgrade(e)
    yield e
    e.dispose()


def rows(engine, table, **where) -> list[dict]:
    t = target.metadata.tables[table] if isinstance(table, str) else table
    with engine.connect() as conn:
        q = sa.select(t).where(*[t.c[k] == v for k, v in where.items()])
        return [dict(r._mapping) for r in conn.execute(q)]


def runs(engine, org=ORG_A) -> list[dict]:
    return sorted(rows(engine, target.ingest_run, orgNo=org), key=lambda r: r["runKey"])


def push(engine, tx, bus, data, n, org=ORG_A):
    return receive(engine, org, message(tx, bus, data, f"2024070800{n:06d}"), now=NOW)


# --- every dataset: I, then U, then D --------------------------------------------------------------


def test_every_dataset_inserts_updates_and_deletes_by_bustype(engine):
    n = 0
    for tx in ("01", "02", "03", "04", "05", "06", "07", "08", "09"):
        t = target.table(tx)
        n += 1
        first = [record(tx, 1), record(tx, 2)] if tx != "01" else [record(tx, 1)]
        a = push(engine, tx, "I", first, n)
        assert a["rescode"] == "1", (tx, a)
        assert a["data"]["inserted"] == len(first) and a["data"]["rejects"] == [], (tx, a)
        held = rows(engine, t, orgNo=ORG_A)
        assert len(held) == len(first) and {r["busType"] for r in held} == {"I"}
        assert all(r["ID"].startswith(ORG_A + tx) for r in held)

        n += 1
        changed = dict(first[0])
        field = {"01": "address", "02": "dLinkMan", "03": "authCom", "04": "publisher",
                 "05": "trainAddress", "06": "commonAddr", "07": "checkContent", "08": "publisher",
                 "09": "mainProblem"}[tx]
        changed[field] = "改过的值"
        a = push(engine, tx, "U", [changed], n)
        assert a["rescode"] == "1" and a["data"]["updated"] == 1, (tx, a)
        r1 = next(r for r in rows(engine, t, orgNo=ORG_A) if r[field] == "改过的值")
        assert r1["busType"] == "U" and r1["batchNo"] == a["data"]["batches"]["U"]

        n += 1
        a = push(engine, tx, "D", [{"ID": first[0]["ID"]}], n)
        assert a["rescode"] == "1" and a["data"]["deleted"] == 1, (tx, a)
        gone = rows(engine, t, ID=r1["ID"])[0]
        assert gone["busType"] == "D" and gone[field] == "改过的值"  # a D keeps the record
        others = [r for r in rows(engine, t, orgNo=ORG_A) if r["ID"] != r1["ID"]]
        assert all(r["busType"] == "I" for r in others)  # D touched only what it named
    got = runs(engine)
    assert len(got) == n and {r["mode"] for r in got} == {"push"}
    assert all(r["status"] == "success" for r in got)
    assert all(r["extracted"] == r["inserted"] + r["updated"] + r["deleted"] + r["unchanged"]
               + r["rejected"] + r["duplicates"] + r["skippedDeleted"] for r in got)


def test_ledger_and_batches_record_each_message_under_our_batch_numbers(engine):
    a = push(engine, "09", "I", [record("09", 1), record("09", 2)], 1)
    ours = a["data"]["batches"]["I"]
    assert ours.startswith("20240708") and len(ours) == 16
    batch = rows(engine, target.ingest_batch, batchNo=ours)[0]
    assert (batch["orgNo"], batch["txCode"], batch["busType"], batch["records"]) == (ORG_A, "09", "I", 2)
    ledger = rows(engine, target.ingest_change, batchNo=ours)
    assert len(ledger) == 2 and {json.loads(r["record"])["taskNo"] for r in ledger} == {"YH000001", "YH000002"}
    push_row = rows(engine, target.ingest_push, orgNo=ORG_A)[0]
    assert push_row["unitBatchNo"] == "2024070800000001" and json.loads(push_row["batches"]) == {"I": ours}
    assert push_row["runId"] == batch["runId"] == runs(engine)[0]["runId"]


# --- rejects ----------------------------------------------------------------------------------------


def test_a_bad_record_costs_that_record_and_is_returned_and_recorded_masked(engine):
    bad_id = ID_NO[:-1] + ("0" if ID_NO[-1] != "0" else "1")  # the check character broken
    data = [record("03", 1), record("03", 2, idCardNo=bad_id), record("03", 3, authDate="2024-13-45")]
    push(engine, "02", "I", [record("02", 2)], 1)
    a = push(engine, "03", "I", data, 2)
    assert a["rescode"] == "1" and a["msg"].startswith("部分记录被拒收")
    assert a["data"]["inserted"] == 1 and a["data"]["rejected"] == 2
    by_index = {r["index"]: r for r in a["data"]["rejects"]}
    assert by_index[1]["field"] == "idCardNo" and by_index[1]["rule"] == "idcard"
    assert by_index[2]["field"] == "authDate"
    assert bad_id not in json.dumps(a, ensure_ascii=False)  # personal data masked
    stored = rows(engine, target.ingest_reject, orgNo=ORG_A, txCode="03")
    assert {(r["field"], r["rule"]) for r in stored} >= {("idCardNo", "idcard"), ("authDate", "date")}
    assert all(bad_id not in r["message"] for r in stored)
    assert len(rows(engine, target.table("03"), orgNo=ORG_A)) == 1


def test_a_message_whose_every_record_is_refused_answers_rescode_0(engine):
    a = push(engine, "09", "I", [record("09", 1, troubleType="不存在的类别")], 1)
    assert a["rescode"] == "0" and a["msg"].startswith("全部记录被拒收")
    assert a["data"]["rejects"][0]["field"] == "troubleType"
    assert runs(engine)[0]["rejected"] == 1


def test_a_record_naming_another_unit_is_refused_and_touches_nothing_of_it(engine):
    push(engine, "01", "I", [record("01", 1, org=ORG_B)], 1, org=ORG_B)
    a = push(engine, "01", "I", [record("01", 1, org=ORG_B)], 1)  # unit A names B's orgNo
    assert a["rescode"] == "0" and [r["field"] for r in a["data"]["rejects"]] == ["orgNo"]
    assert a["data"]["rejects"][0]["message"].startswith(f"orgNo '{ORG_B}' 不是本令牌所属单位")
    assert push(engine, "01", "I", [record("01", 1, org="９" + ORG_A[1:].lower())], 9)["data"]["inserted"] == 1
    b = push(engine, "09", "I", [record("09", 1), {**record("09", 2), "orgNo": ORG_B}], 2)
    assert b["data"]["inserted"] == 1 and b["data"]["rejects"][0]["index"] == 1
    assert b["data"]["rejects"][0]["rule"] == "unit"
    # the same unit's record ID pushed by B is B's record: A's cannot reach it
    push(engine, "09", "I", [record("09", 1, mainProblem="B 的隐患")], 3, org=ORG_B)
    d = push(engine, "09", "D", [{"ID": "R1"}], 4)
    assert d["data"]["deleted"] == 1
    theirs = rows(engine, target.table("09"), orgNo=ORG_B)
    assert len(theirs) == 1 and theirs[0]["busType"] == "I" and theirs[0]["mainProblem"] == "B 的隐患"
    assert rows(engine, target.table("01"), orgNo=ORG_B)[0]["busType"] == "I"


def test_update_or_delete_of_an_unknown_record_is_refused(engine):
    a = push(engine, "04", "U", [record("04", 9)], 1)
    assert a["rescode"] == "0" and a["data"]["rejects"][0]["rule"] == "not_found"
    d = push(engine, "04", "D", [{"ID": "nope"}], 2)
    assert d["rescode"] == "0" and d["data"]["rejects"][0]["rule"] == "not_found"
    assert rows(engine, target.table("04")) == []


def test_unknown_keys_are_warnings_and_records_without_an_id_are_refused(engine):
    data = [{**record("08", 1), "colour": "red"}, {k: v for k, v in record("08", 2).items() if k != "ID"},
            "not an object"]
    a = push(engine, "08", "I", data, 1)
    assert a["rescode"] == "1" and a["data"]["inserted"] == 1
    assert [(w["index"], w["field"], w["rule"]) for w in a["data"]["warnings"]] == [(0, "colour", "unknown")]
    assert [(r["index"], r["field"]) for r in a["data"]["rejects"]] == [(1, "ID"), (2, "data")]
    r = runs(engine)[0]
    assert (r["extracted"], r["inserted"], r["rejected"], r["warnings"]) == (3, 1, 2, 1)


def test_a_repeated_id_in_one_message_takes_the_later_record(engine):
    a = push(engine, "06", "I", [record("06", 1, riskName="旧"), record("06", 1, riskName="新")], 1)
    assert a["data"]["inserted"] == 1 and a["data"]["duplicates"] == 1
    assert a["data"]["rejects"][0]["index"] == 0 and a["data"]["rejects"][0]["rule"] == "duplicate"
    assert rows(engine, target.table("06"))[0]["riskName"] == "新"


# --- repeats -----------------------------------------------------------------------------------------


def test_a_repeat_is_answered_as_the_first_time_and_loads_nothing(engine):
    m = message("09", "I", [record("09", 1), record("09", 2, troubleType="?")])
    first = receive(engine, ORG_A, m, now=NOW)
    again = receive(engine, ORG_A, json.loads(json.dumps(m)), now=NOW)
    assert again == first
    assert len(runs(engine)) == 1 and len(rows(engine, target.ingest_batch)) == 1
    assert len(rows(engine, target.ingest_change)) == 1


def test_the_same_batchno_with_other_content_is_refused(engine):
    receive(engine, ORG_A, message("09", "I", [record("09", 1)]), now=NOW)
    other = receive(engine, ORG_A, message("09", "I", [record("09", 2)]), now=NOW)
    assert other["rescode"] == "0" and "批次号 2024070800000001 已用于" in other["msg"]
    assert len(rows(engine, target.table("09"))) == 1
    # the unit's batchNo is its own: another unit, or another txcode, may use it
    assert receive(engine, ORG_B, message("09", "I", [record("09", 2, org=ORG_B)]), now=NOW)["rescode"] == "1"
    assert receive(engine, ORG_A, message("08", "I", [record("08", 1)]), now=NOW)["rescode"] == "1"


def test_concurrent_messages_of_many_units_get_unique_gap_free_batch_numbers(engine, db_url):
    units = [org_no(f"91320506MA1W3L{i:02d}X") for i in range(8)]
    answers: list[dict] = []
    errors: list[BaseException] = []

    def unit(org: str) -> None:
        try:
            for k in range(2):
                m = message("09", "I", [record("09", 10 * k + j, org=org) for j in range(3)],
                            f"20240708{k + 1:08d}")
                answers.append(receive(engine, org, m, now=NOW))
                answers.append(receive(engine, org, m, now=NOW))  # a repeat, at once
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=unit, args=(o,)) for o in units]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(a["rescode"] == "1" for a in answers)
    numbers = sorted(r["batchNo"] for r in rows(engine, target.ingest_batch))
    assert numbers == [f"20240708{n:08d}" for n in range(1, len(units) * 2 + 1)]
    assert len(rows(engine, target.table("09"))) == len(units) * 6
    assert len(rows(engine, target.ingest_push)) == len(units) * 2


def test_concurrent_copies_of_one_message_load_once(engine):
    m = message("09", "I", [record("09", j) for j in range(5)])
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(receive(engine, ORG_A, m, now=NOW)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 4 and all(a == answers[0] for a in answers)
    assert len(rows(engine, target.ingest_batch)) == 1 and len(rows(engine, target.table("09"))) == 5
    assert [r["status"] for r in runs(engine)] == ["success"]


# --- envelopes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, key", [
    ({"txcode": "10"}, "txcode"), ({"txcode": 9}, "txcode"), ({"busType": "X"}, "busType"),
    ({"batchNo": "2024-07-08-0001"}, "batchNo"), ({"batchNo": "2024023000000001"}, "batchNo"),
    ({"batchNo": "2024070800000000"}, "batchNo"), ({"data": []}, "data"), ({"data": {"a": 1}}, "data"),
])
def test_a_bad_envelope_is_rescode_0_naming_the_key(engine, bad, key):
    a = receive(engine, ORG_A, {**message("09", "I", [record("09", 1)]), **bad}, now=NOW)
    assert a["rescode"] == "0" and a["msg"].split()[0].startswith(key)
    assert a["msg"][len(key):].lstrip()[0] >= "\u4e00" or "无效" in a["msg"] or "应为" in a["msg"]
    assert rows(engine, target.ingest_run) == [] and rows(engine, target.table("09")) == []


def test_a_message_missing_keys_names_them(engine):
    a = receive(engine, ORG_A, {"batchNo": "2024070800000001", "txcode": "09"}, now=NOW)
    assert a["rescode"] == "0" and a["msg"].startswith("缺少 busType, data")


# --- freshness, the report site and reconcile see a pushed unit ----------------------------------


def test_freshness_lists_a_pushed_unit_as_the_interface_route(engine, tmp_path):
    from etl.report import freshness
    from helpers import hidden_danger_mapping_text

    push(engine, "09", "I", [record("09", 1, org=ORG_B)], 1, org=ORG_B)
    push(engine, "06", "I", [record("06", 1)], 2)  # unit A: mapped for 09, pushes 06
    path = tmp_path / "unit_a.yaml"
    path.write_text(hidden_danger_mapping_text(ORG_A), encoding="utf-8")
    found = {(s.org_no, s.tx_code): s for s in freshness.statuses(
        engine, [load_mapping(path)], now=NOW)}
    b = found[(ORG_B, "09")]
    assert (b.route, b.mapping, b.status, b.records, b.extracted) == ("interface", "", "on_time", 1, 1)
    assert found[(ORG_A, "06")].route == "interface" and found[(ORG_A, "06")].records == 1
    assert found[(ORG_A, "09")].route == "database" and found[(ORG_A, "09")].status == "pending"
    assert not freshness.needs_attention(b)


def test_the_report_marks_a_pushed_unit_and_reconcile_says_it_has_no_source(engine, tmp_path, monkeypatch):
    from etl.report import site

    monkeypatch.delenv("ETL_REPORT_LANGUAGE", raising=False)
    push(engine, "01", "I", [record("01", 1, org=ORG_B)], 1, org=ORG_B)
    push(engine, "09", "I", [record("09", 1, org=ORG_B)], 2, org=ORG_B)
    built = site.build(engine, [], tmp_path / "report", now=NOW)
    page = built.index.read_text(encoding="utf-8")
    data = site.overview_data(site.freshness.statuses(engine, [], now=NOW), NOW)
    [unit] = data["units"]
    assert unit[1] == ORG_B and "南京某某化工有限公司" in page  # named from its pushed 01
    link = f"units/{site.unit_key(ORG_B)}.html"  # its own page (tests/test_site_pushed.py)
    assert (unit[2], unit[4], unit[5]) == (link, 0, 1)  # a page, not "mapping removed", pushed
    assert '"pushed":"（接口归集）"' in page and f'"{ORG_B}","{link}","",0,1]' in page
    assert 'id="removed-units"' not in page  # not listed as "mapping removed"
    rec = (tmp_path / "report" / "reconcile.html").read_text(encoding="utf-8")
    assert "没有可与目标库比对的源库" in rec and ORG_B in rec


def test_etl_reconcile_of_a_pushed_unit_says_there_is_no_source(engine, db_url, capsys):
    from etl.cli import main

    push(engine, "09", "I", [record("09", 1, org=ORG_B)], 1, org=ORG_B)
    assert main(["reconcile", ORG_B, "--target", db_url]) == 0
    out = capsys.readouterr().out
    assert "pushed over the interface" in out and "hidden_danger" in out
    assert main(["reconcile", ORG_A, "--target", db_url]) == 2  # pushed nothing, no such file


def test_pushed_personal_data_is_encrypted_as_the_database_route_encrypts_it(engine, monkeypatch):
    import base64
    import os

    from etl.target import crypt

    k = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("ETL_DATA_KEY", k)
    monkeypatch.delenv("ETL_DATA_KEY_OLD", raising=False)
    push(engine, "02", "I", [record("02", 2)], 1)
    a = push(engine, "03", "I", [record("03", 1)], 2)
    assert a["data"]["inserted"] == 1
    [person] = rows(engine, target.table("03"))
    assert crypt.is_encrypted(person["idCardNo"]) and ID_NO not in json.dumps(person, default=str)
    assert crypt.decrypt(person["idCardNo"], "idCardNo", person["ID"], [crypt.parse_key(k, "k")]) == ID_NO
    ledger = " ".join(r["record"] for r in rows(engine, target.ingest_change))
    assert ID_NO not in ledger and MOBILE not in ledger
    assert rows(engine, target.ingest_key)  # the target now knows its key


def test_whatever_a_unit_sends_is_answered_and_every_record_accounted_for(tmp_path):
    """Random JSON in every field of every dataset: never an exception, the answer's counts
    add up to the records sent, and the run row says the same."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from etl import standard

    engine = target.connect(f"sqlite:///{tmp_path / 'fuzz.sqlite'}")
    target.upgrade(engine)
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                        st.text(max_size=30), st.sampled_from(["2024-07-08", "1", "0", "设备类", ID_NO]))
    values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=2))
    counter = iter(range(1, 10**6))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(tx=st.sampled_from(standard.TX_CODES), bus=st.sampled_from(["I", "U", "D"]), data=st.data())
    def check(tx, bus, data):
        names = [*standard.dataset(tx).field_names, "ID", "orgNo", "extra"]
        recs = data.draw(st.lists(st.one_of(
            st.dictionaries(st.sampled_from(names), values, max_size=len(names)),
            st.builds(lambda i, over: {**record(tx, i), **over}, st.integers(0, 5),
                      st.dictionaries(st.sampled_from(names), values, max_size=3)),
            scalars), min_size=1, max_size=6))
        a = receive(engine, ORG_A, message(tx, bus, recs, f"20240708{next(counter):08d}"), now=NOW)
        assert a["rescode"] in ("0", "1")
        d = a["data"]
        assert d["inserted"] + d["updated"] + d["deleted"] + d["unchanged"] + d["rejected"] \
            + d["duplicates"] == d["received"] == len(recs)
        assert ID_NO not in json.dumps(a, ensure_ascii=False)

    check()
    assert all(r["status"] == "success" for r in runs(engine))
    engine.dispose()


def test_rejects_of_records_without_an_id_name_their_place_in_ingest_reject(engine):
    push(engine, "04", "I", [{"fileName": "制度"}, {**record("04", 1), "ID": "  "}], 1)
    keys = sorted(r["sourceKey"] for r in rows(engine, target.ingest_reject) if r["field"] == "ID")
    assert keys == ["\\x00#0 (无 ID / no ID)", "\\x00#1 (无 ID / no ID)"]


def test_our_own_failure_raises_records_a_failed_run_and_keeps_no_answer(engine, monkeypatch):
    import base64
    import os

    from etl.common.errors import EtlError

    def key() -> str:
        return base64.b64encode(os.urandom(32)).decode()

    monkeypatch.delenv("ETL_DATA_KEY_OLD", raising=False)
    monkeypatch.setenv("ETL_DATA_KEY", key())
    push(engine, "01", "I", [record("01", 1)], 1)
    monkeypatch.setenv("ETL_DATA_KEY", key())  # a mistyped key: the target is under another
    with pytest.raises(EtlError, match="rotate-key"):
        push(engine, "01", "U", [record("01", 1, address="新地址")], 2)
    assert [r["status"] for r in runs(engine)] == ["success", "failed"]
    assert len(rows(engine, target.ingest_push)) == 1  # a repeat of the failed one loads then
