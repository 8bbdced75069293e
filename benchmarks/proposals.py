"""Changes this benchmark proposes to modules it does not own (`etl/validate.py`,
`etl/clean.py`), written as drop-in replacements so their effect can be measured
(`run.py --proposals`) before anyone adopts them. Each keeps the function's results
identical; `python benchmarks/proposals.py` checks that on generated data.

1. `validate._by_unique`: `Series.map(dict)` on an Arrow-backed string column boxes every
   row (~1 µs each, 19 columns): 22 s per million rows, the pipeline's largest cost. Factorise
   once and index a numpy verdict array by the codes instead.
2. The `length` rule runs a Python `len` per distinct value, and text columns such as taskNo
   and mainProblem are all distinct: use Arrow's `str.len()` for it; likewise the equipment
   code pattern (regNo, mostly distinct) as one Arrow regex.
3. `validate._date_order` maps `checks.is_valid_date` over every row of both columns, six
   columns per A.11 chunk: check each distinct date once.
4. `clean._factorize_raw`: a column of `datetime.date` objects (what drivers return for DATE)
   goes through the mixed-objects loop, one Python iteration per row (0.4 s per million rows
   and column; A.11 has four). All values of one type cannot collide as 1/1.0/True do, so
   `pd.factorize` is exact for them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd


def _verdicts(s: pd.Series, predicate: Callable[[str], bool]) -> np.ndarray:
    """predicate over the distinct values, NA passing, as a boolean array aligned with s."""
    codes, uniques = pd.factorize(s)
    ok = np.fromiter((bool(predicate(u)) for u in np.asarray(uniques, dtype=object).tolist()),
                     dtype=bool, count=len(uniques))
    return np.append(ok, True)[codes]


def by_unique(predicate: Callable[[str], bool]) -> Callable[[pd.Series], pd.Series]:
    def check(s: pd.Series) -> pd.Series:
        return pd.Series(_verdicts(s, predicate), index=s.index)
    return check


def length(n: int) -> Callable[[pd.Series], pd.Series]:
    def check(s: pd.Series) -> pd.Series:
        if isinstance(s.dtype, pd.StringDtype):
            return (s.str.len() <= n).fillna(True).astype(bool)
        return pd.Series(_verdicts(s, lambda v: len(v) <= n), index=s.index)
    return check


def regno(s: pd.Series) -> pd.Series:
    """`checks.is_valid_regno` (re.match of ^[0-9A-Z]{20}$, where $ also matches before a
    final newline) as one Arrow regex over the column."""
    if isinstance(s.dtype, pd.StringDtype):
        return s.str.fullmatch(r"[0-9A-Z]{20}\n?").fillna(True).astype(bool)
    from etl import checks
    return pd.Series(_verdicts(s, checks.is_valid_regno), index=s.index)


def date_order(before: str, after: str) -> Callable[[pd.DataFrame], pd.Series]:
    from etl import checks

    def check(df: pd.DataFrame) -> pd.Series:
        a, b = df[before], df[after]
        both = a.notna() & b.notna()
        va = pd.Series(_verdicts(a.fillna(""), checks.is_valid_date), index=df.index)
        vb = pd.Series(_verdicts(b.fillna(""), checks.is_valid_date), index=df.index)
        return ~both | (a.fillna("") <= b.fillna("")) | ~va | ~vb
    return check


def install() -> None:
    """Swap the proposed functions in (before the first `validate.schema` call builds and
    caches the schemas)."""
    from etl import checks, clean, validate

    original_rules = validate._field_rules

    def field_rules(f):  # the same rules and names; `length` marked for the vectorised check
        rules = original_rules(f)
        return [(name, _Length(f.length) if name == "length" else pred, msg) for name, pred, msg in rules]

    def by_unique_or_length(predicate):
        if isinstance(predicate, _Length):
            return length(predicate.n)
        if predicate is checks.is_valid_regno:
            return regno
        return by_unique(predicate)

    validate._field_rules = field_rules
    validate._by_unique = by_unique_or_length
    validate._date_order = date_order
    validate.schema.cache_clear()

    original_factorize = clean._factorize_raw

    def factorize_raw(raw: pd.Series, f, audit):
        if raw.dtype == object and pd.api.types.infer_dtype(raw, skipna=True) == "date" \
                and _all_plain_dates(raw):
            codes, uniques = pd.factorize(raw)
            converted = [clean._scalar_text(v) for v in uniques]
            weights = np.bincount(codes[codes >= 0], minlength=len(converted))
            clean._audit_raw(audit, f, [(v, c, w) for v, c, w in zip(uniques, converted, weights)])
            return codes, pd.Series(pd.array([t for t, _ in converted], dtype=clean.TEXT))
        return original_factorize(raw, f, audit)

    clean._factorize_raw = factorize_raw


class _Length:
    """The `length` predicate, recognisable so that its check can be vectorised."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, v: str) -> bool:
        return len(v) <= self.n


