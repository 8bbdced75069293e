"""The checkers of `etl.standard.checks`, tested against numbers built from the authorities' rules, not
from our own code: resident ID numbers from GB 11643's weights and the area codes of GB/T 2260
as python-stdnum's table records them (every era).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers import GB11643_WEIGHTS, gb11643, query, seed
from helpers import every_area_code as area_codes

from etl.common.masking import mask_idcard
from etl.standard import checks


def wrong_check(number: str) -> str:
    return number[:17] + next(c for c in "10X98765432" if c != number[17])


def every_area_code() -> list[str]:
    return sorted(area_codes())


def test_the_weights_are_gb11643s() -> None:
    assert GB11643_WEIGHTS == [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    assert gb11643("11010519491231002") == "11010519491231002X"  # the standard's own example


@pytest.mark.parametrize("number", ["320115198503141237", "320214199003076516"])
def test_an_area_code_created_after_the_birth_year_is_valid(number: str) -> None:
    """江宁区 320115 exists since 2000, 新吴区 320214 since 2015: numbers are assigned at
    registration, often years after birth."""
    assert gb11643(number[:17]) == number
    assert checks.idcard_problems(number) == []
    assert checks.is_valid_idcard(number)


def test_every_area_code_of_any_era_with_any_birth_year_is_valid() -> None:
    codes = every_area_code()
    assert len(codes) > 6000 and "320115" in codes and "320103" in codes  # 白下区, retired 2013
    bad = [n for code in codes for year in range(1930, 2011)
           if not checks.is_valid_idcard(n := gb11643(f"{code}{year}0{1 + year % 9}{10 + year % 19}{year % 1000:03d}"))]
    assert bad == []


def test_a_wrong_check_character_is_named() -> None:
    codes = every_area_code()
    numbers = [wrong_check(gb11643(f"{code}19850314{i % 1000:03d}")) for i, code in enumerate(codes)]
    assert {tuple(checks.idcard_problems(n)) for n in numbers} == {("wrong check character",)}


@pytest.mark.parametrize("birth", ["19900230", "19901301", "19900000", "20230229", "19851332"])
def test_an_impossible_birth_date_is_named(birth: str) -> None:
    number = gb11643(f"320115{birth}123")
    assert checks.idcard_problems(number) == ["no such birth date (characters 7-14, YYYYMMDD)"]


def test_a_birth_date_in_the_future_is_named() -> None:
    number = gb11643("32011520301231123")
    assert checks.idcard_problems(number, today=date(2026, 12, 2)) == [
        "birth date (characters 7-14) is in the future"]
    assert checks.idcard_problems(number, today=date(2031, 1, 1)) == []


@pytest.mark.parametrize("area", ["329999", "000000", "990101", "320199"])
def test_an_area_code_that_never_existed_is_named(area: str) -> None:
    assert area not in every_area_code()
    assert checks.idcard_problems(gb11643(f"{area}19850314123")) == [
        f"unknown area code {area} (never a GB/T 2260 code)"]


@pytest.mark.parametrize("value", ["32011519850314123", "3201151985031412377", "32011519850314123x",
                                   "3201151985031412A7", ""])
def test_a_malformed_number_says_what_an_id_number_looks_like(value: str) -> None:
    assert checks.idcard_problems(value) == ["is not 17 digits and a check character (0-9 or X)"]


def test_every_failing_part_is_named_at_once() -> None:
    number = wrong_check(gb11643("32999919900230123"))
    assert checks.idcard_problems(number) == [
        "wrong check character", "no such birth date (characters 7-14, YYYYMMDD)",
        "unknown area code 329999 (never a GB/T 2260 code)"]


# --- end to end: what loads, what is rejected and why ------------------------------------------


PERSONS_MAPPING = """\
unit: {{orgNo: "91320115MA1R7KX30X", comName: 南京某某化工有限公司}}
source: {{url: "sqlite:///{db}"}}
datasets:
  "03":
    table: person
    key: [id]
    fields:
      psnName: name
      idCardNo: id_no
      isSecChief: {{value: "0"}}
      isSecManager: {{value: "0"}}
      isOpr: {{value: "0"}}
      isRes: {{value: "0"}}
