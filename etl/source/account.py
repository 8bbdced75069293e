"""Checking a unit's source before it is read: every table and column a mapping names exists, a
query is one read-only SELECT in the source's dialect (`source_problems`), and what the source
account may do beyond reading (`source_warnings`, `write_rights`)."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection, URL

from etl.common.errors import ConfigError, SourceError, SourceSchemaError
from etl.mapping import DatasetSpec, Mapping
from etl.source.connect import engine_for, read_only, resolve_url
from etl.source.extract import QueryText, guard_query, query_text, refused


def source_problems(mapping: Mapping) -> list[str]:
    """Connect to each source and check that every table and column the mapping names exists,
    and that a query is one read-only SELECT in the source's own dialect."""
    problems: list[str] = []
    for tx, ds in mapping.datasets.items():
        where = f"{mapping.path} [datasets.{tx}]"
        spec = mapping.source_for(tx)
        try:
            url = resolve_url(spec)
            engine = engine_for(url, spec)
            guard_query(mapping, tx, engine.dialect.name)
        except SourceSchemaError as e:
            problems.append(str(e))
            continue
        except ConfigError as e:
            problems.append(f"{where} {e}")
            continue
        try:
            with read_only(engine, spec.statement_timeout_s) as conn:
                present = _source_columns(conn, ds)
        except SourceError as e:
            problems.append(f"{where} {e}")
            continue
        except sa.exc.DBAPIError as e:
            problems.append(str(refused(where, ds, e, url)))
            continue
        if present is None:
            problems.append(f"{where}.table no table {ds.table!r} in the source: check its name")
            continue
        lower = {c.lower(): c for c in present}
        for col in ds.columns():
            if col not in present and col.lower() not in lower:
                problems.append(f"{where} no column {col!r} in "
                                f"{'the query' if ds.query else repr(ds.table)}: columns are "
                                f"{', '.join(sorted(present))[:300]}")
    return problems


def _source_columns(conn: Connection, ds: DatasetSpec) -> set[str] | None:
    if ds.query:
        # the query as `stream` sends it: by a server-side cursor (PostgreSQL: extended
        # protocol, one statement only), no parameter interpretation
        src = QueryText(query_text(ds)).columns().subquery("src")
        stmt = sa.select(sa.literal_column("*")).select_from(src).limit(0)
        result = conn.execution_options(stream_results=True).execute(stmt)
        try:
            return set(result.keys())
        finally:
            result.close()
    schema, _, name = ds.table.rpartition(".")  # type: ignore[union-attr]
    inspector = sa.inspect(conn)
    if not inspector.has_table(name, schema=schema or None):
        return None
    return {c["name"] for c in inspector.get_columns(name, schema=schema or None)}


# --- the source account's rights -------------------------------------------------------------


def source_warnings(mapping: Mapping) -> list[str]:
    """What `etl check` warns of without failing: a source account that can write. A
    read-only transaction does not stop every write (dblink_exec, pg_read_file, lo_import run
    inside a SELECT): only an account without those rights does."""
    out: list[str] = []
    seen: set[URL] = set()
    for tx, ds in mapping.datasets.items():
        spec = mapping.source_for(tx)
        try:
            url = resolve_url(spec)
        except ConfigError:
            continue  # reported by source_problems
        if url in seen:
            continue
        seen.add(url)
        try:
            with read_only(engine_for(url, spec), spec.statement_timeout_s) as conn:
                rights = write_rights(conn)
        except (SourceError, sa.exc.DBAPIError):
            continue
        if rights:
            key = f"datasets.{tx}.source" if ds.source else "source"
            out.append(f"{mapping.path} [{key}] warning: the source account can write "
                       f"({'; '.join(rights)[:300]}): give the ETL a read-only account without "
                       f"superuser (README, \"The source account\")")
    return out


_PG_TABLES_WRITABLE = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND left(n.nspname, 3) <> 'pg_'
  AND n.nspname <> 'information_schema'
  AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
       OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE'))
ORDER BY 1 LIMIT 4"""
_PG_SCHEMAS_CREATE = """
SELECT quote_ident(nspname) FROM pg_namespace
WHERE has_schema_privilege(oid, 'CREATE') AND left(nspname, 3) <> 'pg_'
  AND nspname <> 'information_schema' ORDER BY 1 LIMIT 4"""
_PG_ROLES = """
SELECT rolname FROM pg_roles
WHERE rolname IN ('pg_write_server_files', 'pg_read_server_files', 'pg_execute_server_program',
                  'pg_write_all_data', 'pg_signal_backend')
  AND pg_has_role(current_user, oid, 'MEMBER') ORDER BY 1"""
_MYSQL_READ_PRIVILEGES = {"SELECT", "USAGE", "SHOW VIEW"}


def write_rights(conn: Connection) -> list[str]:
    """What the connected account may do beyond reading, as short phrases (empty: read-only
    as far as can be seen). PostgreSQL and MySQL/MariaDB; SQLite has no accounts."""
    name = conn.dialect.name
    if name == "postgresql":
        out = []
        if conn.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar():
            out.append("superuser")
        if tables := conn.exec_driver_sql(_PG_TABLES_WRITABLE).scalars().all():
            out.append(f"INSERT/UPDATE/DELETE/TRUNCATE on {', '.join(tables)}")
        if schemas := conn.exec_driver_sql(_PG_SCHEMAS_CREATE).scalars().all():
            out.append(f"CREATE on schema {', '.join(schemas)}")
        if conn.exec_driver_sql("SELECT has_database_privilege(current_database(), 'CREATE')").scalar():
            out.append("CREATE on the database")
        out += [f"member of {r}" for r in conn.exec_driver_sql(_PG_ROLES).scalars().all()]
        return out
    if name in ("mysql", "mariadb"):
        out = []
        for line in conn.exec_driver_sql("SHOW GRANTS").scalars().all():
            out += _mysql_write_grants(str(line))
        return out
    return []


def _mysql_write_grants(line: str) -> list[str]:
    """`GRANT SELECT, INSERT (a, b) ON db.* TO u@h WITH GRANT OPTION` -> what goes beyond reading."""
    m = re.match(r"GRANT (.+?) ON (\S+) TO ", line, re.S)
    if not m:  # a role granted: GRANT `role` TO `user`@`host`
        role = re.match(r"GRANT (.+?) TO ", line, re.S)
        return [f"role {role.group(1)}"] if role else []
    privileges = [p.strip().upper() for p in re.sub(r"\([^)]*\)", "", m.group(1)).split(",")]
    out = [f"{p} ON {m.group(2)}" for p in privileges if p not in _MYSQL_READ_PRIVILEGES]
    if "WITH GRANT OPTION" in line.upper():
        out.append(f"GRANT OPTION ON {m.group(2)}")
    return out
