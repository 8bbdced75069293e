"""The library side of each CLI command: does the work, prints what a person needs to read,
returns the exit code. Errors are raised as `EtlError`s for the CLI to turn into one line."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

from etl import target
from etl.common import settings
from etl.common.errors import ConfigError, MappingError
from etl.common.masking import holds_secret, mask_url
from etl.mapping import Mapping, Mode, load_each, load_mapping, load_mappings
from etl.report import text as report

DEMO_MAPPINGS = ("mappings/demo_jinling_chem.yaml", "mappings/demo_suzhou_lift.yaml")


def _engine(target_url: str | None, *, existing: bool = False):
    """The target's engine; `existing` for commands that only read it: never created."""
    if target_url and holds_secret(target_url):
        print("warning: --target holds a password: a password on the command line is visible to "
              "other users (ps, shell history); put the URL in ETL_TARGET_URL instead",
              file=sys.stderr)
    open_ = target.connect_existing if existing else target.connect
    return open_(target.target_url(target_url), target.target_origin(target_url))


def run(paths: list[Path], *, tx_codes: list[str] | None = None, mode: Mode = "full",
        since: datetime | None = None, until: datetime | None = None,
        target_url: str | None = None, chunk_rows: int = 100_000,
        allow_mass_delete: bool = False, skip_invalid: bool = False) -> int:
    """Run the mappings. Named files must all be valid before anything connects; with
    `skip_invalid` (`--all`: a folder, as Airflow plans it) every valid unit is loaded and the
    invalid files are named at the end, one line each (exit 2)."""
    from etl import pipeline
    from etl.common.errors import EtlError
    from etl.source.connect import check_source_urls

    if skip_invalid:
        mappings, invalid = load_each(list(paths))
    else:
        mappings, invalid = load_mappings(paths), {}  # every file valid before anything connects
    for m in list(mappings):
        try:
            check_source_urls(m)
        except EtlError as e:
            if not skip_invalid:
                raise
            mappings.remove(m)
            invalid[m.path] = [str(e)]
    _check_tx_codes(mappings, tx_codes)
    results = []
    if mappings:
        from etl.target import crypt

        key = crypt.data_key()  # a malformed ETL_DATA_KEY fails here, before anything is written
        engine = _engine(target_url)
        crypt.check_target(engine, key)  # and a key that is not the target's
        run_id = pipeline.new_run_id()
        for m in mappings:
            results += pipeline.run_mapping(engine, m, tx_codes, mode=mode, since=since,
                                            until=until, run_id=run_id, chunk_rows=chunk_rows,
                                            allow_mass_delete=allow_mass_delete)
        print(report.run_summary(results))
        print(f"run {run_id} -> {mask_url(engine.url)}")
    if invalid:
        raise MappingError([f"{len(invalid)} mapping file(s) invalid, not loaded "
                            f"(`etl check FILE` lists every problem):"]
                           + [_first_problem(p, problems) for p, problems in invalid.items()])
    return 0 if all(r.status == "success" for r in results) else 1


def _first_problem(path: Path, problems: list[str]) -> str:
    """An invalid file in one line: its first problem, and how many more."""
    first = problems[0] if problems else f"{path}: invalid"
    return first + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def _check_tx_codes(mappings: list[Mapping], tx_codes: list[str] | None) -> None:
    """`--tx` asks for datasets: a unit that maps none of them is named, with what it does map
    (warning); when no unit maps any, it is a `ConfigError` rather than an empty run."""
    if not tx_codes or not mappings:
        return
    asked = ",".join(tx_codes)
    if not any(t in m.datasets for m in mappings for t in tx_codes):
        mapped = sorted({t for m in mappings for t in m.datasets})
        raise ConfigError(f"--tx {asked}: no selected mapping maps it ({len(mappings)} mapping(s); "
                          f"they map {', '.join(mapped) or 'nothing'}): pick txCodes they map")
    for m in mappings:
        missing = [t for t in tx_codes if t not in m.datasets]
        if missing:
            print(f"warning: {m.path} ({m.unit.orgNo}) maps no dataset {','.join(missing)} of "
                  f"--tx {asked}: it maps {', '.join(sorted(m.datasets))}", file=sys.stderr)


