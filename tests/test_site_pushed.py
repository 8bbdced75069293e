"""The report site and the interface route (issue 27 follow-up): a unit that only pushes gets the
unit page a mapped unit gets, named from its last A.3 record (else its orgNo) and linked from the
overview; a mapped unit's page shows the datasets it pushes beside its pulled ones, marked
接口归集; the exports hold the pushed messages' rejects with the unit's batchNo. Pushes go
through `etl.interface.receive.receive` on SQLite and PostgreSQL.

Records are built from the standard's rules (see tests/test_interface_receive.py): credit codes
by GB 32100, ID numbers by GB 11643, mobiles of libphonenumber's examples."""

from __future__ import annotations

import csv
import html
import json
from datetime import datetime
from pathlib import Path

import chromium
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from etl import target
from etl.common import clock
from etl.interface.receive import receive
from etl.mapping import load_mapping
from etl.report import site
from helpers import ORG_A, gb11643, hidden_danger_mapping_text, org_no
from test_interface_receive import record

ORG_B = org_no("91320506MA1W3L8P7")   # pushes only: 01, 02, 03, 09
ORG_C = org_no("91320583MA1X4N2Q5")   # nobody maps it, nobody pushes it: its mapping is gone
ORG_D = org_no("91320411MA1Y5P3R6")   # pushes only, never its 01: named by its orgNo
NOW = datetime(2024, 7, 8, 10, 0, tzinfo=clock.CST)
B_NAME = "苏州某某电梯有限公司"
BAD_ID = gb11643("32050519851203201")[:17] + ("0" if gb11643("32050519851203201")[17] != "0" else "1")


def _push(engine, org: str, tx: str, data: list, batch: str, bus: str = "I") -> dict:
    answer = receive(engine, org, {"batchNo": batch, "txcode": tx, "busType": bus, "data": data},
                     now=NOW)
    assert answer["rescode"] == "1", answer
    return answer


@pytest.fixture(scope="module", autouse=True)
def chinese():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ETL_REPORT_LANGUAGE", raising=False)
        yield


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)])
def url(request) -> str:
    return str(request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "pg_url"}[request.param]))


def _built(url: str, folder: Path) -> dict:
    engine = target.connect(url)
    target.upgrade(engine)
    _push(engine, ORG_B, "01", [record("01", 1, org=ORG_B, comName=B_NAME)], "2024070800000001")
    a1 = _push(engine, ORG_B, "09", [record("09", 1, org=ORG_B),
                                     record("09", 2, org=ORG_B, mainProblem=None)], "2024070800000002")
    a2 = _push(engine, ORG_B, "09", [record("09", 3, org=ORG_B),
                                     record("09", 4, org=ORG_B, troubleLevel=None)], "2024070800000003")
    _push(engine, ORG_B, "02", [record("02", i, dParentName=B_NAME) for i in (1, 2)], "2024070800000005")
    _push(engine, ORG_B, "03", [record("03", 1), record("03", 2, idCardNo=BAD_ID)], "2024070800000004")
    _push(engine, ORG_A, "01", [record("01", 1)], "2024070800000007")
    _push(engine, ORG_A, "02", [record("02", i) for i in (1, 2)], "2024070800000008")
    _push(engine, ORG_A, "06", [record("06", 1), record("06", 2, inherentriskLevel="很大风险")],
          "2024070800000009")
    _push(engine, ORG_D, "04", [record("04", 1, org=ORG_D)], "2024070800000001")
    with engine.begin() as conn:  # ORG_C: loaded once by a mapping file since removed
        conn.execute(sa.insert(target.ingest_run).values(
            runId="manual__c", orgNo=ORG_C, txCode="09", mapping="gone", mode="full", status="success",
            extracted=0, inserted=0, updated=0, deleted=0, unchanged=0, rejected=0, duplicates=0,
            warnings=0, startedAt=NOW, endedAt=NOW))
    path = folder / "unit_a.yaml"
    path.write_text(hidden_danger_mapping_text(ORG_A), encoding="utf-8")
    out = folder / "report"
    built = site.build(engine, [load_mapping(path)], out, now=NOW)
    engine.dispose()
    assert a1["data"]["rejected"] == a2["data"]["rejected"] == 1
    return {"built": built, "out": out, "a_path": path}


def _page(out: Path, org: str) -> str:
    return (out / "units" / f"{site.unit_key(org)}.html").read_text(encoding="utf-8")


def _section(page: str, tx: str) -> str:
    start = page.rindex("<section", 0, page.index(f'id="tx{tx}"'))
    return page[start:page.index("</section>", start)]


