"""Timeliness (4.2, 5.4): whether each unit delivered each dataset as often as it must.

Read from the target's bookkeeping (`ingest_run`) and the mapping files: the mappings say which
units and datasets are expected and how often (the standard's 5.4, or a dataset's
`frequency:`); the runs say when each last loaded. A few GROUP BY statements answer for every
unit at once, so thousands of units cost what one does.

Freshness speaks about data, not about the deployment: a dataset nobody could have loaded yet
(its mapping appeared less than a period and a grace ago) is `pending`, not late. The mapping's
age is its file's modification time, and its templates' (a stat per file, each template once).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import standard, target
from etl.common import clock, settings
from etl.common.errors import MappingError
from etl.target.history import PUSH_MODE
from etl.mapping import Mapping, discover, load_mapping_cached, period_minutes, raw_org_no

STATUSES = ("on_time", "late", "failing", "never", "pending")
#: How the terminal and the report order statuses: what needs attention first.
ORDER = ("failing", "late", "never", "pending", "on_time")
GRACE_ENV = "ETL_FRESHNESS_GRACE_HOURS"
#: How a unit's dataset reaches the target (5.2): pulled from its database by a mapping (5.2.1),
#: or pushed by the unit over the interface (5.2.2; runs of mode `push`, no mapping file).
DATABASE, INTERFACE = "database", "interface"


@dataclass(frozen=True)
class DatasetStatus:
    mapping: str          # mapping file stem ("" when only known from the target)
    org_no: str
    com_name: str         # from the mapping, else ""
    tx_code: str
    frequency: str        # daily | weekly | hourly | 15min ...
    last_success: datetime | None   # startedAt of the last successful ingest_run (aware, CST):
                                    # the moment its data is as of (its run's `now`)
    last_run: datetime | None
    status: str           # "on_time" | "late" | "failing" | "never" | "pending" (first load not yet due)
    message: str | None   # failing: the last failed run's message (already masked in the table);
                          # pending: when the first load is due
    records: int          # active records of this unit in the dataset table (busType != 'D')
    rejected: int         # rejected rows in the last successful run
    extracted: int        # extracted rows in the last successful run
    due: datetime | None = None   # pending: when the first load is due (CST)
    route: str = DATABASE         # DATABASE: pulled by a mapping; INTERFACE: pushed by the unit


@dataclass(frozen=True)
class InvalidMapping:
    """A mapping file that does not load: its unit is listed as failing, with the problem."""

    path: Path
    org_no: str       # as written in the file when it looks like an orgNo, else ""
    problem: str

    @property
    def name(self) -> str:
        return self.path.stem


def load_units(folder: str | Path = "mappings", cache_dir: Path | None = None, *,
               share: tuple[int, int] = (0, 1)) -> list[Mapping | InvalidMapping]:
    """Every mapping file of `folder`, loaded, or with its problem when it does not load;
    valid files remembered in `cache_dir` as planning does (a province has thousands).
    `share` (k, n): only every n-th file from the k-th (from 0), in the folder's order."""
    k, n = share
    if not 0 <= k < n:
        raise ValueError(f"share {k} of {n}: give 0 <= k < n")
    out: list[Mapping | InvalidMapping] = []
    for path in discover(folder)[k::n]:
        try:
            out.append(load_mapping_cached(path, cache_dir))
        except MappingError as e:
            out.append(InvalidMapping(path, raw_org_no(path), str(e)))
    return out


def period(frequency: str) -> timedelta:
    """How often a dataset of this frequency must load."""
    if frequency == "daily":
        return timedelta(days=1)
    if frequency == "weekly":
        return timedelta(days=7)
    minutes = period_minutes(frequency)
    if minutes is None:
        raise ValueError(f"unknown frequency {frequency!r}")
    return timedelta(minutes=minutes)


