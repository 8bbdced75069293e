"""Mapping files: parsed whole, every problem reported at once, naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.common.errors import MappingError
from etl.mapping import discover, load_mapping, load_mappings
from etl.mapping.sql_guard import select_problem

GOOD = """\
unit:
  orgNo: "91320115MA1R7KX30X"
  comName: 南京某某化工有限公司
source:
  url_env: UNIT_X_SOURCE_URL
datasets:
  "06":
    table: t_risk_point
    key: [id]
    updated_at: modify_time
    deleted: {column: del_flag, value: 1}
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
"""


def write(tmp_path: Path, text: str, name: str = "unit.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    return err.value.problems


def test_contract_example_parses(tmp_path):
    m = load_mapping(write(tmp_path, GOOD))
    spec = m.datasets["06"]
    assert m.unit.orgNo == "91320115MA1R7KX30X"
    assert spec.fields["riskType"].values == {"设备": 0, "作业": 1}
    assert spec.fields["controlLevel"].value == "公司（厂）级"
    assert spec.columns()[:3] == ["id", "modify_time", "del_flag"]


def test_unquoted_tx_code_keeps_its_zero(tmp_path):
    m = load_mapping(write(tmp_path, GOOD.replace('"06":', "6:")))
    assert list(m.datasets) == ["06"]


def test_typo_in_key_is_named_with_its_path(tmp_path):
    found = problems(write(tmp_path, GOOD.replace("table:", "tabel:")))
    assert any("[datasets.06.tabel] unknown key 'tabel'" in p for p in found)


def test_unknown_field_suggests_the_standard_spelling(tmp_path):
    found = problems(write(tmp_path, GOOD.replace("riskName:", "riskname:")))
    assert any("[datasets.06.fields.riskname]" in p and "did you mean 'riskName'" in p for p in found)


def test_every_problem_is_reported_at_once(tmp_path):
    text = GOOD.replace("url_env: UNIT_X_SOURCE_URL", "url: postgresql://u:secret@h/db") \
        .replace("      riskName: point_name\n", "") + '  "10":\n    table: x\n    key: [id]\n    fields: {}\n'
    found = problems(write(tmp_path, text))
    assert any("[source] url holds a password" in p for p in found)
    assert any("required field 'riskName'" in p for p in found)
    assert any("[datasets.10] unknown txCode '10'" in p for p in found)
    assert all(p.startswith(str(tmp_path / "unit.yaml")) or p.startswith("unit.yaml") for p in found)


def test_field_mapped_twice_is_refused(tmp_path):
    found = problems(write(tmp_path, GOOD.replace("dutyMan: duty_man", "dutyMan: duty_man\n      dutyMan: x")))
    assert len(found) == 1 and "appears twice" in found[0] and "[line " in found[0]


def test_bad_yaml_names_the_line(tmp_path):
    found = problems(write(tmp_path, GOOD.replace("key: [id]", "key: [id")))
    assert "not valid YAML" in found[0]


def test_query_must_be_one_select(tmp_path):
    text = GOOD.replace("table: t_risk_point", 'query: "SELECT * FROM a; DELETE FROM a"')
    assert any("[datasets.06.query]" in p for p in problems(write(tmp_path, text)))


@pytest.mark.parametrize("sql,ok", [
    ("SELECT a FROM t", True),
    ("with x as (select 1) select * from x;", True),
    ("SELECT ';' AS semi FROM t", True),
    ("SELECT 1; SELECT 2", False),
    ("DELETE FROM t", False),
    ("SELECT * INTO t2 FROM t", False),
    ("SELECT REPLACE(name, ' ', '') AS n FROM t", True),
    ("SELECT ':name' AS x, '100%' AS y FROM t", True),
    ("SELECT a FROM t UNION ALL SELECT b FROM u", True),
    ("SELECT E'\\'' ; COMMIT; DELETE FROM victim; SELECT 1 --'", False),
    ("SELECT $$ ; COMMIT; DELETE FROM victim; $$ AS x", False),
    ("SELECT 'a\\'' ; DELETE FROM victim; SELECT '1' AS x", False),
    ("SELECT * FROM t FOR UPDATE", False),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", False),
    ("SELECT dblink_exec('dbname=x', 'DELETE FROM t')", False),
    ("CALL p()", False),
    ("SELECT (", False),
])
def test_single_select(sql, ok):
    assert (select_problem(sql) is None) is ok


def test_invalid_org_no_is_refused(tmp_path):
    found = problems(write(tmp_path, GOOD.replace("91320115MA1R7KX30X", "91320115MA1R7KX301")))
    assert any("[unit.orgNo]" in p and "check character" in p for p in found)


def test_value_map_to_a_value_outside_the_enumeration_is_refused(tmp_path):
    found = problems(write(tmp_path, GOOD.replace('"4": 低风险}}\n      registDate', '"4": 很低}}\n      registDate')))
    assert any("[datasets.06.fields.remainriskLevel.values] 很低 not allowed" in p for p in found)


def test_two_files_for_one_unit_are_refused(tmp_path):
    a, b = write(tmp_path, GOOD, "a.yaml"), write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(MappingError, match="two mappings for orgNo"):
        load_mappings([a, b])


def test_discover_lists_yaml_sorted(tmp_path):
    for n in ("b.yaml", "a.yml", "c.txt"):
        write(tmp_path, GOOD, n)
    assert [p.name for p in discover(tmp_path)] == ["a.yml", "b.yaml"]


def test_valid_mappings_are_cached_by_content_and_invalid_ones_never(tmp_path: Path) -> None:
    from etl.mapping import load_mapping_cached, mapping_from_dict, mapping_to_dict

    cache = tmp_path / "cache"
    path = tmp_path / "南京化工.yaml"
    path.write_text(GOOD, encoding="utf-8")
    first = load_mapping_cached(path, cache)
    assert first == load_mapping(path) and len(list(cache.iterdir())) == 1
    assert load_mapping_cached(path, cache) == first  # from the cache
    assert mapping_from_dict(mapping_to_dict(first)) == first  # handed on to another process
    path.write_text(GOOD.replace("point_name", "point_title"), encoding="utf-8")
    changed = load_mapping_cached(path, cache)  # new content, new entry: never a stale verdict
    assert changed.datasets["06"].fields["riskName"].column == "point_title"
    assert changed.digest != first.digest and len(list(cache.iterdir())) == 2
    path.write_text(GOOD.replace("riskName:", "riskNames:"), encoding="utf-8")
    for _ in range(2):
        with pytest.raises(MappingError, match="riskNames"):
            load_mapping_cached(path, cache)
    assert len(list(cache.iterdir())) == 2
