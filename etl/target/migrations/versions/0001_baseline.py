"""Baseline: the nine A.3-A.11 tables and the ingest_* bookkeeping tables.

The baseline is built from `etl.target.metadata` (itself derived from `etl.standard`), with
checkfirst so a target that predates version tracking is adopted rather than recreated. Any
later change to the schema gets a revision of its own with explicit `op` calls, and
tests/test_target.py checks that upgrading to head yields exactly the metadata.

Revision ID: 0001
Revises:
"""

from alembic import op

from etl.target.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(bind=op.get_bind(), checkfirst=True)


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
