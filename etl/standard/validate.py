"""Validation: pandera schemas derived from `etl.standard`, run lazily so one pass reports
every failure of a chunk, and turned into reject rows with personal data masked.

Rule names (`length`, `enum`, `date`, `uscc`, `idcard`, `regno`, `phone`, `division`,
`required`, `date_order`, `required_when`, `reference`, and `binary` from `etl.standard.clean`) are what
`ingest_reject.rule` holds; warnings (`expired`, `overdue`, `division_within`, `outside_jiangsu`)
load the row anyway.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache

import numpy as np
import pandas as pd
import pandera.pandas as pa

from etl import standard
from etl.common.masking import excerpt
from etl.common.columns import as_list
from etl.standard import Dataset, Field, checks

ERROR, WARNING, DUPLICATE = "error", "warning", "duplicate"
OFF = "off"  # an error a mapping's `checks:` switched off: never stored, counted as overridden


@dataclass(frozen=True)
class Finding:
    """One broken rule of one row (`row` is the frame's index label)."""

    row: object
    field: str
    rule: str
    message: str
    severity: str = ERROR


SeriesCheck = Callable[[pd.Series], pd.Series]
RowsCheck = Callable[[dict[str, list]], list[bool]]


def _verdicts(s: pd.Series, predicate: Callable[[str], bool]) -> np.ndarray:
    """The predicate over the column's distinct values (NA passes), spread back by the codes:
    `Series.map(dict)` would box every row of an Arrow-backed column instead."""
    codes, uniques = pd.factorize(s)
    ok = np.fromiter((bool(predicate(u)) for u in np.asarray(uniques, dtype=object).tolist()),
                     dtype=bool, count=len(uniques))
    return np.append(ok, True)[codes]


def _by_unique(predicate: Callable[[str], bool]) -> SeriesCheck:
    def check(s: pd.Series) -> pd.Series:
        return pd.Series(_verdicts(s, predicate), index=s.index)
    return check


def _max_length(n: int) -> SeriesCheck:
    """Mostly-distinct text (descriptions, numbers) is measured by Arrow, not per value."""
    def check(s: pd.Series) -> pd.Series:
        if isinstance(s.dtype, pd.StringDtype):
            return (s.str.len() <= n).fillna(True).astype(bool)
        return pd.Series(_verdicts(s, lambda v: len(v) <= n), index=s.index)
    return check


def _regno(s: pd.Series) -> pd.Series:
    """`checks.is_valid_regno` as one Arrow regex: equipment codes are mostly distinct."""
    if isinstance(s.dtype, pd.StringDtype):
        return s.str.fullmatch(r"[0-9A-Z]{20}").fillna(True).astype(bool)
    return pd.Series(_verdicts(s, checks.is_valid_regno), index=s.index)


def _multi_enum(f: Field) -> Callable[[str], bool]:
    allowed = set(f.enum or ())
    return lambda v: all(part in allowed for part in v.split(f.separator or "、"))


_KIND_CHECKS: dict[str, Callable[[str], bool]] = {
    "uscc": checks.is_valid_uscc,
    "idcard": checks.is_valid_idcard,
    "regno": checks.is_valid_regno,
    "phone": checks.is_valid_phone,
    "city": lambda v: len(v) == 6 and v.isdigit() and v.endswith("00"),
    "district": lambda v: len(v) == 6 and v.isdigit(),
}

_KIND_MESSAGES = {
    "uscc": "is not a valid unified social credit code (GB 32100 check character)",
    "idcard": "is not a valid resident ID number (GB 11643)",
    "regno": "is not a 20-character equipment code",
    "phone": "is not a valid phone number",
    "city": "is not a city code: give the 6-digit GB/T 2260 code or a city name such as 南京市",
    "district": "is not a district code: give the 6-digit GB/T 2260 code or a name such as 玄武区",
}


Predicate = Callable[[str], bool]
_REGNO20 = re.compile(r"[0-9A-Z]{20}")  # `_regno`'s Arrow regex, as Python runs it


def _field_rules(f: Field) -> list[tuple[str, SeriesCheck, Predicate, str]]:
    """(rule name, column check, the same check on one value, message) for one field, from
    its type, enum and kind. The column check is what pandera runs and what a large frame
    runs; the per-value one what a small frame runs (`_failures`)."""
    n = f.length
    out: list[tuple[str, SeriesCheck, Predicate, str]] = [
        ("length", _max_length(n), lambda v: len(v) <= n, f"longer than {n} characters")]
    if f.is_date:
        out.append(("date", _by_unique(checks.is_valid_date), checks.is_valid_date,
                    "is not a date: use a real date such as 2024-07-08"))
    elif f.enum and f.separator:
        out.append(("enum", _by_unique(_multi_enum(f)), _multi_enum(f),
                    f"each value must be one of {'、'.join(f.enum)}"))
    elif f.enum:
        allowed = frozenset(f.enum).__contains__
        out.append(("enum", _by_unique(allowed), allowed, f"must be one of {'、'.join(f.enum)}"))
    if f.kind in _KIND_CHECKS:
        rule = "division" if f.kind in ("city", "district") else f.kind
        if f.kind == "regno":
            check, one = _regno, (lambda v: _REGNO20.fullmatch(v) is not None)
        else:
            check, one = _by_unique(_KIND_CHECKS[f.kind]), _KIND_CHECKS[f.kind]
        out.append((rule, check, one, _KIND_MESSAGES[f.kind]))
    return out


def _date_order(before: str, after: str) -> Callable[[pd.DataFrame], pd.Series]:
    def check(df: pd.DataFrame) -> pd.Series:
        a, b = df[before], df[after]
        both = a.notna() & b.notna()
        valid_a = _verdicts(a.fillna(""), checks.is_valid_date)
        valid_b = _verdicts(b.fillna(""), checks.is_valid_date)
        return ~both | (a.fillna("") <= b.fillna("")) | ~valid_a | ~valid_b
    return check


def _date_order_rows(before: str, after: str) -> RowsCheck:
    """`_date_order` over plain lists: a later `before` than `after`, both real dates."""
    valid = checks.is_valid_date

    def check(cols: dict[str, list]) -> list[bool]:
        return [not (_present(a) and _present(b)) or a <= b or not valid(a) or not valid(b)
                for a, b in zip(cols[before], cols[after])]
    return check


def _required_when(field: str, values: tuple[str, ...] | None, needed: str) -> Callable[[pd.DataFrame], pd.Series]:
    def check(df: pd.DataFrame) -> pd.Series:
        trigger = df[field].notna() if values is None else df[field].isin(values)
        return ~trigger | df[needed].notna()
    return check


def _required_when_rows(field: str, values: tuple[str, ...] | None, needed: str) -> RowsCheck:
    """`_required_when` over plain lists."""
    def check(cols: dict[str, list]) -> list[bool]:
        return [not (_present(v) if values is None else (_present(v) and v in values)) or _present(w)
                for v, w in zip(cols[field], cols[needed])]
    return check


def _present(v: object) -> bool:
    """Not NA, as a TEXT column's `tolist()` spells NA (NaN; None, pd.NA elsewhere)."""
    return v is not None and v is not pd.NA and not (isinstance(v, float) and v != v)


FrameCheck = Callable[[pd.DataFrame], pd.Series]


@cache
def _checks(tx_code: str) -> tuple[list[tuple[str, bool, list[tuple[str, SeriesCheck, Predicate]]]],
                                   list[tuple[str, FrameCheck, RowsCheck]]]:
    """A dataset's checks, as data: (column, nullable, [(rule, check, per-value check)]) per
    field and (name, check, check over lists) per frame check. `schema` makes them pandera's;
    `_failures` calls them as pandera would."""
    ds = standard.dataset(tx_code)
    columns = [(f.name, not f.required, [(rule, check, one) for rule, check, one, _ in _field_rules(f)])
               for f in ds.fields]
    frame = [(f"date_order:{o.before}:{o.after}", _date_order(o.before, o.after),
              _date_order_rows(o.before, o.after)) for o in ds.date_orders]
    frame += [(f"required_when:{r.field}:{n}", _required_when(r.field, r.values, n),
               _required_when_rows(r.field, r.values, n))
              for r in ds.required_when for n in r.fields]
    return columns, frame


@cache
def schema(tx_code: str) -> pa.DataFrameSchema:
    """The pandera schema of a dataset's cleaned frame (standard field columns, as text)."""
    ds = standard.dataset(tx_code)
    columns, frame = _checks(tx_code)
    return pa.DataFrameSchema(
        {name: pa.Column(nullable=nullable, required=True,
                         checks=[pa.Check(check, name=rule) for rule, check, _ in rules])
         for name, nullable, rules in columns},
        checks=[pa.Check(check, name=name) for name, check, _ in frame],
        name=f"{ds.structure} {ds.table}")


#: One broken check: (check name, column, row labels, the failing values), as `_findings_of`
#: reads it. Both paths list them in ONE agreed order, the order of `_checks`: the frame
#: checks first (each its rows in frame order), then the columns in field order, each its
#: empty required rows (`not_nullable`) and then its rules in order, rows in frame order. It is
#: the order pandera lists failure cases in before its final `sort_values` by schema context,
#: a quicksort that promises nothing about ties (numpy's scrambles them on object arrays; the
#: pandas of this tree happens to keep them): `_pandera_failures` re-sorts stably.
Failure = tuple[str, str, list, list]


#: Up to this many rows, `_failures` runs the per-value checks over plain lists: a pandas
#: operation's fixed cost (~50-100 us, several per check) is then most of the work.
SMALL_ROWS = 500


def _failures(frame: pd.DataFrame, tx_code: str) -> list[Failure]:
    """Every broken check of a frame of standard fields, computed by the schema's own checks
    as pandera calls them (a column's on its values without NA, a frame's on the whole frame),
    without pandera: its fixed cost, ~0.2 ms per column and check and ~35 ms to build a
    failing frame's cases, is most of a small frame's validation. A small frame (`SMALL_ROWS`)
    runs the same checks on one value (or row) at a time. Raises whatever a check raises:
    `findings` then lets pandera decide and report."""
    if len(frame) <= SMALL_ROWS:
        return _failures_of_lists(frame, tx_code)
    columns, frame_checks = _checks(tx_code)
    out: list[Failure] = []
    for name, check, _ in frame_checks:
        ok = np.asarray(check(frame), dtype=bool)
        if not ok.all():
            first = name.split(":")[1]  # the column `_findings_of` reports a frame check by
            bad = frame[first][~ok].dropna()  # pandera drops NA failure cases
            out.append((name, first, bad.index.tolist(), bad.tolist()))
    for name, nullable, rules in columns:
        values = frame[name]
        if values.hasnans:
            empty = values.isna().to_numpy(dtype=bool)
            if not nullable:
                out.append(("not_nullable", name, values.index[empty].tolist(), [None] * int(empty.sum())))
            values = values[~empty]
        for rule, check, _ in rules:
            ok = np.asarray(check(values), dtype=bool)
            if not ok.all():
                bad = values[~ok]
                out.append((rule, name, bad.index.tolist(), bad.tolist()))
    return out


def _failures_of_lists(frame: pd.DataFrame, tx_code: str) -> list[Failure]:
    """`_failures` of a small frame: the same checks, in the same order, over plain lists."""
    columns, frame_checks = _checks(tx_code)
    rows = frame.index.tolist()
    cols = {name: as_list(frame[name]) for name, _, _ in columns}
    out: list[Failure] = []
    for name, _, check in frame_checks:
        first = name.split(":")[1]
        bad = [(i, v) for i, v, ok in zip(rows, cols[first], check(cols)) if not ok and _present(v)]
        if bad:
            out.append((name, first, [i for i, _ in bad], [v for _, v in bad]))
    for name, nullable, rules in columns:
        present = [(i, v) for i, v in zip(rows, cols[name]) if _present(v)]
        if not nullable and len(present) < len(rows):
            empty = [i for i, v in zip(rows, cols[name]) if not _present(v)]
            out.append(("not_nullable", name, empty, [None] * len(empty)))
        for rule, _, one in rules:
            bad = [(i, v) for i, v in present if not one(v)]
            if bad:
                out.append((rule, name, [i for i, _ in bad], [v for _, v in bad]))
    return out


def _passes(frame: pd.DataFrame, tx_code: str) -> bool:
    """Whether the frame breaks none of `schema`'s checks (on any error: no)."""
    try:
        return not _failures(frame, tx_code)
    except Exception:  # noqa: BLE001 - pandera will say what is wrong
        return False


def _shown(ds: Dataset, field: str, value: object) -> str:
    """A short, masked quote of a value: messages never copy a whole value."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "empty"
    return excerpt(value, ds.field(field) if field in ds.field_names else None)


def findings(frame: pd.DataFrame, ds: Dataset) -> list[Finding]:
    """Every broken rule of every row of a cleaned frame, in one pass, in `Failure`'s order.
    Our column-wise checks find them (`_failures`); pandera, running the very same checks
    (`schema`), decides only when a check raises, and reports that in the same order."""
    names = list(ds.field_names)
    small = len(frame) <= SMALL_ROWS and all(n in frame.columns for n in names)
    fields = frame if small else frame[names]  # the list path reads only the fields' columns
    try:
        failures = _failures(fields, ds.tx_code)
    except Exception:  # noqa: BLE001 - pandera will say what is wrong
        return pandera_findings(frame, ds)
    return _findings_of(failures, frame, ds)


def pandera_findings(frame: pd.DataFrame, ds: Dataset) -> list[Finding]:
    """The findings as pandera gives them, in the same order as `findings`."""
    try:
        schema(ds.tx_code).validate(frame[list(ds.field_names)], lazy=True)
    except pa.errors.SchemaErrors as err:
        return _findings_of(_pandera_failures(err.failure_cases), frame, ds)
    return []


def _pandera_failures(cases: pd.DataFrame) -> list[Failure]:
    """pandera's failure cases as `Failure`s, in the agreed order: its cases were numbered in
    that order before its quicksort by schema context (the frame's checks first), so go back
    to that numbering and sort stably."""
    cases = cases.sort_index(kind="stable").sort_values("schema_context", ascending=False, kind="stable")
    cases = cases[cases["index"].notna()]  # a check that raised: no row to report
    return [(str(check), column, group["index"].tolist(), group["failure_case"].tolist())
            for (check, column), group in cases.groupby(["check", "column"], sort=False, dropna=False)]


def _findings_of(failures: list[Failure], frame: pd.DataFrame, ds: Dataset) -> list[Finding]:
    """Failures as findings, a check at a time (row look-ups per case cost seconds when a
    whole source is wrong)."""
    out: list[Finding] = []
    for check, column, rows, values in failures:
        if check == "not_nullable":
            text = f"{column} ({ds.field(column).zh}) is required but empty"
            out += [Finding(i, column, "required", text) for i in rows]
        elif check.startswith(("date_order:", "required_when:")):
            kind, first, second = check.split(":")
            if column != first:
                continue  # pandera reports a frame-level check once per column: keep one
            a, b = frame.loc[rows, first].tolist(), frame.loc[rows, second].tolist()
            if kind == "date_order":
                out += [Finding(i, second, kind, f"{first} {_shown(ds, first, x)} is later than "
                                                 f"{second} {_shown(ds, second, y)}")
                        for i, x, y in zip(rows, a, b)]
            else:
                zh = ds.field(second).zh
                out += [Finding(i, second, kind, f"{second} ({zh}) is required when {first} is "
                                                 f"{_shown(ds, first, x)}")
                        for i, x in zip(rows, a)]
        else:
            f = ds.field(column)
            text = _errors(ds.tx_code).get((column, check), "breaks rule " + check)
            texts = [f"{text}: {'; '.join(checks.idcard_problems(str(v)))}" for v in values] \
                if check == "idcard" else [text] * len(values)
            out += [Finding(i, column, check, f"{column} ({f.zh}) {_shown(ds, column, v)} {t}")
                    for i, v, t in zip(rows, values, texts)]
    return out


@cache
def _errors(tx_code: str) -> dict[tuple[str, str], str]:
    return {(f.name, rule): text for f in standard.dataset(tx_code).fields
            for rule, _, _, text in _field_rules(f)}


def warnings(frame: pd.DataFrame, ds: Dataset, today: date) -> list[Finding]:
    """Loaded anyway, but counted and listed: things a unit should look at."""
    out: list[Finding] = []
    iso = today.isoformat()
    if ds.tx_code == "03":
        expired = frame["endDate"].notna() & (frame["endDate"].fillna("9999") < iso)
        out += [Finding(i, "endDate", "expired", f"certificate expired on {_shown(ds, 'endDate', frame.at[i, 'endDate'])}",
                        WARNING) for i in frame.index[expired]]
    if ds.tx_code == "01":
        out += _division_warnings(frame)
    if ds.tx_code == "09":
        overdue = frame["dealInfo"].eq("未整改").fillna(False) & frame["limitDate"].notna() \
            & (frame["limitDate"].fillna("9999") < iso)
        out += [Finding(i, "limitDate", "overdue",
                        f"not rectified and past its deadline {_shown(ds, 'limitDate', frame.at[i, 'limitDate'])}",
                        WARNING)
                for i in frame.index[overdue]]
    return out


JIANGSU = "32"


def _division_warnings(frame: pd.DataFrame) -> list[Finding]:
    """Plausible but odd places: a district outside its city, a unit outside Jiangsu (the
    standard is Jiangsu's; a unit registered elsewhere may still run equipment here)."""
    city, area = frame["cityCode"], frame["aeraCode"]
    both = city.notna() & area.notna()
    apart = both & (city.fillna("").str[:4] != area.fillna("").str[:4])
    out = [Finding(i, "aeraCode", "division_within",
                   f"aeraCode {frame.at[i, 'aeraCode']} is not a district of cityCode {frame.at[i, 'cityCode']}",
                   WARNING) for i in frame.index[apart]]
    outside = city.notna() & (city.fillna("").str[:2] != JIANGSU)
    out += [Finding(i, "cityCode", "outside_jiangsu",
                    f"cityCode {frame.at[i, 'cityCode']} is outside Jiangsu (32): loaded, check it", WARNING)
            for i in frame.index[outside]]
    return out


# --- lowering rules for a unit (a mapping's `checks:`) -----------------------------------------

#: Rules a mapping's `checks:` may lower to a warning or switch off, for a unit with known
#: legacy data: our format checks, conditional requirements and warnings. Never lowered: what
#: the standard itself fixes or the target needs (length, date, enum, required, reference).
LOWERABLE = ("idcard", "phone", "regno", "division", "date_order", "required_when",
             "expired", "overdue", "division_within", "outside_jiangsu")
LEVELS = ("warning", "off")
LOWERED = " (an error lowered to a warning by the mapping's checks:)"
_WARNING_RULES = {("03", "endDate"): "expired", ("09", "limitDate"): "overdue",
                  ("01", "aeraCode"): "division_within", ("01", "cityCode"): "outside_jiangsu"}


def lowerable_rules(ds: Dataset, field: str) -> tuple[str, ...]:
    """The rules that can report on `field` of `ds` and that a mapping may lower."""
    if field not in ds.field_names:
        return ()
    rules = {rule for rule, *_ in _field_rules(ds.field(field))}
    if any(o.after == field for o in ds.date_orders):
        rules.add("date_order")
    if any(field in r.fields for r in ds.required_when):
        rules.add("required_when")
    if (ds.tx_code, field) in _WARNING_RULES:
        rules.add(_WARNING_RULES[(ds.tx_code, field)])
    return tuple(r for r in LOWERABLE if r in rules)


Overrides = dict[tuple[str, str], str]  # (field, rule) -> "warning" | "off"


def lower(found: list[Finding], overrides: Overrides) -> list[Finding]:
    """Findings as a unit's `checks:` wants them: a lowered error becomes a warning whose
    message ends with `LOWERED`, a switched-off one severity `OFF` (not stored); either counts
    its row as `overridden` when it loads. A switched-off warning is dropped."""
    out: list[Finding] = []
    for f in found:
        level = overrides.get((f.field, f.rule))
        if level is None or (level == "warning" and f.severity != ERROR):
            out.append(f)
        elif f.severity == ERROR:
            severity, note = (WARNING, LOWERED) if level == "warning" else (OFF, "")
            out.append(Finding(f.row, f.field, f.rule, f.message + note, severity))
    return out