def demo(target_url: str | None = None) -> int:
    from etl.media import attachments
    from etl.onboarding.demo_data import make_demo_sources

    make_demo_sources(Path("var"))
    missing = [p for p in DEMO_MAPPINGS if not Path(p).is_file()]
    if missing:
        raise MappingError([f"{p}: demo mapping missing: run `etl demo` from the project folder"
                            for p in missing])
    code = run([Path(p) for p in DEMO_MAPPINGS], target_url=target_url)
    engine = target.connect(target.target_url(target_url), target.target_origin(target_url))
    try:
        print(attachments.summary(engine))
    finally:
        engine.dispose()
    reported = build_report(Path(DEMO_MAPPINGS[0]).parent, target_url=target_url)  # every unit
    return code or reported


def check(paths: list[Path], *, offline: bool = False, resolved: bool = False,
          mappings_dir: Path | None = None) -> int:
    """Validate unit files, folders of them (`mappings/`: units only, a summary table instead
    of each unit's coverage) and templates (a template and every unit of the mappings folder
    that extends it; a template's problem is reported once, with the units it breaks)."""

    from etl.orchestration import airflow_env
    from etl.media import attachments
    from etl.mapping import templates as tpl
    from etl.source.account import source_problems, source_warnings
    from etl.mapping import discover, load_mapping_cached

    settings.warn_unknown_variables()  # once per process: the CLI's start may have said it
    cache = settings.path("ETL_CACHE_DIR", base=Path.cwd())
    units: list[Path] = []
    problems: list[str] = []
    folder = False
    for p in paths:
        if p.is_dir():
            units += discover(p)
            folder = True
        elif (root := tpl.template_root(p, mappings_dir)) is not None:
            users = tpl.users(p, root)
            print(f"{p}: template, extended by {len(users)} unit(s) of {root}")
            units += users
            if not users:
                problems += tpl.standalone_problems(p, root)
        else:
            units.append(p)
    units = list(dict.fromkeys(units))
    loaded: dict[Path, Mapping] = {}
    failed: dict[Path, MappingError] = {}
    for p in units:
        try:
            loaded[p] = load_mapping_cached(p, cache)
        except MappingError as e:
            failed[p] = e
    by_unit: dict[Path, list[str]] = {p: [] for p in units}
    warnings: list[str] = []
    if not offline:
        for p, m in loaded.items():
            by_unit[p] += source_problems(m)
            warnings += source_warnings(m)
            base_problems, base_warnings = attachments.base_checks(m)
            by_unit[p] += base_problems
            warnings += base_warnings
    # reading local processes is not connecting to a source: --offline too
    warnings += airflow_env.environment_warnings(loaded.values())
    for p, m in loaded.items():
        if resolved:
            print(tpl.resolved_yaml(m))
        elif not folder:
            print(f"{m.path}: {m.unit.comName} ({m.unit.orgNo})"
                  + (f", extends {' -> '.join(t for t, _ in m.templates)}" if m.templates else ""))
            print(report.coverage(m, tpl.field_origins(m) if m.templates else None))
            print()
            print(report.reads_from(m, tpl.source_origins(m)))
            print()
    for w in warnings:  # not a failure: the account is the unit's to change
        print(w)
    shared: dict[str, list[str]] = {}  # a template's problem -> the units it breaks
    for p, e in failed.items():
        items = e.items if isinstance(e, tpl.ChainError) else [(str(p), q) for q in e.problems]
        for origin, line in items:
            if isinstance(e, tpl.ChainError) and origin != e.unit:
                shared.setdefault(line, []).append(e.unit)
            else:
                problems.append(line)
        by_unit[p] += [line for _, line in items]
    for line, users in shared.items():
        problems.append(_breaks(line, users))
    for p in loaded:
        problems += by_unit[p]
    if len(units) > 1 or folder:
        print(report.unit_summary([(p, loaded.get(p), len(by_unit[p])) for p in units]))
    if problems:
        raise MappingError(problems)
    print(f"{len(loaded)} mapping(s) valid" + (" (sources not checked)" if offline else ""))
    return 0



def _breaks(line: str, users: list[str]) -> str:
    """A template's problem with the units it breaks: whole paths while the line fits in
    MappingError.MAX_LINE (which cuts longer lines), then how many more, never cut mid-path."""
    head, shown = f"{line} (breaks {len(users)} unit(s): ", []
    for u in users[:20]:
        more = len(users) - len(shown) - 1
        if len(head + ", ".join(shown + [u]) + (f", … {more} more)" if more else ")")) > MappingError.MAX_LINE:
            break
        shown.append(u)
    rest = len(users) - len(shown)
    return head + ", ".join(shown + ([f"… {rest} more"] if rest else [])) + ")"