def _all_plain_dates(raw: pd.Series) -> bool:
    """datetime.date but not datetime.datetime (a subclass, which prints with a time)."""
    return not any(isinstance(v, dt.datetime) for v in raw.dropna().unique())


def check_equivalence(rows: int = 50_000) -> None:
    """Findings and cleaned frames with and without the proposals, on generated dirty data."""
    import random

    from etl import pipeline, standard, transform, validate
    from etl.clean import Audit, clean_frame

    rng = random.Random(7)
    ds = standard.dataset("09")
    dates = [dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(900)) for _ in range(rows)]
    raw = pd.DataFrame({
        "taskNo": [f"YH{i:08d}" + ("X" * 60 if i % 997 == 0 else "") for i in range(rows)],
        "regNo": [rng.choice([None, "3110320115" + f"{i:010d}", "bad", "31103201150000000001X"]) for i in range(rows)],
        "troubleType": [rng.choice(["设备类", "设备", "管理类", "其他", None]) for _ in range(rows)],
        "troubleLevel": [rng.choice(["一般事故隐患", "较大", "特大隐患"]) for _ in range(rows)],
        "mainProblem": [rng.choice(["问题" + str(i), "", None, "x" * 2100, "  "]) for i in range(rows)],
        "checkMan": [rng.choice(["张三", "李四　", None]) for _ in range(rows)],
        "checkDate": dates,
        "limitDate": [d + dt.timedelta(days=rng.randrange(-5, 30)) for d in dates],
        "dealMan": [rng.choice(["王五", None]) for _ in range(rows)],
        "dealDate": [rng.choice([None, d + dt.timedelta(days=3), "2024-02-30"]) for d in dates],
        "dealInfo": [rng.choice(["已整改", "未整改", "整改中"]) for _ in range(rows)],
        "acceptMan": [rng.choice(["赵六", None]) for _ in range(rows)],
        "acceptDate": [rng.choice([None, d + dt.timedelta(days=9)]) for d in dates],
        "acceptInfo": [rng.choice(["整改验收合格", None, "合格"]) for _ in range(rows)],
    })
    raw[transform.KEY] = [str(i) for i in range(rows)]
    raw[transform.UPDATED] = None
    raw[transform.DELETED] = False

    def run() -> tuple:
        audit = Audit()
        frame = clean_frame(raw, ds, audit)
        found = pipeline._check_chunk(frame, ds, None, {}, dt.date(2025, 6, 1))
        return frame, sorted((str(f.row), f.field, f.rule, f.message, f.severity) for f in found), audit.rows()

    before = run()
    install()
    after = run()
    pd.testing.assert_frame_equal(before[0], after[0], check_exact=True)
    assert before[1] == after[1], "findings differ"
    assert before[2] == after[2], "audit differs"
    print(f"identical: {len(before[1])} findings, {len(before[2])} audit rows on {rows:,} rows")
    del validate


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    check_equivalence()
