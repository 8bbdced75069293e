"""Source column types real units use, on real SQLite, PostgreSQL and MariaDB sources: a value
the standard accepts loads whatever type the unit stores it in, and a unit that alters a
column's type changes no record ID and writes no spurious U batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import HIDDEN_DANGER_COLUMNS, hidden_danger_mapping_text, hidden_danger_row, query

from etl.cli import main

def _mapping(env: str) -> str:
    """The hidden-danger unit of tests/helpers.py, its levels a value map of numeric codes."""
    return hidden_danger_mapping_text(env=env).replace(
        "      troubleLevel: level\n",
        "      troubleLevel: {column: level, values: {1: 一般事故隐患, 2: 较大事故隐患}}\n")

ROWS = [hidden_danger_row(2024001, level=1), hidden_danger_row(2024002, level=2),
        hidden_danger_row(2024003, level=2, del_flag=1)]


def _create(url: str, key_type: str, level_type: str, flag_type: str) -> None:
    engine = sa.create_engine(url)
    others = [c for c in HIDDEN_DANGER_COLUMNS if c not in ("id", "level", "del_flag")]
    types = {"id": key_type, "level": level_type, "del_flag": flag_type}
    ddl = ", ".join([f"{c} {types[c]}" for c in ("id", "level", "del_flag")]
                    + [f"{c} VARCHAR(200)" for c in others])
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE t_hidden_danger ({ddl})")
        for r in ROWS:
            flag = f"b'{r['del_flag']}'" if flag_type == "BIT(1)" else str(r["del_flag"])
            values = [str(r["id"]), str(r["level"]), flag] + [f"'{r[c]}'" for c in others]
            conn.exec_driver_sql(f"INSERT INTO t_hidden_danger (id, level, del_flag, {', '.join(others)}) "
                                 f"VALUES ({', '.join(values)})")
    engine.dispose()


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, name: str) -> dict[str, tuple]:
    monkeypatch.setenv(f"SOURCE_{name.upper()}", source)
    mapping = tmp_path / f"{name}.yaml"
    mapping.write_text(_mapping(f"SOURCE_{name.upper()}"), encoding="utf-8")
    target = f"sqlite:///{tmp_path / name}-target.sqlite"
    assert main(["-q", "run", str(mapping), "--target", target]) == 0
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql('SELECT "taskNo", "ID", "troubleLevel", "busType" FROM hidden_danger').all()
        rejects = conn.exec_driver_sql("SELECT COUNT(*) FROM ingest_reject").scalar()
    engine.dispose()
    assert rejects == 0
    return {r[0]: tuple(r[1:]) for r in rows}


def test_decimal_codes_keys_and_bit_flags_load_as_their_integer_twins(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DECIMAL(2,1) codes match the value map's `2`, DECIMAL keys give the IDs of integer keys,
    a MariaDB BIT(1) `deleted:` flag is recognised."""
    backend = sa.make_url(db_url).get_backend_name()
    flag = "BIT(1)" if backend == "mysql" else "INTEGER"
    _create(db_url, "DECIMAL(12,1)", "DECIMAL(2,1)", flag)
    reference = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    _create(reference, "INTEGER", "INTEGER", "INTEGER")

    got = _run(tmp_path, monkeypatch, db_url, "decimal")
    expected = _run(tmp_path, monkeypatch, reference, "integer")
    assert got == expected
    assert {k: v[1] for k, v in got.items()} == {"YH02024001": "一般事故隐患", "YH02024002": "较大事故隐患"}


# --- arrays ---------------------------------------------------------------------------------

RISK_MAPPING = """\
unit: {{orgNo: "91320115MA1R7KX30X", comName: 南京某某化工有限公司}}
source: {{url_env: {env}}}
datasets:
  "06":
    table: t_risk
    key: [id]
    fields:
      riskNo: point_no
      riskName: name
      riskType: {{value: "1"}}
      accidentType: kinds
      inherentriskLevel: {{value: 较大风险}}
      remainriskLevel: {{value: 一般风险}}
      controlLevel: {{value: 公司（厂）级}}
      dutyName: {{value: 设备部}}
      dutyMan: men
"""

