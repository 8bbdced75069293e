"""The `etl` command: a thin layer that turns library errors into one line and an exit code.

Exit codes (contract): 0 the run finished (rejected rows are recorded, not fatal); 2 bad
invocation or invalid mapping, nothing written; 1 a run failed (its dataset rolled back).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

from etl import standard
from etl.common import clock, private, settings
from etl.common.errors import ConfigError, EtlError, MappingError

log = logging.getLogger("etl")


def _tx_codes(text: str) -> list[str]:
    codes = []
    for part in text.split(","):
        try:
            codes.append(standard.dataset(part).tx_code)
        except KeyError as e:
            raise argparse.ArgumentTypeError(str(e.args[0])) from None
    return codes


def _moment(text: str) -> datetime:
    """A CST wall-clock time: 2024-07-08, 2024-07-08T12:00 or 2024-07-08 12:00:00."""
    try:
        return clock.naive(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date or time: use 2024-07-08 or "
                                         f"2024-07-08T12:00") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="etl", description="Ingest special-equipment dual-prevention "
                                "data (DB32 standard, database route 5.2.1) from units' databases, and receive what units "
                                "push (interface route 5.2.2).")
    p.add_argument("-v", "--verbose", action="store_true", help="log every step")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    target_help = "target SQLAlchemy URL (default: $ETL_TARGET_URL, else sqlite:///var/target.sqlite)"

    demo = sub.add_parser("demo", help="make the demo units' sources and ingest them into the target",
                          description="Make the two demo units' SQLite sources under var/, run every "
                          "demo mapping into the target, print a summary. Running it again changes nothing.")
    demo.add_argument("--target", help=target_help)

    run = sub.add_parser("run", help="ingest units by their mapping files",
                         description="Ingest the named mapping files (or every file in mappings/ with "
                         "--all). --mode incremental without --since starts each dataset where its "
                         "last successful load ended (less lookback_hours), loads a dataset never "
                         "loaded under its key in full, and compares every source key to mark rows "
                         "deleted at the source D (hard_deletes:); a load that would mark more than "
                         "a fifth of a unit's records D is refused without --allow-mass-delete.")
    run.add_argument("mappings", nargs="*", metavar="MAPPING", help="mapping YAML files")
    run.add_argument("--all", action="store_true", help="every mapping in --mappings-dir")
    run.add_argument("--mappings-dir", default="mappings", help="folder of mapping files (default: mappings)")
    run.add_argument("--tx", type=_tx_codes, help="txCodes to run, e.g. 06,07,09 (default: all mapped)")
    run.add_argument("--mode", choices=["full", "incremental"], default="full",
                     help="full: compare the whole snapshot; incremental: rows updated in the window")
    run.add_argument("--since", type=_moment, help="incremental window start, CST "
                     "(default: where the last successful run ended)")
    run.add_argument("--until", type=_moment, help="incremental window end, CST (default: now)")
    run.add_argument("--allow-mass-delete", action="store_true",
                     help="confirm that the source really lost many records: without it, a load "
                     "that would mark more than a fifth of a unit's active records (at least 10), "
                     "or all of them, deleted is refused and loads nothing")
    run.add_argument("--target", help=target_help)
    run.add_argument("--chunk-rows", type=int, default=None,
                     help="rows per chunk (bounds memory; default ETL_CHUNK_ROWS, else 100000)")

    check = sub.add_parser("check", help="validate mapping files without loading",
                           description="Validate mapping files, check their sources' tables and "
                           "columns, and print which standard fields each dataset fills.")
    check.add_argument("mappings", nargs="+", metavar="MAPPING",
                       help="unit files, folders of them (one summary table, no coverage tables), "
                       "or templates (mappings/systems/x.yaml: checks every unit extending it)")
    check.add_argument("--offline", action="store_true", help="don't connect to the sources")
    check.add_argument("--resolved", action="store_true", help="print each mapping as it resolves "
                       "with its templates, as YAML (source URLs masked), instead of its coverage")
    check.add_argument("--mappings-dir", type=Path, help="the mappings folder of a template's units "
                       "(default: the folder above the template's, e.g. mappings/ for "
                       "mappings/systems/x.yaml)")

    onb = sub.add_parser("onboard", help="write a unit file per row of a register of units",
                         description="Write one unit file, <orgNo>.yaml in --mappings-dir, per row "
                         "of a register (CSV in UTF-8 or GB18030, or XLSX; header row: orgNo / "
                         "统一社会信用代码, comName / 单位名称, and conn_id / 连接 or url_env / "
                         "环境变量), each extending the template --extends, plus a column per "
                         "setting the template declares under per_unit: (file base 附件目录, "
                         "schema 模式, time zone 时区 ...; other columns are warned about). "
                         "Refuses rows with an invalid orgNo (GB 32100 check character) or "
                         "setting, a duplicate, an orgNo another file already holds, one line "
                         "each with its line number; the good rows are still written. Exit 2 when "
                         "any row was refused, else 0. Run again on a changed register, it updates "
                         "the files still as it wrote them and leaves alone (naming them) files "
                         "edited by hand or not its own, unless --overwrite.")
    onb.add_argument("register", type=Path, metavar="REGISTER", help="units.csv or units.xlsx")
    onb.add_argument("--extends", required=True, metavar="TEMPLATE",
                     help="the system template, relative to --mappings-dir: systems/x.yaml")
    onb.add_argument("--mappings-dir", type=Path, default=Path("mappings"),
                     help="folder of unit files (default: mappings)")
    onb.add_argument("--overwrite", action="store_true",
                     help="replace unit files that differ from their row even when edited by "
                     "hand or not written by etl onboard")

    init = sub.add_parser("init-target", help="create or upgrade the target schema in place",
                          description="Create or upgrade the target schema; harmless to repeat. "
                          "Run it as the owner (a member of etl_owner once --roles made it).")
    init.add_argument("--target", help=target_help)
    init.add_argument("--roles", action="store_true",
                      help="also create the roles etl_owner (owns the tables), etl_loader (SELECT, "
                      "INSERT; UPDATE only on current state, never on the ledger or batches: run "
                      "the loads as it), etl_reader (SELECT) and etl_unit_reader "
                      "(row-level security by orgNo), and grant them; PostgreSQL, MariaDB without "
                      "unit scope; sets no password")
    init.add_argument("--unit-roles", nargs="*", metavar="ORGNO",
                      help="with --roles: a login role etl_unit_<orgno> per unit that sees only "
                      "its unit's rows (PostgreSQL); no ORGNO: every unit the target holds")

    rec = sub.add_parser("reconcile", help="compare a unit's source with the target (5.3)",
                         description="Compare a unit's source with the target (the standard's 5.3 "
                         "confirmation): a dataset agrees when every valid source record is in "
                         "the target with equal standard fields and no other active record is. "
                         "Prints the missing, extra and differing records (masked) and the "
                         "source rows not ingested with their reasons, keeps the result in "
                         "ingest_reconcile; exit 0 when every dataset agrees, else 1.")
    rec.add_argument("mapping", metavar="MAPPING")
    rec.add_argument("--tx", type=_tx_codes, help="txCodes to compare (default: all mapped)")
    rec.add_argument("--target", help=target_help)
    rec.add_argument("--json", action="store_true", help="print the result as JSON")

    fresh = sub.add_parser("freshness", help="which units' datasets are late, failing or never loaded",
                           description="Every unit x dataset of the mapping files with its required "
                           "frequency (5.4, or the mapping's frequency:), last successful load and "
                           "status: failing (the last run failed), late (older than its period plus "
                           "a grace: daily 6 h, weekly 1 day, frequent one period; "
                           "ETL_FRESHNESS_GRACE_HOURS sets one for all), never loaded, pending "
                           "(never loaded, but its mapping file or a template it extends changed "
                           "less than a period plus the grace ago: not due yet), on time.")
    fresh.add_argument("--mappings-dir", default="mappings", help="folder of mapping files (default: mappings)")
    fresh.add_argument("--target", help=target_help)
    fresh.add_argument("--fail-late", action="store_true",
                       help="exit 1 when a mapped unit's dataset is late, failing or never "
                            "loaded (pending ones are not due yet: exit 0)")
    fresh.add_argument("--json", action="store_true", help="print the statuses as JSON")

    rep = sub.add_parser("report", help="build the report site (overview, unit pages, reconciliation)",
                         description="Build a static HTML site from the target's bookkeeping tables "
                         "and the mapping files: an overview of every unit and dataset (status, last "
                         "load, records, reject rate), a page per unit with its runs, rejects and "
                         "CSV/XLSX exports, and the last reconciliations. Opens without a network.")
    rep.add_argument("--out", help="folder to write (default: $ETL_REPORTS_DIR, else var/report)")
    rep.add_argument("--since", type=_moment, help="unit pages show runs from this CST date or time "
                     "(default: each dataset's last 20 runs)")
    rep.add_argument("--unit", action="append", metavar="NAME", help="only this unit: its mapping "
                     "name or orgNo (repeatable; default: every unit)")
    rep.add_argument("--mappings-dir", default="mappings", help="folder of mapping files (default: mappings)")
    rep.add_argument("--target", help=target_help)
    rep.add_argument("--lang", choices=["zh_CN", "en"], help="the pages' language (default: "
                     "$ETL_REPORT_LANGUAGE, else zh_CN)")

    rot = sub.add_parser("rotate-key", help="re-encrypt the personal data under a new data key",
                         description="Re-encrypt every encrypted value of the target (records and "
                         "ledger) under ETL_DATA_KEY, the new key, reading it with ETL_DATA_KEY_OLD "
                         "(the old key or keys, comma-separated); values in clear are encrypted too. "
                         "In place, in batches: rowHash, busType, batchNo and updateDate are kept, "
                         "no batch is written; rerunning finishes a stopped rotation. Prints counts.")
    rot.add_argument("--target", help=target_help)
    rot.add_argument("--batch-rows", type=int, default=1000, help="rows per transaction (default 1000)")

    dec = sub.add_parser("decrypt", help="print a unit's records with the personal data decrypted",
                         description="Print a unit's records of one dataset as JSON lines, the "
                         "encrypted fields decrypted with ETL_DATA_KEY (and ETL_DATA_KEY_OLD) and "
                         "masked unless --clear. Refused without a key.")
    dec.add_argument("--org", required=True, metavar="ORGNO", help="the unit's orgNo")
    dec.add_argument("--tx", required=True, help="the txCode, e.g. 03")
    dec.add_argument("--find", metavar="VALUE", help="only records where an encrypted field "
                     "(ID number, certificate number, phone) equals VALUE (by the blind index)")
    dec.add_argument("--clear", action="store_true", help="print the values unmasked")
    dec.add_argument("--target", help=target_help)

    sc = sub.add_parser("scaffold", help="draft a mapping from a source's tables, columns and comments",
                        description="Connect read-only to a source (URL from an environment "
                        "variable or an Airflow connection, never printed or written), read its "
                        "tables, columns, types, keys and comments, and write a draft mapping: "
                        "for each dataset the best table, for each standard field the best column "
                        "with its confidence as a comment, value maps proposed for enumerations, "
                        "and TODO for every required field not found. `etl check --offline` on "
                        "the draft fails only on its TODOs.")
    how = sc.add_mutually_exclusive_group(required=True)
    how.add_argument("--url-env", metavar="VAR", help="environment variable holding the source URL")
    how.add_argument("--conn-id", metavar="ID", help="Airflow connection of the source")
    sc.add_argument("--org", metavar="ORGNO", help="the unit's orgNo (default: TODO in the draft)")
    sc.add_argument("--name", metavar="NAME", help="the unit's comName, 单位名称 (default: TODO)")
    sc.add_argument("--out", metavar="FILE", help="write the draft here (default: print it)")
    sc.add_argument("--schema", help="the source schema to read (default: the connection's)")
    sc.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    apps = sub.add_parser("apps", help="give units credentials for the interface route (B.1)",
                          description="Per-unit credentials of the interface route (5.2.2, "
                          "Appendix B): add gives the unit an Appid and an AppSecret, printed once "
                          "(the target keeps only a scrypt hash); list shows every app with when it "
                          "was created and last used (its last token), never a secret; rotate gives "
                          "a new secret and ends the old one and its tokens; revoke ends the app and "
                          "all its tokens. Run it as the target's owner.")
    apps.add_argument("action", choices=["add", "list", "rotate", "revoke"])
    apps.add_argument("org", nargs="?", metavar="ORGNO", help="the unit's unified social credit "
                      "code (list: only this unit)")
    apps.add_argument("--target", help=target_help)

    srv = sub.add_parser("serve", help="receive units' pushed data over HTTPS (5.2.2, Appendix B)",
                         description="Serve the interface route: GET /jsdspcloud/servlet/token "
                         "(B.2) and POST /jsdspcloud/servlet/syndata (B.3), with an OpenAPI page at "
                         "/docs, into the target. HTTPS with --certfile and --keyfile; plain HTTP is "
                         "refused unless --behind-proxy. Bounds: ETL_SERVE_MAX_BODY_BYTES, "
                         "ETL_SERVE_MAX_RECORDS, ETL_SERVE_MESSAGES_PER_MINUTE, "
                         "ETL_SERVE_TIMEOUT_SECONDS; tokens last ETL_SERVE_TOKEN_SECONDS.")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8443, help="port (default 8443; 0: any free one)")
    srv.add_argument("--certfile", help="the server certificate (PEM, with its chain)")
    srv.add_argument("--keyfile", help="its private key (PEM, unencrypted; keep it 0600)")
    srv.add_argument("--behind-proxy", action="store_true", help="allow plain HTTP: a "
                     "TLS-terminating proxy is in front (its X-Forwarded-For is believed from loopback)")
    srv.add_argument("--target", help=target_help)

    af = sub.add_parser("airflow", help="run an airflow command set up for this project",
                        description="Run `airflow ARGS` (default: standalone) with this project's "
                        "settings, unless already set: AIRFLOW_HOME=var/airflow, the DAGs folder "
                        "dags/, examples off, China Standard Time, ETL_HOME; with a PostgreSQL "
                        "metadata database also its async URL. E.g. `etl airflow`, `etl airflow "
                        "dags trigger dual_prevention_daily`.")
    af.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                    help="airflow's own arguments (default: standalone)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from etl.common.masking import mask_logs

    for handler in logging.getLogger().handlers:  # whatever is logged, by us or a library
        mask_logs(handler)
    for noisy in ("alembic", "airflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings.warn_unknown_variables()  # a misspelt ETL_* is otherwise ignored without a word
    old_umask = os.umask(private.UMASK)  # targets, staging, caches, Airflow's files: owner only
    try:
        return _COMMANDS[args.command](args)
    except MappingError as e:
        print(_masked(str(e)), file=sys.stderr)
        return e.exit_code
    except EtlError as e:
        print(f"error: {_masked(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: the dataset being loaded was rolled back", file=sys.stderr)
        return 130
    except Exception as e:  # the target refused a connection or a statement: one line, not a traceback
        import sqlalchemy as sa

        if not isinstance(e, sa.exc.SQLAlchemyError):
            raise
        reason = " ".join(str(getattr(e, "orig", None) or e).split())
        print(f"error: the target database failed: {_masked(reason)[:300]}; check --target / "
              f"ETL_TARGET_URL and that the server is up", file=sys.stderr)
        return 1
    finally:
        os.umask(old_umask)


def _masked(text: str) -> str:
    from etl.common.masking import mask_message

    return mask_message(text)


def _demo(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.demo(args.target)


def _run(args: argparse.Namespace) -> int:
    from etl import commands, mapping

    paths = [Path(p) for p in args.mappings]
    if args.all:
        paths += mapping.discover(args.mappings_dir)
    if not paths:
        raise ConfigError("name mapping files, or pass --all to run every file in "
                          f"{args.mappings_dir}/")
    if args.mode == "full" and (args.since or args.until):
        raise ConfigError("--since/--until need --mode incremental")
    return commands.run(paths, tx_codes=args.tx, mode=args.mode, since=args.since,
                        until=args.until, target_url=args.target,
                        chunk_rows=args.chunk_rows or settings.integer("ETL_CHUNK_ROWS") or 1,
                        allow_mass_delete=args.allow_mass_delete, skip_invalid=args.all)


def _check(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.check([Path(p) for p in args.mappings], offline=args.offline,
                          resolved=args.resolved, mappings_dir=args.mappings_dir)


def _onboard(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.onboard(args.register, args.extends, mappings_dir=args.mappings_dir,
                            overwrite=args.overwrite)


def _init_target(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.init_target(args.target, roles=args.roles, unit_roles=args.unit_roles)


def _reconcile(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.reconcile(Path(args.mapping), tx_codes=args.tx, target_url=args.target,
                              as_json=args.json)


def _freshness(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.freshness(mappings_dir=Path(args.mappings_dir), target_url=args.target,
                              fail_late=args.fail_late, as_json=args.json)


def _report(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.build_report(args.mappings_dir, out=args.out, since=args.since, units=args.unit,
                                 target_url=args.target, lang=args.lang)


def _rotate_key(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.rotate_key(args.target, batch_rows=args.batch_rows)


def _decrypt(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.decrypt(args.org, args.tx, target_url=args.target, clear=args.clear,
                            find=args.find)


def _scaffold(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.scaffold(url_env=args.url_env, conn_id=args.conn_id, org=args.org,
                             name=args.name, out=Path(args.out) if args.out else None,
                             schema=args.schema, force=args.force)


def _apps(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.apps(args.action, args.org, target_url=args.target)


def _serve(args: argparse.Namespace) -> int:
    from etl import commands

    return commands.serve(host=args.host, port=args.port, certfile=args.certfile,
                          keyfile=args.keyfile, behind_proxy=args.behind_proxy, target_url=args.target)


def _airflow(args: argparse.Namespace) -> int:
    from etl.orchestration import airflow_env

    return airflow_env.run_airflow(args.args or ["standalone"])


_COMMANDS = {"demo": _demo, "run": _run, "check": _check, "init-target": _init_target,
             "reconcile": _reconcile, "freshness": _freshness, "report": _report, "airflow": _airflow,
             "rotate-key": _rotate_key, "decrypt": _decrypt, "scaffold": _scaffold,
             "onboard": _onboard, "apps": _apps, "serve": _serve}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
