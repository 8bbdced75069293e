"""Staging (etl/orchestration/staging.py): safe keys, exact frames without pickle, folders, object storage
and the target's `ingest_stage` table on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import re
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from etl import target
from etl.common.errors import ConfigError
from etl.common.storage import token
from etl.orchestration import staging
from etl.orchestration.staging import PathStore, StagingMissing, TargetStore, key, open_store

CST = ZoneInfo("Asia/Shanghai")


# --- values of every supported type --------------------------------------------------------


def _values() -> list[object]:
    """One of each type staging promises to keep, as sources and pandas hand them over."""
    return [
        "南京某某化工有限公司", 20250301, -(2**70), 0.1, float("nan"), float("-inf"), True, False,
        Decimal("0.100"), Decimal("1E+3"), Decimal("-12345678901234567890.000001"),
        datetime(2025, 3, 1, 16, 0, 0, 123456), date(2025, 3, 1), time(8, 30, 15, 5),
        time(8, 30, tzinfo=timezone(timedelta(hours=8))),
        b"\x00\xffbinary", bytearray(b"ba"),
        pd.Timestamp("2025-03-01 16:00:00.123456789"), pd.Timestamp("2025-03-01 16:00", tz="Asia/Shanghai"),
        pd.Timestamp("2025-03-01 16:00", tz="UTC").as_unit("s"), pd.Timestamp("3000-01-01").as_unit("s"),
        pd.NaT, None, pd.NA,
        datetime(2025, 3, 1, 16, tzinfo=CST), datetime(2025, 11, 2, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
        datetime(2025, 3, 1, 16, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2025, 3, 1, 16, tzinfo=timezone.utc),
        timedelta(days=-1, seconds=5, microseconds=7), pd.Timedelta("1 day 3ns"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        [1, "二", Decimal("3.0"), None, [date(2025, 1, 1)]], (1, 2.5, "x"),
        {"level": "公司（厂）级", "n": 2, "at": datetime(2025, 3, 1), "none": None, "d": {"x": Decimal("1.10")}},
        np.int64(7), np.float32(1.5), np.bool_(True), np.str_("np"), np.datetime64("2025-03-01T16:00:00"),
    ]


def _python(value: object) -> object:
    """What a value comes back as: numpy scalars as their Python value, bytes-likes as bytes."""
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def _same(a: object, b: object) -> bool:
    """Equal value and identical Python type, all the way down (Decimal text, zones, units)."""
    a = _python(a)
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if a is None or a is pd.NaT or a is pd.NA:
        return a is b
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, pd.Timestamp):
        return a == b and a.unit == b.unit and str(a.tz) == str(b.tz) and a.isoformat() == b.isoformat()
    if isinstance(a, (datetime, time)):
        return (a == b and a.isoformat() == b.isoformat() and str(a.tzinfo) == str(b.tzinfo)
                and a.fold == b.fold)
    return a == b


def _mixed_frame() -> pd.DataFrame:
    values = _values()
    n = len(values)
    return pd.DataFrame({
        "mixed": pd.Series(values, dtype=object),
        "text_or_none": pd.Series(["一", None] * (n // 2) + ["x"] * (n % 2), dtype=object),
        "flags": pd.Series([True, False] * (n // 2) + [True] * (n % 2), dtype=object),
        "dates": pd.Series([date(2025, 1, 1), None] * (n // 2) + [None] * (n % 2), dtype=object),
        "date_and_datetime": pd.Series([date(2025, 1, 1), datetime(2025, 1, 1, 12)] * (n // 2)
                                       + [None] * (n % 2), dtype=object),
        "text_and_nan": pd.Series(["a", float("nan")] * (n // 2) + [None] * (n % 2), dtype=object),
        "ints": np.arange(n, dtype="int64"),
        "floats": np.linspace(0, 1, n),
        "names": pd.Series([f"名{i}" for i in range(n)]),
        "moments": pd.date_range("2025-03-01", periods=n, freq="h", tz="Asia/Shanghai"),
        "nullable": pd.array([1, None] * (n // 2) + [3] * (n % 2), dtype="Int64"),
        "category": pd.Categorical(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
    })


def _assert_same_frame(expected: pd.DataFrame, got: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    for name in expected.columns:
        if expected[name].dtype == object:
            assert got[name].dtype == object, name
            bad = [(i, a, b) for i, (a, b) in enumerate(zip(expected[name], got[name], strict=True))
                   if not _same(a, b)]
            assert bad == [], (name, bad)
        else:
            pd.testing.assert_series_equal(got[name], expected[name])


# --- frames --------------------------------------------------------------------------------


def test_every_supported_type_round_trips_with_its_python_type():
    frame = _mixed_frame()
    _assert_same_frame(frame, staging.frame_from_bytes(staging.frame_bytes(frame)))


_ZONES = st.sampled_from([ZoneInfo("Asia/Shanghai"), ZoneInfo("America/New_York"), timezone.utc,
                          timezone(timedelta(hours=5, minutes=45))])
_SCALARS = st.one_of(
    st.none(), st.text(), st.integers(), st.floats(), st.booleans(),
    st.decimals(allow_nan=False, places=None), st.dates(), st.times(), st.binary(max_size=20),
    st.datetimes(), st.datetimes(timezones=_ZONES), st.timedeltas(), st.uuids(),
    st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2200, 1, 1)).map(pd.Timestamp),
    st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2200, 1, 1), timezones=_ZONES,
                 allow_imaginary=False).map(pd.Timestamp),
    st.integers(-(2**63), 2**63 - 1).map(np.int64), st.floats(width=32).map(np.float32),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.lists(_VALUES, min_size=1, max_size=6))
def test_any_mix_of_supported_values_round_trips(values):
    frame = pd.DataFrame({"mixed": pd.Series(values, dtype=object)})
    _assert_same_frame(frame, staging.frame_from_bytes(staging.frame_bytes(frame)))


def test_a_datetime_among_dates_keeps_its_time():
    """pandas calls a column of dates and datetimes "date": Arrow would cut the time off."""
    frame = pd.DataFrame({"d": pd.Series([date(2025, 1, 1), datetime(2025, 1, 1, 12)], dtype=object)})
    back = staging.frame_from_bytes(staging.frame_bytes(frame))
    assert back["d"][1] == datetime(2025, 1, 1, 12) and type(back["d"][0]) is date


def test_a_value_of_an_unsupported_type_is_refused_naming_column_and_type():
    class Opaque:
        pass

    frame = pd.DataFrame({"ok": [1, 2], "weird": pd.Series([1, Opaque()], dtype=object)})
    with pytest.raises(ConfigError, match=r"column 'weird'.*test_staging\..*Opaque"):
        staging.frame_bytes(frame)
    with pytest.raises(ConfigError, match=r"column 'tags'.*builtins\.set"):
        staging.frame_bytes(pd.DataFrame({"tags": pd.Series([[{"a"}]], dtype=object)}))


def test_a_datetime_subclass_is_refused_rather_than_changed():
    class Moment(datetime):
        pass

    frame = pd.DataFrame({"at": pd.Series([Moment(2025, 1, 1), "x"], dtype=object)})
    with pytest.raises(ConfigError, match=r"column 'at'.*Moment"):
        staging.frame_bytes(frame)


def test_a_frame_staged_for_another_unit_is_refused(tmp_path):
    store = PathStore(tmp_path)
    store.put_frame("u/raw-00000.parquet", pd.DataFrame({"a": [1]}), {"orgNo": "A", "mappingHash": "h1"})
    assert store.get_frame("u/raw-00000.parquet", expect={"orgNo": "A", "mappingHash": "h1"})["a"].tolist() == [1]
    with pytest.raises(ConfigError, match=r"u/raw-00000\.parquet was staged for orgNo 'A', not 'B'"):
        store.get_frame("u/raw-00000.parquet", expect={"orgNo": "B"})
    with pytest.raises(ConfigError, match=r"staged for mappingHash 'h1', not 'h2'"):
        store.get_frame("u/raw-00000.parquet", expect={"orgNo": "A", "mappingHash": "h2"})


class _TouchOnUnpickle:
    """Unpickling this creates a file: the harmless stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _crafted(tmp_path: Path, marker: Path) -> bytes:
    """A staging Parquet object whose tagged column holds a pickle cell (the old codec's "p")."""
    good = staging.frame_bytes(pd.DataFrame({"mixed": pd.Series([1, "x"], dtype=object)}))
    table = pq.read_table(pa.BufferReader(good))
    cell = json.dumps(["p", base64.b64encode(pickle.dumps(_TouchOnUnpickle(marker))).decode()])
    column = pa.array([cell, json.dumps(["s", "x"])], type=table.schema.field("mixed").type)
    crafted = table.set_column(0, "mixed", column).replace_schema_metadata(table.schema.metadata)
    sink = pa.BufferOutputStream()
    pq.write_table(crafted, sink)
    return sink.getvalue().to_pybytes()


