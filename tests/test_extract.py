"""Extraction from real sources: read-only, streamed, and the quirks real databases have."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from etl import pipeline, target
from etl.common import outbound
from etl.mapping import SourceSpec, load_mapping
from etl.source import connect, extract
from helpers import ORG_A, QUIRKY_FIELDS, rows_of

MAPPING = """\
unit: {{orgNo: "{org}", comName: 南京某某化工有限公司}}
source: {{url_env: QUIRKY_URL}}
datasets:
  "06":
    table: t_quirky
""" + QUIRKY_FIELDS


def test_source_connection_is_read_only(pg_url):
    engine = connect.engine_for(outbound.normalise_url(pg_url))
    with connect.read_only(engine) as conn:
        assert conn.exec_driver_sql("SHOW transaction_read_only").scalar() == "on"
        with pytest.raises(sa.exc.DBAPIError, match="read-only"):
            conn.exec_driver_sql("CREATE TABLE x (a int)")


def test_streaming_yields_chunks_of_the_asked_size(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    e = sa.create_engine(url)
    with e.begin() as c:
        c.exec_driver_sql("CREATE TABLE t_quirky (id INTEGER, code TEXT, name TEXT, kind INT, "
                          "reg_date TEXT, check_time TEXT, level INT, person TEXT, reg_no TEXT)")
        c.exec_driver_sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2500) "
                          "INSERT INTO t_quirky (id, code) SELECT i, 'FX' || i FROM n")
    monkeypatch.setenv("QUIRKY_URL", url)
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING.format(org=ORG_A), encoding="utf-8")
    m = load_mapping(path)
    sizes = [len(c) for c in extract.stream(m, "06", chunk_rows=1000)]
    assert sizes == [1000, 1000, 500]


def test_mariadb_gbk_zero_dates_numbers_and_datetimes(mariadb_url, tmp_path, monkeypatch):
    """A legacy MySQL source: GBK text, zero dates, DATE/DATETIME/text dates, numeric codes."""
    e = sa.create_engine(mariadb_url)
    with e.begin() as c:
        c.exec_driver_sql("SET SESSION sql_mode = ''")
        c.exec_driver_sql(
            "CREATE TABLE t_quirky (id INT PRIMARY KEY, code VARCHAR(20), name VARCHAR(50) "
            "CHARACTER SET gbk, kind INT, reg_date DATE, check_time DATETIME, level DECIMAL(3,0), "
            "person VARCHAR(50) CHARACTER SET gbk, reg_no DECIMAL(20,0)) DEFAULT CHARSET=gbk")
        c.exec_driver_sql(
            "INSERT INTO t_quirky VALUES "
            "(1, 'FX001', '电站锅炉', 0, '2024-03-01', '2024-03-02 10:11:12', 2, '张三、李四', 31103201152024000901),"
            "(2, 'FX002', '桥式起重机', 1, '0000-00-00', '0000-00-00 00:00:00', 4, '王五', NULL)")
    e.dispose()
    monkeypatch.setenv("QUIRKY_URL", mariadb_url)
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING.format(org=ORG_A), encoding="utf-8")
    m = load_mapping(path)
    out = f"sqlite:///{tmp_path / 't.sqlite'}"
    engine = target.connect(out)
    r = pipeline.run_dataset(engine, m, "06")
    engine.dispose()
    assert (r.counts.inserted, r.counts.rejected) == (2, 0), r.reasons
    rows = {x["riskNo"]: x for x in rows_of(out, "risk_point")}
    one, two = rows["FX001"], rows["FX002"]
    assert (one["riskName"], one["dutyMan"]) == ("电站锅炉", "张三，李四")  # GBK decoded, list re-joined
    assert (str(one["registDate"]), str(one["checkDate"])) == ("2024-03-01", "2024-03-02")
    assert one["inherentriskLevel"] == "较大风险"  # DECIMAL 2 matched the value map key 2
    assert one["regNo"] == "31103201152024000901" and one["riskType"] == 0
    assert (two["registDate"], two["checkDate"], two["riskType"]) == (None, None, 1)  # zero dates


def test_literal_url_password_is_refused():
    with pytest.raises(ValueError, match="holds a password"):
        SourceSpec(url="mysql+pymysql://u:p@h/db")


def test_conn_error_message_hides_the_password():
    url = outbound.normalise_url("postgresql://etl:hunter22@127.0.0.1:1/x")
    assert url.drivername == "postgresql+psycopg"
    with pytest.raises(Exception) as err:
        with connect.read_only(connect.engine_for(url)):
            pass
    assert "hunter22" not in str(err.value) and "cannot connect" in str(err.value)


def test_a_missing_column_is_a_terminal_mapping_problem(tmp_path, monkeypatch):
    from etl.common.errors import SourceSchemaError

    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    e = sa.create_engine(url)
    with e.begin() as c:
        c.exec_driver_sql("CREATE TABLE t_quirky (id INTEGER, code TEXT)")
    monkeypatch.setenv("QUIRKY_URL", url)
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING.format(org=ORG_A), encoding="utf-8")
    with pytest.raises(SourceSchemaError, match="no such column") as err:
        list(extract.stream(load_mapping(path), "06"))
    assert err.value.transient is False


def test_postgresql_text_survives_the_copy_path(pg_url, tmp_path, monkeypatch):
    """PostgreSQL sources are read by COPY as CSV: newlines (only in some chunks), CR LF,
    quotes, commas, backslashes, empty strings and NULLs come out as they went in."""
    texts = ["整改\n复查", "a\r\nb", 'say "hi", ok', "back\\slash", "", None, "plain", "尾\n"]
    e = sa.create_engine(pg_url)
    with e.begin() as c:
        c.exec_driver_sql("CREATE TABLE t_quirky (id INTEGER, code TEXT, name TEXT, kind INT, "
                          "reg_date TEXT, check_time TEXT, level INT, person TEXT, reg_no TEXT)")
        rows = [{"id": i, "code": f"FX{i}", "name": t} for i, t in enumerate(texts)]
        rows += [{"id": 100 + i, "code": f"FX{100 + i}", "name": f"n{i}"} for i in range(8)]
        c.execute(sa.text("INSERT INTO t_quirky (id, code, name) VALUES (:id, :code, :name)"), rows)
    e.dispose()
    monkeypatch.setenv("QUIRKY_URL", pg_url)
    path = tmp_path / "m.yaml"
    path.write_text(MAPPING.format(org=ORG_A), encoding="utf-8")
    chunks = list(extract.stream(load_mapping(path), "06", chunk_rows=8))
    got = {}
    for chunk in chunks:
        for i, name in zip(chunk["id"], chunk["name"]):
            got[int(i)] = None if name is None or name != name else name
    assert [got[i] for i in range(len(texts))] == texts
    assert [got[100 + i] for i in range(8)] == [f"n{i}" for i in range(8)]


def test_only_the_latest_source_engines_are_kept(tmp_path):
    """A process that loads many units keeps a few source pools, not one per unit ever seen."""
    urls = [outbound.normalise_url(f"sqlite:///{tmp_path / f'u{i}.sqlite'}")
            for i in range(connect.ENGINES_KEPT + 3)]
    first = connect.engine_for(urls[0])
    with connect.read_only(first):
        pass  # the first unit's pool holds a connection now
    assert first.pool.checkedin() == 1
    assert connect.engine_for(urls[0]) is first  # a unit's datasets share it
    later = [connect.engine_for(u) for u in urls[1:]]
    assert connect.engine_for(urls[-1]) is later[-1]  # recent: reused
    assert first.pool.checkedin() == 0  # evicted: its connections closed
    assert connect.engine_for(urls[0]) is not first
