"""Personal data and binary values: source keys and messages masked and bounded wherever a
person reads them, protected fields (ID numbers, phones, names, certificate numbers) masked by
their definition with or without a data key, private files and folders, BLOBs in text fields
rejected row by row.

Real SQLite, PostgreSQL and MariaDB; `etl run` as a subprocess where its output matters.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl import target
from helpers import ORG_A, hidden_danger_mapping_text, hidden_danger_row, rows_of, write_source

# --- GB 11643 resident ID numbers, built here from the standard (not from our own code) --------

_WEIGHTS = [2 ** (17 - i) % 11 for i in range(17)]  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2


def gb11643(base17: str) -> str:
    """A valid ID number: 17 digits plus the check character of GB 11643-1999."""
    return base17 + "10X98765432"[sum(int(d) * w for d, w in zip(base17, _WEIGHTS)) % 11]


ID_EXPIRED = gb11643("32010219850307123")    # loaded, its certificate expired: a warning
ID_TOO_LONG = gb11643("32010519900815234")   # rejected: the name is too long
ID_SPACED = gb11643("32011319921201345")     # loaded, written with spaces in the source
BAD_CHECK = ID_EXPIRED[:6] + "19770101" + "0000"  # 18 digits, wrong check digit: rejected
MOBILES = ("13812345678", "13987654321", "15011112222", "18633334444")

PERSON_COLUMNS = ("id_no", "mobile", "name", "chief", "manager", "opr", "res", "lcns", "cert",
                  "auth_date", "end_date")

PERSON_MAPPING = """\
unit: {{orgNo: "{org}", comName: 南京某某化工有限公司}}
source: {{url_env: PERSON_SOURCE_URL}}
datasets:
  "03":
    table: t_person
    key: [id_no, mobile]
    fields:
      psnName: name
      idCardNo: id_no
      isSecChief: chief
      isSecManager: manager
      isOpr: opr
      isRes: res
      lcnsKind: lcns
      certNo: cert
      authDate: auth_date
      endDate: end_date
"""


def _person(id_no: str, mobile: str, name: str = "张三", end: str = "2099-12-31") -> dict:
    return {"id_no": id_no, "mobile": mobile, "name": name, "chief": "否", "manager": "是",
            "opr": "是", "res": "否", "lcns": "电梯作业", "cert": "T-001", "auth_date": "2019-01-01",
            "end_date": end}


def _write_persons(url: str, rows: list[dict]) -> None:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    t = sa.Table("t_person", meta, *[sa.Column(c, sa.Text) for c in PERSON_COLUMNS])
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(t.insert(), rows)
    engine.dispose()


def _etl(args: list[str], env: dict[str, str], umask: int = 0o022) -> subprocess.CompletedProcess:
    """`python -m etl -v ARGS` with the caller's usual umask (world-readable by default)."""
    return subprocess.run([sys.executable, "-m", "etl", "-v", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=lambda: os.umask(umask))


def _texts(url: str, tables: set[str] | None = None) -> dict[tuple[str, str], list[str]]:
    """Every text value of every table (or of `tables`), by (table, column): what a person with
    read access to the target could read."""
    engine = target.connect(url)
    out: dict[tuple[str, str], list[str]] = {}
    insp = sa.inspect(engine)
    with engine.connect() as conn:
        for name in insp.get_table_names():
            if tables is not None and name not in tables:
                continue
            t = sa.Table(name, sa.MetaData(), autoload_with=conn)
            for col in t.columns:
                values = conn.execute(sa.select(col)).scalars().all()
                out[(name, col.name)] = [v if isinstance(v, str) else
                                         v.decode("utf-8", "replace") if isinstance(v, bytes)
                                         else str(v) for v in values if v is not None]
    engine.dispose()
    return out


def _found(texts: dict[tuple[str, str], list[str]], secrets: list[str]) -> list[str]:
    hits = []
    for (table, column), values in texts.items():
        for v in values:
            compact = re.sub(r"[\s-]", "", v)
            hits += [f"{table}.{column}: {s}" for s in secrets if s in v or s in compact]
    return hits


@pytest.fixture(params=["sqlite", "postgresql"])
def target_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'target.sqlite'}"
    return request.getfixturevalue("pg_url")


