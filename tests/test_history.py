"""A unit's life between runs (issue 21), from the target's memory of each dataset
(`etl.target.history`): a dataset never loaded under its key is loaded in full by an incremental run,
the first incremental after a full load reads only what changed since it, a gap left by failed
days is read again, rows deleted at the source become D by comparing keys, and a source that
suddenly lacks most of its records marks nothing until a person confirms.

Sources are real SQLite, PostgreSQL and MariaDB databases (`db_url`); the target is SQLite.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import hidden_danger_mapping_text, hidden_danger_row, rows_of, write_source

from etl import pipeline, target
from etl.common import clock
from etl.common.errors import MassDeleteRefused
from etl.mapping import load_mapping
from etl.target import load

OLD = datetime(2024, 1, 10, 9, 0)          # when the source's rows last changed, long ago
DAY1 = datetime(2024, 6, 1, 10, 0, tzinfo=clock.CST)   # a first run
DAY2 = DAY1 + timedelta(days=1)


def _table(url: str, rows: list[dict]) -> None:
    """(Re)create the source's t_hidden_danger with a real TIMESTAMP update column."""
    write_source(url, "t_hidden_danger", rows, timestamps=("modify_time",))


def _rows(ids, when: datetime = OLD) -> list[dict]:
    return [hidden_danger_row(i, modify_time=when) for i in ids]


def _touch(url: str, ids, when: datetime, problem: str = "复查发现新问题") -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for i in ids:
            conn.execute(sa.text("UPDATE t_hidden_danger SET modify_time = :w, problem = :p "
                                 "WHERE id = :i"), {"w": when, "p": f"{problem} {i}", "i": i})
    engine.dispose()


def _delete(url: str, ids) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM t_hidden_danger WHERE id IN ({', '.join(map(str, ids))})"))
    engine.dispose()


