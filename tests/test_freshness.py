"""Timeliness (4.2, 5.4): on time, late, failing, never-loaded and pending units, from ingest_run
and the mapping files, on all three targets; `etl freshness --fail-late` for monitoring."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from etl import pipeline, target
from etl.cli import main
from etl.common import clock
from etl.common.errors import ConfigError
from etl.mapping import Mapping, load_mapping
from etl.report import freshness
from helpers import (BROKEN_MAPPING, hidden_danger_mapping_text, hidden_danger_row, org_no,
                     write_source)

ON_TIME, LATE, FAILING, NEVER, GONE = (org_no(f"9132011{n}MA1R7KX30") for n in range(5))
NOW = clock.now()
LONG_AGO = NOW - timedelta(days=30)  # a mapping file in place since long before the test


def _age(path: Path, when: datetime) -> Path:
    """Set a file's modification time: when its mapping appeared, for freshness."""
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def _run_row(org: str, status: str, started, *, mapping: str = "m", message: str | None = None,
             extracted: int = 5, rejected: int = 1) -> dict:
    return {"runId": "t", "orgNo": org, "txCode": "09", "mapping": mapping, "mode": "full",
            "status": status, "extracted": extracted, "inserted": 0, "updated": 0, "deleted": 0,
            "unchanged": 0, "rejected": rejected, "duplicates": 0, "warnings": 0,
            "message": message, "startedAt": started, "endedAt": started + timedelta(minutes=1)}


@pytest.fixture
def units(tmp_path, monkeypatch) -> Path:
    """A mappings folder: four units delivering hidden dangers (09, daily) and a broken file,
    all in place for a month (so a unit never loaded is overdue, not pending)."""
    folder = tmp_path / "mappings"
    folder.mkdir()
    source = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_source(source, "t_hidden_danger", [hidden_danger_row(i) for i in range(1, 4)])
    monkeypatch.setenv("UNIT_A_SOURCE_URL", source)
    for name, org in (("a_on_time", ON_TIME), ("b_late", LATE), ("c_failing", FAILING),
                      ("d_never", NEVER)):
        (folder / f"{name}.yaml").write_text(hidden_danger_mapping_text(org, name=f"单位{name}"),
                                             encoding="utf-8")
    (folder / "e_broken.yaml").write_text(BROKEN_MAPPING, encoding="utf-8")
    for path in folder.iterdir():
        _age(path, LONG_AGO)
    return folder


def _seed(url: str, folder: Path) -> sa.Engine:
    """a: loaded now; b: last success 3 days ago; c: a success, then a failed run; d: nothing;
    an orgNo without a mapping file, loaded 2 days ago."""
    engine = target.connect(url)
    pipeline.run_mapping(engine, load_mapping(folder / "a_on_time.yaml"), now=NOW)
    with engine.begin() as conn:
        conn.execute(sa.insert(target.ingest_run), [
            _run_row(LATE, "success", NOW - timedelta(days=3), extracted=7, rejected=2),
            _run_row(FAILING, "success", NOW - timedelta(hours=2)),
            _run_row(FAILING, "failed", NOW - timedelta(hours=1),
                     message="cannot connect to the source: check UNIT_C_SOURCE_URL"),
            _run_row(GONE, "success", NOW - timedelta(days=2), mapping="gone"),
        ])
    return engine


