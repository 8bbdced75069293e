"""`etl.common.columns` stands in for pandas' own `Series.tolist()` and `pd.array(..., dtype)`
on the short paths: it must give exactly what pandas gives, value for value and type for type
(NA as the very object `tolist()` gives), whatever the column's dtype."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from etl.common.columns import as_list, text_array
from etl.standard.clean import TEXT


def _same(a: list, b: list) -> bool:
    """Equal value for value and of the same type; NaN is NaN."""
    def one(x, y) -> bool:
        if type(x) is not type(y):
            return False
        if isinstance(x, float) and math.isnan(x):
            return math.isnan(y)
        return x is y or x == y
    return len(a) == len(b) and all(one(x, y) for x, y in zip(a, b))


_TWO_CHUNKS = pd.concat([pd.Series(["a", None], dtype=TEXT), pd.Series([None, "苏州"], dtype=TEXT)],
                        ignore_index=True)

COLUMNS = {
    "str (the default text dtype, NaN for NA)": pd.Series(["潘峰", None, "", "a\x00b", None], dtype=TEXT),
    "str without NA": pd.Series(["x", "y", "z"], dtype=TEXT),
    "str, two Arrow chunks": _TWO_CHUNKS,
    "str, a slice": pd.Series(["a", None, "b", "c"], dtype=TEXT).iloc[1:3],
    "str, all NA": pd.Series([None, None], dtype=TEXT),
    "str, empty": pd.Series([], dtype=TEXT),
    "string[pyarrow] (pd.NA for NA)": pd.Series(["x", None, "y"], dtype="string[pyarrow]"),
    "string[python]": pd.Series(["x", None, "y"], dtype="string[python]"),
    "object": pd.Series(["a", None, np.nan, pd.NA, 1, date(2024, 1, 4), b"\x01"], dtype=object),
    "int64": pd.Series([0, -(2 ** 63), 2 ** 63 - 1]),
    "float64": pd.Series([1.5, np.nan, -0.0]),
    "Int64": pd.Series([1, None, 3], dtype="Int64"),
    "bool": pd.Series([True, False]),
}


@pytest.mark.parametrize("name", list(COLUMNS))
def test_as_list_is_tolist(name):
    s = COLUMNS[name]
    got, want = as_list(s), s.tolist()
    assert _same(got, want), (got, want)
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        na = s.dtype.na_value
        assert all(v is na for v, w in zip(got, want) if not isinstance(w, str))


LISTS = {
    "texts and None": ["a", None, "南京市", ""],
    "no NA": ["a", "b"],
    "empty": [],
    "NaN and pd.NA": [np.nan, "a", pd.NA],
    "numbers among texts": [1, "a", 2.5],
    "bytes": [b"x", "y"],
}


@pytest.mark.parametrize("name", list(LISTS))
@pytest.mark.parametrize("dtype", [TEXT, pd.StringDtype("pyarrow"), pd.StringDtype("python")],
                         ids=["str", "string[pyarrow]", "string[python]"])
def test_text_array_is_pandas_array(name, dtype):
    texts = LISTS[name]
    got, want = text_array(list(texts), dtype), pd.array(list(texts), dtype=dtype)
    assert type(got) is type(want) and got.dtype == want.dtype
    assert _same(got.tolist(), want.tolist())
    if dtype.storage == "pyarrow":
        assert got._pa_array.type == want._pa_array.type


def test_text_array_refuses_what_pandas_refuses():
    """A lone surrogate has no UTF-8: pandas' own error, as `pd.array` raises it."""
    with pytest.raises(UnicodeEncodeError) as want:
        pd.array(["x\ud800"], dtype=TEXT)
    with pytest.raises(type(want.value)):
        text_array(["x\ud800"], TEXT)