@pytest.fixture
def unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A unit file whose hidden dangers come from the source in UNIT_A_SOURCE_URL; `extra`
    is appended under the dataset (e.g. `hard_deletes: weekly`)."""
    def make(source: str, extra: str = "", key: str = "[id]"):
        monkeypatch.setenv("UNIT_A_SOURCE_URL", source)
        text = hidden_danger_mapping_text().replace("    key: [id]\n", f"    key: {key}\n{extra}")
        path = tmp_path / "南京某某化工.yaml"
        path.write_text(text, encoding="utf-8")
        return load_mapping(path)
    return make


@pytest.fixture
def tgt(tmp_path: Path):
    engine = target.connect(f"sqlite:///{tmp_path / 'target.sqlite'}")
    yield engine
    engine.dispose()


def _run(engine, mapping, **kw) -> pipeline.DatasetResult:
    return pipeline.run_dataset(engine, mapping, "09", **kw)


def _runs(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            sa.select(target.ingest_run).order_by(target.ingest_run.c.runKey))]


def _active(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            'SELECT "taskNo" FROM hidden_danger WHERE "busType" != \'D\'')).scalars())


# --- first loads ------------------------------------------------------------------------------


def test_a_scheduled_run_of_a_dataset_never_loaded_loads_it_in_full_and_says_why(
        sqlite_url: str, unit, tgt) -> None:
    _table(sqlite_url, _rows(range(1, 21)))  # every row changed long before the window
    m = unit(sqlite_url, key="[task_no]")
    first = _run(tgt, m, mode="incremental", since=DAY1 - timedelta(days=1), until=DAY1, now=DAY1,
                 scheduled=True)
    assert (first.mode, first.counts.extracted, first.counts.inserted) == ("full", 20, 20)
    assert first.message.startswith("first load")
    run = _runs(tgt)[-1]
    assert (run["mode"], run["windowStart"], run["windowEnd"]) == ("full", None, clock.naive(DAY1))
    assert json.loads(run["keyColumns"]) == ["task_no"]
    assert "first load" in run["message"]

    _touch(sqlite_url, [3], DAY1.replace(tzinfo=None) + timedelta(hours=3))
    second = _run(tgt, m, mode="incremental", since=DAY1, until=DAY2, now=DAY2, scheduled=True)
    assert (second.mode, second.counts.extracted, second.counts.updated) == ("incremental", 1, 1)
    assert second.message == ""


def test_a_window_a_person_gives_is_read_as_given_even_before_the_first_load(
        sqlite_url: str, unit, tgt) -> None:
    _table(sqlite_url, _rows(range(1, 21)))
    r = _run(tgt, unit(sqlite_url), mode="incremental", since=DAY1 - timedelta(days=1),
             until=DAY1, now=DAY1)
    assert (r.mode, r.counts.extracted, r.counts.inserted) == ("incremental", 0, 0)


def test_an_incremental_run_without_a_window_loads_a_newly_mapped_dataset_in_full(
        sqlite_url: str, unit, tgt) -> None:
    _table(sqlite_url, _rows(range(1, 6)))
    r = _run(tgt, unit(sqlite_url), mode="incremental", now=DAY1)
    assert (r.mode, r.counts.inserted) == ("full", 5)


def test_a_changed_record_key_reloads_in_full_replacing_the_records_without_the_guard(
        sqlite_url: str, unit, tgt) -> None:
    _table(sqlite_url, _rows(range(1, 31)))
    _run(tgt, unit(sqlite_url), mode="full", now=DAY1)
    before = {r["taskNo"]: r["ID"] for r in rows_of(f"sqlite:///{tgt.url.database}", "hidden_danger")}

    r = _run(tgt, unit(sqlite_url, key="[task_no]"), mode="incremental", now=DAY2, scheduled=True,
             since=DAY1, until=DAY2)
    assert r.status == "success" and r.mode == "full"
    assert '"id"' in r.message and '"task_no"' in r.message and "key changed" in r.message
    assert (r.counts.inserted, r.counts.deleted, r.counts.vanished) == (30, 30, 30)  # all 30 re-identified
    after = rows_of(f"sqlite:///{tgt.url.database}", "hidden_danger")
    assert {x["ID"] for x in after if x["busType"] == "D"} == set(before.values())
    assert _active(tgt) == set(before)


# --- where an incremental run starts ------------------------------------------------------------


def test_the_first_incremental_after_a_full_load_reads_only_what_changed_since_it(
        db_url: str, unit, tgt) -> None:
    """On every source kind: the full load records when its snapshot was read (windowEnd), and
    the next incremental run without a window starts there, less the lookback: `extracted`
    counts the changed rows, not the table."""
    _table(db_url, _rows(range(1, 51)))
    m = unit(db_url)
    full = _run(tgt, m, mode="full", now=DAY1)
    assert full.counts.extracted == 50
    changed = DAY1.replace(tzinfo=None) + timedelta(hours=5)
    _touch(db_url, [7, 8, 9], changed)
    r = _run(tgt, m, mode="incremental", now=DAY2)
    assert r.mode == "incremental"
    assert r.window == (clock.naive(DAY1), clock.naive(DAY2))
    assert (r.counts.extracted, r.counts.updated, r.counts.unchanged) == (3, 3, 0)
    assert _runs(tgt)[-1]["extracted"] == 3


def test_a_scheduled_window_after_failed_days_reads_from_where_the_last_load_ended(
        sqlite_url: str, unit, tgt) -> None:
    _table(sqlite_url, _rows(range(1, 11)))
    m = unit(sqlite_url, extra="    lookback_hours: 0\n")
    _run(tgt, m, mode="full", now=DAY1)
    _touch(sqlite_url, [2], DAY1.replace(tzinfo=None) + timedelta(days=1, hours=2))  # a failed day's change
    day5 = DAY1 + timedelta(days=4)
    r = _run(tgt, m, mode="incremental", since=day5 - timedelta(days=1), until=day5, now=day5,
             scheduled=True)
    assert r.window[0] == clock.naive(DAY1) and r.counts.updated == 1
    assert "where the last successful load ended" in r.message

    backfill = _run(tgt, m, mode="incremental", since=DAY1 - timedelta(days=3),
                    until=DAY1 - timedelta(days=2), now=day5, scheduled=True)
    assert backfill.window[0] == clock.naive(DAY1 - timedelta(days=3))  # an old day stays itself


# --- hard deletes ---------------------------------------------------------------------------


def test_a_row_deleted_at_the_source_becomes_d_on_the_next_incremental_run(
        db_url: str, unit, tgt) -> None:
    """On every source kind: the incremental run reads no row (nothing changed), compares the
    source's keys with the target and marks the two deleted rows D, under a D batch with its
    ledger; the accounting holds (vanished records are not extracted rows)."""
    _table(db_url, _rows(range(1, 31)))
    m = unit(db_url)
    _run(tgt, m, mode="full", now=DAY1)
    _delete(db_url, [4, 17])
    r = _run(tgt, m, mode="incremental", now=DAY2)
    c = r.counts
    assert (r.mode, c.extracted, c.deleted, c.vanished, r.swept) == ("incremental", 0, 2, 2, 28)
    assert c.balanced()
    assert _active(tgt) == {f"YH{i:08d}" for i in range(1, 31)} - {"YH00000004", "YH00000017"}
    url = f"sqlite:///{tgt.url.database}"
    ledger = rows_of(url, "ingest_change", "WHERE \"busType\" = 'D'")
    assert len(ledger) == 2 and {x["batchNo"] for x in ledger} == {c.batches["D"]}
    assert _runs(tgt)[-1]["sweptKeys"] == 28

    again = _run(tgt, m, mode="incremental", now=DAY2 + timedelta(hours=1))
    assert (again.counts.deleted, again.counts.batches) == (0, {})  # nothing marked twice


def test_a_row_changed_and_a_row_deleted_in_one_run_are_u_and_d(sqlite_url: str, unit, tgt) -> None:
    _table(sqlite_url, _rows(range(1, 31)))
    m = unit(sqlite_url)
    _run(tgt, m, mode="full", now=DAY1)
    _touch(sqlite_url, [1], DAY1.replace(tzinfo=None) + timedelta(hours=1))
    _delete(sqlite_url, [2])
    r = _run(tgt, m, mode="incremental", now=DAY2)
    assert (r.counts.updated, r.counts.deleted, r.counts.extracted) == (1, 1, 1)
    assert set(r.counts.batches) == {"U", "D"}


@pytest.mark.parametrize(("setting", "days", "swept"), [
    ("weekly", 1, False),     # the full load a day ago compared every key already
    ("weekly", 8, True),
    ("daily", 1, True),
    ("never", 30, False),
])
def test_hard_deletes_compares_keys_as_often_as_the_mapping_says(
        sqlite_url: str, unit, tgt, setting: str, days: int, swept: bool) -> None:
    _table(sqlite_url, _rows(range(1, 31)))
    m = unit(sqlite_url, extra=f"    hard_deletes: {setting}\n")
    _run(tgt, m, mode="full", now=DAY1)
    _delete(sqlite_url, [5])
    r = _run(tgt, m, mode="incremental", now=DAY1 + timedelta(days=days))
    assert (r.swept is not None, r.counts.deleted) == (swept, 1 if swept else 0)


def test_a_key_repeated_at_the_source_keeps_its_record(sqlite_url: str, unit, tgt) -> None:
    _table(sqlite_url, _rows(range(1, 11)) + _rows([3]))  # no unique constraint at the source
    m = unit(sqlite_url)
    _run(tgt, m, mode="full", now=DAY1)
    r = _run(tgt, m, mode="incremental", now=DAY2)
    assert (r.swept, r.counts.deleted) == (11, 0)


# --- the mass-delete guard ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["incremental", "full"])
def test_a_source_emptied_by_mistake_marks_nothing_and_fails_naming_the_counts(
        db_url: str, unit, tgt, mode: str) -> None:
    _table(db_url, _rows(range(1, 31)))
    m = unit(db_url)
    _run(tgt, m, mode="full", now=DAY1)
    _table(db_url, [])  # emptied: a truncated table, a view gone wrong
    url = f"sqlite:///{tgt.url.database}"
    batches = len(rows_of(url, "ingest_batch"))
    with pytest.raises(MassDeleteRefused, match=r"returned 0 (keys|rows) where the target holds 30 "
                       r"active records of this unit: 30 \(all\) would be marked deleted.*"
                       r"--allow-mass-delete.*allow_mass_delete"):
        _run(tgt, m, mode=mode, now=DAY2)
    assert len(_active(tgt)) == 30 and len(rows_of(url, "ingest_batch")) == batches
    failed = _runs(tgt)[-1]
    assert failed["status"] == "failed" and "allow-mass-delete" in failed["message"]

    r = _run(tgt, m, mode=mode, now=DAY2, allow_mass_delete=True)
    assert (r.counts.deleted, _active(tgt)) == (30, set())


@pytest.mark.parametrize(("deleted", "refused"), [(9, False), (12, False), (13, True)])
def test_the_guard_lets_everyday_deletions_through_and_stops_more_than_a_fifth(
        sqlite_url: str, unit, tgt, deleted: int, refused: bool) -> None:
    """Of 60 active records, 12 (a fifth) may vanish in one run; 13 need a person's word."""
    assert load.MASS_DELETE_SHARE == 0.2 and load.MASS_DELETE_MIN == 10
    _table(sqlite_url, _rows(range(1, 61)))
    m = unit(sqlite_url)
    _run(tgt, m, mode="full", now=DAY1)
    _delete(sqlite_url, range(1, deleted + 1))
    if refused:
        with pytest.raises(MassDeleteRefused, match=r"47 keys where the target holds 60 .* 13 "
                                                    r"\(more than 20%\)"):
            _run(tgt, m, mode="incremental", now=DAY2)
    else:
        assert _run(tgt, m, mode="incremental", now=DAY2).counts.deleted == deleted