def _overview_units(out: Path) -> dict[str, list]:
    text = (out / "index.html").read_text(encoding="utf-8")
    raw = text.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    return {u[1]: u for u in json.loads(raw)["units"]}


def test_a_unit_that_only_pushes_gets_a_page_linked_from_the_overview(url, tmp_path):
    b = _built(url, tmp_path)
    out = b["out"]
    assert b["built"].failed == []
    units = _overview_units(out)
    assert units[ORG_B][0] == B_NAME and units[ORG_B][2] == f"units/{site.unit_key(ORG_B)}.html"
    assert units[ORG_B][5] == 1 and units[ORG_B][4] == 0        # marked 接口归集, not "removed"
    assert units[ORG_D][0] == ORG_D and units[ORG_D][2] == f"units/{site.unit_key(ORG_D)}.html"
    assert units[ORG_C][2] == "" and units[ORG_C][4] == 1        # nobody maps or pushes it: as before
    assert not (out / "units" / f"{site.unit_key(ORG_C)}.html").exists()
    assert (out / "units" / f"{site.unit_key(ORG_B)}-rejects.xlsx").is_file()

    page = _page(out, ORG_B)
    assert f"<h1>{B_NAME}</h1>" in page and f"<code>{ORG_B}</code>" in page
    assert {tx: f'id="tx{tx}"' in page for tx in ("01", "02", "03", "09", "04")} == {
        "01": True, "02": True, "03": True, "09": True, "04": False}
    nine = _section(page, "09")
    assert 'data-route="interface"' in nine and '<span class="pushed">接口归集</span>' in nine
    assert "接收时间（北京时间）与批次号" in nine and "读取的数据时段" not in nine
    for batch in ("2024070800000002", "2024070800000003"):
        assert f"2024-07-08 10:00 接收，批次号 {batch}" in nine
    assert nine.count('data-mode="push"') == 2 and "<td>接口报送</td>" in nine
    # the rejects of both messages: each message holds only the records it sent
    assert 'data-field="mainProblem" data-rule="required"' in nine
    assert 'data-field="troubleLevel" data-rule="required"' in nine
    assert "填写该字段，以新的批次号重新报送该记录" in nine and "在映射中" not in nine  # no mapping to fix
    three = _section(page, "03")
    assert 'data-rule="idcard"' in three and BAD_ID not in page
    assert html.escape(BAD_ID[:6] + "********" + BAD_ID[-4:]) in three
    assert "（拒收 3 行）</p>" in page  # 2 required (one per message) + 1 idcard
    assert "所列报文没有拒收、重复或警告。" in _section(page, "01")


def test_a_mapped_units_page_shows_the_datasets_it_pushes_beside_its_pulled_ones(url, tmp_path):
    out = _built(url, tmp_path)["out"]
    page = _page(out, ORG_A)
    six, nine = _section(page, "06"), _section(page, "09")
    assert 'data-route="interface"' in six and "接口归集" in six
    assert "2024-07-08 10:00 接收，批次号 2024070800000009" in six
    assert 'data-field="inherentriskLevel" data-rule="enum"' in six
    assert 'data-route' not in nine and "接口归集" not in nine and "读取的数据时段" not in nine  # never run
    assert 'id="unmapped"' not in page  # a pushed dataset is no "no longer mapped" one
    rec = (out / "reconcile.html").read_text(encoding="utf-8")
    assert f'<a href="units/{site.unit_key(ORG_B)}.html">{B_NAME}</a>' in rec
    assert f'<a href="units/{site.unit_key(ORG_A)}.html">' in rec


def test_exports_hold_the_pushed_messages_rejects_with_the_units_batchno(url, tmp_path):
    out = _built(url, tmp_path)["out"]
    for org, expected in (
            (ORG_B, {("09", "mainProblem", "required", "2024070800000002"),
                     ("09", "troubleLevel", "required", "2024070800000003"),
                     ("03", "idCardNo", "idcard", "2024070800000004")}),
            (ORG_A, {("06", "inherentriskLevel", "enum", "2024070800000009")})):
        stem = out / "units" / f"{site.unit_key(org)}-rejects"
        rows = list(load_workbook(f"{stem}.xlsx").active.iter_rows(values_only=True))
        assert rows[0][-1] == "单位批次号（接口归集）" and rows[0] == tuple(site.export_headings())
        errors = {(r[0], r[3], r[4], r[10]) for r in rows[1:] if r[5] == "错误"}
        assert errors == expected, errors
        assert {r[7] for r in rows[1:] if r[4] == "required"} <= {"填写该字段，以新的批次号重新报送该记录"}
        with open(f"{stem}.csv", encoding="utf-8-sig", newline="") as f:
            table = list(csv.reader(f))
        assert [tuple(r) for r in table] == [tuple("" if v is None else v for v in r) for r in rows]
        assert all(BAD_ID not in "".join(r) for r in table)


