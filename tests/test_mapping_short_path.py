"""A frame of at most `transform.SHORT` rows is mapped over Python lists (`_apply_short`, issue
26); it must give exactly the frame the column-wise pandas path gives (`_apply_long`): the same
columns, dtypes, values, NA spellings and index, for every field of every dataset, whatever the
source's dtypes and the mapping's shapes (value maps, defaults with templates, constants,
composite keys, deleted markers). Where pandas raises, the list path raises the same error."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from etl import standard
from etl.mapping import Mapping
from etl.mapping.model import MappingModel
from etl.pipeline import transform
from helpers import ORG_A

COLUMNS = [f"c{i}" for i in range(6)]

_OBJECTS = st.sampled_from([
    1, 1.0, 0, -0.0, 2.5, True, False, "1", "2", " 1", "a", "x", "SB", "ZY", "设备", "作业", "", " ",
    "\u3000", " \u3000 ", "\x1c", "\u200b", None, np.nan, pd.NaT, pd.NA, Decimal("1.0"),
    Decimal("1.00"), Decimal("2.50"), Decimal("NaN"), dt.date(2024, 1, 1),
    dt.datetime(2024, 1, 1, 8, 30), b"1", b" ", b"", b"\xff", np.bool_(True), np.float32(1.0),
    np.int64(2), np.float64(np.nan), np.datetime64("2024-01-01"), [1], ("a",)])
_TEXTS = st.sampled_from(["1", "2", "a", None, "SB", "ZY", "设备", "作业", " 1", "", " ", "\u3000",
                          "合格", "x"])
_FLOATS = st.sampled_from([1.0, 0.0, -0.0, 2.5, np.nan, np.inf, 2.0, 1e20])
_DECIMALS = st.sampled_from([Decimal("1.0"), Decimal("1.00"), Decimal("2.50"), Decimal("0"), None,
                             Decimal("NaN")])
_TIMES = st.sampled_from([pd.Timestamp("2024-07-08"), pd.Timestamp("2024-07-08 10:30"), pd.NaT])

#: each source column's dtype and values: the dtypes `extract` gives (text as `str`, numbers,
#: flags, mixed objects) and some the list path leaves to pandas ("string", Int64, datetimes)
KINDS = {
    "object": (_OBJECTS, object),
    "str": (_TEXTS, "str"),
    "string": (_TEXTS, pd.StringDtype()),
    "int64": (st.integers(-3, 3), "int64"),
    "float64": (_FLOATS, "float64"),
    "bool": (st.booleans(), "bool"),
    "Int64": (st.sampled_from([1, 0, 2, None]), "Int64"),
    "datetime": (_TIMES, "datetime64[ns]"),
    "decimal": (_DECIMALS, object),
}

VALUE_MAPS = st.sampled_from([
    {"SB": 0, "ZY": 1}, {"设备": 0, "作业": 1, "1": 1}, {"1": "重大风险", "2": "较大风险"},
    {"SB": "设备类", "ZY": "作业过程（人员）类", "a": "x"}, {"合格": "整改验收合格"}, {"1": 5, "0": 2},
    {"1": True}, {"a": 2.5, "x": "y"}, {"1": "A", "a": None}, {"2": 2 ** 70}, {"x": 0, "1": "y"},
    {"nan": "NaN!", "None": 0}, {}])
TEMPLATES = st.sampled_from(["{unit.comName}", "{unit.orgNo}", "{c1}-{unit.orgNo}", "{c2}{c3}",
                             "x{missing}y", "固定", "{c0}", "{c4}/{c5}/{c0}"])
MARKERS = st.sampled_from([1, "1", 1.0, True, 0, "Y", "D", "None", "nan", "NaT", "<NA>", 2.5])


@st.composite
def rules(draw) -> dict | None:
    """One field's rule in every shape the mapping file allows (None: not mapped)."""
    column = st.sampled_from(COLUMNS)
    return draw(st.one_of(
        st.none(),
        st.builds(lambda c: {"column": c}, column),
        st.builds(lambda c, m: {"column": c, "values": m}, column, VALUE_MAPS),
        st.builds(lambda c, t: {"column": c, "default": t}, column, TEMPLATES),
        st.builds(lambda c, m, t: {"column": c, "values": m, "default": t}, column, VALUE_MAPS,
                  TEMPLATES),
        st.builds(lambda t: {"default": t}, TEMPLATES),
        st.builds(lambda v: {"value": v}, st.sampled_from([1, "x", 2.5, True, "设备", 0]))))


@st.composite
def cases(draw, ds: standard.Dataset) -> tuple[pd.DataFrame, Mapping]:
    n = draw(st.integers(0, 12))
    data = {}
    for c in COLUMNS:
        values, dtype = KINDS[draw(st.sampled_from(sorted(KINDS)))]
        data[c] = pd.Series(draw(st.lists(values, min_size=n, max_size=n)), dtype=dtype)
    raw = pd.DataFrame(data)
    fields = {f.name: r for f in ds.fields if (r := draw(rules())) is not None}
    spec: dict = {"table": "t", "key": draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=3)),
                  "fields": fields}
    if draw(st.booleans()):
        spec["updated_at"] = draw(st.sampled_from(COLUMNS))
    if draw(st.booleans()):
        spec["deleted"] = {"column": draw(st.sampled_from(COLUMNS)), "value": draw(MARKERS)}
    model = MappingModel.model_validate({
        "unit": {"orgNo": ORG_A, "comName": "南京某某化工有限公司"},
        "source": {"url": "sqlite:///unused.sqlite"}, "datasets": {ds.tx_code: spec}})
    return raw, Mapping(Path("unit.yaml"), model)