def test_every_unit_gets_its_status(db_url, units):
    engine = _seed(db_url, units)
    found = freshness.statuses(engine, freshness.load_units(units), now=NOW)
    by_org = {(s.org_no, s.mapping): s for s in found}
    a = by_org[ON_TIME, "a_on_time"]
    assert (a.status, a.records, a.extracted, a.tx_code, a.frequency) == ("on_time", 3, 3, "09", "daily")
    assert a.com_name == "单位a_on_time" and a.last_success.utcoffset() == timedelta(hours=8)
    assert abs(a.last_success - NOW) < timedelta(minutes=5)
    b = by_org[LATE, "b_late"]
    assert (b.status, b.rejected, b.extracted, b.records) == ("late", 2, 7, 0)
    assert abs(b.last_success - (NOW - timedelta(days=3))) < timedelta(seconds=1)
    c = by_org[FAILING, "c_failing"]
    assert c.status == "failing" and "UNIT_C_SOURCE_URL" in c.message and c.last_success is not None
    d = by_org[NEVER, "d_never"]
    assert (d.status, d.last_success, d.last_run, d.message) == ("never", None, None, None)
    broken = [s for s in found if s.mapping == "e_broken"]
    assert len(broken) == 1 and broken[0].tx_code == "" and broken[0].status == "failing"
    assert "e_broken.yaml" in broken[0].message
    gone = by_org[GONE, ""]
    assert gone.status == "late" and gone.com_name == ""
    assert len(found) == 6
    engine.dispose()


def test_a_grace_wide_enough_makes_late_on_time(sqlite_url, units):
    engine = _seed(sqlite_url, units)
    found = freshness.statuses(engine, freshness.load_units(units), now=NOW, grace=timedelta(days=3))
    assert {s.org_no: s.status for s in found}[LATE] == "on_time"
    engine.dispose()


def test_the_grace_comes_from_the_environment(monkeypatch):
    assert freshness.default_grace("daily") == timedelta(hours=6)
    assert freshness.default_grace("weekly") == timedelta(days=1)
    assert freshness.default_grace("15min") == timedelta(minutes=15)
    assert freshness.period("hourly") == timedelta(hours=1)
    monkeypatch.setenv("ETL_FRESHNESS_GRACE_HOURS", "48")
    assert freshness.default_grace("daily") == timedelta(hours=48)
    monkeypatch.setenv("ETL_FRESHNESS_GRACE_HOURS", "soon")
    with pytest.raises(ConfigError, match="ETL_FRESHNESS_GRACE_HOURS"):
        freshness.default_grace("daily")


def test_a_weekly_dataset_is_on_time_for_a_week(sqlite_url, tmp_path):
    engine = target.connect(sqlite_url)
    target.ensure_schema(engine)
    path = tmp_path / "w.yaml"
    path.write_text(hidden_danger_mapping_text(ON_TIME).replace(
        "    key: [id]", "    key: [id]\n    frequency: weekly"), encoding="utf-8")
    with engine.begin() as conn:
        conn.execute(sa.insert(target.ingest_run), [_run_row(ON_TIME, "success", NOW - timedelta(days=5))])
    [s] = freshness.statuses(engine, [load_mapping(path)], now=NOW)
    assert (s.frequency, s.status) == ("weekly", "on_time")
    [s] = freshness.statuses(engine, [load_mapping(path)], now=NOW + timedelta(days=3, hours=1))
    assert s.status == "late"
    engine.dispose()


def test_fail_late_exits_1_when_a_unit_is_late_or_failing(sqlite_url, units, capsys):
    _seed(sqlite_url, units).dispose()
    args = ["freshness", "--mappings-dir", str(units), "--target", sqlite_url]
    assert main(args) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith(("a_", "b_", "c_", "d_", "e_"))]
    assert [ln.split()[0] for ln in lines] == ["c_failing", "e_broken", "b_late", "d_never", "a_on_time"]
    assert "6 dataset(s): 2 failing, 2 late, 1 never, 0 pending, 1 on time" in out
    assert main([*args, "--fail-late"]) == 1


def test_fail_late_passes_when_every_mapped_unit_is_on_time(sqlite_url, units, capsys):
    _seed(sqlite_url, units).dispose()
    for name in ("b_late", "c_failing", "d_never", "e_broken"):
        (units / f"{name}.yaml").unlink()
    # units known only from the target (their mappings gone) are listed, but not counted
    assert main(["freshness", "--mappings-dir", str(units), "--target", sqlite_url, "--fail-late"]) == 0
    assert "4 dataset(s): 1 failing, 2 late, 0 never, 0 pending, 1 on time" in capsys.readouterr().out


