"""Source column types real units use, on real SQLite, PostgreSQL and MariaDB sources: a value
the standard accepts loads whatever type the unit stores it in, and a unit that alters a
column's type changes no record ID and writes no spurious U batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import HIDDEN_DANGER_COLUMNS, hidden_danger_row

from etl.cli import main

MAPPING = """\
unit: {{orgNo: "91320115MA1R7KX30X", comName: 南京某某化工有限公司}}
source: {{url_env: {env}}}
datasets:
  "09":
    table: t_hidden_danger
    key: [id]
    deleted: {{column: del_flag, value: 1}}
    fields:
      taskNo: task_no
      regNo: reg_no
      troubleType: kind
      troubleLevel: {{column: level, values: {{1: 一般事故隐患, 2: 较大事故隐患}}}}
      mainProblem: problem
      checkMan: checker
      checkDate: check_date
      limitDate: limit_date
      dealMan: deal_man
      dealDate: deal_date
      dealInfo: deal_info
      acceptMan: accept_man
      acceptDate: accept_date
      acceptInfo: accept_info
"""

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
    mapping.write_text(MAPPING.format(env=f"SOURCE_{name.upper()}"), encoding="utf-8")
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
