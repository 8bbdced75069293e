"""Cleaning: raw source values to the standard's canonical spellings ("format conversion,
normalisation").

Sources are companies' own databases, so one field arrives as ``'2024/7/8'`` here,
``datetime.date`` there, ``20240708`` (an int) elsewhere; flags as 是/否, Y/N or 1.0; levels
as 较大 instead of 较大风险. Cleaning rewrites what has one unambiguous reading and leaves
everything else as trimmed text, so that validation (`etl.standard.validate`) rejects it with the value
the source actually sent. It never guesses: 2024-02-30 stays 2024-02-30.

What each field gets is decided by its `etl.standard.Field` (kind, type, enum, separator),
never by its name. Every change is counted per (field, rule) in an `Audit`, with a few masked
examples, so a run can say what it did to a source's data.

Speed: real columns have few distinct values (levels, dates, people), so each column is
factorised once, the rules run over its distinct values only (vectorised where the rule
allows), and the result is expanded back with one `take`. Mostly distinct columns (task
numbers, problem texts) make that no shortcut, so steps first ask the whole column, with an
Arrow kernel or its bytes, whether anything can change, and return their input untouched
when not, which also spares the before/after comparison of the audit.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from numbers import Integral

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl.common.columns import as_list, text_array
from etl.common.masking import shown
from etl.standard import DATASETS, ENVELOPE, UNIT_KEY, Dataset, Field, divisions, phones

# pandas' default string dtype ("str"): Arrow-backed, NaN for missing, so comparisons give
# plain bools downstream.
TEXT = pd.StringDtype(na_value=np.nan)

MAX_EXAMPLES = 3
NULL_SHOWN = "<NULL>"
_EXAMPLE_CHARS = 80

# ---------------------------------------------------------------------------------------------
# Audit


@dataclass
class Audit:
    """What cleaning did: per (field, rule) how many values changed, with up to 3 masked examples.

    Counts are rows, not distinct values. Examples are (before, after) of that rule's step,
    masked as every surface masks the field (`masking.shown`) and shortened; NULL shows as
    '<NULL>'.
    """

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    examples: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)

    def add(self, field_name: str, rule: str, count: int,
            examples: list[tuple[str, str]]) -> None:
        """Count `count` changed values; keep the first distinct examples up to three."""
        if count <= 0:
            return
        key = (field_name, rule)
        self.counts[key] = self.counts.get(key, 0) + int(count)
        kept = self.examples.setdefault(key, [])
        for ex in examples:
            if len(kept) >= MAX_EXAMPLES:
                break
            if ex not in kept:
                kept.append(ex)

    def merge(self, other: Audit) -> None:
        """Add another chunk's audit into this one (chunks of one run are cleaned apart)."""
        for key, count in other.counts.items():
            self.add(key[0], key[1], count, other.examples.get(key, []))

    def rows(self) -> list[dict]:
        """One dict per (field, rule), sorted, ready for the `ingest_audit`-style table."""
        return [{"field": f, "rule": r, "count": self.counts[(f, r)],
                 "examples": list(self.examples.get((f, r), []))}
                for f, r in sorted(self.counts)]


# ---------------------------------------------------------------------------------------------
# Rule tables


# Known other spellings of the standard's enumeration values. A synonym applies to a field
# only when its target is in that field's enum, so 一般 means 一般风险 for a risk level and
# 一般事故隐患 for a hidden-danger level.
ENUM_SYNONYMS: dict[str, tuple[str, ...]] = {
    # risk levels; the colours are the 风险四色 convention (红 重大, 橙 较大, 黄 一般, 蓝 低)
    "重大风险": ("重大", "红", "红色", "红色风险"),
    "较大风险": ("较大", "橙", "橙色", "橙色风险"),
    "一般风险": ("一般", "黄", "黄色", "黄色风险"),
    "低风险": ("低", "蓝", "蓝色", "蓝色风险"),
    # control levels
    "公司（厂）级": ("公司级", "厂级", "企业级"),
    "部门（装置、车间）级": ("部门级", "车间级", "装置级", "部门（车间）级", "部门（装置）级"),
    "岗位（班组）级": ("岗位级", "班组级"),
    # accident types
    "泄漏": ("泄露",),
    "倾覆": ("倾翻",),
    "坠落": ("高处坠落",),
    "故障或者受困（滞留）": ("故障", "受困", "滞留", "故障或受困", "故障或者受困", "受困（滞留）",
                       "故障或受困（滞留）"),
    # hidden dangers
    "设备类": ("设备",),
    "管理类": ("管理",),
    "环境类": ("环境",),
    "作业过程（人员）类": ("作业过程", "作业过程类", "人员", "人员类", "作业过程（人员）"),
    "一般事故隐患": ("一般", "一般隐患"),
    "较大事故隐患": ("较大", "较大隐患"),
    "严重事故隐患": ("严重", "严重隐患"),
    "已整改": ("已完成", "已整改完成", "整改完成", "完成整改"),
    "未整改": ("未完成", "未整改完成", "整改中", "待整改"),
    "整改验收合格": ("合格", "验收合格", "验收通过"),
    "整改验收不合格": ("不合格", "验收不合格", "验收不通过"),
    # control measures
    "工程技术措施": ("工程技术", "工程措施", "技术措施"),
    "管理措施": ("管理",),
    "培训教育措施": ("培训教育", "教育培训", "教育培训措施"),
    "个体防护措施": ("个体防护", "个人防护", "个人防护措施"),
    "应急措施": ("应急", "应急处置", "应急处置措施"),
    # risk gallery
    "风险四色分布图": ("四色图", "风险四色图", "四色分布图", "风险分布图"),
    "设备风险告知牌": ("风险告知牌", "告知牌", "设备告知牌"),
    "岗位风险告知卡": ("风险告知卡", "告知卡", "岗位告知卡"),
    "其他": ("其它",),
    # licence kinds: the kind without 作业, and TSG Z6001-2019 item names and codes
    "特种设备安全管理": ("安全管理", "特种设备管理", "A"),
    "锅炉作业": ("锅炉", "工业锅炉司炉", "电站锅炉司炉", "锅炉水处理", "G1", "G2", "G3"),
    "压力容器作业": ("压力容器", "快开门式压力容器操作", "移动式压力容器充装", "氧舱维护保养",
                "R1", "R2", "R3"),
    "气瓶作业": ("气瓶", "气瓶充装", "P"),
    "电梯作业": ("电梯", "电梯修理", "T"),
    "起重机作业": ("起重机", "起重机指挥", "起重机司机", "Q1", "Q2"),
    "客运索道作业": ("客运索道", "客运索道修理", "客运索道司机", "S1", "S2"),
    "大型游乐设施作业": ("大型游乐设施", "大型游乐设施修理", "大型游乐设施操作", "Y1", "Y2"),
    "场（厂）内专用机动车辆作业": ("场（厂）内专用机动车辆", "场内专用机动车辆作业", "场内机动车辆",
                        "叉车司机", "观光车和观光列车司机", "N1", "N2"),
    "安全附件维修作业": ("安全附件维修", "安全阀校验", "安全阀维修"),
    "特种设备焊接作业": ("焊接", "焊接作业", "特种设备焊接", "金属焊接操作", "非金属焊接操作"),
    # riskType (0 equipment risk, 1 operation-process (personnel) risk) and busType
    "0": ("设备风险", "设备"),
    "1": ("作业过程（人员）风险", "作业过程风险", "人员风险", "作业风险"),
    "I": ("insert", "新增"),
    "U": ("update", "修改", "更新"),
    "D": ("delete", "删除"),
}

