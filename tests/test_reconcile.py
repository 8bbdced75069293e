"""Reconciliation (5.3): agreement means every valid source record is in the target with equal
standard fields and nothing else is; differences are named field by field, masked; rejected
source rows are listed as not ingested, never hidden; results are kept and read back."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from etl import pipeline, target
from etl.cli import main
from etl.report import reconcile, reconciled
from helpers import ORG_A, hidden_danger_mapping, hidden_danger_row, rows_of, write_source


@pytest.fixture
def loaded(db_url, tmp_path, monkeypatch):
    """Three hidden dangers loaded from a SQLite source into the target under test."""
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 4)])
    mapping = hidden_danger_mapping(tmp_path, monkeypatch, source)
    engine = target.connect(db_url)
    [r] = pipeline.run_mapping(engine, mapping)
    assert r.counts.inserted == 3
    yield engine, mapping, source
    engine.dispose()


def _id_of(engine, key: int) -> str:
    t = target.table("09")
    with engine.connect() as conn:
        return conn.execute(sa.select(t.c.ID).where(t.c.taskNo == f"YH{key:08d}")).scalar_one()


def test_a_faithful_load_agrees(loaded):
    engine, mapping, _ = loaded
    [r] = reconcile.reconcile(engine, mapping)
    assert (r.state, r.source_valid, r.target_active, r.table) == ("agree", 3, 3, "hidden_danger")
    assert r.missing == r.extra == r.differing == r.not_ingested == []
    assert len(rows_of(engine.url.render_as_string(False), "ingest_batch")) == 1  # nothing written


def test_a_changed_field_differs_with_the_field_named_and_masked(loaded):
    engine, mapping, source = loaded
    write_source(source, "t_hidden_danger", [
        hidden_danger_row(1, checker="赵六", problem="压力表损坏"), hidden_danger_row(2), hidden_danger_row(3)])
    [r] = reconcile.reconcile(engine, mapping)
    assert r.state == "differ" and r.differing_count == 1 and r.missing_count == r.extra_count == 0
    diffs = {d.field: d for d in r.differing}
    assert set(diffs) == {"checkMan", "mainProblem"}
    assert (diffs["checkMan"].source, diffs["checkMan"].target) == ("赵*", "张*")
    assert (diffs["mainProblem"].source, diffs["mainProblem"].target) == ("压力表损坏", "安全阀校验过期 1")
    assert diffs["checkMan"].id == _id_of(engine, 1) and diffs["checkMan"].source_key == "1"
    assert "赵六" not in json.dumps(r.to_dict(), ensure_ascii=False)


def test_a_record_gone_from_the_target_is_missing_and_one_gone_from_the_source_is_extra(loaded):
    engine, mapping, source = loaded
    t = target.table("09")
    gone_from_target = _id_of(engine, 2)
    with engine.begin() as conn:
        conn.execute(sa.delete(t).where(t.c.ID == gone_from_target))
    write_source(source, "t_hidden_danger", [hidden_danger_row(1), hidden_danger_row(2)])
    [r] = reconcile.reconcile(engine, mapping)
    assert r.state == "differ"
    assert (r.missing, r.missing_count) == (["2"], 1)
    assert (r.extra, r.extra_count) == ([_id_of(engine, 3)], 1)
    assert (r.source_valid, r.target_active, r.differing_count) == (2, 2, 0)


def test_a_record_marked_deleted_in_the_target_is_missing(loaded):
    engine, mapping, _ = loaded
    t, third = target.table("09"), _id_of(engine, 3)
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.ID == third).values(busType="D"))
    [r] = reconcile.reconcile(engine, mapping)
    assert r.state == "differ" and r.missing == ["3"] and r.extra == []


def test_rejected_source_rows_are_listed_not_ingested_never_hidden(db_url, tmp_path, monkeypatch):
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger",
                 [hidden_danger_row(i, check_date="2024-02-30") for i in range(1, 5)])
    mapping = hidden_danger_mapping(tmp_path, monkeypatch, source)
    engine = target.connect(db_url)
    [run] = pipeline.run_mapping(engine, mapping)
    assert run.counts.rejected == 4 and run.counts.inserted == 0
    [r] = reconcile.reconcile(engine, mapping)
    assert (r.source_valid, r.target_active, r.not_ingested_count) == (0, 0, 4)
    assert r.state == "agree"  # the target rightly lacks them; listed, not hidden:
    assert sorted(k for k, *_ in r.not_ingested) == ["1", "2", "3", "4"]
    assert all(rule == "checkDate:date" and "2024-02-30" in msg for _, rule, msg in r.not_ingested)
    engine.dispose()


def test_results_are_saved_and_the_latest_read_back(loaded):
    engine, mapping, source = loaded
    reconcile.save(engine, "first", reconcile.reconcile(engine, mapping))
    write_source(source, "t_hidden_danger", [hidden_danger_row(1, checker="赵六"), hidden_danger_row(2),
                                             hidden_danger_row(4, check_date="2024-02-30")])
    reconcile.save(engine, "second", reconcile.reconcile(engine, mapping))
    [last] = reconciled.latest(engine)
    assert (last["runId"], last["orgNo"], last["txCode"], last["state"]) == ("second", ORG_A, "09", "differ")
    assert (last["sourceValid"], last["targetActive"], last["missing"], last["differing"],
            last["extra"], last["notIngested"]) == (2, 3, 0, 1, 1, 1)
    assert last["table"] == "hidden_danger" and last["checkedAt"].utcoffset().total_seconds() == 8 * 3600
    details = last["details"]
    assert details["differing"] == [{"id": _id_of(engine, 1), "source_key": "1", "field": "checkMan",
                                     "source": "赵*", "target": "张*"}]
    assert details["extra"] == [_id_of(engine, 3)] and details["not_ingested"][0][:2] == ["4", "checkDate:date"]


def test_examples_are_capped_but_counts_exact(sqlite_url, tmp_path, monkeypatch):
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 251)])
    mapping = hidden_danger_mapping(tmp_path, monkeypatch, source)
    engine = target.connect(sqlite_url)
    [r] = reconcile.reconcile(engine, mapping, chunk_rows=64)
    assert r.missing_count == 250 and len(r.missing) == reconcile.CAP and r.missing[0] == "1"
    engine.dispose()


def test_the_command_prints_differences_masked_saves_and_exits_1(loaded, capsys):
    engine, mapping, source = loaded
    url = engine.url.render_as_string(hide_password=False)
    assert main(["reconcile", str(mapping.path), "--target", url]) == 0
    assert "agree" in capsys.readouterr().out
    write_source(source, "t_hidden_danger", [hidden_danger_row(1, checker="赵六"), hidden_danger_row(2),
                                             hidden_danger_row(3), hidden_danger_row(4, check_date="x")])
    assert main(["reconcile", str(mapping.path), "--target", url]) == 1
    out = capsys.readouterr().out
    assert "differ" in out and "checkMan: '赵*' -> '张*'" in out and "赵六" not in out
    assert "checkDate:date" in out and "1 not ingested" in out
    assert main(["reconcile", str(mapping.path), "--target", url, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["datasets"][0]["state"] == "differ" and doc["datasets"][0]["not_ingested_count"] == 1
    assert len(reconciled.latest(engine)) == 1 and len(rows_of(url, "ingest_reconcile")) == 3


def test_a_target_at_0004_gains_ingest_reconcile(db_url):
    """0005 on a target made before it: the table and ingest_run's index are added in place."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = target.connect(db_url)
    target.upgrade(engine)
    with engine.begin() as conn:
        target.ingest_reconcile.drop(conn)
        conn.execute(sa.text("DROP INDEX ix_ingest_run_latest" + (" ON ingest_run" if conn.dialect.name
                                                                    in ("mysql", "mariadb") else "")))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0004'"))
    assert target.upgrade(engine) == ("0004", target.head_revision())
    with engine.connect() as conn:
        assert [d for d in compare_metadata(MigrationContext.configure(conn), target.metadata)
                if d[0] != "remove_table"] == []
    engine.dispose()
