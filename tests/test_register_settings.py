"""Issue 25: what differs per unit of one system comes from the register. A template declares
its per-unit settings (`per_unit:`), the register gives them as columns, `etl onboard` writes
them where the mapping reads them (`files:` the attachments' base its `file: {}` rules take,
`source.schema` for its tables, `source.timezone`), and a re-run updates what it wrote and
leaves hand edits alone. Real registers (CSV with BOM, GB18030, XLSX), real templates, the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import gb32100

from etl.cli import main
from etl.mapping import discover, load_mapping

ROOT = Path(__file__).resolve().parent.parent
VENDOR = "systems/vendor_ehs.yaml"
VENDOR_TEXT = """\
extends: systems/ehs_demo.yaml
per_unit:
  file_base: {key: files.base, required: true, description: 附件所在目录或 URL}
  schema: source.schema
  timezone: source.timezone
datasets:
  "04":
    fields:
      fileAppendix: {column: file_name, file: {}}   # the unit's files: base
"""


def org(n: int) -> str:
    return gb32100(f"9132011{n:08d}MA")


@pytest.fixture
def mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ETL_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "mappings"
    (folder / "systems").mkdir(parents=True)
    shutil.copy(ROOT / "mappings" / "systems" / "ehs_demo.yaml", folder / "systems" / "ehs_demo.yaml")
    (folder / VENDOR).write_text(VENDOR_TEXT, encoding="utf-8")
    return folder


def write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8-sig") -> Path:
    path.write_bytes("\r\n".join(",".join(r) for r in rows).encode(encoding) + b"\r\n")
    return path


def onboard(register: Path, mappings: Path, *extra: str, extends: str = VENDOR) -> int:
    return main(["onboard", str(register), "--extends", extends, "--mappings-dir", str(mappings), *extra])


def test_chinese_columns_of_a_bom_csv_become_the_units_settings(mappings: Path, tmp_path: Path, capsys) -> None:
    register = write_csv(tmp_path / "units.csv", [
        ["统一社会信用代码", "单位名称", "连接", "附件目录", "模式", "时区", "备注"],
        [org(1), "一号化工", "c1", "/mnt/unit1/docs", "main", "UTC", "一期"],
        [org(2), "二号化工", "c2", "https://files.example.cn/u2", "", "", ""],
    ])
    assert onboard(register, mappings) == 0
    out, err = capsys.readouterr()
    assert "2 unit file(s) written" in out
    assert err == (f"warning: {register}: column '备注' is neither a register column (orgNo, comName, "
                   f"conn_id, url_env) nor a per-unit setting of {VENDOR} (file_base, schema, "
                   f"timezone): ignored\n")
    one, two = load_mapping(mappings / f"{org(1)}.yaml"), load_mapping(mappings / f"{org(2)}.yaml")
    assert one.model.files.base == "/mnt/unit1/docs"
    assert one.datasets["04"].fields["fileAppendix"].file.base == "/mnt/unit1/docs"
    assert one.source_for("04").db_schema == "main" and one.datasets["04"].table == "main.t_rule_doc"
    assert one.source_for("06").timezone == "UTC"
    # a setting left blank is not written: the template's (or the model's) value stands
    assert two.datasets["04"].fields["fileAppendix"].file.base == "https://files.example.cn/u2"
    assert (two.source_for("04").db_schema, two.datasets["04"].table) == (None, "t_rule_doc")
    assert two.source_for("06").timezone == "Asia/Shanghai"
    assert main(["check", "--offline", str(mappings)]) == 0
    assert "2 unit(s): 2 ok, 0 with problems" in capsys.readouterr().out


def test_bad_or_missing_settings_refuse_their_row_alone(mappings: Path, tmp_path: Path, capsys) -> None:
    register = write_csv(tmp_path / "units.csv", [
        ["orgNo", "comName", "url_env", "file_base", "schema", "timezone"],
        [org(1), "一号", "U1", "/mnt/u1", "hz", "Mars/Base"],             # line 2
        [org(2), "二号", "U2", "", "hz", "UTC"],                          # line 3: required
        [org(3), "三号", "U3", "/mnt/u3", "a.b", ""],                     # line 4
        [org(4), "四号", "U4", "https://u:pw@files.example.cn/x", "", ""],  # line 5
        [org(5), "五号", "U5", "/mnt/u5", "hz", "Asia/Shanghai"],
    ], encoding="gb18030")
    assert onboard(register, mappings) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith(f"{register} line 2: timezone (source.timezone): timezone: 'Mars/Base' "
                               f"is not an IANA time zone")
    assert lines[1].startswith(f"{register} line 3: file_base is empty: the template needs it for "
                               f"each unit (files.base: 附件所在目录或 URL)")
    assert lines[2].startswith(f"{register} line 4: schema (source.schema): schema: 'a.b' is not a "
                               f"schema name")
    assert lines[3].startswith(f"{register} line 5: ") and "files.base holds a password" in lines[3]
    assert "pw" not in err and len(lines) == 4
    assert "1 unit file(s) written, 0 unchanged, 4 row(s) refused" in out
    assert [p.name for p in discover(mappings)] == [f"{org(5)}.yaml"]
    m = load_mapping(mappings / f"{org(5)}.yaml")
    assert (m.source_for("01").url_env, m.datasets["01"].table.split(".")[0]) == ("U5", "hz")


def test_an_xlsx_register_with_settings(mappings: Path, tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["统一社会信用代码", "单位名称", "环境变量", "附件路径", "时区"])
    book.active.append([org(1), "一号", "U1", "/srv/附件/一号", "Asia/Urumqi"])
    book.save(tmp_path / "units.xlsx")
    assert onboard(tmp_path / "units.xlsx", mappings) == 0
    m = load_mapping(mappings / f"{org(1)}.yaml")
    assert m.datasets["04"].fields["fileAppendix"].file.base == "/srv/附件/一号"
    assert m.source_for("09").timezone == "Asia/Urumqi"


def test_a_rerun_updates_what_onboard_wrote_and_names_what_it_leaves(mappings: Path, tmp_path: Path,
                                                                     capsys) -> None:
    header = ["orgNo", "comName", "conn_id", "file_base", "schema"]
    register = write_csv(tmp_path / "units.csv", [header, [org(1), "一号", "c1", "/mnt/a", "s1"],
                                                  [org(2), "二号", "c2", "/mnt/b", "s2"],
                                                  [org(3), "三号", "c3", "/mnt/c", "s3"]])
    assert onboard(register, mappings) == 0
    one, two, three = (mappings / f"{org(n)}.yaml" for n in (1, 2, 3))
    assert one.read_text(encoding="utf-8").startswith("# Written by etl onboard from units.csv line 2;")
    edited = two.read_text(encoding="utf-8") + "checks: {certNo: off}\n"  # a hand edit
    two.write_text(edited, encoding="utf-8")
    by_hand = f'extends: {VENDOR}\nunit: {{orgNo: "{org(3)}", comName: 三号}}\nsource: {{conn_id: c3}}\n' \
              f'files: {{base: /mnt/c}}\n'
    three.write_text(by_hand, encoding="utf-8")
    capsys.readouterr()
    write_csv(register, [header, [org(1), "一号", "c1", "/mnt/a2", "s1"], [org(2), "二号", "c2", "/mnt/b2", "s2"],
                         [org(3), "三号", "c3", "/mnt/c2", "s3"], [org(4), "四号", "c4", "/mnt/d", ""]])
    assert onboard(register, mappings) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{two}: left alone: edited by hand since etl onboard wrote it; register line 3 differs: "
        f"remove the file or pass --overwrite to replace it",
        f"{three}: left alone: not written by etl onboard (or by one before it recorded what it "
        f"wrote); register line 4 differs: remove the file or pass --overwrite to replace it"]
    assert f"{one}: updated" in out
    assert "1 unit file(s) written, 0 unchanged, 0 row(s) refused, 1 updated, 2 left alone" in out
    assert load_mapping(one).model.files.base == "/mnt/a2"
    assert two.read_text(encoding="utf-8") == edited and three.read_text(encoding="utf-8") == by_hand
    assert onboard(register, mappings) == 0  # the same register again: nothing to update
    assert "0 unit file(s) written, 2 unchanged, 0 row(s) refused, 0 updated, 2 left alone" in \
        capsys.readouterr().out
    assert onboard(register, mappings, "--overwrite") == 0
    assert "2 updated, 0 left alone" in capsys.readouterr().out
    assert [load_mapping(p).model.files.base for p in (two, three)] == ["/mnt/b2", "/mnt/c2"]


def test_a_file_of_the_onboard_before_hashes_is_recognised(mappings: Path, tmp_path: Path, capsys) -> None:
    """Files an earlier `etl onboard` wrote (no sha256 line) are updated when they are exactly
    what it wrote for the row."""
    register = write_csv(tmp_path / "units.csv", [["orgNo", "comName", "conn_id"], [org(1), "一号", "c1"]])
    path = mappings / f"{org(1)}.yaml"
    path.write_text("# Written by `etl onboard`: this unit's own keys; its datasets come from the "
                    f'template.\nextends: "systems/ehs_demo.yaml"\nunit:\n  orgNo: "{org(1)}"\n  '
                    f'comName: "一号"\nsource:\n  conn_id: "c1"\n', encoding="utf-8")
    assert onboard(register, mappings, extends="systems/ehs_demo.yaml") == 0
    assert "1 updated, 0 left alone" in capsys.readouterr().out
    assert path.read_text(encoding="utf-8").startswith("# Written by etl onboard from units.csv line 2;")


@pytest.mark.parametrize("per_unit, says", [
    ("{schema: source.shema}", "[per_unit.schema] 'source.shema' is not a key a unit may set: use one of"),
    ("{conn: source.conn_id}", "[per_unit.conn] 'source.conn_id' is not a key a unit may set"),
    ("{orgNo: source.schema}", "[per_unit.orgNo] 'orgNo' cannot name a register column"),
    ("{a: source.schema, b: source.schema}", "[per_unit.b] source.schema is also filled by per_unit.a"),
    ("{a: {key: files.base, required: yes}}", "[per_unit.a] required: is true or false"),
    ("[files.base]", "[per_unit] map each setting's name to the mapping key it fills"),
])
def test_a_template_declaring_a_key_no_unit_may_set_is_refused(mappings: Path, tmp_path: Path, capsys,
                                                                per_unit: str, says: str) -> None:
    bad = mappings / "systems" / "bad.yaml"
    bad.write_text(f"extends: systems/ehs_demo.yaml\nper_unit: {per_unit}\n", encoding="utf-8")
    register = write_csv(tmp_path / "units.csv", [["orgNo", "comName", "conn_id"], [org(1), "一号", "c1"]])
    assert onboard(register, mappings, extends="systems/bad.yaml") == 2
    assert f"{bad} {says}" in capsys.readouterr().err and not discover(mappings)
    assert main(["check", "--offline", str(bad)]) == 2
    said = capsys.readouterr()
    assert f"{bad} {says}" in said.out + said.err


def test_a_unit_file_declares_no_per_unit_and_file_rules_need_a_base(mappings: Path, capsys) -> None:
    unit = mappings / "u.yaml"
    unit.write_text(f'extends: {VENDOR}\nunit: {{orgNo: "{org(1)}", comName: 一号}}\nsource: {{conn_id: c}}\n'
                    "per_unit: {schema: source.schema}\n", encoding="utf-8")
    assert main(["check", "--offline", str(unit)]) == 2
    text = capsys.readouterr()
    said = text.out + text.err
    assert "[per_unit] unknown key 'per_unit'" in said
    assert "[datasets.04.fields.fileAppendix.file] file: give exactly one of base" in said


def test_a_units_schema_reads_its_tables_from_a_real_sqlite_source(mappings: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The register's schema qualifies the template's tables: on SQLite, `main` reads the
    demo's rows and a schema the database has not is an error naming it."""
    import sqlalchemy as sa

    from etl.onboarding.demo_data import make_demo_sources
    from etl.source.extract import select_statement

    source = make_demo_sources(tmp_path / "var")["demo_jinling_chem"]
    register = write_csv(tmp_path / "units.csv", [
        ["orgNo", "comName", "url_env", "file_base", "schema", "timezone"],
        [org(1), "一号", "U1", str(tmp_path / "files"), "main", "UTC"],
        [org(2), "二号", "U2", str(tmp_path / "files"), "elsewhere", ""]])
    assert onboard(register, mappings) == 0
    one, two = load_mapping(mappings / f"{org(1)}.yaml"), load_mapping(mappings / f"{org(2)}.yaml")
    engine = sa.create_engine(f"sqlite:///{source}")
    with engine.connect() as conn:
        rows = conn.execute(select_statement(one.datasets["06"])).all()
        assert len(rows) > 0 and one.source_for("06").timezone == "UTC"
        with pytest.raises(sa.exc.OperationalError, match="elsewhere"):
            conn.execute(select_statement(two.datasets["06"]))
    engine.dispose()
