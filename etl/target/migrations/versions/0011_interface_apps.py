"""`ingest_app` and `ingest_token` (issue 27): the interface route's credentials.

One row per unit's app (B.1): its public Appid, the scrypt hash of its AppSecret (never the
secret), a generation raised by each rotation, its state. One row per access token issued (B.2):
the SHA-256 of the token (never the token), the app and generation it belongs to, when it was
issued and expires, and when `etl apps rotate|revoke` revoked it. The service (run as the loader)
appends tokens; only the owner's `etl apps` changes a row.

0001 creates the baseline from the *current* metadata, so on a fresh target the tables exist
already: each is created only if missing.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "ingest_app" not in present:
        op.create_table(
            "ingest_app",
            sa.Column("appId", sa.String(32), primary_key=True,
                      comment="the unit's Appid (B.1): random, public"),
            sa.Column("orgNo", sa.String(18), nullable=False),
            sa.Column("secretHash", sa.String(200), nullable=False,
                      comment="scrypt of the AppSecret with its salt and parameters; never the secret"),
            sa.Column("generation", sa.Integer, nullable=False,
                      comment="raised by each rotation: a token of an earlier secret is refused"),
            sa.Column("state", sa.String(10), nullable=False, comment="active or revoked"),
            sa.Column("createdAt", sa.DateTime(timezone=True), nullable=False),
            sa.Column("rotatedAt", sa.DateTime(timezone=True), nullable=True),
            sa.Column("revokedAt", sa.DateTime(timezone=True), nullable=True),
            comment="the interface route's credentials (5.2.2, B.1; etl.interface.apps; migration "
                    "0011): one Appid and the hash of its AppSecret per unit, written by `etl apps` "
                    "as the owner",
        )
        op.create_index("ix_ingest_app_orgNo", "ingest_app", ["orgNo"])
    if "ingest_token" not in present:
        op.create_table(
            "ingest_token",
            sa.Column("tokenHash", sa.String(64), primary_key=True,
                      comment="SHA-256 of the access_token, hex; never the token"),
            sa.Column("appId", sa.String(32), nullable=False),
            sa.Column("generation", sa.Integer, nullable=False,
                      comment="the app's generation it was issued under"),
            sa.Column("issuedAt", sa.DateTime(timezone=True), nullable=False),
            sa.Column("expiresAt", sa.DateTime(timezone=True), nullable=False),
            sa.Column("revokedAt", sa.DateTime(timezone=True), nullable=True),
            comment="access tokens issued (B.2; migration 0011): appended by the service, revoked "
                    "by `etl apps rotate|revoke` as the owner",
        )
        op.create_index("ix_ingest_token_app", "ingest_token", ["appId", "issuedAt"])


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