def test_a_crafted_pickle_cell_is_refused_and_not_run(tmp_path):
    probe = tmp_path / "the-payload-works"
    pickle.loads(pickle.dumps(_TouchOnUnpickle(probe)))
    assert probe.exists()  # the payload would run if unpickled

    marker = tmp_path / "ran"
    store = PathStore(tmp_path / "staging")
    store.put("u/raw-00000.parquet", _crafted(tmp_path, marker))
    with pytest.raises(ConfigError, match=r"raw-00000\.parquet column 'mixed': unreadable cell.*unknown tag 'p'"):
        store.get_frame("u/raw-00000.parquet")
    assert not marker.exists()


def test_an_object_not_written_by_staging_is_refused():
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"a": ['["p", "x"]']}), sink)
    with pytest.raises(ConfigError, match="not written by etl.orchestration.staging"):
        staging.frame_from_bytes(sink.getvalue().to_pybytes(), where="k")
    with pytest.raises(ConfigError, match="k is not readable Parquet"):
        staging.frame_from_bytes(b"garbage", where="k")


# --- keys ----------------------------------------------------------------------------------


def test_chinese_names_get_distinct_safe_tokens():
    nanjing, suzhou = token("南京化工"), token("苏州电梯")
    assert nanjing != suzhou
    for t in (nanjing, suzhou):
        assert re.fullmatch(r"[0-9a-f]{16}", t) and key("dag", t, "06") == f"dag/{t}/06"


