"""`etl report`: the static site, read in a real headless Chromium (Debian's `chromium`, driven by
Playwright with `executable_path`; no `playwright install`).

One target holds four units: demo unit A loaded now (on time, with an older run for the chart),
demo unit B loaded 20 days ago (late), a unit whose source file is missing (failing) and whose
name is an HTML script, and a unit never run. An ID number and a mobile are planted in clear in
the bookkeeping tables (as an older version might have left them): no output file may hold them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import chromium
import pytest
import sqlalchemy as sa

from etl import pipeline, target
from etl.cli import main
from etl.common import clock
from etl.mapping import load_mapping
from etl.onboarding.demo_data import make_demo_sources, make_uscc
from etl.report import freshness, site

PROJECT = Path(__file__).resolve().parent.parent
HOSTILE = "<script>alert(1)</script>"
NEVER_NAME = "从未上报特种设备有限公司"
PLANTED_ID = "320102199003074518"
PLANTED_MOBILE = "13912345678"
ORG_FAIL = make_uscc("91320000", "MA1FAXL0")
ORG_NEVER = make_uscc("91320000", "MA1NEWR0")


def _mapping(folder: Path, demo: str, name: str, var: Path, org: str | None = None,
             com: str | None = None, source: Path | None = None) -> Path:
    text = (PROJECT / "mappings" / f"{demo}.yaml").read_text(encoding="utf-8")
    text = text.replace("sqlite:///var/", f"sqlite:///{var}/").replace("base: var/", f"base: {var}/")
    if source:
        text = re.sub(r"url: sqlite:///\S+", f"url: sqlite:///{source}", text)
    if org:
        text = re.sub(r'orgNo: "\w+"', f'orgNo: "{org}"', text, count=1)
    if com:
        text = re.sub(r"comName: .*", f"comName: {json.dumps(com, ensure_ascii=False)}", text, count=1)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _make_target(root: Path, url: str, units: str = "ABFN") -> dict:
    var, maps = root / "var", root / "mappings"
    maps.mkdir(parents=True, exist_ok=True)
    make_demo_sources(var)
    paths = {"A": _mapping(maps, "demo_jinling_chem", "demo_jinling_chem", var),
             "B": _mapping(maps, "demo_suzhou_lift", "demo_suzhou_lift", var),
             "F": _mapping(maps, "demo_suzhou_lift", "hostile", var, ORG_FAIL, HOSTILE,
                           source=root / "no_such_source.sqlite"),
             "N": _mapping(maps, "demo_jinling_chem", "never_run", var, ORG_NEVER, NEVER_NAME)}
    paths = {k: v for k, v in paths.items() if k in units}
    m = {k: load_mapping(p) for k, p in paths.items()}
    engine = target.connect(url)
    now = clock.now()
    month_ago = (now - timedelta(days=30)).timestamp()
    for path in paths.values():  # onboarded long ago: a unit never run is overdue, not pending
        os.utime(path, (month_ago, month_ago))
    if "A" in m:
        pipeline.run_mapping(engine, m["A"], now=now - timedelta(days=2))
        pipeline.run_mapping(engine, m["A"], now=now)
    if "B" in m:
        pipeline.run_mapping(engine, m["B"], now=now - timedelta(days=20))
    if "F" in m:
        pipeline.run_mapping(engine, m["F"], now=now)
    return {"engine": engine, "mappings": m, "now": now, "dir": maps}


def _plant(engine) -> None:
    """Clear personal data in a reject and an audit example of unit A's last 03 run."""
    r = target.ingest_run
    with engine.begin() as conn:
        run_id = conn.execute(sa.select(r.c.runId).where(
            r.c.orgNo == make_uscc("91320115", "MA1R7KX3"), r.c.txCode == "03", r.c.status == "success")
            .order_by(r.c.startedAt.desc())).scalars().first()
        conn.execute(sa.insert(target.ingest_reject), [{
            "runId": run_id, "orgNo": make_uscc("91320115", "MA1R7KX3"), "txCode": "03",
            "sourceKey": PLANTED_ID, "field": "idCardNo", "rule": "idcard", "severity": "error",
            "message": f"planted {PLANTED_ID} call {PLANTED_MOBILE}", "createdAt": clock.now()}])
        conn.execute(sa.insert(target.ingest_audit), [{
            "runId": run_id, "orgNo": make_uscc("91320115", "MA1R7KX3"), "txCode": "03",
            "field": "linkTel", "rule": "phone", "count": 1,
            "examples": json.dumps([[PLANTED_MOBILE, PLANTED_ID]])}])


@pytest.fixture(scope="module", autouse=True)
def chinese():
    """The pages in their default language, whatever the developer's shell sets."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ETL_REPORT_LANGUAGE", raising=False)
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    t = _make_target(root, f"sqlite:///{root / 'target.sqlite'}")
    _plant(t["engine"])
    out = root / "report"
    index = site.build(t["engine"], list(t["mappings"].values()), out, now=t["now"]).index
    return {**t, "out": out, "index": index}


@pytest.fixture(scope="module")
def browser():
    yield from chromium.launched()


class Opened:
    """A page opened from file://, with every console error, page error and dialog kept."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page()  # a Browser, or a BrowserContext (a time zone of its own)
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed {r.url}"))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.resolve().as_uri())

    def rows(self) -> list[dict]:
        return self.page.eval_on_selector_all("#rows tr", """trs => trs.map(tr => ({
            org: tr.dataset.org, tx: tr.dataset.tx, status: tr.dataset.status,
            cells: Array.from(tr.cells).map(c => c.textContent)}))""")


@pytest.fixture
def opened(browser):
    pages: list[Opened] = []

    def open_(path: Path) -> Opened:
        pages.append(Opened(browser, path))
        return pages[-1]

    yield open_
    for p in pages:
        assert p.errors == [] and p.dialogs == []
        p.page.close()


