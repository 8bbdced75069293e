"""The staging table `ingest_stage`: where Airflow tasks hand data to each other.

Tasks of one unit may run on different workers (CeleryExecutor), so a worker's local disk
cannot hold what extract passes to load; every worker reaches the target (`etl.orchestration.staging`).
On PostgreSQL the table is UNLOGGED: staged objects are scratch that an extract rewrites,
so they need not cost WAL (nor reach standbys), and a crash that empties the table only
makes the load ask for its extract again.

0001 creates the baseline from the *current* metadata, so on a fresh target the table
exists already: it is created only if missing, and made unlogged if it is not.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_stage",
        sa.Column("stageKey", sa.String(400)
                  .with_variant(postgresql.VARCHAR(400, collation="C"), "postgresql")
                  .with_variant(mysql.VARCHAR(400, charset="ascii", collation="ascii_bin"),
                                "mysql", "mariadb"),
                  primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
                  nullable=False),
        sa.Column("createdAt", sa.DateTime(timezone=True), nullable=False),
        comment="scratch: objects Airflow tasks hand each other (etl.orchestration.staging), in parts of at "
                "most 4 MiB; UNLOGGED on PostgreSQL",
        if_not_exists=True,
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        persistence = bind.execute(sa.text(
            "SELECT relpersistence FROM pg_class WHERE oid = to_regclass('ingest_stage')")).scalar()
        if persistence != "u":
            op.execute("ALTER TABLE ingest_stage SET UNLOGGED")


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