"""


def test_persons_load_by_gb11643_and_rejects_name_the_failing_part(db_url: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from etl.cli import main

    good = {1: "320115198503141237", 2: "320214199003076516", 3: gb11643("32010319620704001"),
            4: gb11643("32011519850314100").lower()}  # 白下区 (retired 2013); a lower-case x
    assert good[4].endswith("x")
    bad = {5: (wrong_check(good[1]), "wrong check character"),
           6: (gb11643("32011519850230123"), "no such birth date (characters 7-14, YYYYMMDD)"),
           7: (gb11643("32999919850314123"), "unknown area code 329999 (never a GB/T 2260 code)")}
    seed(db_url, "CREATE TABLE person (id INTEGER PRIMARY KEY, name VARCHAR(20), id_no VARCHAR(40))",
         "INSERT INTO person VALUES (:id, :name, :id_no)",
         [{"id": i, "name": f"张{i}", "id_no": n} for i, n in {**good, **{i: v[0] for i, v in bad.items()}}.items()])
    mapping = tmp_path / "unit.yaml"
    monkeypatch.setenv("PERSONS_SOURCE", db_url)
    mapping.write_text(PERSONS_MAPPING.format(db="x").replace('url: "sqlite:///x"', "url_env: PERSONS_SOURCE"),
                       encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.sqlite'}"

    assert main(["-q", "run", str(mapping), "--target", target]) == 0
    loaded = {r[0] for r in query(target, 'SELECT "idCardNo" FROM unit_person')}
    rejects = {r[0]: (r[1], r[2]) for r in query(target, 'SELECT "sourceKey", "rule", "message" FROM ingest_reject')}
    assert loaded == {n.upper() for n in good.values()}
    assert set(rejects) == {str(i) for i in bad}
    for i, (number, part) in bad.items():
        rule, message = rejects[str(i)]
        assert rule == "idcard"
        assert message == (f"idCardNo (身份证号码) {mask_idcard(number)!r} is not a valid resident "
                           f"ID number (GB 11643): {part}")
        assert number not in message
        assert number[6:14] not in message.replace("-", "")  # nor the birth date the mask hides


# --- unified social credit codes (GB 32100) -------------------------------------------------

# GB 32100-2015 4.3: code characters 0-9 and the capital letters without I, O, S, V, Z, valued
# 0..30 in that order; weights 3^(i-1) mod 31; the check character makes the sum = 0 (mod 31).
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]


def gb32100(base17: str) -> str:
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(base17, _USCC_WEIGHTS))
    return base17 + _USCC_CHARS[(31 - total % 31) % 31]


def test_the_uscc_weights_are_gb32100s() -> None:
    assert _USCC_WEIGHTS == [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]


def test_every_authority_and_type_character_with_its_check_character_is_valid() -> None:
    codes = [gb32100(f"{a}{t}320115{org}") for a in _USCC_CHARS for t in _USCC_CHARS
             for org in ("MA1R7KX30", "134567890", "Y0000000W")]
    assert [c for c in codes if not checks.is_valid_uscc(c)] == []
    wrong = [c[:17] + next(x for x in _USCC_CHARS if x != c[17]) for c in codes]
    assert [c for c in wrong if checks.is_valid_uscc(c)] == []


@pytest.mark.parametrize("code", ["91320115MA1R7KX30", "91320115MA1R7KX30XX", "9132011SMA1R7KX30X",
                                  "91320115MA1R7KI30X", "9A32O115MA1R7KX30X"])
def test_a_malformed_uscc_is_invalid(code: str) -> None:
    assert not checks.is_valid_uscc(code)


# --- phones (libphonenumber's example numbers for CN) ---------------------------------------


def _examples() -> list[str]:
    import phonenumbers as pn

    types = (pn.PhoneNumberType.FIXED_LINE, pn.PhoneNumberType.MOBILE, pn.PhoneNumberType.TOLL_FREE,
             pn.PhoneNumberType.VOIP, pn.PhoneNumberType.PREMIUM_RATE, pn.PhoneNumberType.UAN,
             pn.PhoneNumberType.SHARED_COST)
    numbers = [n for t in types if (n := pn.example_number_for_type("CN", t)) is not None]
    assert len(numbers) >= 4
    return [pn.format_number(n, pn.PhoneNumberFormat.NATIONAL) for n in numbers]


@pytest.mark.parametrize("number", _examples())
def test_libphonenumbers_example_numbers_are_valid_with_and_without_an_extension(number: str) -> None:
    from etl.standard.clean import Audit, clean_column
    from etl.standard import dataset

    f = dataset("01").field("linkTel")
    for raw in (number, f"{number}转8001"):
        cleaned = clean_column(pd.Series([raw], dtype=object), f, Audit()).iloc[0]
        assert checks.is_valid_phone(cleaned), (raw, cleaned)


@pytest.mark.parametrize("value", ["025-5234567转", "12345", "025-52345678转1234567", "电话"])
def test_what_libphonenumber_refuses_is_invalid(value: str) -> None:
    assert not checks.is_valid_phone(value)


DEPT_MAPPING = """\
unit: {{orgNo: "91320506MA1W3L8P7L", comName: 苏州某某电梯有限公司}}
source: {{url: "sqlite:///{db}"}}
datasets:
  "02":
    table: dept
    key: [id]
    fields:
      deptName: name
      isSecDept: {{value: "0"}}
      dLinkTel: tel
