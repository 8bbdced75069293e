"""The register (`etl onboard`): one `<orgNo>.yaml` per good row, each extending the template;
invalid, duplicate and already-onboarded rows refused by line number; existing files kept unless
--overwrite; CSV in UTF-8 (with or without BOM) or GB18030, XLSX; Chinese headers. OrgNos here
are made by GB 32100's own rule (helpers.gb32100), not by the code under test."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from helpers import gb32100

from etl.cli import main
from etl.mapping import discover, load_mapping

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "systems/ehs_demo.yaml"


def org(n: int) -> str:
    return gb32100(f"9132011{n:08d}MA")


def wrong_check(code: str) -> str:
    return code[:-1] + ("1" if code[-1] != "1" else "2")


@pytest.fixture
def mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ETL_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "mappings"
    (folder / "systems").mkdir(parents=True)
    shutil.copy(ROOT / "mappings" / TEMPLATE, folder / TEMPLATE)
    return folder


def write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    path.write_bytes("\r\n".join(",".join(r) for r in rows).encode(encoding) + b"\r\n")
    return path


def onboard(register: Path, mappings: Path, *extra: str) -> int:
    return main(["onboard", str(register), "--extends", TEMPLATE, "--mappings-dir", str(mappings), *extra])


def test_valid_rows_become_private_unit_files_that_check(mappings: Path, tmp_path: Path, capsys) -> None:
    register = write_csv(tmp_path / "units.csv", [
        ["orgNo", "comName", "conn_id", "url_env"],
        [org(1), "南京一号化工有限公司", "unit_one", ""],
        [org(2), "\"苏州二号: 电梯 #1\"", "", "UNIT_TWO_URL"],
    ])
    assert onboard(register, mappings) == 0
    assert "2 unit file(s) written, 0 unchanged, 0 row(s) refused" in capsys.readouterr().out
    one, two = load_mapping(mappings / f"{org(1)}.yaml"), load_mapping(mappings / f"{org(2)}.yaml")
    assert (one.unit.orgNo, one.unit.comName, one.source_for("06").conn_id) == (
        org(1), "南京一号化工有限公司", "unit_one")
    assert two.unit.comName == "苏州二号: 电梯 #1" and two.source_for("06").url_env == "UNIT_TWO_URL"
    assert one.datasets == load_mapping(ROOT / "mappings" / "demo_jinling_chem.yaml").datasets
    assert one.templates[0][0] == TEMPLATE
    for p in (mappings / f"{org(1)}.yaml", mappings / f"{org(2)}.yaml"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert not [p for p in mappings.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert main(["check", "--offline", str(mappings)]) == 0
    assert "2 unit(s): 2 ok, 0 with problems" in capsys.readouterr().out


def test_invalid_duplicate_and_onboarded_rows_are_refused_by_line(mappings: Path, tmp_path: Path,
                                                                   capsys) -> None:
    (mappings / "南京老单位.yaml").write_text(
        f'extends: {TEMPLATE}\nunit: {{orgNo: "{org(9)}", comName: 老单位}}\nsource: {{conn_id: old}}\n',
        encoding="utf-8")
    register = write_csv(tmp_path / "units.csv", [
        ["统一社会信用代码", "单位名称", "连接"],
        [org(1), "一号", "c1"],
        [wrong_check(org(2)), "二号", "c2"],                 # line 3
        [org(3)[:17], "三号", "c3"],                         # line 4
        [org(1).lower(), "一号又一行", "c1b"],                # line 5: the same unit
        [org(9), "老单位", "old"],                           # line 6: in 南京老单位.yaml
        [org(4), "", "c4"],                                   # line 7
        [org(5), "五号", "bad id!"],                          # line 8
        ["", "", ""],                                         # an empty line: skipped
        [org(6), "六号", "c6"],
    ])
    assert onboard(register, mappings) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0] == (f"{register} line 3: orgNo {wrong_check(org(2))} check character wrong: "
                        f"{wrong_check(org(2))[-1]} where GB 32100 gives {org(2)[-1]}: copy the code "
                        f"again from the unit's licence")
    assert lines[1].startswith(f"{register} line 4: orgNo {org(3)[:17]} has 17 characters, not 18")
    assert lines[2] == f"{register} line 5: orgNo {org(1)} is also on line 2: keep one row per unit"
    assert lines[3].startswith(f"{register} line 6: orgNo {org(9)} is already onboarded in "
                               f"{mappings / '南京老单位.yaml'}")
    assert lines[4].startswith(f"{register} line 7: comName is empty")
    assert lines[5].startswith(f"{register} line 8: conn_id 'bad id!' is not an Airflow connection id")
    assert len(lines) == 6
    assert "2 unit file(s) written, 0 unchanged, 6 row(s) refused" in out
    assert sorted(p.name for p in discover(mappings)) == sorted(
        [f"{org(1)}.yaml", f"{org(6)}.yaml", "南京老单位.yaml"])  # the good rows are written


def test_files_as_written_are_updated_hand_edited_kept_unless_overwrite(mappings: Path, tmp_path: Path,
                                                                       capsys) -> None:
    """Issue 25: a changed register updates the files onboard wrote (their first line's sha256
    says they are still as written); a file edited by hand since is left alone and named,
    exit 0 (no row was refused), until --overwrite."""
    register = write_csv(tmp_path / "units.csv", [["orgNo", "comName", "conn_id"], [org(1), "一号", "c1"]])
    assert onboard(register, mappings) == 0
    path = mappings / f"{org(1)}.yaml"
    assert onboard(register, mappings) == 0  # again: unchanged
    assert "0 unit file(s) written, 1 unchanged" in capsys.readouterr().out
    write_csv(register, [["orgNo", "comName", "conn_id"], [org(1), "一号", "c1_new"]])
    assert onboard(register, mappings) == 0
    out = capsys.readouterr().out
    assert f"{path}: updated" in out and "1 updated, 0 left alone" in out
    assert load_mapping(path).source_for("06").conn_id == "c1_new"
    edited = path.read_text(encoding="utf-8").replace('"c1_new"', '"c1_by_hand"')
    path.write_text(edited, encoding="utf-8")
    write_csv(register, [["orgNo", "comName", "conn_id"], [org(1), "一号", "c1_newer"]])
    assert onboard(register, mappings) == 0
    out, err = capsys.readouterr()
    assert err == (f"{path}: left alone: edited by hand since etl onboard wrote it; register line 2 "
                   f"differs: remove the file or pass --overwrite to replace it\n")
    assert "0 updated, 1 left alone" in out and path.read_text(encoding="utf-8") == edited
    assert onboard(register, mappings, "--overwrite") == 0
    assert load_mapping(path).source_for("06").conn_id == "c1_newer"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("encoding", ["gb18030", "utf-8-sig", "utf-8"])
def test_csv_as_excel_in_china_saves_it(mappings: Path, tmp_path: Path, encoding: str) -> None:
    register = write_csv(tmp_path / "单位名册.csv", [
        ["统一社会信用代码", "单位名称", "环境变量", "备注"],
        [org(1), "南京市江宁区某某锅炉厂", "JN_URL", "一期"],
        [org(2), "徐州𠀋化工有限公司", "XZ_URL", ""],
    ], encoding)
    assert onboard(register, mappings) == 0
    m = load_mapping(mappings / f"{org(1)}.yaml")
    assert m.unit.comName == "南京市江宁区某某锅炉厂" and m.source_for("01").url_env == "JN_URL"
    if encoding != "utf-8":  # GB18030 holds CJK Extension B too
        assert load_mapping(mappings / f"{org(2)}.yaml").unit.comName == "徐州𠀋化工有限公司"


def test_xlsx_register(mappings: Path, tmp_path: Path, capsys) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["统一社会信用代码", "单位名称", "连接"])
    sheet.append([org(1), "一号", "c1"])
    sheet.append([None, None, None])
    sheet.append([wrong_check(org(2)), "二号", "c2"])  # row 4
    sheet.append([913201150000000000, "数字", "c3"])    # row 5: Excel held the code as a number
    book.save(tmp_path / "units.xlsx")
    assert onboard(tmp_path / "units.xlsx", mappings) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{tmp_path / 'units.xlsx'} line 4: orgNo {wrong_check(org(2))} check character wrong")
    assert err[1].startswith(f"{tmp_path / 'units.xlsx'} line 5: orgNo 913201150000000000")
    assert err[1].endswith("(Excel held it as a number: format the column as text)")
    assert [p.name for p in discover(mappings)] == [f"{org(1)}.yaml"]


@pytest.mark.parametrize("extends, says", [
    ("../outside.yaml", "leaves the mappings folder"),
    ("/tmp/x.yaml", "is an absolute path"),
    ("systems/none.yaml", "no such template"),
])
def test_a_bad_template_writes_nothing(mappings: Path, tmp_path: Path, capsys, extends: str, says: str) -> None:
    register = write_csv(tmp_path / "units.csv", [["orgNo", "comName", "conn_id"], [org(1), "一号", "c1"]])
    assert main(["onboard", str(register), "--extends", extends, "--mappings-dir", str(mappings)]) == 2
    assert says in capsys.readouterr().err and not discover(mappings)


def test_a_unit_file_or_a_broken_template_is_not_extended(mappings: Path, tmp_path: Path, capsys) -> None:
    register = write_csv(tmp_path / "units.csv", [["orgNo", "comName", "conn_id"], [org(1), "一号", "c1"]])
    shutil.copy(ROOT / "mappings" / "demo_suzhou_lift.yaml", mappings / "systems" / "lift.yaml")
    assert main(["onboard", str(register), "--extends", "systems/lift.yaml", "--mappings-dir",
                 str(mappings)]) == 2
    assert "names a unit (it has unit:)" in capsys.readouterr().err
    (mappings / TEMPLATE).write_text("datasets:\n  \"06\": {table: t, key: id, fields: {riskTyp: x}}\n",
                                     encoding="utf-8")
    assert onboard(register, mappings) == 2
    err = capsys.readouterr().err
    assert "the template does not make a valid mapping" in err and "'riskTyp' is not a field" in err
    assert not discover(mappings)


def test_missing_columns_are_named(mappings: Path, tmp_path: Path, capsys) -> None:
    register = write_csv(tmp_path / "units.csv", [["单位名称", "连接"], ["一号", "c1"]])
    assert onboard(register, mappings) == 2
    assert f"{register} line 1: no column orgNo" in capsys.readouterr().err


def test_a_thousand_rows_become_a_thousand_valid_unit_files(mappings: Path, tmp_path: Path, capsys) -> None:
    rows = [["orgNo", "comName", "conn_id"]] + [[org(n), f"江苏第{n}号化工有限公司", f"unit_{n}"]
                                                for n in range(1000)]
    register = write_csv(tmp_path / "units.csv", rows)
    assert onboard(register, mappings) == 0
    assert len(discover(mappings)) == 1000
    capsys.readouterr()
    assert main(["check", "--offline", str(mappings)]) == 0
    out = capsys.readouterr().out
    assert "1000 unit(s): 1000 ok, 0 with problems" in out and "1000 mapping(s) valid" in out
    assert out.count(" ok\n") == 1000


def test_onboard_has_help(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["onboard", "--help"])
    assert e.value.code == 0
    assert "Exit 2 when any row was refused" in capsys.readouterr().out


def test_the_template_source_settings_are_kept(mappings: Path, tmp_path: Path) -> None:
    """A template may set how its system's sources are read (timezone, timeouts): a unit file
    adds only its connection."""
    (mappings / "systems" / "utc.yaml").write_text(
        "extends: systems/ehs_demo.yaml\nsource: {timezone: UTC, statement_timeout_s: 600}\n",
        encoding="utf-8")
    register = write_csv(tmp_path / "units.csv", [["orgNo", "comName", "url_env"], [org(1), "一号", "U1"]])
    assert main(["onboard", str(register), "--extends", "systems/utc.yaml", "--mappings-dir",
                 str(mappings)]) == 0
    source = load_mapping(mappings / f"{org(1)}.yaml").source_for("06")
    assert (source.url_env, source.timezone, source.statement_timeout_s) == ("U1", "UTC", 600)


def test_a_template_naming_a_connection_or_a_second_database_writes_nothing(
        mappings: Path, tmp_path: Path, capsys) -> None:
    """A register gives each unit one connection: a template naming a connection of its own is
    refused (every unit would read it), and one whose dataset lives in a second database of each
    unit (`source: {}`) is valid but needs unit files written by hand."""
    register = write_csv(tmp_path / "units.csv", [["orgNo", "comName", "conn_id"], [org(1), "一号", "c1"]])
    shared = mappings / "systems" / "shared.yaml"
    shared.write_text(f"extends: {TEMPLATE}\nsource: {{conn_id: vendor_cloud}}\n", encoding="utf-8")
    assert main(["onboard", str(register), "--extends", "systems/shared.yaml", "--mappings-dir",
                 str(mappings)]) == 2
    err = capsys.readouterr().err
    assert f"{shared} [source.conn_id] a template names no connection" in err
    two = mappings / "systems" / "two_db.yaml"
    two.write_text(f'extends: {TEMPLATE}\ndatasets:\n  "07": {{source: {{}}}}\n', encoding="utf-8")
    assert main(["check", "--offline", str(two)]) == 0  # valid: each unit names 07's database
    capsys.readouterr()
    assert main(["onboard", str(register), "--extends", "systems/two_db.yaml", "--mappings-dir",
                 str(mappings)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: --extends systems/two_db.yaml: dataset(s) 07 of the template live "
                           "in a database of their own")
    assert not discover(mappings)


# --- a register is bounded by what it expands to (issue 23) -------------------------------------------

NS_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
NS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
NS_PKG = "http://schemas.openxmlformats.org/package/2006/relationships"
CT = "application/vnd.openxmlformats-officedocument.spreadsheetml."
MEMORY = 1_500_000_000  # bytes of address space `etl onboard` may not get past


def xlsx_by_hand(path: Path, rows_xml: str, parts: dict[str, str] | None = None,
                 overrides: dict[str, str] | None = None, big: tuple[str, bytes, bytes, int] | None = None) -> Path:
    """A real workbook written part by part, as a zip: `rows_xml` is the first sheet's
    <sheetData>; `big` = (part, head, tail, n): a part of `head`, n MiB of "A" and `tail`,
    deflated as it is written (a 1 GB part makes a ~1 MB file), in place of the sheet or the
    shared strings when it is one of them."""
    import zipfile

    types = {"/xl/workbook.xml": CT + "sheet.main+xml", "/xl/worksheets/sheet1.xml": CT + "worksheet+xml",
             "/xl/sharedStrings.xml": CT + "sharedStrings+xml", **(overrides or {})}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://'
                   'schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" '
                   'ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default '
                   'Extension="xml" ContentType="application/xml"/>' + "".join(
                       f'<Override PartName="{k}" ContentType="{v}"/>' for k, v in types.items()) + "</Types>")
        z.writestr("_rels/.rels", f'<Relationships xmlns="{NS_PKG}"><Relationship Id="rId1" Type="{NS_REL}/'
                   'officeDocument" Target="xl/workbook.xml"/></Relationships>')
        z.writestr("xl/workbook.xml", f'<workbook xmlns="{NS_MAIN}" xmlns:r="{NS_REL}"><sheets><sheet '
                   'name="units" sheetId="1" r:id="rId1"/></sheets></workbook>')
        z.writestr("xl/_rels/workbook.xml.rels", f'<Relationships xmlns="{NS_PKG}"><Relationship Id="rId1" '
                   f'Type="{NS_REL}/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" '
                   f'Type="{NS_REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>')
        if not big or big[0] != "xl/worksheets/sheet1.xml":
            z.writestr("xl/worksheets/sheet1.xml", f'<worksheet xmlns="{NS_MAIN}"><sheetData>{rows_xml}'
                       '</sheetData></worksheet>')
        for name, text in (parts or {}).items():
            z.writestr(name, text)
        if not big or big[0] != "xl/sharedStrings.xml":
            z.writestr("xl/sharedStrings.xml", f'<sst xmlns="{NS_MAIN}"/>')
        if big:
            name, head, tail, mib = big
            with z.open(name, "w", force_zip64=True) as f:
                f.write(head)
                chunk = b"A" * (1 << 20)
                for _ in range(mib):
                    f.write(chunk)
                f.write(tail)
    return path


def cells(row: int, *values: str) -> str:
    return f'<row r="{row}">' + "".join(f'<c r="{chr(65 + i)}{row}" t="inlineStr"><is><t>{v}</t></is></c>'
                                         for i, v in enumerate(values)) + "</row>"


HEADER = cells(1, "orgNo", "comName", "conn_id")
STRINGS = (b'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="' + NS_MAIN.encode() + b'"><si><t>', b"</t></si></sst>")


def test_a_1_mb_xlsx_inflating_to_1_gb_is_refused_unread_in_bounded_memory(mappings: Path, tmp_path: Path) -> None:
    """The attack: one shared string of 1 GB, deflated into a ~1 MB workbook, ended in a
    MemoryError traceback. Now the zip's declared sizes refuse it before openpyxl reads a byte,
    in a process that may not use 1.5 GB."""
    import resource
    import subprocess
    import sys
    import time

    row = ('<row r="2"><c r="A2" t="s"><v>0</v></c><c r="B2" t="inlineStr"><is><t>一号</t></is></c>'
           '<c r="C2" t="inlineStr"><is><t>c1</t></is></c></row>')  # A2: the 1 GB shared string
    bomb = xlsx_by_hand(tmp_path / "units.xlsx", HEADER + row, big=("xl/sharedStrings.xml", *STRINGS, 1024))
    assert bomb.stat().st_size < 1_500_000

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "etl", "onboard", str(bomb), "--extends", TEMPLATE,
                           "--mappings-dir", str(mappings)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, preexec_fn=limit)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr[-2000:]
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {bomb}: expands to 1,073,7") and "more than 160,000,000" in line
    assert "'xl/sharedStrings.xml' alone to 1,073,7" in line
    assert time.monotonic() - start < 30 and not discover(mappings)


@pytest.mark.parametrize("what, says", [
    ("styles", "its part 'xl/styles.xml' expands to 9,437,"),
    ("strings under a worksheet's name", "its part 'xl/worksheets/sheet2.xml' expands to 68,157,"),
    ("a row numbered past Excel's last", "more than 1,048,576 lines"),
    ("a cell in column XFD", "line 2: more than 1,000 columns"),
    ("rows padded to 1,000 cells", "more than 10,000,000 cells in all"),
    ("a cell of 100 MiB inline", "line 2: a cell of more than 32,767 characters"),
    ("a cell's text in rich-text runs", "line 2: a cell of more than 32,767 characters"),
])
def test_what_a_register_expands_to_is_bounded(mappings: Path, tmp_path: Path, capsys, what: str,
                                               says: str) -> None:
    """Parts openpyxl reads whole (styles, shared strings: typed by [Content_Types].xml, not by
    their names) are bounded by their declared size; rows, columns and cells while reading. Each
    is one line and exit 2, and nothing is written although the register's first unit is good."""
    good = cells(2, org(1), "一号", "c1")
    if what == "styles":
        path = xlsx_by_hand(tmp_path / "u.xlsx", HEADER + good, big=(
            "xl/styles.xml", f'<styleSheet xmlns="{NS_MAIN}"><!--'.encode(), b"--></styleSheet>", 9))
    elif what.startswith("strings"):
        path = xlsx_by_hand(tmp_path / "u.xlsx", HEADER + good, overrides={
            "/xl/worksheets/sheet2.xml": CT + "sharedStrings+xml"}, big=("xl/worksheets/sheet2.xml", *STRINGS, 65))
    elif what.startswith("a row"):
        path = xlsx_by_hand(tmp_path / "u.xlsx", HEADER + good + cells(2_000_000, org(2), "二号", "c2"))
    elif what == "a cell of 100 MiB inline":  # a sheet is exempt from the part bound, its cells are not
        path = xlsx_by_hand(tmp_path / "u.xlsx", "", big=("xl/worksheets/sheet1.xml", (
            f'<worksheet xmlns="{NS_MAIN}"><sheetData>{HEADER}<row r="2"><c r="A2" t="inlineStr"><is><t>'
        ).encode(), b"</t></is></c></row></sheetData></worksheet>", 100))
        assert path.stat().st_size < 1_000_000
    elif what.startswith("a cell's text"):  # no one run is long, the cell is
        path = xlsx_by_hand(tmp_path / "u.xlsx", HEADER + '<row r="2"><c r="A2" t="inlineStr"><is>' + "".join(
            f"<r><t>{'A' * 10_000}</t></r>" for _ in range(4)) + "</is></c></row>" + good.replace(
            'r="2"', 'r="3"').replace("2\"", "3\""))
    elif what.startswith("a cell"):
        path = xlsx_by_hand(tmp_path / "u.xlsx", HEADER + good.replace(
            "</row>", '<c r="XFD2" t="inlineStr"><is><t>x</t></is></c></row>'))
    else:
        path = xlsx_by_hand(tmp_path / "u.xlsx", HEADER + good + "".join(
            f'<row r="{n}"><c r="ALL{n}" t="inlineStr"><is><t>x</t></is></c></row>' for n in range(3, 10_003)))
    assert onboard(path, mappings) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}") and says in line, line
    assert not discover(mappings)


