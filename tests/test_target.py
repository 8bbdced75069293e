"""The target schema: derived from the standard, created and upgraded by Alembic, on all three."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from etl import standard, target


def test_every_dataset_has_its_table_with_the_standards_columns():
    for ds in standard.DATASETS:
        t = target.metadata.tables[ds.table]
        names = [c.name for c in t.columns]
        assert names[:5] == ["ID", "batchNo", "txCode", "busType", "updateDate"]
        assert set(ds.field_names) <= set(names) and "orgNo" in names
        assert t.c.ID.primary_key and t.c.ID.type.length == 64


def test_aera_code_keeps_the_standards_spelling():
    assert "aeraCode" in target.metadata.tables["unit_info"].c


def test_init_creates_then_is_harmless(db_url):
    engine = target.connect(db_url)
    assert target.upgrade(engine) == (None, target.head_revision())
    assert target.upgrade(engine) == (target.head_revision(), target.head_revision())
    tables = set(sa.inspect(engine).get_table_names())
    assert {ds.table for ds in standard.DATASETS} | {
        "ingest_batch", "ingest_change", "ingest_reject", "ingest_run"} <= tables
    engine.dispose()


def test_upgraded_schema_matches_the_metadata(db_url):
    engine = target.connect(db_url)
    target.upgrade(engine)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), target.metadata)
    relevant = [d for d in diffs if d[0] not in ("remove_table",)]
    assert relevant == []
    engine.dispose()


def test_a_target_without_version_tracking_is_adopted(db_url):
    engine = target.connect(db_url)
    target.metadata.create_all(engine)  # an older release made it, without alembic_version
    assert target.upgrade(engine) == (None, target.head_revision())
    engine.dispose()


def test_a_target_made_at_the_baseline_loses_the_ledgers_id_index(db_url):
    """0002: a target created before it (with ix_ingest_change_ID) is upgraded in place."""
    engine = target.connect(db_url)
    target.upgrade(engine)
    with engine.begin() as conn:
        q = conn.dialect.identifier_preparer.quote  # (an sa.Index would join the metadata)
        conn.exec_driver_sql(f"CREATE INDEX {q('ix_ingest_change_ID')} ON ingest_change ({q('ID')})")
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    assert target.upgrade(engine) == ("0001", target.head_revision())
    indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("ingest_change")}
    assert "ix_ingest_change_ID" not in indexes and "ix_ingest_change_batchNo" in indexes
    engine.dispose()