def test_id_numbers_and_phones_in_source_keys_are_masked_everywhere(target_url, tmp_path):
    """Persons keyed by (ID number, mobile): rejects, warnings, duplicates, audit examples and
    the run record hold no full ID number or mobile, nor does anything `etl run` prints; a
    rejected person's ID number is nowhere in the target at all."""
    source = f"sqlite:///{tmp_path / 'hr.sqlite'}"
    rows = [_person(ID_EXPIRED, MOBILES[0], end="2020-01-01"),
            _person(ID_TOO_LONG, MOBILES[1], name="欧阳" + "明" * 60),
            _person(" ".join((ID_SPACED[:6], ID_SPACED[6:14], ID_SPACED[14:])), MOBILES[2]),
            _person(BAD_CHECK, MOBILES[3])]
    rows.append(dict(rows[0]))  # an exact duplicate: dropped, listed with its key
    _write_persons(source, rows)
    mapping = tmp_path / "person.yaml"
    mapping.write_text(PERSON_MAPPING.format(org=ORG_A), encoding="utf-8")

    done = _etl(["run", str(mapping), "--target", target_url], {"PERSON_SOURCE_URL": source})

    assert done.returncode == 0, done.stderr
    rejects = rows_of(target_url, "ingest_reject")
    assert {(r["rule"], r["severity"]) for r in rejects} >= {
        ("length", "error"), ("idcard", "error"), ("expired", "warning"), ("duplicate", "duplicate")}
    # the unit can still find the row: region and last four of the ID, the mobile's ends
    keys = {r["sourceKey"] for r in rejects}
    assert f"{ID_TOO_LONG[:6]}********{ID_TOO_LONG[-4:]}|139****4321" in keys
    assert any(k.startswith(ID_EXPIRED[:6]) and k.endswith("138****5678") for k in keys)
    assert any("idCardNo" == r["field"] and r["rule"] == "separators"
               for r in rows_of(target_url, "ingest_audit"))
    everything = [ID_EXPIRED, ID_TOO_LONG, ID_SPACED, BAD_CHECK, *MOBILES]
    bookkeeping = {"ingest_reject", "ingest_audit", "ingest_run", "ingest_batch", "ingest_stage"}
    assert _found(_texts(target_url, bookkeeping), everything) == []
    assert _found(_texts(target_url), [ID_TOO_LONG, BAD_CHECK, MOBILES[1], MOBILES[3]]) == []
    assert _found({("etl", "stdout"): [done.stdout], ("etl", "stderr"): [done.stderr]},
                  everything) == []
    assert "明明" not in json.dumps(rejects, default=str, ensure_ascii=False)  # names masked


def test_source_key_parts_are_masked_by_the_field_they_fill():
    from etl.mapping import FieldRule
    from etl.pipeline import masked_source_key
    from etl.standard import dataset

    fields = {"psnName": FieldRule(column="name"), "idCardNo": FieldRule(column="id_no")}
    mask = masked_source_key(dataset("03"), ["name", "id_no", "emp_no"], fields)
    assert mask(f"欧阳娜娜|{ID_SPACED}|E001") == f"欧阳**|{ID_SPACED[:6]}********{ID_SPACED[-4:]}|E001"
    # a key column filling no personal field is masked where its value looks personal
    assert mask(f"张三|x|{MOBILES[0]}") == "张*|*|138****5678"
    # a key holding the separator itself cannot be split reliably: masked as a whole
    assert ID_TOO_LONG not in mask(f"a|b|c|{ID_TOO_LONG}")
    # a certificate number is protected though it is neither an ID number, a phone nor a name
    by_cert = masked_source_key(dataset("03"), ["cert", "emp_no"], {"certNo": FieldRule(column="cert")})
    assert by_cert("320102850307123|E001") == "32***********23|E001"


# --- bounded messages --------------------------------------------------------------------------


