"""Proving that a mapping's `query:` is exactly one read-only SELECT, with a real SQL parser.

A hand-made scanner cannot know every dialect's quoting (PostgreSQL's `E'\\''` and `$$...$$`,
MySQL's `'\\''`), and a `;` hidden in what it takes for a string lets a second statement
through. sqlglot parses each dialect we read from; a query passes only when every parse that
succeeds shows one statement, built only from the nodes a plain read needs (an allow-list:
anything sqlglot knows but we did not list, such as INSERT, SELECT ... INTO, FOR UPDATE, COPY,
SET, CALL, is refused), calling none of the functions known to act outside the query.

This is one control of three: the drivers are also kept from running several statements
(see `etl.source.extract`), and the real guarantee is a read-only source account without superuser
(README, "The source account"): a function list can never be complete.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

# sqlglot's dialect names for SQLAlchemy's
DIALECTS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite"}

# What a read may be built of: clauses, expressions, and functions (minus those below).
_ALLOWED: tuple[type[exp.Expression], ...] = (
    exp.Select, exp.SetOperation, exp.Subquery, exp.With, exp.CTE, exp.From, exp.Join,
    exp.Where, exp.Group, exp.Having, exp.Qualify, exp.Order, exp.Ordered, exp.Limit,
    exp.Offset, exp.Fetch, exp.Distinct, exp.Window, exp.WindowSpec, exp.Alias, exp.Aliases,
    exp.TableAlias, exp.Table, exp.Column, exp.ColumnDef, exp.Identifier, exp.Star,
    exp.Literal, exp.RawString, exp.ByteString, exp.HexString, exp.BitString, exp.National,
    exp.UnicodeString, exp.Null, exp.Boolean, exp.Var, exp.DataType, exp.DataTypeParam, exp.Func,
    exp.Binary, exp.Unary, exp.Case, exp.If, exp.Cast, exp.Interval, exp.IntervalSpan,
    exp.Tuple, exp.Array, exp.Bracket, exp.Dot, exp.Paren, exp.Lateral, exp.Unnest,
    exp.Values, exp.Collate, exp.Filter, exp.WithinGroup, exp.Kwarg, exp.Between, exp.In,
    exp.Exists, exp.Any, exp.All, exp.Is, exp.Not, exp.Escape, exp.Slice,
    exp.SessionParameter,
)

# Functions a SELECT can call that write, read server files, wait, lock or reach other
# servers. Not complete (no list can be): a read-only account is what really stops them.
SIDE_EFFECT_FUNCTIONS = frozenset({
    # PostgreSQL
    "dblink", "dblink_exec", "dblink_connect", "dblink_connect_u", "dblink_send_query",
    "dblink_open", "dblink_fetch", "pg_read_file", "pg_read_binary_file", "pg_ls_dir",
    "pg_stat_file", "pg_file_write", "lo_import", "lo_export", "lo_unlink", "lo_create",
    "lo_from_bytea", "lo_put", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
    "pg_rotate_logfile", "set_config", "nextval", "setval", "pg_sleep", "pg_sleep_for",
    "pg_sleep_until", "pg_advisory_lock", "pg_advisory_xact_lock", "pg_advisory_lock_shared",
    "pg_try_advisory_lock", "pg_notify", "query_to_xml", "query_to_xml_and_xmlschema",
    "cursor_to_xml", "pg_logical_emit_message", "pg_switch_wal", "pg_create_restore_point",
    # MySQL / MariaDB
    "load_file", "sleep", "benchmark", "get_lock", "release_lock", "release_all_locks",
    "master_pos_wait", "source_pos_wait", "sys_exec", "sys_eval",
    # SQLite
    "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer",
})

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its "falling back to Command" notes


@lru_cache(maxsize=4096)  # a province's units share a few vendors' queries; parsing one is ~2 ms
def select_problem(sql: str, dialect: str | None = None) -> str | None:
    """Why `sql` is not exactly one read-only SELECT (or WITH ... SELECT, UNION of SELECTs),
    or None when it is. `dialect` is a SQLAlchemy dialect name (postgresql, mysql, mariadb,
    sqlite): the query must then parse in it. Without one (a source not known before it is
    connected), every dialect we support is tried: each parse that succeeds must pass, and
    at least one must."""
    names = [DIALECTS.get(dialect, dialect)] if dialect else list(_SHOWN)
    parsed = 0
    for name in names:
        try:
            statements = [s for s in sqlglot.parse(sql, read=name) if s is not None]
        except (SqlglotError, ValueError):
            continue
        parsed += 1
        problem = _statement_problem(statements)
        if problem:
            return problem + ("" if dialect else f" (read as {_SHOWN[name]})")
    if not parsed:
        where = _SHOWN[names[0]] if dialect else "PostgreSQL, MySQL or SQLite"
        return f"is not SQL that {where} can parse: write one plain SELECT"
    return None


_SHOWN = {"postgres": "PostgreSQL", "mysql": "MySQL", "sqlite": "SQLite"}


def _statement_problem(statements: list[exp.Expression]) -> str | None:
    if len(statements) != 1:
        return (f"holds {len(statements)} statements: give exactly one SELECT, without `;` "
                f"between statements" if statements else "is empty: give one SELECT")
    root = statements[0]
    if not isinstance(root, exp.Query):
        return f"is {_kind(root)}, not a SELECT: give exactly one SELECT"
    for node in root.walk():
        if isinstance(node, exp.Func):
            name = _function_name(node)
            if name in SIDE_EFFECT_FUNCTIONS:
                return (f"calls {name}(), which acts outside the query (writes, files, locks, "
                        f"waits or other servers): read plain columns only")
        elif isinstance(node, exp.Placeholder):
            return "holds a parameter placeholder (:name or ?): write the value itself"
        elif not isinstance(node, _ALLOWED):
            return f"holds {_kind(node)}, which a plain read does not need: give one plain SELECT"
    return None


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql_name().lower()


_KINDS = {exp.Into: "SELECT ... INTO", exp.Lock: "a locking clause (FOR UPDATE / FOR SHARE)"}


def _kind(node: exp.Expression) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    for cls, text in _KINDS.items():
        if isinstance(node, cls):
            return text
    return node.key.upper()


# Driver options a source URL must not carry: they would let the text sent run as several
# statements (MySQL's CLIENT.MULTI_STATEMENTS is 65536 in client_flag), run SQL of its own at
# connect (init_command, option files) or read the client's files (LOAD DATA LOCAL).
_UNSAFE_MYSQL_OPTIONS = frozenset({
    "client_flag", "client_flags", "init_command", "local_infile", "allow_local_infile",
    "read_default_file", "read_default_group", "option_files", "option_groups",
})


def unsafe_url_options(url: Any) -> list[str]:
    """The query-string options of a source URL (a SQLAlchemy URL) that are refused."""
    if not url.drivername.startswith(("mysql", "mariadb")):
        return []
    return sorted(k for k in url.query if k.lower() in _UNSAFE_MYSQL_OPTIONS)