def _unit_page(built, key: str) -> Path:
    return built["out"] / "units" / f"{site.unit_key(built['mappings'][key].unit.orgNo)}.html"


def test_overview_lists_every_unit_and_dataset_with_its_status(built, opened):
    page = opened(built["index"])
    rows = page.rows()
    want = {"A": "on_time", "B": "late", "F": "failing", "N": "never"}
    expected = {(m.unit.orgNo, tx): want[k] for k, m in built["mappings"].items() for tx in m.datasets}
    assert {(r["org"], r["tx"]): r["status"] for r in rows} == expected
    assert len(rows) == len(expected) == 36
    failing = [r for r in rows if r["status"] == "failing"]
    assert len(failing) == 9 and all("no such SQLite file" in r["cells"][6] for r in failing)
    assert all(r["cells"][4] == "—" for r in rows if r["status"] in ("failing", "never"))
    assert page.page.text_content('[data-count="late"]') == "逾期: 9"


def test_overview_numbers_are_the_targets(built, opened):
    """Records are the unit's active rows; the reject rate is the last successful run's."""
    page = opened(built["index"])
    org = built["mappings"]["A"].unit.orgNo
    row = next(r for r in page.rows() if r["org"] == org and r["tx"] == "09")
    with built["engine"].connect() as conn:
        active = conn.execute(sa.text("SELECT count(*) FROM hidden_danger WHERE orgNo = :o AND "
                                      "busType != 'D'"), {"o": org}).scalar()
        ext, rej = conn.execute(sa.text("SELECT extracted, rejected FROM ingest_run WHERE orgNo = :o "
                                        "AND txCode = '09' ORDER BY startedAt DESC"), {"o": org}).first()
    assert row["cells"][7] == str(active) and active > 0
    assert row["cells"][8] == f"{100 * rej / ext:.1f}%" and rej > 0


def test_overview_filters_by_status_and_search(built, opened):
    page = opened(built["index"])
    page.page.select_option("#status", "late")
    assert {r["org"] for r in page.rows()} == {built["mappings"]["B"].unit.orgNo}
    assert len(page.rows()) == 9
    page.page.select_option("#status", "")
    page.page.fill("#q", "从未上报")
    assert {r["status"] for r in page.rows()} == {"never"} and len(page.rows()) == 9
    page.page.fill("#q", ORG_FAIL.lower()[:12])
    assert {r["org"] for r in page.rows()} == {ORG_FAIL}
    page.page.select_option("#status", "on_time")
    assert page.rows() == [] and page.page.text_content("#shown") == "没有符合条件的行"


def test_overview_sorts_by_a_column(built, opened):
    page = opened(built["index"])
    page.page.click('th[data-key="records"]')
    records = [int(r["cells"][7]) for r in page.rows()]
    assert records == sorted(records)
    page.page.click('th[data-key="records"]')
    assert [int(r["cells"][7]) for r in page.rows()] == sorted(records, reverse=True)


def test_a_unit_name_that_is_html_renders_as_text(built, opened):
    page = opened(built["index"])
    page.page.fill("#q", "script")
    assert {r["cells"][0] for r in page.rows()} == {HOSTILE}
    unit = opened(_unit_page(built, "F"))
    assert unit.page.text_content("h1") == HOSTILE
    assert "<script>alert" not in _unit_page(built, "F").read_text(encoding="utf-8")
    assert "<script>alert" not in built["index"].read_text(encoding="utf-8")
    # the fixture asserts no dialog opened


def test_a_failing_units_page_shows_the_failure(built, opened):
    unit = opened(_unit_page(built, "F"))
    statuses = unit.page.eval_on_selector_all("tr.run", "trs => trs.map(t => t.dataset.status)")
    assert statuses and set(statuses) == {"failed"}
    assert "no_such_source" in unit.page.text_content("section[data-tx='06'] tr.run .msg")


def test_a_unit_page_shows_its_runs_chart_and_rejects(built, opened):
    org = built["mappings"]["A"].unit.orgNo
    unit = opened(_unit_page(built, "A"))
    with built["engine"].connect() as conn:
        runs = conn.execute(sa.text("SELECT extracted, rejected FROM ingest_run WHERE orgNo = :o AND "
                                    "txCode = '07' ORDER BY startedAt DESC"), {"o": org}).all()
        rejects = conn.execute(sa.text(
            "SELECT field, rule, count(*) FROM ingest_reject WHERE orgNo = :o AND txCode = '07' AND "
            "runId = (SELECT runId FROM ingest_run WHERE orgNo = :o AND txCode = '07' "
            "ORDER BY startedAt DESC LIMIT 1) GROUP BY field, rule"), {"o": org}).all()
    section = "section[data-tx='07']"
    shown = unit.page.eval_on_selector_all(f"{section} tr.run", "trs => trs.map(t => "
                                           "[+t.cells[4].textContent, +t.cells[9].textContent])")
    assert [tuple(x) for x in shown] == [tuple(r) for r in runs] and len(runs) == 2
    assert unit.page.locator(f"{section} svg rect.extracted").count() == 2
    groups = unit.page.eval_on_selector_all(f"{section} tr.reject-group", "trs => trs.map(t => "
                                            "[t.dataset.field, t.dataset.rule, +t.querySelector('.count').textContent])")
    assert sorted(tuple(g) for g in groups) == sorted(tuple(r) for r in rejects)
    assert ("riskNo", "reference", 3) in {tuple(g) for g in groups}
    assert "FX202400000099" in unit.page.text_content(section)  # an example, to find at source
    idcards = unit.page.text_content("section[data-tx='03'] tr.reject-group[data-rule='idcard']")
    assert "320121********" in idcards and "改正身份证号码" in idcards