FLAG_WORDS: dict[str, str] = {
    **dict.fromkeys(("1", "1.0", "是", "y", "yes", "true", "有"), "1"),
    **dict.fromkeys(("0", "0.0", "否", "n", "no", "false", "无"), "0"),
}

# Unicode white space plus the zero-width characters copy-paste leaves around values.
_STRIP = (" \t\n\r\v\f\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
          "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u200b\ufeff")
_LIST_SPLIT = re.compile(r"[、,，;；/／]+")
MULTI_SPLIT = re.compile(r"[、,，;；/／\s\u3000]+")
_SEPARATORS = r"[\s\-‐‑‒–—―－]"
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
# 2024-07-08, 2024/7/8, 2024.07.08, 2024年7月8日, each with an optional time; and 20240708
_ISO_DATE = r"\d{4}-\d{2}-\d{2}"
_DATE_PATTERNS = (
    r"^(?P<y>\d{4})\s*[-/.年]\s*(?P<m>\d{1,2})\s*[-/.月]\s*(?P<d>\d{1,2})\s*日?"
    r"(?:(?:\s+|T)\d{1,2}[:时]\d{1,2}(?:[:分]\d{1,2}(?:\.\d+)?秒?)?(?:Z|[+-]\d{2}:?\d{2})?)?$",
    r"^(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})$",
)
_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_COUNTRY = re.compile(r"^(?:\+86|0086|86(?=[\s-]))[\s-]*")
_PHONE_NOISE = re.compile(r"[\s\-()]")
_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_LANDLINE = re.compile(r"^(0[12]\d|0[3-9]\d{2})(\d{7,8})$")

# A step takes the distinct values of a column and returns the new values and the rule name
# of each change (one name, or one per value with None where nothing applies).
Step = Callable[[pd.Series], tuple[pd.Series, "str | pd.Series"]]


# ---------------------------------------------------------------------------------------------
# Raw values to text


def _decode(raw: bytes) -> str:
    """UTF-8 first (what modern drivers send), then GB18030 (a superset of GBK/GB2312)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("gb18030", errors="replace")


_BINARY_TYPES = (bytes, bytearray, memoryview)
_NO_BYTES = frozenset({"string", "empty", "integer", "floating", "decimal", "boolean", "date",
                       "datetime", "datetime64", "time", "timedelta", "timedelta64"})


def is_text_bytes(raw: bytes | bytearray | memoryview) -> bool:
    """Whether a byte value from a BLOB / BYTEA / VARBINARY column is text: it decodes as
    UTF-8 or, failing that, as GB18030, and holds no control character but tab and line
    breaks. Anything else (an image, X'00FF', a serialised object) is binary."""
    data = bytes(raw)
    for encoding in ("utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return re.search(_CONTROL, text) is None
    return False


def binary_values(frame: pd.DataFrame, ds: Dataset) -> tuple[pd.DataFrame, list[tuple[object, str, int]]]:
    """Binary values in the standard fields of a mapped frame, and the frame without them.

    Every standard field is text, and bytes that are not text (`is_text_bytes`) have no
    spelling in it: decoding them would store U+FFFD or silently drop bytes. So their rows are
    rejected (rule `binary`), one bad value costing one row; the cell is emptied so that
    cleaning neither converts nor audits it. Text in a byte column (a VARBINARY of UTF-8 or
    GBK) is kept and decoded by cleaning. Returns (row label, field, byte count) per value.
    A flag field (type N) reads a short byte value as the number it holds: a MySQL BIT(1)
    column arrives as b'\x00' / b'\x01'. The source key and the `deleted:` column are read
    from the raw rows (`mapping.as_key` reads bytes the same way)."""
    found: list[tuple[object, str, int]] = []
    out = frame
    dtypes = dict(zip(frame.columns, frame.dtypes.tolist()))  # not a Series built per column
    for f in ds.fields:
        if dtypes.get(f.name) != object:
            continue
        s = frame[f.name]
        if pd.api.types.infer_dtype(s, skipna=True) in _NO_BYTES:
            continue
        binary = [(i, v) for i, v in zip(s.index, s.tolist())
                  if isinstance(v, _BINARY_TYPES) and not is_text_bytes(v)]
        if not binary:
            continue
        if out is frame:
            out = frame.copy(deep=False)
        col = s.copy()
        bits = [(i, v) for i, v in binary if f.kind == "flag" and 0 < len(bytes(v)) <= 8]
        for i, v in bits:
            col.at[i] = int.from_bytes(bytes(v), "big")
        bad = [i for i, v in binary if (i, v) not in bits]
        found += [(i, f.name, len(bytes(s.at[i]))) for i in bad]
        col.loc[bad] = None
        out[f.name] = col
    return out, found


def _valid_unicode(text: str) -> tuple[str, str | None]:
    """Lone surrogates (a driver decoding badly) cannot be stored: U+FFFD instead."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), "decode"
    return text, None


def _whole(text: str, value: object) -> tuple[str, str | None]:
    return text, ("number_format" if text != str(value) else None)


def _datetime_text(v: dt.date) -> str:
    """ISO spelling with a 4-digit year (strftime drops leading zeros of small years)."""
    day = f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
    if isinstance(v, dt.datetime):
        return f"{day} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    return day


