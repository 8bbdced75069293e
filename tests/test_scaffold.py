"""`etl scaffold`: a draft mapping from a source's catalogue, measured against hand-written truths
(tests/scaffold_schemas) on SQLite, PostgreSQL and MariaDB; the URL never shown; TODO lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from pypinyin import Style, lazy_pinyin

import scaffold_schemas as schemas
from etl import standard
from etl.cli import main
from etl.mapping import load_mapping
from etl.onboarding import scaffold
from etl.onboarding.demo_data import make_demo_sources
from etl.source.connect import read_only

# Floors a little under what the benchmark measures (benchmarks/scaffold_accuracy.py: 96-100%
# recall and 98.8-100% precision per schema tuned on; the held-out schema 91.5% and 97.4%), so a
# change that loses fields fails here. vendor_dict, held out until issue 25's second pass
# (70.7% recall, 85.3% precision as it came), is tuned on since and held to the same floors.
RECALL_FLOOR = 0.9
HELD_OUT_RECALL_FLOOR = 0.85
PRECISION_FLOOR = 0.95
# Value maps from dictionaries (issue 25): on the schemas tuned on every expected map is proposed
# (vendor_dev 15, vendor_dict 21) and 45 of 46 and 65 of 65 entries right (riskType's 作业活动
# has no standard word); on every schema no map marked high has a wrong or missing entry.
VALUES_RECALL_FLOOR = 0.9
WITH_VALUES = tuple(n for n in (*schemas.WRITTEN, *schemas.HELD_OUT) if schemas.values_truth(n))


def _source(name: str, tmp_path: Path) -> str:
    if name in schemas.DEMO:
        return f"sqlite:///{make_demo_sources(tmp_path / 'demo')[name]}"
    url = f"sqlite:///{tmp_path / name}.sqlite"
    schemas.build(name, url)
    return url


def _plan(url: str) -> list[scaffold.DatasetDraft]:
    engine = sa.create_engine(url)
    try:
        with read_only(engine) as conn:
            return scaffold.scaffold(conn)
    finally:
        engine.dispose()


def _assert_measured(name: str, url: str) -> schemas.Score:
    s = schemas.measure(_plan(url), schemas.truth(name))
    shown = "; ".join(f"{w[0]}.{w[1]}->{w[2]} ({w[3]}), truth {w[5]}" for w in s.wrong_list)
    assert s.truth >= 70, name  # the truth covers most of the standard
    assert s.wrong_high == 0, f"{name}: a wrong guess marked high: {shown}"
    floor = HELD_OUT_RECALL_FLOOR if name in schemas.HELD_OUT else RECALL_FLOOR
    assert s.recall >= floor, f"{name}: recall {s.recall:.1%}: {shown}"
    assert s.precision >= PRECISION_FLOOR, f"{name}: precision {s.precision:.1%}: {shown}"
    return s


def _assert_values(name: str, url: str) -> schemas.ValuesScore:
    v = schemas.measure_values(_plan(url), schemas.values_truth(name))
    shown = "; ".join(f"{w[0]}.{w[1]} {w[2]!r}: {w[3]!r}, truth {w[4]!r}" for w in v.wrong_list)
    assert v.wrong_high == 0, f"{name}: a wrong value map marked high: {shown}"
    if name not in schemas.HELD_OUT:
        assert v.proposed == v.expected, f"{name}: {v.proposed} of {v.expected} maps: {shown}"
        assert v.recall >= VALUES_RECALL_FLOOR, f"{name}: entries {v.recall:.1%}: {shown}"
        assert v.precision == 1.0, f"{name}: proposed entries {v.precision:.1%}: {shown}"
    return v


def _draft(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """`etl scaffold` of `url` (through an env var) into tmp_path/unit.yaml: the file and its text."""
    monkeypatch.setenv("SCAFFOLD_SRC", url)
    out = tmp_path / "unit.yaml"
    assert main(["scaffold", "--url-env", "SCAFFOLD_SRC", "--out", str(out),
                 "--org", "91320506MA1W3L8P7L", "--name", "某公司"]) == 0
    return out, out.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", schemas.ALL)
def test_scaffold_places_the_fields_of_each_schema_on_sqlite(name, tmp_path):
    _assert_measured(name, _source(name, tmp_path))


@pytest.mark.parametrize("name", WITH_VALUES)
def test_value_maps_from_dictionaries_on_sqlite(name, tmp_path):
    _assert_values(name, _source(name, tmp_path))


def test_a_dictionary_map_is_legal_for_its_field_and_names_its_dictionary(tmp_path, monkeypatch,
                                                                          capsys):
    """vendor_dev's codes explained by SYS_DICT_ITEM (type, code, label) and T_DM_YHJB (DM, MC):
    each map says where it came from and how sure it is, a label that matches no standard value
    is a TODO entry, and `etl check --offline` fails only on the TODOs (every value legal)."""
    out, text = _draft(_source("vendor_dev", tmp_path), tmp_path, monkeypatch)
    lines = text.splitlines()
    level = next(i for i, line in enumerate(lines) if "column: FX_INIT_LEVEL" in line)
    assert lines[level + 1].startswith('        values: {"1": "重大风险", "2": "较大风险"')
    assert lines[level + 1].endswith("# high: from SYS_DICT_ITEM where DICT_TYPE = 'risk_level': "
                                     "check them")
    assert "# medium: from SYS_DICT_ITEM where DICT_TYPE = 'ctrl_level': check them" in text
    assert "# low: from T_DM_YHJB: check them" in text  # 重大隐患: a hint, not the standard's word
    assert 'values: {"1": "0", "2": TODO}' in text and '"2 = 作业活动"' in text
    capsys.readouterr()
    assert main(["check", "--offline", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{out} [datasets.06.fields.riskType.values.2] TODO left by etl scaffold: "
                   f"map this code to the field's value"]
    import yaml

    raw = yaml.safe_load(text)
    raw["datasets"]["06"]["fields"]["riskType"]["values"]["2"] = "1"
    out.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    m = load_mapping(out)
    assert m.model.datasets["09"].fields["dealInfo"].values == {"0": "未整改", "1": "已整改"}
    assert m.model.datasets["06"].fields["accidentType"].values["01,02"] == "爆炸、泄漏"
    assert main(["check", "--offline", str(out)]) == 0


def test_dictionary_tables_are_told_from_dataset_tables():
    t = lambda name, *cols: scaffold.Table(name, tuple(scaffold.Column(c, "VARCHAR(50)")  # noqa: E731
                                                       for c in cols))
    ruoyi = t("sys_dict_data", "dict_code", "dict_sort", "dict_label", "dict_value", "dict_type",
              "css_class", "list_class", "is_default", "status", "create_by", "create_time", "remark")
    assert scaffold.dictionary_columns(ruoyi) == ("dict_value", "dict_label", "dict_type")
    assert scaffold.dictionary_columns(t("T_SYS_DICT", "ID", "TYPE_CODE", "DICT_CODE", "DICT_NAME")) \
        == ("DICT_CODE", "DICT_NAME", "TYPE_CODE")
    assert scaffold.dictionary_columns(t("T_DM_YHJB", "DM", "MC")) == ("DM", "MC", None)
    assert scaffold.dictionary_columns(t("T_HD_LEVEL", "ID", "CODE", "NAME", "SORT")) == \
        ("CODE", "NAME", None)
    assert scaffold.dictionary_columns(t("T_ORG_DEPT", "DEPT_ID", "DEPT_CODE", "DEPT_NAME",
                                         "DEPT_LEADER", "DEPT_LEADER_TEL", "DEPT_SAFE_FLAG")) is None
    assert scaffold.dictionary_columns(t("t_yhpc", "yhbh", "yhlb", "name", "code")) is None


def test_a_tables_prefix_is_stripped_from_its_columns_names():
    """YH_REG_ADDR in T_YH_INFO is matched as REG_ADDR (registered address), QY_CERT_ORG as a
    certifying organisation, RY_SAFE_DEPT_FLAG as a flag."""
    table = scaffold.Table("T_YH_INFO", tuple(scaffold.Column(c, "VARCHAR(50)") for c in (
        "YH_ID", "YH_REG_ADDR", "YH_CERT_ORG", "YH_ATTACH_PATH", "YH_SAFE_DEPT_FLAG")))
    assert "yh" in scaffold.column_prefixes(table)
    fields = [standard.dataset("01").field("address"), standard.dataset("03").field("authCom"),
              standard.dataset("04").field("fileAppendix"), standard.dataset("02").field("isSecDept")]
    got = {g.field: (g.column, g.confidence) for g in scaffold.assign(fields, table)}
    assert got == {"address": ("YH_REG_ADDR", "high"), "authCom": ("YH_CERT_ORG", "high"),
                   "fileAppendix": ("YH_ATTACH_PATH", "high"),
                   "isSecDept": ("YH_SAFE_DEPT_FLAG", "high")}


def test_a_value_map_is_high_only_when_every_label_is_the_standards_word():
    f = standard.dataset("06").field("inherentriskLevel")
    d = lambda entries: [scaffold.Dictionary("SYS_DICT", "CODE", "NAME", "TYPE", entries)]  # noqa: E731
    exact = {"risk_level": {"1": "重大风险", "2": "较大风险", "3": "一般风险", "4": "低风险"},
             "sex": {"1": "男", "2": "女"}}
    vm = scaffold.propose_from_dictionaries(f, "FX_LEVEL", ["1", "4"], d(exact))
    assert vm is not None and vm.mapped == {"1": "重大风险", "4": "低风险"}
    assert vm.confidence == "high" and vm.source == "SYS_DICT where TYPE = 'risk_level'"
    colours = {"lvl": {"1": "红色", "2": "橙色", "3": "黄", "4": "蓝色"}}
    vm = scaffold.propose_from_dictionaries(f, "FX_LEVEL", ["1", "3"], d(colours))
    assert vm is not None and vm.mapped == {"1": "重大风险", "3": "一般风险"}
    assert vm.confidence == "medium"
    odd = {"lvl": {"1": "重大风险", "2": "较大风险", "9": "未评估"}}
    vm = scaffold.propose_from_dictionaries(f, "FX_LEVEL", ["1", "2", "9"], d(odd))
    assert vm is not None and vm.mapped == {"1": "重大风险", "2": "较大风险", "9": None}
    assert vm.confidence == "low" and vm.labels["9"] == "未评估"
    assert scaffold.propose_from_dictionaries(f, "FX_LEVEL", ["1", "5"], d(exact)) is None


@pytest.mark.parametrize("name", schemas.ALL)
def test_the_draft_fails_check_only_on_its_todos(name, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCAFFOLD_SRC", _source(name, tmp_path))
    out = tmp_path / "mappings" / f"{name}.yaml"
    assert main(["scaffold", "--url-env", "SCAFFOLD_SRC", "--out", str(out)]) == 0
    capsys.readouterr()
    code = main(["check", "--offline", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err  # orgNo and comName are TODO at least
    assert all("TODO left by etl scaffold" in line for line in err), err
    assert any("[unit.orgNo]" in line for line in err)
    text = out.read_text(encoding="utf-8")
    assert "url_env: SCAFFOLD_SRC" in text and "sqlite" not in text


def test_a_draft_with_its_unit_and_no_todo_passes_check(tmp_path, monkeypatch, capsys):
    """The Chinese schema: every required field found, so with --org/--name the draft is a valid
    mapping as it stands (its Chinese table and column names quoted as they must be)."""
    monkeypatch.setenv("SCAFFOLD_SRC", _source("chinese", tmp_path))
    out = tmp_path / "unit.yaml"
    assert main(["scaffold", "--url-env", "SCAFFOLD_SRC", "--out", str(out),
                 "--org", "91320506MA1W3L8P7L", "--name", "苏州某电梯公司"]) == 0
    m = load_mapping(out)
    assert m.unit.comName == "苏州某电梯公司"
    assert m.model.datasets["09"].table == "隐患排查记录"
    assert m.model.datasets["09"].fields["taskNo"].column == "隐患编号"
    assert main(["check", str(out)]) == 0  # online: every table and column exists


def test_todo_is_reported_as_one_line(tmp_path, capsys):
    path = tmp_path / "draft.yaml"
    path.write_text("""unit: {orgNo: TODO, comName: 某公司}
