"""Cleaning (etl.standard.clean) and masking (etl.common.masking): one behaviour per test, real frames."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from etl.common.masking import mask, mask_text
from etl.standard import DATASETS, dataset
from etl.standard.clean import (ENUM_SYNONYMS, NULL_SHOWN, Audit, clean_column, clean_frame,
                                standard_fields)

RISK = dataset("06")
DANGER = dataset("09")
PERSON = dataset("03")
UNIT = dataset("01")


def clean(ds_code: str, name: str, values: list, audit: Audit | None = None) -> list:
    """Clean one column of one dataset; NA comes back as None for easy comparison."""
    out = clean_frame(pd.DataFrame({name: pd.Series(values, dtype=object)}),
                      dataset(ds_code), audit if audit is not None else Audit())
    return [None if pd.isna(v) else v for v in out[name]]


def one(ds_code: str, name: str, value: object) -> object:
    return clean(ds_code, name, [value])[0]


# --- frame shape -------------------------------------------------------------------------


def test_other_columns_pass_through_untouched() -> None:
    df = pd.DataFrame({"_key": [" a ", None], "taskNo": [" T1", "T2"]})
    out = clean_frame(df, DANGER, Audit())
    assert list(out.columns) == ["_key", "taskNo"]
    assert out["_key"].tolist()[0] == " a " and out["_key"].isna().tolist() == [False, True]


def test_input_frame_is_not_modified() -> None:
    df = pd.DataFrame({"taskNo": pd.Series([" T1 ", 5.0], dtype=object)})
    clean_frame(df, DANGER, Audit())
    assert df["taskNo"].tolist() == [" T1 ", 5.0]


def test_standard_columns_come_back_as_string_dtype_with_na_for_blank() -> None:
    df = pd.DataFrame({"authDate": pd.Series([dt.date(2024, 1, 2), None], dtype=object),
                       "isRes": pd.Series([1, None], dtype=object),
                       "psnName": pd.Series(["张三", "  "], dtype=object)})
    out = clean_frame(df, PERSON, Audit())
    for col in df.columns:
        assert pd.api.types.is_string_dtype(out[col].dtype) and out[col].dtype == "str"
        assert out[col].isna().tolist() == [False, True]


def test_index_is_kept() -> None:
    df = pd.DataFrame({"taskNo": ["a", "b"]}, index=[10, 7])
    assert clean_frame(df, DANGER, Audit())["taskNo"].index.tolist() == [10, 7]


def test_envelope_and_unit_key_are_cleaned_too() -> None:
    df = pd.DataFrame({"txCode": [9], "busType": ["i"], "orgNo": [" 91320100ma1xxxxx0x"]})
    out = clean_frame(df, DANGER, Audit())
    assert out.iloc[0].tolist() == ["09", "I", "91320100MA1XXXXX0X"]


def test_city_fields_are_cleaned_before_districts() -> None:
    assert standard_fields(UNIT)[0].kind == "city"


# --- text --------------------------------------------------------------------------------


def test_trim_removes_ideographic_and_no_break_spaces() -> None:
    assert one("09", "mainProblem", "\u3000 漏油\u00a0\u200b") == "漏油"


@pytest.mark.parametrize("blank", ["", "   ", "\u3000", "\t\n", None, np.nan, pd.NaT])
def test_blank_values_become_null(blank: object) -> None:
    assert one("09", "mainProblem", blank) is None


def test_inner_spaces_of_text_are_kept() -> None:
    assert one("09", "mainProblem", " 安全 技术档案 ") == "安全 技术档案"


def test_whole_floats_print_without_point_zero() -> None:
    assert clean("09", "mainProblem", [1.0, -3.0, 2.5, 1e20]) == \
        ["1", "-3", "2.5", "100000000000000000000"]


def test_ints_and_decimals_print_plainly() -> None:
    assert clean("09", "mainProblem", [12, Decimal("4.00"), Decimal("4.5")]) == ["12", "4", "4.5"]


def test_true_and_one_stay_distinct_in_text() -> None:
    assert clean("09", "mainProblem", [1, True, 1.0, False]) == ["1", "True", "1", "False"]


def test_utf8_bytes_are_decoded() -> None:
    assert one("09", "mainProblem", "漏油".encode()) == "漏油"


def test_gb18030_bytes_are_decoded() -> None:
    assert one("09", "mainProblem", "安全技术档案不全".encode("gb18030")) == "安全技术档案不全"


def test_lone_surrogates_are_replaced() -> None:
    audit = Audit()
    assert clean("09", "mainProblem", ["漏\ud800油"], audit) == ["漏\ufffd\ufffd\ufffd油"]
    assert audit.examples[("mainProblem", "decode")][0][0].encode("utf-8")


def test_control_characters_are_removed() -> None:
    assert clean("09", "mainProblem", ["漏\x00油\x07", "\x00"]) == ["漏油", None]


def test_numeric_column_dtype_is_cleaned() -> None:
    df = pd.DataFrame({"mainProblem": [1.0, np.nan, 2.5]})
    assert clean_frame(df, DANGER, Audit())["mainProblem"].tolist()[::2] == ["1", "2.5"]


# --- codes -------------------------------------------------------------------------------


def test_fullwidth_code_becomes_halfwidth() -> None:
    assert one("09", "taskNo", "ＹＨ２０２１０８３１") == "YH20210831"


def test_plain_code_keeps_its_case_and_inner_hyphens() -> None:
    assert one("09", "taskNo", "yh-001") == "yh-001"


def test_float_code_loses_point_zero() -> None:
    assert one("05", "planNo", 2002021.0) == "2002021"


def test_numeric_code_gets_its_leading_zeros_back() -> None:
    assert clean("09", "txCode", [6, "6", 9.0, "123"]) == ["06", "06", "09", "123"]


def test_idcard_is_compacted_and_upper_cased() -> None:
    assert one("03", "idCardNo", " 320102 19900101 123x ") == "32010219900101123X"


def test_fullwidth_idcard_becomes_halfwidth() -> None:
    assert one("03", "idCardNo", "３２０１０２１９９００１０１１２３Ｘ") == "32010219900101123X"


def test_uscc_is_compacted_and_upper_cased() -> None:
    assert one("01", "orgNo", "9132-0100-ma1x-xxxx-0x") == "91320100MA1XXXXX0X"


def test_equipment_code_loses_spaces() -> None:
    assert one("06", "regNo", "3110 3201 0000 0009 0001") == "31103201000000090001"


# --- phones ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["13812345678", "138 1234 5678", "138-1234-5678", "+8613812345678",
                                 "+86 138 1234 5678", "86-13812345678", "0086 13812345678",
                                 "１３８１２３４５６７８", 13812345678, 13812345678.0])
def test_mobile_spellings_become_eleven_digits(raw: object) -> None:
    assert one("01", "linkTel", raw) == "13812345678"


@pytest.mark.parametrize("raw", ["025-83451234", "025 83451234", "02583451234", "(025)83451234",
                                 "（０２５）８３４５１２３４", "+86-25-83451234", "025-8345-1234"])
def test_landline_spellings_become_area_hyphen_number(raw: str) -> None:
    assert one("01", "linkTel", raw) == "025-83451234"


def test_four_digit_area_codes_are_recognised() -> None:
    assert one("02", "dLinkTel", "0512 6523 1234") == "0512-65231234"


@pytest.mark.parametrize("raw", ["400-800-1234", "83451234", "025-83451234转801", "电话未知",
                                 "13812345678转8001"])
def test_unrecognised_phones_are_left_for_validation(raw: str) -> None:
    assert one("01", "linkTel", raw) == raw


@pytest.mark.parametrize("raw", ["025-52345678-8001", "025-52345678转8001", "025 5234 5678 转 8001",
                                 "(025)52345678分机8001", "025-52345678 ext. 8001", "02552345678,8001",
                                 "025-52345678#8001", "+86 25 5234 5678 x8001"])
def test_a_landline_extension_is_kept_in_one_spelling(raw: str) -> None:
    assert one("01", "linkTel", raw) == "025-52345678转8001"


def test_a_local_number_gets_the_area_code_of_the_units_city() -> None:
    audit = Audit()
    frame = pd.DataFrame({"dLinkTel": pd.Series(["52345678", "5234567", "025-52345678", None], dtype=object)})
    out = clean_frame(frame, dataset("02"), audit, unit_city="320100")  # 南京市
    assert [None if pd.isna(v) else v for v in out["dLinkTel"]] == [
        "025-52345678", "025-5234567", "025-52345678", None]
    assert audit.counts[("dLinkTel", "phone_area_code")] == 2
    out = clean_frame(frame, dataset("02"), Audit(), unit_city="320500")  # 苏州市
    assert out["dLinkTel"].tolist()[:2] == ["0512-52345678", "0512-5234567"]


def test_a_units_own_city_code_wins_over_its_registration_city() -> None:
    frame = pd.DataFrame({"cityCode": ["320500", None], "linkTel": ["52345678", "52345678"]})
    out = clean_frame(frame, UNIT, Audit(), unit_city="320100")
    assert out["linkTel"].tolist() == ["0512-52345678", "025-52345678"]


# From the telephone numbering plan (MIIT): the area codes of Jiangsu's thirteen cities.
JIANGSU_AREA_CODES = {"320100": "025", "320200": "0510", "320300": "0516", "320400": "0519",
                      "320500": "0512", "320600": "0513", "320700": "0518", "320800": "0517",
                      "320900": "0515", "321000": "0514", "321100": "0511", "321200": "0523",
                      "321300": "0527"}


def test_area_codes_of_cities_come_from_libphonenumber() -> None:
    from etl.standard import phones

    assert {c: phones.area_code(c) for c in JIANGSU_AREA_CODES} == JIANGSU_AREA_CODES
    assert phones.area_code("320115") == "025"  # a district: its city's code
    assert (phones.area_code("110100"), phones.area_code("310100")) == ("010", "021")
    assert phones.city_of_org("91320115MA1R7KX30X") == "320100"


# --- dates -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    "2024-07-08", "2024/7/8", "20240708", "2024.07.08", "2024年7月8日", "2024年07月08日",
    "2024-07-08 13:45:00", "2024-07-08T13:45:00", "2024-07-08 13:45", "2024-07-08 00:00:00.0",
    "２０２４－０７－０８", "２０２４年７月８日", " 2024-7-8 ", 20240708, 20240708.0,
    dt.date(2024, 7, 8), dt.datetime(2024, 7, 8, 13, 45), pd.Timestamp("2024-07-08 13:45"),
    np.datetime64("2024-07-08"),
])
def test_date_spellings_become_iso(raw: object) -> None:
    assert one("09", "checkDate", raw) == "2024-07-08"


def test_datetime64_column_becomes_iso() -> None:
    df = pd.DataFrame({"checkDate": pd.to_datetime(["2024-07-08 13:45", None])})
    assert clean_frame(df, DANGER, Audit())["checkDate"].tolist()[0] == "2024-07-08"


@pytest.mark.parametrize("zero", ["0000-00-00", "0000-00-00 00:00:00", "00000000"])
def test_mysql_zero_dates_become_null(zero: str) -> None:
    assert one("09", "checkDate", zero) is None


@pytest.mark.parametrize("impossible", ["2024-02-30", "2023-02-29", "2024-13-01", "2024-00-10",
                                        "2024-04-31", "0000-01-01", "2024/2/30"])
def test_impossible_dates_are_left_unconverted(impossible: str) -> None:
    assert one("09", "checkDate", impossible) == impossible


def test_leap_day_is_a_real_date() -> None:
    assert one("09", "checkDate", "2024/2/29") == "2024-02-29"


@pytest.mark.parametrize("garbage", ["下周", "07/08/2024", "2024-07", "2024-07-08abc", "45481"])
def test_unknown_date_spellings_are_left_as_trimmed_text(garbage: str) -> None:
    assert one("09", "checkDate", f" {garbage} ") == garbage


def test_far_future_date_is_kept() -> None:
    assert one("03", "endDate", "9999/12/31") == "9999-12-31"


# --- flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "flag"), [
    (1, "1"), (0, "0"), (1.0, "1"), (0.0, "0"), ("1", "1"), ("0", "0"), ("1.0", "1"), ("0.0", "0"),
    ("是", "1"), ("否", "0"), ("Y", "1"), ("N", "0"), ("y", "1"), ("n", "0"), ("yes", "1"),
    ("no", "0"), ("YES", "1"), ("true", "1"), ("false", "0"), ("True", "1"), ("False", "0"),
    (True, "1"), (False, "0"), ("有", "1"), ("无", "0"), ("１", "1"), (" 是 ", "1"),
])
def test_flag_spellings_become_one_or_zero(raw: object, flag: str) -> None:
    assert one("03", "isOpr", raw) == flag


@pytest.mark.parametrize("raw", ["2", "也许", "-1"])
def test_unknown_flags_are_left_for_validation(raw: str) -> None:
    assert one("03", "isOpr", raw) == raw


# --- enumerations ------------------------------------------------------------------------


def test_halfwidth_parentheses_become_fullwidth() -> None:
    assert one("06", "controlLevel", "公司(厂)级") == "公司（厂）级"


def test_enum_spaces_and_width_are_normalised() -> None:
    assert one("06", "controlLevel", " 部门 (装置、车间) 级 ") == "部门（装置、车间）级"


@pytest.mark.parametrize(("field", "raw", "canon"), [
    ("inherentriskLevel", "重大", "重大风险"), ("inherentriskLevel", "较大", "较大风险"),
    ("remainriskLevel", "一般", "一般风险"), ("remainriskLevel", "低", "低风险"),
    ("controlLevel", "厂级", "公司（厂）级"), ("controlLevel", "公司级", "公司（厂）级"),
    ("controlLevel", "车间级", "部门（装置、车间）级"), ("controlLevel", "部门级", "部门（装置、车间）级"),
    ("controlLevel", "班组级", "岗位（班组）级"), ("controlLevel", "岗位级", "岗位（班组）级"),
])
def test_risk_point_synonyms(field: str, raw: str, canon: str) -> None:
    assert one("06", field, raw) == canon


@pytest.mark.parametrize(("field", "raw", "canon"), [
    ("dealInfo", "已完成", "已整改"), ("dealInfo", "已整改完成", "已整改"),
    ("acceptInfo", "合格", "整改验收合格"), ("acceptInfo", "不合格", "整改验收不合格"),
    ("troubleLevel", "一般", "一般事故隐患"), ("troubleType", "作业过程(人员)类", "作业过程（人员）类"),
])
def test_hidden_danger_synonyms(field: str, raw: str, canon: str) -> None:
    assert one("09", field, raw) == canon


def test_synonym_depends_on_the_fields_enum() -> None:
    assert one("06", "inherentriskLevel", "一般") == "一般风险"
    assert one("09", "troubleLevel", "一般") == "一般事故隐患"


def test_every_synonym_target_is_a_value_of_some_enum() -> None:
    values = {v for ds in DATASETS for f in standard_fields(ds) for v in (f.enum or ())}
    assert set(ENUM_SYNONYMS) - values == set()


def test_every_synonym_gives_its_target_in_every_field_that_has_it() -> None:
    wrong = [(f.name, syn, got) for ds in DATASETS for f in standard_fields(ds)
             if f.enum and f.kind != "flag"
             for canon, synonyms in ENUM_SYNONYMS.items() if canon in f.enum
             for syn in synonyms
             for got in [one(ds.tx_code, f.name, syn)] if got != canon]
    assert wrong == []


def test_unknown_enum_value_is_left_for_validation() -> None:
    assert one("06", "inherentriskLevel", "极高") == "极高"


@pytest.mark.parametrize(("raw", "code"), [(0, "0"), (1, "1"), (1.0, "1"), ("0.0", "0"), ("１", "1"),
                                           ("设备风险", "0")])
def test_risk_type_accepts_numbers(raw: object, code: str) -> None:
    assert one("06", "riskType", raw) == code


def test_bus_type_is_upper_cased() -> None:
    assert clean("09", "busType", ["i", "u", "d", "x"]) == ["I", "U", "D", "x"]


def test_licence_kind_without_suffix_is_completed() -> None:
    assert one("03", "lcnsKind", "场(厂)内专用机动车辆") == "场（厂）内专用机动车辆作业"


# --- multi-valued fields -----------------------------------------------------------------


def test_multi_enum_is_split_canonicalised_and_joined() -> None:
    assert one("06", "accidentType", "爆炸,泄露；受困 / 坠落") == "爆炸、泄漏、故障或者受困（滞留）、坠落"


def test_multi_enum_drops_duplicates_keeping_order() -> None:
    assert one("06", "accidentType", "泄漏、爆炸、泄漏、受困、滞留") == "泄漏、爆炸、故障或者受困（滞留）"


def test_multi_enum_single_synonym() -> None:
    assert one("07", "accidentType", "故障") == "故障或者受困（滞留）"


def test_multi_enum_keeps_a_canonical_value_with_parentheses_whole() -> None:
    assert one("06", "accidentType", "故障或者受困(滞留)") == "故障或者受困（滞留）"


def test_multi_enum_keeps_unknown_parts_for_validation() -> None:
    assert one("06", "accidentType", "爆炸,火灾") == "爆炸、火灾"


def test_list_field_is_joined_by_its_separator() -> None:
    assert one("07", "dutyMan", "张三,李四、王五；赵六/ 钱七") == "张三，李四，王五，赵六，钱七"


def test_list_field_keeps_spaces_inside_names() -> None:
    assert one("06", "dutyMan", "John Smith,张三") == "John Smith，张三"


# --- divisions in frames -----------------------------------------------------------------


def test_city_name_becomes_code() -> None:
    assert clean("01", "cityCode", ["江苏省南京市", "南京市", "南京", "320100", 320100]) == ["320100"] * 5


def test_unknown_city_name_is_left() -> None:
    assert one("01", "cityCode", "火星市") == "火星市"


def test_district_uses_the_rows_cleaned_city() -> None:
    df = pd.DataFrame({"cityCode": ["南京市", "徐州", "320100", None],
                       "aeraCode": ["鼓楼区", "鼓楼区", "下关区", "鼓楼区"]})
    out = clean_frame(df, UNIT, Audit())
    assert out["aeraCode"].tolist()[:3] == ["320106", "320302", "320106"]
    assert out["aeraCode"].tolist()[3] == "鼓楼区"


def test_district_name_without_city_column() -> None:
    assert clean("01", "aeraCode", ["玄武区", "白下区", "320103", "320102"]) == \
        ["320102", "320104", "320104", "320102"]


# --- audit -------------------------------------------------------------------------------


def test_audit_counts_rows_not_distinct_values() -> None:
    audit = Audit()
    clean("09", "troubleLevel", ["一般"] * 5 + ["较大事故隐患", " 较大事故隐患"], audit)
    assert audit.counts[("troubleLevel", "enum_synonym")] == 5
    assert audit.counts[("troubleLevel", "trim")] == 1


def test_audit_names_each_rule() -> None:
    audit = Audit()
    clean("09", "checkDate", ["2024/7/8", "0000-00-00", "２０２４-07-08", " ", "2024-02-30"], audit)
    assert audit.counts == {("checkDate", "date"): 1, ("checkDate", "zero_date"): 1,
                            ("checkDate", "halfwidth"): 1, ("checkDate", "blank_to_null"): 1}


def test_unchanged_values_are_not_counted() -> None:
    audit = Audit()
    clean("09", "checkDate", ["2024-07-08", None, "2024-02-30"], audit)
    assert audit.counts == {}


def test_audit_keeps_at_most_three_examples() -> None:
    audit = Audit()
    clean("09", "mainProblem", [f" x{i}" for i in range(10)], audit)
    assert audit.counts[("mainProblem", "trim")] == 10
    assert audit.examples[("mainProblem", "trim")] == [(" x0", "x0"), (" x1", "x1"), (" x2", "x2")]


def test_audit_shows_null_as_a_marker() -> None:
    audit = Audit()
    clean("09", "mainProblem", ["  "], audit)
    assert audit.examples[("mainProblem", "blank_to_null")] == [("  ", NULL_SHOWN)]


def test_audit_examples_mask_id_numbers() -> None:
    audit = Audit()
    clean("03", "idCardNo", ["32010219900101123x"], audit)
    assert audit.examples[("idCardNo", "upper")] == [("320102********123x", "320102********123X")]


def test_audit_examples_mask_phones() -> None:
    audit = Audit()
    clean("01", "linkTel", ["138 1234 5678"], audit)
    assert audit.examples[("linkTel", "phone")] == [("138****5678", "138****5678")]


def test_audit_examples_mask_names() -> None:
    audit = Audit()
    clean("03", "psnName", [" 欧阳娜娜"], audit)
    assert audit.examples[("psnName", "trim")] == [(" 欧阳**", "欧阳**")]


def test_audit_examples_mask_each_name_of_a_list() -> None:
    audit = Audit()
    clean("07", "dutyMan", ["张三,李四"], audit)
    assert audit.examples[("dutyMan", "multi_value")] == [("张*,李*", "张*，李*")]


def test_audit_examples_mask_id_numbers_in_any_field() -> None:
    audit = Audit()
    clean("03", "certNo", ["３２０１０２１９９００１０１１２３４"], audit)
    assert audit.examples[("certNo", "halfwidth")][0][1] == "320102********1234"


def test_audit_examples_mask_certificate_numbers_whatever_they_look_like() -> None:
    audit = Audit()
    clean("03", "certNo", [" 320102850307123"], audit)  # a first-generation (15-digit) ID number
    assert audit.examples[("certNo", "trim")] == [(" 32***********23", "32***********23")]


def test_audit_shows_bytes_by_length_only() -> None:
    audit = Audit()
    clean("03", "psnName", ["张三".encode("gb18030")], audit)
    assert audit.examples[("psnName", "decode")] == [("<4 bytes>", "张*")]


def test_audit_counts_number_formatting() -> None:
    audit = Audit()
    clean("09", "mainProblem", [1.0, 2.0, 2.5, 3], audit)
    assert audit.counts == {("mainProblem", "number_format"): 2}


def test_audit_counts_division_codes() -> None:
    audit = Audit()
    clean("01", "cityCode", ["南京市", "南京市", "320100"], audit)
    assert audit.counts == {("cityCode", "division_code"): 2}
    assert audit.examples[("cityCode", "division_code")] == [("南京市", "320100")]


def test_audit_merge_adds_counts_and_caps_examples() -> None:
    a, b = Audit(), Audit()
    clean("09", "mainProblem", [" a", " b"], a)
    clean("09", "mainProblem", [" b", " c", " d"], b)
    a.merge(b)
    assert a.counts[("mainProblem", "trim")] == 5
    assert a.examples[("mainProblem", "trim")] == [(" a", "a"), (" b", "b"), (" c", "c")]


def test_audit_rows_are_sorted_dicts() -> None:
    audit = Audit()
    clean("09", "taskNo", [" Ｂ1"], audit)
    clean("09", "checkDate", ["2024/7/8"], audit)
    rows = audit.rows()
    assert [(r["field"], r["rule"]) for r in rows] == \
        [("checkDate", "date"), ("taskNo", "halfwidth"), ("taskNo", "trim")]
    assert rows[0] == {"field": "checkDate", "rule": "date", "count": 1,
                       "examples": [("2024/7/8", "2024-07-08")]}


def test_clean_column_can_be_used_alone() -> None:
    out = clean_column(pd.Series(["是", "否"]), PERSON.field("isOpr"), Audit())
    assert out.tolist() == ["1", "0"]


# --- masking -----------------------------------------------------------------------------


def test_mask_idcard_keeps_region_and_last_four() -> None:
    assert mask("320102199001011234", "idcard") == "320102********1234"


def test_mask_mobile_keeps_prefix_and_last_four() -> None:
    assert mask("13812345678", "phone") == "138****5678"


def test_mask_landline_keeps_area_code_and_last_two() -> None:
    assert mask("025-83451234", "phone") == "025-******34"
    assert mask("051265231234", "phone") == "0512******34"


@pytest.mark.parametrize(("name", "masked"), [("张三", "张*"), ("张小三", "张**"), ("欧阳娜娜", "欧阳**"),
                                              ("欧阳", "欧*"), ("张", "*")])
def test_mask_name_keeps_family_name(name: str, masked: str) -> None:
    assert mask(name, "name") == masked


@pytest.mark.parametrize("kind", ["uscc", "text", "date", "code"])
def test_mask_leaves_non_personal_kinds(kind: str) -> None:
    assert mask("91320100MA1XXXXX0X", kind) == "91320100MA1XXXXX0X"


def test_mask_none_is_none() -> None:
    assert mask(None, "idcard") is None


def test_mask_text_finds_ids_and_mobiles() -> None:
    text = "身份证32010219900101123X有误，联系13812345678；设备31103201000000090001"
    assert mask_text(text) == "身份证320102********123X有误，联系138****5678；设备31103201000000090001"


# --- robustness --------------------------------------------------------------------------

_raw_values = st.one_of(
    st.none(), st.text(max_size=30), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.dates(), st.datetimes(), st.booleans(), st.binary(max_size=12),
    st.sampled_from(["0000-00-00", "2024-02-30", "公司(厂)级", "南京市", "鼓楼区", "是", " ", "\u3000"]),
)
_ALL_FIELDS = [(ds.tx_code, f.name) for ds in DATASETS for f in standard_fields(ds)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_raw_values, min_size=1, max_size=20), st.data())
def test_any_raw_values_in_any_field_never_raise(values: list, data: st.DataObject) -> None:
    tx_code, name = data.draw(st.sampled_from(_ALL_FIELDS))
    ds = dataset(tx_code)
    df = pd.DataFrame({name: pd.Series(values, dtype=object), "_key": range(len(values))})
    if "cityCode" in ds.field_names and name == "aeraCode":
        df["cityCode"] = pd.Series(values[::-1], dtype=object)
    out = clean_frame(df, ds, Audit())
    assert len(out) == len(values)
    assert out[name].dtype == "str"
    assert out["_key"].tolist() == list(range(len(values)))


@settings(max_examples=15, deadline=None)
@given(st.lists(_raw_values, min_size=1, max_size=30))
def test_whole_dataset_frames_of_random_values_never_raise(values: list) -> None:
    for ds in DATASETS:
        df = pd.DataFrame({f.name: pd.Series(values, dtype=object) for f in ds.fields})
        audit = Audit()
        out = clean_frame(df, ds, audit)
        for f in ds.fields:
            assert out[f.name].dtype == "str" and len(out[f.name]) == len(values)
        assert all(len(ex) <= 3 for ex in audit.examples.values())


@settings(max_examples=100, deadline=None)
@given(st.dates(min_value=dt.date(1, 1, 1)))
def test_every_real_date_round_trips_in_every_spelling(day: dt.date) -> None:
    iso = f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
    spellings = [day, iso, iso.replace("-", "/"), iso.replace("-", ""), iso.replace("-", "."),
                 f"{day.year:04d}年{day.month}月{day.day}日"]
    assert clean("09", "checkDate", spellings) == [iso] * len(spellings)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_raw_values, min_size=2, max_size=8), st.data())
def test_a_column_cleans_like_its_values_one_by_one(values: list, data: st.DataObject) -> None:
    """Factorising and expanding back must not mix rows up."""
    tx_code, name = data.draw(st.sampled_from(_ALL_FIELDS))
    together = clean(tx_code, name, values)
    assert together == [one(tx_code, name, v) for v in values]


def test_mixed_date_spellings_keep_their_rows() -> None:
    assert clean("09", "checkDate", ["2024-07-08", "2024/7/9", None, "2024.07.10", "x",
                                     "2024年7月11日", "0000-00-00", "20240712"]) == \
        ["2024-07-08", "2024-07-09", None, "2024-07-10", "x", "2024-07-11", None, "2024-07-12"]


# --- arrays ------------------------------------------------------------------------------


def test_an_array_of_names_is_joined_by_the_fields_separator() -> None:
    audit = Audit()
    assert clean("07", "dutyMan", [["王志刚", "刘洋"], ("张三",), [], ["李四", None, " "]], audit) == [
        "王志刚，刘洋", "张三", None, "李四"]
    assert audit.counts[("dutyMan", "array")] == 4


def test_an_array_of_enumeration_values_is_joined_and_canonicalised() -> None:
    f = next(f for f in dataset("07").fields if f.name == "accidentType")
    first, second = f.enum[0], f.enum[1]
    assert clean("07", "accidentType", [[first, second], [second]]) == [f"{first}、{second}", second]


def test_a_json_array_in_text_is_joined() -> None:
    assert clean("07", "dutyMan", ['["王志刚", "刘洋"]', "[]", "[王志刚]"]) == ["王志刚，刘洋", None, "[王志刚]"]
    f = next(f for f in dataset("07").fields if f.name == "accidentType")
    assert clean("07", "accidentType", [f'["{f.enum[0]}", "{f.enum[2]}"]']) == [f"{f.enum[0]}、{f.enum[2]}"]


def test_an_array_in_a_single_valued_text_field_is_joined_not_stringified() -> None:
    assert clean("09", "mainProblem", [["安全阀过期", "压力表损坏"]]) == ["安全阀过期、压力表损坏"]


@pytest.mark.parametrize("raw", ["52345678-8001", "5234 5678 转 8001", "5234-5678"])
def test_a_local_number_with_an_extension_or_a_hyphen_is_completed_too(raw: str) -> None:
    out = clean_frame(pd.DataFrame({"dLinkTel": pd.Series([raw], dtype=object)}), dataset("02"), Audit(),
                      unit_city="320100")["dLinkTel"].iloc[0]
    assert out.startswith("025-5234") and ("转8001" in out) == ("8001" in raw)


# --- short columns: the same rules in Python (issue 26) ----------------------------------------

_DATE_PIECES = st.sampled_from(["2024", "0000", "1900", "2023", "7", "07", "2", "29", "30", "31",
                                "13", "00", "-", "/", ".", "年", "月", "日", " ", "\t", "\n",
                                "\x0b", "T", "10:30", "10时30分", ":45", ".5", "Z", "+08:00",
                                "秒", "x", "", "２", "٣", "\u3000"])


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.lists(_DATE_PIECES, max_size=7).map("".join)),
                       min_size=1, max_size=12))
@example(values=["2024-7-8", "2024/07/08 10:30", "2024年7月8日", "20240708", "0000-00-00", "00000000",
                 "2024-02-30", "2024-02-29", "2023-02-29", "1900-02-29", "2000-2-29", "2024-13-01",
                 "2024-7-8T10:30:45.5+08:00", "2024-7-8 10时30分15秒", "2024-7-8\n", "2024-7-8 \t",
                 "2024-7-8\x0b", "２０２４-7-8", "2024-7-8Z", "2024-07-08", "2024-99-99", None, "x",
                 "0000-07-08", "0000-7-8", "2024-7-8 10:30\n", "20240708\n", "2024-7-8 10:30:45秒\n"])
def test_short_date_columns_clean_as_arrow_does(values):
    """`_date_short` (a few distinct values, Python) and `_date`'s Arrow kernels agree on
    every spelling: values, NULLs and rule names."""
    import etl.standard.clean as clean

    u = pd.Series(pd.array(values, dtype=clean.TEXT))
    short_values, short_rules = clean._date_short(u)
    saved, clean._SHORT = clean._SHORT, -1  # every column takes the Arrow way
    try:
        long_values, long_rules = clean._date(u)
    finally:
        clean._SHORT = saved
    assert short_values.dtype == long_values.dtype
    assert short_values.fillna("<NULL>").tolist() == long_values.fillna("<NULL>").tolist()
    assert short_rules.tolist() == long_rules.tolist()
