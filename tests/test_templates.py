"""System templates (etl.mapping.templates): `extends:` merged key by key, chains, cycles, problems named
by the file they come from, the digest and cache over the whole chain, `etl check` of templates
and folders, and planning that sees units only."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import gb32100

from etl.cli import main
from etl.common.errors import MappingError
from etl.mapping import (MAX_BYTES, discover, load_mapping, load_mapping_cached, mapping_from_dict,
                         mapping_to_dict)
from etl.orchestration import planning

ROOT = Path(__file__).resolve().parent.parent
ORG_A, ORG_B, ORG_C = gb32100("91320115MA1R7KX30"), gb32100("91320506MA1W3L8P7"), gb32100("91320000MA1AAAAA1")

VENDOR = """\
# a vendor's system: risk points and hazards, as every unit running it stores them
datasets:
  "06":
    table: t_risk_point
    key: [id]
    updated_at: modify_time
    fields:
      riskNo: point_no
      riskName: point_name
      riskType: {column: kind, values: {设备: 0, 作业: 1}}
      inherentriskLevel: {column: init_level, values: {"1": 重大风险, "2": 较大风险, "3": 一般风险, "4": 低风险}}
      remainriskLevel: {column: rest_level, values: {"1": 重大风险, "2": 较大风险, "3": 一般风险, "4": 低风险}}
      registDate: reg_date
      dutyName: {column: duty_unit, default: "{unit.comName}"}
      dutyMan: duty_man
      controlLevel: {value: 公司（厂）级}
      commonAddr: area