def _empty_target(url: str) -> None:
    """A target as `etl init-target` leaves it: the schema, nothing loaded (freshness never
    creates one: a mistyped --target is an error, not a target where nothing was ever loaded)."""
    assert main(["-q", "init-target", "--target", url]) == 0


def test_never_loaded_counts_as_late_for_fail_late(sqlite_url, units):
    _empty_target(sqlite_url)
    for name in ("a_on_time", "b_late", "c_failing", "e_broken"):
        (units / f"{name}.yaml").unlink()
    assert main(["freshness", "--mappings-dir", str(units), "--target", sqlite_url, "--fail-late"]) == 1


def test_json_lists_every_status(sqlite_url, units, capsys):
    import json

    _seed(sqlite_url, units).dispose()
    (units / "f_new.yaml").write_text(hidden_danger_mapping_text(org_no("91320117MA1R7KX30")),
                                      encoding="utf-8")  # just onboarded: pending
    assert main(["freshness", "--mappings-dir", str(units), "--target", sqlite_url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in rows} == set(freshness.STATUSES)
    assert rows[0]["status"] == "failing"
    pending = [r for r in rows if r["status"] == "pending"]
    assert pending and all(r["due"] and r["message"].startswith("first load due by") for r in pending)
    assert all(r["due"] is None for r in rows if r["status"] != "pending")


def test_thousands_of_units_cost_a_bounded_number_of_statements(db_url, tmp_path):
    path = tmp_path / "unit.yaml"
    path.write_text(hidden_danger_mapping_text(), encoding="utf-8")
    model = load_mapping(path).model
    orgs = [org_no(f"91320115MA{i:07d}") for i in range(2000)]
    mappings = [Mapping(Path(f"u{i:04d}.yaml"), model.model_copy(
        update={"unit": model.unit.model_copy(update={"orgNo": org})})) for i, org in enumerate(orgs)]
    engine = target.connect(db_url)
    target.ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(target.ingest_run), [
            _run_row(org, "success" if i % 4 else "failed", NOW - timedelta(days=i % 3))
            for i, org in enumerate(orgs) if i % 5])
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    found = freshness.statuses(engine, mappings, now=NOW)
    assert len(found) == 2000 and len(statements) <= 4, statements
    counts = {k: sum(1 for s in found if s.status == k) for k in freshness.STATUSES}
    assert counts["never"] == 400 and counts["failing"] == 400
    assert counts["on_time"] + counts["late"] == 1200
    engine.dispose()


# --- pending first load: freshness speaks about data, not about the deployment ---------------

FRESH = org_no("91320118MA1R7KX30")


def _weekly(text: str) -> str:
    return text.replace("    key: [id]", "    key: [id]\n    frequency: weekly")


def _one(engine: sa.Engine, path: Path, now=NOW) -> freshness.DatasetStatus:
    [s] = freshness.statuses(engine, [load_mapping(path)], now=now)
    return s


def test_a_dataset_is_pending_until_its_first_load_is_due_then_never(sqlite_url, tmp_path):
    engine = target.connect(sqlite_url)
    daily = tmp_path / "daily.yaml"
    daily.write_text(hidden_danger_mapping_text(FRESH), encoding="utf-8")
    # daily: a period (1 day) plus the grace (6 h) after the mapping appeared
    s = _one(engine, _age(daily, NOW - timedelta(hours=29)))
    assert (s.status, s.last_success, s.last_run) == ("pending", None, None)
    due = NOW - timedelta(hours=29) + timedelta(hours=30)
    assert s.message == f"first load due by {due:%Y-%m-%d %H:%M} CST"
    assert not freshness.needs_attention(s)
    s = _one(engine, _age(daily, NOW - timedelta(hours=31)))
    assert (s.status, s.message) == ("never", None) and freshness.needs_attention(s)
    # weekly: 7 days plus a day
    weekly = tmp_path / "weekly.yaml"
    weekly.write_text(_weekly(hidden_danger_mapping_text(FRESH)), encoding="utf-8")
    assert _one(engine, _age(weekly, NOW - timedelta(days=7, hours=23))).status == "pending"
    assert _one(engine, _age(weekly, NOW - timedelta(days=8, hours=1))).status == "never"
    # the grace is the one freshness uses everywhere
    assert freshness.statuses(engine, [load_mapping(weekly)], now=NOW,
                              grace=timedelta(days=2))[0].status == "pending"
    engine.dispose()


