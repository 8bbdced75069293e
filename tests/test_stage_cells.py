"""The stage's rows on SQLite and MariaDB are built column by column (`columns.cells`); they must
be exactly what pandas' own frame-wide conversion gives (`astype(object)`, every NA as None),
which the load used before and which the driver's adapters were tested against."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from etl.common.columns import cells as _cells


def _pandas_way(s: pd.Series) -> list:
    values = s.astype(object)
    return [None if missing else v for v, missing in zip(values.tolist(), values.isna().tolist())]


COLUMNS = {
    "text (str)": pd.Series(["潘峰", None, "", "0512-65283301", "a\x00b"], dtype="str"),
    "text (string[pyarrow])": pd.Series(["x", None, "y", pd.NA, "z"], dtype="string[pyarrow]"),
    "text (string[python])": pd.Series(["x", None, "y", pd.NA, "z"], dtype="string[python]"),
    "object with every NA": pd.Series(["a", None, np.nan, pd.NA, pd.NaT], dtype=object),
    "object of dates": pd.Series([date(2024, 1, 4), None, datetime(2024, 1, 4, 9, 30), "x", 1],
                                 dtype=object),
    "decimals": pd.Series([Decimal("1.10"), Decimal("NaN"), None, Decimal("-0"), Decimal(3)],
                          dtype=object),
    "floats": pd.Series([1.5, np.nan, -0.0, 1e300, np.inf]),
    "all-NaN floats": pd.Series([np.nan] * 5),
    "int64": pd.Series([0, 1, -(2 ** 63), 2 ** 63 - 1, 7], dtype="int64"),
    "uint8": pd.Series([0, 1, 2, 255, 7], dtype="uint8"),
    "bool": pd.Series([True, False, True, False, True]),
    "Int64 (nullable)": pd.Series([1, None, 3, pd.NA, 5], dtype="Int64"),
    "boolean (nullable)": pd.Series([True, None, False, pd.NA, True], dtype="boolean"),
    "datetime64": pd.Series(pd.to_datetime(["2024-01-04 09:30", None, "1970-01-01 00:00", None,
                                            "2262-04-11 00:00"])),
    "datetime64 with zone": pd.Series(pd.to_datetime(["2024-01-04 09:30", None, "1970-01-01 00:00",
                                                      None, "2024-12-31 00:00"]).tz_localize("Asia/Shanghai")),
    "category": pd.Series(["a", None, "b", "a", None], dtype="category"),
}


@pytest.mark.parametrize("name", COLUMNS)
def test_a_column_becomes_the_cells_pandas_would_give(name: str) -> None:
    s = COLUMNS[name]
    got, want = _cells(s), _pandas_way(s)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is type(w) and (g == w or (g is None and w is None)), (name, got, want)
