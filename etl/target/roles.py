"""Least privilege in the target (`etl init-target --roles`): who may do what to its tables.

PostgreSQL:
* `etl_owner` (NOLOGIN) owns every pipeline table and runs the migrations: `etl init-target`
  run by a member of it (the DBA) does `SET ROLE etl_owner` first, so whatever a migration
  creates belongs to the owner, never to a person.
* `etl_loader` (LOGIN) runs the loads: SELECT and INSERT on the pipeline's tables, USAGE on
  their sequences, temporary tables (the load's stage), and beyond that only what a load needs,
  table by table (`LOADER_WRITES`): UPDATE where a row is current state (the dataset tables' U
  and D, the day's batch counter, a record's attachment), DELETE on `ingest_stage` (the Airflow
  hand-over emptied as each load commits). History is append-only: the ledger, the batches,
  runs, rejects, audits, reconciliations and the key fingerprint get no UPDATE or DELETE, and a
  table a later migration adds gets SELECT and INSERT only (default privileges) until this
  module says more. No DDL, no TRUNCATE. A stolen loader password can change a record's current
  values, but not the ledger that shows what each load stored, nor which unit a batch is of.
* `etl_reader` (LOGIN): SELECT on every pipeline table.
* `etl_unit_reader` (NOLOGIN) and one LOGIN role per unit, `etl_unit_<orgNo in lower case>`,
  member of it: row-level security on every table with `orgNo` (and on the ledger, through
  `ingest_batch`) shows a unit role only its own unit's rows. The policy reads the unit from
  `etl_unit_role` (role name -> orgNo), a table only the owner writes: a session cannot widen
  what it sees by changing a setting.

MariaDB has roles but no ownership and no row-level security: `etl_owner`, `etl_loader` and
`etl_reader` are created as roles with the same grants; unit-scoped reading is refused there.
We never set a password: the operator does, and gets the hint to.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from etl import standard
from etl.common.errors import ConfigError
from etl.target import schema as target

OWNER, LOADER, READER, UNIT_READER = "etl_owner", "etl_loader", "etl_reader", "etl_unit_reader"
UNIT_ROLE_TABLE = "etl_unit_role"
UNIT_ROLE_PREFIX = "etl_unit_"
VERSION_TABLE = "alembic_version"
#: What the loader may do beyond SELECT and INSERT, table by table; every other pipeline table
#: (the ledger `ingest_change`, `ingest_batch`, `ingest_run`, `ingest_reject`, `ingest_audit`,
#: `ingest_reconcile`, `ingest_key`) is append-only for it, as is a table a later migration adds.
LOADER_WRITES: dict[str, tuple[str, ...]] = {
    **{t.name: ("UPDATE",) for t in target.DATASET_TABLES.values()},  # U and D rewrite the current row
    "ingest_batch_seq": ("UPDATE",),  # the day's counter: gap-free batch numbers (load.allocate_batches)
    "ingest_media": ("UPDATE",),      # one current row per record and field (media.attachments.record)
    "ingest_stage": ("DELETE",),      # staged objects, removed once loaded (orchestration.staging)
}
_ORG_NO = re.compile(r"[0-9A-Z]{18}")
_MYSQL_DENIED = {1044, 1142, 1143, 1227, 1370}
_MYSQL_NO_SUCH_GRANT = 1147


def pipeline_tables() -> list[str]:
    return sorted(target.metadata.tables)


def loader_rights(name: str) -> tuple[str, ...]:
    """The loader's privileges on pipeline table `name`."""
    return ("SELECT", "INSERT", *LOADER_WRITES.get(name, ()))


def unit_tables() -> list[str]:
    """The tables a unit reader sees its own rows of: every table with `orgNo`."""
    return sorted(name for name, t in target.metadata.tables.items() if standard.UNIT_KEY in t.c)


def unit_role(org_no: str) -> str:
    if not _ORG_NO.fullmatch(org_no):
        raise ConfigError(f"--unit-roles {org_no!r}: not an orgNo (18 characters, digits and "
                          f"capital letters): name the unit by its unified social credit code")
    return UNIT_ROLE_PREFIX + org_no.lower()


def is_permission_error(e: BaseException) -> bool:
    """PostgreSQL's SQLSTATE 42501, or MySQL's error numbers (its SQLSTATE, 42000, is shared
    with syntax errors)."""
    orig = getattr(e, "orig", None)
    errno = orig.args[0] if orig is not None and orig.args else None
    return getattr(orig, "sqlstate", None) == "42501" or (isinstance(errno, int) and errno in _MYSQL_DENIED)