def default_grace(frequency: str) -> timedelta:
    """How long past its period a load may come before it counts as late: a daily run 6 h (a
    slow night), a weekly one a day, a frequent one one more period; `ETL_FRESHNESS_GRACE_HOURS`
    sets one grace for all."""
    hours = settings.number(GRACE_ENV)
    if hours is not None:
        return timedelta(hours=hours)
    if frequency == "daily":
        return timedelta(hours=6)
    if frequency == "weekly":
        return timedelta(days=1)
    return period(frequency)


def allowed(frequency: str, grace: timedelta | None = None) -> timedelta:
    """How long after its last load (or after its mapping appeared) a dataset may go without
    one: its period plus `grace` (`default_grace` when None)."""
    return period(frequency) + (grace if grace is not None else default_grace(frequency))


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, clock.CST)
    except OSError:
        return None


def appeared(m: Mapping, seen: MutableMapping[Path, datetime | None] | None = None) -> datetime | None:
    """When the unit's mapping took its present form (CST): the newest modification time of its
    file and of every template it extends, since either may have added the dataset. None when
    the unit's file cannot be read any more (nothing is then pending). A province's units share
    a few templates: `seen` keeps each template's time, so each is stat'ed once per call."""
    own = _mtime(m.path)
    if own is None:
        return None
    seen = {} if seen is None else seen
    newest = own
    for rel, _sha in m.templates:  # relative to the unit's folder, as etl.mapping.templates resolved them
        path = Path(os.path.normpath(m.path.parent / rel))
        if path not in seen:
            seen[path] = _mtime(path)
        if (moment := seen[path]) is not None and moment > newest:
            newest = moment
    return newest


def _aware(moment: datetime | None) -> datetime | None:
    """A run's time as CST: SQLite and MariaDB hand back naive values, written as CST instants
    (naive on MariaDB: the server's zone is not ours to trust, the loader writes CST)."""
    return None if moment is None else clock.to_cst(moment)


def _latest_runs(conn: sa.Connection) -> tuple[dict, dict]:
    """{(orgNo, txCode): row} of the last run and of the last successful run: two statements."""
    r = target.ingest_run
    last = sa.select(sa.func.max(r.c.runKey).label("k")).group_by(r.c.orgNo, r.c.txCode).subquery()
    runs = {(row.orgNo, row.txCode): row for row in conn.execute(
        sa.select(r.c.orgNo, r.c.txCode, r.c.mapping, r.c.status, r.c.message, r.c.endedAt,
                  r.c.startedAt, r.c.mode).join(last, r.c.runKey == last.c.k))}
    ok = (sa.select(sa.func.max(r.c.runKey).label("k")).where(r.c.status == "success")
          .group_by(r.c.orgNo, r.c.txCode).subquery())
    successes = {(row.orgNo, row.txCode): row for row in conn.execute(
        sa.select(r.c.orgNo, r.c.txCode, r.c.startedAt, r.c.rejected, r.c.extracted)
        .join(ok, r.c.runKey == ok.c.k))}
    return runs, successes


def _record_counts(conn: sa.Connection) -> dict[tuple[str, str], int]:
    """{(orgNo, txCode): active records}: one UNION ALL of a GROUP BY per dataset table."""
    parts = [sa.select(t.c[standard.UNIT_KEY].label("orgNo"), sa.literal(tx).label("txCode"),
                       sa.func.count().label("n"))
             .where(t.c.busType != "D").group_by(t.c[standard.UNIT_KEY])
             for tx, t in target.DATASET_TABLES.items()]
    return {(row.orgNo, row.txCode): int(row.n) for row in conn.execute(sa.union_all(*parts))}