def test_a_failed_first_run_is_failing_not_pending(sqlite_url, tmp_path):
    engine = target.connect(sqlite_url)
    target.ensure_schema(engine)
    path = tmp_path / "u.yaml"
    path.write_text(hidden_danger_mapping_text(FRESH), encoding="utf-8")
    assert _one(engine, _age(path, NOW)).status == "pending"
    with engine.begin() as conn:
        conn.execute(sa.insert(target.ingest_run), [_run_row(
            FRESH, "failed", NOW - timedelta(minutes=5), message="no such table t_hidden_danger")])
    s = _one(engine, path)
    assert (s.status, s.message) == ("failing", "no such table t_hidden_danger")
    assert freshness.needs_attention(s)
    engine.dispose()


def test_a_changed_template_makes_its_units_never_loaded_datasets_pending(sqlite_url, tmp_path):
    """Unit -> systems/v2.yaml -> systems/base.yaml: the newest file of the chain is when the
    unit's mapping took its form; a dataset already loaded keeps its own status."""
    folder = tmp_path / "mappings"
    (folder / "systems").mkdir(parents=True)
    body = hidden_danger_mapping_text(FRESH).split("\n", 2)[2]  # without unit: and source:
    (folder / "systems" / "base.yaml").write_text(body, encoding="utf-8")
    (folder / "systems" / "v2.yaml").write_text("extends: systems/base.yaml\n", encoding="utf-8")
    for n, org in ((1, FRESH), (2, LATE)):
        (folder / f"unit{n}.yaml").write_text(
            f'extends: systems/v2.yaml\nunit: {{orgNo: "{org}", comName: 单位{n}}}\n'
            f"source: {{url_env: UNIT_A_SOURCE_URL}}\n", encoding="utf-8")
    for path in [*folder.glob("*.yaml"), *folder.glob("systems/*.yaml")]:
        _age(path, LONG_AGO)
    engine = target.connect(sqlite_url)
    target.ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(target.ingest_run), [_run_row(LATE, "success", NOW - timedelta(days=3))])

    def status() -> dict[str, str]:
        units = freshness.load_units(folder)
        assert [rel for rel, _sha in units[0].templates] == ["systems/v2.yaml", "systems/base.yaml"]
        return {s.org_no: s.status for s in freshness.statuses(engine, units, now=NOW)}

    assert status() == {FRESH: "never", LATE: "late"}
    _age(folder / "systems" / "base.yaml", NOW - timedelta(hours=1))  # the deepest template changed
    assert status() == {FRESH: "pending", LATE: "late"}
    engine.dispose()


def test_fail_late_passes_while_datasets_are_only_pending(sqlite_url, tmp_path, capsys):
    """A fresh deployment: every unit just onboarded, nothing loaded yet, nothing late."""
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "daily.yaml").write_text(hidden_danger_mapping_text(FRESH), encoding="utf-8")
    (folder / "weekly.yaml").write_text(_weekly(hidden_danger_mapping_text(NEVER)), encoding="utf-8")
    _empty_target(sqlite_url)
    args = ["freshness", "--mappings-dir", str(folder), "--target", sqlite_url, "--fail-late"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 dataset(s): 0 failing, 0 late, 0 never, 2 pending, 0 on time" in out
    assert "first load due by" in out
    _age(folder / "daily.yaml", LONG_AGO)  # a month on, still nothing: the daily one is overdue
    assert main(args) == 1
    assert "2 dataset(s): 0 failing, 0 late, 1 never, 1 pending, 0 on time" in capsys.readouterr().out
