"""`ingest_reconcile` (what `etl reconcile` found, kept for the report) and an index on
`ingest_run` that answers "the last run and the last successful run of every unit's dataset"
(`etl freshness`) from the index alone, however many runs the table holds.

0001 creates the baseline from the *current* metadata, so on a fresh target both exist
already: each is created only if missing.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "ingest_reconcile" not in inspector.get_table_names():
        op.create_table(
            "ingest_reconcile",
            sa.Column("reconcileId", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                      primary_key=True, autoincrement=True),
            sa.Column("runId", sa.String(200), nullable=False),
            sa.Column("orgNo", sa.String(18), nullable=False),
            sa.Column("txCode", sa.String(2), nullable=False),
            sa.Column("state", sa.String(10), nullable=False),
            *[sa.Column(name, sa.Integer, nullable=False) for name in (
                "sourceValid", "targetActive", "missing", "differing", "extra", "notIngested")],
            sa.Column("details", sa.Text, nullable=False),
            sa.Column("checkedAt", sa.DateTime(timezone=True), nullable=False),
            comment="one row per reconciliation (etl reconcile, 5.3) and dataset: exact counts, "
                    "and the missing, extra and differing records and rejected rows as masked, "
                    "capped JSON",
        )
        op.create_index("ix_ingest_reconcile_unit", "ingest_reconcile",
                        ["orgNo", "txCode", "reconcileId"])
    if "ix_ingest_run_latest" not in {i["name"] for i in inspector.get_indexes("ingest_run")}:
        op.create_index("ix_ingest_run_latest", "ingest_run", ["orgNo", "txCode", "status", "runKey"])


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
