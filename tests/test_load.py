"""Loading: full and incremental, I/U/D, batch numbers, the ledger, on all three targets."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from etl import pipeline, target
from etl.common import clock
from helpers import (ORG_A, hidden_danger_mapping, hidden_danger_row, org_no, rows_of,
                     write_source)

NOW = datetime(2024, 6, 1, 10, 0, tzinfo=clock.CST)


@pytest.fixture
def source(tmp_path):
    return f"sqlite:///{tmp_path / 'source.sqlite'}"


def run(db_url, mapping, **kw):
    engine = target.connect(db_url)
    try:
        return pipeline.run_dataset(engine, mapping, "09", **{"now": NOW, **kw})
    finally:
        engine.dispose()


def live(db_url):
    return {r["taskNo"]: r for r in rows_of(db_url, "hidden_danger")}


def test_full_load_inserts_every_valid_row_under_one_batch(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 6)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    r = run(db_url, m)
    assert (r.counts.extracted, r.counts.inserted, r.counts.unchanged) == (5, 5, 0)
    assert r.counts.batches == {"I": "2024060100000001"}
    rows = live(db_url)
    assert set(rows) == {f"YH{i:08d}" for i in range(1, 6)}
    one = rows["YH00000001"]
    assert (one["busType"], one["txCode"], one["batchNo"], str(one["updateDate"])) == (
        "I", "09", "2024060100000001", "2024-06-01")
    assert one["ID"].startswith(ORG_A + "09") and len(one["ID"]) == 52


def test_rerun_writes_no_batch_and_no_change(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 6)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    run(db_url, m)
    r = run(db_url, m)
    assert (r.counts.inserted, r.counts.updated, r.counts.deleted, r.counts.unchanged) == (0, 0, 0, 5)
    assert r.counts.batches == {}
    assert len(rows_of(db_url, "ingest_batch")) == 1
    assert len(rows_of(db_url, "ingest_change")) == 5


def test_changed_and_vanished_records_become_u_and_d(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 6)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    run(db_url, m)
    rows = [hidden_danger_row(i) for i in (1, 2, 3, 4)] + [hidden_danger_row(6)]
    rows[1]["problem"] = "整改后复查发现新问题"
    write_source(source, "t_hidden_danger", rows)
    r = run(db_url, m)
    c = r.counts
    assert (c.inserted, c.updated, c.deleted, c.vanished, c.unchanged) == (1, 1, 1, 1, 3)
    assert c.batches == {"I": "2024060100000002", "U": "2024060100000003", "D": "2024060100000004"}
    got = live(db_url)
    assert got["YH00000002"]["busType"] == "U" and got["YH00000002"]["mainProblem"] == "整改后复查发现新问题"
    assert got["YH00000005"]["busType"] == "D" and got["YH00000005"]["batchNo"] == "2024060100000004"
    assert got["YH00000006"]["busType"] == "I"
    assert got["YH00000001"]["batchNo"] == "2024060100000001"  # untouched


def test_a_vanished_record_that_returns_is_an_update(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(1), hidden_danger_row(2)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    run(db_url, m)
    write_source(source, "t_hidden_danger", [hidden_danger_row(1)])
    run(db_url, m)
    write_source(source, "t_hidden_danger", [hidden_danger_row(1), hidden_danger_row(2)])
    r = run(db_url, m)
    assert (r.counts.updated, r.counts.unchanged) == (1, 1)
    assert live(db_url)["YH00000002"]["busType"] == "U"


def test_soft_delete_becomes_d_and_the_record_stays(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(1), hidden_danger_row(2)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    run(db_url, m)
    write_source(source, "t_hidden_danger", [hidden_danger_row(1), hidden_danger_row(2, del_flag=1)])
    r = run(db_url, m)
    assert (r.counts.deleted, r.counts.vanished, r.counts.unchanged) == (1, 0, 1)
    row = live(db_url)["YH00000002"]
    assert row["busType"] == "D" and row["mainProblem"] == "安全阀校验过期 2"


def test_ledger_replays_each_batch_as_records(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 4)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    run(db_url, m)
    changes = rows_of(db_url, "ingest_change")
    assert len(changes) == 3
    rec = json.loads(changes[0]["record"])
    assert rec["batchNo"] == "2024060100000001" and rec["busType"] == "I" and rec["txCode"] == "09"
    assert rec["checkDate"] == "2024-04-16" and rec["dealInfo"] == "已整改"
    assert "rowHash" not in rec
    batch = rows_of(db_url, "ingest_batch")[0]
    assert (batch["records"], batch["busType"], batch["orgNo"]) == (3, "I", ORG_A)


def test_batch_numbers_restart_each_cst_day(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(1)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    # 15:59 UTC is 23:59 in Shanghai; 16:00 UTC is the next CST day
    run(db_url, m, now=datetime(2024, 6, 1, 15, 59, tzinfo=clock.ZoneInfo("UTC")))
    write_source(source, "t_hidden_danger", [hidden_danger_row(1, problem="次日复查")])
    r = run(db_url, m, now=datetime(2024, 6, 1, 16, 0, tzinfo=clock.ZoneInfo("UTC")))
    assert r.counts.batches == {"U": "2024060200000001"}
    assert str(live(db_url)["YH00000001"]["updateDate"]) == "2024-06-02"


def test_incremental_reads_only_the_window_with_lookback(db_url, source, tmp_path, monkeypatch):
    rows = [hidden_danger_row(1, modify_time="2024-05-01 08:00:00"),
            hidden_danger_row(2, modify_time="2024-05-30 23:00:00"),  # late commit, inside lookback
            hidden_danger_row(3, modify_time="2024-05-31 12:00:00"),
            hidden_danger_row(4, modify_time="2024-06-01 12:00:00")]  # after the window
    write_source(source, "t_hidden_danger", rows)
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    r = run(db_url, m, mode="incremental", since=datetime(2024, 5, 31), until=datetime(2024, 6, 1))
    assert r.mode == "incremental" and r.counts.extracted == 2
    assert set(live(db_url)) == {"YH00000002", "YH00000003"}
    again = run(db_url, m, mode="incremental", since=datetime(2024, 5, 31), until=datetime(2024, 6, 1))
    assert (again.counts.inserted, again.counts.unchanged, again.counts.batches) == (0, 2, {})


def test_incremental_without_since_starts_where_the_last_run_ended(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(1, modify_time="2024-05-30 12:00:00")])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    run(db_url, m, mode="incremental", since=datetime(2024, 5, 31), until=datetime(2024, 6, 1))
    write_source(source, "t_hidden_danger", [
        hidden_danger_row(1, modify_time="2024-05-30 12:00:00"),
        hidden_danger_row(2, modify_time="2024-06-01 09:00:00", problem="新发现")])
    r = run(db_url, m, mode="incremental", until=datetime(2024, 6, 2))
    assert r.window == (datetime(2024, 6, 1), datetime(2024, 6, 2))
    assert r.counts.inserted == 1 and r.counts.extracted == 1  # row 1 is outside the lookback


def test_incremental_never_marks_absent_rows_deleted(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(1), hidden_danger_row(2)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    run(db_url, m)
    r = run(db_url, m, mode="incremental", since=datetime(2024, 6, 1), until=datetime(2024, 6, 2))
    assert r.counts.extracted == 0 and r.counts.deleted == 0
    assert {v["busType"] for v in live(db_url).values()} == {"I"}


def test_units_do_not_touch_each_other(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(1)])
    a = hidden_danger_mapping(tmp_path, monkeypatch, source)
    b = hidden_danger_mapping(tmp_path, monkeypatch, source, org=org_no("91320506MA1W3L8P7"),
                              env="UNIT_B_SOURCE_URL")
    run(db_url, a)
    run(db_url, b)
    write_source(source, "t_hidden_danger", [])
    run(db_url, a, allow_mass_delete=True)  # unit A's snapshot is now empty: only A's record becomes D
    rows = rows_of(db_url, "hidden_danger")
    assert sorted((r["orgNo"], r["busType"]) for r in rows) == sorted(
        [(ORG_A, "D"), (org_no("91320506MA1W3L8P7"), "I")])
    assert rows[0]["ID"] != rows[1]["ID"]


def test_accounting_holds_on_dirty_rows(db_url, source, tmp_path, monkeypatch):
    rows = [hidden_danger_row(i) for i in range(1, 8)]
    rows.append(dict(rows[0]))                                     # exact duplicate
    rows.append(hidden_danger_row(2, modify_time="2024-05-18 10:00:00", problem="更新后"))  # newer version
    rows[2]["check_date"] = "2024-02-30"                            # impossible date
    rows[3]["level"] = "特别重大"                                     # not in the enumeration
    rows[4]["del_flag"] = 1                                          # soft delete of an unknown ID
    write_source(source, "t_hidden_danger", rows)
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    r = run(db_url, m)
    c = r.counts
    assert (c.extracted, c.duplicates, c.rejected, c.inserted, c.unchanged, c.skipped_deleted) == (
        9, 2, 2, 4, 0, 1)
    assert c.balanced()
    assert live(db_url)["YH00000002"]["mainProblem"] == "更新后"
    rejects = {(x["sourceKey"], x["field"], x["rule"], x["severity"]) for x in rows_of(db_url, "ingest_reject")}
    assert {("3", "checkDate", "date", "error"), ("4", "troubleLevel", "enum", "error"),
            ("1", "ID", "duplicate", "duplicate"), ("2", "ID", "superseded", "duplicate")} <= rejects
    run_row = rows_of(db_url, "ingest_run")[-1]
    assert (run_row["extracted"], run_row["rejected"], run_row["duplicates"], run_row["status"]) == (
        9, 2, 2, "success")


def test_a_rejected_row_keeps_its_loaded_version(db_url, source, tmp_path, monkeypatch):
    write_source(source, "t_hidden_danger", [hidden_danger_row(1)])
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    run(db_url, m)
    write_source(source, "t_hidden_danger", [hidden_danger_row(1, level="??")])
    r = run(db_url, m)
    assert (r.counts.rejected, r.counts.deleted, r.counts.updated) == (1, 0, 0)
    assert live(db_url)["YH00000001"]["busType"] == "I"


def test_a_row_deleted_before_it_was_ever_loaded_is_counted_as_skipped_deleted(db_url, source, tmp_path,
                                                                                monkeypatch):
    rows = [hidden_danger_row(1), hidden_danger_row(2), hidden_danger_row(3, del_flag=1)]
    write_source(source, "t_hidden_danger", rows)
    m = hidden_danger_mapping(tmp_path, monkeypatch, source)
    first = run(db_url, m).counts
    assert (first.inserted, first.unchanged, first.skipped_deleted, first.deleted) == (2, 0, 1, 0)
    assert first.balanced()
    rows[1]["del_flag"] = 1  # loaded, now deleted: a D
    write_source(source, "t_hidden_danger", rows)
    second = run(db_url, m).counts
    assert (second.deleted, second.unchanged, second.skipped_deleted) == (1, 1, 1)
    third = run(db_url, m).counts  # already D: unchanged; never loaded: still skipped
    assert (third.deleted, third.unchanged, third.skipped_deleted) == (0, 2, 1)
    recorded = [(r["unchanged"], r["skippedDeleted"]) for r in rows_of(db_url, "ingest_run", 'ORDER BY "runKey"')]
    assert recorded == [(0, 1), (1, 1), (2, 1)]


def test_a_load_on_postgresql_plans_with_its_own_settings_inside_its_transaction_only(pg_url):
    """`PG_SETTINGS` hold for the load's transaction (SET LOCAL), and not a moment longer."""
    import sqlalchemy as sa

    from etl import standard
    from etl.target import migrate
    from etl.target.load import PG_SETTINGS, DatasetLoad

    engine = sa.create_engine(pg_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        before = {name: conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in PG_SETTINGS}
        conn.rollback()
        assert before != PG_SETTINGS
        with conn.begin():
            DatasetLoad(conn, standard.dataset("09"), ORG_A).close()
            inside = {name: conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in PG_SETTINGS}
        after = {name: conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in PG_SETTINGS}
        conn.rollback()
    engine.dispose()
    assert inside == PG_SETTINGS
    assert after == before