# (PostgreSQL array literal / JSON text) -> what the standard's field holds
ARRAYS = [(["王志刚", "刘洋"], ["泄漏", "爆炸"], "王志刚，刘洋", "泄漏、爆炸"),
          (["张三"], ["故障或者受困（滞留）"], "张三", "故障或者受困（滞留）"),
          (["李四", "王五", "赵六"], ["坠落", "坠落", "碰撞"], "李四，王五，赵六", "坠落、碰撞")]


def _array_source(url: str) -> None:
    import json

    backend = sa.make_url(url).get_backend_name()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if backend == "postgresql":  # a text[] of names, a jsonb array of kinds
            conn.exec_driver_sql("CREATE TABLE t_risk (id int, point_no text, name text, men text[], kinds jsonb, changed timestamp)")
            rows = [{"id": i, "no": f"FX{i}", "name": f"风险点{i}", "men": men, "kinds": json.dumps(kinds, ensure_ascii=False)}
                    for i, (men, kinds, *_) in enumerate(ARRAYS)]
            conn.execute(sa.text("INSERT INTO t_risk VALUES (:id, :no, :name, :men, CAST(:kinds AS jsonb), '2025-03-01 10:00:00')"), rows)
        else:  # MariaDB JSON columns, SQLite JSON text
            kind = "JSON" if backend == "mysql" else "TEXT"
            stamp = "DATETIME" if backend == "mysql" else "TEXT"
            conn.exec_driver_sql(f"CREATE TABLE t_risk (id int, point_no varchar(20), name varchar(50), men {kind}, kinds {kind}, changed {stamp})")
            rows = [{"id": i, "no": f"FX{i}", "name": f"风险点{i}", "men": json.dumps(men, ensure_ascii=False),
                     "kinds": json.dumps(kinds, ensure_ascii=False)} for i, (men, kinds, *_) in enumerate(ARRAYS)]
            conn.execute(sa.text("INSERT INTO t_risk VALUES (:id, :no, :name, :men, :kinds, '2025-03-01 10:00:00')"), rows)
    engine.dispose()