def onboard(register: Path, extends: str, *, mappings_dir: Path = Path("mappings"),
            overwrite: bool = False) -> int:
    """`etl onboard`: the refused rows and the files left alone on stderr, one line each; 2
    when any row was refused (a file left alone is named, not an error)."""
    from etl.onboarding import onboard as register_

    out = register_.onboard(register, extends, mappings_dir=mappings_dir, overwrite=overwrite)
    for line in out.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in out.refused + out.left_alone:
        print(line, file=sys.stderr)
    for path in out.updated:
        print(f"{path}: updated")
    print(f"{register}: {len(out.written)} unit file(s) written, {len(out.unchanged)} unchanged, "
          f"{len(out.refused)} row(s) refused, {len(out.updated)} updated, {len(out.left_alone)} "
          f"left alone, in {mappings_dir} (extends {extends})")
    return 2 if out.refused else 0


def init_target(target_url: str | None = None, *, roles: bool = False,
                unit_roles: list[str] | None = None) -> int:
    """Create or upgrade the schema; with `roles`, first the owner, loader and reader roles
    (`etl.target.roles`), after it their grants and row-level security; `unit_roles` (a list, empty
    for every unit the target holds) adds a login role per unit."""
    from etl.target import roles as access

    engine = _engine(target_url)
    roles = roles or unit_roles is not None
    if roles:
        access.check_supported(engine, unit_roles is not None)
        access.prepare(engine)
    before, after = target.upgrade(engine)
    where = mask_url(engine.url)
    if before == after:
        print(f"{where}: schema already at revision {after}")
    else:
        print(f"{where}: schema {'created' if before is None else 'upgraded from ' + before} "
              f"at revision {after}")
    if roles:
        units = access.apply(engine, (unit_roles or access.held_units(engine))
                             if unit_roles is not None else None)
        print("\n".join(access.hints(engine, units)))
    elif engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            again = access.installed(conn)
        if again:  # a migration may have added a table: grants and policies for it too
            access.apply(engine)
    return 0


def reconcile(path: Path, *, tx_codes: list[str] | None = None, target_url: str | None = None,
              as_json: bool = False) -> int:
    """Compare a unit's source with the target (5.3), print and keep the result
    (`ingest_reconcile`); 0 when every dataset agrees, else 1."""
    import json

    from etl import pipeline
    from etl.report import reconcile as rec

    from etl.standard.checks import is_valid_uscc

    if not path.exists() and is_valid_uscc(org := str(path).strip().upper()):
        return _reconcile_pushed(org, tx_codes, target_url, as_json)
    m = load_mapping(path)
    engine = _engine(target_url, existing=True)
    results = rec.reconcile(engine, m, tx_codes)
    run_id = pipeline.new_run_id()
    rec.save(engine, run_id, results)
    if as_json:
        print(json.dumps({"mapping": str(m.path), "orgNo": m.unit.orgNo, "runId": run_id,
                          "datasets": [r.to_dict() for r in results]}, ensure_ascii=False, indent=1))
    else:
        print(f"{m.path}: {m.unit.comName} ({m.unit.orgNo}) against {mask_url(engine.url)}")
        print(report.table(["tx", "table", "valid source rows", "target active", "missing in target",
                            "differ", "only in target", "not ingested", "state"],
                           [[r.tx_code, r.table, r.source_valid, r.target_active, r.missing_count,
                             r.differing_count, r.extra_count, r.not_ingested_count,
                             r.state + (f", {r.not_ingested_count} not ingested"
                                        if r.not_ingested_count else "")]
                            for r in results]))
        for r in results:
            if details := report.reconciliation_details(r):
                print(details)
        print(f"saved as {run_id} in ingest_reconcile")
    return 0 if results and all(r.state == "agree" for r in results) else 1


def _reconcile_pushed(org: str, tx_codes: list[str] | None, target_url: str | None,
                      as_json: bool) -> int:
    """`etl reconcile ORGNO` of a unit with no mapping file that pushes its data: there is no
    source to compare; say so for each dataset it pushed (0), or that it pushed none (2)."""
    import json

    from etl.report import reconcile as rec

    engine = _engine(target_url, existing=True)
    results = rec.pushed(engine, org, tx_codes)
    if not results:
        raise MappingError([f"{org}: no mapping file of that name, and the target holds no data "
                            f"this unit pushed over the interface: name a mapping file"])
    if as_json:
        print(json.dumps({"orgNo": org, "datasets": [r.to_dict() for r in results]},
                         ensure_ascii=False, indent=1))
    else:
        print(report.table(["tx", "table", "target active", "state"],
                           [[r.tx_code, r.table, r.target_active, r.state] for r in results]))
        print(f"{org}: {rec.NO_SOURCE}")
    return 0


