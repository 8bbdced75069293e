"""Encryption at rest (issue 14): room for ciphertext, and the blind indexes.

The personal fields that a data key encrypts (`etl.standard` `encrypted=True`: ID number,
certificate number, phones) are widened to 255 characters, as `enc:v1:<key id>:<base64>` is
longer than the plaintext (an ID number is 18), and each gets a `<field>Hmac` column (HMAC-SHA256,
hex) so that lookups still work. SQLite ignores VARCHAR lengths: nothing to widen there.

0001 creates the baseline from the *current* metadata, so on a fresh target the columns are
wide and present already: each is altered or added only where needed.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# as etl.standard's encrypted fields were at this revision (a migration never changes after
# release): table -> field names
ENCRYPTED = {
    "unit_info": ("linkTel",),
    "unit_dept": ("dLinkTel",),
    "unit_person": ("idCardNo", "certNo"),
}
WIDTH, HMAC_WIDTH = 255, 64


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table, names in ENCRYPTED.items():
        columns = {c["name"]: c for c in inspector.get_columns(table)}
        for name in names:
            col = columns[name]
            length = getattr(col["type"], "length", None)
            if bind.dialect.name != "sqlite" and length is not None and length < WIDTH:
                op.alter_column(table, name, type_=sa.String(WIDTH), existing_type=col["type"],
                                existing_nullable=col["nullable"])
            if f"{name}Hmac" not in columns:
                op.add_column(table, sa.Column(f"{name}Hmac", sa.String(HMAC_WIDTH), nullable=True,
                                               comment=f"blind index of {name} (migration 0007)"))


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
