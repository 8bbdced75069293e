"""`ingest_key` (issue 23): the data key the target's encrypted values are under.

One row (`purpose` = 'data'): the key id its ciphertexts carry and a fingerprint (HKDF-SHA256 of
the key under a label of its own, hex: one-way, never the key), when and by what it was set. The
first load that stores an encrypted value writes it (the loader may INSERT, never UPDATE or
DELETE it); `etl rotate-key`, run as the owner, moves it. A load with another key, or without
one, is refused (`etl.target.crypt.check_key`). The table starts empty: a target encrypted
before this revision is checked against its values' key ids when its first load with a key
records the fingerprint.

0001 creates the baseline from the *current* metadata, so on a fresh target the table exists
already: it is created only if missing.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "ingest_key" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "ingest_key",
        sa.Column("purpose", sa.String(16), primary_key=True),
        sa.Column("keyId", sa.String(8), nullable=False,
                  comment="the key id its ciphertexts carry (enc:v1:<keyId>:...)"),
        sa.Column("fingerprint", sa.String(64), nullable=False,
                  comment="HKDF-SHA256 of the key under its own label, hex: one-way, never the key"),
        sa.Column("setAt", sa.DateTime(timezone=True), nullable=False),
        sa.Column("setBy", sa.String(200), nullable=False,
                  comment="the run that stored the first encrypted value, or etl rotate-key"),
        comment="the data key the target's encrypted values are under (etl.target.crypt; migration "
                "0010): a load with another key, or none, is refused; etl rotate-key moves it",
    )


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