def test_hostile_and_similar_texts_get_distinct_safe_tokens():
    texts = ["..", ".", "", "a/b", "a_b", "a b", "a\\b", "a\x00b", "manual__2025-03-01T16:00:00+00:00",
             "manual__2025-03-01T16:00:00+08:00", "x" * 300, "x" * 301, "Ａ１", "A1"]
    tokens = [token(t) for t in texts]
    assert len(set(tokens)) == len(texts)
    for t in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", t) and key(t) == t
    assert token("manual__2025-03-01T16:00:00+00:00").startswith("manual__2025-03-01T16_00-")
    assert token("Ａ１").startswith("A1-")  # full-width letters read as ASCII
    assert token("demo_nanjing") == token("demo_nanjing")


@pytest.mark.parametrize("part", ["", ".", "..", "a/b", "a\\b", "a\x00", "南京", "a b", ".hidden",
                                  "a:b", "x" * 201])
def test_key_refuses_unsafe_parts(part):
    with pytest.raises(ValueError, match="staging key part"):
        key("dag", part, "raw.parquet")


def test_key_allows_one_extension_on_the_last_part_only():
    assert key("dag", "run-1", "raw-00001.parquet") == "dag/run-1/raw-00001.parquet"
    for parts in (("dag.x", "plan.json"), ("dag", "raw.tar.gz"), ("dag", "raw.")):
        with pytest.raises(ValueError):
            key(*parts)