@pytest.fixture(scope="module")
def browser():
    yield from chromium.launched()


def test_a_pushed_units_page_renders_in_chromium(browser, sqlite_url, tmp_path):
    out = _built(sqlite_url, tmp_path)["out"]
    page, errors = browser.new_page(), []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto((out / "index.html").resolve().as_uri())
        rows = page.locator("#rows tr", has_text=B_NAME)
        assert rows.count() == 4 and rows.locator("a").all_inner_texts() == [B_NAME] * 4
        assert rows.locator(".pushed").all_inner_texts() == ["（接口归集）"] * 4
        rows.locator("a").first.click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == B_NAME
        marks = page.eval_on_selector_all("section[data-route=interface]", "s => s.map(x => x.dataset.tx)")
        assert sorted(marks) == ["01", "02", "03", "09"]
        first = page.locator("#tx09 table.runs tbody tr td.window").all_inner_texts()
        assert first == ["2024-07-08 10:00 接收，批次号 2024070800000003",
                         "2024-07-08 10:00 接收，批次号 2024070800000002"]
        assert errors == []
    finally:
        page.close()


def _rebuild(url: str, b: dict) -> site.Built:
    engine = target.connect(url)
    try:
        return site.build(engine, [load_mapping(b["a_path"])], b["out"], now=NOW)
    finally:
        engine.dispose()


def test_a_pushed_units_page_that_fails_is_listed_and_the_others_are_built(sqlite_url, tmp_path):
    """Bytes that are not UTF-8 in a pushed reject (SQLite) stop that unit's page only; a message
    that failed to load is a failed run, known by when it came (it has no batchNo on record)."""
    b = _built(sqlite_url, tmp_path)
    engine = target.connect(sqlite_url)
    with engine.begin() as conn:
        run_id = conn.execute(sa.select(target.ingest_run.c.runId).where(
            target.ingest_run.c.orgNo == ORG_B, target.ingest_run.c.txCode == "09")).scalars().first()
        conn.exec_driver_sql(
            "INSERT INTO ingest_reject (runId, orgNo, txCode, sourceKey, field, rule, severity, message, "
            f"createdAt) VALUES ('{run_id}', '{ORG_B}', '09', CAST(X'FF80' AS TEXT), 'taskNo', 'required', "
            "'error', 'planted', '2024-07-08 10:00:00')")
        conn.execute(sa.insert(target.ingest_run).values(
            runId="push__failed", orgNo=ORG_D, txCode="04", mapping="interface:x", mode="push",
            status="failed", extracted=0, inserted=0, updated=0, deleted=0, unchanged=0, rejected=0,
            duplicates=0, warnings=0, message="TargetError: the load was rolled back; send it again",
            startedAt=datetime(2024, 7, 8, 10, 1, tzinfo=clock.CST)))
    engine.dispose()
    built = _rebuild(sqlite_url, b)
    [failure] = built.failed
    assert failure.line().startswith(f"the page of unit {B_NAME} (orgNo {ORG_B}, mapping interface "
                                     "route) was not built: ")
    out = b["out"]
    assert not (out / "units" / f"{site.unit_key(ORG_B)}.html").exists()  # no page of old data
    units = _overview_units(out)
    assert units[ORG_B][2] == "" and units[ORG_B][3] and units[ORG_B][5] == 1
    four = _section(_page(out, ORG_D), "04")
    assert '<span class="failing status">' in four and "2024-07-08 10:01 接收</td>" in four
    assert "2024-07-08 10:00 接收，批次号 2024070800000001</td>" in four
    assert site.window_text({"mode": "push", "startedAt": NOW}) == "2024-07-08 10:00 接收"


def test_report_unit_names_a_unit_that_only_pushes(sqlite_url, tmp_path, capsys):
    from etl.cli import main

    b = _built(sqlite_url, tmp_path)
    out = tmp_path / "one"
    folder = str(b["a_path"].parent)
    assert main(["report", "--target", sqlite_url, "--mappings-dir", folder, "--out", str(out),
                 "--unit", ORG_B]) == 0
    units = _overview_units(out)
    assert set(units) >= {ORG_B} and ORG_A not in units and ORG_D not in units  # only the one asked
    assert (out / "units" / f"{site.unit_key(ORG_B)}.html").is_file()
    assert main(["report", "--target", sqlite_url, "--mappings-dir", folder, "--out", str(out),
                 "--unit", ORG_C]) == 2  # neither mapped nor pushed: still refused by name
    assert f"--unit {ORG_C}" in capsys.readouterr().err