"""


def test_departments_load_phones_with_extensions_and_local_numbers_in_one_spelling(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from etl.cli import main

    tels = {1: "0512-52345678-8001", 2: "52345678", 3: "025-52345678转8001", 4: "13812345678",
            5: "电话待补"}
    seed(db_url, "CREATE TABLE dept (id INTEGER PRIMARY KEY, name VARCHAR(20), tel VARCHAR(40))",
         "INSERT INTO dept VALUES (:id, :name, :tel)", [{"id": i, "name": f"部门{i}", "tel": t} for i, t in tels.items()])
    mapping = tmp_path / "unit.yaml"
    monkeypatch.setenv("DEPT_SOURCE", db_url)
    mapping.write_text(DEPT_MAPPING.format(db="x").replace('url: "sqlite:///x"', "url_env: DEPT_SOURCE"),
                       encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.sqlite'}"

    assert main(["-q", "run", str(mapping), "--target", target]) == 0
    loaded = dict(query(target, 'SELECT "deptName", "dLinkTel" FROM unit_dept'))
    rejects = query(target, 'SELECT "sourceKey", "rule" FROM ingest_reject')
    # orgNo 91320506...: registered in 苏州市 (320500), area code 0512
    assert loaded == {"部门1": "0512-52345678转8001", "部门2": "0512-52345678",
                      "部门3": "025-52345678转8001", "部门4": "13812345678"}
    assert rejects == [("5", "phone")]


# --- warnings are for rows that load ---------------------------------------------------------


def test_a_rejected_row_gets_no_warnings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Overdue (09) and expired (03) are warnings about records that load; a row rejected by a
    rule, or later by a reference to a department the unit does not have, lists only its errors."""
    from helpers import hidden_danger_mapping, hidden_danger_row, write_source

    from etl import pipeline, target

    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    open_ = dict(deal_info="未整改", limit_date="2024-05-16", deal_man=None, deal_date=None,
                 accept_man=None, accept_date=None, accept_info=None)
    write_source(source, "t_hidden_danger", [hidden_danger_row(1, **open_),
                                             hidden_danger_row(2, reg_no="bad", **open_)])
    mapping = hidden_danger_mapping(tmp_path, monkeypatch, source)
    engine = target.connect(f"sqlite:///{tmp_path / 'target.sqlite'}")
    pipeline.run_mapping(engine, mapping, ["09"], mode="full")
    with engine.connect() as conn:
        findings = sorted(conn.exec_driver_sql(
            'SELECT "sourceKey", "rule", "severity" FROM ingest_reject').all())
    engine.dispose()
    assert findings == [("1", "overdue", "warning"), ("2", "regno", "error")]