# --- folders -------------------------------------------------------------------------------


def test_path_store_put_get_keys_delete(tmp_path):
    root = tmp_path / "staging"
    store = PathStore(root)
    store.put("d/r/u_1/06/raw-00000.parquet", b"one")
    store.put("d/r/u_1/06/raw-00000.parquet", b"two")  # replaced
    store.put("d/r/u_1/07/plan.json", b"{}")
    store.put("d/r/uX1/06/plan.json", b"{}")
    assert store.get("d/r/u_1/06/raw-00000.parquet") == b"two"
    assert store.keys("d/r/u_1/") == {"d/r/u_1/06/raw-00000.parquet", "d/r/u_1/07/plan.json"}
    assert store.keys("d/r/u_1/06/raw-") == {"d/r/u_1/06/raw-00000.parquet"}
    assert store.keys("d/r/u") == store.keys("") and len(store.keys("")) == 3
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temporary files left
    store.delete("d/r/u_1/")
    assert store.keys("") == {"d/r/uX1/06/plan.json"}
    store.delete("d/")
    assert root.is_dir() and list(root.iterdir()) == []  # empty parents pruned, the root kept
    store.delete("d/")  # nothing there is fine
    with pytest.raises(StagingMissing, match=r"staged object d/r/uX1/06/plan\.json is not in staging folder"):
        store.get("d/r/uX1/06/plan.json")


def test_path_store_refuses_a_key_that_resolves_outside_the_root(tmp_path):
    root, outside = tmp_path / "staging", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    store = PathStore(root)
    with pytest.raises(ConfigError, match="outside staging folder"):
        store.put("link/x.parquet", b"data")
    with pytest.raises(ConfigError, match="outside staging folder"):
        store.get("link/x.parquet")
    with pytest.raises(ValueError):
        store.put("../x.parquet", b"data")
    assert list(outside.iterdir()) == []


def test_a_key_is_an_object_or_a_folder_not_both(tmp_path):
    store = PathStore(tmp_path)
    store.put("a/b", b"x")
    with pytest.raises(ConfigError, match="an object or a folder"):
        store.put("a/b/c.json", b"y")


def test_json_round_trips_chinese_text(tmp_path):
    store = PathStore(tmp_path)
    store.put_json("u/audit.json", [{"field": "riskType", "examples": [["设备", "0"]]}])
    assert store.get_json("u/audit.json") == [{"field": "riskType", "examples": [["设备", "0"]]}]
    assert "设备".encode() in (tmp_path / "u" / "audit.json").read_bytes()


def test_every_type_round_trips_through_a_folder(tmp_path):
    store = PathStore(tmp_path)
    frame = _mixed_frame()
    store.put_frame(key(token("南京化工.yaml"), "raw-00000.parquet"), frame)
    _assert_same_frame(frame, store.get_frame(key(token("南京化工.yaml"), "raw-00000.parquet")))


def test_memory_url_goes_through_object_storage():
    store = open_store(f"memory://etl-test-{uuid.uuid4().hex}/staging")
    assert isinstance(store, PathStore) and store.describe().startswith("staging memory://etl-test-")
    store.put("d/r/raw-00000.parquet", b"x" * 10)
    store.put("d/r/plan.json", b"{}")
    store.put("d/s/plan.json", b"{}")
    assert store.get("d/r/raw-00000.parquet") == b"x" * 10
    assert store.keys("d/r/") == {"d/r/raw-00000.parquet", "d/r/plan.json"}
    store.delete("d/r/")
    assert store.keys("") == {"d/s/plan.json"}
    with pytest.raises(StagingMissing):
        store.get("d/r/plan.json")