def _scalar_text(v: object, sep: str = "、") -> tuple[str | None, str | None]:
    """One raw value as text, and the rule name when its spelling changed (else None). An
    array (PostgreSQL `text[]`, a JSON array) is its items joined by `sep`."""
    if isinstance(v, str):
        return _valid_unicode(v)
    if v is None or v is pd.NA or v is pd.NaT:
        return None, None
    if isinstance(v, (list, tuple, np.ndarray)):
        parts = [t.strip() for t, _ in (_scalar_text(x, sep) for x in v) if t and t.strip()]
        return (sep.join(parts) or None), "array"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _decode(bytes(v)), "decode"
    if isinstance(v, (bool, np.bool_)):
        return ("True" if v else "False"), None
    if isinstance(v, Integral):
        return str(int(v)), None
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return None, None
        whole = math.isfinite(v) and float(v).is_integer()
        return _whole(str(int(v)), v) if whole else (str(v), None)
    if isinstance(v, Decimal):
        if v.is_nan():
            return None, None
        whole = v.is_finite() and v == v.to_integral_value()
        return _whole(str(int(v)), v) if whole else (str(v), None)
    if isinstance(v, dt.date):
        return _datetime_text(v), None
    if isinstance(v, np.datetime64):
        return (None, None) if np.isnat(v) else (str(v).replace("T", " ")[:19], None)
    return str(v), None


def _shown_raw(f: Field, v: object) -> str:
    """How an audit example shows a raw value: bytes by length only (they may be a name)."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(v))} bytes>"
    return _example(f, str(v))


def _factorize_raw(raw: pd.Series, f: Field, audit: Audit) -> tuple[np.ndarray, pd.Series]:
    """Codes into the column's distinct raw values, and those values as text (TEXT dtype).

    Text columns are factorised as they are (hashing a million short strings is cheaper than
    converting them); other columns convert only their distinct values. Several raw values
    may give the same text (1 and 1.0): the steps do not mind repeated values.
    """
    inferred = pd.api.types.infer_dtype(raw, skipna=True) if raw.dtype == object else None
    # dates (as drivers return DATE/DATETIME) of one type cannot collide as 1, 1.0, True do
    if inferred not in (None, "string", "empty", "date", "datetime"):
        return _factorize_objects(raw, f, audit)
    codes, uniques = pd.factorize(raw)
    if isinstance(raw.dtype, pd.StringDtype):
        return codes, pd.Series(pd.array(uniques, dtype=TEXT))
    if inferred in ("string", "empty"):
        try:
            return codes, pd.Series(pd.array(np.asarray(uniques, dtype=object), dtype=TEXT))
        except UnicodeEncodeError:
            return _factorize_objects(raw, f, audit)
    converted = [_scalar_text(v, f.separator or "、") for v in uniques]
    weights = np.bincount(codes[codes >= 0], minlength=len(converted))
    _audit_raw(audit, f, [(v, c, w) for v, c, w in zip(uniques, converted, weights)])
    return codes, pd.Series(pd.array([t for t, _ in converted], dtype=TEXT))


def _factorize_objects(raw: pd.Series, f: Field, audit: Audit) -> tuple[np.ndarray, pd.Series]:
    """Mixed Python objects, one pass with a cache keyed by (type, value): 1, 1.0 and True
    hash alike but do not print alike."""
    codes, converted, raws = _distinct_objects(raw.to_numpy(dtype=object), f)
    codes_array = np.asarray(codes, dtype=np.intp)
    weights = np.bincount(codes_array, minlength=len(converted))
    _audit_raw(audit, f, list(zip(raws, converted, weights)))
    return codes_array, pd.Series(pd.array([t for t, _ in converted], dtype=TEXT))


def _factorize_object_list(values: Iterable[object], f: Field, audit: Audit
                           ) -> tuple[list[int], list[str | None]]:
    """`_factorize_objects` as lists (a short column)."""
    codes, converted, raws = _distinct_objects(values, f)
    _audit_raw(audit, f, list(zip(raws, converted, _weights(codes, len(converted)))))
    return codes, [t for t, _ in converted]


def _distinct_objects(values: Iterable[object], f: Field
                      ) -> tuple[list[int], list[tuple[str | None, str | None]], list[object]]:
    """Codes (NULLs get one too, as a value of their own), and each distinct value's text
    with its rule, and the value."""
    index: dict[tuple[type, object], int] = {}
    converted: list[tuple[str | None, str | None]] = []
    raws: list[object] = []
    codes: list[int] = []
    for v in values:
        key = (type(v), v)
        try:
            code = index.get(key)
        except TypeError:  # unhashable: a value of its own
            code, key = None, (type(v), id(v))
        if code is None:
            code = index[key] = len(converted)
            converted.append(_scalar_text(v, f.separator or "、"))
            raws.append(v)
        codes.append(code)
    return codes, converted, raws


def _audit_raw(audit: Audit, f: Field,
               seen: list[tuple[object, tuple[str | None, str | None], int]]) -> None:
    by_rule: dict[str, list[tuple[object, str | None, int]]] = {}
    for value, (text, rule), n in seen:
        if rule and n:
            by_rule.setdefault(rule, []).append((value, text, n))
    for rule, items in by_rule.items():
        audit.add(f.name, rule, sum(n for *_, n in items),
                  [(_shown_raw(f, v), _example(f, t)) for v, t, _ in items[:MAX_EXAMPLES]])


# ---------------------------------------------------------------------------------------------
# Audit examples


def _example(f: Field, value: object) -> str:
    """A value as the audit shows it: as messages show it (`masking.shown`, by the field's
    definition), shortened; NULL shows as '<NULL>'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NULL_SHOWN
    text = shown(_valid_unicode(str(value))[0], f, _EXAMPLE_CHARS + 1)
    return text if len(text) <= _EXAMPLE_CHARS else text[:_EXAMPLE_CHARS - 1] + "…"


_SHORT = 200


def _differ(before: object, after: object) -> bool:
    """`_record`'s comparison of two values of TEXT series' `tolist()` (NA is NaN there): NA
    and NA are alike, NA and a value differ."""
    b_na = before is None or before is pd.NA or (isinstance(before, float) and before != before)
    a_na = after is None or after is pd.NA or (isinstance(after, float) and after != after)
    return (not (b_na and a_na)) if (b_na or a_na) else before != after


def _record(audit: Audit, f: Field, before: pd.Series, after: pd.Series,
            rule: str | pd.Series, weights: np.ndarray) -> None:
    """Count the distinct values a step changed, weighted by how many rows hold each."""
    if len(before) <= _SHORT:  # a few dozen distinct values: Python beats pandas' fixed cost
        changed = np.fromiter((_differ(b, a) for b, a in zip(before.tolist(), after.tolist())),
                              dtype=bool, count=len(before))
    else:
        same = before.eq(after).to_numpy(dtype=bool, na_value=False)
        changed = ~(same | (before.isna().to_numpy() & after.isna().to_numpy()))
    if not changed.any():
        return
    rules = (np.full(len(before), rule, dtype=object) if isinstance(rule, str)
             else rule.to_numpy(dtype=object))
    for name in pd.unique(rules[changed]):
        hit = np.flatnonzero(changed & (rules == name))
        if name is None or not len(hit):
            continue
        examples = [(_example(f, before.iat[i]), _example(f, after.iat[i]))
                    for i in hit[:MAX_EXAMPLES]]
        audit.add(f.name, str(name), int(weights[hit].sum()), examples)