source: {url_env: X}
datasets:
  "06":
    table: fxd
    key: TODO
    fields: {riskNo: a, riskName: b, riskType: c, inherentriskLevel: TODO, remainriskLevel: d,
             controlLevel: e, dutyName: f, dutyMan: {column: TODO}}
""", encoding="utf-8")
    assert main(["check", "--offline", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{path} [unit.orgNo] TODO left by etl scaffold: give the unit's unified social credit code",
        f"{path} [datasets.06.key] TODO left by etl scaffold: name the column(s) that identify a row",
        f"{path} [datasets.06.fields.inherentriskLevel] TODO left by etl scaffold: name the source column",
        f"{path} [datasets.06.fields.dutyMan.column] TODO left by etl scaffold: name the source column",
    ]


def test_other_problems_are_still_reported_beside_todos(tmp_path, capsys):
    path = tmp_path / "draft.yaml"
    path.write_text("""unit: {orgNo: TODO, comName: 某公司}
source: {url_env: X}
datasets:
  "09": {table: t, key: [id], fields: {taskNo: TODO, troubleTyp: a}}
""", encoding="utf-8")
    assert main(["check", "--offline", str(path)]) == 2
    err = capsys.readouterr().err
    assert "troubleTyp' is not a field" in err and "required field 'troubleType'" in err
    assert "[datasets.09.fields.taskNo] TODO left by etl scaffold" in err


def test_pinyin_spellings_are_pypinyins():
    """隐患编号 is found as yhbh, yh_bh and yinhuanbianhao: pypinyin's own spellings."""
    f = standard.dataset("09").field("taskNo")
    initials = "".join(lazy_pinyin(f.zh, style=Style.FIRST_LETTER))
    full = "".join(lazy_pinyin(f.zh))
    assert initials == "yhbh" and full == "yinhuanbianhao"
    forms = scaffold.pinyin_forms(f.zh)
    assert {initials, full, "yh_bh", "yinhuan_bianhao"} <= forms
    table = scaffold.Table("x", (scaffold.Column("id", "INTEGER"), scaffold.Column(initials, "TEXT"),
                                 scaffold.Column("beizhu", "TEXT")))
    assert [(g.field, g.column, g.confidence) for g in scaffold.assign([f], table)] == \
        [("taskNo", initials, "high")]


