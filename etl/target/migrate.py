"""Creating and upgrading the target's schema in place (Alembic, `migrations/`), as its owner
once least-privilege roles exist (`etl.target.roles`)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl.common.errors import TargetSchemaError
from etl.target import roles

MIGRATIONS = Path(__file__).with_name("migrations")


def _alembic_config(connection: Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


@cache
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Create or upgrade the target schema in place; returns (revision before, after)."""
    from alembic import command

    with engine.begin() as conn:
        before = current_revision(conn)
        if before != head_revision():
            roles.migrate_as_owner(conn)
            try:
                command.upgrade(_alembic_config(conn), "head")
            except sa.exc.DBAPIError as e:
                if not roles.is_permission_error(e):
                    raise
                raise TargetSchemaError(
                    f"the target schema is at {before or 'nothing (empty)'}, the code needs "
                    f"{head_revision()}: run `etl init-target` as the owner ({roles.OWNER} or a "
                    f"member of it)") from None
    return before, head_revision()


_ready: set[str] = set()


def ensure_schema(engine: Engine) -> None:
    """Upgrade once per process and target: `etl run` creates the schema on first use."""
    key = engine.url.render_as_string(hide_password=False)
    if key not in _ready:
        upgrade(engine)
        _ready.add(key)