# ---------------------------------------------------------------------------------------------
# Steps over distinct values


def _per_value(u: pd.Series, fn: Callable[[str], tuple[str | None, str | None]]
               ) -> tuple[pd.Series, pd.Series]:
    """Apply a Python function to each distinct value (NA stays NA, no rule)."""
    pairs = [(None, None) if isinstance(v, float) else fn(v) for v in u.tolist()]
    values = pd.Series(pd.array([p[0] for p in pairs], dtype=TEXT), index=u.index)
    rules = pd.Series([p[1] for p in pairs], index=u.index, dtype=object)
    return values, rules


def _data_bytes(u: pd.Series) -> list[np.ndarray]:
    """The UTF-8 bytes behind a TEXT series (no copy), one array per Arrow chunk.

    A superset of its values' bytes (a sliced or NULL slot may keep some), so it can only
    tell that no value holds a character: UTF-8 spells ASCII characters with their own byte
    and uses bytes >= 0x80 for everything else. A min/max over a few MB costs far less than
    a regex over each of a column's mostly distinct values.
    """
    data = (chunk.buffers()[2] for chunk in _arrow(u).chunks)
    return [np.frombuffer(b, dtype=np.uint8) for b in data if b is not None and b.size]


def _trim(u: pd.Series) -> tuple[pd.Series, str | pd.Series]:
    """Strip white space (incl. U+3000, NBSP, zero-width); blank becomes NULL."""
    arrow = _arrow(u)
    trimmed = pc.utf8_trim(arrow, characters=_STRIP)  # what `str.strip` runs on Arrow strings
    empty = pc.equal(trimmed, "")
    if not pc.any(pc.not_equal(arrow, trimmed)).as_py() and not pc.any(empty).as_py():
        return u, "trim"  # nothing to strip, nothing blank: spare pandas and the audit's comparison
    t = _from_arrow(trimmed, u.index)  # the strip already done, not again by pandas
    blank = pc.fill_null(empty, False).to_numpy(zero_copy_only=False)
    if not blank.any():  # one rule name: no per-value rule array to build and compare
        return t, "trim"
    return t.mask(blank), pd.Series(np.where(blank, "blank_to_null", "trim"), index=u.index)


def _control_chars(u: pd.Series) -> tuple[pd.Series, str]:
    """Invisible control characters (NUL, BEL, ...) are never data, and PostgreSQL refuses NUL."""
    # all of _CONTROL is below 0x20 or 0x7f: most columns have neither byte, skip the regex
    if not any(b.min() < 0x20 or (b == 0x7F).any() for b in _data_bytes(u)):
        return u, "control_chars"
    bad = u.str.contains(_CONTROL, regex=True).to_numpy(dtype=bool, na_value=False)
    if not bad.any():
        return u, "control_chars"
    out = u.copy()
    out[bad] = u[bad].str.replace(_CONTROL, "", regex=True)
    return out, "control_chars"


def _halfwidth(u: pd.Series) -> tuple[pd.Series, str]:
    """Full-width digits, letters and punctuation to ASCII (NFKC), only where non-ASCII."""
    ascii_ = pc.fill_null(pc.string_is_ascii(_arrow(u)), True)  # an Arrow kernel, no regex
    wide = ~ascii_.to_numpy(zero_copy_only=False)
    if not wide.any():
        return u, "halfwidth"
    out = u.copy()
    out[wide] = u[wide].str.normalize("NFKC").str.strip(_STRIP)
    return out, "halfwidth"


def _remove_separators(u: pd.Series) -> tuple[pd.Series, str]:
    """Codes are written in groups (3201 0219 ...); the standard stores them compact."""
    # every _SEPARATORS character is ASCII up to '-' (0x2d) or non-ASCII: plain codes
    # (digits, letters) have neither byte, and Python's regex over each value is slow
    if all(b.min() > 0x2D and b.max() < 0x80 for b in _data_bytes(u)):
        return u, "separators"
    return u.str.replace(_SEPARATORS, "", regex=True), "separators"


def _upper(u: pd.Series) -> tuple[pd.Series, str]:
    """ID check letter x -> X, USCC letters upper-case."""
    return u.str.upper(), "upper"


def _zero_pad(length: int) -> Step:
    """Numeric codes such as txCode lose leading zeros in numeric source columns (6 -> 06)."""

    def step(u: pd.Series) -> tuple[pd.Series, str]:
        short = u.str.fullmatch(r"\d+") & (u.str.len() < length)
        short = short.to_numpy(dtype=bool, na_value=False)
        return u.where(~short, u.str.zfill(length)), "zero_pad"

    return step


def _arrow(u: pd.Series) -> pa.ChunkedArray:
    """The Arrow data behind a TEXT series (no copy), for kernels pandas runs in Python."""
    return pa.chunked_array([pa.array(u.array)]).cast(pa.large_string())


def _from_arrow(values: pa.ChunkedArray, index: pd.Index) -> pd.Series:
    """A TEXT series over `index` (by position) from Arrow strings."""
    out = values.to_pandas(types_mapper=lambda _: TEXT)
    out.index = index
    return out


def _date_parts(text: pa.ChunkedArray) -> tuple[pa.ChunkedArray, ...]:
    """Year, month and day strings of the known spellings (null where none matches)."""
    long_, short = (pc.extract_regex(text, pattern) for pattern in _DATE_PATTERNS)
    return tuple(pc.coalesce(pc.struct_field(long_, [i]), pc.struct_field(short, [i]))
                 for i in range(3))