def test_exports_open_and_hold_every_reject_masked(built):
    from openpyxl import load_workbook

    org = built["mappings"]["A"].unit.orgNo
    stem = built["out"] / "units" / f"{site.unit_key(org)}-rejects"
    with built["engine"].connect() as conn:
        expected = conn.execute(sa.text(
            "SELECT count(*) FROM ingest_reject j WHERE orgNo = :o AND runId IN (SELECT runId FROM "
            "ingest_run r WHERE r.orgNo = :o AND r.txCode = j.txCode AND r.startedAt = (SELECT "
            "max(startedAt) FROM ingest_run WHERE orgNo = :o AND txCode = j.txCode))"), {"o": org}).scalar()
    sheet = load_workbook(f"{stem}.xlsx").active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == tuple(site.export_headings()) and len(rows) - 1 == expected > 10
    assert rows[0][:3] == ("数据信息类别代码", "数据信息类别", "来源主键")
    with open(f"{stem}.csv", encoding="utf-8-sig", newline="") as f:
        table = list(csv.reader(f))
    assert [tuple(r) for r in table] == [tuple("" if v is None else v for v in r) for r in rows]
    planted = next(r for r in rows if r[6] and r[6].startswith("planted"))
    assert planted[2] == "320102********4518" and planted[6] == "planted 320102********4518 call 139****5678"
    assert {r[4] for r in rows[1:]} >= {"idcard", "reference", "duplicate", "expired"}


def _personal_values(engine) -> set[str]:
    found = {PLANTED_ID, PLANTED_MOBILE}
    with engine.connect() as conn:
        for table, cols in (("unit_person", ("idCardNo", "certNo")), ("unit_info", ("linkTel",)),
                            ("unit_dept", ("dLinkTel",))):
            for row in conn.execute(sa.text(f"SELECT {', '.join(cols)} FROM {table}")):
                found |= {v for v in row if v and re.fullmatch(r"\d{17}[\dX]|1[3-9]\d{9}", v)}
    return found


def test_no_output_file_holds_a_full_id_number_or_mobile(built):
    personal = _personal_values(built["engine"])
    assert len(personal) > 20
    files = [p for p in built["out"].rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".html", ".csv", ".xlsx", ".json"}  # .json: the manifest
    assert [p.name for p in files if p.suffix == ".json"] == [site.MANIFEST]
    for p in files:
        texts = ([z.read(n).decode("utf-8") for z in [zipfile.ZipFile(p)] for n in z.namelist()]
                 if p.suffix == ".xlsx" else [p.read_text(encoding="utf-8-sig")])
        for text in texts:
            leaked = [v for v in personal if v in text]
            assert not leaked, f"{p.name} holds {leaked[:3]}"


def test_reconcile_page_without_results_says_none_yet(built, opened):
    page = opened(built["out"] / "reconcile.html")
    assert "尚未进行归集结果比对" in page.page.text_content("#none")


def test_reconcile_page_lists_differences_and_not_ingested_rows_masked(built, opened, tmp_path):
    org = built["mappings"]["A"].unit.orgNo
    results = [
        {"orgNo": org, "txCode": "03", "state": "differ", "sourceValid": 24, "targetActive": 25,
         "missing": 1, "differing": 1, "extra": 1, "notIngested": 2, "checkedAt": built["now"],
         "details": {"missing": ["ID-M1"], "extra": ["ID-X1"],
                     "differing": [{"id": "ID-D1", "source_key": "7", "field": "idCardNo",
                                    "source": PLANTED_ID, "target": "320102199003071234"}],
                     "not_ingested": [["9", "idCardNo:idcard", f"bad {PLANTED_ID}"],
                                      ["17", "idCardNo:idcard", "no such birth date"]]}},
        {"orgNo": org, "txCode": "06", "state": "agree", "sourceValid": 21, "targetActive": 21,
         "missing": 0, "differing": 0, "extra": 0, "notIngested": 0, "checkedAt": built["now"],
         "details": {}}]
    path = site.write_reconcile(tmp_path, results, {org: built["mappings"]["A"]}, built["now"])
    page = opened(path)
    states = page.page.eval_on_selector_all("tr.rec", "trs => trs.map(t => [t.dataset.tx, t.dataset.state])")
    assert states == [["03", "differ"], ["06", "agree"]]
    text = page.page.text_content("body")
    assert "ID-D1" in text and "320102********4518" in text and "ID-M1" in text and "ID-X1" in text
    assert "no such birth date" in text
    raw = path.read_text(encoding="utf-8")
    assert PLANTED_ID not in raw and "320102199003071234" not in raw


def test_a_2000_unit_overview_renders_pages_and_filters(browser, opened, tmp_path):
    now = clock.now()
    kinds = ["on_time", "late", "failing", "never"]
    statuses = [freshness.DatasetStatus(f"unit{i}", make_uscc("91320100", f"MA{i:06d}"), f"单位{i:04d}有限公司",
                                   tx, "daily", None if kinds[i % 4] == "never" else now, None,
                                   kinds[i % 4], "source down" if i % 4 == 2 else None, i, i % 7, 100)
                for i in range(2000) for tx in ("01", "03", "06", "07", "09")]
    path = site.write_overview(tmp_path, statuses, now)
    page = opened(path)
    assert len(page.rows()) == 100
    assert page.page.text_content("#page") == "第 1 页，共 100 页"
    page.page.click("#next")
    assert page.page.text_content("#page") == "第 2 页，共 100 页" and len(page.rows()) == 100
    page.page.select_option("#status", "failing")
    assert page.page.text_content("#shown") == "第 1–100 行，共 2500 行（共 10000 行中筛选）"
    page.page.fill("#q", "单位1234")
    assert [(r["org"], r["status"]) for r in page.rows()] == [(make_uscc("91320100", "MA001234"), "failing")] * 5
    page.page.fill("#q", make_uscc("91320100", "MA001237"))
    page.page.select_option("#status", "")
    assert {r["status"] for r in page.rows()} == {"late"} and len(page.rows()) == 5