"""


def unit(org: str, name: str, source: str, extends: str = "systems/vendor.yaml", extra: str = "") -> str:
    return (f"extends: {extends}\nunit:\n  orgNo: \"{org}\"\n  comName: {name}\n"
            f"source:\n  {source}\n{extra}")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """mappings/ with systems/vendor.yaml and two units extending it."""
    monkeypatch.setenv("ETL_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "mappings"
    (root / "systems").mkdir(parents=True)
    (root / "systems" / "vendor.yaml").write_text(VENDOR, encoding="utf-8")
    (root / "a.yaml").write_text(unit(ORG_A, "南京甲化工有限公司", "url_env: A_URL"), encoding="utf-8")
    (root / "b.yaml").write_text(unit(ORG_B, "苏州乙电梯有限公司", "conn_id: unit_b"), encoding="utf-8")
    return root


def problems_of(path: Path) -> list[str]:
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    return err.value.problems


def test_two_units_of_one_template_differ_only_in_unit_and_source(folder: Path) -> None:
    a, b = load_mapping(folder / "a.yaml"), load_mapping(folder / "b.yaml")
    assert a.datasets == b.datasets and list(a.datasets) == ["06"]
    assert a.datasets["06"].fields["riskType"].values == {"设备": 0, "作业": 1}
    assert (a.unit.orgNo, b.unit.orgNo) == (ORG_A, ORG_B)
    assert a.source_for("06").url_env == "A_URL" and b.source_for("06").conn_id == "unit_b"
    assert a.templates[0][0] == "systems/vendor.yaml" and a.digest != b.digest


def test_the_demo_template_resolves_to_the_demo_units_datasets(tmp_path: Path) -> None:
    """mappings/systems/ehs_demo.yaml is demo_jinling_chem.yaml's schema: a unit extending it
    maps exactly what the hand-written demo file maps (and the demo itself is unchanged)."""
    shutil.copytree(ROOT / "mappings", tmp_path / "m")
    path = tmp_path / "m" / "jinling.yaml"
    path.write_text(unit("91320115MA1R7KX30X", "南京金陵精细化工有限公司",
                         "url: sqlite:///var/demo_jinling_chem.sqlite", "systems/ehs_demo.yaml"),
                    encoding="utf-8")
    demo = load_mapping(ROOT / "mappings" / "demo_jinling_chem.yaml")
    resolved = load_mapping(path)
    assert resolved.model == demo.model and resolved.digest != demo.digest
    assert [p.name for p in discover(ROOT / "mappings")] == ["demo_jinling_chem.yaml",
                                                             "demo_suzhou_lift.yaml"]


def test_an_override_replaces_one_field_whole_and_null_removes(folder: Path) -> None:
    (folder / "a.yaml").write_text(unit(ORG_A, "甲", "url_env: A_URL", extra=(
        'datasets:\n  "06":\n    fields:\n      riskType: {value: "1"}\n      commonAddr: null\n'
        '    updated_at: null\n')), encoding="utf-8")
    a, b = load_mapping(folder / "a.yaml"), load_mapping(folder / "b.yaml")
    rule = a.datasets["06"].fields["riskType"]
    assert rule.value == "1" and rule.column is None and rule.values is None  # replaced whole
    assert "commonAddr" not in a.datasets["06"].fields and "commonAddr" in b.datasets["06"].fields
    assert a.datasets["06"].updated_at is None and b.datasets["06"].updated_at == "modify_time"
    others = {k: v for k, v in a.datasets["06"].fields.items() if k != "riskType"}
    assert others == {k: v for k, v in b.datasets["06"].fields.items() if k not in ("riskType", "commonAddr")}


def test_a_unit_may_swap_table_for_query_and_remove_a_dataset(folder: Path) -> None:
    (folder / "systems" / "vendor.yaml").write_text(VENDOR + '  "04":\n    table: t_rule\n    key: id\n'
                                                    '    fields: {fileName: title, fileAppendix: f, '
                                                    'uploadDate: d, publisher: p}\n', encoding="utf-8")
    (folder / "a.yaml").write_text(unit(ORG_A, "甲", "url_env: A_URL", extra=(
        'datasets:\n  "06": {query: "SELECT * FROM v_risk"}\n  4: null\n')), encoding="utf-8")
    a = load_mapping(folder / "a.yaml")
    assert list(a.datasets) == ["06"] and a.datasets["06"].table is None
    assert a.datasets["06"].query == "SELECT * FROM v_risk"
    assert list(load_mapping(folder / "b.yaml").datasets) == ["04", "06"]


def test_a_chain_of_three_templates(folder: Path) -> None:
    systems = folder / "systems"
    (systems / "base.yaml").write_text(VENDOR.replace("point_name", "base_name"), encoding="utf-8")
    (systems / "v2.yaml").write_text("extends: systems/base.yaml\nsource: {timezone: UTC}\n"
                                     'datasets:\n  "06":\n    fields:\n      riskName: v2_name\n'
                                     "      dutyMan: v2_man\n", encoding="utf-8")
    (systems / "v2_jiangsu.yaml").write_text('extends: systems/v2.yaml\ndatasets:\n  "06":\n'
                                             "    fields:\n      dutyMan: js_man\n", encoding="utf-8")
    path = folder / "c.yaml"
    path.write_text(unit(ORG_C, "丙", "conn_id: unit_c", "systems/v2_jiangsu.yaml"), encoding="utf-8")
    m = load_mapping(path)
    fields = m.datasets["06"].fields
    assert (fields["riskName"].column, fields["dutyMan"].column, fields["riskNo"].column) == (
        "v2_name", "js_man", "point_no")
    source = m.source_for("06")
    assert source.conn_id == "unit_c" and source.timezone == "UTC"  # merged key by key
    assert [t for t, _ in m.templates] == ["systems/v2_jiangsu.yaml", "systems/v2.yaml",
                                           "systems/base.yaml"]
    before = m.digest
    (systems / "base.yaml").write_text(VENDOR.replace("point_no", "base_no"), encoding="utf-8")
    after = load_mapping(path)  # the deepest template changed: the digest changes
    assert after.digest != before and after.datasets["06"].fields["riskNo"].column == "base_no"


def test_a_cycle_and_a_too_long_chain_are_refused(folder: Path) -> None:
    systems = folder / "systems"
    (systems / "x.yaml").write_text("extends: systems/y.yaml\n", encoding="utf-8")
    (systems / "y.yaml").write_text("extends: systems/x.yaml\n" + VENDOR, encoding="utf-8")
    (folder / "a.yaml").write_text(unit(ORG_A, "甲", "url_env: A", "systems/x.yaml"), encoding="utf-8")
    [line] = problems_of(folder / "a.yaml")
    assert "[extends] systems/x.yaml -> systems/y.yaml -> systems/x.yaml is a cycle" in line
    assert line.startswith(str(systems / "y.yaml")) and line.endswith(f"(used by {folder / 'a.yaml'})")
    for n in range(12):
        (systems / f"t{n}.yaml").write_text(f"extends: systems/t{n + 1}.yaml\n", encoding="utf-8")
    (systems / "t12.yaml").write_text(VENDOR, encoding="utf-8")
    (folder / "a.yaml").write_text(unit(ORG_A, "甲", "url_env: A", "systems/t0.yaml"), encoding="utf-8")
    [line] = problems_of(folder / "a.yaml")
    assert "more than 8 templates in a chain" in line


@pytest.mark.parametrize("ref, says", [
    ("/etc/passwd", "is an absolute path"),
    ("../outside.yaml", "leaves the mappings folder"),
    ("systems/../../outside.yaml", "leaves the mappings folder"),
    ("systems/missing.yaml", "[extends] no such template systems/missing.yaml in"),
    ("[1, 2]", "give a template file relative to the mappings folder"),
])
def test_extends_must_name_a_template_inside_the_folder(folder: Path, ref: str, says: str) -> None:
    (folder.parent / "outside.yaml").write_text(VENDOR, encoding="utf-8")
    (folder / "a.yaml").write_text(unit(ORG_A, "甲", "url_env: A", ref), encoding="utf-8")
    [line] = problems_of(folder / "a.yaml")
    assert says in line, line


def test_a_template_has_no_unit_and_is_read_within_a_mappings_bounds(folder: Path) -> None:
    vendor = folder / "systems" / "vendor.yaml"
    vendor.write_text(f'unit: {{orgNo: "{ORG_C}", comName: 丙}}\n' + VENDOR, encoding="utf-8")
    [line] = problems_of(folder / "a.yaml")
    assert line.startswith(f"{vendor} [unit] a template names no unit")
    vendor.write_text(VENDOR + "#" * MAX_BYTES, encoding="utf-8")
    [line] = problems_of(folder / "a.yaml")
    assert line.startswith(str(vendor)) and "more than a mapping's" in line
    vendor.unlink()
    vendor.mkdir()
    [line] = problems_of(folder / "a.yaml")
    assert "not a regular file" in line
    vendor.rmdir()
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh"))
    vendor.write_text(bomb + VENDOR, encoding="utf-8")
    [line] = problems_of(folder / "a.yaml")
    assert "aliases (*name) expand this file" in line


def test_problems_name_the_file_their_key_came_from(folder: Path) -> None:
    vendor = folder / "systems" / "vendor.yaml"
    vendor.write_text(VENDOR.replace("riskType:", "riskTyp:"), encoding="utf-8")
    (folder / "a.yaml").write_text(unit(ORG_A, "甲", "url_env: A", extra=(
        'datasets:\n  "06":\n    fields:\n      dutyMan: {column: m, values: {}}\n'
        '      riskType: {column: kind, values: {设备: 9}}\n')), encoding="utf-8")
    found = problems_of(folder / "a.yaml")
    a = folder / "a.yaml"
    assert f"{vendor} [datasets.06.fields.riskTyp] 'riskTyp' is not a field of A.8 风险点信息: did " \
           f"you mean 'riskType'? (used by {a})" in found
    assert any(p.startswith(f"{a} [datasets.06.fields.riskType.values] 9 not allowed") for p in found)


def test_a_unit_without_a_source_is_told_once(folder: Path) -> None:
    (folder / "a.yaml").write_text(f'extends: systems/vendor.yaml\nunit: {{orgNo: "{ORG_A}", '
                                   f'comName: 甲}}\n', encoding="utf-8")
    assert problems_of(folder / "a.yaml") == [
        f"{folder / 'a.yaml'} [source] no source: give the unit's source: (url_env, conn_id or url) "
        f"in the unit file"]


def test_the_cache_and_the_digest_cover_the_template(folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = folder / "a.yaml"
    first = load_mapping_cached(path, cache)
    assert first == load_mapping(path) and first.digest == load_mapping(path).digest
    again = load_mapping_cached(path, cache)  # from the cache: same digest and templates
    assert again == first and again.digest == first.digest and again.templates == first.templates
    assert len(list(cache.iterdir())) == 1
    (folder / "systems" / "vendor.yaml").write_text(VENDOR.replace("point_no", "no_v2"), encoding="utf-8")
    changed = load_mapping_cached(path, cache)  # unit file unchanged, template changed: a miss
    assert changed.digest != first.digest and changed.datasets["06"].fields["riskNo"].column == "no_v2"
    assert changed.digest == load_mapping(path).digest
    (folder / "systems" / "vendor.yaml").write_text(VENDOR.replace("riskType:", "riskTyp:"), encoding="utf-8")
    with pytest.raises(MappingError):  # a broken template is never served from the cache
        load_mapping_cached(path, cache)


def test_a_resolved_mapping_is_handed_on_as_json(folder: Path) -> None:
    m = load_mapping(folder / "a.yaml")
    assert mapping_from_dict(mapping_to_dict(m)) == m
    text = {"path": str(m.path), "digest": m.digest, "text": m.path.read_text(encoding="utf-8")}
    assert mapping_from_dict(text) == m  # the text fallback resolves the template again
    (folder / "systems" / "vendor.yaml").write_text(VENDOR.replace("point_no", "x"), encoding="utf-8")
    with pytest.raises(MappingError, match="changed since it was handed on"):
        mapping_from_dict(text)


def test_planning_sees_units_not_templates(folder: Path, tmp_path: Path) -> None:
    plan = planning.plan_run("daily", mappings=folder, cache_dir=tmp_path / "cache")
    units = [u for s in plan.shards for u in s.units]
    assert sorted(u.name for u in units) == ["a", "b"] and not any(u.problems for u in units)
    assert all(d["tx"] == "06" for u in units for d in u.datasets)
    assert units[0].validated() == load_mapping(folder / f"{units[0].name}.yaml")
    assert [p.name for p in discover(folder)] == ["a.yaml", "b.yaml"]



def test_a_template_left_in_the_units_folder_fails_alone_saying_where_templates_go(
        folder: Path, tmp_path: Path) -> None:
    shutil.copy(folder / "systems" / "vendor.yaml", folder / "vendor.yaml")
    plan = planning.plan_run("daily", mappings=folder, cache_dir=tmp_path / "cache")
    units = {u.name: u for s in plan.shards for u in s.units}
    assert not units["a"].problems and not units["b"].problems
    assert "missing key 'unit'" in units["vendor"].problems
    assert "keep templates in mappings/systems/" in units["vendor"].problems

# --- etl check -----------------------------------------------------------------------------------


def test_check_shows_which_rules_come_from_the_template(folder: Path, capsys) -> None:
    (folder / "a.yaml").write_text(unit(ORG_A, "甲", "url_env: A", extra=(
        'datasets:\n  "06":\n    fields:\n      riskName: my_name\n')), encoding="utf-8")
    assert main(["check", "--offline", str(folder / "a.yaml")]) == 0
    out = capsys.readouterr().out
    assert "extends systems/vendor.yaml" in out and "from" in out.splitlines()[1]
    rows = {line.split()[2]: line.split()[-1] for line in out.splitlines() if line.startswith("06 ")
            and "MISSING" not in line and "missing" not in line}
    assert rows["riskName"] == "unit" and rows["riskNo"] == "systems/vendor.yaml"


def test_check_resolved_prints_the_merged_mapping(folder: Path, capsys) -> None:
    (folder / "a.yaml").write_text(unit(ORG_A, "甲", "url: postgresql://etl@db.example/ehs?sslmode=require"),
                                   encoding="utf-8")
    assert main(["check", "--offline", "--resolved", str(folder / "a.yaml")]) == 0
    out = capsys.readouterr().out
    doc = yaml.safe_load(out.split("\n1 mapping(s) valid")[0])
    assert doc["unit"]["orgNo"] == ORG_A and "extends" not in doc
    assert doc["datasets"]["06"]["fields"]["riskNo"] == {"column": "point_no"}
    assert doc["datasets"] == yaml.safe_load(load_mapping(folder / "b.yaml").model.model_dump_json(
        exclude_defaults=True))["datasets"]


def test_a_broken_template_is_reported_once_with_every_unit_it_breaks(folder: Path, capsys) -> None:
    vendor = folder / "systems" / "vendor.yaml"
    vendor.write_text(VENDOR.replace("riskType:", "riskTyp:"), encoding="utf-8")
    (folder / "c.yaml").write_text(unit(ORG_C, "丙", "url_env: C", extra=(
        'datasets:\n  "06":\n    fields:\n      controlLevel: {column: lvl, values: {x: 九级}}\n')), encoding="utf-8")
    (folder / "d.yaml").write_text(f'unit: {{orgNo: "{gb32100("91320100MA1DDDDD1")}", comName: 丁}}\n'
                                   f'source: {{url_env: D}}\ndatasets: {{}}\n', encoding="utf-8")
    for args in (["check", "--offline", str(vendor)], ["check", "--offline", str(folder)]):
        assert main(args) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "'riskTyp'" in line]
        assert len(lines) == 1, err
        assert lines[0].startswith(f"{vendor} [datasets.06.fields.riskTyp]")
        assert lines[0].endswith(f"(breaks 3 unit(s): {folder / 'a.yaml'}, {folder / 'b.yaml'}, "
                                 f"{folder / 'c.yaml'})")
        assert any(line.startswith(f"{folder / 'c.yaml'} [datasets.06.fields.controlLevel.values]") for line in
                   err.splitlines())
    assert "template, extended by 3 unit(s)" in main_out(["check", "--offline", str(vendor)], capsys)
    vendor.write_text("datasets: [unclosed\n", encoding="utf-8")  # not even YAML
    assert main(["check", "--offline", str(vendor)]) == 2
    err = capsys.readouterr().err
    assert err.count("not valid YAML") == 1 and "(breaks 3 unit(s)" in err


def main_out(args: list[str], capsys) -> str:
    main(args)
    return capsys.readouterr().out


def test_a_template_no_unit_uses_is_checked_on_its_own(folder: Path, capsys) -> None:
    spare = folder / "systems" / "spare.yaml"
    spare.write_text(VENDOR.replace("riskType:", "riskTyp:"), encoding="utf-8")
    assert main(["check", "--offline", str(spare)]) == 2
    out, err = capsys.readouterr()
    assert "extended by 0 unit(s)" in out
    assert f"{spare} [datasets.06.fields.riskTyp]" in err and "(used by" not in err
    spare.write_text(VENDOR, encoding="utf-8")
    assert main(["check", "--offline", str(spare)]) == 0


def test_check_over_a_folder_summarises_every_unit(folder: Path, capsys) -> None:
    (folder / "c.yaml").write_text(unit(ORG_C[:-1] + ("0" if ORG_C[-1] != "0" else "1"), "丙", "url_env: C"),
                                   encoding="utf-8")
    assert main(["check", "--offline", str(folder)]) == 2
    out = capsys.readouterr().out
    table = {line.split()[0]: line for line in out.splitlines() if line.startswith(str(folder))}
    assert set(table) == {str(folder / n) for n in ("a.yaml", "b.yaml", "c.yaml")}  # no template
    assert table[str(folder / "a.yaml")].endswith("ok") and ORG_A in table[str(folder / "a.yaml")]
    assert "南京甲化工有限公司" in table[str(folder / "a.yaml")]
    assert table[str(folder / "c.yaml")].endswith("1 problem(s)")
    assert "3 unit(s): 2 ok, 1 with problems" in out
    assert "filled by" not in out  # a folder: the summary, not every unit's coverage


def test_files_stay_private_when_the_cache_writes(folder: Path, tmp_path: Path) -> None:
    load_mapping_cached(folder / "a.yaml", tmp_path / "cache")
    [entry] = (tmp_path / "cache").iterdir()
    assert entry.read_text(encoding="utf-8").startswith("#templates [[\"systems/vendor.yaml\"")
    assert os.stat(entry).st_mode & 0o077 == 0


def test_a_chain_broken_in_a_template_is_one_line_for_all_its_units(folder: Path, capsys) -> None:
    vendor = folder / "systems" / "vendor.yaml"
    vendor.write_text("extends: systems/gone.yaml\n" + VENDOR, encoding="utf-8")
    assert main(["check", "--offline", str(folder)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{vendor} [extends] no such template systems/gone.yaml in {folder}: templates "
                   f"live in its systems/ folder (breaks 2 unit(s): {folder / 'a.yaml'}, "
                   f"{folder / 'b.yaml'})"]
    (folder / "systems" / "gone.yaml").write_text("extends: systems/vendor.yaml\n", encoding="utf-8")
    assert main(["check", "--offline", str(folder)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "[extends] systems/vendor.yaml -> systems/gone.yaml -> systems/vendor.yaml is a cycle" in line
    assert line.endswith("(breaks 2 unit(s): " f"{folder / 'a.yaml'}, {folder / 'b.yaml'})")


# --- a template names no connection (issue 23) ------------------------------------------------------


def vendor_db(path: Path, prefix: str) -> Path:
    """A real SQLite database of the vendor's schema holding two risk points numbered `prefix`-1, -2."""
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t_risk_point (id INTEGER PRIMARY KEY, point_no TEXT, point_name TEXT, "
                   "kind TEXT, init_level TEXT, rest_level TEXT, reg_date TEXT, duty_unit TEXT, "
                   "duty_man TEXT, area TEXT, modify_time TEXT)")
        db.executemany("INSERT INTO t_risk_point VALUES (?, ?, '吊装作业', '作业', '2', '3', '2024-01-02', "
                       "'安全部', '王工', '一车间', '2024-07-08 09:00:00')",
                       [(n, f"{prefix}-{n}") for n in (1, 2)])
    db.close()
    return path