def _date(u: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Known date spellings to YYYY-MM-DD; MySQL zero dates to NULL; anything else unchanged.

    Vectorised with Arrow kernels: a regex gives year, month and day, numpy checks the
    calendar. Values already spelled YYYY-MM-DD are skipped: real or not, they stay as they
    are. Not pd.to_datetime: its range (1677-2262) would refuse 9999-12-31, the usual
    "no expiry" of certificates.
    """
    if len(u) <= _SHORT:
        return _date_short(u)
    rules = pd.Series("date", index=u.index)
    iso_shaped = u.str.fullmatch(_ISO_DATE) & u.ne("0000-00-00")
    todo = ~iso_shaped.to_numpy(dtype=bool, na_value=True)
    if not todo.any():
        return u, rules
    text = _arrow(u[todo])
    y, m, d = _date_parts(text)
    yi, mi, di = (pc.cast(p, pa.int32()).to_numpy(zero_copy_only=False).astype(float)
                  for p in (y, m, d))
    zero = (yi == 0) & (mi == 0) & (di == 0)
    month_ok = (mi >= 1) & (mi <= 12)
    leap = ((yi % 4 == 0) & (yi % 100 != 0)) | (yi % 400 == 0)
    days = _DAYS[np.where(month_ok, mi, 1).astype(int) - 1] + ((mi == 2) & leap)
    valid = (yi >= 1) & month_ok & (di >= 1) & (di <= days)
    dash = pa.scalar("-", text.type)
    iso = pc.binary_join_element_wise(y, pc.utf8_lpad(m, 2, "0"), pc.utf8_lpad(d, 2, "0"), dash)
    new = pc.if_else(pa.array(valid), iso, text)
    new = pc.if_else(pa.array(zero), pa.scalar(None, text.type), new)
    out = u.copy()
    out[todo] = _from_arrow(new, u.index[todo])
    rules[np.flatnonzero(todo)[zero]] = "zero_date"
    return out, rules


def _as_python(pattern: str) -> re.Pattern:
    """An Arrow (RE2) pattern of `_date` as Python's `re` reads it alike: RE2's `\\d` and
    `\\s` are ASCII ([0-9], [\\t\\n\\f\\r ]), and its `$` is the end of the text."""
    return re.compile(pattern.replace(r"\d", "[0-9]").replace(r"\s", "[\t\n\f\r ]")
                      .replace("$", r"\Z"))


_ISO_DATE_PY = _as_python(_ISO_DATE)
_DATE_PATTERNS_PY = tuple(_as_python(p) for p in _DATE_PATTERNS)


def _date_short(u: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`_date` of a few dozen distinct values, one at a time in Python (Arrow's kernels cost
    ~0.1 ms a call whatever the length): the same patterns, calendar and spelling."""
    values, rules = _date_list(u.tolist())
    return (pd.Series(pd.array(values, dtype=TEXT), index=u.index),
            pd.Series(rules, index=u.index, dtype=object))


def _date_list(texts: list) -> tuple[list, list[str]]:
    """`_date_short` over a list of values (NULL as None or NaN, passed through)."""
    values, rules = [], []
    for v in texts:
        rule = "date"
        if isinstance(v, str) and not (_ISO_DATE_PY.fullmatch(v) and v != "0000-00-00"):
            m = _DATE_PATTERNS_PY[0].match(v) or _DATE_PATTERNS_PY[1].match(v)
            if m:
                y, mo, d = m.group("y"), m.group("m"), m.group("d")
                yi, mi, di = int(y), int(mo), int(d)
                if yi == mi == di == 0:
                    v, rule = None, "zero_date"
                elif yi >= 1 and 1 <= mi <= 12 and 1 <= di <= _DAYS[mi - 1] + (
                        mi == 2 and (yi % 4 == 0 and yi % 100 != 0 or yi % 400 == 0)):
                    v = f"{y}-{mo.rjust(2, '0')}-{d.rjust(2, '0')}"
        values.append(v)
        rules.append(rule)
    return values, rules


def _flag(u: pd.Series) -> tuple[pd.Series, str]:
    """是/否, Y/N, yes/no, true/false, 有/无, 1.0/0.0 -> '1'/'0'; other values unchanged."""
    key = u.str.lower()
    return key.map(FLAG_WORDS).astype(TEXT).fillna(u), "flag"


@cache
def _enum_table(enum: tuple[str, ...]) -> dict[str, str]:
    """Spelling key -> canonical value for one enumeration (canonical values win; a synonym
    claiming two values of the same enum is dropped as ambiguous)."""
    table: dict[str, str] = {}
    ambiguous: set[str] = set()
    for canon, synonyms in ENUM_SYNONYMS.items():
        if canon not in enum:
            continue
        for s in synonyms:
            k = _enum_key(s)
            if table.get(k, canon) != canon:
                ambiguous.add(k)
            table[k] = canon
    for k in ambiguous:
        del table[k]
    table.update({_enum_key(c): c for c in enum})
    return table


def _enum_key(value: str) -> str:
    """Spelling differences that never change meaning: width, parentheses, spaces, case,
    and a trailing '.0' of a number read from a float column."""
    key = re.sub(r"\s+", "", unicodedata.normalize("NFKC", value)).casefold()
    return re.sub(r"^(\d+)\.0+$", r"\1", key)


def canon_enum(value: str, enum: tuple[str, ...]) -> tuple[str, str | None]:
    """The standard's spelling of one value, and the rule name when it changed."""
    if value in enum:
        return value, None
    key = _enum_key(value)
    canon = _enum_table(enum).get(key)
    if canon is None:
        return value, None
    if key != _enum_key(canon):
        return canon, "enum_synonym"
    has_half = "(" in value or ")" in value
    return canon, ("enum_parentheses" if has_half and "（" in canon else "enum_spelling")


def _enum(f: Field) -> Step:
    enum = f.enum or ()

    def step(u: pd.Series) -> tuple[pd.Series, pd.Series]:
        return _per_value(u, lambda v: canon_enum(v, enum))

    return step


def _json_items(value: str) -> list[str] | None:
    """The items of a JSON array of scalars (a MySQL JSON column arrives as its text)."""
    if not (value.startswith("[") and value.endswith("]")):
        return None
    try:
        items = json.loads(value)
    except ValueError:
        return None
    if not isinstance(items, list) or any(isinstance(x, (list, dict)) for x in items):
        return None
    return [str(x).strip() for x in items if x is not None and str(x).strip()]


def _multi_enum(f: Field) -> Step:
    """Several enumeration values in one field: split on any usual separator, canonicalise
    each, drop duplicates keeping order, join with the field's separator."""
    one = _multi_enum_one(f)

    def step(u: pd.Series) -> tuple[pd.Series, pd.Series]:
        return _per_value(u, one)

    return step


def _multi_enum_one(f: Field) -> Callable[[str], tuple[str | None, str | None]]:
    """`_multi_enum`'s rule for one value."""
    enum, sep = f.enum or (), f.separator or "、"

    def one(value: str) -> tuple[str, str | None]:
        if (items := _json_items(value)) is not None:
            return (one(sep.join(items))[0] if items else None), "array"  # type: ignore[return-value]
        whole, rule = canon_enum(value, enum)
        if whole in enum:
            return whole, rule
        parts = [canon_enum(p, enum) for p in MULTI_SPLIT.split(value) if p]
        joined = sep.join(dict.fromkeys(p for p, _ in parts))
        if joined == value:
            return value, None
        return joined, (parts[0][1] if len(parts) == 1 else "multi_value")

    return one


def _list(f: Field) -> Step:
    """A list of free values (责任人 张三，李四): split on 、,，;；/ and join by the separator."""
    one = _list_one(f)

    def step(u: pd.Series) -> tuple[pd.Series, pd.Series]:
        return _per_value(u, one)

    return step


def _list_one(f: Field) -> Callable[[str], tuple[str | None, str | None]]:
    """`_list`'s rule for one value."""
    sep = f.separator or "，"

    def one(value: str) -> tuple[str, str | None]:
        if (items := _json_items(value)) is not None:
            return (sep.join(items) or None), "array"  # type: ignore[return-value]
        parts = [p.strip(_STRIP) for p in _LIST_SPLIT.split(value)]
        joined = sep.join(p for p in parts if p)
        return (joined, "multi_value") if joined != value else (value, None)

    return one


_EXTENSION = re.compile(r"^(?P<main>.+?)\s*(?:转|分机|ext\.?|x|#|,|，|-)\s*(?P<ext>\d{1,6})$", re.I)


def _phone_main(value: str, area: str | None) -> str | None:
    """A mobile as 11 digits (no +86, spaces or hyphens), a landline as 025-83451234, a local
    number (7-8 digits) completed with `area`, the unit's city's area code; None otherwise."""
    rest = _COUNTRY.sub("", value)
    digits = _PHONE_NOISE.sub("", rest)
    if rest != value and digits[:1] not in ("0", "1"):
        digits = "0" + digits
    if _MOBILE.match(digits):
        return digits
    if area and digits[:1] not in ("0", "1") and len(digits) in (7, 8) and digits.isdigit():
        digits = area + digits
    if m := _LANDLINE.match(digits):
        return f"{m.group(1)}-{m.group(2)}"
    return None


_LOCAL = re.compile(r"^[2-9](?:\d{6,7}|\d{2,3}-\d{4})(?:(?:转|分机|ext\.?|x|#|,|，|-)\d{1,6})?$", re.I)


def _local(value: str) -> bool:
    """Whether a phone looks like a local number without area code (52345678, 5234-5678,
    52345678-8001): only then is the area code table looked up, since libphonenumber's
    geocoding data behind it is large."""
    return bool(_LOCAL.match(re.sub(r"[\s()（）]", "", value)))


def _phone_one(value: str, area: str | None = None) -> tuple[str, str | None]:
    """A phone in one spelling: see `_phone_main`; a landline's extension (转, 分机, ext, -)
    kept as 025-52345678转8001. Anything else (400 numbers, several numbers) is left for
    validation."""
    out = _phone_main(value, area)
    if out is None and (m := _EXTENSION.match(value)):
        main = _phone_main(m.group("main"), area)
        if main and "-" in main:
            out = f"{main}转{m.group('ext')}"
    if out is None or out == value:
        return value, None
    local = area and not _PHONE_NOISE.sub("", _COUNTRY.sub("", value)).startswith(("0", "1"))
    return out, "phone_area_code" if local and out.startswith(area + "-") else "phone"


def _phone(context: pd.Series | None) -> Step:
    """Phones in one spelling; `context` is each row's city, whose area code completes a local
    number."""

    def step(u: pd.Series) -> tuple[pd.Series, pd.Series]:
        if context is None:
            return _per_value(u, _phone_one)
        pairs = [(None, None) if isinstance(v, float) else
                 _phone_one(v, phones.area_code(c) if isinstance(c, str) and _local(v) else None)
                 for v, c in zip(u.tolist(), context.tolist())]
        values = pd.Series(pd.array([p[0] for p in pairs], dtype=TEXT), index=u.index)
        return values, pd.Series([p[1] for p in pairs], index=u.index, dtype=object)

    return step


def _city(u: pd.Series) -> tuple[pd.Series, pd.Series]:
    """City names to GB/T 2260 codes (南京市 -> 320100); retired codes to current ones."""
    return _per_value(u, _city_one)


def _city_one(value: str) -> tuple[str, str | None]:
    return _division(value, divisions.city_code(value))


def _district(context: pd.Series | None) -> Step:
    """District names to codes, using each row's (already cleaned) city to disambiguate."""

    def step(u: pd.Series) -> tuple[pd.Series, pd.Series]:
        cities = [None] * len(u) if context is None else context.tolist()
        pairs = [(None, None) if isinstance(v, float) else
                 _division(v, divisions.district_code(v, c if isinstance(c, str) else None))
                 for v, c in zip(u.tolist(), cities)]
        values = pd.Series(pd.array([p[0] for p in pairs], dtype=TEXT), index=u.index)
        return values, pd.Series([p[1] for p in pairs], index=u.index, dtype=object)

    return step


def _division(value: str, code: str | None) -> tuple[str, str | None]:
    return (code, "division_code") if code and code != value else (value, None)


# ---------------------------------------------------------------------------------------------
# Columns and frames


def _steps(f: Field, context: pd.Series | None) -> list[Step]:
    """The rules a field gets, from its kind, type, enum and separator."""
    steps: list[Step] = [_control_chars, _trim]
    if f.kind == "flag":
        steps += [_halfwidth, _flag]
    elif f.is_date:
        steps += [_halfwidth, _date]
    elif f.enum and f.separator:
        steps += [_multi_enum(f)]
    elif f.enum:
        steps += [_enum(f)]
    elif f.separator:
        steps += [_list(f)]
    elif f.kind in ("uscc", "idcard", "regno"):
        steps += [_halfwidth, _remove_separators, _upper]
    elif f.kind == "code":
        steps += [_halfwidth] + ([_zero_pad(f.length)] if f.type == "N" else [])
    elif f.kind == "phone":
        steps += [_halfwidth, _phone(context)]
    elif f.kind == "city":
        steps += [_halfwidth, _city]
    elif f.kind == "district":
        steps += [_halfwidth, _district(context)]
    return steps


def _with_context(codes: np.ndarray, u: pd.Series, context: pd.Series
                  ) -> tuple[np.ndarray, pd.Series, pd.Series]:
    """Re-factorise on (city, value) pairs: a district name means different codes in
    different cities. Returns the new codes, the pair values and the pair cities."""
    city_codes, cities = pd.factorize(context.astype(TEXT))
    n = len(u) + 1
    pair = np.where(codes >= 0, (city_codes.astype(np.int64) + 1) * n + codes, -1)
    pair_codes, keys = pd.factorize(pair)  # in order of first appearance; -1 is a key too
    present = keys >= 0
    renumber = np.full(len(keys), -1, dtype=np.intp)
    renumber[present] = np.arange(present.sum())
    keys = keys[present]
    values = pd.Series(pd.array(u.to_numpy(dtype=object)[keys % n], dtype=TEXT))
    city_values = pd.array(np.asarray(cities, dtype=object), dtype=TEXT)
    return renumber[pair_codes], values, pd.Series(city_values.take(keys // n - 1, allow_fill=True))


def clean_column(raw: pd.Series, f: Field, audit: Audit,
                 context: pd.Series | None = None) -> pd.Series:
    """One column through its field's rules; `context` is the row's city for districts.
    A column of at most `_SHORT` rows takes the same rules over Python lists (`_clean_short`):
    pandas and Arrow cost ~0.1 ms a call however few the values."""
    if len(raw) <= _SHORT:
        return _clean_short(raw, f, audit, context)
    return _clean_long(raw, f, audit, context)


@dataclass(frozen=True)
class _Forms:
    """One form of running a field's rules over a column's distinct values: pandas/Arrow
    arrays (`_LONG_FORMS`) or Python lists (`_LIST_FORMS`); `_clean_with` is the one driver."""

    factorize: Callable  # (raw, field, audit) -> (codes, distinct values)
    with_context: Callable  # (codes, values, context) -> (codes, values, context per value)
    weights: Callable  # (codes, n) -> rows per distinct value
    steps: Callable  # (field, context per value) -> the steps
    record: Callable  # (audit, field, before, after, rule, weights): a step's changes
    column: Callable  # (values, codes) -> the column's values, in row order


def _clean_with(forms: _Forms, raw: pd.Series, f: Field, audit: Audit,
                context: pd.Series | None) -> pd.Series:
    """`clean_column` in one form: each step over the distinct values, its changes audited."""
    codes, u = forms.factorize(raw, f, audit)
    u_context = None
    if f.kind in ("district", "phone") and context is not None:
        codes, u, u_context = forms.with_context(codes, u, context)
    weights = forms.weights(codes, len(u))
    for step in forms.steps(f, u_context):
        after, rule = step(u)
        if after is not u:  # a step that found nothing to do returns its input
            forms.record(audit, f, u, after, rule, weights)
        u = after
    return pd.Series(forms.column(u, codes), index=raw.index, name=raw.name)


def _clean_long(raw: pd.Series, f: Field, audit: Audit,
                context: pd.Series | None = None) -> pd.Series:
    """`clean_column` over the column's distinct values as pandas/Arrow arrays."""
    return _clean_with(_LONG_FORMS, raw, f, audit, context)


# ---------------------------------------------------------------------------------------------
# Short columns: the same steps over Python lists
#
# Each step below is its Arrow/pandas form above, value by value (NULL is None), and returns
# its input list itself when it changes nothing; `tests/test_short_paths.py` compares the two
# forms of every field on generated values: texts, rule names, audit counts and examples.

Texts = list  # list[str | None]
ShortStep = Callable[[Texts], tuple[Texts, "str | list[str | None]"]]

_CONTROL_RE = re.compile(_CONTROL)
_SEPARATORS_RE = re.compile(_SEPARATORS)  # pandas runs a pattern with \s in Python's re
_DIGITS_RE = re.compile(r"\d+")  # Python's re on non-ASCII data (pandas), RE2 alike on ASCII


def _factorize_short(raw: pd.Series, f: Field, audit: Audit) -> tuple[list[int], Texts]:
    """`_factorize_raw` as lists: codes (-1 for NULL) and each distinct raw value's text."""
    if raw.dtype != object and not isinstance(raw.dtype, pd.StringDtype):
        codes, u = _factorize_raw(raw, f, audit)  # numbers, datetimes: their own dtype's way
        return codes.tolist(), [v if isinstance(v, str) else None for v in u.tolist()]
    inferred = pd.api.types.infer_dtype(raw, skipna=True) if raw.dtype == object else "string"
    if inferred not in ("string", "empty", "date", "datetime"):
        return _factorize_object_list(raw.tolist(), f, audit)
    index: dict[object, int] = {}
    uniques: list = []
    codes: list[int] = []
    text = inferred in ("string", "empty")
    for v in as_list(raw):
        if (not isinstance(v, str)) if text else (v is None or pd.isna(v)):
            codes.append(-1)
            continue
        code = index.get(v)
        if code is None:
            code = index[v] = len(uniques)
            uniques.append(v)
        codes.append(code)
    if text:
        try:
            "".join(uniques).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: `_factorize_objects` replaces them
            return _factorize_object_list(raw.tolist(), f, audit)
        return codes, uniques
    converted = [_scalar_text(v, f.separator or "、") for v in uniques]
    _audit_raw(audit, f, list(zip(uniques, converted, _weights(codes, len(uniques)))))
    return codes, [t for t, _ in converted]


def _weights(codes: list[int], n: int) -> list[int]:
    """How many rows hold each of `n` distinct values."""
    weights = [0] * n
    for c in codes:
        if c >= 0:
            weights[c] += 1
    return weights


def _with_context_short(codes: list[int], u: Texts, context: pd.Series
                        ) -> tuple[list[int], Texts, Texts]:
    """`_with_context` as lists: (city, value) pairs in order of first appearance."""
    index: dict[tuple[str | None, int], int] = {}
    out: list[int] = []
    values: Texts = []
    cities: Texts = []
    for c, city in zip(codes, as_list(context)):
        if c < 0:
            out.append(-1)
            continue
        key = (city if isinstance(city, str) else None, c)
        j = index.get(key)
        if j is None:
            j = index[key] = len(values)
            values.append(u[c])
            cities.append(key[0])
        out.append(j)
    return out, values, cities


def _each(u: Texts, fn: Callable[[str], tuple[str | None, str | None]]) -> tuple[Texts, list]:
    """`_per_value` over a list."""
    pairs = [(None, None) if v is None else fn(v) for v in u]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _control_chars_short(u: Texts) -> tuple[Texts, str]:
    if _CONTROL_RE.search("".join(v for v in u if v is not None)) is None:
        return u, "control_chars"
    return [None if v is None else _CONTROL_RE.sub("", v) for v in u], "control_chars"


def _trim_short(u: Texts) -> tuple[Texts, str | list[str]]:
    out = [None if v is None else (v.strip(_STRIP) or None) for v in u]
    if out == u:
        return u, "trim"
    return out, ["blank_to_null" if v is not None and t is None else "trim" for v, t in zip(u, out)]


def _halfwidth_short(u: Texts) -> tuple[Texts, str]:
    if all(v is None or v.isascii() for v in u):
        return u, "halfwidth"
    return [v if v is None or v.isascii() else unicodedata.normalize("NFKC", v).strip(_STRIP)
            for v in u], "halfwidth"


def _flag_short(u: Texts) -> tuple[Texts, str]:
    return [None if v is None else FLAG_WORDS.get(v.lower(), v) for v in u], "flag"


def _remove_separators_short(u: Texts) -> tuple[Texts, str]:
    return [None if v is None else _SEPARATORS_RE.sub("", v) for v in u], "separators"


def _upper_short(u: Texts) -> tuple[Texts, str]:
    """Arrow's upper case (one code point for one, unlike Python's 'ß' -> 'SS') where not ASCII."""
    wide = [v for v in u if v is not None and not v.isascii()]
    upper = iter(pc.utf8_upper(pa.array(wide, pa.string())).to_pylist() if wide else ())
    return [None if v is None else (v.upper() if v.isascii() else next(upper)) for v in u], "upper"


def _zero_pad_short(length: int) -> ShortStep:
    def step(u: Texts) -> tuple[Texts, str]:
        return [v if v is None or len(v) >= length or not _DIGITS_RE.fullmatch(v)
                else v.zfill(length) for v in u], "zero_pad"

    return step


def _with_cities(fn: Callable[[str, str | None], tuple[str | None, str | None]],
                 cities: Texts | None) -> ShortStep:
    def step(u: Texts) -> tuple[Texts, list]:
        pairs = [(None, None) if v is None else fn(v, c)
                 for v, c in zip(u, cities if cities is not None else [None] * len(u))]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    return step


def _phone_with_city(value: str, city: str | None) -> tuple[str, str | None]:
    return _phone_one(value, phones.area_code(city) if city is not None and _local(value) else None)


def _district_with_city(value: str, city: str | None) -> tuple[str, str | None]:
    return _division(value, divisions.district_code(value, city))


def _short_steps(f: Field, context: Texts | None) -> list[ShortStep]:
    """`_steps` as list steps, in the same order."""
    def per_value(fn: Callable[[str], tuple[str | None, str | None]]) -> ShortStep:
        return lambda u: _each(u, fn)

    steps: list[ShortStep] = [_control_chars_short, _trim_short]
    if f.kind == "flag":
        steps += [_halfwidth_short, _flag_short]
    elif f.is_date:
        steps += [_halfwidth_short, _date_list]
    elif f.enum and f.separator:
        steps += [per_value(_multi_enum_one(f))]
    elif f.enum:
        enum = f.enum
        steps += [per_value(lambda v: canon_enum(v, enum))]
    elif f.separator:
        steps += [per_value(_list_one(f))]
    elif f.kind in ("uscc", "idcard", "regno"):
        steps += [_halfwidth_short, _remove_separators_short, _upper_short]
    elif f.kind == "code":
        steps += [_halfwidth_short] + ([_zero_pad_short(f.length)] if f.type == "N" else [])
    elif f.kind == "phone":
        steps += [_halfwidth_short, per_value(_phone_one) if context is None
                  else _with_cities(_phone_with_city, context)]
    elif f.kind == "city":
        steps += [_halfwidth_short, per_value(_city_one)]
    elif f.kind == "district":
        steps += [_halfwidth_short, _with_cities(_district_with_city, context)]
    return steps


def _record_short(audit: Audit, f: Field, before: Texts, after: Texts,
                  rule: str | list, weights: list[int]) -> None:
    """`_record` over lists."""
    changed = [_differ(b, a) for b, a in zip(before, after)]
    if not any(changed):
        return
    rules = [rule] * len(before) if isinstance(rule, str) else rule
    for name in dict.fromkeys(r for r, c in zip(rules, changed) if c):
        if name is None:
            continue
        hit = [i for i, (r, c) in enumerate(zip(rules, changed)) if c and r == name]
        examples = [(_example(f, before[i]), _example(f, after[i])) for i in hit[:MAX_EXAMPLES]]
        audit.add(f.name, str(name), sum(weights[i] for i in hit), examples)


def _clean_short(raw: pd.Series, f: Field, audit: Audit,
                 context: pd.Series | None = None) -> pd.Series:
    """`_clean_long` over Python lists, for a column of a few dozen rows."""
    return _clean_with(_LIST_FORMS, raw, f, audit, context)


_LONG_FORMS = _Forms(
    _factorize_raw, _with_context,
    lambda codes, n: np.bincount(codes[codes >= 0], minlength=n),
    _steps, _record, lambda u, codes: pd.array(u, dtype=TEXT).take(codes, allow_fill=True))
_LIST_FORMS = _Forms(
    _factorize_short, _with_context_short, _weights, _short_steps, _record_short,
    lambda u, codes: text_array([u[c] if c >= 0 else None for c in codes], TEXT))


@cache
def standard_fields(ds: Dataset) -> tuple[Field, ...]:
    """The fields a frame of `ds` may carry: its own, the envelope and the unit key."""
    unit_key = next(f for d in DATASETS for f in d.fields if f.name == UNIT_KEY)
    out = {f.name: f for f in (*ENVELOPE, unit_key)}
    out.update({f.name: f for f in ds.fields})
    # cities first: districts are resolved with the row's cleaned city
    return tuple(sorted(out.values(), key=lambda f: f.kind != "city"))


def clean_frame(df: pd.DataFrame, ds: Dataset, audit: Audit, unit_city: str | None = None) -> pd.DataFrame:
    """Normalise every standard field column present in df; returns a new frame with the same
    columns (other columns, e.g. '_key', pass through untouched). Standard field columns come
    back as pandas string dtype ("str"/StringDtype) holding the canonical spelling, NA for blank.
    `unit_city` (a GB/T 2260 city code) completes local phone numbers where a row has no city."""
    out = df.copy(deep=False)
    fields = [f for f in standard_fields(ds) if f.name in df.columns]
    city = next((f.name for f in fields if f.kind == "city"), None)
    for f in fields:
        context = out[city] if f.kind == "district" and city else None
        if f.kind == "phone":
            row_city = out[city] if city else pd.Series(pd.NA, index=df.index, dtype=TEXT)
            context = row_city.fillna(unit_city) if unit_city else (row_city if city else None)
        out[f.name] = clean_column(df[f.name], f, audit, context)
    return out
