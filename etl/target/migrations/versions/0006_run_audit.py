"""`ingest_run`: who and what ran each load (issue 14's audit trail).

`dagRunId` (the Airflow DAG run; null outside Airflow), `host`, `osUser`, `mappingHash` (sha256
of the mapping file's bytes) and `codeVersion` (package version, +g<commit> from a git
checkout). Rows written before this revision keep them null.

0001 creates the baseline from the *current* metadata, so on a fresh target the columns
exist already: each is added only if missing.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# as etl.target.RUN_AUDIT_COLUMNS was at this revision (a migration never changes after release)
RUN_AUDIT_COLUMNS = (
    ("dagRunId", 250, "the Airflow DAG run id; null outside Airflow"),
    ("host", 255, "the host the load ran on"),
    ("osUser", 128, "the OS account it ran as"),
    ("mappingHash", 64, "sha256 of the mapping file's bytes"),
    ("codeVersion", 64, "package version, +g<commit> from a git checkout"),
)


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("ingest_run")}
    for name, length, comment in RUN_AUDIT_COLUMNS:
        if name not in columns:
            op.add_column("ingest_run", sa.Column(name, sa.String(length), nullable=True,
                                                  comment=comment))


def downgrade() -> None:
    raise NotImplementedError("the target keeps every record; downgrades are not supported")
