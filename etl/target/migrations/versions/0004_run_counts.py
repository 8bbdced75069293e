"""`ingest_run.skippedDeleted` and `ingest_run.overridden`.

`skippedDeleted`: source rows soft-deleted before they were ever loaded. They were counted as
`unchanged`, which hid them among records that were loaded and did not change; the accounting
now names them (extracted = inserted + updated + deleted + unchanged + rejected + duplicates +
skippedDeleted). `overridden`: rows that loaded only because the mapping's `checks:` lowered an
error to a warning (a unit with known legacy data).

0001 creates the baseline from the *current* metadata, so on a fresh target the columns
exist already: each is added only if missing.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("ingest_run")}
    for name in ("skippedDeleted", "overridden"):
        if name not in columns:
            op.add_column("ingest_run", sa.Column(name, sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
