"""`ingest_run.keyColumns` and `ingest_run.sweptKeys` (issue 21: a unit's life on the schedule).

`keyColumns`: the mapping's source key columns (JSON) the run identified records by. A
dataset with no successful load under its current key (a new unit, a newly mapped dataset, a
changed key) is loaded in full by its next scheduled run; rows written before this revision
keep it null and count as loaded under any key (an upgrade starts no full loads).
`sweptKeys`: how many source keys the run compared with the target's active records to find
hard deletes (null: no comparison).

0001 creates the baseline from the *current* metadata, so on a fresh target the columns
exist already: each is added only if missing.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("ingest_run")}
    if "keyColumns" not in columns:
        op.add_column("ingest_run", sa.Column(
            "keyColumns", sa.String(500), nullable=True,
            comment="the source key columns (JSON) records were identified by"))
    if "sweptKeys" not in columns:
        op.add_column("ingest_run", sa.Column(
            "sweptKeys", sa.Integer, nullable=True,
            comment="source keys compared with the target to find hard deletes; null: none"))


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
