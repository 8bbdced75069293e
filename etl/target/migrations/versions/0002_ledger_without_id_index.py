"""The ledger loses its index on ID.

Keeping a B-tree of random 52-character record IDs up to date cost about a third of writing
the ledger (7 of 24 s per million records, benchmarks/README.md), and nothing in the
pipeline looks the ledger up by ID: batches are replayed by `batchNo`, and a record's
current state is in its dataset table. A collecting organisation that traces single
records through the ledger often can create the index again (README, "Target database").

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_ingest_change_ID", table_name="ingest_change", if_exists=True)


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