@pytest.mark.parametrize("where", ["source", "datasets.06.source"])
def test_a_template_naming_a_connection_is_refused_once_for_every_unit(folder: Path, capsys,
                                                                         where: str) -> None:
    """The attack: a system template gives dataset 06 (or everything) a connection of its own;
    the units' own `source:` would not replace a dataset's, so every unit of the system would
    load the template's database under its own orgNo."""
    vendor = folder / "systems" / "vendor.yaml"
    text = (VENDOR + "    source: {conn_id: vendor_db}\n" if where != "source"
            else "source: {conn_id: vendor_db, timezone: UTC}\n" + VENDOR)
    vendor.write_text(text, encoding="utf-8")
    assert main(["check", "--offline", str(folder)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{vendor} [{where}.conn_id] a template names no connection")
    # the units by whole path while the line fits the 500-character cap, then how many more
    units = [str(folder / "a.yaml"), str(folder / "b.yaml")]
    assert len(line) <= 500 and line.endswith(")") and "(breaks 2 unit(s): " in line, line
    listed = line.rsplit("(breaks 2 unit(s): ", 1)[1][:-1].split(", ")
    more = int(listed.pop()[2:-5]) if listed[-1].startswith("… ") else 0
    assert listed == units[:len(listed)] and len(listed) + more == 2, line
    for name in ("a.yaml", "b.yaml"):
        [problem] = problems_of(folder / name)
        assert f"[{where}.conn_id] a template names no connection" in problem
    assert main(["check", "--offline", str(vendor)]) == 2  # the template named alone: the same
    assert "a template names no connection" in capsys.readouterr().err


def test_a_template_connection_loads_nothing_and_units_name_their_second_database(
        folder: Path, tmp_path: Path, capsys) -> None:
    """End to end on real SQLite sources: a template pointing dataset 06 at the vendor's database
    stops `etl run` before anything is read or written; the vendor case (06 in a second database
    of each unit) is the template's `source: {}` and each unit's own `datasets.06.source`."""
    import sqlite3

    victim = vendor_db(tmp_path / "vendor.sqlite", "VENDOR")
    own = {org: vendor_db(tmp_path / f"{org}.sqlite", org) for org in (ORG_A, ORG_B)}
    vendor = folder / "systems" / "vendor.yaml"
    vendor.write_text(VENDOR + f"    source: {{url: 'sqlite:///{victim}'}}\n", encoding="utf-8")
    for name, org in (("a.yaml", ORG_A), ("b.yaml", ORG_B)):
        (folder / name).write_text(unit(org, name, f"url: 'sqlite:///{tmp_path / 'main.sqlite'}'"),
                                   encoding="utf-8")
    target = tmp_path / "target.sqlite"
    assert main(["run", str(folder / "a.yaml"), str(folder / "b.yaml"), "--target",
                 f"sqlite:///{target}"]) == 2
    assert "a template names no connection" in capsys.readouterr().err
    assert not target.exists()  # refused before the target was even opened

    vendor.write_text(VENDOR + "    source: {timezone: Asia/Shanghai}\n", encoding="utf-8")
    [line] = problems_of(folder / "a.yaml")  # the unit forgot its second database: told so
    assert line.startswith(f"{folder / 'a.yaml'} [datasets.06.source] systems/vendor.yaml reads "
                           f"dataset 06 from a database of its own: name its connection here")
    for name, org in (("a.yaml", ORG_A), ("b.yaml", ORG_B)):
        (folder / name).write_text(unit(org, name, f"url: 'sqlite:///{tmp_path / 'main.sqlite'}'",
                                        extra=f'datasets:\n  "06":\n    source: {{url: '
                                              f"'sqlite:///{own[org]}'}}\n"), encoding="utf-8")
    assert main(["run", str(folder / "a.yaml"), str(folder / "b.yaml"), "--target",
                 f"sqlite:///{target}"]) == 0
    out = capsys.readouterr().out
    with sqlite3.connect(target) as db:
        loaded = sorted(db.execute('SELECT "orgNo", "riskNo" FROM risk_point').fetchall())
    db.close()
    assert loaded == sorted((org, f"{org}-{n}") for org in (ORG_A, ORG_B) for n in (1, 2)), out


def test_check_shows_where_each_dataset_reads_from(folder: Path, capsys) -> None:
    (folder / "systems" / "vendor.yaml").write_text(
        VENDOR + '  "04":\n    table: t_rule\n    key: id\n    source: {timezone: UTC}\n'
        "    fields: {fileName: title, fileAppendix: f, uploadDate: d, publisher: p}\n", encoding="utf-8")
    a = folder / "a.yaml"
    a.write_text(unit(ORG_A, "甲", "url_env: A_URL", extra='datasets:\n  "04": {source: {conn_id: a_rules}}\n'),
                 encoding="utf-8")
    code = main(["check", "--offline", str(a)])
    out, err = capsys.readouterr()
    assert code == 0, err
    reads = {line.split()[0]: line.split()[2:] for line in out.split("reads from")[1].splitlines()
             if line[:3] in ("04 ", "06 ")}
    assert reads["06"] == ["env", "A_URL", "source.url_env", str(a)]
    assert reads["04"] == ["Airflow", "connection", "a_rules", "datasets.04.source.conn_id", str(a)]
    assert main(["check", "--offline", "--resolved", str(a)]) == 0
    out = capsys.readouterr().out
    assert f"# datasets.06 reads from env A_URL: source.url_env in {a}\n" in out
    assert f"# datasets.04 reads from Airflow connection a_rules: datasets.04.source.conn_id in {a}\n" in out
    doc = yaml.safe_load(out.split("\n1 mapping(s) valid")[0])
    assert doc["datasets"]["04"]["source"] == {"conn_id": "a_rules", "timezone": "UTC"}
