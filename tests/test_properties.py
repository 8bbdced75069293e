"""Property: whatever a source holds, the pipeline never crashes and every row ends loaded or
rejected with a reason (hypothesis throws strings, numbers, dates and NULLs at every field)."""

from __future__ import annotations

import itertools
from datetime import date, datetime

import pandas as pd
from hypothesis import HealthCheck, given, settings, strategies as st

from etl import pipeline, standard, target
from etl.common import clock
from etl.mapping import Mapping, MappingModel
from etl.standard.clean import Audit
from etl.target.frame import REJECTED
from helpers import ORG_A, rows_of

VALUES = st.one_of(
    st.none(), st.text(max_size=30), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
    st.dates(min_value=date(1, 1, 1)), st.datetimes(min_value=datetime(1900, 1, 1)),
    st.sampled_from(["", "  ", "是", "Y", "0", "1", "2024/7/8", "2024年7月8日", "0000-00-00",
                     "重大", "公司(厂)级", "爆炸,泄漏", "３２０１０２", "江苏省南京市", "玄武区",
                     "11010519491231002X", "13800138000", "已整改", "合格"]),
)


def mapping_for(ds: standard.Dataset, path) -> Mapping:
    model = MappingModel.model_validate({
        "unit": {"orgNo": ORG_A, "comName": "南京某某化工有限公司"},
        "source": {"url": "sqlite:///unused.sqlite"},
        "datasets": {ds.tx_code: {"table": "t", "key": ["id"], "fields": {f: f for f in ds.field_names}}},
    })
    return Mapping(path, model)


@st.composite
def dirty_frames(draw):
    ds = draw(st.sampled_from(standard.DATASETS))
    n = draw(st.integers(1, 6))
    cols = {f: draw(st.lists(VALUES, min_size=n, max_size=n)) for f in ds.field_names}
    cols["id"] = list(range(n))
    return ds, pd.DataFrame(cols, dtype=object)


counter = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=dirty_frames())
def test_every_row_is_loaded_or_rejected_with_a_reason(case, tmp_path):
    ds, raw = case
    url = f"sqlite:///{tmp_path / f't{next(counter)}.sqlite'}"
    m = mapping_for(ds, tmp_path / "unit.yaml")
    p = pipeline.Plan(m, ds.tx_code, "full", "prop", datetime(2024, 6, 1, tzinfo=clock.CST))
    audit = Audit()
    prepared = pipeline.prepare(raw, p, audit)
    rejected = prepared.frame[REJECTED] == 1
    errors = prepared.findings[prepared.findings["severity"] == "error"]
    assert set(errors["pos"]) == set(prepared.frame.index[rejected])  # a reason for each rejection
    engine = target.connect(url)
    result = pipeline.load(engine, p, [prepared], audit)
    engine.dispose()
    c = result.counts
    assert result.status == "success" and c.balanced()
    assert c.inserted + c.rejected + c.duplicates + c.unchanged == len(raw)
    assert len(rows_of(url, ds.table)) == c.inserted