def test_a_row_rejected_by_a_reference_loses_its_warnings(tmp_path: Path) -> None:
    db = tmp_path / "source.sqlite"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, id_no TEXT, "
                             "dept TEXT, end_date TEXT)")
        conn.exec_driver_sql("CREATE TABLE dept (name TEXT PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO dept VALUES ('安全部')")
        conn.execute(sa.text("INSERT INTO person VALUES (:id, :name, :id_no, :dept, '2020-01-01')"),
                     [{"id": 1, "name": "张三", "id_no": "320115198503141237", "dept": "安全部"},
                      {"id": 2, "name": "李四", "id_no": "320214199003076516", "dept": "不存在的部门"}])
    engine.dispose()
    mapping = tmp_path / "unit.yaml"
    mapping.write_text(PERSONS_MAPPING.format(db=db) + """\
      deptName: dept
      endDate: end_date
  "02":
    table: dept
    key: [name]
    fields:
      deptName: name
      isSecDept: {value: "1"}
""", encoding="utf-8")
    from etl.cli import main

    target = f"sqlite:///{tmp_path / 'target.sqlite'}"
    assert main(["-q", "run", str(mapping), "--target", target]) == 0
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        findings = sorted(conn.exec_driver_sql(
            'SELECT "txCode", "sourceKey", "rule", "severity" FROM ingest_reject').all())
    engine.dispose()
    assert findings == [("03", "1", "expired", "warning"), ("03", "2", "reference", "error")]


# --- places: plausible but odd loads with a warning --------------------------------------------


@pytest.mark.parametrize(("city", "area", "expected"), [
    ("320100", "320115", []),
    ("320100", "320506", [("aeraCode", "division_within")]),
    ("310100", "310101", [("cityCode", "outside_jiangsu")]),
    ("310100", "320115", [("aeraCode", "division_within"), ("cityCode", "outside_jiangsu")]),
])
def test_a_district_outside_its_city_or_a_city_outside_jiangsu_is_a_warning(
        city: str, area: str, expected: list) -> None:
    from etl.standard import validate
    from etl.standard import dataset

    frame = pd.DataFrame({"cityCode": [city], "aeraCode": [area]}, dtype="str")
    for f in dataset("01").fields:
        if f.name not in frame:
            frame[f.name] = pd.Series([None], dtype="str")
    found = validate.warnings(frame, dataset("01"), date(2026, 12, 2))
    assert sorted((f.field, f.rule) for f in found) == sorted(expected)
    assert all(f.severity == validate.WARNING for f in found)
    assert not [f for f in validate.findings(frame, dataset("01")) if f.field in ("cityCode", "aeraCode")]


# --- a unit's checks: lower a rule for known legacy data ---------------------------------------


def _unit_with_checks(tmp_path: Path, checks: str, dataset_checks: str = "") -> Path:
    db = tmp_path / "source.sqlite"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS person")
        conn.exec_driver_sql("CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, id_no TEXT, opr TEXT)")
        conn.execute(sa.text("INSERT INTO person VALUES (:id, :name, :id_no, :opr)"), [
            {"id": 1, "name": "张三", "id_no": "320115198503141237", "opr": "0"},
            {"id": 2, "name": "李四", "id_no": wrong_check("320115198503141237"), "opr": "0"},
            {"id": 3, "name": "王五", "id_no": "320214199003076516", "opr": "1"},   # no certificate
            {"id": 4, "name": "赵六", "id_no": wrong_check("320214199003076516"), "opr": "1"}])
    engine.dispose()
    text = PERSONS_MAPPING.format(db=db).replace('      isOpr: {value: "0"}\n', "      isOpr: opr\n")
    text = text.replace("datasets:\n", f"{checks}datasets:\n") + dataset_checks
    path = tmp_path / "unit.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _outcome(tmp_path: Path, mapping: Path) -> tuple[set, list, tuple]:
    from etl.cli import main

    target = f"sqlite:///{tmp_path / 'target.sqlite'}"
    assert main(["-q", "run", str(mapping), "--target", target]) == 0
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        loaded = {r[0] for r in conn.exec_driver_sql('SELECT "psnName" FROM unit_person')}
        findings = sorted(conn.exec_driver_sql(
            'SELECT "sourceKey", "field", "rule", "severity" FROM ingest_reject').all())
        counts = conn.exec_driver_sql('SELECT "rejected", "warnings", "overridden" FROM ingest_run').one()
    engine.dispose()
    return loaded, findings, tuple(counts)