# --- the target's table --------------------------------------------------------------------


@pytest.fixture
def stage_store(db_url):
    """A TargetStore on a fresh database holding only `ingest_stage`. On MariaDB the database's
    default collation ignores case, as installations commonly do: keys must not."""
    engine = target.connect(db_url)
    if engine.dialect.name in ("mysql", "mariadb"):
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE `{engine.url.database}` COLLATE utf8mb4_general_ci")
    target.ingest_stage.create(engine)
    store = TargetStore(engine, dispose_on_close=True)
    yield store
    store.close()


def _stored_parts(store: TargetStore, k: str) -> list[int]:
    t = target.ingest_stage
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(t.c.part).where(t.c.stageKey == k).order_by(t.c.part)).scalars())


def test_target_store_put_get_replace_and_missing(stage_store):
    stage_store.put("d/r/u/06/plan.json", b'{"a": 1}')
    assert stage_store.get("d/r/u/06/plan.json") == b'{"a": 1}'
    stage_store.put("d/r/u/06/plan.json", b"")
    assert stage_store.get("d/r/u/06/plan.json") == b""
    with pytest.raises(StagingMissing, match=r"d/r/u/06/raw\.parquet is not in staging table ingest_stage"):
        stage_store.get("d/r/u/06/raw.parquet")


def test_target_store_splits_a_large_object_into_parts(stage_store):
    data = os.urandom(staging.PART_BYTES) + bytes(staging.PART_BYTES) + b"tail" * 1000
    stage_store.put("d/r/u/06/raw-00000.parquet", data)
    assert _stored_parts(stage_store, "d/r/u/06/raw-00000.parquet") == [0, 1, 2]
    assert stage_store.get("d/r/u/06/raw-00000.parquet") == data
    stage_store.put("d/r/u/06/raw-00000.parquet", b"small")  # a shorter object leaves no stale parts
    assert _stored_parts(stage_store, "d/r/u/06/raw-00000.parquet") == [0]
    assert stage_store.get("d/r/u/06/raw-00000.parquet") == b"small"


def test_target_store_prefixes_match_exactly(stage_store):
    for k in ("a_b/x.json", "axb/x.json", "a_b2/x.json", "A_b/x.json", "a_b/sub/y.json"):
        stage_store.put(k, k.encode())
    assert stage_store.keys("a_b/") == {"a_b/x.json", "a_b/sub/y.json"}
    assert stage_store.keys("a_b") == {"a_b/x.json", "a_b/sub/y.json", "a_b2/x.json"}
    assert stage_store.get("A_b/x.json") == b"A_b/x.json"
    stage_store.delete("a_b/")
    assert stage_store.keys("") == {"axb/x.json", "a_b2/x.json", "A_b/x.json"}


def test_every_type_round_trips_through_the_target(stage_store):
    frame = _mixed_frame()
    stage_store.put_frame("d/r/u/06/raw-00000.parquet", frame, {"orgNo": "91320100MA1XXXXXX0"})
    back = stage_store.get_frame("d/r/u/06/raw-00000.parquet", expect={"orgNo": "91320100MA1XXXXXX0"})
    _assert_same_frame(frame, back)


def test_target_store_never_shows_the_password():
    engine = sa.create_engine("postgresql+psycopg://etl:s3cret@db.example:5432/target")
    described = TargetStore(engine).describe()
    assert "s3cret" not in described and "db.example" in described


def test_upgrading_a_0002_target_creates_the_stage_table(db_url):
    engine = target.connect(db_url)
    target.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE ingest_stage")
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0002'"))
    assert target.upgrade(engine) == ("0002", target.head_revision())
    assert "ingest_stage" in sa.inspect(engine).get_table_names()
    store = TargetStore(engine)
    store.put("k/plan.json", b"{}")
    assert store.get("k/plan.json") == b"{}"
    engine.dispose()


