"""`validate.findings` skips pandera for a frame that breaks none of the schema's checks
(`validate._passes`, issue 26): both ways must give identical findings."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from hypothesis import HealthCheck, given, settings

from etl import pipeline
from etl.common import clock
from etl.mapping import load_mapping
from etl.onboarding import demo_data
from etl.standard import validate
from etl.standard.clean import Audit
from test_properties import dirty_frames, mapping_for

PROJECT = Path(__file__).resolve().parent.parent


def pandera_findings(frame: pd.DataFrame, ds) -> list[validate.Finding]:
    """The findings as pandera alone gives them (the path before the shortcut)."""
    try:
        validate.schema(ds.tx_code).validate(frame[list(ds.field_names)], lazy=True)
    except pa.errors.SchemaErrors as err:
        return validate._to_findings(err.failure_cases, frame, ds)
    return []


def cleaned(raw: pd.DataFrame, p: pipeline.Plan) -> pd.DataFrame:
    """A raw chunk as `validate.findings` sees it in `prepare`."""
    from etl.pipeline import transform
    from etl.standard.clean import binary_values, clean_frame

    frame = transform.apply_mapping(raw.reset_index(drop=True), p.mapping, p.tx_code)
    frame, _ = binary_values(frame, p.dataset)
    return clean_frame(frame, p.dataset, Audit())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=dirty_frames())
def test_random_frames_give_pandera_s_findings(case, tmp_path):
    ds, raw = case
    p = pipeline.Plan(mapping_for(ds, tmp_path / "unit.yaml"), ds.tx_code, "full", "prop",
                      datetime(2024, 6, 1, tzinfo=clock.CST))
    frame = cleaned(raw, p)
    assert validate.findings(frame, ds) == pandera_findings(frame, ds)


def test_the_demo_units_give_pandera_s_findings_and_clean_ones_skip_it(tmp_path):
    paths = demo_data.make_demo_sources(tmp_path / "var")
    skipped = checked = 0
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
                fields = frame[list(p.dataset.field_names)]
                assert validate.findings(frame, p.dataset) == pandera_findings(frame, p.dataset)
                checked += 1
                skipped += validate._passes(fields, tx)
    assert checked >= 10 and 0 < skipped < checked


def test_a_required_field_left_empty_is_not_passed():
    ds = next(d for d in validate.standard.DATASETS if any(f.required for f in d.fields))
    frame = pd.DataFrame({f.name: pd.Series([None], dtype="str") for f in ds.fields})
    assert not validate._passes(frame, ds.tx_code)
    assert any(f.rule == "required" for f in validate.findings(frame, ds))