def test_without_checks_bad_rows_are_rejected(tmp_path: Path) -> None:
    loaded, findings, counts = _outcome(tmp_path, _unit_with_checks(tmp_path, ""))
    assert loaded == {"张三"}
    assert findings == [("2", "idCardNo", "idcard", "error"), ("3", "certNo", "required_when", "error"),
                        ("3", "lcnsKind", "required_when", "error"),
                        ("4", "certNo", "required_when", "error"), ("4", "idCardNo", "idcard", "error"),
                        ("4", "lcnsKind", "required_when", "error")]
    assert counts == (3, 0, 0)


def test_a_unit_lowers_a_rule_to_a_warning_and_switches_others_off(tmp_path: Path) -> None:
    mapping = _unit_with_checks(tmp_path, "checks:\n  idCardNo: {idcard: warning}\n  certNo: off\n",
                                "    checks: {lcnsKind: off}\n")
    loaded, findings, counts = _outcome(tmp_path, mapping)
    assert loaded == {"张三", "李四", "王五", "赵六"}
    assert findings == [("2", "idCardNo", "idcard", "warning"), ("4", "idCardNo", "idcard", "warning")]
    assert counts == (0, 2, 3)  # 李四, 王五 and 赵六 load only thanks to the checks


def test_a_row_with_an_error_left_keeps_only_its_errors(tmp_path: Path) -> None:
    mapping = _unit_with_checks(tmp_path, "checks:\n  idCardNo: {idcard: warning}\n")
    loaded, findings, counts = _outcome(tmp_path, mapping)
    assert loaded == {"张三", "李四"}
    assert ("4", "idCardNo", "idcard", "warning") not in findings
    assert ("2", "idCardNo", "idcard", "warning") in findings
    assert counts == (2, 1, 1)


@pytest.mark.parametrize(("checks", "problem"), [
    ("{psnName: off}", r"\[checks.psnName\] psnName has no rule a mapping may lower"),
    ("{idCardNo: {enum: off}}", r"\[checks.idCardNo\] idCardNo has no rule 'enum' to lower: use idcard"),
    ("{idCardNo: {idcard: error}}", r"\[checks.idCardNo.idcard\] 'error' is not a level: use warning or off"),
    ("{idCardNo: on}", r"'True' is not a level|'on' is not a level"),
    ("{nosuchField: off}", r"\[checks.nosuchField\] 'nosuchField' is not a field of 03"),
])
def test_a_checks_block_that_would_raise_or_miss_a_rule_is_refused(tmp_path: Path, checks: str,
                                                                   problem: str) -> None:
    from etl.common.errors import MappingError
    from etl.mapping import load_mapping

    path = tmp_path / "unit.yaml"
    path.write_text(PERSONS_MAPPING.format(db=tmp_path / "x.sqlite").replace(
        "datasets:\n", f"checks: {checks}\ndatasets:\n"), encoding="utf-8")
    with pytest.raises(MappingError, match=problem):
        load_mapping(path)


def test_check_shows_the_lowered_rules_in_its_coverage_table(tmp_path: Path, capsys) -> None:
    from etl.cli import main

    mapping = _unit_with_checks(tmp_path, "checks:\n  idCardNo: {idcard: warning}\n  certNo: off\n")
    assert main(["check", "--offline", str(mapping)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("idCardNo" in line and "idcard warning" in line for line in lines)
    assert any("certNo" in line and "required_when off" in line for line in lines)