def test_pending_first_loads_are_labelled_sorted_and_filtered(browser, opened, tmp_path):
    """A dataset whose first load is not due yet is neither late nor never loaded: it has its
    own label, sorts after those that need attention, and has a filter of its own."""
    now = clock.now()
    kinds = ["on_time", "pending", "never", "late", "failing"]
    statuses = [freshness.DatasetStatus(f"unit{i}", make_uscc("91320100", f"MA{i:06d}"), f"单位{i}",
                                        "01", "weekly", now if kind in ("on_time", "late") else None,
                                        None, kind, "first load due by 2031-01-08 00:00 CST"
                                        if kind == "pending" else None, 0, 0, 0,
                                        due=clock.to_cst(datetime(2031, 1, 8)) if kind == "pending" else None)
                for i, kind in enumerate(kinds)]
    page = opened(site.write_overview(tmp_path, statuses, now))
    assert [r["status"] for r in page.rows()] == ["failing", "late", "never", "pending", "on_time"]
    pending = next(r for r in page.rows() if r["status"] == "pending")
    assert pending["cells"][5] == "等待首次加载"
    assert pending["cells"][6] == "首次加载须在 2031-01-08 00:00（北京时间）前完成"
    assert page.page.text_content('[data-count="pending"]') == "等待首次加载: 1"
    page.page.select_option("#status", "pending")
    assert [r["org"] for r in page.rows()] == [make_uscc("91320100", "MA000001")]
    page.page.select_option("#status", "never")
    assert [r["org"] for r in page.rows()] == [make_uscc("91320100", "MA000002")]


def test_the_site_builds_on_every_target_kind(db_url, tmp_path):
    t = _make_target(tmp_path, db_url, units="AN")
    index = site.build(t["engine"], list(t["mappings"].values()), tmp_path / "out", now=t["now"]).index
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>',
                                index.read_text(encoding="utf-8"), re.S).group(1))
    assert sorted({(data["units"][r[0]][1], r[5]) for r in data["rows"]}) == sorted(
        [(t["mappings"]["A"].unit.orgNo, "on_time"), (ORG_NEVER, "never")])
    assert all(r[7] > 0 for r in data["rows"] if r[5] == "on_time")
    page = (tmp_path / "out" / "units" / f"{site.unit_key(t['mappings']['A'].unit.orgNo)}.html")
    assert 'data-rule="idcard"' in page.read_text(encoding="utf-8")