# --- migrations as the owner -----------------------------------------------------------------


def migrate_as_owner(conn: Connection) -> None:
    """Before a migration: on PostgreSQL, when `etl_owner` exists and the session may become it,
    `SET LOCAL ROLE etl_owner` so the objects created belong to the owner (not in a database
    `--roles` has not set up: roles are the cluster's, its schema is not the owner's there)."""
    if conn.dialect.name != "postgresql":
        return
    may = conn.execute(sa.text(
        "SELECT pg_has_role(current_user, oid, 'MEMBER') AND rolname <> current_user "
        "AND has_schema_privilege(oid, current_schema(), 'CREATE') "
        "FROM pg_roles WHERE rolname = :r"), {"r": OWNER}).scalar()
    if may:
        conn.exec_driver_sql(f'SET LOCAL ROLE "{OWNER}"')


def installed(conn: Connection) -> bool:
    """Whether `--roles` set this target up and this session may act as its owner."""
    if conn.dialect.name != "postgresql":
        return False
    return conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL AND EXISTS (SELECT 1 FROM "
                                "pg_roles WHERE rolname = :o AND pg_has_role(current_user, oid, 'MEMBER'))"),
                        {"t": UNIT_ROLE_TABLE, "o": OWNER}).scalar()


# --- setting up ----------------------------------------------------------------------------


def check_supported(engine: Engine, units: bool) -> None:
    """Refuse, before anything is done, what the target's database cannot do."""
    name = engine.dialect.name
    if name == "sqlite":
        raise ConfigError("--roles: SQLite has no roles or grants: whoever can read the file reads "
                          "everything (it is created 0600); use PostgreSQL for least privilege")
    if units and name != "postgresql":
        raise ConfigError("--unit-roles: MySQL/MariaDB have no row-level security, so a unit-scoped "
                          "reader cannot be made there: use PostgreSQL as the target for per-unit access")


def prepare(engine: Engine) -> None:
    """Before the schema is created or upgraded: the roles exist, and the owner owns whatever
    pipeline table exists already (a target set up before `--roles`) and may create in the schema."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        for role, login in ((OWNER, False), (LOADER, True), (READER, True), (UNIT_READER, False)):
            _ensure_role(conn, role, login)
        if not conn.execute(sa.text("SELECT rolsuper OR pg_has_role(current_user, :o, 'MEMBER') "
                                    "FROM pg_roles WHERE rolname = current_user"), {"o": OWNER}).scalar():
            conn.exec_driver_sql(f'GRANT "{OWNER}" TO CURRENT_USER')
        schema = _q(conn, conn.execute(sa.text("SELECT current_schema()")).scalar())
        database = _q(conn, conn.execute(sa.text("SELECT current_database()")).scalar())
        conn.exec_driver_sql(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {OWNER}")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {LOADER}, {READER}, {UNIT_READER}")
        conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {database} TO {LOADER}, {READER}, {UNIT_READER}")
        conn.exec_driver_sql(f"GRANT TEMPORARY ON DATABASE {database} TO {LOADER}")
        for name in [*pipeline_tables(), VERSION_TABLE, UNIT_ROLE_TABLE]:
            owner = conn.execute(sa.text(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(:t)"),
                {"t": name}).scalar()
            if owner is not None and owner != OWNER:
                conn.exec_driver_sql(f"ALTER TABLE {_q(conn, name)} OWNER TO {OWNER}")


def apply(engine: Engine, org_nos: list[str] | None = None) -> list[str]:
    """After the schema is at head: grants, row-level security and unit roles; returns the unit
    roles made or kept. Idempotent: a rerun leaves the catalogue as it was."""
    if engine.dialect.name in ("mysql", "mariadb"):
        with engine.begin() as conn:
            _apply_mariadb(conn)
        return []
    roles = [(unit_role(o), o) for o in (org_nos or [])]
    with engine.begin() as conn:
        for role, _ in roles:  # needs CREATEROLE: before becoming the owner
            _ensure_role(conn, role, True)
            conn.exec_driver_sql(f'GRANT "{UNIT_READER}" TO "{role}"')
        conn.exec_driver_sql(f'SET LOCAL ROLE "{OWNER}"')
        apply_privileges(conn)
        for role, org in roles:
            conn.execute(sa.text(f'INSERT INTO {UNIT_ROLE_TABLE} ("role", "orgNo") VALUES (:r, :o) '
                                 f'ON CONFLICT ("role") DO UPDATE SET "orgNo" = EXCLUDED."orgNo" '
                                 f'WHERE {UNIT_ROLE_TABLE}."orgNo" <> EXCLUDED."orgNo"'),
                         {"r": role, "o": org})
    return [r for r, _ in roles]


def held_units(engine: Engine) -> list[str]:
    """Every unit the target has a run of: `--unit-roles` without orgNos."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(target.ingest_run.c.orgNo).distinct()
                                           .order_by(target.ingest_run.c.orgNo))]


