"""Short columns take plain-Python paths (issue 26: pandas' fixed cost per operation is most
of a small unit's work); each must give exactly what the pandas path gives."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
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
