"""The demo units' source databases and their mapping files."""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from datetime import date
from pathlib import Path

import pytest
import yaml
from stdnum.cn import ric, uscc
from helpers import valid_by_gb11643

from etl import standard
from etl.onboarding.demo_data import (COM_A, COM_B, ORG_A, ORG_B, PLANTED, SOURCE_KEYS, UNIT_A,
                                      UNIT_B, make_demo_sources)

MAPPINGS = Path(__file__).resolve().parent.parent / "mappings"
UNITS = (UNIT_A, UNIT_B)

# rows per category (source rows of the dataset, duplicates included), as the brief states
RANGES = {"01": (1, 1), "02": (4, 8), "03": (20, 40), "04": (3, 6), "05": (3, 6),
          "06": (15, 30), "07": (30, 60), "08": (2, 4), "09": (40, 80)}
# the exact numbers this generator gives: (source rows, distinct keys)
EXPECTED = {
    UNIT_A: {"01": (1, 1), "02": (7, 7), "03": (27, 26), "04": (5, 5), "05": (5, 5),
             "06": (23, 22), "07": (46, 45), "08": (3, 3), "09": (52, 50)},
    UNIT_B: {"01": (1, 1), "02": (7, 7), "03": (31, 30), "04": (4, 4), "05": (5, 5),
             "06": (21, 20), "07": (42, 41), "08": (4, 4), "09": (47, 46)},
}


# ----------------------------------------------------------------------------- helpers

def norm(value) -> str:
    """Half-width, trimmed text of a source value ('' for NULL)."""
    if value is None:
        return ""
    return unicodedata.normalize("NFKC", str(value)).strip()


def parse_date(value) -> date | None:
    """The common spellings the sources use; None for blanks, ValueError for impossible dates."""
    s = norm(value)
    if not s:
        return None
    for pat in (r"(\d{4})-(\d{1,2})-(\d{1,2})", r"(\d{4})/(\d{1,2})/(\d{1,2})",
                r"(\d{4})年(\d{1,2})月(\d{1,2})日", r"(\d{4})(\d{2})(\d{2})"):
        m = re.match(pat + r"(?:[ T]\d{2}:\d{2}(?::\d{2})?)?$", s)
        if m:
            return date(*map(int, m.groups()))
    raise AssertionError(f"unexpected date spelling {s!r}")