def freshness(*, mappings_dir: Path = Path("mappings"), target_url: str | None = None,
              fail_late: bool = False, as_json: bool = False) -> int:
    """Every unit's datasets on time, late, failing, never loaded or pending; with `fail_late`,
    1 when any mapped unit's dataset needs attention (`freshness.needs_attention`)."""
    import json

    from etl.report import freshness as fr

    units = fr.load_units(mappings_dir)
    engine = _engine(target_url, existing=True)
    found = sorted(fr.statuses(engine, units), key=fr.sort_key)
    if as_json:
        print(json.dumps([{**s.__dict__, "last_success": s.last_success and s.last_success.isoformat(),
                           "last_run": s.last_run and s.last_run.isoformat(),
                           "due": s.due and s.due.isoformat()} for s in found],
                         ensure_ascii=False, indent=1))
    else:
        print(report.freshness(found))
    bad = [s for s in found if fr.needs_attention(s)]
    return 1 if fail_late and bad else 0


def build_report(mappings_dir: str | Path = "mappings", *, out: str | Path | None = None,
                 since: datetime | None = None, units: list[str] | None = None,
                 target_url: str | None = None, lang: str | None = None) -> int:
    """Build the report site for the units of a folder of mapping files (`units`: only those
    named by mapping name or orgNo); a file that does not load is listed as failing. 1 when a
    unit's page could not be built (one line each; the rest of the site is), else 0."""
    from etl.report import freshness
    from etl.report import site

    found = freshness.load_units(mappings_dir)
    engine = _engine(target_url, existing=True)
    left_out: set[str] = set()
    if units:
        def org(m) -> str:
            return m.unit.orgNo if isinstance(m, Mapping) else m.org_no

        pushed = _pushed_units(engine)
        unknown = [u for u in units if u not in pushed and not any(u in (m.name, org(m)) for m in found)]
        if unknown:
            raise MappingError([f"--unit {u}: no mapping file has this name or orgNo, and no unit "
                                f"of that orgNo pushed data; use a file name without .yaml or the "
                                f"unit's orgNo" for u in unknown])
        chosen = [m for m in found if m.name in units or org(m) in units]
        asked = {org(m) for m in chosen} | (pushed & set(units))
        left_out = ({org(m) for m in found} | pushed) - asked  # mapped or pushed, not asked for
        found = chosen
    built = site.build(engine, found, out, since=since, lang=lang, left_out=left_out)
    if built.kept:
        shown = ", ".join(built.kept[:site.KEPT_SHOWN]) + (
            f" … ({len(built.kept)} files)" if len(built.kept) > site.KEPT_SHOWN else "")
        print(site.visible(f"warning: report: kept {shown} in {built.index.parent}: not written by "
                           f"etl report (its manifest {site.MANIFEST} lists what it wrote, the only "
                           f"files it removes); remove them yourself if they are stale"),
              file=sys.stderr)
    for failure in built.failed:
        print(f"report: {failure.line()}; every other page was built (etl -v report shows the "
              f"traceback)", file=sys.stderr)
    print(f"report: {built.index}")
    return 1 if built.failed else 0


def _pushed_units(engine) -> set[str]:
    """The orgNos that pushed data over the interface route (`ingest_push`; none on a target
    older than migration 0012)."""
    import sqlalchemy as sa

    from etl import target

    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(target.ingest_push.name):
            return set()
        return set(conn.execute(sa.select(target.ingest_push.c.orgNo).distinct()).scalars())


def _keys(purpose: str):
    from etl.target import crypt

    key = crypt.data_key()
    if key is None:
        raise ConfigError(f"{purpose} needs the data key: set {crypt.KEY_ENV} (base64 of 32 random "
                          f"bytes; make one with {crypt.MAKE_KEY})")
    return key, crypt.old_keys()


def rotate_key(target_url: str | None = None, batch_rows: int = 1000) -> int:
    from etl.target import crypt

    new, old = _keys("etl rotate-key")
    engine = _engine(target_url, existing=True)
    target.ensure_schema(engine)
    counts = crypt.rotate(engine, new, old, batch_rows=batch_rows)
    for table, n in counts.items():
        print(f"{table}: {n} {'ledger rows' if table == 'ingest_change' else 'values'} "
              f"re-encrypted under key {new.id}")
    return 0


