"""Turning a unit's rows into the standard's fields: value maps, defaults, constants, fill
rules, and the record identity (`ID`) and content digest (`rowHash`).

Cleaning of spellings (dates, flags, full-width, enumerations) is `etl.clean`'s job; this
module only applies what the mapping file says and what the standard implies.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from etl import standard
from etl.mapping import FieldRule, Mapping, TEMPLATE_FIELD, _as_key
from etl.standard import Dataset

KEY, UPDATED, DELETED, SEQ = "_key", "_updated", "_deleted", "_seq"
ID, HASH = "ID", "rowHash"


def _blank(s: pd.Series) -> pd.Series:
    """None/NaN/NaT, and text that is only white space (incl. the full-width space)."""
    text = s.astype("string").str.strip().str.replace("\u3000", "", regex=False)
    return s.isna() | (text == "").fillna(True)


def _map_values(s: pd.Series, values: dict[str, Any]) -> pd.Series:
    """Local codes to the standard's, via the distinct values; unknown codes pass unchanged."""
    uniques = s.dropna().unique()
    table = {u: values[k] for u in uniques if (k := _as_key(u)) in values}
    if not table:
        return s
    mapped = s.map(table)
    return mapped.where(mapped.notna(), s)


def _render(template: str, values: dict[str, str]) -> str:
    return TEMPLATE_FIELD.sub(lambda m: values.get(m.group(1), ""), template)


def _fill_template(template: str, raw: pd.DataFrame, mapping: Mapping, rows: pd.Series) -> pd.Series:
    """A default for the blank rows: `{unit.comName}`, `{unit.orgNo}` or `{source_column}`."""
    unit = {"unit.orgNo": mapping.unit.orgNo, "unit.comName": mapping.unit.comName}
    index = raw.index[rows.to_numpy()]
    names = TEMPLATE_FIELD.findall(template)
    if all(n in unit for n in names):
        return pd.Series(_render(template, unit), index=index, dtype=object)
    records = raw.loc[index, [n for n in names if n in raw.columns]].to_dict("records")
    out = [_render(template, {**unit, **{k: "" if _is_na(v) else _as_key(v) for k, v in r.items()}})
           for r in records]
    return pd.Series(out, index=index, dtype=object)


def _is_na(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _apply_rule(rule: FieldRule, raw: pd.DataFrame, mapping: Mapping) -> pd.Series:
    if rule.value is not None:
        return pd.Series([rule.value] * len(raw), index=raw.index, dtype=object)
    if rule.column:
        s = raw[rule.column]
        if rule.values:
            s = _map_values(s, rule.values)
    else:
        s = pd.Series([None] * len(raw), index=raw.index, dtype=object)
    if rule.default is not None:
        blank = _blank(s)
        if blank.any():
            s = s.astype(object)
            s.loc[blank] = _fill_template(rule.default, raw, mapping, blank)
    return s


def apply_mapping(raw: pd.DataFrame, mapping: Mapping, tx_code: str) -> pd.DataFrame:
    """The standard's fields of each source row, plus `_key`, `_updated` and `_deleted`."""
    spec = mapping.datasets[tx_code]
    ds = standard.dataset(tx_code)
    out: dict[str, pd.Series] = {}
    for f in ds.fields:
        rule = spec.fields.get(f.name)
        if rule is None and tx_code == "01" and f.name in ("orgNo", "comName"):
            rule = FieldRule(default=f"{{unit.{f.name}}}")
        out[f.name] = (_apply_rule(rule, raw, mapping) if rule
                       else pd.Series([None] * len(raw), index=raw.index, dtype=object))
    frame = pd.DataFrame(out, index=raw.index)
    frame[KEY] = source_key(raw, spec.key)
    frame[UPDATED] = raw[spec.updated_at] if spec.updated_at else None
    if spec.deleted:
        frame[DELETED] = raw[spec.deleted.column].map(_as_key).eq(_as_key(spec.deleted.value))
    else:
        frame[DELETED] = False
    return frame


def source_key(raw: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The source key as text: `1`, `1.0` and `'1'` are the same key; parts joined by `|`."""
    parts = [raw[c].map(lambda v: "" if _is_na(v) else _as_key(v)).astype(str) for c in columns]
    key = parts[0]
    for p in parts[1:]:
        key = key + "|" + p
    return key


def fill_rules(frame: pd.DataFrame, ds: Dataset, mapping: Mapping) -> pd.DataFrame:
    """Documented fill rules, applied after cleaning and mapping defaults."""
    if ds.tx_code == "02":
        # a top department (no parent given) hangs under the unit itself
        frame["dParentName"] = frame["dParentName"].fillna(mapping.unit.comName)
    return frame


def _digest(values: pd.Series, size: int) -> np.ndarray:
    return np.fromiter((hashlib.blake2b(v.encode(), digest_size=size).hexdigest() for v in values),
                       dtype=object, count=len(values))


def add_identity(frame: pd.DataFrame, org_no: str, tx_code: str) -> pd.DataFrame:
    """`ID` = orgNo + txCode + digest of the source key: stable per source row, unique per unit
    (52 characters, within A.2's 64); `rowHash` = digest of the standard fields' values."""
    ds = standard.dataset(tx_code)
    prefix = f"{org_no}{tx_code}"
    frame[ID] = prefix + pd.Series(_digest(frame[KEY], 16), index=frame.index, dtype=object)
    joined = None
    for name in ds.field_names:
        col = frame[name].astype("string").fillna("\x00")
        joined = col if joined is None else joined + "\x1f" + col
    frame[HASH] = pd.Series(_digest(joined, 16), index=frame.index, dtype=object)
    return frame