def apply_privileges(conn: Connection) -> None:
    """PostgreSQL, as the owner: what each role may do on every pipeline table that exists."""
    q = lambda name: _q(conn, name)  # noqa: E731
    schema = q(conn.execute(sa.text("SELECT current_schema()")).scalar())
    conn.exec_driver_sql(
        f'CREATE TABLE IF NOT EXISTS {UNIT_ROLE_TABLE} ("role" name PRIMARY KEY, '
        f'"orgNo" varchar(18) NOT NULL)')
    conn.exec_driver_sql(f"COMMENT ON TABLE {UNIT_ROLE_TABLE} IS 'unit roles and the orgNo each "
                         f"may read (row-level security); written by etl init-target --unit-roles'")
    present = set(conn.execute(sa.text("SELECT relname FROM pg_class WHERE relnamespace = "
                                       "current_schema()::regnamespace AND relkind IN ('r', 'p')")).scalars())
    everyone = f"{LOADER}, {READER}, {UNIT_READER}"
    for name in [*pipeline_tables(), VERSION_TABLE, UNIT_ROLE_TABLE]:
        if name not in present:
            continue
        # from everyone first (PUBLIC too): a rerun takes away what an earlier version granted
        conn.exec_driver_sql(f"REVOKE ALL ON {q(name)} FROM {everyone}, PUBLIC")
        conn.exec_driver_sql(f"GRANT SELECT ON {q(name)} TO {READER}")
        if name == VERSION_TABLE:
            conn.exec_driver_sql(f"GRANT SELECT ON {q(name)} TO {LOADER}")  # is the schema at head?
        elif name != UNIT_ROLE_TABLE:
            conn.exec_driver_sql(f"GRANT {', '.join(loader_rights(name))} ON {q(name)} TO {LOADER}")
    for seq in conn.execute(sa.text(
            "SELECT DISTINCT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
            "JOIN pg_class t ON t.oid = d.refobjid WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') "
            "AND t.relname = ANY(:t) AND t.relnamespace = current_schema()::regnamespace"),
            {"t": pipeline_tables()}).scalars():
        conn.exec_driver_sql(f"REVOKE ALL ON SEQUENCE {q(seq)} FROM {everyone}, PUBLIC")
        conn.exec_driver_sql(f"GRANT USAGE, SELECT ON SEQUENCE {q(seq)} TO {LOADER}")
        conn.exec_driver_sql(f"GRANT SELECT ON SEQUENCE {q(seq)} TO {READER}")
    # tables a later migration adds: the loader may read and append at once, never rewrite or
    # remove (until `loader_rights` says so and `etl init-target` grants it); the reader reads;
    # a unit reader sees nothing until the next `etl init-target` gives it a policy. Revoked
    # first: earlier versions gave the loader UPDATE on every future table.
    defaults = f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER} IN SCHEMA {schema}"
    for kind in ("TABLES", "SEQUENCES"):
        conn.exec_driver_sql(f"{defaults} REVOKE ALL ON {kind} FROM {LOADER}, {READER}")
    for grant in (f"SELECT ON TABLES TO {READER}", f"SELECT, INSERT ON TABLES TO {LOADER}",
                  f"USAGE, SELECT ON SEQUENCES TO {LOADER}"):
        conn.exec_driver_sql(f"{defaults} GRANT {grant}")
    mine = f'(SELECT "orgNo" FROM {UNIT_ROLE_TABLE} WHERE "role" = current_user)'
    scoped = {name: f'"{standard.UNIT_KEY}" = {mine}' for name in unit_tables() if name in present}
    if "ingest_change" in present:
        scoped["ingest_change"] = '"batchNo" IN (SELECT "batchNo" FROM ingest_batch)'  # its RLS applies
    scoped[UNIT_ROLE_TABLE] = '"role" = current_user'
    policies = set(conn.execute(sa.text("SELECT tablename || '.' || policyname FROM pg_policies "
                                        "WHERE schemaname = current_schema()")).scalars())
    for name, condition in scoped.items():
        conn.exec_driver_sql(f"GRANT SELECT ON {q(name)} TO {UNIT_READER}")
        conn.exec_driver_sql(f"ALTER TABLE {q(name)} ENABLE ROW LEVEL SECURITY")
        if f"{name}.etl_all_rows" not in policies:
            conn.exec_driver_sql(f"CREATE POLICY etl_all_rows ON {q(name)} TO {LOADER}, {READER} "
                                 f"USING (true) WITH CHECK (true)")
        if f"{name}.etl_unit_rows" not in policies:
            conn.exec_driver_sql(f"CREATE POLICY etl_unit_rows ON {q(name)} FOR SELECT "
                                 f"TO {UNIT_READER} USING ({condition})")


