"""Attachments (issue 15): `ingest_media`, the file behind each record's M field.

One current row per record `ID` and field: the file's sha256 (its content is in the media
store, `etl.media.files.MediaStore`), size, type by content, original name, masked source location,
the source's size and modification time, when and by which run it was fetched. Rows are
updated when the file changes, never deleted (the loader has no DELETE).

0001 creates the baseline from the *current* metadata, so on a fresh target the table exists
already: it is created only if missing.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "ingest_media" in inspector.get_table_names():
        return
    op.create_table(
        "ingest_media",
        sa.Column("ID", sa.String(64), primary_key=True),
        sa.Column("field", sa.String(50), primary_key=True),
        sa.Column("orgNo", sa.String(18), nullable=False),
        sa.Column("txCode", sa.String(2), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mediaType", sa.String(100), nullable=False),
        sa.Column("name", sa.String(500), nullable=False),
        sa.Column("location", sa.String(1000), nullable=False),
        sa.Column("sourceSize", sa.BigInteger, nullable=True),
        sa.Column("sourceMtime", sa.String(64), nullable=True),
        sa.Column("fetchedAt", sa.DateTime(timezone=True), nullable=False),
        sa.Column("runId", sa.String(200), nullable=False),
        comment="the file behind each record's M field (etl.media.attachments; migration 0008): one "
                "current row per record and field, its content in the media store by sha256",
    )
    op.create_index("ix_ingest_media_unit", "ingest_media", ["orgNo", "txCode"])
    op.create_index("ix_ingest_media_sha256", "ingest_media", ["sha256"])


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