def load_mapping(stem: str) -> dict:
    with open(MAPPINGS / f"{stem}.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def source_sql(ds: dict) -> str:
    return f'SELECT * FROM "{ds["table"]}"' if "table" in ds else f"SELECT * FROM ({ds['query']})"


def fetch(con: sqlite3.Connection, ds: dict) -> list[dict]:
    cur = con.execute(source_sql(ds))
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def column_of(rule) -> str | None:
    if isinstance(rule, str):
        return rule
    return rule.get("column")


def field_values(con: sqlite3.Connection, mapping: dict, tx: str) -> list[dict]:
    """Rows of a dataset as {standard field: raw source value} (constants and defaults ignored)."""
    ds = mapping["datasets"][tx]
    out = []
    for row in fetch(con, ds):
        rec = {f: row[column_of(r)] for f, r in ds["fields"].items() if column_of(r)}
        rec["__key__"] = tuple(row[k] for k in ds["key"])
        rec["__row__"] = row
        out.append(rec)
    return out


def by_key(rows: list[dict]) -> dict[tuple, dict]:
    """One row per key: the generator stores a key's newer version first."""
    out: dict[tuple, dict] = {}
    for r in rows:
        out.setdefault(r["__key__"], r)
    return out


def dump(path: Path) -> list:
    con = sqlite3.connect(path)
    try:
        out = []
        for name, sql in con.execute("SELECT name, sql FROM sqlite_master ORDER BY name"):
            out.append((name, sql, con.execute(f'SELECT * FROM "{name}" ORDER BY rowid').fetchall()))
        return out
    finally:
        con.close()


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    return make_demo_sources(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def cons(sources):
    opened = {stem: sqlite3.connect(path) for stem, path in sources.items()}
    yield opened
    for con in opened.values():
        con.close()


@pytest.fixture(scope="module")
def mappings() -> dict[str, dict]:
    return {stem: load_mapping(stem) for stem in UNITS}


# ------------------------------------------------------------------------- (1) determinism

def test_two_runs_identical(tmp_path, sources):
    again = make_demo_sources(tmp_path / "a")
    assert set(again) == set(UNITS) == set(sources)
    for stem in UNITS:
        assert again[stem].name == f"{stem}.sqlite"
        assert dump(again[stem]) == dump(sources[stem])


def test_overwrites_in_place(tmp_path):
    first = make_demo_sources(tmp_path)
    before = {stem: dump(p) for stem, p in first.items()}
    con = sqlite3.connect(first[UNIT_A])
    con.execute("DELETE FROM t_hazard")
    con.commit()
    con.close()
    second = make_demo_sources(tmp_path)
    assert second == first
    assert {stem: dump(p) for stem, p in second.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(f"{s}.sqlite" for s in UNITS),
                                                                 "demo_files"])  # unit A's attachments


# ------------------------------------------------------------------------- (2) row counts

@pytest.mark.parametrize("stem", UNITS)
def test_all_nine_categories_in_range(stem, cons, mappings):
    mapping, con = mappings[stem], cons[stem]
    assert sorted(mapping["datasets"]) == list(standard.TX_CODES)
    for tx, (lo, hi) in RANGES.items():
        rows = field_values(con, mapping, tx)
        keys = {r["__key__"] for r in rows}
        assert lo <= len(rows) <= hi, (stem, tx, len(rows))
        assert lo <= len(keys) <= hi, (stem, tx, len(keys))
        assert (len(rows), len(keys)) == EXPECTED[stem][tx], (stem, tx)


# ------------------------------------------------------------------------- (3) mappings

def _columns(con: sqlite3.Connection, ds: dict) -> set[str]:
    if "table" in ds:
        cols = {r[1] for r in con.execute(f'PRAGMA table_info("{ds["table"]}")')}
        assert cols, f"no table {ds['table']}"
        return cols
    cur = con.execute(f"SELECT * FROM ({ds['query']}) LIMIT 0")
    return {d[0] for d in cur.description}


@pytest.mark.parametrize("stem", UNITS)
def test_mapping_matches_source_and_standard(stem, sources, cons, mappings):
    mapping, con = mappings[stem], cons[stem]
    assert set(mapping) == {"unit", "source", "datasets"}
    unit = mapping["unit"]
    assert uscc.is_valid(unit["orgNo"]) and unit["orgNo"] == {UNIT_A: ORG_A, UNIT_B: ORG_B}[stem]
    assert unit["comName"] == {UNIT_A: COM_A, UNIT_B: COM_B}[stem]
    assert mapping["source"] == {"url": f"sqlite:///var/{stem}.sqlite"}
    assert Path(mapping["source"]["url"].removeprefix("sqlite:///")).name == sources[stem].name

    for ds_std in standard.DATASETS:
        ds = mapping["datasets"][ds_std.tx_code]
        where = f"{stem} {ds_std.tx_code}"
        assert ("table" in ds) != ("query" in ds), where
        cols = _columns(con, ds)
        assert ds["key"] and set(ds["key"]) <= cols, where
        if "updated_at" in ds:
            assert ds["updated_at"] in cols, where
        if "deleted" in ds:
            assert ds["deleted"]["column"] in cols and "value" in ds["deleted"], where
        if ds_std.frequency == "daily":
            assert "updated_at" in ds, where
            assert ("deleted" in ds) == (stem == UNIT_A), where
        # every standard field, and nothing else
        assert set(ds["fields"]) == set(ds_std.field_names), where
        rows = fetch(con, ds)
        for name, rule in ds["fields"].items():
            if isinstance(rule, str):
                assert rule in cols, (where, name, rule)
                continue
            assert isinstance(rule, dict) and rule, (where, name)
            assert set(rule) <= {"column", "values", "default", "value", "file"}, (where, name)
            if "file" in rule:  # an attachment: a blob column of the source, or a demo folder
                assert ds_std.field(name).type == "M", (where, name)
                f = rule["file"]
                assert f.get("blob") in cols if "blob" in f else f["base"] == f"var/demo_files/{stem}"
            if "value" in rule:
                assert set(rule) == {"value"}, (where, name)
                continue
            assert "column" in rule and rule["column"] in cols, (where, name, rule)
            for ref in re.findall(r"\{([^}]+)\}", str(rule.get("default", ""))):
                assert ref in ("unit.comName", "unit.orgNo") or ref in cols, (where, name, ref)
            if "values" in rule:
                # a local code map covers every code the source uses
                keys = {str(k) for k in rule["values"]}
                used = {norm(r[rule["column"]]) for r in rows} - {""}
                assert used <= keys, (where, name, used - keys)
                f = ds_std.field(name)
                if f.enum:
                    assert {str(v) for v in rule["values"].values()} <= set(f.enum), (where, name)


@pytest.mark.parametrize("stem", UNITS)
def test_incremental_columns_are_timestamps(stem, cons, mappings):
    for tx, ds in mappings[stem]["datasets"].items():
        if "updated_at" in ds:
            for row in fetch(cons[stem], ds):
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", row[ds["updated_at"]]), (stem, tx)


# ------------------------------------------------------------------------- (4) the dirt

def _planted(stem: str, what: str) -> dict:
    return {k: v for k, v in PLANTED[stem][what].items() if "." in k}


def _one(stem: str, what: str) -> list:
    ((_, keys),) = _planted(stem, what).items()
    return keys


COLUMN_DIRT = {
    "invalid_id_numbers": lambda v: not valid_by_gb11643(norm(v)),
    "fullwidth": lambda v: isinstance(v, str) and unicodedata.normalize("NFKC", v) != v,
    "untrimmed": lambda v: isinstance(v, str) and v.strip() != "" and v != v.strip(),
    "blank": lambda v: v is not None and str(v).strip() == "",
    "accident_type_separator": lambda v: bool(re.search(r"[,/]", norm(v))),
    "duty_man_separator": lambda v: "、" in norm(v) or "," in norm(v),
    "dirty_phone": lambda v: isinstance(v, str) and (" " in v.strip() or v.startswith("+86")),
}


@pytest.mark.parametrize("what", sorted(COLUMN_DIRT))
@pytest.mark.parametrize("stem", UNITS)
def test_planted_column_dirt_is_exactly_where_listed(stem, what, cons):
    """Each PLANTED list names exactly the keys whose column has the property."""
    planted = _planted(stem, what)
    assert planted, (stem, what)
    for target, keys in planted.items():
        table, column = target.split(".")
        key = SOURCE_KEYS[stem][table]
        rows = cons[stem].execute(f'SELECT "{key}", "{column}" FROM "{table}"').fetchall()
        hits = sorted({k for k, v in rows if COLUMN_DIRT[what](v)}, key=str)
        assert hits == sorted(keys, key=str), (stem, target)


NEW_DIRT = {  # issue 12: values the standard accepts that once were refused
    "post_birth_area_code": lambda v: valid_by_gb11643(norm(v)) and not ric.is_valid(norm(v)),
    "phone_extension": lambda v: bool(re.search(r"\d{7,8}\s*(-|转|分机|ext)\s*\d{1,6}$", str(v or ""))),
    "local_phone": lambda v: bool(re.fullmatch(r"[2-9]\d{6,7}", str(v or "").strip())),
}


@pytest.mark.parametrize("what", sorted(NEW_DIRT))
@pytest.mark.parametrize("stem", UNITS)
def test_new_dirt_is_exactly_where_listed(stem, what, cons):
    planted = _planted(stem, what)
    for target, keys in planted.items():
        table, column = target.split(".")
        key = SOURCE_KEYS[stem][table]
        rows = cons[stem].execute(f'SELECT "{key}", "{column}" FROM "{table}"').fetchall()
        assert sorted({k for k, v in rows if NEW_DIRT[what](v)}, key=str) == sorted(keys, key=str)
    assert planted or stem == UNITS[0]  # the Suzhou unit carries them


@pytest.mark.parametrize("stem", UNITS)
def test_exactly_two_invalid_id_numbers(stem, cons, mappings):
    persons = by_key(field_values(cons[stem], mappings[stem], "03"))
    invalid = sorted(k[0] for k, r in persons.items() if not valid_by_gb11643(norm(r["idCardNo"])))
    assert len(invalid) == 2
    assert invalid == _one(stem, "invalid_id_numbers")


@pytest.mark.parametrize("stem", UNITS)
def test_exact_duplicate_rows(stem, cons):
    con = cons[stem]
    found = {}
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        cols = ", ".join(f'"{r[1]}"' for r in con.execute(f'PRAGMA table_info("{table}")'))
        key = SOURCE_KEYS[stem][table]
        dups = con.execute(
            f'SELECT "{key}" FROM "{table}" GROUP BY {cols} HAVING COUNT(*) > 1').fetchall()
        if dups:
            found[table] = sorted(row[0] for row in dups)
    assert found == PLANTED[stem]["exact_duplicate"]
    assert 2 <= sum(map(len, found.values())) <= 4


@pytest.mark.parametrize("stem", UNITS)
def test_a_key_with_a_newer_version(stem, cons, mappings):
    mapping, con = mappings[stem], cons[stem]
    ((table, info),) = PLANTED[stem]["newer_version"].items()
    ds = next(ds for ds in mapping["datasets"].values() if ds.get("table") == table)
    groups: dict[tuple, list[dict]] = {}
    for row in fetch(con, ds):
        groups.setdefault(tuple(row[k] for k in ds["key"]), []).append(row)
    differing = {k: v for k, v in groups.items() if len({tuple(r.values()) for r in v}) > 1}
    assert list(differing) == [(info["key"],)]
    stamps = [r[ds["updated_at"]] for r in differing[(info["key"],)]]
    assert stamps == [info["newer"], info["older"]]          # the newer one is stored first
    # and no other table of the unit repeats a key with different values
    for (other,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        if other == table:
            continue
        key = SOURCE_KEYS[stem][other]
        keys = con.execute(f'SELECT COUNT(DISTINCT "{key}") FROM "{other}"').fetchone()[0]
        rows = con.execute(f'SELECT COUNT(*) FROM (SELECT DISTINCT * FROM "{other}")').fetchone()[0]
        assert keys == rows, (stem, other)


@pytest.mark.parametrize("stem", UNITS)
def test_soft_deletes(stem, cons):
    con = cons[stem]
    found = {}
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        cols = {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}
        if "del_flag" in cols:
            key = SOURCE_KEYS[stem][table]
            found[table] = [r[0] for r in con.execute(
                f'SELECT DISTINCT "{key}" FROM "{table}" WHERE del_flag = 1 ORDER BY 1')]
        assert not ({"deleted", "is_deleted", "sfsc", "scbz"} & cols), (stem, table)
    if stem == UNIT_A:   # the daily tables carry del_flag; unit B deletes rows for real
        assert set(found) == {"t_risk_point", "t_hazard", "t_hidden_danger"}
    assert found == PLANTED[stem]["soft_deleted"]


@pytest.mark.parametrize("stem", UNITS)
def test_one_orphan_hazard_source(stem, cons, mappings):
    con, mapping = cons[stem], mappings[stem]
    risk_nos = {norm(r["riskNo"]) for r in field_values(con, mapping, "06")}
    hazards = by_key(field_values(con, mapping, "07"))
    orphans = [(k[0], norm(r["riskNo"])) for k, r in hazards.items() if norm(r["riskNo"]) not in risk_nos]
    assert orphans == [(_one(stem, "orphan_hazard")[0], PLANTED[stem]["orphan_hazard"]["riskNo"])]


@pytest.mark.parametrize("stem", UNITS)
def test_hidden_danger_date_dirt(stem, cons, mappings):
    rows = by_key(field_values(cons[stem], mappings[stem], "09"))
    impossible, backwards = [], []
    for key, r in rows.items():
        try:
            dates = {f: parse_date(r[f]) for f in ("checkDate", "limitDate", "dealDate", "acceptDate")}
        except ValueError:
            impossible.append(key[0])
            continue
        if dates["dealDate"] and dates["checkDate"] and dates["dealDate"] < dates["checkDate"]:
            backwards.append(key[0])
        if dates["limitDate"]:
            assert dates["limitDate"] >= dates["checkDate"], key
        if dates["acceptDate"]:
            assert dates["acceptDate"] >= dates["dealDate"], key
        # open ones carry no rectification data, rectified ones do
        if norm(r["dealInfo"]) in ("0", "未整改"):
            assert not dates["dealDate"] and not norm(r["dealMan"]) and not dates["acceptDate"], key
        else:
            assert dates["dealDate"] and norm(r["dealMan"]), key
    assert impossible == _one(stem, "impossible_date")
    assert backwards == _one(stem, "deal_before_check")
    assert PLANTED[stem]["impossible_date"]["value"] in {
        norm(v)[:10] for r in rows.values() for v in r.values() if isinstance(v, str)}
    statuses = {norm(r["dealInfo"]) for r in rows.values()}
    assert len(statuses) == 2                               # both rectified and open ones


@pytest.mark.parametrize("stem", UNITS)
def test_codes_and_enumerations(stem, cons, mappings):
    con, mapping = cons[stem], mappings[stem]
    rp = field_values(con, mapping, "06")
    hz = field_values(con, mapping, "07")
    hd = field_values(con, mapping, "09")
    # every equipment code is 20 characters once half-width; riskType 0 has one, 1 has none
    codes = [r["regNo"] for r in rp + hd if norm(r["regNo"])]
    assert codes and all(len(norm(c)) == 20 and norm(c).isdigit() for c in codes)
    kinds = mapping["datasets"]["06"]["fields"]["riskType"]["values"]
    assert {kinds[norm(r["riskType"])] for r in rp} == {0, 1}
    for r in rp:
        assert bool(norm(r["regNo"])) == (kinds[norm(r["riskType"])] == 0), r["__key__"]
    # accident types and control levels are standard once split / made full-width
    for r in rp + hz:
        for part in re.split(r"[、,/，]", norm(r["accidentType"]).replace("(", "（").replace(")", "）")):
            assert part in standard.ACCIDENT_TYPES, (stem, part)
        ctrl = norm(r["controlLevel"]).replace("(", "（").replace(")", "）")
        assert ctrl in standard.CONTROL_LEVELS, (stem, ctrl)
    # a top department with a blank parent, exactly one
    depts = field_values(con, mapping, "02")
    assert sum(1 for r in depts if not norm(r["dParentName"])) == 1
    # every person's department exists (after trimming)
    names = {norm(r["deptName"]) for r in depts}
    assert {norm(r["deptName"]) for r in field_values(con, mapping, "03")} <= names
    # the unit's code is valid
    assert uscc.is_valid(field_values(con, mapping, "01")[0]["orgNo"])


def test_city_as_names_in_one_unit_codes_in_the_other(cons, mappings):
    a = field_values(cons[UNIT_A], mappings[UNIT_A], "01")[0]
    b = field_values(cons[UNIT_B], mappings[UNIT_B], "01")[0]
    assert (a["cityCode"], a["aeraCode"]) == ("江苏省南京市", "江宁区")
    assert (b["cityCode"], b["aeraCode"]) == ("320500", "320506")
    assert a["orgNo"] == ORG_A and b["orgNo"] == ORG_B


@pytest.mark.parametrize("stem", UNITS)
def test_dates_are_fixed(stem, cons, mappings):
    """Business dates and change stamps lie in fixed years, not around today."""
    for ds_std in standard.DATASETS:
        ds = mappings[stem]["datasets"][ds_std.tx_code]
        dated = [f.name for f in ds_std.fields if f.is_date]
        for r in field_values(cons[stem], mappings[stem], ds_std.tx_code):
            for name in dated:
                try:
                    d = parse_date(r[name])
                except ValueError:
                    continue                                  # the planted impossible date
                assert d is None or 2022 <= d.year <= 2028, (stem, name, d)   # certificates: 4 years
            if "updated_at" in ds:
                assert 2023 <= int(r["__row__"][ds["updated_at"]][:4]) <= 2025