def _apply_mariadb(conn: Connection) -> None:
    """MariaDB: roles with the same grants; tables have no owner there (etl_owner: every right
    on the database, for whoever runs the migrations)."""
    db = _q(conn, conn.execute(sa.text("SELECT DATABASE()")).scalar())
    present = {n.lower() for n in sa.inspect(conn).get_table_names()}
    for role in (OWNER, LOADER, READER):
        conn.exec_driver_sql(f"CREATE ROLE IF NOT EXISTS {role}")
    conn.exec_driver_sql(f"GRANT ALL PRIVILEGES ON {db}.* TO {OWNER}")
    # SELECT on the database, not per table: without it MariaDB answers "command denied" rather
    # than "no such table" when the load asks whether its temporary stage exists
    conn.exec_driver_sql(f"GRANT SELECT ON {db}.* TO {READER}, {LOADER}")
    conn.exec_driver_sql(f"GRANT CREATE TEMPORARY TABLES ON {db}.* TO {LOADER}")
    for name in pipeline_tables():
        if name.lower() not in present:
            continue
        try:  # a rerun takes away what an earlier version granted (UPDATE on the ledger ...)
            conn.exec_driver_sql(f"REVOKE ALL PRIVILEGES ON {db}.{_q(conn, name)} FROM {LOADER}")
        except sa.exc.DBAPIError as e:
            if not (e.orig is not None and e.orig.args and e.orig.args[0] == _MYSQL_NO_SUCH_GRANT):
                raise
        rights = [r for r in loader_rights(name) if r != "SELECT"]  # SELECT: on the database
        conn.exec_driver_sql(f"GRANT {', '.join(rights)} ON {db}.{_q(conn, name)} TO {LOADER}")


def _ensure_role(conn: Connection, role: str, login: bool) -> None:
    can_login = conn.execute(sa.text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :r"),
                             {"r": role}).scalar()
    attr = "LOGIN" if login else "NOLOGIN"
    if can_login is None:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" {attr}')
    elif can_login != login:
        conn.exec_driver_sql(f'ALTER ROLE "{role}" {attr}')


def _q(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def hints(engine: Engine, units: list[str]) -> list[str]:
    """What the operator does next: passwords (never ours to set) and which URL runs what."""
    if engine.dialect.name in ("mysql", "mariadb"):
        return [f"roles {OWNER}, {LOADER}, {READER} (MariaDB roles: no ownership, no row-level security)",
                "give each a user with its password yourself, e.g. CREATE USER 'etl_load'@'%' "
                f"IDENTIFIED BY '...'; GRANT {LOADER} TO 'etl_load'@'%'; "
                f"SET DEFAULT ROLE {LOADER} FOR 'etl_load'@'%'",
                "loads: ETL_TARGET_URL with the loader user; `etl init-target` with a user holding "
                f"{OWNER}"]
    lines = [f"roles: {OWNER} (NOLOGIN, owns the tables), {LOADER} (LOGIN: SELECT, INSERT; UPDATE on "
             f"current state only, never on the ledger or batches), "
             f"{READER} (LOGIN: SELECT), {UNIT_READER} (NOLOGIN: its members see their unit's rows)"]
    lines += [f"unit role {r}" for r in units]
    logins = [LOADER, READER, *units]
    lines.append("set the passwords yourself (no password is set by etl): in psql "
                 + "; ".join(f"\\password {r}" for r in logins[:3]) + (" ..." if len(logins) > 3 else "")
                 + f", or ALTER ROLE {LOADER} PASSWORD '...'")
    lines.append(f"loads: ETL_TARGET_URL=postgresql://{LOADER}:***@host/db; migrations: `etl "
                 f"init-target` as a member of {OWNER} (it sets role {OWNER})")
    with engine.connect() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        if conn.execute(sa.text("SELECT has_schema_privilege(:r, :s, 'CREATE')"),
                        {"r": LOADER, "s": schema}).scalar():
            lines.append(f"warning: everyone may CREATE in schema {schema} (PostgreSQL before 15), "
                         f"{LOADER} too: REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC")
    return lines
