"""`validate.findings` computes a frame's findings with our own column-wise checks
(`validate._failures`, issue 26); pandera runs the very same checks (`validate.schema`) when one
of them raises. Both paths must give identical findings, field by field, in the one agreed
order (`validate.Failure`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from etl import pipeline, standard
from etl.common import clock
from etl.mapping import load_mapping
from etl.onboarding import demo_data
from etl.standard import validate
from etl.standard.clean import Audit
from test_properties import VALUES, dirty_frames, mapping_for

PROJECT = Path(__file__).resolve().parent.parent


def cleaned(raw: pd.DataFrame, p: pipeline.Plan) -> pd.DataFrame:
    """A raw chunk as `validate.findings` sees it in `prepare`."""
    from etl.pipeline import transform
    from etl.standard.clean import binary_values, clean_frame

    frame = transform.apply_mapping(raw.reset_index(drop=True), p.mapping, p.tx_code)
    frame, _ = binary_values(frame, p.dataset)
    return clean_frame(frame, p.dataset, Audit())


def plan_for(ds: standard.Dataset, tmp_path: Path) -> pipeline.Plan:
    return pipeline.Plan(mapping_for(ds, tmp_path / "unit.yaml"), ds.tx_code, "full", "prop",
                         datetime(2024, 6, 1, tzinfo=clock.CST))


#: both ways `_failures` has: per value over lists (small frames), per column (large ones)
BOTH_WAYS = pytest.mark.parametrize("small_rows", [validate.SMALL_ROWS, 0], ids=["lists", "columns"])


@BOTH_WAYS
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=dirty_frames())
def test_random_frames_give_pandera_s_findings(case, small_rows, tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "SMALL_ROWS", small_rows)
    ds, raw = case
    frame = cleaned(raw, plan_for(ds, tmp_path))
    assert validate.findings(frame, ds) == validate.pandera_findings(frame, ds)


@st.composite
def larger_frames(draw):
    """Up to 60 rows of any dataset, some rows dropped (as `_check_chunk` drops deleted ones):
    many more failure cases than the 16 up to which numpy's quicksort keeps ties in order
    (pandera sorts its failure cases by one), and an index with gaps."""
    ds = draw(st.sampled_from(standard.DATASETS))
    n = draw(st.integers(17, 60))
    pool = draw(st.lists(VALUES, min_size=3, max_size=8))
    cols = {f: draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n)) for f in ds.field_names}
    cols["id"] = list(range(n))
    keep = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return ds, pd.DataFrame(cols, dtype=object), keep


@BOTH_WAYS
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=larger_frames())
def test_larger_frames_give_pandera_s_findings_in_the_agreed_order(case, small_rows, tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "SMALL_ROWS", small_rows)
    ds, raw, keep = case
    frame = cleaned(raw, plan_for(ds, tmp_path))
    live = frame[keep]
    assert validate.findings(live, ds) == validate.pandera_findings(live, ds)


@BOTH_WAYS
def test_the_agreed_order_is_frame_checks_then_fields_then_rules_then_rows(small_rows, monkeypatch):
    monkeypatch.setattr(validate, "SMALL_ROWS", small_rows)
    ds = standard.dataset("09")
    n = 20  # more failure cases than pandera's sort keeps in order by chance
    cols = {f.name: [None] * n for f in ds.fields}
    cols.update(regNo=["bad"] * n, troubleType=["x"] * n, checkDate=["2024-06-02"] * n,
                limitDate=["2024-06-01"] * n)
    frame = pd.DataFrame(cols, dtype="str", index=range(100, 100 + n))
    got = [(f.field, f.rule, f.row) for f in validate.findings(frame, ds)]
    fields = [f.name for f in ds.fields]
    rules = {name: ["required"] + [r for r, *_ in checks]
             for name, _, checks in validate._checks("09")[0]}
    assert got[:n] == [("limitDate", "date_order", i) for i in frame.index]
    columns = got[n:]
    assert columns == sorted(columns, key=lambda x: (fields.index(x[0]), rules[x[0]].index(x[1]), x[2]))
    assert {(f, r) for f, r, _ in columns} >= {("taskNo", "required"), ("regNo", "regno"),
                                               ("troubleType", "enum")}
    assert got == [(f.field, f.rule, f.row) for f in validate.pandera_findings(frame, ds)]


@BOTH_WAYS
def test_a_check_that_raises_is_left_to_pandera(small_rows, monkeypatch):
    monkeypatch.setattr(validate, "SMALL_ROWS", small_rows)
    ds = standard.dataset("09")
    frame = pd.DataFrame({f.name: pd.Series([None], dtype="str") for f in ds.fields})
    columns, frame_checks = validate._checks("09")

    def broken(s):
        raise ValueError("broken check")

    monkeypatch.setattr(validate, "_checks",
                        lambda tx: (columns, [("date_order:checkDate:limitDate", broken, broken)]))
    assert not validate._passes(frame, "09")
    assert validate.findings(frame, ds) == validate.pandera_findings(frame, ds)
    assert {f.rule for f in validate.findings(frame, ds)} == {"required"}


def test_the_demo_units_give_pandera_s_findings(tmp_path):
    paths = demo_data.make_demo_sources(tmp_path / "var")
    clean = checked = 0
    for unit in (demo_data.UNIT_A, demo_data.UNIT_B):
        text = (PROJECT / "mappings" / f"{unit}.yaml").read_text(encoding="utf-8")
        text = text.replace(f"url: sqlite:///var/{unit}.sqlite", f"url: sqlite:///{paths[unit]}")
        text = text.replace("base: var/", f"base: {tmp_path / 'var'}/")
        path = tmp_path / f"{unit}.yaml"
        path.write_text(text, encoding="utf-8")
        m = load_mapping(path)
        for tx in sorted(m.datasets):
            p = pipeline.Plan(m, tx, "full", "t", datetime(2024, 6, 1, tzinfo=clock.CST))
            for raw in pipeline.extract_chunks(p):
                frame = cleaned(raw, p)
                found = validate.findings(frame, p.dataset)
                assert found == validate.pandera_findings(frame, p.dataset)
                checked += 1
                clean += not found
    assert checked >= 10 and 0 < clean < checked


def test_a_required_field_left_empty_is_not_passed():
    ds = next(d for d in validate.standard.DATASETS if any(f.required for f in d.fields))
    frame = pd.DataFrame({f.name: pd.Series([None], dtype="str") for f in ds.fields})
    assert not validate._passes(frame, ds.tx_code)
    assert any(f.rule == "required" for f in validate.findings(frame, ds))
