"""Short columns take plain-Python paths (issue 26: pandas' fixed cost per operation is most
of a small unit's work); each must give exactly what the pandas path gives."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from etl.mapping import as_key
from etl.pipeline import transform

RAW = st.sampled_from([1, 1.0, True, False, 0, "1", "2", "a", None, np.nan, 2.5, "设备", "作业",
                       Decimal("1.0"), dt.date(2024, 1, 1), " 1", "x", pd.NaT, b"1", "是"])
VALUE_MAPS = st.sampled_from([
    {"1": "重大风险", "2": "较大风险"}, {"设备": "0", "作业": "1"}, {"x": "y", "2": "z", "a": "设备"},
    {"true": "是", "0": "否"}, {"设备": 0, "1": 1}, {"a": 2.5, "x": "y"}, {"1": True},
    {"1": "A", "a": None}, {}])


def pandas_map_values(s: pd.Series, values: dict) -> pd.Series:
    """`transform._map_values` as it was for every column: pandas' map and where."""
    uniques = s.dropna().unique()
    table = {u: values[k] for u in uniques if (k := as_key(u)) in values}
    if not table:
        return s
    mapped = s.map(table)
    return mapped.where(mapped.notna(), s)


@settings(max_examples=400, deadline=None)
@given(raw=st.lists(RAW, max_size=15), values=VALUE_MAPS, data=st.data())
def test_a_short_column_maps_its_values_as_pandas_does(raw, values, data):
    index = data.draw(st.permutations(range(40)))[:len(raw)]
    s = pd.Series(raw, dtype=object, index=index, name="c")
    got, want = transform._map_values(s, values), pandas_map_values(s, values)
    pd.testing.assert_series_equal(got, want, check_exact=True)
    assert [type(v) for v in got.tolist()] == [type(v) for v in want.tolist()]


TEXTS = st.sampled_from(["1", "2", "a", None, "设备", "作业", " 1", "x", "是", "SB", "ZY", ""])


@settings(max_examples=300, deadline=None)
@given(raw=st.lists(TEXTS, max_size=15),
       values=VALUE_MAPS.filter(lambda m: all(isinstance(v, str) for v in m.values())),
       dtype=st.sampled_from(["str", pd.StringDtype(), pd.StringDtype("python")]))
def test_a_short_text_column_maps_its_values_as_pandas_does(raw, values, dtype):
    """Maps to text only: any other goes to pandas' own path (which may refuse it on Arrow
    text, as it did before)."""
    s = pd.Series(raw, dtype=dtype, name="c")
    got, want = transform._map_values(s, values), pandas_map_values(s, values)
    pd.testing.assert_series_equal(got, want, check_exact=True)
    assert [type(v) for v in got.tolist()] == [type(v) for v in want.tolist()]


@settings(max_examples=200, deadline=None)
@given(raw=st.lists(TEXTS, max_size=15), step=st.integers(1, 3))
def test_row_hash_reads_a_cleaned_column_as_pandas_spells_it(raw, step):
    """`rowHash` takes a cleaned (Arrow text) column's values as they are: the same bytes as
    pandas' `astype("string")` with NULL as `NULL_MARK`, slices included."""
    import pyarrow as pa

    from etl.standard.clean import TEXT

    s = pd.Series(pd.array(raw, dtype=TEXT)).iloc[::step]
    got = transform._hash_text(s)
    got = got.combine_chunks() if isinstance(got, pa.ChunkedArray) else got
    want = pa.array(s.astype("string").fillna(transform.NULL_MARK), type=pa.large_string())
    assert got.equals(want)


@settings(max_examples=200, deadline=None)
@given(before=st.lists(TEXTS, min_size=1, max_size=12), data=st.data())
def test_a_short_step_s_changes_are_counted_as_pandas_counts_them(before, data):
    """`clean._differ` (short columns) against `_record`'s pandas comparison."""
    from etl.standard import clean

    after = data.draw(st.lists(TEXTS, min_size=len(before), max_size=len(before)))
    b, a = pd.Series(pd.array(before, dtype=clean.TEXT)), pd.Series(pd.array(after, dtype=clean.TEXT))
    same = b.eq(a).to_numpy(dtype=bool, na_value=False)
    want = ~(same | (b.isna().to_numpy() & a.isna().to_numpy()))
    got = [clean._differ(x, y) for x, y in zip(b.tolist(), a.tolist())]
    assert got == want.tolist()


# --- a short column cleaned over lists (clean._clean_short) against the Arrow/pandas path --------

def _all_fields() -> list:
    from etl.standard import DATASETS
    from etl.standard.clean import standard_fields

    return sorted({(ds.tx_code, f.name): f for ds in DATASETS for f in standard_fields(ds)}.items())