def test_a_ten_megabyte_value_gives_a_short_masked_message(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    huge = "漏" * (10 * 1024 * 1024 // 3)
    write_source(source, "t_hidden_danger", [
        hidden_danger_row(1, problem=huge),
        hidden_danger_row(2, checker="欧阳" + "小明" * 30),
        hidden_danger_row(3)])
    engine = sa.create_engine(source)
    with engine.begin() as conn:  # widen the column: SQLite keeps what it is given
        conn.execute(sa.text("UPDATE t_hidden_danger SET problem = :p WHERE id = 1"), {"p": huge})
    engine.dispose()
    mapping = tmp_path / "unit.yaml"
    mapping.write_text(hidden_danger_mapping_text(), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"

    done = _etl(["run", str(mapping), "--target", url], {"UNIT_A_SOURCE_URL": source})

    assert done.returncode == 0, done.stderr
    rejects = {r["field"]: r for r in rows_of(url, "ingest_reject")}
    assert rejects["mainProblem"]["rule"] == "length"
    assert len(rejects["mainProblem"]["message"]) <= 500
    assert f"({len(huge)} chars)" in rejects["mainProblem"]["message"]
    assert rejects["checkMan"]["rule"] == "length" and "小明" not in rejects["checkMan"]["message"]
    assert rejects["checkMan"]["message"].count("欧阳") == 1
    assert len(rows_of(url, "hidden_danger")) == 1
    for row in rows_of(url, "ingest_run") + rows_of(url, "ingest_audit"):
        assert all(len(str(v)) <= 2000 for v in row.values())
    assert len(done.stdout) + len(done.stderr) < 20_000
    assert max(map(len, (done.stdout + done.stderr).splitlines())) <= 2000


def test_caps_keep_text_short_and_masked():
    from etl.common.masking import MESSAGE_CHARS, cap, excerpt
    from etl.standard import dataset

    name = dataset("03").field("psnName")
    text = f"row {ID_EXPIRED} " + "x" * 10_000
    capped = cap(text)
    assert len(capped) <= MESSAGE_CHARS and ID_EXPIRED not in capped and capped.startswith("row 320102")
    assert capped.endswith(f"…({len(text)} chars)")
    assert cap("short") == "short"
    assert excerpt("欧阳娜娜" * 50, name).startswith("'欧阳***")
    assert "娜" not in excerpt("欧阳娜娜" * 50, name)
    assert excerpt("a" * 100) == "'" + "a" * 40 + "'…(100 chars)"
    # an ID cut at the edge of the excerpt is masked before it is cut
    assert ID_SPACED[6:14] not in excerpt("b" * 30 + ID_SPACED)


# --- private files and folders -----------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_sqlite_target_and_its_folder_are_private(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(1)])
    mapping = tmp_path / "unit.yaml"
    mapping.write_text(hidden_danger_mapping_text(), encoding="utf-8")
    folder = tmp_path / "var" / "deep"
    done = _etl(["run", str(mapping), "--target", f"sqlite:///{folder / 'target.sqlite'}"],
                {"UNIT_A_SOURCE_URL": source})
    assert done.returncode == 0, done.stderr
    assert _mode(folder / "target.sqlite") == 0o600
    assert _mode(folder) == 0o700 and _mode(tmp_path / "var") == 0o700


def test_an_existing_world_readable_sqlite_target_is_tightened(tmp_path):
    path = tmp_path / "target.sqlite"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    engine = target.connect(f"sqlite:///{path}")
    target.upgrade(engine)
    engine.dispose()
    assert _mode(path) == 0o600


def test_staged_objects_are_private_whatever_the_umask(tmp_path):
    from etl.orchestration.staging import PathStore

    old = os.umask(0o022)  # as an Airflow worker running other code might have it
    try:
        store = PathStore(tmp_path / "staging")
        store.put("dag/run/unit/raw-00000.parquet", b"rows")
        store.put_json("dag/run/plan.json", {"a": 1})
    finally:
        os.umask(old)
    root = tmp_path / "staging"
    made = [root, *root.rglob("*")]
    assert {p.name for p in made} >= {"staging", "dag", "run", "unit", "raw-00000.parquet", "plan.json"}
    assert {str(p.relative_to(tmp_path)): _mode(p) for p in made} == {
        str(p.relative_to(tmp_path)): 0o700 if p.is_dir() else 0o600 for p in made}


def test_cached_mappings_are_private_whatever_the_umask(tmp_path):
    from etl.mapping import load_mapping_cached

    path = tmp_path / "unit.yaml"
    path.write_text(hidden_danger_mapping_text(), encoding="utf-8")
    cache = tmp_path / "cache" / "mappings"
    old = os.umask(0o022)
    try:
        load_mapping_cached(path, cache)
    finally:
        os.umask(old)
    entries = list(cache.iterdir())
    assert len(entries) == 1 and _mode(entries[0]) == 0o600
    assert _mode(cache) == 0o700 and _mode(cache.parent) == 0o700


def test_airflow_tasks_create_private_files(tmp_path, monkeypatch):
    """The task bodies (plan, extract, transform, load) under a worker's loose umask: every
    file and folder they make (target, cache, staging) is private."""
    from etl.orchestration import tasks as orchestrate

    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(1), hidden_danger_row(2)])
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "南京化工.yaml").write_text(hidden_danger_mapping_text(), encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("UNIT_A_SOURCE_URL", source)
    monkeypatch.setenv("ETL_HOME", str(home))
    monkeypatch.setenv("ETL_STAGING_DIR", str(home / "var" / "staging"))
    monkeypatch.setenv("ETL_CACHE_DIR", str(home / "var" / "cache"))
    monkeypatch.delenv("ETL_TARGET_URL", raising=False)
    monkeypatch.delenv("ETL_STAGING_URL", raising=False)
    old = os.umask(0o022)
    try:
        refs = orchestrate.plan("daily", None, mappings=folder, dag_id="dual_prevention_daily",
                                run_id="manual__2025-03-01T16:00:00+00:00", slots=1,
                                params={"tx_codes": ["09"], "mode": "full"})
        os.umask(0o022)
        staged = orchestrate.transform(orchestrate.extract(refs[0]))
        os.umask(0o022)
        # look at what is staged before load removes it
        made = [p for p in (home / "var").rglob("*")]
        orchestrate.load(staged)
    finally:
        os.umask(old)
    assert len(rows_of(f"sqlite:///{home / 'var' / 'target.sqlite'}", "hidden_danger")) == 2
    assert any(p.name.endswith(".parquet") for p in made)
    made += [home / "var", *(home / "var").rglob("*")]
    loose = {str(p.relative_to(home)): oct(_mode(p)) for p in made if p.exists()
             and _mode(p) != (0o700 if p.is_dir() else 0o600)}
    assert loose == {}


# --- binary values -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "mariadb", "postgresql"])
def test_a_binary_value_in_a_text_field_rejects_only_its_row(kind, request, tmp_path, monkeypatch):
    from etl import pipeline
    from helpers import HIDDEN_DANGER_COLUMNS, hidden_danger_mapping

    source = {"sqlite": lambda: f"sqlite:///{tmp_path / 'source.sqlite'}",
              "mariadb": lambda: request.getfixturevalue("mariadb_url"),
              "postgresql": lambda: request.getfixturevalue("pg_url")}[kind]()
    engine = sa.create_engine(source)
    meta = sa.MetaData()
    t = sa.Table("t_hidden_danger", meta, *[
        sa.Column(c, sa.Integer if c in ("id", "del_flag") else
                  sa.LargeBinary if c == "problem" else sa.String(200)) for c in HIDDEN_DANGER_COLUMNS])
    rows = [hidden_danger_row(i) for i in range(1, 5)]
    rows[0]["problem"] = b"\x00\xff"                            # binary: rejected
    rows[1]["problem"] = "安全阀校验过期".encode()                 # UTF-8 text in a BLOB: loaded
    rows[2]["problem"] = "安全技术档案不全".encode("gb18030")      # GB18030 text: loaded
    rows[3]["problem"] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"  # an image: rejected
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(t.insert(), rows)
    engine.dispose()
    mapping = hidden_danger_mapping(tmp_path, monkeypatch, source)
    url = f"sqlite:///{tmp_path / 'target.sqlite'}"
    tgt = target.connect(url)

    result = pipeline.run_dataset(tgt, mapping, "09")

    assert result.status == "success"
    assert (result.counts.inserted, result.counts.rejected) == (2, 2)
    loaded = sorted(r["mainProblem"] for r in rows_of(url, "hidden_danger"))
    assert loaded == sorted(["安全阀校验过期", "安全技术档案不全"])
    rejects = rows_of(url, "ingest_reject")
    assert sorted((r["sourceKey"], r["field"], r["rule"]) for r in rejects) == [
        ("1", "mainProblem", "binary"), ("4", "mainProblem", "binary")]
    assert all(re.search(r"binary value in field mainProblem \(隐患描述\).*map a text column",
                         r["message"]) for r in rejects)


# --- protected fields: masked by their definition, with or without a data key ------------------
#
# A field's definition says what it holds of a person (`Field.personal`); such a field is
# protected: shown masked on every surface a person reads (rejects, run messages, audit
# examples, report pages and exports, reconciliation, logs), key or no key. certNo is the
# protected field that is neither an ID number, a phone nor a name: before, only values that
# looked like an ID number or a mobile were masked in it.

# Certificate numbers of special-equipment operators: since TSG Z6001-2019 the holder's resident
# ID number (the standard's own example, A.5, is one); older ones carry the first-generation
# 15-digit number of GB 11643-1989 (area code, YYMMDD, 3-digit sequence), which nothing masks by
# its shape.
CERT_ID = gb11643("32011519880216241")
CERT_ID_REISSUED = gb11643("32011519880216243")
CERT_OLD = "320102850307123"              # 320102 玄武区, born 1985-03-07
CERT_OLD_REISSUED = "320102850307135"
CERTS_IN_ONE_CELL = "；".join(f"32010585110{i}21{i}" for i in range(1, 5))  # 63 characters: too long
_FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")
STAFF = [  # emp_no, name, ID number, certNo as the source holds it
    ("E01", "欧阳娜娜", gb11643("32011519900101121"), CERT_ID.translate(_FULL_WIDTH)),  # halfwidth
    ("E02", " 司马相如 ", gb11643("32011519900101122"), f"  {CERT_OLD} "),            # trim
    ("E03", "诸葛孔明", gb11643("32011519900101123"), CERTS_IN_ONE_CELL),              # rejected
    ("E04", "皇甫" + "嵩" * 60, gb11643("32011519900101124"), CERT_ID_REISSUED),       # name too long
]
CLEAR = [CERT_ID, CERT_ID_REISSUED, CERT_OLD, CERT_OLD_REISSUED, CERTS_IN_ONE_CELL,
         *[c.strip() for *_, c in STAFF], *[c.strip() for c in CERTS_IN_ONE_CELL.split("；")],
         *[i for _, _, i, _ in STAFF], "娜娜", "相如", "孔明", "嵩嵩"]

STAFF_MAPPING = """\
unit: {{orgNo: "{org}", comName: 南京某某电梯有限公司}}
source: {{url_env: STAFF_SOURCE_URL}}
datasets:
  "03":
    table: t_staff
    key: [emp_no]
    fields:
      psnName: name
      idCardNo: id_no
      isSecChief: {{value: 0}}
      isSecManager: {{value: 1}}
      isOpr: {{value: 1}}
      isRes: {{value: 0}}
      lcnsKind: {{value: 电梯作业}}
      certNo: cert
"""


def _write_staff(url: str, staff: list[tuple[str, str, str, str]]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS t_staff")
        conn.exec_driver_sql("CREATE TABLE t_staff (emp_no TEXT, name TEXT, id_no TEXT, cert TEXT)")
        conn.execute(sa.text("INSERT INTO t_staff VALUES (:e, :n, :i, :c)"),
                     [dict(zip("enic", row)) for row in staff])
    engine.dispose()


# --- the policy: a field's definition says what it holds ---------------------------------------


def test_every_field_holding_a_persons_data_is_protected_by_its_definition():
    """Names (姓名 and the 人 fields: 联系人, 责任人 ...), ID numbers, phones and the
    certificate number say so in the standard's table; every encrypted field is one of them."""
    from etl.standard import DATASETS, protected_fields

    protected = {(ds.tx_code, f.name): f.personal for ds in DATASETS for f in protected_fields(ds)}
    for ds in DATASETS:
        for f in ds.fields:
            if f.zh == "姓名" or f.zh.endswith("人"):
                assert protected.get((ds.tx_code, f.name)) == "name", f.name
            if f.kind in ("idcard", "phone") or f.encrypted:
                assert (ds.tx_code, f.name) in protected, f.name
    assert protected[("03", "certNo")] == "identifier"
    assert {k for k, v in protected.items() if v != "name"} == {
        ("01", "linkTel"), ("02", "dLinkTel"), ("03", "idCardNo"), ("03", "certNo")}


def test_a_field_cannot_be_encrypted_without_saying_what_it_holds():
    from etl.standard import Field

    with pytest.raises(ValueError, match="encrypted field must say what it holds"):
        Field("x", "证书编号", "C", 50, encrypted=True)
    with pytest.raises(ValueError, match="kind 'phone' must be personal='phone'"):
        Field("x", "电话", "C", 20, kind="phone")


def test_a_kind_given_instead_of_a_field_is_refused():
    from etl.common.masking import excerpt

    with pytest.raises(TypeError, match="give the field"):
        excerpt("320102850307123", "identifier")


@pytest.mark.parametrize(("value", "masked"), [
    ("320102850307123", "32***********23"),             # a first-generation ID number
    ("苏TS-0123", "苏******3"),
    ("T-001", "*****"),                                  # too short to keep anything
    ("3201 0285 0307 123", "32** **** **** *23"),        # spaces stay, every character else goes
])
def test_an_identifier_keeps_at_most_a_third_at_its_ends(value, masked):
    from etl.common.masking import mask

    assert mask(value, "identifier") == masked
    assert sum(a == b for a, b in zip(value, masked) if not a.isspace()) <= len(value.replace(" ", "")) / 3


def test_an_identifier_spelt_as_an_id_number_is_masked_as_one():
    """The standard's own example of a certificate number (A.5) is a resident ID number."""
    from etl.common.masking import mask

    assert mask(ID_SPACED, "identifier") == mask(ID_SPACED, "idcard") == f"{ID_SPACED[:6]}********{ID_SPACED[-4:]}"


@pytest.mark.parametrize(("tx", "name", "value"), [
    ("03", "certNo", "320102850307123"), ("03", "idCardNo", ID_SPACED), ("03", "psnName", "欧阳娜娜"),
    ("01", "linkTel", MOBILES[0]), ("06", "dutyMan", "张三，李四")])
def test_messages_and_audit_examples_show_a_value_alike(tx, name, value):
    """One rule: what cleaning's audit shows of a value is what a message quotes of it."""
    import pandas as pd

    from etl.common.masking import excerpt
    from etl.standard import dataset
    from etl.standard.clean import Audit, clean_column

    audit = Audit()
    clean_column(pd.Series([f"{value} "]), dataset(tx).field(name), audit)
    [(before, after)] = audit.examples[(name, "trim")]
    assert before == excerpt(f"{value} ", dataset(tx).field(name))[1:-1] != f"{value} "
    assert after == excerpt(value, dataset(tx).field(name))[1:-1]


def test_a_target_error_never_quotes_the_rows_values(db_url):
    """A failed statement's error holds no value it carried (`hide_parameters`)."""
    from datetime import date

    engine = target.connect(db_url)
    target.upgrade(engine)
    row = {"ID": "R1", "batchNo": "2025010100000001", "txCode": "03", "busType": "I",
           "updateDate": date(2025, 1, 1), "orgNo": ORG_A, "psnName": "诸葛孔明",
           "idCardNo": ID_SPACED, "certNo": CERT_OLD, "isSecChief": 0, "isSecManager": 1,
           "isOpr": 1, "isRes": 0, "rowHash": "0" * 32}
    with pytest.raises(sa.exc.DBAPIError) as failed:
        with engine.begin() as conn:
            conn.execute(sa.insert(target.table("03")), [row, row])  # the second breaks the key
    engine.dispose()
    text = str(failed.value)
    assert "unit_person" in text and "hidden" in text
    assert not [v for v in ("诸葛孔明", ID_SPACED, CERT_OLD) if v in text], text


def test_a_row_the_target_refuses_is_not_quoted_in_the_run_record_nor_the_log(pg_url, tmp_path):
    """PostgreSQL quotes a refused row in its error (`Failing row contains (...)`): a run's
    message and `etl -v run`'s output say which rule refused it, not its values."""
    engine = target.connect(pg_url)
    target.upgrade(engine)
    with engine.begin() as conn:  # a rule added by hand on the target, which our data breaks
        conn.exec_driver_sql('ALTER TABLE unit_person ADD CONSTRAINT new_certificates_only '
                             'CHECK (length("certNo") <> 15)')
    engine.dispose()
    env = {"STAFF_SOURCE_URL": f"sqlite:///{tmp_path / 'staff.sqlite'}"}
    os.environ.pop("ETL_DATA_KEY", None)
    _write_staff(env["STAFF_SOURCE_URL"], STAFF)
    mapping = tmp_path / "staff.yaml"
    mapping.write_text(STAFF_MAPPING.format(org=ORG_A), encoding="utf-8")

    done = _etl(["run", str(mapping), "--target", pg_url], env)

    assert done.returncode == 1
    [run] = rows_of(pg_url, "ingest_run")
    assert run["status"] == "failed" and "new_certificates_only" in run["message"]
    assert "Failing row contains (the row's values are not shown)" in run["message"]
    texts = {("ingest_run", "message"): [run["message"]], ("etl", "stdout"): [done.stdout],
             ("etl", "stderr"): [done.stderr]}
    assert _found(texts, CLEAR) == []


def test_a_source_error_never_quotes_the_values_a_query_was_bound_with(tmp_path):
    """A failed read's error holds no value it was bound with (`hide_parameters`)."""
    from etl.source.connect import engine_for

    path = tmp_path / "src.sqlite"
    sa.create_engine(f"sqlite:///{path}").dispose()
    path.touch()
    engine = engine_for(sa.engine.make_url(f"sqlite:///{path}"))
    with pytest.raises(sa.exc.DBAPIError) as failed, engine.connect() as conn:
        conn.execute(sa.text("SELECT cert FROM t_missing WHERE cert = :c"), {"c": CERT_OLD})
    assert "t_missing" in str(failed.value) and CERT_OLD not in str(failed.value)


def test_an_airflow_tasks_log_masks_what_the_etl_logger_says(caplog):
    """Under Airflow the CLI's handlers are not there: the `etl` logger itself masks (installed
    when the tasks are imported), so a task log holds no ID number nor a row a database quoted."""
    import logging

    import etl.orchestration.tasks  # noqa: F401 - installs the filter, as the DAG's tasks do

    with caplog.at_level(logging.INFO, logger="etl"):
        logging.getLogger("etl").error("load failed: %s", f'DETAIL:  Failing row contains '
                                       f'(R1, 诸葛孔明, {CERT_OLD}), ID {ID_SPACED}')
    assert "Failing row contains (the row's values are not shown)" in caplog.text
    assert _found({("task", "log"): [caplog.text]}, [CERT_OLD, ID_SPACED, "孔明"]) == []


# --- the attacker's side: every surface a person reads, with a data key --------------------------

BAD_ID = gb11643("32011519900101125")[:-1] + ("0" if gb11643("32011519900101125")[-1] != "0" else "1")
SPACED_BAD_ID = f"{BAD_ID[:6]} {BAD_ID[6:14]} {BAD_ID[14:]}"  # cleaned (separators), then rejected


def _site_texts(folder: Path) -> dict[tuple[str, str], list[str]]:
    """Every file of the report site as text: pages, CSV, and each XLSX's XML parts."""
    import zipfile

    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".xlsx":
            with zipfile.ZipFile(path) as z:
                out[("site", str(path))] = [z.read(n).decode("utf-8", "replace") for n in z.namelist()]
        else:
            out[("site", str(path))] = [path.read_bytes().decode("utf-8", "replace")]
    return out


def test_a_protected_value_is_nowhere_in_clear_but_a_decrypted_read(target_url, tmp_path):
    """With ETL_DATA_KEY set, certificate and ID numbers that get cleaned, rejected or differ at
    reconciliation are not in clear in the run record, rejects, audit examples, reconciliation
    details, the report site's pages and CSV/XLSX exports, nor anything `etl -v` prints; at rest
    they are ciphertext. Only `etl decrypt --clear` shows them."""
    import base64

    key = base64.b64encode(os.urandom(32)).decode()
    source = f"sqlite:///{tmp_path / 'staff.sqlite'}"
    env = {"STAFF_SOURCE_URL": source, "ETL_DATA_KEY": key}
    staff = [*STAFF, ("E05", "上官婉儿", SPACED_BAD_ID, CERT_OLD_REISSUED)]
    _write_staff(source, staff)
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    mapping = mappings / "staff.yaml"
    mapping.write_text(STAFF_MAPPING.format(org=ORG_A), encoding="utf-8")
    secrets = [*CLEAR, BAD_ID, "婉儿"]

    ran = _etl(["run", str(mapping), "--target", target_url], env)
    assert ran.returncode == 0, ran.stderr
    rejects = rows_of(target_url, "ingest_reject")
    assert {(r["sourceKey"], r["field"], r["rule"]) for r in rejects} >= {
        ("E03", "certNo", "length"), ("E04", "psnName", "length"), ("E05", "idCardNo", "idcard")}
    audit = {(r["field"], r["rule"]) for r in rows_of(target_url, "ingest_audit")}
    assert audit >= {("certNo", "halfwidth"), ("certNo", "trim"), ("idCardNo", "separators")}

    _write_staff(source, [(e, n, i, CERT_OLD_REISSUED if e == "E02" else c) for e, n, i, c in staff])
    reconciled = _etl(["reconcile", str(mapping), "--target", target_url], env)
    assert reconciled.returncode == 1, reconciled.stderr  # E02's certNo differs, E03-E05 not ingested
    assert "certNo" in reconciled.stdout
    site = tmp_path / "site"
    reported = _etl(["report", "--mappings-dir", str(mappings), "--out", str(site), "--target", target_url], env)
    assert reported.returncode == 0, reported.stderr
    pages = _site_texts(site)
    assert any(p.endswith(".xlsx") for _, p in pages) and any(p.endswith(".csv") for _, p in pages)
    assert any("certNo" in t for ts in pages.values() for t in ts)

    everything = _texts(target_url)
    bookkeeping = {k: v for k, v in everything.items()  # ingest_change: the ledger, like the tables
                   if k[0].startswith("ingest_") and k[0] != "ingest_change"}
    assert {"ingest_reject", "ingest_audit", "ingest_run", "ingest_reconcile"} <= {t for t, _ in bookkeeping}
    readable = {**bookkeeping, **pages, **{("etl", f"{done.args[3]} {stream}"): [getattr(done, stream)]
                            for done in (ran, reconciled, reported) for stream in ("stdout", "stderr")}}
    assert _found(readable, secrets) == []
    # at rest: the encrypted fields are ciphertext in every table (names are not encrypted)
    assert _found(everything, [c for c in secrets if c[:1].isdigit()]) == []
    # a decrypted read shows them: the values were there to find
    clear = _etl(["decrypt", "--org", ORG_A, "--tx", "03", "--clear", "--target", target_url], env)
    assert clear.returncode == 0, clear.stderr
    assert CERT_OLD in clear.stdout and CERT_ID in clear.stdout