@pytest.mark.parametrize("what, says", [
    ("blank lines", "more than 1,048,576 lines"),
    ("wide row", "line 3: more than 1,000 columns"),
    ("one 40 MB line", "line 3: a field of more than 131,072 characters"),
    ("a quote never closed", "line 3: a field of more than 131,072 characters"),
    ("a 40,000-character cell", "line 3: a cell of more than 32,767 characters"),
])
def test_a_csv_register_is_bounded_by_lines_and_columns(mappings: Path, tmp_path: Path, capsys, what: str,
                                                        says: str) -> None:
    rows = [["orgNo", "comName", "conn_id"], [org(1), "一号", "c1"]]
    path = write_csv(tmp_path / "units.csv", rows)
    tail = {"blank lines": "\r\n" * 1_100_000,
            "wide row": ",".join([org(2), "二号", "c2"] + ["x"] * 1000),
            "one 40 MB line": "x" * 40_000_000,  # no newline, no comma: one field
            "a quote never closed": f'{org(2)},"二号,c2\r\n' + f"{org(3)},三号,c3\r\n" * 10_000,
            "a 40,000-character cell": f"{org(2)},{'二' * 40_000},c2\r\n"}[what]
    with open(path, "a", encoding="utf-8") as f:
        f.write(tail)
    assert onboard(path, mappings) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}") and says in line, line
    assert not discover(mappings)