def _long(raw: pd.DataFrame, m: Mapping, tx_code: str, short: int) -> pd.DataFrame | BaseException:
    saved, transform.SHORT = transform.SHORT, short
    try:
        return transform._apply_long(raw, m, tx_code)
    except Exception as e:  # noqa: BLE001 - the list path must raise the same
        return e
    finally:
        transform.SHORT = saved


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, want, check_dtype=True, check_exact=True)
    for name in want.columns:  # None stays None, NaN NaN, 1 an int and 1.0 a float
        assert [type(v) for v in got[name].tolist()] == [type(v) for v in want[name].tolist()], name


def same_as_pandas(raw: pd.DataFrame, m: Mapping, tx_code: str) -> None:
    """`_apply_short` against `_apply_long` as a short frame takes it today (value maps over
    lists in `_map_short`) and with every step in pandas (`SHORT` = -1)."""
    for short in (transform.SHORT, -1):
        want = _long(raw, m, tx_code, short)
        if isinstance(want, BaseException):
            with pytest.raises(type(want)):
                transform._apply_short(raw, m, tx_code)
        else:
            assert_same(transform._apply_short(raw, m, tx_code), want)


@pytest.mark.parametrize("tx_code", standard.TX_CODES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_short_frame_maps_as_the_pandas_path_does(tx_code, data):
    ds = standard.dataset(tx_code)
    raw, m = data.draw(cases(ds))
    same_as_pandas(raw, m, tx_code)


def test_the_demo_units_map_as_the_pandas_path_does():
    """The shapes the demo mappings use (`riskType: {SB: 0, ZY: 1}`, `{unit.comName}` defaults,
    soft-delete markers), over source dtypes as `extract` reads them."""
    raw = pd.DataFrame({
        "c0": pd.Series(["SB", "ZY", "SB", None, "x"], dtype="str"),
        "c1": pd.Series([1, 0, 1, 1, 0], dtype="int64"),
        "c2": pd.Series(["甲", None, " ", "\u3000", "乙"], dtype="str"),
        "c3": pd.Series([1.0, np.nan, 2.0, 3.5, 4.0]),
        "c4": pd.Series(["2024-01-01", "2024-01-02", None, "2024-01-03", "2024-01-04"], dtype="str"),
        "c5": pd.Series(["a", "b", "c", "d", "e"], dtype="str")})
    model = MappingModel.model_validate({
        "unit": {"orgNo": ORG_A, "comName": "南京某某化工有限公司"},
        "source": {"url": "sqlite:///unused.sqlite"},
        "datasets": {"06": {"table": "t", "key": ["c5", "c3"], "updated_at": "c4",
                            "deleted": {"column": "c1", "value": 1},
                            "fields": {"riskNo": "c5", "riskType": {"column": "c0", "values": {"SB": 0, "ZY": 1}},
                                       "dutyName": {"column": "c2", "default": "{unit.comName}"},
                                       "checkMan": {"column": "c2", "default": "{c5}-{c3}"}}}}})
    m = Mapping(Path("unit.yaml"), model)
    for rows in (slice(None), slice(0, 3), slice(0, 2), slice(0, 0)):
        same_as_pandas(raw.iloc[rows].reset_index(drop=True), m, "06")
    assert transform.apply_mapping(raw.iloc[0:3], m, "06")["riskType"].dtype == "int64"


def test_frames_at_and_over_the_threshold_map_as_the_pandas_path_does():
    """`apply_mapping` takes the list path up to `SHORT` rows: the same frame either side."""
    raw = pd.DataFrame({"c0": pd.Series([f"k{i}" if i % 7 else None for i in range(transform.SHORT + 1)],
                                        dtype="str"),
                        "c1": pd.Series([["SB", "ZY", "x"][i % 3] for i in range(transform.SHORT + 1)],
                                        dtype=object)})
    model = MappingModel.model_validate({
        "unit": {"orgNo": ORG_A, "comName": "南京某某化工有限公司"},
        "source": {"url": "sqlite:///unused.sqlite"},
        "datasets": {"06": {"table": "t", "key": ["c0", "c1"], "deleted": {"column": "c1", "value": "x"},
                            "fields": {"riskNo": {"column": "c0", "default": "{c1}"},
                                       "riskType": {"column": "c1", "values": {"SB": 0, "ZY": 1}}}}}})
    m = Mapping(Path("unit.yaml"), model)
    for rows in (transform.SHORT, transform.SHORT + 1):
        assert_same(transform.apply_mapping(raw.iloc[:rows], m, "06"),
                    _long(raw.iloc[:rows], m, "06", -1))
