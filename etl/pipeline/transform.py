"""Turning a unit's rows into the standard's fields: value maps, defaults, constants, fill
rules, and the record identity (`ID`) and content digest (`rowHash`).

Cleaning of spellings (dates, flags, full-width, enumerations) is `etl.standard.clean`'s job; this
module only applies what the mapping file says and what the standard implies.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl import standard
from etl.common.columns import as_list
from etl.mapping import TEMPLATE_FIELD, FieldRule, Mapping, as_key
from etl.standard import Dataset
from etl.target.frame import DELETED, HASH, ID, KEY, MEDIA_SHA, UPDATED

SEPARATOR, NULL_MARK = "\x1f", "\x00"  # rowHash: between field values, in place of NULL


def _blank(s: pd.Series) -> pd.Series:
    """None/NaN/NaT, and text that is only white space (incl. the full-width space)."""
    text = s.astype("string").str.strip().str.replace("\u3000", "", regex=False)
    return s.isna() | (text == "").fillna(True)


def _is_blank(v: Any) -> bool:
    """`_blank` of one value as `s.astype(object)` holds it. Python's `str.strip` strips the
    same 29 characters as Arrow's; bytes are their UTF-8 text (bytes that are not UTF-8 raise
    here as they do there)."""
    if isinstance(v, str):
        return v.strip().replace("\u3000", "") == ""
    if isinstance(v, bytes):
        return v.decode("utf-8").strip().replace("\u3000", "") == ""
    na = pd.isna(v)  # a list's is an array: not NA, as `Series.isna` says of it
    return isinstance(na, bool) and na


SHORT = 200  # rows up to which a frame is mapped over Python lists (`_apply_short`) and
#              `_map_values` maps a column of text or objects in Python


def _map_values(s: pd.Series, values: dict[str, Any]) -> pd.Series:
    """Local codes to the standard's, via the distinct values; unknown codes pass unchanged."""
    if (s.dtype == object or isinstance(s.dtype, pd.StringDtype)) and len(s) <= SHORT:
        mapped = _map_short(s, values)
        if mapped is not None:
            return mapped
    uniques = s.dropna().unique()
    table = {u: values[k] for u in uniques if (k := as_key(u)) in values}
    if not table:
        return s
    mapped = s.map(table)
    return mapped.where(mapped.notna(), s)


def _map_short(s: pd.Series, values: dict[str, Any]) -> pd.Series | None:
    """`_map_values` of a short column of text or Python objects, value by value (pandas' `map` and
    `where` cost ~1 ms whatever the length), when every code maps to text, or to whole numbers
    (`_map_to_ints`) in a column of objects or `str`; None otherwise (a float, flag or NULL
    mapped comes out of pandas in ways only pandas' own path reproduces)."""
    raw = as_list(s)
    table: dict[Any, Any] = {}
    seen: set[Any] = set()  # the first of equal values stands for them all, as in `unique()`
    try:
        for v in raw:
            if not _is_na(v) and v not in seen:
                seen.add(v)
                k = as_key(v)
                if k in values:
                    table[v] = values[k]
    except TypeError:  # an unhashable value: pandas' path says what it makes of it
        return None
    if not table:
        return s
    if all(isinstance(x, str) for x in table.values()):
        return pd.Series([v if _is_na(v) else table.get(v, v) for v in raw], index=s.index,
                         name=s.name)
    if (s.dtype == object or s.dtype.na_value is not pd.NA) and \
            all(type(x) is int and _INT64[0] <= x <= _INT64[1] for x in table.values()):
        return _map_to_ints(raw, table, s)
    return None


_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_MISS = object()  # a row whose code the value map does not name


def _map_to_ints(raw: list, table: dict[Any, int], s: pd.Series) -> pd.Series:
    """`_map_short` to whole numbers (`riskType: {SB: 0, ZY: 1}`) as pandas maps them: int64
    when every row's code maps; else pandas' map leaves NaN in the other rows, which makes
    the numbers floats, and those rows keep the source's value in an object column."""
    hits = [_MISS if _is_na(v) else table.get(v, _MISS) for v in raw]
    if not any(h is _MISS for h in hits):
        return pd.Series(np.array(hits, dtype=np.int64), index=s.index, name=s.name)
    return pd.Series([v if h is _MISS else float(h) for v, h in zip(raw, hits)], index=s.index,
                     name=s.name, dtype=object)


def _render(template: str, values: dict[str, str]) -> str:
    return TEMPLATE_FIELD.sub(lambda m: values.get(m.group(1), ""), template)


