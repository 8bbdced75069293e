"""GB/T 2260 names and codes (etl.standard.divisions), checked against what stdnum's table holds."""

from __future__ import annotations

import pytest

from etl.standard import divisions
from etl.standard.divisions import city_code, district_code, division_name

JIANGSU_CITIES = {
    "南京市": "320100", "无锡市": "320200", "徐州市": "320300", "常州市": "320400",
    "苏州市": "320500", "南通市": "320600", "连云港市": "320700", "淮安市": "320800",
    "盐城市": "320900", "扬州市": "321000", "镇江市": "321100", "泰州市": "321200",
    "宿迁市": "321300",
}


def _current_jiangsu(level: str) -> list[divisions.Division]:
    return [d for d in divisions._divisions().values()
            if d.code.startswith("32") and d.current and d.level == level
            and d.name not in divisions._NOT_PLACES]


@pytest.mark.parametrize(("name", "code"), sorted(JIANGSU_CITIES.items()))
def test_every_jiangsu_city_name_gives_its_code(name: str, code: str) -> None:
    assert city_code(name) == code


def test_jiangsu_has_exactly_thirteen_current_cities() -> None:
    assert {d.name: d.code for d in _current_jiangsu("city")} == JIANGSU_CITIES


def test_every_current_jiangsu_district_name_gives_its_code_within_its_city() -> None:
    districts = _current_jiangsu("county")
    kinds = [d.name[-1] for d in districts]  # Jiangsu today: 55 区, 21 县级市, 19 县
    assert (kinds.count("区"), kinds.count("市"), kinds.count("县")) == (55, 21, 19)
    wrong = [(d.code, d.name) for d in districts
             if district_code(d.name, d.code[:4] + "00") != d.code]
    assert wrong == []


@pytest.mark.parametrize("text", ["南京市", "南京", "江苏省南京市", "江苏南京", "  南京市 ", "320100", "３２０１００"])
def test_city_spellings_give_the_city_code(text: str) -> None:
    assert city_code(text) == "320100"


def test_city_followed_by_a_district_gives_the_city() -> None:
    assert city_code("江苏省南京市玄武区") == "320100"


def test_old_city_name_gives_the_current_code() -> None:
    assert city_code("淮阴市") == "320800"  # renamed 淮安市 in 2001, same code


@pytest.mark.parametrize("text", ["江阴市", "320000", "320102", "999999", "火星市", ""])
def test_non_cities_give_none(text: str) -> None:
    assert city_code(text) is None


def test_municipality_city_code_is_its_0100_code() -> None:
    assert city_code("北京市") == "110100"
    assert city_code("上海") == "310100"


def test_city_whose_name_starts_like_a_province_is_found() -> None:
    assert city_code("吉林市") == "220200"


@pytest.mark.parametrize(("text", "code"), [
    ("玄武区", "320102"), ("玄武", "320102"), ("江苏省南京市玄武区", "320102"),
    ("南京市玄武区", "320102"), ("320102", "320102"), ("昆山市", "320583"), ("沛县", "320322"),
])
def test_district_spellings_give_the_district_code(text: str, code: str) -> None:
    assert district_code(text) == code


def test_name_shared_by_two_jiangsu_cities_needs_the_city() -> None:
    assert district_code("鼓楼区") is None


@pytest.mark.parametrize(("city", "code"), [
    ("320100", "320106"), ("南京市", "320106"), ("南京", "320106"), ("徐州市", "320302"),
    ("320300", "320302"),
])
def test_city_context_chooses_among_shared_names(city: str, code: str) -> None:
    assert district_code("鼓楼区", city) == code


def test_name_not_in_the_given_city_gives_none() -> None:
    assert district_code("玄武区", "320500") is None


def test_city_written_in_the_value_wins_over_the_context() -> None:
    assert district_code("徐州市鼓楼区", "320100") == "320302"


def test_unresolvable_context_is_ignored() -> None:
    assert district_code("玄武区", "不知道") == "320102"


def test_without_city_a_name_unique_in_jiangsu_prefers_jiangsu() -> None:
    assert district_code("通州区") == "320612"
    assert district_code("通州区", "北京市") == "110112"


@pytest.mark.parametrize(("old", "code"), [
    ("白下区", "320104"), ("下关区", "320106"), ("沧浪区", "320508"), ("平江区", "320508"),
    ("金阊区", "320508"), ("清河区", "320812"), ("清浦区", "320812"), ("楚州区", "320803"),
    ("大丰市", "320904"), ("海门市", "320614"), ("铜山县", "320312"), ("崇安区", "320213"),
    ("南长区", "320213"), ("北塘区", "320213"), ("港闸区", "320613"), ("吴江市", "320509"),
    ("姜堰市", "321204"), ("江都市", "321012"), ("维扬区", "321003"),
    ("戚墅堰区", "320412"), ("新浦区", "320706"), ("溧水县", "320117"), ("海安县", "320685"),
])
def test_renamed_or_merged_district_names_give_the_current_code(old: str, code: str) -> None:
    assert district_code(old) == code


@pytest.mark.parametrize(("old", "code"), [
    ("320103", "320104"), ("320107", "320106"), ("320502", "320508"), ("320802", "320812"),
    ("320982", "320904"), ("320684", "320614"), ("320323", "320312"), ("320602", "320613"),
])
def test_retired_codes_give_the_successor(old: str, code: str) -> None:
    assert district_code(old) == code


@pytest.mark.parametrize("split", ["九里区", "锡山市", "吴县市", "320304", "320586"])
def test_divisions_split_among_several_have_no_successor(split: str) -> None:
    assert district_code(split) is None


def test_old_county_level_city_named_like_a_prefecture_is_not_a_district() -> None:
    # county-level 淮安市 (320882) became 楚州区; '淮安市' in aeraCode more likely means the city
    assert district_code("淮安市") is None
    assert district_code("320882") == "320803"


def test_every_jiangsu_successor_is_a_current_jiangsu_code() -> None:
    table = divisions.successors()
    assert table, "the successor table should not be empty"
    current = divisions._divisions()
    assert all(v.startswith("32") and current[v].current for v in table.values())


def test_division_name_gives_the_latest_name() -> None:
    assert division_name("320102") == "玄武区"
    assert division_name("320803") == "淮安区"
    assert division_name("320103") == "白下区"
    assert division_name("000000") is None


def test_table_is_loaded_once() -> None:
    assert divisions._tables() is divisions._tables()