def test_each_column_is_used_once_per_table():
    ds = standard.dataset("09")
    table = scaffold.Table("t", (scaffold.Column("yhbh", "TEXT"), scaffold.Column("zgrq", "DATE")))
    guesses = scaffold.assign(ds.fields, table)
    assert sorted(g.column for g in guesses) == ["yhbh", "zgrq"]
    assert {g.field for g in guesses} == {"taskNo", "dealDate"}


def test_values_are_proposed_from_pinyin_initials_and_synonyms():
    f = standard.dataset("09").field("troubleType")
    mapped, understood, unknown = scaffold.propose_values(f, ["SB", "GL", "环境", "XX"])
    assert mapped == {"SB": "设备类", "GL": "管理类"}
    assert understood == ["环境"] and unknown == ["XX"]


def test_an_existing_file_is_not_overwritten_without_force(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCAFFOLD_SRC", _source("english", tmp_path))
    out = tmp_path / "unit.yaml"
    out.write_text("# mine\n", encoding="utf-8")
    assert main(["scaffold", "--url-env", "SCAFFOLD_SRC", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    assert out.read_text(encoding="utf-8") == "# mine\n"
    assert main(["scaffold", "--url-env", "SCAFFOLD_SRC", "--out", str(out), "--force"]) == 0
    assert "hd_rec" in out.read_text(encoding="utf-8")


def test_an_unreachable_source_is_one_line_without_the_url(monkeypatch, capsys):
    url = "postgresql://scaffold_user:s3cret-pw@127.0.0.1:1/nowhere"
    monkeypatch.setenv("SCAFFOLD_SRC", url)
    assert main(["scaffold", "--url-env", "SCAFFOLD_SRC"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "SCAFFOLD_SRC" in err[0], err
    assert "s3cret-pw" not in captured.err + captured.out and url not in captured.err


def test_an_unset_variable_and_a_bad_org_exit_2(monkeypatch, capsys):
    monkeypatch.delenv("SCAFFOLD_NOPE", raising=False)
    assert main(["scaffold", "--url-env", "SCAFFOLD_NOPE"]) == 2
    assert "SCAFFOLD_NOPE is not set" in capsys.readouterr().err
    monkeypatch.setenv("SCAFFOLD_NOPE", "sqlite://")
    assert main(["scaffold", "--url-env", "SCAFFOLD_NOPE", "--org", "123"]) == 2
    assert "--org" in capsys.readouterr().err


def test_scaffold_has_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["scaffold", "--help"])
    assert e.value.code == 0 and "--url-env" in capsys.readouterr().out


def _on_server(name: str, url: str, tmp_path: Path, monkeypatch, capsys) -> schemas.Score:
    """Scaffold a server's schema through the CLI: the URL (with its password) never shows."""
    schemas.build(name, url)
    monkeypatch.setenv("SCAFFOLD_SRC", url)
    out = tmp_path / f"{name}.yaml"
    assert main(["scaffold", "--url-env", "SCAFFOLD_SRC", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    secret = sa.engine.make_url(url).password
    for text in (printed.out, printed.err, out.read_text(encoding="utf-8")):
        assert url not in text and (not secret or secret not in text)
    return _assert_measured(name, url)


@pytest.mark.parametrize("name", schemas.WRITTEN)
def test_postgresql_schemas_with_comments(name, pg_url, tmp_path, monkeypatch, capsys):
    s = _on_server(name, pg_url, tmp_path, monkeypatch, capsys)
    if name == "pinyin":  # the Chinese comments are read: fields only a comment names are found
        drafts = _plan(pg_url)
        how = [g.how for d in drafts for g in d.guesses]
        assert any(h.startswith("comment") for h in how)
        assert s.recall == 1.0


@pytest.mark.parametrize("name", schemas.WRITTEN)
def test_mariadb_schemas_with_comments(name, mariadb_url, tmp_path, monkeypatch, capsys):
    s = _on_server(name, mariadb_url, tmp_path, monkeypatch, capsys)
    if name == "pinyin":
        drafts = _plan(mariadb_url)
        assert any(g.how.startswith("comment") for d in drafts for g in d.guesses)
        assert s.recall == 1.0


def test_value_maps_from_dictionaries_on_postgresql(pg_url):
    """Upper-case names (quoted) and the dictionaries' rows read on a server."""
    schemas.build("vendor_dev", pg_url)
    _assert_values("vendor_dev", pg_url)


def test_a_connection_id_and_a_schema_on_postgresql(pg_url, tmp_path, monkeypatch, capsys):
    """--conn-id (an Airflow connection, with a password to keep out of sight) and --schema: the
    draft names the schema's tables and says `conn_id:`."""
    u = sa.engine.make_url(pg_url)
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql('CREATE SCHEMA "ehs"')
    engine.dispose()
    schemas.build("english", pg_url, schema="ehs")
    password = "s3cret-scaffold-pw"  # the test server trusts 127.0.0.1 and ignores it
    monkeypatch.setenv("AIRFLOW_CONN_SCAFFOLD_SOURCE",
                       f"postgres://{u.username}:{password}@{u.host}:{u.port}/{u.database}")
    out = tmp_path / "unit.yaml"
    assert main(["scaffold", "--conn-id", "scaffold_source", "--schema", "ehs", "--out", str(out),
                 "--org", "91320506MA1W3L8P7L", "--name", "某公司"]) == 0
    printed = capsys.readouterr()
    text = out.read_text(encoding="utf-8")
    assert password not in printed.out + printed.err + text
    assert "conn_id: scaffold_source" in text
    m = load_mapping(out)
    assert m.model.datasets["09"].table == "ehs.hd_rec"
    assert m.model.datasets["09"].fields["taskNo"].column == "hd_no"


def test_datasets_without_a_plausible_table_are_commented_out(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'one.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t_yhpc (yhbh TEXT PRIMARY KEY, yhlb TEXT, yhjb TEXT, "
                             "yhms TEXT, pcr TEXT, pcrq DATE, zgjg TEXT, gxsj TIMESTAMP)")
        conn.exec_driver_sql("CREATE TABLE sys_log (log_id INTEGER, message TEXT, level TEXT)")
    engine.dispose()
    out, text = _draft(url, tmp_path, monkeypatch)
    assert '  "09":' in text and "table: t_yhpc" in text and "updated_at: gxsj" in text
    for tx in ("01", "02", "03", "04", "05", "06", "07", "08"):
        assert f'  # "{tx}": no table looks like' in text
    assert "sys_log" not in text
    m = load_mapping(out)  # every required field of 09 found: a valid mapping as drafted
    assert list(m.datasets) == ["09"] and m.model.datasets["09"].key == ["yhbh"]


def test_hostile_names_and_values_cannot_change_the_drafts_structure(tmp_path, monkeypatch, capsys):
    """Table and column names, comments and sampled values come from the source: a line break
    or U+2028 in them stays inside its quoted scalar or comment."""
    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    engine = sa.create_engine(url)
    evil = 'x\ny: 1\u2028  "09": {table: evil}'
    with engine.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "隐患排查记录" ("隐患编号" TEXT PRIMARY KEY, "隐患类别" TEXT, '
                             '"隐患级别" TEXT, "隐患描述" TEXT, "排查人" TEXT, "排查日期" DATE, '
                             '"整改结果" TEXT, "x\ny: 1\u2028z" TEXT)')
        conn.exec_driver_sql('INSERT INTO "隐患排查记录" VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                             ("1", evil, "一般", "d", "p", "2024-01-01", evil, "v"))
    engine.dispose()
    out, text = _draft(url, tmp_path, monkeypatch)
    assert "\u2028" not in text and "evil" in text  # listed as an unknown value, escaped
    m = load_mapping(out)
    assert list(m.datasets) == ["09"] and m.model.datasets["09"].table == "隐患排查记录"


def test_a_column_whose_values_cannot_be_read_is_drafted_with_a_todo(pg_url, tmp_path,
                                                                      monkeypatch, capsys):
    """The source refuses one sample (here a view's column that fails when read): that field
    says so, and the session goes on reading the others (a savepoint per sample)."""
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE base (n int)")
        conn.exec_driver_sql("INSERT INTO base VALUES (0), (1)")
        conn.exec_driver_sql(
            "CREATE VIEW t_yhpc AS SELECT 'YH' || n AS yhbh, (1 / n)::text AS yhlb, "
            "CASE n WHEN 0 THEN 'YB' ELSE 'YZ' END AS yhjb, 'd' AS yhms, 'p' AS pcr, "
            "current_date AS pcrq, '已整改' AS zgjg FROM base")
    engine.dispose()
    out, text = _draft(pg_url, tmp_path, monkeypatch)
    assert "troubleType: yhlb" in text and "TODO its values could not be read" in text
    assert 'values: {YB: "一般事故隐患", YZ: "严重事故隐患"}' in text
    assert load_mapping(out).model.datasets["09"].fields["troubleLevel"].values == \
        {"YB": "一般事故隐患", "YZ": "严重事故隐患"}


def test_pinyin_initials_mixed_with_english_and_flags_spelt_is_and_initials():
    """SG_TYPE is 事故类型 (accidentType), LXR_TEL 联系人电话, SH_USER 审核人, IS_TZZY a flag
    for 特种作业人员; mixed spellings count only exactly (fx_picture_file is no pictureId)."""
    cases = [("06", "accidentType", "FXD_SG_TYPE"), ("01", "linkTel", "QY_LXR_TEL"),
             ("06", "checkMan", "FXD_SH_USER"), ("09", "acceptInfo", "YH_YS_RESULT"),
             ("06", "inherentriskLevel", "FXD_GY_LEVEL"), ("03", "isOpr", "RY_IS_TZZY")]
    for tx, name, column in cases:
        f = standard.dataset(tx).field(name)
        bare = column.split("_", 1)[1]
        score, how = scaffold.column_score(f, scaffold.Column(bare, "VARCHAR(10)"))
        assert score >= scaffold.MEDIUM, (name, column, score, how)
    f = standard.dataset("08").field("riskFile")
    assert scaffold.column_score(f, scaffold.Column("pictureId", "INTEGER"))[0] < scaffold.PLACE


def test_yes_no_lists_code_tables_and_leading_zeros():
    """A flag's Y/N explained by a 是/否 list maps to 1/0 (high); a code table named BM
    (编码) with a colour column is a dictionary; `1` finds the list's `01`; a label holding the
    value's word (安全管理类) is a low match."""
    t = lambda name, *cols: scaffold.Table(name, tuple(scaffold.Column(c, "VARCHAR(50)")  # noqa: E731
                                                       for c in cols))
    assert scaffold.dictionary_columns(t("T_BM_RISK_LEVEL", "LEVEL_CODE", "LEVEL_NAME",
                                         "LEVEL_COLOR", "SORT_NO")) == ("LEVEL_CODE", "LEVEL_NAME", None)
    items = scaffold.Dictionary("SYS_DICT_ITEM", "ITEM_CODE", "ITEM_NAME", "DICT_TYPE", {
        "sys_yes_no": {"Y": "是", "N": "否"}, "sg_tz": {"01": "爆炸", "03": "泄漏"},
        "yh_type": {"HT01": "设备设施类", "HT02": "安全管理类"}})
    flag = standard.dataset("02").field("isSecDept")
    vm = scaffold.propose_from_dictionaries(flag, "DEPT_IS_AQBM", ["N", "Y"], [items])
    assert vm is not None and vm.mapped == {"N": "0", "Y": "1"} and vm.confidence == "high"
    acc = standard.dataset("06").field("accidentType")
    vm = scaffold.propose_from_dictionaries(acc, "SG_TYPE", ["1", "3"], [items])
    assert vm is not None and vm.mapped == {"1": "爆炸", "3": "泄漏"}
    kind = standard.dataset("09").field("troubleType")
    vm = scaffold.propose_from_dictionaries(kind, "YH_TYPE", ["HT01", "HT02"], [items])
    assert vm is not None and vm.mapped == {"HT01": "设备类", "HT02": "管理类"}
    assert vm.confidence == "low"
