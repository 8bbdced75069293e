"""Onboarding by mapping file, end to end: the demo units' dirty sources on SQLite, PostgreSQL
and MariaDB, asserting row by row what is loaded, how it was normalised, and what was rejected."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from etl import pipeline, standard, target
from etl.mapping import load_mapping
from etl.onboarding import demo_data
from etl.pipeline import transform
from helpers import rows_of

PROJECT = Path(__file__).resolve().parent.parent
UNITS = (demo_data.UNIT_A, demo_data.UNIT_B)

EXPECTED_ERRORS = {
    demo_data.UNIT_A: {("03", "9", "idCardNo", "idcard"), ("03", "17", "idCardNo", "idcard"),
                       ("07", "41", "riskNo", "reference"), ("07", "42", "riskNo", "reference"),
                       ("07", "45", "riskNo", "reference"), ("09", "15", "dealDate", "date_order"),
                       ("09", "23", "checkDate", "date")},
    demo_data.UNIT_B: {("03", "RY0007", "idCardNo", "idcard"), ("03", "RY0022", "idCardNo", "idcard"),
                       ("07", "WXY00041", "riskNo", "reference"),
                       ("09", "YHPC000012", "dealDate", "date_order"),
                       ("09", "YHPC000020", "dealDate", "date")},
}


def _copy_sqlite_to(sqlite_path: Path, url: str) -> None:
    """The demo tables, same names and values, in another database engine."""
    engine = sa.create_engine(url)
    with sqlite3.connect(sqlite_path) as src:
        tables = [r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            frame = pd.read_sql(f'SELECT * FROM "{t}"', src)
            blobs = {c: sa.LargeBinary for c in frame.columns  # attachments' bytes stay bytes
                     if any(isinstance(v, bytes) for v in frame[c])}
            frame.to_sql(t, engine, index=False, if_exists="replace", dtype=blobs)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def loaded(request, tmp_path, monkeypatch):
    """Both demo units ingested from sources of one kind into a SQLite target."""
    paths = demo_data.make_demo_sources(tmp_path / "var")
    results, mappings = [], {}
    engine = target.connect(f"sqlite:///{tmp_path / 'target.sqlite'}")
    for unit in UNITS:
        if request.param == "sqlite":
            url = f"sqlite:///{paths[unit]}"
        else:
            url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}[request.param])
            if unit == demo_data.UNIT_B:  # one throwaway database per unit
                from servers import create_database

                server = request.getfixturevalue(
                    {"postgresql": "pg_server", "mariadb": "mariadb_server"}[request.param])
                url = create_database(server)
            _copy_sqlite_to(paths[unit], url)
        env = f"DEMO_{unit.upper()}_URL"
        monkeypatch.setenv(env, url)
        text = (PROJECT / "mappings" / f"{unit}.yaml").read_text(encoding="utf-8")
        text = text.replace(f"url: sqlite:///var/{unit}.sqlite", f"url_env: {env}")
        text = text.replace("base: var/", f"base: {tmp_path / 'var'}/")  # the unit's attachments
        path = tmp_path / f"{unit}.yaml"
        path.write_text(text, encoding="utf-8")
        mappings[unit] = load_mapping(path)
        results += pipeline.run_mapping(engine, mappings[unit])
    engine.dispose()
    return f"sqlite:///{tmp_path / 'target.sqlite'}", results, mappings


def by_key(url: str, table: str, org: str, mapping, tx: str, key_field: str) -> dict:
    return {r[key_field]: r for r in rows_of(url, table) if r["orgNo"] == org}


def test_every_dataset_of_both_units_runs_and_balances(loaded):
    _, results, _ = loaded
    assert len(results) == 18
    for r in results:
        assert r.status == "success", r.message
        assert r.counts.balanced(), (r.mapping, r.tx_code, r.counts)
        assert r.counts.inserted > 0


def test_exactly_the_planted_errors_are_rejected_with_their_rule(loaded):
    url, _, mappings = loaded
    for unit, m in mappings.items():
        got = {(r["txCode"], r["sourceKey"], r["field"], r["rule"]) for r in rows_of(url, "ingest_reject")
               if r["orgNo"] == m.unit.orgNo and r["severity"] == "error"}
        assert got == EXPECTED_ERRORS[unit]


def test_duplicates_are_dropped_and_recorded(loaded):
    url, results, mappings = loaded
    dup = {(r["orgNo"], r["txCode"], r["sourceKey"], r["rule"]) for r in rows_of(url, "ingest_reject")
           if r["severity"] == "duplicate"}
    a, b = mappings[demo_data.UNIT_A].unit.orgNo, mappings[demo_data.UNIT_B].unit.orgNo
    assert dup == {(a, "03", "20", "duplicate"), (a, "06", "8", "duplicate"), (a, "07", "13", "duplicate"),
                   (a, "09", "40", "duplicate"), (a, "09", "31", "superseded"),
                   (b, "03", "RY0018", "duplicate"), (b, "07", "WXY00025", "duplicate"),
                   (b, "09", "YHPC000040", "duplicate"), (b, "06", "FXD-2023-0006", "superseded")}


def test_the_newer_version_of_a_record_wins(loaded):
    url, _, mappings = loaded
    a = mappings[demo_data.UNIT_A].unit.orgNo
    b = mappings[demo_data.UNIT_B].unit.orgNo
    danger = [r for r in rows_of(url, "hidden_danger") if r["orgNo"] == a]
    newer = {r["dealInfo"] for r in danger if r["ID"] == transform.add_identity(
        pd.DataFrame({"_key": ["31"], **{f: [None] for f in standard.dataset("09").field_names}}),
        a, "09")["ID"][0]}
    assert newer == {"已整改"}
    point = [r for r in rows_of(url, "risk_point") if r["orgNo"] == b and r["riskNo"] == "FXD-2023-0006"]
    assert [p["remainriskLevel"] for p in point] == ["低风险"]


def test_values_are_normalised_to_the_standards_spelling(loaded):
    url, _, mappings = loaded
    a = mappings[demo_data.UNIT_A].unit.orgNo
    b = mappings[demo_data.UNIT_B].unit.orgNo
    units = {r["orgNo"]: r for r in rows_of(url, "unit_info")}
    assert (units[a]["cityCode"], units[a]["aeraCode"]) == ("320100", "320115")  # names in the source
    assert (units[b]["cityCode"], units[b]["aeraCode"]) == ("320500", "320506")  # codes in the source
    assert units[b]["comName"] == units[b]["comName"].strip()
    for r in rows_of(url, "risk_point"):
        assert r["controlLevel"] in ("公司（厂）级", "部门（装置、车间）级", "岗位（班组）级")
        assert r["inherentriskLevel"].endswith("风险")
        if r["accidentType"]:
            assert "," not in r["accidentType"] and "/" not in r["accidentType"]
        assert "," not in r["dutyMan"] and "、" not in r["dutyMan"]
        assert r["riskType"] in (0, 1)
    for r in rows_of(url, "unit_person"):
        assert r["idCardNo"].isascii() and r["idCardNo"] == r["idCardNo"].strip()
        assert r["psnName"] == r["psnName"].strip()
        assert r["isOpr"] in (0, 1)
    for r in rows_of(url, "unit_dept"):
        assert r["dParentName"]  # the top department hangs under the unit
        assert r["dLinkTel"] is None or " " not in r["dLinkTel"]
    for r in rows_of(url, "hidden_danger"):
        assert len(str(r["checkDate"])) == 10 and str(r["checkDate"])[4] == "-"
        if r["dealInfo"] == "未整改":
            assert r["acceptInfo"] is None


def test_values_the_standard_accepts_load_in_its_spelling(loaded):
    """Issue 12's cases in the demo: an ID number whose area code is younger than its holder, a
    landline with an extension, a local number without area code (Suzhou's 0512)."""
    url, _, mappings = loaded
    b = mappings[demo_data.UNIT_B].unit.orgNo
    persons = {r["idCardNo"] for r in rows_of(url, "unit_person") if r["orgNo"] == b}
    assert "320214199003076516" in persons
    tels = {r["deptName"]: r["dLinkTel"] for r in rows_of(url, "unit_dept") if r["orgNo"] == b}
    assert (tels["安装工程部"], tels["起重设备部"]) == ("0512-65283305转8001", "0512-65283306")


def test_soft_deleted_rows_are_not_loaded(loaded):
    url, _, mappings = loaded
    a = mappings[demo_data.UNIT_A].unit.orgNo
    assert "FX202400000021" not in {r["riskNo"] for r in rows_of(url, "risk_point") if r["orgNo"] == a}


def test_cleaning_is_audited_with_masked_examples(loaded):
    url, _, _ = loaded
    audit = rows_of(url, "ingest_audit")
    rules = {(r["field"], r["rule"]) for r in audit}
    assert ("cityCode", "division_code") in rules and ("isSecDept", "flag") in rules
    ids = [r for r in audit if r["field"] == "idCardNo"]
    assert ids and all("*" in r["examples"] for r in ids)