def test_mass_delete_needs_both_the_share_and_the_minimum_unless_the_source_is_empty() -> None:
    assert not load.mass_delete(9, 10, 1)          # 90%, but fewer than 10 records
    assert load.mass_delete(10, 20, 10)            # 50% and 10 records
    assert not load.mass_delete(10, 50, 40)        # 20% exactly: not more than a fifth
    assert load.mass_delete(1, 1, 0)               # an empty source: any deletion
    assert not load.mass_delete(0, 10, 0)
    assert not load.mass_delete(30, 30, 30, rekeyed=True)  # a new key replaces every record
    assert load.mass_delete(30, 30, 0, rekeyed=True)


def test_the_cli_refuses_a_mass_delete_in_one_line_and_takes_the_confirmation(
        sqlite_url: str, unit, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from etl.cli import main

    _table(sqlite_url, _rows(range(1, 31)))
    m = unit(sqlite_url)
    tgt_url = f"sqlite:///{tmp_path / 'cli-target.sqlite'}"
    assert main(["-q", "run", str(m.path), "--target", tgt_url]) == 0
    _table(sqlite_url, _rows(range(1, 11)))  # 20 of 30 gone
    capsys.readouterr()
    assert main(["-q", "run", str(m.path), "--mode", "incremental", "--target", tgt_url]) == 1
    out = capsys.readouterr()
    assert "20 (more than 20%) would be marked deleted" in out.out + out.err
    assert main(["-q", "run", str(m.path), "--mode", "incremental", "--allow-mass-delete",
                 "--target", tgt_url]) == 0
    assert len(rows_of(tgt_url, "hidden_danger", "WHERE \"busType\" = 'D'")) == 20


def test_runs_recorded_before_keys_were_count_as_loaded(sqlite_url: str, unit, tgt) -> None:
    """A target upgraded to migration 0009 has runs without keyColumns: they count as loaded
    under the current key, so the upgrade starts no full loads."""
    _table(sqlite_url, _rows(range(1, 11)))
    m = unit(sqlite_url)
    _run(tgt, m, mode="full", now=DAY1)
    with tgt.begin() as conn:
        conn.execute(sa.update(target.ingest_run).values(keyColumns=None))
    r = _run(tgt, m, mode="incremental", now=DAY2)
    assert r.mode == "incremental" and r.counts.extracted == 0


def test_a_hard_delete_becomes_d_in_every_kind_of_target(db_url: str, tmp_path: Path,
                                                         unit) -> None:
    """The key comparison's temporary table and anti-join on PostgreSQL (COPY), MariaDB and
    SQLite targets."""
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    _table(source, _rows(range(1, 41)))
    m = unit(source)
    engine = target.connect(db_url)
    try:
        _run(engine, m, mode="full", now=DAY1)
        _delete(source, [3, 30])
        r = _run(engine, m, mode="incremental", now=DAY2)
        assert (r.counts.deleted, r.counts.vanished, r.swept) == (2, 2, 38)
        again = _run(engine, m, mode="incremental", now=DAY2 + timedelta(hours=1))
        assert (again.counts.deleted, again.swept) == (0, 38)
        assert sum(r["busType"] == "D" for r in rows_of(db_url, "hidden_danger")) == 2
    finally:
        engine.dispose()


def test_a_very_long_key_is_recorded_by_its_digest() -> None:
    from etl.target import history

    long = [f"列{n:03d}_" + "很长的列名" * 5 for n in range(40)]
    recorded = history.key_columns(long)
    assert recorded.startswith("sha256:") and len(recorded) <= 500
    assert recorded == history.key_columns(list(long)) != history.key_columns(long[:-1])