@pytest.mark.parametrize("from_scratch", [True, False], ids=["fresh", "from-0002"])
def test_the_stage_table_is_unlogged_on_postgresql(pg_url, from_scratch):
    engine = target.connect(pg_url)
    target.upgrade(engine)
    if not from_scratch:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE ingest_stage")
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0002'"))
        target.upgrade(engine)
    with engine.connect() as conn:
        persistence = conn.execute(sa.text(
            "SELECT relpersistence FROM pg_class WHERE oid = 'ingest_stage'::regclass")).scalar()
    assert persistence == "u"
    engine.dispose()


# --- choosing a store ----------------------------------------------------------------------


@pytest.fixture
def no_staging_env(monkeypatch, tmp_path):
    for name in ("ETL_STAGING_URL", "ETL_STAGING_DIR", "ETL_STAGING_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ETL_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_target_spec_gives_a_target_store_with_its_table(no_staging_env, pg_url):
    with open_store("target", engine_factory=lambda: target.connect(pg_url)) as store:
        assert isinstance(store, TargetStore)
        store.put("k/plan.json", b"{}")
        assert store.keys("k/") == {"k/plan.json"}


def test_target_staging_on_a_sqlite_target_is_refused_not_left_to_wait(no_staging_env, sqlite_url):
    """The load holds the SQLite file's one write lock while it reads its stage from that file:
    a `dag.test()` so configured waited forever in the load task."""
    with pytest.raises(ConfigError, match="SQLite target.*stage in a folder"):
        open_store("target", engine_factory=lambda: target.connect(sqlite_url))


def test_a_folder_spec_gives_a_path_store_rooted_there(no_staging_env, tmp_path):
    store = open_store(str(tmp_path / "shared"))
    assert isinstance(store, PathStore)
    store.put("k/plan.json", b"{}")
    assert (tmp_path / "shared" / "k" / "plan.json").read_bytes() == b"{}"


def test_a_relative_folder_is_under_etl_home(no_staging_env, tmp_path):
    open_store("stage").put("k/plan.json", b"{}")
    assert (tmp_path / "home" / "stage" / "k" / "plan.json").is_file()


def test_a_file_url_goes_through_object_storage_path(no_staging_env, tmp_path):
    store = open_store(f"file://{tmp_path / 'viaurl'}")
    assert isinstance(store, PathStore)
    store.put("k/plan.json", b"{}")
    assert (tmp_path / "viaurl" / "k" / "plan.json").read_bytes() == b"{}"
    assert store.keys("") == {"k/plan.json"}


def test_spec_then_url_then_dir_then_default(no_staging_env, tmp_path):
    env = no_staging_env
    home = tmp_path / "home"
    assert open_store().describe() == f"staging folder {home / 'var' / 'staging'}"
    env.setenv("ETL_STAGING_DIR", str(tmp_path / "dir"))
    assert open_store().describe() == f"staging folder {tmp_path / 'dir'}"
    env.setenv("ETL_STAGING_URL", f"file://{tmp_path / 'url'}")
    assert open_store().describe() == f"staging folder {tmp_path / 'url'}"
    assert open_store(str(tmp_path / "spec")).describe() == f"staging folder {tmp_path / 'spec'}"


def test_a_url_with_a_password_is_refused_without_echoing_it(no_staging_env):
    with pytest.raises(ConfigError, match=r"Airflow connection") as info:
        open_store("s3://AKIAKEY:s3cret@bucket/staging")
    assert "s3cret" not in str(info.value) and "AKIAKEY" not in str(info.value)


def test_a_scheme_without_a_file_system_is_a_clear_error(no_staging_env):
    no_staging_env.setenv("ETL_STAGING_CONN_ID", "staging_bucket")
    with pytest.raises(ConfigError, match=r"staging nosuchfs://\.\.\.: no file system for it"):
        open_store("nosuchfs://bucket/staging")