_SPELLINGS = ([
        "0000-00-00", "2024-02-30", "2024/7/8", "２０２４年7月8日", "20240708", " 2024-07-08 ", "公司(厂)级",
        "公司级", "重大", "红色", "较大风险", "一般", "设备类", "泄露、倾翻", "泄漏,坠落,泄漏", '["泄漏", "坠落"]',
        "[]", "南京市", "苏州市", "鼓楼区", "姑苏区", "320102", "是", "否", "Y", "ｙｅｓ", "1.0", " ", "\u3000",
        "", "\x00a\x07", "a\x7f", "13812345678", "+86 138-1234-5678", "83451234", "025 8345 1234",
        "5234-5678转8001", "0512-65231234", "91320100MA1XXXXX0x", "3201 0219 9001 0112 3x",
        "３２０１０２１９９００１０１１２３Ｘ", "straße", "ß", "6", "٣", "０６", "06", "I", "insert", "删除",
        "\ud800x", "3201\t0219—9001－0112\u30003x", "91320100\u2003MA1X‐XXXX0x\x0b", "张三，李四", "张三/ 李四;王五", "T", "Q1", "电梯", "四色图"])
_CLEAN_RAW = st.one_of(
    st.none(), st.just(np.nan), st.just(pd.NaT), st.text(max_size=12), st.integers(-10, 10 ** 12),
    st.floats(allow_nan=True, allow_infinity=True), st.dates(), st.datetimes(), st.booleans(),
    st.binary(max_size=6), st.decimals(allow_nan=True, places=2),
    st.lists(st.sampled_from(["张三", " 李四", None, "公司级", 1]), max_size=3), st.sampled_from(_SPELLINGS))
_CITIES = st.sampled_from([None, "320100", "320500", "320200", "310000"])


def _encodable(v: object) -> bool:
    try:
        return isinstance(v, str) and bool(v.encode("utf-8") or True)
    except UnicodeEncodeError:
        return False


def _same_clean(raw: list, f, dtype, cities: list | None) -> None:
    from etl.standard import clean

    s = pd.Series(raw, dtype=dtype, name=f.name, index=[i * 3 + 7 for i in range(len(raw))])
    context = None if cities is None else pd.Series(pd.array(cities, dtype=clean.TEXT), index=s.index)
    short_audit, long_audit = clean.Audit(), clean.Audit()
    got = clean._clean_short(s, f, short_audit, context)
    saved, clean._SHORT = clean._SHORT, -1  # every inner step takes its Arrow/pandas form
    try:
        want = clean._clean_long(s, f, long_audit, context)
    finally:
        clean._SHORT = saved
    pd.testing.assert_series_equal(got, want, check_exact=True)
    assert got.fillna("<NULL>").tolist() == want.fillna("<NULL>").tolist()
    assert short_audit.counts == long_audit.counts
    assert short_audit.examples == long_audit.examples


@settings(max_examples=1500, deadline=None)
@given(raw=st.lists(_CLEAN_RAW, min_size=1, max_size=12), field=st.sampled_from(_all_fields()),
       data=st.data())
def test_a_short_column_cleans_as_the_arrow_path_does(raw, field, data):
    """Every field of every dataset, raw values of any type (text also in pandas' text
    dtypes), with and without the row's city: the same texts, audit counts, rule names and
    examples."""
    f = field[1]
    dtype = object
    if all(v is None or _encodable(v) for v in raw):
        dtype = data.draw(st.sampled_from([object, "str", pd.StringDtype()]))
    cities = None
    if f.kind in ("district", "phone"):
        cities = data.draw(st.one_of(st.none(), st.lists(_CITIES, min_size=len(raw), max_size=len(raw))))
    _same_clean(raw, f, dtype, cities)


@pytest.mark.parametrize("dtype", ["int64", "float64", "bool", "datetime64[ns]"])
def test_a_short_column_of_another_dtype_cleans_as_the_arrow_path_does(dtype):
    raw = {"int64": [6, 12, 6, 0], "float64": [1.0, np.nan, 2.5, 1.0], "bool": [True, False, True, True],
           "datetime64[ns]": [pd.Timestamp("2024-07-08"), pd.NaT, pd.Timestamp("2024-07-08 10:30")]}[dtype]
    for _, f in _all_fields():
        _same_clean(raw, f, dtype, None)


@pytest.mark.parametrize("cities", [None, ["320100", None, "320500", "310000"]])
def test_every_field_cleans_the_known_spellings_as_the_arrow_path_does(cities):
    """All of `_SPELLINGS` (and NULLs) in one column of every field: each field's own rules
    meet values they change."""
    raw = [*_SPELLINGS, None, np.nan, *_SPELLINGS[:5]]
    for _, f in _all_fields():
        ctx = None if cities is None or f.kind not in ("district", "phone") else \
            (cities * len(raw))[:len(raw)]
        _same_clean(raw, f, object, ctx)
        _same_clean([v for v in raw if not isinstance(v, float) and _encodable(v)], f, "str", None)
