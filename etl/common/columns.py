"""A pandas column as a Python list, and a list of texts as a text column, cheaply.

pandas' own `Series.tolist()` of a pyarrow-backed text column (pandas' default `str` dtype)
boxes value by value in Python: ~80 µs for 37 values, where Arrow's `to_pylist` takes ~4 µs.
The short paths (mapping, cleaning, validation of a few dozen rows) read every column into
lists at each stage, so this is where a small unit's time went (issue 26). `cells` gives
the values as the load hands them to a driver (None for every NA), by the same Arrow read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def _arrow_text(dtype: object) -> bool:
    return isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"


def as_list(s: pd.Series) -> list:
    """`s.tolist()`: the very same values (NA as the dtype's own NA object), faster for a
    pyarrow-backed text column."""
    if _arrow_text(s.dtype):
        out = cells(s)
        if None in out:
            na = s.dtype.na_value
            return [na if v is None else v for v in out]
        return out
    return s.tolist()


def cells(s: pd.Series) -> list:
    """A column's values as a database driver takes them: Python scalars, None for every NA
    (what `astype(object)` then `where(notna, None)` gives), without a frame-wide copy."""
    dtype = s.dtype
    if _arrow_text(dtype):
        return pa.array(s.array).to_pylist()
    if isinstance(dtype, np.dtype) and dtype.kind in "iub":
        return s.to_numpy().tolist()
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return [None if v != v else v for v in s.to_numpy().tolist()]
    na = s.isna().to_numpy()
    return [None if missing else v for v, missing in zip(s.astype(object).tolist(), na)]


def text_array(texts: list, dtype: pd.StringDtype) -> pd.api.extensions.ExtensionArray:
    """`pd.array(texts, dtype=dtype)`, built by Arrow when `dtype` is pyarrow-backed (half the
    cost for a short list); by pandas when Arrow refuses a value (not text, not UTF-8)."""
    if dtype.storage == "pyarrow":
        try:
            return pd.array(pa.array(texts, type=pa.large_string(), from_pandas=True), dtype=dtype)
        except (pa.ArrowTypeError, pa.ArrowInvalid, UnicodeEncodeError):
            pass
    return pd.array(texts, dtype=dtype)