def statuses(engine: Engine, mappings: Sequence[Mapping | InvalidMapping],
             now: datetime | None = None, grace: timedelta | None = None) -> list[DatasetStatus]:
    """Every unit × every dataset its mapping maps, with its status; a mapping that does not
    load is one row (tx_code "", failing, its problem); a unit known only from the target
    (its mapping file gone) is listed with mapping "", and a dataset a unit pushed (the interface
    route, 5.2.2: its last run was a push) that no mapping maps with mapping "" and route
    INTERFACE. Three statements in all, and a stat per mapping file with a dataset never loaded, and per template it extends.

    failing: the last run failed; pending: no successful run yet, and the mapping appeared
    (`appeared`) less than the dataset's period plus `grace` (`default_grace` when None) ago;
    never: no successful run, and past that; late: the last success is older than the period
    plus the grace; else on_time."""
    now = clock.to_cst(now or clock.now())
    target.ensure_schema(engine)
    with engine.connect() as conn:
        runs, successes = _latest_runs(conn)
        counts = _record_counts(conn)

    def status_of(mapping: str, org: str, name: str, tx: str, frequency: str,
                  since: datetime | None = None, route: str = DATABASE) -> DatasetStatus:
        run, ok = runs.get((org, tx)), successes.get((org, tx))
        last_success = _aware(ok.startedAt) if ok else None
        last_run = _aware(run.startedAt) if run else None
        message, due = None, None
        if run is not None and run.status == "failed":
            status, message = "failing", run.message
        elif ok is None:
            due = since + allowed(frequency, grace) if since is not None else None
            if due is not None and now < due:
                status, message = "pending", f"first load due by {due:%Y-%m-%d %H:%M} CST"
            else:
                status, due = "never", None
        elif last_success is None or now - last_success > allowed(frequency, grace):
            status = "late"
        else:
            status = "on_time"
        return DatasetStatus(mapping, org, name, tx, frequency, last_success, last_run, status,
                             message, counts.get((org, tx), 0), int(ok.rejected) if ok else 0,
                             int(ok.extracted) if ok else 0, due, route)

    out: list[DatasetStatus] = []
    claimed: set[str] = set()
    templates: dict[Path, datetime | None] = {}
    for m in mappings:
        if isinstance(m, InvalidMapping):
            claimed.add(m.org_no)
            out.append(DatasetStatus(m.name, m.org_no, "", "", "", None, None, "failing",
                                     m.problem, 0, 0, 0))
            continue
        org = m.unit.orgNo
        claimed.add(org)
        # a stat only for a unit with a dataset never loaded: once all loaded, its age is moot
        since = appeared(m, templates) if any((org, tx) not in successes for tx in m.datasets) else None
        for tx, spec in m.datasets.items():
            frequency = spec.frequency or standard.dataset(tx).frequency
            out.append(status_of(m.name, org, m.unit.comName, tx, frequency, since))
    mapped = {(m.unit.orgNo, tx) for m in mappings if isinstance(m, Mapping) for tx in m.datasets}
    for org, tx in sorted(set(runs) | set(successes)):
        if tx not in standard.BY_TX_CODE or (org, tx) in mapped:
            continue  # a unit's failure recorded without a dataset; or mapped above
        if (org, tx) in runs and runs[org, tx].mode == PUSH_MODE:  # the interface route
            out.append(status_of("", org, "", tx, standard.dataset(tx).frequency, route=INTERFACE))
        elif org not in claimed:
            out.append(status_of("", org, "", tx, standard.dataset(tx).frequency))
    return out


def sort_key(s: DatasetStatus) -> tuple:
    """Failing, late, never, pending, on time; then by unit and dataset."""
    return ORDER.index(s.status), s.mapping or "~", s.org_no, s.tx_code


def needs_attention(s: DatasetStatus) -> bool:
    """What `etl freshness --fail-late` and the freshness DAG fail on: a mapped unit's dataset
    that is late, failing or never loaded. Pending ones are not due yet: a fresh deployment is
    not an alarm. Units known only from the target (mapping removed) are listed, not counted:
    nobody expects them to deliver; nor are datasets units push (the interface route): nothing
    here says which units are to push what."""
    return bool(s.mapping) and s.status not in ("on_time", "pending")
