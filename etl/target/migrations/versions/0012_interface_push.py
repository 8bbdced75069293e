"""`ingest_push` (issue 27): the messages units pushed over the interface route (5.2.2, B.3).

One row per (orgNo, txCode, the unit's batchNo): the digest of what it carried, our batch
numbers it loaded under, the answer given, the run and when. Written in the transaction of the
load it records, so a repeat is answered from it and loads nothing twice, and of two concurrent
copies only one commits (the primary key). Append-only for the loader.

0001 creates the baseline from the *current* metadata, so on a fresh target the table exists
already: it is created only if missing.

Revision ID: 0012
Revises: 0011 (re-chained to 0011 when merged with the service side)
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "ingest_push" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "ingest_push",
        sa.Column("orgNo", sa.String(18), primary_key=True),
        sa.Column("txCode", sa.String(2), primary_key=True),
        sa.Column("unitBatchNo", sa.String(16), primary_key=True,
                  comment="the unit's batchNo of the B.3 message (not ours: batches holds ours)"),
        sa.Column("digest", sa.String(64), nullable=False,
                  comment="sha256 of the message's busType and data: a repeat must match it"),
        sa.Column("batches", sa.String(100), nullable=False,
                  comment="our batch numbers it loaded under, as JSON {busType: batchNo}"),
        sa.Column("answer", sa.Text, nullable=False, comment="the answer given, as JSON"),
        sa.Column("runId", sa.String(200), nullable=False),
        sa.Column("receivedAt", sa.DateTime(timezone=True), nullable=False),
        comment="one row per message a unit pushed (5.2.2, B.3; etl.interface.receive; migration "
                "0012): a repeat of (orgNo, txCode, unitBatchNo) is answered from it and loads nothing",
    )


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