def test_etl_report_writes_the_site_and_says_where(built, tmp_path, capsys, monkeypatch):
    url = str(built["engine"].url)
    out = tmp_path / "r"
    assert main(["report", "--target", url, "--mappings-dir", str(built["dir"]), "--out", str(out),
                 "--unit", "demo_jinling_chem", "--since", "2000-01-01"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'index.html'}"
    assert [p.name for p in (out / "units").glob("*.html")] == [
        f"{site.unit_key(built['mappings']['A'].unit.orgNo)}.html"]
    index = (out / "index.html").read_text(encoding="utf-8")
    assert '<html lang="zh-CN">' in index and "数据归集概览" in index
    assert "removed-units" not in index  # the units left out by --unit are mapped, not removed
    assert main(["report", "--target", url, "--mappings-dir", str(built["dir"]), "--out", str(out),
                 "--unit", "demo_jinling_chem", "--lang", "en"]) == 0
    assert '<html lang="en">' in (out / "index.html").read_text(encoding="utf-8")
    capsys.readouterr()
    monkeypatch.setenv("ETL_REPORTS_DIR", str(tmp_path / "env"))
    assert main(["report", "--target", url, "--mappings-dir", str(built["dir"]), "--unit", ORG_NEVER]) == 0
    assert (tmp_path / "env" / "index.html").is_file()
    assert main(["report", "--target", url, "--mappings-dir", str(built["dir"]), "--unit", "nobody"]) == 2
    assert "--unit nobody" in capsys.readouterr().err


# --- one unit's data, one operator's folder (issue 23) ------------------------------------------------

CONTROL = "K\x01\x00\x08\x0b\x0c\x1b[31m\x7f\x85\x9fZ"   # C0, ESC, DEL, C1: none may reach a file raw
RAW_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _copy_target(built, folder: Path) -> str:
    """The module's SQLite target copied (sqlite3's backup), to plant a unit's data in."""
    import sqlite3

    folder.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(built["engine"].url.database)
    copy = sqlite3.connect(folder / "target.sqlite")
    source.backup(copy)
    source.close()
    copy.close()
    return f"sqlite:///{folder / 'target.sqlite'}"


def _plant_reject(url: str, key: str, sql_key: str | None = None, rule: str = "planted") -> None:
    """A reject in unit B's last successful 01 run, its source key `key` (or the SQL `sql_key`)."""
    engine = sa.create_engine(url)
    org = make_uscc("91320506", "MA1W3L8P")
    r = target.ingest_run
    with engine.begin() as conn:
        run_id = conn.execute(sa.select(r.c.runId).where(r.c.orgNo == org, r.c.status == "success")
                              .order_by(r.c.startedAt.desc())).scalars().first()
        conn.execute(sa.text(
            'INSERT INTO ingest_reject ("runId", "orgNo", "txCode", "sourceKey", "field", "rule", '
            '"severity", "message", "createdAt") VALUES (:run, :org, (SELECT "txCode" FROM ingest_run '
            f'WHERE "runId" = :run AND "orgNo" = :org LIMIT 1), {sql_key or ":key"}, \'psnName\', '
            ':rule, \'error\', :msg, :at)'),
            {"run": run_id, "org": org, "key": key, "rule": rule, "msg": f"bad\x0c{key}",
             "at": clock.now()})
    engine.dispose()


def _report(url: str, built, out: Path, *extra: str) -> int:
    return main(["report", "--target", url, "--mappings-dir", str(built["dir"]), "--out", str(out),
                 *extra])


def test_control_characters_in_a_source_key_are_escaped_alike_in_page_and_exports(built, opened,
                                                                                  tmp_path, capsys):
    """The attack: a source key holding \\x01 made openpyxl raise, and the report stopped for
    every unit (exit 1, a traceback, no index.html)."""
    from openpyxl import load_workbook

    url = _copy_target(built, tmp_path / "t")
    _plant_reject(url, CONTROL)
    out = tmp_path / "r"
    assert _report(url, built, out) == 0, capsys.readouterr().err
    shown = "K\\u0001\\u0000\\u0008\\u000b\\u000c\\u001b[31m\\u007f\\u0085\\u009fZ"
    assert site.visible(CONTROL) == shown
    stem = out / "units" / f"{site.unit_key(built['mappings']['B'].unit.orgNo)}-rejects"
    rows = list(load_workbook(f"{stem}.xlsx").active.iter_rows(values_only=True))
    planted = [r for r in rows if r[4] == "planted"]
    assert [(r[2], r[6]) for r in planted] == [(shown, f"bad\\u000c{shown}")]
    with open(f"{stem}.csv", encoding="utf-8-sig", newline="") as f:
        assert [(r[2], r[6]) for r in csv.reader(f) if r[4] == "planted"] == [(shown, f"bad\\u000c{shown}")]
    page = opened(_unit_page({**built, "out": out}, "B"))
    assert page.page.text_content("tr.reject-group[data-rule='planted'] code") == shown
    for p in out.rglob("*"):
        texts = ([zipfile.ZipFile(p).read(n).decode("utf-8") for n in zipfile.ZipFile(p).namelist()]
                 if p.suffix == ".xlsx" else [p.read_text(encoding="utf-8")] if p.is_file() else [])
        assert not any(RAW_CONTROL.search(t) for t in texts), p.name


def test_a_unit_whose_page_fails_is_listed_and_every_other_unit_is_built(built, opened, tmp_path,
                                                                         capsys):
    """Bytes that are not UTF-8 in one unit's reject (as a hand edit or an old tool may leave in
    a SQLite target) cannot be read back: that unit's page is not built, its old page removed,
    and it says so; the others are built, index.html too, exit 1 with one line for the unit."""
    url = _copy_target(built, tmp_path / "t")
    out = tmp_path / "r"
    assert _report(url, built, out) == 0
    capsys.readouterr()
    b = built["mappings"]["B"]
    b_files = [out / "units" / f"{site.unit_key(b.unit.orgNo)}{end}"
               for end in (".html", "-rejects.csv", "-rejects.xlsx")]
    assert all(p.is_file() for p in b_files)
    _plant_reject(url, "", sql_key="CAST(X'FF80' AS TEXT)")
    assert _report(url, built, out) == 1
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"report: the page of unit {b.unit.comName} (orgNo {b.unit.orgNo}, mapping "
                           f"{b.name}) was not built: OperationalError: ")
    assert "Traceback" not in captured.err and captured.out.strip() == f"report: {out / 'index.html'}"
    assert not any(p.exists() for p in b_files)  # the old page would show old data as current
    for k in ("A", "F", "N"):
        assert _unit_page({**built, "out": out}, k).is_file()
    page = opened(out / "index.html")
    rows = page.page.eval_on_selector_all("#rows tr", """trs => trs.map(tr => [tr.dataset.org,
        tr.dataset.pageFailed || "", tr.cells[0].querySelector('a') ? 'link' : 'text'])""")
    assert {(org, failed, how) for org, failed, how in rows} == {
        (m.unit.orgNo, "1" if k == "B" else "", "text" if k == "B" else "link")
        for k, m in built["mappings"].items()}
    listed = page.page.eval_on_selector_all("#failed-pages li", "lis => lis.map(li => li.dataset.org)")
    assert listed == [b.unit.orgNo]
    assert "OperationalError" in page.page.text_content("#failed-pages")


def _site_files(out: Path) -> dict[str, object]:
    """Every file of a built site: its bytes, an xlsx export by its cells (the workbook holds
    the moment it was written)."""
    from openpyxl import load_workbook

    files: dict[str, object] = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            rel = path.relative_to(out).as_posix()
            files[rel] = ([[c for c in row] for row in load_workbook(path).active.iter_rows(values_only=True)]
                          if path.suffix == ".xlsx" else path.read_bytes())
    return files


@pytest.mark.parametrize("shares", [[0, 1, 2], [0, 2], []])
def test_unit_pages_built_in_shares_make_the_same_site_as_one_build(built, tmp_path, shares):
    """The daily DAG builds the unit pages in shares, in parallel (`build_pages`), and one build
    completes the site (`build(..., parts=...)`): the same files as one build, the same unit
    listed as failed; a unit no share wrote (its task failed) is built by the last build, and a
    unit a share wrote is not written again."""
    url = _copy_target(built, tmp_path / "t")
    _plant_reject(url, "", sql_key="CAST(X'FF80' AS TEXT)")  # unit B's page fails
    engine = target.connect(url)
    units = freshness.load_units(built["dir"])
    now = built["now"]
    whole = site.build(engine, units, tmp_path / "whole", now=now)
    parts = [site.build_pages(engine, freshness.load_units(built["dir"], share=(i, 3)),
                              tmp_path / "shared", now=now) for i in shares]
    mapped = [m.unit.orgNo for n, m in enumerate(units) if n % 3 in shares and isinstance(m, site.Mapping)]
    assert sorted(o for p in parts for o in p.built + [f.org_no for f in p.failed]) == sorted(mapped)
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "shared" / "units").iterdir()} if parts else {}
    passed = [site.Pages.of(json.loads(json.dumps(p.to_dict()))) for p in parts]  # as XCom carries them
    shared = site.build(engine, units, tmp_path / "shared", now=now, parts=passed)
    engine.dispose()
    assert [f.line() for f in shared.failed] == [f.line() for f in whole.failed]
    assert [f.org_no for f in whole.failed] == [built["mappings"]["B"].unit.orgNo]
    assert _site_files(tmp_path / "shared") == _site_files(tmp_path / "whole")
    assert {p: p.stat().st_mtime_ns for p in written} == written  # not written twice


