"""The `ETL_*` settings (etl.common.settings): defined once, read through one module, documented
from the definition, resolved alike by `etl` commands and Airflow's tasks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from etl.common import settings
from etl.common.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
NOT_SETTINGS = {"ETL_TEMPLATE_CHECK_URL", "ETL_TEMPLATE_CHECK_FILES"}  # stand-in url_env, base_env names for checking a template alone


def _code() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for d in ("etl", "dags")
            for p in (ROOT / d).rglob("*.py")}


def test_the_docs_table_is_the_definition() -> None:
    docs = (ROOT / "docs" / "airflow.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- settings:[^>]*-->\n(.*?)\n<!-- /settings -->", docs, re.S)
    assert table and table.group(1) == settings.markdown_table()


def test_every_etl_variable_the_code_names_is_defined() -> None:
    named = {m for text in _code().values() for m in re.findall(r"\bETL_[A-Z][A-Z_]*[A-Z]\b", text)}
    assert named - NOT_SETTINGS <= set(settings.BY_NAME), named - set(settings.BY_NAME)
    assert set(settings.BY_NAME) <= named  # none defined that nothing reads


def test_only_the_settings_module_reads_etl_variables_from_the_environment() -> None:
    reading = re.compile(r"(os\.environ(\.get)?[\[(]|os\.getenv\()\s*[\"']ETL_")
    readers = {p.relative_to(ROOT).as_posix() for p, text in _code().items() if reading.search(text)}
    assert readers == set(), readers


@pytest.mark.parametrize(("name", "value", "says"), [
    ("ETL_CHUNK_ROWS", "many", "ETL_CHUNK_ROWS='many': give a whole number, 1 or more"),
    ("ETL_CHUNK_ROWS", "0", "ETL_CHUNK_ROWS='0': give a whole number, 1 or more"),
    ("ETL_FRESHNESS_GRACE_HOURS", "-2", "ETL_FRESHNESS_GRACE_HOURS='-2': give a number, 0 or more"),
    ("ETL_REQUIRE_TLS", "perhaps", "ETL_REQUIRE_TLS='perhaps' is not a yes/no value: use 1 or 0"),
])
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                                     value: str, says: str) -> None:
    monkeypatch.setenv(name, value)
    read = {"ETL_CHUNK_ROWS": settings.integer, "ETL_FRESHNESS_GRACE_HOURS": settings.number,
            "ETL_REQUIRE_TLS": settings.flag}[name]
    with pytest.raises(ConfigError) as err:
        read(name)
    assert str(err.value) == says


def test_blank_is_unset_and_defaults_come_from_the_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_CHUNK_ROWS", "  ")
    assert settings.integer("ETL_CHUNK_ROWS") == 100_000
    monkeypatch.delenv("ETL_TARGET_URL", raising=False)
    assert settings.target_url() == "sqlite:///var/target.sqlite"  # the contract: relative to the cwd


def test_relative_folders_resolve_under_etl_home_for_commands_and_tasks_alike(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from etl.orchestration import tasks

    monkeypatch.setenv("ETL_HOME", str(tmp_path))
    monkeypatch.setenv("ETL_MAPPINGS_DIR", "单位映射")
    monkeypatch.delenv("ETL_TARGET_URL", raising=False)
    assert tasks.mappings_dir() == settings.path("ETL_MAPPINGS_DIR") == tmp_path / "单位映射"
    assert tasks.target_url() == f"sqlite:///{tmp_path / 'var' / 'target.sqlite'}"
    monkeypatch.delenv("ETL_HOME")
    assert tasks.mappings_dir() == settings.CODE_ROOT / "单位映射"


def test_the_dag_file_plans_the_mappings_folder_the_tasks_read(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    """Once found from dags/.. in the DAG file and from ETL_HOME in the tasks."""
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "南京化工.yaml").write_text("", encoding="utf-8")
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('d', "
            f"{str(ROOT / 'dags' / 'dual_prevention.py')!r}); m = importlib.util.module_from_spec(spec);"
            " spec.loader.exec_module(m); print(m.MAPPINGS_DIR); print(m._unit_names())")
    env = {"ETL_HOME": str(tmp_path), "ETL_MAPPINGS_DIR": "units", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        **{k: v for k, v in __import__("os").environ.items() if not k.startswith("ETL_")}, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [str(tmp_path / "units"), "['南京化工']"]


def test_etl_run_chunks_by_etl_chunk_rows_unless_the_option_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--chunk-rows` once ignored ETL_CHUNK_ROWS; a chunk logs one "rows staged" line."""
    import yaml

    from etl.onboarding.demo_data import UNIT_B, make_demo_sources

    made = make_demo_sources(tmp_path / "demo")
    raw = yaml.safe_load((ROOT / "mappings" / f"{UNIT_B}.yaml").read_text(encoding="utf-8"))
    raw["source"] = {"url": f"sqlite:///{made[UNIT_B]}"}
    mapping = tmp_path / "苏州电梯.yaml"
    mapping.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")

    def chunks(*extra: str, rows: str | None = None) -> int:
        env = {k: v for k, v in __import__("os").environ.items() if k != "ETL_CHUNK_ROWS"}
        if rows:
            env["ETL_CHUNK_ROWS"] = rows
        done = subprocess.run([sys.executable, "-m", "etl", "-v", "run", str(mapping), "--tx", "09",
                               "--target", f"sqlite:///{tmp_path / 't.sqlite'}", *extra],
                              capture_output=True, text=True, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        return len(re.findall(r"苏州电梯 09: \d+ rows staged", done.stdout + done.stderr))

    assert chunks() == 1
    assert chunks(rows="20") == 3     # 47 rows
    assert chunks("--chunk-rows", "40", rows="20") == 2
