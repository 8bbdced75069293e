"""Planning an Airflow run (etl.orchestration.planning): which units and datasets, their windows, the shards.

No data moves here: these tests read mapping files only (and write them, for a province of
10,000 units)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import BROKEN_MAPPING
import yaml
from stdnum.cn import uscc

from etl.common.errors import ConfigError
from etl.orchestration import planning

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
CST = ZoneInfo("Asia/Shanghai")
DAILY, WEEKLY = ("06", "07", "09"), ("01", "02", "03", "04", "05", "08")


def _pairs(plan: planning.RunPlan) -> list[tuple[str, str]]:
    return [(u.name, d["tx"]) for s in plan.shards for u in s.units for d in u.datasets]


def _windows(plan: planning.RunPlan) -> set[tuple]:
    return {(d["since"], d["until"]) for s in plan.shards for u in s.units for d in u.datasets}


def test_daily_and_weekly_take_the_standards_frequencies() -> None:
    daily = _pairs(planning.plan_run("daily", mappings=MAPPINGS))
    weekly = _pairs(planning.plan_run("weekly", mappings=MAPPINGS))
    for unit in ("demo_jinling_chem", "demo_suzhou_lift"):
        assert sorted(tx for u, tx in daily if u == unit) == list(DAILY)
        assert sorted(tx for u, tx in weekly if u == unit) == list(WEEKLY)
    assert planning.plan_run("frequent", mappings=MAPPINGS).shards == []


def test_windows_come_from_the_data_interval_unless_params_give_them() -> None:
    start, end = datetime(2025, 3, 1, tzinfo=CST), datetime(2025, 3, 2, tzinfo=CST)
    plan = planning.plan_run("daily", mappings=MAPPINGS, interval=(start, end), dag_id="d",
                             run_id="scheduled__x")
    assert _windows(plan) == {("2025-03-01T00:00:00+08:00", "2025-03-02T00:00:00+08:00")}
    assert (plan.mode, plan.run_id) == ("incremental", "airflow__d__scheduled__x")
    manual = planning.plan_run("daily", mappings=MAPPINGS, interval=(start, end), params={
        "mode": "full", "since": "2025-01-01", "until": "2025-01-05T12:00:00+00:00"})
    assert _windows(manual) == {("2025-01-01T00:00:00+08:00", "2025-01-05T20:00:00+08:00")}
    assert manual.mode == "full"
    # no interval (a manual run without logical date), or resume: each dataset from its last run
    assert _windows(planning.plan_run("daily", mappings=MAPPINGS)) == {(None, None)}
    resumed = planning.plan_run("daily", mappings=MAPPINGS, interval=(start, end),
                                params={"resume": True})
    assert _windows(resumed) == {(None, None)}


def test_units_are_chosen_by_file_name_orgno_or_pattern() -> None:
    by_name = planning.plan_run("daily", mappings=MAPPINGS, params={
        "units": ["demo_suzhou_lift"], "tx_codes": ["6", "09"]})
    assert _pairs(by_name) == [("demo_suzhou_lift", "06"), ("demo_suzhou_lift", "09")]
    by_org = planning.plan_run("daily", mappings=MAPPINGS, params={"units": ["91320506ma1w3l8p7l"]})
    assert {u for u, _ in _pairs(by_org)} == {"demo_suzhou_lift"}
    by_pattern = planning.plan_run("daily", mappings=MAPPINGS, params={"units": ["demo_*"]})
    assert {u for u, _ in _pairs(by_pattern)} == {"demo_jinling_chem", "demo_suzhou_lift"}


def test_unknown_units_and_bad_params_say_what_to_do() -> None:
    with pytest.raises(ConfigError, match=r"no mapping file or orgNo nope, 南京\* .*demo_jinling_chem"):
        planning.plan_run("daily", mappings=MAPPINGS, params={"units": ["nope", "南京*"]})
    with pytest.raises(ConfigError, match="mode='sometimes'"):
        planning.plan_run("daily", mappings=MAPPINGS, params={"mode": "sometimes"})
    with pytest.raises(ConfigError, match="since='yesterday'"):
        planning.plan_run("daily", mappings=MAPPINGS, params={"since": "yesterday"})
    with pytest.raises(ConfigError, match="tx_codes.*unknown txCode"):
        planning.plan_run("daily", mappings=MAPPINGS, params={"tx_codes": ["10"]})
    with pytest.raises(ConfigError, match="units_per_shard=0"):
        planning.plan_run("daily", mappings=MAPPINGS, params={"units_per_shard": 0})


def _with_frequency(folder: Path, overrides: dict[str, str]) -> Path:
    """The suzhou demo mapping with `frequency:` set on some datasets."""
    raw = yaml.safe_load((MAPPINGS / "demo_suzhou_lift.yaml").read_text(encoding="utf-8"))
    for tx, freq in overrides.items():
        raw["datasets"][tx]["frequency"] = freq
    folder.mkdir(exist_ok=True)
    (folder / "fast_unit.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return folder


def test_frequency_overrides_move_datasets_between_dags(tmp_path: Path) -> None:
    folder = _with_frequency(tmp_path / "m", {"06": "hourly", "09": "15min", "01": "daily"})
    assert sorted(tx for _, tx in _pairs(planning.plan_run("daily", mappings=folder))) == ["01", "07"]
    assert "01" not in [tx for _, tx in _pairs(planning.plan_run("weekly", mappings=folder))]

    def tick(hh: int, mm: int) -> list[tuple]:
        end = datetime(2025, 3, 1, hh, mm, tzinfo=CST)
        plan = planning.plan_run("frequent", mappings=folder, interval=(end - timedelta(minutes=5), end))
        return [(d["tx"], d["since"], d["until"]) for s in plan.shards for u in s.units for d in u.datasets]

    assert tick(10, 0) == [("06", "2025-03-01T09:00:00+08:00", "2025-03-01T10:00:00+08:00"),
                           ("09", "2025-03-01T09:45:00+08:00", "2025-03-01T10:00:00+08:00")]
    assert [tx for tx, *_ in tick(10, 15)] == ["09"]
    assert tick(10, 5) == []
    # a manual run without logical date takes every override, from where each last stopped
    assert [(tx, s) for tx, s, _ in [(d["tx"], d["since"], d["until"]) for sh in planning.plan_run(
        "frequent", mappings=folder).shards for u in sh.units for d in u.datasets]] == [
        ("06", None), ("09", None)]




def test_an_invalid_mapping_is_planned_as_a_unit_with_its_problems(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", folder / "good.yaml")
    (folder / "broken.yaml").write_text(BROKEN_MAPPING, encoding="utf-8")
    plan = planning.plan_run("daily", mappings=folder)
    units = {u.name: u for s in plan.shards for u in s.units}
    assert "datasets.06.fields.riskNumber" in units["broken"].problems
    assert (units["broken"].datasets, units["broken"].org_no) == ([], "91320115MA1R7KX30X")
    assert {d["tx"] for d in units["good"].datasets} == {"06", "07", "09"}
    assert not units["good"].problems
    # the frequent DAG leaves invalid mappings to the daily and weekly ones
    assert planning.plan_run("frequent", mappings=folder).shards == []


@pytest.mark.parametrize("cached", [False, True])
def test_hostile_mapping_files_fail_only_their_own_units(tmp_path: Path, cached: bool) -> None:
    """An alias bomb, an over-size file, GBK, binary, a folder, a link to /dev/zero and a pipe
    among the mappings: each is planned as a unit with one short problem, the others as ever.
    Planned in a child process bounded in memory and time: before, one of them took it all."""
    from test_mapping_hostile import billion_laughs, run_bounded

    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", folder / "good.yaml")
    shutil.copy(MAPPINGS / "demo_jinling_chem.yaml", folder / "zz_good.yaml")
    (folder / "bomb.yaml").write_text(billion_laughs(), encoding="utf-8")
    (folder / "huge.yaml").write_text("#" * 2_000_000, encoding="utf-8")
    (folder / "gbk.yaml").write_bytes((MAPPINGS / "demo_suzhou_lift.yaml").read_text(
        encoding="utf-8").encode("gbk"))
    (folder / "binary.yaml").write_bytes(bytes(range(256)) * 40)
    (folder / "folder.yaml").mkdir()
    (folder / "zero.yaml").symlink_to("/dev/zero")
    os.mkfifo(folder / "pipe.yaml")
    cache = repr(str(tmp_path / "cache")) if cached else None
    done = run_bounded(f"""
        import json
        from pathlib import Path
        from etl.orchestration import planning
        plan = planning.plan_run("daily", mappings=Path({str(folder)!r}),
                                 cache_dir=Path({cache}) if {cached} else None)
        print(json.dumps({{u.name: [u.problems, len(u.datasets)] for s in plan.shards for u in s.units}}))
        """)
    assert done.returncode == 0, done.stderr[-2000:]
    units = json.loads(done.stdout)
    assert units.pop("good") == ["", 3] and units.pop("zz_good") == ["", 3]
    expected = {"bomb": "aliases (*name) expand", "huge": "more than a mapping's 1,000,000 bytes",
                "gbk": "not UTF-8", "binary": "binary.yaml", "folder": "not a regular file",
                "zero": "not a regular file", "pipe": "not a regular file"}
    assert set(units) == set(expected)
    for name, (found, datasets) in units.items():
        assert expected[name] in found and datasets == 0 and len(found) <= 500, (name, found)


def test_two_files_of_one_unit_are_both_refused(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("苏州电梯.yaml", "苏州电梯_副本.yaml"):
        shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", folder / name)
    shutil.copy(MAPPINGS / "demo_jinling_chem.yaml", folder / "南京化工.yaml")
    units = {u.name: u for s in planning.plan_run("daily", mappings=folder).shards for u in s.units}
    for twin in ("苏州电梯", "苏州电梯_副本"):
        assert "is also the orgNo of" in units[twin].problems and units[twin].datasets == []
    assert units["南京化工"].datasets and not units["南京化工"].problems


@pytest.mark.parametrize(("units", "slots", "per_shard", "max_shards", "expected"), [
    (0, 16, None, 1024, 0),
    (2, 16, None, 1024, 1),        # a few units: one shard (its tasks cost more than their data)
    (200, 4, None, 1024, 4),       # one shard per slot
    (200, 64, None, 1024, 4),      # at least 50 units a shard
    (10_000, 32, None, 1024, 32),
    (100_000, 100_000, None, 1024, 256),  # never more than MAX_SHARDS
    (7, 16, 2, 1024, 4),           # units_per_shard sets the size
    (7, 16, 1, 3, 3),              # ... up to Airflow's max_map_length
])
def test_shard_count(units: int, slots: int, per_shard: int | None, max_shards: int,
                     expected: int) -> None:
    assert planning.shard_count(units, slots, per_shard, max_shards) == expected


def test_shards_are_contiguous_labelled_and_hold_every_unit_once(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for n in range(7):
        shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", folder / f"单位{n}.yaml")
        _set_org(folder / f"单位{n}.yaml", n)
    plan = planning.plan_run("daily", mappings=folder, params={"units_per_shard": 3})
    assert [len(s.units) for s in plan.shards] == [3, 3, 1]
    assert [s.label for s in plan.shards] == ["1/3 单位0 … 单位2 (3 units)",
                                              "2/3 单位3 … 单位5 (3 units)", "3/3 单位6 (1 unit)"]
    # a shard survives JSON: the tasks rebuild it, mappings included, without reading the files
    header, back = planning.shard_from_dict(json.loads(json.dumps(planning.shard_to_dict(plan, plan.shards[1]))))
    assert back == plan.shards[1] and header["run_id"] == plan.run_id


def _org(n: int) -> str:
    base = f"9132050{n:010d}"
    return base + uscc.calc_check_digit(base)


def _set_org(path: Path, n: int) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["unit"]["orgNo"] = _org(n)
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")


def test_a_province_of_10000_units_plans_into_a_bounded_number_of_small_tasks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning only: 10,000 mapping files (Chinese names), no data. The number of shards, and so
    of task instances, stays bounded by the task slots; XCom holds only references."""
    from etl.orchestration import tasks as orchestrate

    folder = tmp_path / "mappings"
    folder.mkdir()
    template = (MAPPINGS / "demo_suzhou_lift.yaml").read_text(encoding="utf-8")
    for n in range(10_000):
        text = template.replace("91320506MA1W3L8P7L", _org(n)).replace(
            "苏州吴中电梯安装维保有限公司", f"苏州第{n}电梯有限公司")
        (folder / f"苏州电梯{n:05d}.yaml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("ETL_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("ETL_TARGET_URL", f"sqlite:///{tmp_path / 'target.sqlite'}")
    monkeypatch.setenv("ETL_CACHE_DIR", str(tmp_path / "cache"))
    refs = orchestrate.plan("daily", None, mappings=folder, dag_id="dual_prevention_daily",
                            run_id="scheduled__2025-03-01T16:00:00+00:00", slots=32)
    assert len(refs) == 32  # 3 task instances each, whatever the unit count
    assert len(json.dumps(refs, ensure_ascii=False)) < 16_000  # the plan's XCom: references only
    assert sum(r["units"] for r in refs) == 10_000 and sum(r["datasets"] for r in refs) == 30_000
    assert refs[0]["label"] == "1/32 苏州电梯00000 … 苏州电梯00312 (313 units)"
    assert len({r["prefix"] for r in refs}) == 32
    # and again: every file is read once, valid ones come from the cache
    again = orchestrate.plan("daily", None, mappings=folder, dag_id="dual_prevention_daily",
                             run_id="scheduled__2025-03-02T16:00:00+00:00", slots=32)
    assert [r["label"] for r in again] == [r["label"] for r in refs]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 10_000


# --- planning a unit again (a retry takes fixes) ------------------------------------------------


def _planned(folder: Path, name: str) -> tuple[planning.RunPlan, planning.Unit]:
    start, end = datetime(2025, 3, 1, tzinfo=CST), datetime(2025, 3, 2, tzinfo=CST)
    plan = planning.plan_run("daily", mappings=folder, interval=(start, end),
                             params={"tx_codes": ["06", "09"]})
    return plan, next(u for s in plan.shards for u in s.units if u.name == name)


def test_a_unit_is_planned_again_from_its_fixed_file_as_the_run_chose(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "南京化工.yaml").write_text(BROKEN_MAPPING, encoding="utf-8")
    plan, broken = _planned(folder, "南京化工")
    choice = planning.Choice.of(plan.header()["choice"])
    assert choice.scheduled and choice.tx_codes == ("06", "09")
    assert planning.replan(choice, broken) is broken  # unchanged, still invalid: as planned

    shutil.copy(MAPPINGS / "demo_jinling_chem.yaml", folder / "南京化工.yaml")
    fixed = planning.replan(choice, broken)
    assert not fixed.problems and fixed.org_no == broken.org_no == "91320115MA1R7KX30X"
    assert [d["tx"] for d in fixed.datasets] == ["06", "09"]  # the run's tx_codes, its window
    assert {d["since"] for d in fixed.datasets} == {"2025-03-01T00:00:00+08:00"}
    assert planning.replan(choice, fixed) is fixed


def test_planning_again_refuses_a_file_gone_or_naming_another_org_no(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    path = folder / "苏州电梯.yaml"
    shutil.copy(MAPPINGS / "demo_suzhou_lift.yaml", path)
    plan, unit = _planned(folder, "苏州电梯")
    choice = planning.Choice.of(plan.header()["choice"])

    other = "91320506MA1W3L8P8" + uscc.calc_check_digit("91320506MA1W3L8P8")
    path.write_text(path.read_text(encoding="utf-8").replace("91320506MA1W3L8P7L", other), encoding="utf-8")
    moved = planning.replan(choice, unit)
    assert moved.datasets == [] and moved.org_no == unit.org_no
    assert f"is now {other}, but this run planned the file as 91320506MA1W3L8P7L" in moved.problems

    path.unlink()
    gone = planning.replan(choice, unit)
    assert "gone since this run was planned" in gone.problems and gone.datasets == []


def test_a_file_invalid_when_planned_is_refused_if_another_file_holds_its_org_no(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "a.yaml").write_text(BROKEN_MAPPING, encoding="utf-8")
    plan, broken = _planned(folder, "a")
    shutil.copy(MAPPINGS / "demo_jinling_chem.yaml", folder / "b.yaml")  # the same orgNo
    shutil.copy(MAPPINGS / "demo_jinling_chem.yaml", folder / "a.yaml")
    refused = planning.replan(planning.Choice.of(plan.header()["choice"]), broken)
    assert "is also the orgNo of" in refused.problems and "b.yaml" in refused.problems


def test_the_folder_index_serves_unchanged_files_unread_and_reads_changed_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 26: an idle tick of the 5-minute DAG takes files unchanged since the last plan from
    the folder's index (their cache entry unread until a shard needs the model); a file whose
    content changed, or that changed too recently to trust its status, is read again."""
    from etl.mapping import discover
    from etl.mapping import loading

    from benchmarks.units import make_mappings, org_no, template_source

    folder, cache = tmp_path / "m", tmp_path / "cache"
    make_mappings(folder, 4, template_source(tmp_path / "t"), hourly_every=2)
    paths = discover(folder)
    monkeypatch.setattr(loading, "RACY_SECONDS", 0.0)  # files made before the first call are trusted
    first = loading.load_outlines(paths, cache)
    assert all(o.body for o in first.values())  # read, validated, cached
    now = datetime(2026, 12, 7, 10, 5, tzinfo=CST)
    plan_first = planning.plan_run("daily", mappings=folder, cache_dir=cache, now=now)

    again = loading.load_outlines(paths, cache)
    assert all(o.body is None for o in again.values())  # from the index: not read
    for p in paths:
        assert (again[p].digest, again[p].org_no, again[p].frequencies) == (
            first[p].digest, first[p].org_no, first[p].frequencies)
        assert again[p].to_dict() == first[p].to_dict()
        assert again[p].mapping() == first[p].mapping()
    assert again[paths[1]].frequencies["09"] == "hourly" and again[paths[0]].frequencies["09"] is None
    plan_again = planning.plan_run("daily", mappings=folder, cache_dir=cache, now=now)
    assert [planning.shard_to_dict(plan_again, s) for s in plan_again.shards] == \
        [planning.shard_to_dict(plan_first, s) for s in plan_first.shards]

    changed = paths[2]
    changed.write_text(changed.read_text(encoding="utf-8").replace(org_no(3), org_no(7)),
                       encoding="utf-8")
    third = loading.load_outlines(paths, cache)
    assert third[changed].body and third[changed].org_no == org_no(7)
    assert third[changed].digest != first[changed].digest
    assert [p for p in paths if third[p].body is None] == [paths[0], paths[1], paths[3]]

    monkeypatch.setattr(loading, "RACY_SECONDS", 3600.0)  # every file changed "just now"
    racy = loading.load_outlines(paths, cache)
    assert all(o.body for o in racy.values())
    assert {p: o.digest for p, o in racy.items()} == {p: o.digest for p, o in third.items()}

    for entry in cache.glob("*.json"):  # entries gone: an index row reads the file itself
        entry.unlink()
    monkeypatch.setattr(loading, "RACY_SECONDS", 0.0)
    loading.load_outlines(paths, cache)  # re-caches; the index is rewritten
    for entry in cache.glob("*.json"):
        entry.unlink()
    gone = loading.load_outlines(paths, cache)
    assert all(o.body is None for o in gone.values())
    assert gone[changed].to_dict()["digest"] == third[changed].digest
    assert gone[changed].mapping().unit.orgNo == org_no(7)