def test_a_share_of_the_mapping_files_is_named_by_its_place_among_them(built):
    with pytest.raises(ValueError, match="share 3 of 3"):
        freshness.load_units(built["dir"], share=(3, 3))
    shares = [freshness.load_units(built["dir"], share=(i, 3)) for i in range(3)]
    whole = freshness.load_units(built["dir"])
    assert [u.path for u in whole] == [u.path for n in range(len(whole)) for u in [shares[n % 3][n // 3]]]


def test_the_report_removes_only_files_it_wrote(built, tmp_path, capsys):
    """The attack: `etl report --out DIR` deleted every file of DIR/units it had not just written,
    an operator's own included. Now only what its manifest says it wrote is removed; a manifest
    edited to name other files removes nothing else."""
    url = str(built["engine"].url)
    out = tmp_path / "r"
    own = [out / "units" / "notes.txt", out / "units" / "my-own-page.html", out / "units" / "kept" / "x.html"]
    for p in own:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("mine", encoding="utf-8")
    victim = tmp_path / "victim.html"
    victim.write_text("mine", encoding="utf-8")
    assert _report(url, built, out) == 0
    warning = capsys.readouterr().err
    assert warning.startswith("warning: report: kept units/kept, units/my-own-page.html, "
                              "units/notes.txt in ") and "not written by etl report" in warning
    manifest = json.loads((out / site.MANIFEST).read_text(encoding="utf-8"))["files"]
    pages = {f"units/{site.unit_key(m.unit.orgNo)}.html" for m in built["mappings"].values()}
    assert pages <= set(manifest) and "index.html" in manifest
    assert not any(f.startswith("units/my-own") or f.startswith("units/notes") for f in manifest)

    hostile = {"files": [*manifest, "../victim.html", "units/../../victim.html", str(victim),
                         "units/notes.txt", "units/kept"]}
    (out / site.MANIFEST).write_text(json.dumps(hostile), encoding="utf-8")
    assert _report(url, built, out, "--unit", "demo_jinling_chem") == 0  # the others' pages go
    assert "warning: report: kept units/kept, units/my-own-page.html, units/notes.txt" in capsys.readouterr().err
    assert all(p.read_text(encoding="utf-8") == "mine" for p in [*own, victim])
    left = {f"units/{p.name}" for p in (out / "units").iterdir()} - {"units/kept", "units/my-own-page.html",
                                                                      "units/notes.txt"}
    a = site.unit_key(built["mappings"]["A"].unit.orgNo)
    assert left == {f"units/{a}.html", f"units/{a}-rejects.csv", f"units/{a}-rejects.xlsx"}
    assert sorted(json.loads((out / site.MANIFEST).read_text(encoding="utf-8"))["files"]) == sorted(
        ["index.html", "reconcile.html", *left])


# --- in the readers' language, and only what is so now (issue 24) -----------------------------------

ORG_A = make_uscc("91320115", "MA1R7KX3")
ORG_B = make_uscc("91320506", "MA1W3L8P")
BACKFILL = [datetime(2026, 11, 28) + timedelta(days=i) for i in range(9)]  # nine days, CST
BLANKS = [["南京\u3000化工", "南京化工"], ["李四\u200b", "李四"], ["张三\t", "张三"]]


def _insert_runs(engine, rows: list[dict]) -> None:
    base = {"mapping": "demo_jinling_chem", "orgNo": ORG_A, "message": None, "extracted": 0,
            "inserted": 0, "updated": 0, "deleted": 0, "unchanged": 0, "rejected": 0,
            "duplicates": 0, "warnings": 0}
    with engine.begin() as conn:
        conn.execute(sa.insert(target.ingest_run), [{**base, **r} for r in rows])


@pytest.fixture(scope="module")
def reshaped(built, tmp_path_factory):
    """The module's target some weeks on: unit A's last 07 run failed and then 07 left its
    mapping; unit B's mapping file was removed; a failed run's message and an invalid mapping
    name the server's folders; cleaning changed values only by invisible characters; a backfill
    read nine past days in nine runs started the same minute. Built in Chinese and in English."""
    root = tmp_path_factory.mktemp("reshaped")
    url = _copy_target(built, root / "t")
    engine = target.connect(url)
    now = built["now"]
    secret = root / "srv" / "etl" / "var" / "secret.sqlite"
    _insert_runs(engine, [{"runId": "stale-07", "txCode": "07", "mode": "incremental", "status": "failed",
                           "message": f"no such SQLite file {secret}: check url (reader /opt/etl-vendor/lib/reader.so)",
                           "startedAt": now - timedelta(hours=1)}])
    _insert_runs(engine, [{"runId": f"backfill-{d:%m%d}", "txCode": "09", "mode": "incremental",
                           "status": "success", "windowStart": d, "windowEnd": d + timedelta(days=1),
                           "extracted": 3, "startedAt": clock.to_cst(now + timedelta(minutes=1))}
                          for d in BACKFILL])
    r = target.ingest_run
    with engine.begin() as conn:
        run_03 = conn.execute(sa.select(r.c.runId).where(r.c.orgNo == ORG_A, r.c.txCode == "03",
                                                         r.c.status == "success")
                              .order_by(r.c.startedAt.desc())).scalars().first()
        conn.execute(sa.insert(target.ingest_audit), [{
            "runId": run_03, "orgNo": ORG_A, "txCode": "03", "field": "psnName", "rule": "trim",
            "count": 3, "examples": json.dumps(BLANKS, ensure_ascii=False)}])
    a = built["mappings"]["A"]
    a_now = dataclasses.replace(a, model=a.model.model_copy(update={"datasets": {
        tx: spec for tx, spec in a.model.datasets.items() if tx != "07"}}))
    broken = root / "mappings"
    broken.mkdir()
    (broken / "broken.yaml").write_text("unit: {orgNo: 1}\ndatasets: {}\n", encoding="utf-8")
    invalid = freshness.load_units(broken)
    assert str(broken) in invalid[0].problem  # the server's folder, before the site hides it
    units = [a_now, built["mappings"]["F"], built["mappings"]["N"], *invalid]
    out, out_en = root / "report", root / "report-en"
    site.build(engine, units, out, now=now)
    site.build(engine, units, out_en, now=now, lang="en")
    return {"root": root, "out": out, "out_en": out_en, "engine": engine, "units": units}


@pytest.fixture(params=["UTC", "Asia/Shanghai"])
def zone(request, browser):
    """A browser context in a time zone: what the pages show may not depend on it."""
    context = browser.new_context(timezone_id=request.param)
    yield request.param, context
    context.close()


def _shown(page: Opened) -> dict:
    """Every date and time the reader sees, as text."""
    return {"last": [r["cells"][4] for r in page.rows()],
            "footer": page.page.text_content("body > p.muted:last-of-type")}


def test_pages_speak_chinese_with_the_standards_terms(reshaped, opened, zone):
    name, context = zone
    overview = Opened(context, reshaped["out"] / "index.html")
    try:
        assert overview.page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == name
        assert overview.page.get_attribute("html", "lang") == "zh-CN"
        assert overview.page.title() == "数据归集概览" and overview.page.text_content("h1") == "数据归集概览"
        heads = overview.page.eval_on_selector_all("#overview th", "ths => ths.map(t => t.textContent)")
        assert heads[:3] == ["使用单位", "统一社会信用代码", "数据信息类别"]
        assert overview.page.text_content('[data-count="on_time"]').startswith("按时: ")
        tx = {r["cells"][2] for r in overview.rows()}
        assert {"01 单位基本信息", "06 风险点信息", "09 隐患排查治理信息"} <= tx
        assert {r["cells"][3] for r in overview.rows() if r["tx"]} <= {"按日", "按周"}
        assert overview.errors == [] and overview.dialogs == []
    finally:
        overview.page.close()


def test_dates_are_cst_whatever_the_browsers_zone(reshaped, browser):
    seen = {}
    for name in ("UTC", "Asia/Shanghai"):
        context = browser.new_context(timezone_id=name)
        try:
            overview = Opened(context, reshaped["out"] / "index.html")
            unit = Opened(context, reshaped["out"] / "units" / f"{site.unit_key(ORG_A)}.html")
            seen[name] = {**_shown(overview),
                          "windows": unit.page.eval_on_selector_all(
                              "section[data-tx='09'] td.window", "tds => tds.map(t => t.textContent)"),
                          "days": unit.page.eval_on_selector_all(
                              "section[data-tx='09'] svg > text[font-size='10']",
                              "ts => ts.map(t => t.textContent)")}
            assert overview.errors == unit.errors == []
        finally:
            context.close()
    assert seen["UTC"] == seen["Asia/Shanghai"]
    a_on_time = {r for r in seen["UTC"]["last"] if r != "—"}
    assert a_on_time and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", x) for x in a_on_time)


def test_runs_show_the_window_they_read(reshaped, opened):
    unit = opened(reshaped["out"] / "units" / f"{site.unit_key(ORG_A)}.html")
    windows = unit.page.eval_on_selector_all("section[data-tx='09'] tr.run td.window",
                                             "tds => tds.map(t => t.textContent)")
    expected = [f"{d:%Y-%m-%d} 00:00 – {d + timedelta(days=1):%Y-%m-%d} 00:00" for d in BACKFILL]
    assert sorted(windows[:9]) == expected  # nine runs started the same minute, nine windows
    full = unit.page.eval_on_selector_all("section[data-tx='06'] tr.run[data-mode='full'] td.window",
                                          "tds => tds.map(t => t.textContent)")
    assert full and all(w.startswith("全量，截至 ") for w in full)
    days = unit.page.eval_on_selector_all("section[data-tx='09'] svg > text[font-size='10']",
                                          "ts => ts.map(t => t.textContent)")
    assert {f"{d:%m-%d}" for d in BACKFILL} <= set(days)
    assert unit.page.text_content("section[data-tx='09'] table.runs th") == "读取的数据时段（北京时间）"


def test_a_unit_page_shows_only_the_datasets_mapped_now(reshaped, opened):
    unit = opened(reshaped["out"] / "units" / f"{site.unit_key(ORG_A)}.html")
    sections = unit.page.eval_on_selector_all("section.dataset", "ss => ss.map(s => s.dataset.tx)")
    assert sections == sorted(tx for tx in reshaped["units"][0].datasets) and "07" not in sections
    folded = unit.page.locator("details.unmapped-dataset[data-tx='07']")
    assert folded.count() == 1 and not folded.evaluate("d => d.open")
    assert "不再映射" in folded.locator("summary").text_content()
    assert "失败" not in unit.page.text_content("section.dataset[data-tx='06'] p")
    csv_rows = (reshaped["out"] / "units" / f"{site.unit_key(ORG_A)}-rejects.csv").read_text(encoding="utf-8-sig")
    assert not [r for r in csv.reader(io.StringIO(csv_rows))][1:] or all(
        r[0] != "07" for r in list(csv.reader(io.StringIO(csv_rows)))[1:])


def test_the_overview_marks_a_unit_whose_mapping_is_gone(reshaped, built, opened):
    page = opened(reshaped["out"] / "index.html")
    rows = page.page.eval_on_selector_all("#rows tr", """trs => trs.map(tr => [tr.dataset.org,
        tr.dataset.unmapped || "", tr.cells[0].textContent, tr.cells[0].querySelector('a') ? 1 : 0])""")
    b = [r for r in rows if r[0] == ORG_B]
    assert b and all(r[1] == "1" and r[3] == 0 for r in b)  # marked, and no link to a page gone
    name = built["mappings"]["B"].unit.comName  # from its A.3 record in the target
    assert all(r[2] == f"{name}（映射已移除）" for r in b), b[0]
    assert all(r[2].strip() for r in rows)  # never a blank name
    assert [li for li in page.page.eval_on_selector_all("#removed-units li", "l => l.map(x => x.dataset.org)")] == [ORG_B]
    assert not any(r[1] for r in rows if r[0] != ORG_B)


def test_whitespace_only_changes_are_made_visible(reshaped, opened):
    unit = opened(reshaped["out"] / "units" / f"{site.unit_key(ORG_A)}.html")
    items = unit.page.eval_on_selector_all("section[data-tx='03'] table.audit li.whitespace",
                                           "lis => lis.map(l => l.textContent)")
    assert {"南京⟨U+3000⟩化工 → 南京化工", "李四⟨U+200B⟩ → 李四", "张三⇥ → 张三"} <= set(items), items
    assert any("␠ → " in x for x in items)  # the demo's own trimmed name: "丁** " became "丁**"
    assert site.reveal("a b") == 'a<span class="ws" title="U+0020 space">␠</span>b'


def test_no_server_path_reaches_a_page_or_an_export(reshaped, built):
    roots = {str(reshaped["root"]), str(built["out"].parent), str(PROJECT)}
    found = 0
    for out in (reshaped["out"], reshaped["out_en"]):
        for p in out.rglob("*"):
            if not p.is_file():
                continue
            found += 1
            texts = ([zipfile.ZipFile(p).read(n).decode("utf-8") for n in zipfile.ZipFile(p).namelist()]
                     if p.suffix == ".xlsx" else [p.read_text(encoding="utf-8-sig")])
            for text in texts:
                assert not any(r in text for r in roots), p.name
                assert not re.search(r"(?<![\w./:-])/(tmp|home|root|srv|var|work|opt)/", text), p.name
    assert found > 8
    index = (reshaped["out"] / "index.html").read_text(encoding="utf-8")
    unit = (reshaped["out"] / "units" / f"{site.unit_key(ORG_A)}.html").read_text(encoding="utf-8")
    # under the folder holding the mappings: relative to it; anywhere else: the file name
    assert "no such SQLite file srv/etl/var/secret.sqlite: check url (reader …/reader.so)" in unit
    assert "mappings/broken.yaml" in index


def test_local_paths_keeps_urls_and_relative_paths():
    hidden = site._folders_pattern(["/srv/etl"])
    assert site.local_paths("bad /srv/etl/mappings/a.yaml [unit]", hidden) == "bad mappings/a.yaml [unit]"
    assert site.local_paths("sqlite:////data/x/t.sqlite", hidden) == "sqlite:///…/t.sqlite"
    assert site.local_paths("see https://host/a/b and mappings/x.yaml, 2024/01/02", hidden) == \
        "see https://host/a/b and mappings/x.yaml, 2024/01/02"
    assert site.local_paths("open '/home/op/files/a b.pdf' failed", hidden) == "open '…/a b.pdf' failed"


def test_english_is_the_second_language(reshaped, opened, monkeypatch, tmp_path):
    page = opened(reshaped["out_en"] / "index.html")
    assert page.page.get_attribute("html", "lang") == "en"
    assert page.page.text_content("h1") == "Ingestion overview"
    assert page.page.text_content('[data-count="on_time"]').startswith("on time: ")
    unit = opened(reshaped["out_en"] / "units" / f"{site.unit_key(ORG_A)}.html")
    assert "no longer mapped" in unit.page.text_content("details.unmapped-dataset summary")
    monkeypatch.setenv("ETL_REPORT_LANGUAGE", "en")
    path = site.write_overview(tmp_path, [], clock.now())
    assert '<html lang="en">' in path.read_text(encoding="utf-8")
    monkeypatch.setenv("ETL_REPORT_LANGUAGE", "fr")
    with pytest.raises(Exception, match="ETL_REPORT_LANGUAGE='fr': the report speaks zh_CN, en"):
        site.write_overview(tmp_path, [], clock.now())


def test_every_marked_message_is_in_the_catalogues():
    """The .pot is what pybabel extracts now (README's command), and both catalogues hold every
    message; zh_CN translates each one."""
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    locale = PROJECT / "etl" / "report" / "locale"
    method_map = [("**.py", "python")]
    extracted = {m[2] for m in extract_from_dir(str(PROJECT / "etl" / "report"), method_map)}
    with open(locale / "messages.pot", "rb") as f:
        assert {m.id for m in read_po(f) if m.id} == extracted
    marked = set(re.findall(r'\b_\("((?:[^"\\]|\\.)*)"\)', (PROJECT / "etl/report/site.py").read_text(encoding="utf-8")))
    assert marked <= extracted, marked - extracted  # none hidden in an f-string, out of pybabel's sight
    for lang in ("zh_CN", "en"):
        with open(locale / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
            catalog = read_po(f)
        assert {m.id for m in catalog if m.id} == extracted, lang
        if lang == "zh_CN":
            assert [m.id for m in catalog if m.id and (not m.string or m.fuzzy)] == []