def decrypt(org_no: str, tx_code: str, *, target_url: str | None = None, clear: bool = False,
            find: str | None = None) -> int:
    import json

    from etl import standard
    from etl.target import crypt

    new, old = _keys("etl decrypt")
    try:
        tx = standard.dataset(tx_code).tx_code
    except KeyError as e:
        raise ConfigError(f"--tx: {e.args[0]}") from None
    engine = _engine(target_url, existing=True)
    target.ensure_schema(engine)
    try:
        rows = crypt.records(engine, org_no, tx, [new, *old], clear=clear, find=find)
    except crypt.DecryptError as e:
        raise ConfigError(f"{e}; set {crypt.OLD_KEYS_ENV} to the key(s) it was under") from None
    for r in rows:
        print(json.dumps(r, ensure_ascii=False, default=str))
    return 0


def scaffold(*, url_env: str | None, conn_id: str | None, org: str | None, name: str | None,
             out: Path | None, schema: str | None, force: bool) -> int:
    from etl.onboarding import scaffold as drafting
    from etl.standard.checks import is_valid_uscc
    from etl.common.errors import SourceError

    if org is not None and not is_valid_uscc(org.strip().upper()):
        raise ConfigError(f"--org {org[:40]!r} is not an 18-character unified social credit code "
                          f"with a valid check character")
    try:
        text = drafting.run(url_env=url_env, conn_id=conn_id, org=org and org.strip().upper(),
                            name=name, out=out, schema=schema, force=force)
    except SourceError as e:  # the driver's reason, never the URL
        where = f"env {url_env}" if url_env else f"Airflow connection {conn_id}"
        reason = str(e).split(": ", 1)[-1] if str(e).startswith("cannot connect") else str(e)
        raise SourceError(f"cannot read the source of {where}: {reason}") from None
    if out is None:
        sys.stdout.write(text)
    else:
        todos = sum(1 for line in text.splitlines() if re.search(r":\s*TODO\b", line))
        print(f"{out}: draft written ({todos} TODO); check it with `etl check --offline {out}`")
    return 0


def _apps_engine(target_url: str | None):
    """The target for `etl apps` and `etl serve`: never created here (a mistyped URL is no
    target), upgraded to the code's schema when this account may (the owner)."""
    engine = _engine(target_url, existing=True)
    target.ensure_schema(engine)
    return engine


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def apps(action: str, org_no: str | None, *, target_url: str | None = None) -> int:
    """`etl apps add|list|rotate|revoke`: a unit's Appid and AppSecret (B.1). The secret is
    printed once, here; the target keeps only its hash."""
    from etl.interface import apps as credentials

    if action != "list" and not org_no:
        raise ConfigError(f"etl apps {action} needs the unit's ORGNO")
    if org_no:
        org_no = credentials.unit(org_no)  # refused before anything connects
    engine = _apps_engine(target_url)
    try:
        if action == "list":
            rows = [a for a in credentials.list_apps(engine) if not org_no or a.org_no == org_no]
            print(f"{'orgNo':<18}  {'appid':<16}  {'created':<16}  {'last used':<16}  state")
            for a in rows:
                print(f"{a.org_no:<18}  {a.app_id:<16}  {_when(a.created_at):<16}  "
                      f"{_when(a.last_used):<16}  {a.state}")
            print(f"{len(rows)} app(s) -> {mask_url(engine.url)}")
            return 0
        if action == "revoke":
            app, ended = credentials.revoke(engine, org_no)
            print(f"revoked app {app.app_id} of {app.org_no} and {ended} token(s): it can no "
                  f"longer push; `etl apps add {app.org_no}` gives it new credentials")
            return 0
        if action == "add":
            app, secret = credentials.add(engine, org_no)
            done = "added"
        else:
            app, secret, ended = credentials.rotate(engine, org_no)
            done = f"rotated ({ended} token(s) of the old secret revoked)"
        print(f"orgNo   {app.org_no}\nappid   {app.app_id}\nsecret  {secret}")
        print(f"{done}: the secret is shown this once and stored only as a hash; give it to the "
              f"unit over a safe channel", file=sys.stderr)
        return 0
    finally:
        engine.dispose()


def serve(*, host: str, port: int, certfile: str | None, keyfile: str | None,
          behind_proxy: bool, target_url: str | None = None) -> int:
    """`etl serve`: the interface route's HTTPS service on the target, until stopped."""
    from etl.interface import service

    settings_ = service.ServeSettings.from_environment()
    engine = _apps_engine(target_url)
    try:
        service.serve(engine, settings_, host=host, port=port, certfile=certfile, keyfile=keyfile,
                      behind_proxy=behind_proxy,
                      say=lambda line: print(line, file=sys.stderr if line.startswith("warning")
                                             else sys.stdout, flush=True))
    except KeyboardInterrupt:
        pass
    finally:
        engine.dispose()
    print("stopped", flush=True)
    return 0
