"""A pandas column as a Python list, and a list of texts as a text column, cheaply.

pandas' own `Series.tolist()` of a pyarrow-backed text column (pandas' default `str` dtype)
boxes value by value in Python: ~80 µs for 37 values, where Arrow's `to_pylist` takes ~4 µs.
The short paths (mapping, cleaning, validation of a few dozen rows) read every column into
lists at each stage, so this is where a small unit's time went (issue 26).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa


def as_list(s: pd.Series) -> list:
    """`s.tolist()`: the very same values (NA as the dtype's own NA object), faster for a
    pyarrow-backed text column."""
    dtype = s.dtype
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        out = pa.array(s.array).to_pylist()
        if None in out:
            na = dtype.na_value
            return [na if v is None else v for v in out]
        return out
    return s.tolist()


def text_array(texts: list, dtype: pd.StringDtype) -> pd.api.extensions.ExtensionArray:
    """`pd.array(texts, dtype=dtype)`, built by Arrow when `dtype` is pyarrow-backed (half the
    cost for a short list); by pandas when Arrow refuses a value (not text, not UTF-8)."""
    if dtype.storage == "pyarrow":
        try:
            return pd.array(pa.array(texts, type=pa.large_string(), from_pandas=True), dtype=dtype)
        except (pa.ArrowTypeError, pa.ArrowInvalid, UnicodeEncodeError):
            pass
    return pd.array(texts, dtype=dtype)