def _unit_values(mapping: Mapping) -> dict[str, str]:
    return {"unit.orgNo": mapping.unit.orgNo, "unit.comName": mapping.unit.comName}


def _default_text(template: str, unit: dict[str, str], record: dict[str, Any]) -> str:
    """One blank row's default: the template over the unit and that row's source values
    (`as_key` of each, '' for NULL)."""
    return _render(template, {**unit, **{k: "" if _is_na(v) else as_key(v) for k, v in record.items()}})


def _fill_template(template: str, raw: pd.DataFrame, mapping: Mapping, rows: pd.Series) -> pd.Series:
    """A default for the blank rows: `{unit.comName}`, `{unit.orgNo}` or `{source_column}`."""
    unit = _unit_values(mapping)
    index = raw.index[rows.to_numpy()]
    names = TEMPLATE_FIELD.findall(template)
    if all(n in unit for n in names):
        return pd.Series(_render(template, unit), index=index, dtype=object)
    records = raw.loc[index, [n for n in names if n in raw.columns]].to_dict("records")
    return pd.Series([_default_text(template, unit, r) for r in records], index=index, dtype=object)


def _is_na(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _constant(value: Any, raw: pd.DataFrame) -> pd.Series:
    return pd.Series([value] * len(raw), index=raw.index, dtype=object)


def _field_rules(mapping: Mapping, tx_code: str) -> list[tuple[str, FieldRule | None]]:
    """Each standard field with its rule; the unit's own record (01) takes its orgNo and
    comName from the mapping's unit when no column gives them."""
    spec = mapping.datasets[tx_code]
    out: list[tuple[str, FieldRule | None]] = []
    for f in standard.dataset(tx_code).fields:
        rule = spec.fields.get(f.name)
        if rule is None and tx_code == "01" and f.name in ("orgNo", "comName"):
            rule = FieldRule(default=f"{{unit.{f.name}}}")
        out.append((f.name, rule))
    return out


def _apply_rule(rule: FieldRule, raw: pd.DataFrame, mapping: Mapping) -> pd.Series:
    if rule.value is not None:
        return _constant(rule.value, raw)
    if rule.column:
        s = raw[rule.column]
        if rule.values:
            s = _map_values(s, rule.values)
    else:
        s = _constant(None, raw)
    if rule.default is not None:
        s = _fill_blanks(s, rule.default, raw, mapping)
    return s


def _fill_blanks(s: pd.Series, template: str, raw: pd.DataFrame, mapping: Mapping) -> pd.Series:
    blank = _blank(s)
    if blank.any():
        s = s.astype(object)
        s.loc[blank] = _fill_template(template, raw, mapping, blank)
    return s


def apply_mapping(raw: pd.DataFrame, mapping: Mapping, tx_code: str) -> pd.DataFrame:
    """The standard's fields of each source row, plus `_key`, `_updated` and `_deleted`.
    A frame of at most `SHORT` rows takes the same rules over Python lists (`_apply_short`):
    in a small unit, pandas' fixed cost per call is most of the mapping's time (issue 26)."""
    if len(raw) <= SHORT and raw.columns.is_unique:
        return _apply_short(raw, mapping, tx_code)
    return _apply_long(raw, mapping, tx_code)


def _apply_long(raw: pd.DataFrame, mapping: Mapping, tx_code: str) -> pd.DataFrame:
    """`apply_mapping` column by column in pandas."""
    spec = mapping.datasets[tx_code]
    out = {name: _apply_rule(rule, raw, mapping) if rule else _constant(None, raw)
           for name, rule in _field_rules(mapping, tx_code)}
    frame = pd.DataFrame(out, index=raw.index)
    frame[KEY] = source_key(raw, spec.key)
    frame[UPDATED] = raw[spec.updated_at] if spec.updated_at else None
    if spec.deleted:
        frame[DELETED] = _flags(raw[spec.deleted.column], spec.deleted.value)
    else:
        frame[DELETED] = False
    return frame


# --- a short frame over Python lists (`_apply_short`): `_apply_long`'s values and dtypes ------

#: dtypes whose `tolist()` gives the values `astype(object)`, `Series.map` and factorize's
#: uniques give (Python scalars), for which the list path computes blanks, keys and flags;
#: a column of any other dtype takes the pandas helper for that step
_LISTED_KINDS = frozenset("Oiufb")


def _listed(s: pd.Series) -> bool:
    if isinstance(s.dtype, pd.StringDtype):
        return s.dtype.na_value is not pd.NA
    return isinstance(s.dtype, np.dtype) and s.dtype.kind in _LISTED_KINDS


def _apply_short(raw: pd.DataFrame, mapping: Mapping, tx_code: str) -> pd.DataFrame:
    """`_apply_long` for a frame of a few dozen rows: blanks and defaults, keys and deleted
    flags value by value over lists (value maps already go through `_map_short`), and the
    frame built once, sharing the source's columns (copy-on-write keeps them apart)."""
    spec = mapping.datasets[tx_code]
    cols: dict[str, Any] = {name: _rule_short(rule, raw, mapping) if rule else _constant(None, raw)
                            for name, rule in _field_rules(mapping, tx_code)}
    cols[KEY] = _source_key_short(raw, spec.key)
    cols[UPDATED] = raw[spec.updated_at] if spec.updated_at else _constant(None, raw)
    cols[DELETED] = (_flags_short(raw[spec.deleted.column], spec.deleted.value) if spec.deleted
                     else pd.Series(np.zeros(len(raw), dtype=bool), index=raw.index))
    return pd.DataFrame(cols, index=raw.index, copy=False)


def _rule_short(rule: FieldRule, raw: pd.DataFrame, mapping: Mapping) -> pd.Series:
    """`_apply_rule`, with a default filled over lists."""
    if rule.default is None or rule.value is not None:
        return _apply_rule(rule, raw, mapping)
    if not rule.column:
        filled = _fill_short([None] * len(raw), rule.default, raw, mapping)
        return _constant(None, raw) if filled is None else filled
    s = raw[rule.column]
    if rule.values:
        s = _map_values(s, rule.values)
    if not _listed(s):
        return _fill_blanks(s, rule.default, raw, mapping)
    filled = _fill_short(as_list(s), rule.default, raw, mapping)
    return s if filled is None else filled


def _fill_short(values: list, template: str, raw: pd.DataFrame, mapping: Mapping) -> pd.Series | None:
    """`_fill_blanks` of a column's values: None when no row is blank (the column stays)."""
    rows = [i for i, v in enumerate(values) if _is_blank(v)]
    if not rows:
        return None
    unit = _unit_values(mapping)
    names = TEMPLATE_FIELD.findall(template)
    if all(n in unit for n in names):
        text = _render(template, unit)
        for i in rows:
            values[i] = text
    else:
        columns = list(dict.fromkeys(n for n in names if n in raw.columns))
        source = {c: as_list(raw[c]) for c in columns}
        for i in rows:
            values[i] = _default_text(template, unit, {c: _native(source[c][i]) for c in columns})
    return pd.Series(values, index=raw.index, dtype=object)


def _native(v: Any) -> Any:
    """A value as `DataFrame.to_dict("records")` gives it (pandas' `maybe_box_native`): numpy
    scalars as Python's, NA as None; `as_key` spells `np.True_` and `True` differently."""
    types = pd.api.types
    if types.is_float(v):
        return float(v)
    if types.is_integer(v):
        return int(v)
    if types.is_bool(v):
        return bool(v)
    if isinstance(v, np.datetime64):
        return pd.Timestamp(v)
    if isinstance(v, np.timedelta64):
        return pd.Timedelta(v)
    return None if v is pd.NA else v


def _key_text(v: Any) -> str:
    """One value's part of the source key (`_keys`): `as_key`, '' for NA."""
    return "" if _is_na(v) else as_key(v)


def _source_key_short(raw: pd.DataFrame, columns: list[str]) -> pd.Series:
    """`source_key` row by row."""
    parts = [raw[c] for c in columns]
    if not all(_listed(p) for p in parts):
        return source_key(raw, columns)
    texts = [[_key_text(v) for v in as_list(p)] for p in parts]
    keys = texts[0] if len(texts) == 1 else ["|".join(row) for row in zip(*texts)]
    return pd.Series(keys, index=raw.index, dtype=str)


def _flags_short(s: pd.Series, value: Any) -> pd.Series:
    """`_flags` value by value."""
    if not _listed(s):
        return _flags(s, value)
    wanted = as_key(value)
    return pd.Series([as_key(v) == wanted for v in as_list(s)], index=s.index, dtype=bool)


def source_key(raw: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The source key as text: `1`, `1.0` and `'1'` are the same key; parts joined by `|`."""
    parts = [_keys(raw[c]) for c in columns]
    key = parts[0]
    for p in parts[1:]:
        key = key + "|" + p
    return key


def _keys(s: pd.Series) -> pd.Series:
    """`as_key` of each value ('' for NA), as text. Computed once per distinct value where
    equal values are sure to print alike (integers, floats, flags, text), else per row:
    `Decimal('1.0') == Decimal('1.00')`, yet their keys differ."""
    if pd.api.types.is_integer_dtype(s.dtype) and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
        return s.astype(str)
    if _keys_by_value(s):
        codes, uniques = pd.factorize(s)
        keys = np.array([as_key(u) for u in _python(uniques)] + [""], dtype=object)
        return pd.Series(keys[codes], index=s.index, name=s.name, dtype=object).astype(str)
    return s.map(lambda v: "" if _is_na(v) else as_key(v)).astype(str)


def _keys_by_value(s: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_float_dtype(s.dtype) \
            or pd.api.types.is_integer_dtype(s.dtype) or isinstance(s.dtype, pd.StringDtype):
        return True
    return s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty")


def _python(uniques: Any) -> list:
    """Distinct values as the Python scalars `Series.map` would pass (numpy bools and ints
    print differently from Python's)."""
    return np.asarray(uniques, dtype=object).tolist() if not isinstance(uniques, list) else uniques


def _flags(s: pd.Series, value: Any) -> pd.Series:
    """Where `as_key(v) == as_key(value)` (the deleted marker), once per distinct value."""
    wanted = as_key(value)
    if not _keys_by_value(s):
        return s.map(as_key).eq(wanted)
    codes, uniques = pd.factorize(s)
    hit = np.array([as_key(u) == wanted for u in _python(uniques)] + [False], dtype=bool)
    out = pd.Series(hit[codes], index=s.index, name=s.name)
    na = codes < 0
    if na.any():  # NA spells as 'None', 'nan', '<NA>': compare them as the row path did
        out[na] = s[na].map(as_key).eq(wanted).to_numpy()
    return out


def fill_rules(frame: pd.DataFrame, ds: Dataset, mapping: Mapping) -> pd.DataFrame:
    """Documented fill rules, applied after cleaning and mapping defaults."""
    if ds.tx_code == "02":
        # a top department (no parent given) hangs under the unit itself
        frame["dParentName"] = frame["dParentName"].fillna(mapping.unit.comName)
    return frame


def _digest(values: pd.Series | pa.Array | pa.ChunkedArray, size: int) -> np.ndarray:
    """blake2b hex digests of the values' UTF-8. One C call per value is the floor here, so
    the values reach it as bytes straight from Arrow (no per-value encode)."""
    if isinstance(values, pd.Series):
        values = pa.array(values.astype("string"), type=pa.large_string())
    blob = values.cast(pa.large_binary()).to_pylist()
    out = np.empty(len(blob), dtype=object)
    out[:] = [blake2b(v, digest_size=size).hexdigest() for v in blob]
    return out


def record_ids(keys: pd.Series, org_no: str, tx_code: str) -> pd.Series:
    """Each source key's record `ID` (`source_key` text): orgNo + txCode + its digest."""
    return f"{org_no}{tx_code}" + pd.Series(_digest(keys, 16), index=keys.index, dtype=object,
                                            name=ID)


def _hash_text(s: pd.Series) -> pa.Array | pa.ChunkedArray:
    """A column as `rowHash` reads it: pandas' `astype("string")` spelling, NULL as
    `NULL_MARK`. A cleaned column is Arrow text already: taken as it is (no pandas copy)."""
    if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        return pc.fill_null(pa.chunked_array([pa.array(s.array)]).cast(pa.large_string()), NULL_MARK)
    return pa.array(s.astype("string").fillna(NULL_MARK), type=pa.large_string())


def add_identity(frame: pd.DataFrame, org_no: str, tx_code: str) -> pd.DataFrame:
    """`ID` = orgNo + txCode + digest of the source key: stable per source row, unique per unit
    (52 characters, within A.2's 64); `rowHash` = digest of the standard fields' values, joined
    by U+001F with NULL as U+0000 (the join is Arrow's, the spelling pandas' `astype("string")`).
    Where the mapping collects attachments, their digests (`_media_sha256`) are digested too:
    a file changed under the same name changes the record; datasets without them hash as before."""
    ds = standard.dataset(tx_code)
    frame[ID] = record_ids(frame[KEY], org_no, tx_code)
    names = [*ds.field_names, *([MEDIA_SHA] if MEDIA_SHA in frame.columns else [])]
    texts = [_hash_text(frame[name]) for name in names]
    joined = pc.binary_join_element_wise(*texts, pa.scalar(SEPARATOR, pa.large_string()))
    frame[HASH] = pd.Series(_digest(joined, 16), index=frame.index, dtype=object)
    return frame