@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_arrays_of_names_and_kinds_are_joined_by_the_standards_separators(
        db_url: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _array_source(db_url)
    monkeypatch.setenv("RISK_SOURCE", db_url)
    mapping = tmp_path / "unit.yaml"
    text = RISK_MAPPING.format(env="RISK_SOURCE")
    if mode == "incremental":  # the row path instead of PostgreSQL's COPY
        text = text.replace("    key: [id]\n", "    key: [id]\n    updated_at: changed\n")
    mapping.write_text(text, encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.sqlite'}"
    args = ["-q", "run", str(mapping), "--target", target, "--mode", mode]
    assert main(args + (["--since", "2025-01-01", "--until", "2025-04-01"] if mode == "incremental" else [])) == 0
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        got = {r[0]: (r[1], r[2]) for r in conn.exec_driver_sql(
            'SELECT "riskNo", "dutyMan", "accidentType" FROM risk_point')}
        rejects = conn.exec_driver_sql('SELECT "sourceKey", "message" FROM ingest_reject').all()
    engine.dispose()
    assert rejects == []
    assert got == {f"FX{i}": (men, kinds) for i, (*_, men, kinds) in enumerate(ARRAYS)}


def test_a_mariadb_bit_column_fills_a_flag_field(mariadb_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """pymysql returns BIT(1) as b'\\x00' / b'\\x01': it is the flag 0 / 1, not binary text."""
    engine = sa.create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE dept (id INT, name VARCHAR(50), safety BIT(1))")
        conn.exec_driver_sql("INSERT INTO dept VALUES (1, '安全环保部', b'1'), (2, '生产部', b'0')")
    engine.dispose()
    monkeypatch.setenv("DEPT_SOURCE", mariadb_url)
    mapping = tmp_path / "unit.yaml"
    mapping.write_text("""\
unit: {orgNo: "91320115MA1R7KX30X", comName: 南京某某化工有限公司}
source: {url_env: DEPT_SOURCE}
datasets:
  "02":
    table: dept
    key: [id]
    fields:
      deptName: name
      isSecDept: safety
""", encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.sqlite'}"
    assert main(["-q", "run", str(mapping), "--target", target]) == 0
    assert dict(query(target, 'SELECT "deptName", "isSecDept" FROM unit_dept')) == {"安全环保部": 1, "生产部": 0}
    assert query(target, "SELECT COUNT(*) FROM ingest_reject") == [(0,)]


# --- one odd value costs at most its row ------------------------------------------------------


def test_a_nul_in_a_source_key_loads_into_postgresql(pg_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL text cannot hold NUL: a key with one (`A\\x00B`) once failed the dataset's COPY,
    and Airflow retried it as a transient target error. The record loads; where a key is shown
    (rejects, duplicates) the NUL is spelt \\x00."""
    from helpers import hidden_danger_mapping, write_source

    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    rows = [hidden_danger_row(1), hidden_danger_row(2), hidden_danger_row(3, check_date="2024-02-30")]
    write_source(source, "t_hidden_danger", rows)
    import sqlite3

    con = sqlite3.connect(tmp_path / "source.sqlite")  # text keys, two of them with a NUL
    con.execute("ALTER TABLE t_hidden_danger ADD COLUMN code TEXT")
    for n, key in ((1, "A\x00B"), (2, "plain"), (3, "C\x00D")):
        con.execute("UPDATE t_hidden_danger SET code = ? WHERE task_no = ?", (key, f"YH{n:08d}"))
    con.commit()
    con.close()
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    m.path.write_text(m.path.read_text(encoding="utf-8").replace("key: [id]", "key: [code]"), encoding="utf-8")
    assert main(["-q", "run", str(m.path), "--target", pg_url]) == 0
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        loaded = sorted(r[0] for r in conn.exec_driver_sql('SELECT "taskNo" FROM hidden_danger'))
        rejects = conn.exec_driver_sql('SELECT "sourceKey", "rule" FROM ingest_reject').all()
        status = conn.exec_driver_sql('SELECT "status" FROM ingest_run').scalar()
    engine.dispose()
    assert (status, loaded) == ("success", ["YH00000001", "YH00000002"])
    assert rejects == [("C\\x00D", "date")]


# --- time zones of sources --------------------------------------------------------------------

# Instants in UTC, and what they are in China Standard Time:
#   late:  2025-02-28 19:00 UTC = 2025-03-01 03:00 CST  (inside the window's 24 h lookback)
#   night: 2025-03-01 17:30 UTC = 2025-03-02 01:30 CST  (inside the window; a CST date of 03-02)
#   after: 2025-03-02 17:00 UTC = 2025-03-03 01:00 CST  (after the window's end)
INSTANTS = {1: "2025-02-28 19:00:00", 2: "2025-03-01 17:30:00", 3: "2025-03-02 17:00:00"}
WINDOW = ["--mode", "incremental", "--since", "2025-03-02", "--until", "2025-03-03"]  # CST


def _utc_source(url: str, kind: str) -> None:
    """A hidden-danger table whose check and update times are the instants above, on a server
    (or database) whose own time zone is UTC, as cloud databases usually run."""
    backend = sa.make_url(url).get_backend_name()
    engine = sa.create_engine(url)
    stamp = {"aware": {"postgresql": "timestamptz", "mysql": "TIMESTAMP NULL"}[backend],
             "naive": {"postgresql": "timestamp", "mysql": "DATETIME"}[backend]}[kind]
    others = [c for c in HIDDEN_DANGER_COLUMNS if c not in ("id", "check_date", "modify_time", "del_flag")]
    with engine.begin() as conn:
        if backend == "postgresql":
            conn.exec_driver_sql(f"ALTER DATABASE \"{engine.url.database}\" SET timezone TO 'UTC'")
            conn.exec_driver_sql("SET timezone TO 'UTC'")
        else:  # the server's own zone (restored by the test), and this session's
            conn.exec_driver_sql("SET GLOBAL time_zone = '+00:00'")
            conn.exec_driver_sql("SET time_zone = '+00:00'")
        cols = ", ".join(f"{c} VARCHAR(200)" for c in others)
        conn.exec_driver_sql(f"CREATE TABLE t_hidden_danger (id INT, check_date {stamp}, "
                             f"modify_time {stamp}, del_flag INT, {cols})")
        for i, instant in INSTANTS.items():
            row = hidden_danger_row(i, limit_date="2025-04-30", deal_date="2025-04-01",
                                    accept_date="2025-04-02")
            conn.execute(sa.text(f"INSERT INTO t_hidden_danger (id, check_date, modify_time, del_flag, "
                                 f"{', '.join(others)}) VALUES (:id, :at, :at, 0, "
                                 f"{', '.join(':' + c for c in others)})"),
                         {**{c: row[c] for c in others}, "id": i, "at": instant})
    engine.dispose()


@pytest.mark.parametrize("kind", ["aware", "naive"])
@pytest.mark.parametrize("server", ["pg_url", "mariadb_url"])
def test_a_utc_sources_instants_land_on_their_cst_days_and_windows(
        server: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Zone-aware columns (timestamptz, MySQL TIMESTAMP) are instants, read in CST whatever the
    server's zone; zone-less ones (timestamp, DATETIME) holding UTC wall-clock times are read
    as such when the mapping says `timezone: UTC`. The window [03-02, 03-03) CST with 24 h of
    lookback takes the late row and the night row, not the one after it."""
    from helpers import hidden_danger_mapping_text

    url = request.getfixturevalue(server)
    _utc_source(url, kind)
    monkeypatch.setenv("UTC_SOURCE", url)
    text = hidden_danger_mapping_text(env="UTC_SOURCE")
    if kind == "naive":
        text = text.replace("source: {url_env: UTC_SOURCE}", "source: {url_env: UTC_SOURCE, timezone: UTC}")
    mapping = tmp_path / "unit.yaml"
    mapping.write_text(text, encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.sqlite'}"
    try:
        assert main(["-q", "run", str(mapping), "--target", target, *WINDOW]) == 0
    finally:
        if server == "mariadb_url":
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.exec_driver_sql("SET GLOBAL time_zone = 'SYSTEM'")
            engine.dispose()
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        got = dict(conn.exec_driver_sql('SELECT "taskNo", "checkDate" FROM hidden_danger').all())
    engine.dispose()
    assert {k: str(v) for k, v in got.items()} == {"YH00000001": "2025-03-01", "YH00000002": "2025-03-02"}


def test_undecodable_text_in_a_sqlite_source_costs_its_row_only(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite3 failed the whole read ("Could not decode to UTF-8") on one TEXT value that is
    not UTF-8: GBK text now loads, bytes that are no text reject their row, the rest loads."""
    from helpers import hidden_danger_mapping, write_source

    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in (1, 2, 3)])
    import sqlite3

    con = sqlite3.connect(tmp_path / "source.sqlite")
    gbk = "安全阀校验过期".encode("gbk").hex()
    con.execute(f"UPDATE t_hidden_danger SET problem = CAST(X'{gbk}' AS TEXT) WHERE id = 2")
    con.execute("UPDATE t_hidden_danger SET problem = CAST(X'FF00FE41' AS TEXT) WHERE id = 3")
    con.commit()
    assert con.execute("SELECT typeof(problem) FROM t_hidden_danger WHERE id = 3").fetchone() == ("text",)
    con.close()
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    target = f"sqlite:///{tmp_path / 'target.sqlite'}"
    assert main(["-q", "run", str(m.path), "--target", target]) == 0
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        got = dict(conn.exec_driver_sql('SELECT "taskNo", "mainProblem" FROM hidden_danger').all())
        rejects = conn.exec_driver_sql('SELECT "sourceKey", "rule" FROM ingest_reject').all()
    engine.dispose()
    assert got == {"YH00000001": "安全阀校验过期 1", "YH00000002": "安全阀校验过期"}
    assert rejects == [("3", "binary")]


def test_a_cast_failing_mid_read_fails_its_dataset_in_one_line_and_the_next_unit_runs(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A `query:` whose cast meets a bad value at row 1,501 of 2,000: that dataset fails with
    the source's reason in one line (a data problem: not retried), the next unit loads."""
    from helpers import hidden_danger_mapping_text, org_no, write_source

    from etl.common.errors import SourceDataError

    rows = [hidden_danger_row(i) for i in range(1, 2001)]
    rows[1500]["level"] = "不是数字"
    write_source(pg_url, "t_hidden_danger", rows)
    monkeypatch.setenv("CAST_SOURCE", pg_url)
    bad = tmp_path / "bad.yaml"
    bad.write_text(hidden_danger_mapping_text(env="CAST_SOURCE").replace(
        "    table: t_hidden_danger\n",
        "    query: SELECT * FROM t_hidden_danger "
        "WHERE CAST(CASE WHEN level = '不是数字' THEN level ELSE '1' END AS int) > 0\n"), encoding="utf-8")
    good = tmp_path / "good.yaml"
    good.write_text(hidden_danger_mapping_text(org=org_no("91320506MA1W3L8P7"), env="CAST_SOURCE"),
                    encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.sqlite'}"
    assert main(["-q", "run", str(bad), str(good), "--target", target]) == 1
    err = capsys.readouterr()
    assert "Traceback" not in err.err + err.out
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        runs = dict(conn.exec_driver_sql('SELECT "mapping", "status" FROM ingest_run').all())
        message = conn.exec_driver_sql('SELECT "message" FROM ingest_run WHERE "mapping" = \'bad\'').scalar()
        loaded = conn.exec_driver_sql("SELECT COUNT(*) FROM hidden_danger").scalar()
    engine.dispose()
    assert runs == {"bad": "failed", "good": "success"} and loaded == 1999  # its 不是数字 is no level
    assert "failed on a value mid-read" in message and "不是数字" in message and "\n" not in message
    assert not SourceDataError.transient  # Airflow does not retry it


def test_a_percent_in_a_query_reads_alike_in_full_and_incremental_runs(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`100%` in a literal was doubled on one path (100%% in full mode, 100% incremental), so each
    switch between modes wrote spurious U batches. The text is identical whatever the path."""
    from helpers import hidden_danger_mapping_text, write_source

    write_source(db_url, "t_hidden_danger", [hidden_danger_row(i) for i in (1, 2)])
    if sa.make_url(db_url).get_backend_name() == "postgresql":
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE t_hidden_danger ALTER modify_time TYPE timestamp "
                                 "USING modify_time::timestamp")
        engine.dispose()
    monkeypatch.setenv("PCT_SOURCE", db_url)
    mapping = tmp_path / "unit.yaml"
    mapping.write_text(hidden_danger_mapping_text(env="PCT_SOURCE").replace(
        "    table: t_hidden_danger\n",
        "    query: SELECT id, task_no, reg_no, kind, level, REPLACE(problem, '过期', '过期100%') AS problem, checker, "
        "check_date, limit_date, deal_man, deal_date, deal_info, accept_man, accept_date, accept_info, "
        "modify_time, del_flag FROM t_hidden_danger\n"), encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'target.sqlite'}"
    assert main(["-q", "run", str(mapping), "--target", target]) == 0
    window = ["--mode", "incremental", "--since", "2024-05-01", "--until", "2024-06-01"]
    assert main(["-q", "run", str(mapping), "--target", target, *window]) == 0
    assert main(["-q", "run", str(mapping), "--target", target]) == 0
    engine = sa.create_engine(target)
    with engine.connect() as conn:
        problems = {r[0] for r in conn.exec_driver_sql('SELECT "mainProblem" FROM hidden_danger')}
        runs = conn.exec_driver_sql('SELECT "mode", "extracted", "inserted", "updated" FROM ingest_run '
                                    'ORDER BY "runKey"').all()
    engine.dispose()
    assert problems == {"安全阀校验过期100% 1", "安全阀校验过期100% 2"}
    assert [tuple(r) for r in runs] == [("full", 2, 2, 0), ("incremental", 2, 0, 0), ("full", 2, 0, 0)]
