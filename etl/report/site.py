"""The report site: what the collecting organisation and each unit read (5.3 confirmation, 4.2
timeliness), as static HTML built from the target's bookkeeping tables and the mapping files.

    out/index.html               every unit x dataset: frequency, last load, status, records,
                                 reject rate; sortable, filterable, paged by an inline script
    out/units/<key>.html         one unit, shareable with it: runs, a chart, rejects and what to
                                 fix, what cleaning changed; <key>-rejects.csv / .xlsx beside it
    out/reconcile.html           the last automated comparison of each reconciled dataset

No network is needed to open it: styles and scripts are inlined, charts are hand-written SVG,
the overview's data is embedded once as JSON. Unit pages are named by `storage.token(orgNo)`,
never by a (Chinese, user-chosen) mapping file name. Everything taken from data is passed
through `masking.cap`, which masks ID numbers and mobiles even where the bookkeeping tables
should already hold them masked, then `visible` (control characters as \\uXXXX, alike in pages
and exports: XLSX cannot hold them), then HTML-escaped (or set as `textContent` by the script).

One unit's data never stops the site: each unit's page and exports are rendered in memory and
only then written; a unit that fails is listed as such on the overview, every other unit is
built (`Built.failed`). The site removes only files it wrote before, as listed in its manifest
(`MANIFEST`); anything else in `units/` is left and named (`Built.kept`).
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import os
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import astuple, dataclass, field, replace
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import standard, target
from etl.common import clock, settings
from etl.common.masking import MESSAGE_CHARS, RUN_MESSAGE_CHARS, cap
from etl.common.storage import token
from etl.mapping import Mapping
from etl.report import freshness, i18n, reconciled
from etl.report.freshness import InvalidMapping
from etl.report.i18n import N_, _
from etl.report.text import COUNT_COLUMNS, RUN_COLUMN
from etl.target.history import PUSH_MODE

DEFAULT_DIR = "var/report"
RUNS_SHOWN = 20        # a unit page's run history per dataset
EXAMPLES_SHOWN = 3     # masked examples per reject group
DETAILS_SHOWN = 200    # reconciliation entries listed per list
PAGE_ROWS = 100        # the overview's rows per page
MEDIA_SHOWN = 2000     # attachments listed on a unit page
MANIFEST = ".etl-report-manifest.json"   # what the last build wrote: all it may remove
MANIFEST_BYTES = 20_000_000              # ~300,000 files' names
KEPT_SHOWN = 10        # foreign files named in the warning

log = logging.getLogger(__name__)

#: Words shown for the values of the bookkeeping tables, translated when shown (`_()`).
STATUS_LABEL = {"on_time": N_("on time"), "late": N_("late"), "failing": N_("failing"),
                "never": N_("never loaded"), "pending": N_("pending first load")}
RUN_STATUS = {"success": N_("succeeded"), "failed": N_("failed")}
MODE = {"full": N_("full"), "incremental": N_("incremental"), PUSH_MODE: N_("pushed")}
SEVERITY = {"error": N_("error"), "warning": N_("warning"), "duplicate": N_("duplicate")}
FREQUENCY = {"daily": N_("daily"), "weekly": N_("weekly"), "hourly": N_("hourly")}
STATE = {"agree": N_("in agreement"), "differ": N_("differs"), "failed": N_("failed"),
         "pushed": N_("pushed: no source to compare")}
COUNT_LABEL = {"extracted": N_("extracted"), "inserted": N_("inserted"), "updated": N_("updated"),
               "deleted": N_("deleted"), "unchanged": N_("unchanged"), "rejected": N_("rejected"),
               "duplicates": N_("duplicates"), "skipped_deleted": N_("skipped deleted"),
               "warnings": N_("warnings"), "overridden": N_("overridden")}

#: What a unit does about a rule, beside the rule's own message.
FIX = {
    "required": N_("fill the field at source, or map a column or default for it"),
    "length": N_("shorten the value at source: the standard's field is shorter"),
    "date": N_("write the date as a real date (e.g. 2024-07-08) at source"),
    "enum": N_("use one of the standard's values, or map local codes with values:"),
    "idcard": N_("correct the resident ID number (18 characters, GB 11643 check) at source"),
    "phone": N_("correct the phone number at source"),
    "reference": N_("add the referenced record (e.g. its risk point) or correct the code"),
    "date_order": N_("correct the dates so they follow each other"),
    "required_when": N_("fill the fields the record's state requires"),
    "duplicate": N_("remove the repeated row at source"),
    "same_id": N_("give each record its own key at source"),
}


def word(table: dict[str, str], value: object) -> str:
    """A bookkeeping value (`success`, `daily` ...) in the page's language; one the table does
    not know is shown as it is."""
    key = "" if value is None else str(value)
    if key in table:
        return _(table[key])
    if table is FREQUENCY and (m := re.fullmatch(r"(\d+)min", key)):
        return _("every {n} min").format(n=m.group(1))
    return key


#: What a unit that pushes does instead, where FIX speaks of its mapping, and about the rules
#: only a pushed message has (etl.interface.receive); a corrected record is sent again.
PUSH_FIX = {
    "required": N_("fill the field and push the record again under a new batchNo"),
    "enum": N_("use one of the standard's values and push the record again under a new batchNo"),
    "not_found": N_("push the record with busType I first, or correct its ID"),
    "unit": N_("push only your own unit's records, under your own orgNo"),
    "shape": N_("send each record as a JSON object"),
    "type": N_("send the field as text, a number or null"),
    "unknown": N_("remove the field or correct its name (names are case-sensitive)"),
}


def fix_for(rule: str, pushed: bool = False) -> str:
    """What to do about a finding of `rule`; `pushed`: for a unit that pushes the dataset."""
    if pushed and rule in PUSH_FIX:
        return _(PUSH_FIX[rule])
    return _(FIX[rule]) if rule in FIX else ""


def reports_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """`--out`, else `ETL_REPORTS_DIR` (a relative one as given: `etl report` writes under the
    working directory, Airflow's `report` task under the project folder)."""
    return Path(explicit or settings.text("ETL_REPORTS_DIR") or DEFAULT_DIR)


def unit_key(org_no: str) -> str:
    """A unit page's file name stem: from the orgNo, safe whatever it holds."""
    return token(org_no)


#: What neither a page nor an export may hold as it is: C0 controls but tab and line breaks,
#: DEL and C1 controls, lone surrogates (not UTF-8) and U+FFFE/U+FFFF (not XML).
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def visible(text: str) -> str:
    """`text` with each character a page or spreadsheet cannot show (or XLSX cannot hold) as its
    escape `\\u0001`: the same in HTML, CSV and XLSX, so a unit sees which character its data
    holds, where dropping it would show a key that is not the one at source."""
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


#: Folders whose absolute path a message may hold and a page must not: set per build (`build`).
_HIDDEN: ContextVar[re.Pattern | None] = ContextVar("etl_report_hidden_folders", default=None)
_PATH_CHARS = r"[^\s/'\"<>:;,()\[\]{}|`]"
#: An absolute POSIX path of two parts or more, not inside a URL's host part: a path after
#: `scheme:///` (file, sqlite) is one.
_ABSOLUTE = re.compile(rf"(?:(?<![\w.~/-])|(?<=://)|(?<=:///))/(?:{_PATH_CHARS}+/)+(?={_PATH_CHARS})")


def _folders_pattern(folders: Iterable[str | os.PathLike[str]]) -> re.Pattern | None:
    found = set()
    for f in folders:
        try:
            text = str(Path(f).resolve())
        except (OSError, RuntimeError, ValueError):
            continue
        if len(text) > 1:
            found.add(text.rstrip("/") + "/")
    if not found:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(found, key=len, reverse=True)))


def server_folders(mappings: Iterable[Mapping | InvalidMapping] = ()) -> list[Path]:
    """The folders a message's paths are shown relative to: the project (`ETL_HOME`), the working
    directory, and the folder holding each mappings folder (`mappings/x.yaml` stays readable)."""
    out = [settings.project_dir(), Path.cwd()]
    out += sorted({m.path.resolve().parent.parent for m in mappings})
    return out


@lru_cache(maxsize=4)
def _default_hidden(project: str, cwd: str) -> re.Pattern | None:
    return _folders_pattern([project, cwd])


def local_paths(text: str, hidden: re.Pattern | None = None) -> str:
    """`text` without the server's absolute paths: under a known folder (`server_folders`)
    relative to it, any other as `…/` and its file name. A unit reads where its data failed,
    not how the collecting organisation's server is laid out."""
    if "/" not in text:
        return text
    hidden = hidden if hidden is not None else _HIDDEN.get()
    if hidden is None:
        hidden = _default_hidden(str(settings.project_dir()), os.getcwd())
    if hidden is not None:
        text = hidden.sub("", text)
    return _ABSOLUTE.sub("…/", text)


def _text(value: object, limit: int = MESSAGE_CHARS) -> str:
    """Data as shown anywhere in the site: without server paths, masked, bounded, every
    character visible."""
    return "" if value is None else visible(cap(local_paths(str(value)), limit))


def _e(value: object, limit: int = MESSAGE_CHARS) -> str:
    return html.escape(_text(value, limit))


def _when(moment: datetime | None) -> str:
    return clock.naive(moment).strftime("%Y-%m-%d %H:%M") if moment else ""


# --- reading the target -------------------------------------------------------------------------

def _statuses(engine: Engine, units: Sequence[Mapping | InvalidMapping], now: datetime | None) -> list:
    return freshness.statuses(engine, list(units), now=now)


def _named(statuses: list, engine: Engine) -> list:
    """Statuses of units whose mapping file is gone carry no name: take the unit's 使用单位名称
    from its last loaded A.3 record, if the target has one (else the overview shows the orgNo)."""
    orgs = sorted({s.org_no for s in statuses if not s.mapping and not s.com_name and s.org_no})
    if not orgs:
        return statuses
    t = target.DATASET_TABLES["01"]
    names: dict[str, str] = {}
    with engine.connect() as conn:
        for i in range(0, len(orgs), 500):
            for org, name in conn.execute(sa.select(t.c[standard.UNIT_KEY], t.c.comName)
                                          .where(t.c[standard.UNIT_KEY].in_(orgs[i:i + 500]))
                                          .order_by(t.c.updateDate)):
                if name:
                    names[org] = name
    return [replace(s, com_name=names[s.org_no]) if not s.mapping and s.org_no in names else s
            for s in statuses]


def _reconciliations(engine: Engine) -> list[dict]:
    """The last reconciliation per dataset; none on a target that has never reconciled."""
    if not sa.inspect(engine).has_table("ingest_reconcile"):
        return []
    return reconciled.latest(engine)


@dataclass
class UnitData:
    org_no: str
    com_name: str
    mapping: str
    runs: dict[str, list[dict]]        # txCode -> runs, newest first
    rejects: list[dict]                # of each dataset's last successful run (pushed: its messages')
    audit: list[dict]
    media: list[dict] = field(default_factory=list)  # ingest_media rows, each with its "href"
    pushed: frozenset[str] = frozenset()  # datasets the unit pushes (the interface route, 5.2.2)


def _unit_data(engine: Engine, m: Mapping, since: datetime | None,
               pushed: Iterable[str] = ()) -> UnitData:
    """A mapped unit's page data; `pushed` are the datasets it pushes besides (`_unit_page_data`)."""
    return _unit_page_data(engine, m.unit.orgNo, m.unit.comName, m.name, set(m.datasets),
                           set(pushed), since)


def _unit_page_data(engine: Engine, org: str, com_name: str, name: str, mapped: set[str],
                    pushed: set[str], since: datetime | None) -> UnitData:
    """A unit's runs (newest first, `RUNS_SHOWN` per dataset), and the findings to fix: of each
    mapped dataset's last successful run (it read the whole window), and of every successful
    message of a pushed dataset the page lists (each message holds only the records it sent).
    A pushed run carries the unit's `batchNo` and `receivedAt` (ingest_push)."""
    r, rej, aud = target.ingest_run, target.ingest_reject, target.ingest_audit
    q = sa.select(r).where(r.c.orgNo == org).order_by(r.c.startedAt.desc(), r.c.runKey.desc())
    if since:
        q = q.where(r.c.startedAt >= since)
    runs: dict[str, list[dict]] = defaultdict(list)
    with engine.connect() as conn:
        for row in conn.execute(q).mappings():
            if len(runs[row["txCode"]]) < RUNS_SHOWN:
                runs[row["txCode"]].append(dict(row))
        last_ok = conn.execute(
            sa.select(r.c.txCode, r.c.runId).where(r.c.orgNo == org, r.c.status == "success")
            .order_by(r.c.startedAt.desc(), r.c.runKey.desc())).all()
        latest: dict[str, list[str]] = {}
        for tx, run_id in last_ok:
            if tx in mapped and tx not in pushed:
                latest.setdefault(tx, [run_id])
        batch_of = _push_batches(conn, org, [x for tx in pushed for x in runs.get(tx, [])])
        for tx in pushed:
            latest[tx] = [x["runId"] for x in runs.get(tx, [])
                          if x["status"] == "success" and x["runId"] in batch_of]
        # a dataset no longer mapped: nothing to fix now; by dataset, then its runs newest first
        place = {(tx, run_id): (tx, i) for tx, ids in latest.items() for i, run_id in enumerate(ids)}
        rejects = _of_runs(conn, rej, rej.c.rejectId, org, place)
        audit = _of_runs(conn, aud, aud.c.auditId, org, place)
        for x in rejects:
            x["batchNo"] = batch_of.get(x["runId"], "")
        media = [dict(x) for x in conn.execute(
            sa.select(target.ingest_media).where(target.ingest_media.c.orgNo == org)
            .order_by(target.ingest_media.c.txCode, target.ingest_media.c.field,
                      target.ingest_media.c.name).limit(MEDIA_SHOWN)).mappings()]
    return UnitData(org, com_name, name, dict(runs), rejects, audit, media, frozenset(pushed))


def _of_runs(conn: sa.Connection, table: sa.Table, order: sa.Column, org: str,
             place: dict[tuple[str, str], tuple[str, int]]) -> list[dict]:
    """The unit's rows of `table` (ingest_reject, ingest_audit) of the (txCode, runId) pairs in
    `place`, in its order: one statement per 500 runs, not one per run."""
    ids = sorted({run_id for _tx, run_id in place})
    rows = []
    for i in range(0, len(ids), 500):
        rows += [dict(x) for x in conn.execute(
            sa.select(table).where(table.c.orgNo == org, table.c.runId.in_(ids[i:i + 500]))
            .order_by(order)).mappings() if (x["txCode"], x["runId"]) in place]
    return sorted(rows, key=lambda x: place[x["txCode"], x["runId"]])  # stable: `order` within


def _push_batches(conn: sa.Connection, org: str, runs: list[dict]) -> dict[str, str]:
    """{runId: the unit's batchNo} of the pushed runs among `runs`, each run given its
    `batchNo` and `receivedAt` (a failed message has no ingest_push row: none)."""
    p = target.ingest_push
    ids = [x["runId"] for x in runs if x["mode"] == PUSH_MODE]
    found: dict[str, tuple[str, datetime]] = {}
    for i in range(0, len(ids), 500):
        for run_id, batch, received in conn.execute(
                sa.select(p.c.runId, p.c.unitBatchNo, p.c.receivedAt)
                .where(p.c.orgNo == org, p.c.runId.in_(ids[i:i + 500]))):
            found[run_id] = (batch, received)
    for x in runs:
        if x["runId"] in found:
            x["batchNo"], x["receivedAt"] = found[x["runId"]]
    return {k: v[0] for k, v in found.items()}


def _link_media(rows: list[dict], units_dir: Path) -> None:
    """Give each attachment row its link from the unit pages to the stored file: a relative
    path when the media store is a local folder (the site and the store move together, or
    both stay on this machine), none for an object store (a bucket needs credentials)."""
    if not rows:
        return
    from etl.common.errors import EtlError
    from etl.media.files import MediaStore

    try:
        store = MediaStore()
    except (EtlError, OSError):
        return
    for row in rows:
        try:
            where = store.path_of(row["sha256"])
        except (FileNotFoundError, ValueError, OSError):
            continue
        if "://" not in where:
            row["href"] = Path(os.path.relpath(where, units_dir)).as_posix()


# --- building -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PageFailure:
    """A page the build could not write: a unit's (page and exports), or reconcile.html."""

    org_no: str          # "" for a page of every unit
    name: str            # the mapping's name, or the page's file name
    com_name: str
    reason: str          # one line, masked

    def line(self) -> str:
        who = (f"the page of unit {self.com_name} (orgNo {self.org_no}, mapping {self.name})"
               if self.org_no else self.name)
        return visible(f"{who} was not built: {self.reason}")


@dataclass(frozen=True)
class Built:
    index: Path
    failed: list[PageFailure]     # every other page was built
    kept: list[str]               # files in units/ no build wrote, left in place (relative paths)


def _reason(e: BaseException) -> str:
    return cap(" ".join(f"{type(e).__name__}: {e}".split()), 300)


@dataclass(frozen=True)
class Pages:
    """The unit pages a share of a build wrote (`build_pages`), for the build that completes the
    site (`build(..., parts=...)`): the orgNos whose page and exports were written, and those
    that failed."""

    built: list[str]
    failed: list[PageFailure]

    def to_dict(self) -> dict[str, Any]:
        return {"built": self.built, "failed": [list(astuple(f)) for f in self.failed]}

    @classmethod
    def of(cls, data: dict[str, Any]) -> Pages:
        return cls(list(data["built"]), [PageFailure(*f) for f in data["failed"]])


def build(engine: Engine, units: Sequence[Mapping | InvalidMapping],
          out: str | os.PathLike[str] | None = None, *,
          since: date | datetime | None = None, now: datetime | None = None,
          lang: str | None = None, left_out: Iterable[str] = (), parts: Iterable[Pages] = ()) -> Built:
    """Write the whole site into `out`, in `lang` (None: `ETL_REPORT_LANGUAGE`, else Chinese).
    `units` are the mapping files as `etl.report.freshness.load_units` reads them: an invalid
    one is listed as failing. A unit whose page or exports fail is listed on the overview as not
    built, the others are built. A unit the target knows whose mapping file is gone is marked
    so; `left_out` are orgNos whose mapping exists but was not asked for (`--unit`): not listed.
    `parts` are unit pages `build_pages` wrote meanwhile: those units are not built again."""
    with _building(units, lang):
        return _build(engine, units, out, since=since, now=now, left_out=set(left_out),
                      parts=list(parts))


def build_pages(engine: Engine, units: Sequence[Mapping | InvalidMapping],
                out: str | os.PathLike[str] | None = None, *,
                since: date | datetime | None = None, now: datetime | None = None,
                lang: str | None = None) -> Pages:
    """The pages and exports of the mapped `units` alone: a share of a build, written while
    other processes write the others (the daily and weekly DAGs' `report_pages`, each given
    every n-th mapping file); `build(..., parts=...)` then completes the site."""
    with _building(units, lang):
        out, now, start = _prepared(engine, out, now, since)
        statuses = _statuses(engine, units, now)  # its units' own are as in the whole site's
        _, failed, built = _unit_pages(engine, _mapped(units), statuses, out, now, start)
        return Pages(built, failed)


@contextmanager
def _building(units: Sequence[Mapping | InvalidMapping], lang: str | None) -> Iterator[None]:
    with i18n.using(lang):
        token_ = _HIDDEN.set(_folders_pattern(server_folders(units)))
        try:
            yield
        finally:
            _HIDDEN.reset(token_)


def _mapped(units: Sequence[Mapping | InvalidMapping]) -> list[Mapping]:
    return [m for m in units if isinstance(m, Mapping)]


def _prepared(engine: Engine, out: str | os.PathLike[str] | None, now: datetime | None,
              since: date | datetime | None) -> tuple[Path, datetime, datetime | None]:
    """The site's folder (made), the build's moment and the first moment its pages show."""
    out = reports_dir(out)
    (out / "units").mkdir(parents=True, exist_ok=True)
    target.ensure_schema(engine)
    now = clock.to_cst(now or clock.now())
    start = datetime.combine(since, datetime.min.time()) if isinstance(since, date) and not isinstance(
        since, datetime) else since
    start = clock.to_cst(start) if start else None  # an instant: timestamptz compares it right
    return out, now, start


def _by_org(statuses: Sequence) -> dict[str, list]:
    """Each unit's statuses, in their order, by orgNo: a unit's page shows its own."""
    mine: dict[str, list] = defaultdict(list)
    for s in statuses:
        mine[s.org_no].append(s)
    return mine


def _unit_pages(engine: Engine, mappings: Sequence[Mapping], statuses: Sequence, out: Path,
                now: datetime, start: datetime | None, parts: Sequence[Pages] = ()
                ) -> tuple[set[str], list[PageFailure], list[str]]:
    """Each mapped unit's page and exports, but those `parts` wrote or failed: (the files, as
    paths under `out`, the failures, the orgNos built)."""
    done = {org for p in parts for org in p.built}
    failed_before = {f.org_no: f for p in parts for f in p.failed}
    pushed, mine = _pushed_datasets(statuses), _by_org(statuses)
    written: set[str] = set()
    failed: list[PageFailure] = []
    built: list[str] = []
    for m in mappings:
        org = m.unit.orgNo
        if org in done:
            written |= {f"units/{name}" for name in unit_files(org)}
            continue
        if org in failed_before:
            failed.append(failed_before[org])
            continue
        try:
            data = _unit_data(engine, m, start, pushed.get(org, ()))
            _link_media(data.media, out / "units")
            written |= {f"units/{name}" for name in write_unit(out, data, mine.get(org, []), now)}
            built.append(org)
        except Exception as e:  # one unit's data: that unit's page, never the site
            log.debug("unit page of %s (%s) not built", org, m.name, exc_info=True)
            failed.append(PageFailure(org, m.name, _text(m.unit.comName, 200), _reason(e)))
    return written, failed, built


def _build(engine: Engine, units: Sequence[Mapping | InvalidMapping],
           out: str | os.PathLike[str] | None, *, since: date | datetime | None,
           now: datetime | None, left_out: set[str], parts: Sequence[Pages]) -> Built:
    mappings = _mapped(units)
    out, now, start = _prepared(engine, out, now, since)
    statuses = _named([s for s in _statuses(engine, units, now) if s.mapping or s.org_no not in left_out],
                      engine)
    recs = _reconciliations(engine)
    before = read_manifest(out)
    by_org = {m.unit.orgNo: m for m in mappings}
    pushed, statuses_of = _pushed_datasets(statuses), _by_org(statuses)
    written, failed, _ = _unit_pages(engine, mappings, statuses, out, now, start, parts)
    for org, txs in sorted(pushed.items()):
        if org in by_org:
            continue
        mine = statuses_of.get(org, [])
        com = next((s.com_name for s in mine if s.com_name), "")  # its last 01, else none
        try:
            data = _unit_page_data(engine, org, com, INTERFACE_NAME, set(), txs, start)
            _link_media(data.media, out / "units")
            written |= {f"units/{name}" for name in write_unit(out, data, mine, now)}
        except Exception as e:  # as a mapped unit's
            log.debug("unit page of %s (interface route) not built", org, exc_info=True)
            failed.append(PageFailure(org, INTERFACE_NAME, _text(com, 200), _reason(e)))
    try:
        write_reconcile(out, [x for x in recs if x.get("orgNo") in by_org] + _pushed_recs(statuses),
                        by_org, now, pages={o for o in pushed if o not in {f.org_no for f in failed}})
        written.add("reconcile.html")
    except Exception as e:
        log.debug("reconcile.html not built", exc_info=True)
        failed.append(PageFailure("", "reconcile.html", "", _reason(e)))
    write_overview(out, statuses, now, {f.org_no: f.reason for f in failed if f.org_no})
    written.add("index.html")
    left, kept = _tidy(out, before, written)
    write_manifest(out, written | left)
    return Built(out / "index.html", failed, kept)


#: What a unit page's failure names in place of a mapping file, for a unit that only pushes.
INTERFACE_NAME = "interface route"


def _pushed_datasets(statuses: Sequence) -> dict[str, set[str]]:
    """{orgNo: the datasets it pushes} (the interface route, 5.2.2): their last run was a push
    and no mapping maps them. Units known only from them get a page of their own."""
    out: dict[str, set[str]] = defaultdict(set)
    for s in statuses:
        if s.route == freshness.INTERFACE and s.org_no and s.tx_code:
            out[s.org_no].add(s.tx_code)
    return dict(out)


#: The files a build writes, and so the only ones a manifest may name for removal.
_OURS = re.compile(r"(index|reconcile)\.html|units/[A-Za-z0-9_-]{1,200}(\.html|-rejects\.(csv|xlsx))")


def read_manifest(out: Path) -> set[str]:
    """What the last build wrote (relative paths), as its manifest says; only names a build
    writes are taken, so a manifest edited by hand cannot remove anything else."""
    path = out / MANIFEST
    try:
        if not path.is_file() or path.stat().st_size > MANIFEST_BYTES:
            return set()
        files = json.loads(path.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in files if isinstance(f, str) and _OURS.fullmatch(f)} if isinstance(files, list) else set()


def write_manifest(out: Path, files: Iterable[str]) -> Path:
    path = out / MANIFEST
    body = {"writtenBy": "etl report", "about": "the files the last `etl report` wrote here: the "
            "only ones the next may remove", "files": sorted(files)}
    _write_bytes(path, json.dumps(body, ensure_ascii=False, indent=0).encode("utf-8"))
    return path


def _tidy(out: Path, before: set[str], written: set[str]) -> tuple[set[str], list[str]]:
    """Remove what the last build wrote and this one did not (a unit no longer mapped, or whose
    page failed now: its old page would show old data as current); name every other file of
    units/. Returns (ours, still there: the next build tries again; not ours, kept)."""
    left: set[str] = set()
    for rel in sorted(before - written):
        path = out / rel
        try:
            if path.is_symlink() or path.is_file():
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("report: could not remove %s: %s", path, e)
            left.add(rel)
    kept = sorted(rel for p in (out / "units").iterdir()
                  if (rel := f"units/{p.name}") not in written and rel not in left)
    return left, kept


def _write_bytes(path: Path, data: bytes) -> None:
    """`path` replaced whole by `data` (a temporary file of this process, renamed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


_CSS = """
body{font:14px/1.45 system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.on_time{color:#1a7f37}.late{color:#b35900;font-weight:600}.failing{color:#c62828;font-weight:600}.never{color:#777}.pending{color:#4a78c2;font-style:italic}
.agree{color:#1a7f37}.differ,.failed{color:#c62828;font-weight:600}.unmapped{color:#8a6d00;font-weight:600}.pushed{color:#1565c0;font-weight:600}
.summary span{display:inline-block;margin-right:1.2em}.muted{color:#777}.msg{max-width:40em;word-break:break-word}
.ws{background:#fde7b0;color:#7a4b00;border-radius:2px;padding:0 1px;font-size:.85em}
th[data-key]{cursor:pointer}th[data-key]:hover{background:#e8e8e8}
#controls input,#controls select,#controls button{font:inherit;margin-right:.6em}
"""


def _page(title: str, body: str, now: datetime, home: str = "") -> str:
    overview, reconciliation = html.escape(_("Overview")), html.escape(_("Reconciliation"))
    nav = (f'<p><a href="{home}index.html">{overview}</a> · <a href="{home}reconcile.html">'
           f'{reconciliation}</a></p>')
    built = _("Built {when} CST from the target's bookkeeping tables (ingest_run, ingest_reject, "
              "ingest_audit). Personal data is masked.").format(when=_when(now))
    return (f'<!DOCTYPE html>\n<html lang="{i18n.html_lang()}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{nav}{body}'
            f'<p class="muted">{html.escape(built)}</p></body></html>\n')


def _json_for_script(value: Any) -> str:
    """JSON safe inside <script>: no `</script>`, no `<!--` can end or change the element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --- overview -----------------------------------------------------------------------------------

def _message(s) -> str:
    """A status's message as shown: a pending dataset's due time in the page's language."""
    if s.status == "pending" and getattr(s, "due", None) is not None:
        return _("first load due by {due} CST").format(due=_when(s.due))
    return _text(s.message, 300) if s.message else ""


def overview_data(statuses: Sequence, now: datetime, failed: dict[str, str] | None = None) -> dict:
    """Units once, rows referring to them: 2,000 units x 9 datasets stay a few MB. A unit in
    `failed` (orgNo -> why) has no page to link to, and says why; a unit known only from the
    target (its mapping file gone) has none either, and is marked so, named by its orgNo when
    no name is known; a unit that only pushes (the interface route) has one, and is marked so."""
    failed = failed or {}
    units: list[list] = []
    index: dict[str, int] = {}
    rows = []
    mapped = {s.org_no for s in statuses if s.mapping}
    pushing = {s.org_no for s in statuses if s.route == freshness.INTERFACE} - mapped
    for s in statuses:
        key = s.org_no or f"\0{s.mapping}"  # a file that does not load may name no orgNo
        if key not in index:
            index[key] = len(units)
            pushed = s.org_no in pushing  # the interface route only: no mapping, a page all the same
            removed = s.org_no not in mapped and not pushed
            units.append([_text(s.com_name or s.org_no or s.mapping, 200), _text(s.org_no, 50),
                          "" if s.org_no in failed or removed
                          else f"units/{unit_key(s.org_no)}.html",
                          _text(failed.get(s.org_no, ""), 300), 1 if removed else 0, 1 if pushed else 0])
        ds = standard.BY_TX_CODE.get(s.tx_code)
        rate = round(100 * s.rejected / s.extracted, 1) if s.extracted else None
        rows.append([index[key], visible(s.tx_code), ds.zh if ds else "",
                     visible(word(FREQUENCY, s.frequency)), _when(s.last_success), s.status,
                     _message(s), s.records, rate])
    counts = {k: sum(1 for s in statuses if s.status == k) for k in STATUS_LABEL}
    labels = {k: _(v) for k, v in STATUS_LABEL.items()}
    words = {"shown": _("rows {from}–{to} of {n}"), "filtered": _(" (filtered from {total})"),
             "none": _("no rows match"), "page": _("page {page} of {pages}"),
             "notBuilt": _(" (page not built)"), "removed": _(" (mapping removed)"),
             "removedTitle": _("no mapping file names this unit any more: its records stay in the "
                               "target, nobody expects it to deliver"),
             "pushed": _(" (interface route)"),
             "pushedTitle": _("this unit pushes its data over the interface (5.2.2): it has no "
                              "mapping file, and no source to reconcile; its runs and rejects are "
                              "in the target like any unit's")}
    return {"units": units, "rows": rows, "labels": labels, "counts": counts, "words": words,
            "order": list(freshness.ORDER), "pageRows": PAGE_ROWS, "builtAt": _when(now)}


#: Dates and times reach the script as CST text made on the server: it formats none itself, so
#: the browser's time zone changes nothing.
_OVERVIEW_JS = r"""
(function(){
"use strict";
var D=JSON.parse(document.getElementById("data").textContent);
var U=D.units, R=D.rows, L=D.labels, W=D.words;
var COLS=[["name",function(r){return U[r[0]][0];}],["orgNo",function(r){return U[r[0]][1];}],
 ["tx",function(r){return r[1];}],["frequency",function(r){return r[3];}],
 ["last",function(r){return r[4];}],["status",function(r){return r[5];}],
 ["records",function(r){return r[7];}],["rate",function(r){return r[8]===null?-1:r[8];}]];
var state={q:"",status:"",sort:"status",dir:1,page:0}, view=R;
var ORDER={}; D.order.forEach(function(k,i){ORDER[k]=i;});  // etl.report.freshness.ORDER
function fill(t,v){return t.replace(/\{(\w+)\}/g,function(m,k){return k in v?String(v[k]):m;});}
function key(name){for(var i=0;i<COLS.length;i++){if(COLS[i][0]===name){return COLS[i][1];}}}
function cmp(a,b){
  var f=key(state.sort), x=f(a), y=f(b);
  if(state.sort==="status"){x=ORDER[x];y=ORDER[y];}
  if(x<y){return -state.dir;} if(x>y){return state.dir;}
  var n=U[a[0]][0].localeCompare(U[b[0]][0]); return n!==0?n:(a[1]<b[1]?-1:a[1]>b[1]?1:0);
}
function apply(){
  var q=state.q.trim().toLowerCase();
  view=R.filter(function(r){
    if(state.status&&r[5]!==state.status){return false;}
    if(!q){return true;}
    var u=U[r[0]]; return u[0].toLowerCase().indexOf(q)>=0||u[1].toLowerCase().indexOf(q)>=0;
  });
  view.sort(cmp); state.page=0; render();
}
function td(text,cls){var c=document.createElement("td"); c.textContent=text; if(cls){c.className=cls;} return c;}
function mark(parent,cls,text,title){var f=document.createElement("span"); f.className=cls;
  f.textContent=text; f.title=title; parent.appendChild(f);}
function render(){
  var body=document.getElementById("rows"); body.textContent="";
  var pages=Math.max(1,Math.ceil(view.length/D.pageRows));
  if(state.page>=pages){state.page=pages-1;}
  var from=state.page*D.pageRows, part=view.slice(from,from+D.pageRows), frag=document.createDocumentFragment();
  part.forEach(function(r){
    var u=U[r[0]], tr=document.createElement("tr"), name=document.createElement("td"), a=document.createElement("a");
    tr.dataset.status=r[5]; tr.dataset.org=u[1]; tr.dataset.tx=r[1];
    if(u[2]){a.href=u[2]; a.textContent=u[0]; name.appendChild(a);}else{name.textContent=u[0];}
    if(u[3]){mark(name,"failing page-failed",W.notBuilt,u[3]); tr.dataset.pageFailed="1";}
    if(u[4]){mark(name,"unmapped",W.removed,W.removedTitle); tr.dataset.unmapped="1";}
    if(u[5]){mark(name,"pushed",W.pushed,W.pushedTitle); tr.dataset.pushed="1";}
    tr.appendChild(name);
    tr.appendChild(td(u[1])); tr.appendChild(td(r[1]+" "+r[2])); tr.appendChild(td(r[3]));
    tr.appendChild(td(r[4]||"—")); tr.appendChild(td(L[r[5]],r[5]+" status"));
    tr.appendChild(td(r[6],"msg")); tr.appendChild(td(String(r[7]),"n records"));
    tr.appendChild(td(r[8]===null?"—":r[8].toFixed(1)+"%","n rate"));
    frag.appendChild(tr);
  });
  body.appendChild(frag);
  document.getElementById("shown").textContent=view.length?(fill(W.shown,{from:from+1,to:from+part.length,n:view.length})+(view.length!==R.length?fill(W.filtered,{total:R.length}):"")):W.none;
  document.getElementById("page").textContent=fill(W.page,{page:state.page+1,pages:pages});
  document.getElementById("prev").disabled=state.page===0;
  document.getElementById("next").disabled=state.page>=pages-1;
  Array.prototype.forEach.call(document.querySelectorAll("th[data-key]"),function(th){
    th.setAttribute("aria-sort",th.dataset.key===state.sort?(state.dir>0?"ascending":"descending"):"none");
  });
}
document.getElementById("q").addEventListener("input",function(e){state.q=e.target.value; apply();});
document.getElementById("status").addEventListener("change",function(e){state.status=e.target.value; apply();});
document.getElementById("prev").addEventListener("click",function(){state.page--; render();});
document.getElementById("next").addEventListener("click",function(){state.page++; render();});
Array.prototype.forEach.call(document.querySelectorAll("th[data-key]"),function(th){
  th.addEventListener("click",function(){
    if(state.sort===th.dataset.key){state.dir=-state.dir;}else{state.sort=th.dataset.key; state.dir=1;}
    apply();
  });
});
apply();
})();
"""


def _failed_list(data: dict) -> str:
    """The units whose page was not built, with why: in the page itself, script or not."""
    failed = [u for u in data["units"] if u[3]]
    if not failed:
        return ""
    items = "".join(f'<li data-org="{html.escape(u[1])}">{html.escape(u[0])} ({html.escape(u[1])}): '
                    f'{html.escape(u[3])}</li>' for u in failed)
    head = _("The page of {n} unit(s) was not built; every other unit's is up to date:").format(
        n=len(failed))
    return f'<div id="failed-pages"><p class="failing">{html.escape(head)}</p><ul>{items}</ul></div>'


def _removed_list(data: dict) -> str:
    """The units whose mapping file is gone: in the page itself, script or not."""
    removed = [u for u in data["units"] if u[4]]
    if not removed:
        return ""
    items = "".join(f'<li data-org="{html.escape(u[1])}">{html.escape(u[0])} ({html.escape(u[1])})</li>'
                    for u in removed)
    head = _("Mapping removed: {n} unit(s) in the target that no mapping file names any more "
             "(their records stay; they are not expected to deliver):").format(n=len(removed))
    return f'<div id="removed-units"><p class="unmapped">{html.escape(head)}</p><ul>{items}</ul></div>'


def overview_html(statuses: Sequence, now: datetime, failed: dict[str, str] | None = None) -> str:
    data = overview_data(statuses, now, failed)
    counts = data["counts"]
    units = len(data["units"])
    summary = "".join(f'<span class="{k}" data-count="{k}">{html.escape(v)}: {counts[k]}</span>'
                      for k, v in data["labels"].items())
    options = "".join(f'<option value="{k}">{html.escape(v)}</option>' for k, v in data["labels"].items())
    heads = [("name", _("unit")), ("orgNo", _("orgNo")), ("tx", _("dataset")),
             ("frequency", _("frequency")), ("last", _("last successful load (CST)")),
             ("status", _("status")), (None, _("message")), ("records", _("records")),
             ("rate", _("reject rate"))]
    thead = "".join(f'<th data-key="{k}">{html.escape(v)}</th>' if k else f"<th>{html.escape(v)}</th>"
                    for k, v in heads)
    search = html.escape(_("search unit name or orgNo"))
    counted = html.escape(_("{units} units, {datasets} datasets").format(units=units, datasets=len(data["rows"])))
    status, every = html.escape(_("status")), html.escape(_("every status"))
    prev, next_ = html.escape(_("‹ previous")), html.escape(_("next ›"))
    noscript = html.escape(_("This table needs JavaScript; the unit pages do not."))
    title = _("Ingestion overview")
    legend = _("Late: no successful load within the dataset's period (5.4) plus a grace. Pending "
               "first load: never loaded, and its mapping (or a template it extends) changed less "
               "than a period plus a grace ago, so the first load is not due yet. Mapping removed: "
               "the target holds the unit's records but no mapping file names it. Reject rate: "
               "rejected / extracted rows of the last successful load.")
    body = (f"<h1>{html.escape(title)}</h1>"
            f'<p class="summary"><span>{counted}</span>{summary}</p>'
            f'{_failed_list(data)}{_removed_list(data)}'
            f'<p id="controls"><input id="q" type="search" placeholder="{search}" '
            f'aria-label="{search}" size="32"> <select id="status" aria-label="{status}">'
            f'<option value="">{every}</option>{options}</select>'
            f'<button id="prev" type="button">{prev}</button><span id="page"></span> '
            f'<button id="next" type="button">{next_}</button> <span id="shown" class="muted"></span></p>'
            f'<table id="overview"><thead><tr>{thead}</tr></thead><tbody id="rows"></tbody></table>'
            f'<noscript>{noscript}</noscript>'
            f'<p class="muted">{html.escape(legend)}</p>'
            f'<script type="application/json" id="data">{_json_for_script(data)}</script>'
            f"<script>{_OVERVIEW_JS}</script>")
    return _page(title, body, now)


def write_overview(out: Path, statuses: Sequence, now: datetime,
                   failed: dict[str, str] | None = None) -> Path:
    path = Path(out) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, overview_html(statuses, now, failed))
    return path


# --- unit pages ---------------------------------------------------------------------------------

def window_text(run: dict) -> str:
    """The window of source rows a run read (CST), which is what its counts are about; its
    start time alone says when it ran, not what it read (a backfill reads past days)."""
    start, end = run.get("windowStart"), run.get("windowEnd")
    if run.get("mode") == PUSH_MODE:  # read nothing: the unit sent it
        return pushed_text(run)
    if run.get("mode") == "full":
        return _("everything, as of {end}").format(end=_when(end)) if end else _("everything")
    if start and end:
        return f"{_when(start)} – {_when(end)}"
    if end:
        return _("everything up to {end}").format(end=_when(end))
    if start:
        return _("from {start}").format(start=_when(start))
    return "—"


def pushed_text(run: dict) -> str:
    """What a pushed message is known by in place of a window: when it was received (CST) and
    the unit's batchNo (B.3); a message that failed to load has no batchNo on record."""
    when = _when(run.get("receivedAt") or run.get("startedAt"))
    if run.get("batchNo"):
        return _("received {when}, batchNo {batch}").format(when=when, batch=_text(run["batchNo"], 20))
    return _("received {when}").format(when=when)


def _window_day(run: dict) -> str:
    """A run's label under the chart: the day its window starts (MM-DD), else when it ran."""
    moment = run.get("windowStart") or (run.get("windowEnd") if run.get("mode") != "full" else None)
    return _when(moment or run["startedAt"])[5:10]


def chart_svg(runs: Sequence[dict]) -> str:
    """Extracted rows and rejects of each run (oldest left) as grouped bars."""
    runs = list(reversed(runs))
    if not runs:
        return ""
    w, h, left, bottom, top = 640, 180, 44, 22, 22
    peak = max(max(r["extracted"] or 0 for r in runs), 1)
    slot = (w - left - 8) / len(runs)
    bar = max(min(slot / 2 - 2, 24), 1)
    y = lambda v: top + (h - top - bottom) * (1 - v / peak)  # noqa: E731
    extracted, rejected = _("extracted"), _("rejected")
    label = html.escape(_("rows extracted and rejected per run"))
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" role="img" aria-label="{label}">',
             f'<line x1="{left}" y1="{y(0):.1f}" x2="{w - 4}" y2="{y(0):.1f}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{y(peak) + 4:.1f}" font-size="11" text-anchor="end">{peak}</text>',
             f'<text x="{left - 4}" y="{y(0) + 4:.1f}" font-size="11" text-anchor="end">0</text>']
    for i, r in enumerate(runs):
        x = left + i * slot + (slot - 2 * bar) / 2
        ext, rej = r["extracted"] or 0, r["rejected"] or 0
        when = html.escape(pushed_text(r) if r.get("mode") == PUSH_MODE else _(
            "window {window}, ran {started}").format(window=window_text(r), started=_when(r["startedAt"])))
        status = html.escape(word(RUN_STATUS, r["status"]))
        for dx, value, colour, what, label in ((0, ext, "#4a78c2", "extracted", extracted),
                                               (bar, rej, "#d64541", "rejected", rejected)):
            top_y = y(value)
            parts.append(f'<rect x="{x + dx:.1f}" y="{top_y:.1f}" width="{bar:.1f}" '
                         f'height="{max(y(0) - top_y, 0):.1f}" fill="{colour}" class="{what}">'
                         f'<title>{when} {status}: {value} {html.escape(label)}</title></rect>')
        if r["status"] != "success":
            parts.append(f'<text x="{x + bar:.1f}" y="{y(0) - 3:.1f}" font-size="12" fill="#c62828" '
                         f'text-anchor="middle">✕<title>{when} {status}</title></text>')
        if len(runs) <= 10 or i % max(len(runs) // 8, 1) == 0:
            parts.append(f'<text x="{x + bar:.1f}" y="{h - 6}" font-size="10" text-anchor="middle">'
                         f'{html.escape(_window_day(r))}</text>')
    parts.append(f'<g font-size="11"><rect x="{w - 190}" y="2" width="10" height="10" fill="#4a78c2"/>'
                 f'<text x="{w - 176}" y="11">{html.escape(extracted)}</text><rect x="{w - 110}" y="2" width="10" '
                 f'height="10" fill="#d64541"/><text x="{w - 96}" y="11">{html.escape(rejected)}</text></g></svg>')
    return "".join(parts)


def _runs_table(runs: Sequence[dict], pushed: bool = False) -> str:
    cols = [c for c in COUNT_COLUMNS if c != "overridden"]
    head = "".join(f"<th>{html.escape(word(COUNT_LABEL, c))}</th>" for c in cols)
    rows = []
    for r in runs:
        cells = "".join(f'<td class="n">{int(r[RUN_COLUMN.get(c, c)] or 0)}</td>' for c in cols)
        rows.append(f'<tr class="run" data-status="{_e(r["status"], 20)}" data-mode="{_e(r["mode"], 20)}">'
                    f'<td class="window">{html.escape(window_text(r))}</td><td>{_when(r["startedAt"])}</td>'
                    f'<td>{html.escape(word(MODE, r["mode"]))}</td>'
                    f'<td class="{"on_time" if r["status"] == "success" else "failing"}">'
                    f'{html.escape(word(RUN_STATUS, r["status"]))}</td>{cells}'
                    f'<td class="msg">{_e(r["message"], RUN_MESSAGE_CHARS)}</td></tr>')
    first = (_("received (CST), batchNo") if pushed else _("window read (CST)"), _("started (CST)"),
             _("mode"), _("status"))
    message = html.escape(_("message"))
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in first) + head + f"<th>{message}</th>"
    return f'<table class="runs"><thead><tr>{heads}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def reject_groups(rejects: Iterable[dict]) -> list[dict]:
    """Rejects by dataset, field, rule and severity, biggest first, with a few masked examples."""
    groups: dict[tuple, dict] = {}
    for x in rejects:
        k = (x["txCode"], x["field"], x["rule"], x["severity"])
        g = groups.setdefault(k, {"txCode": k[0], "field": k[1], "rule": k[2], "severity": k[3],
                                  "count": 0, "examples": []})
        g["count"] += 1
        if len(g["examples"]) < EXAMPLES_SHOWN:
            g["examples"].append((_text(x["sourceKey"], 100), _text(x["message"])))
    order = {"error": 0, "duplicate": 1, "warning": 2}
    return sorted(groups.values(), key=lambda g: (g["txCode"], order.get(g["severity"], 3), -g["count"]))


def _field_label(tx: str, name: object) -> str:
    """A field as the standard names it (隐患编号 taskNo), or as recorded when it is none."""
    ds = standard.BY_TX_CODE.get(tx)
    text = _text(name, 50)
    try:
        zh = ds.field(str(name)).zh if ds else ""
    except KeyError:
        zh = ""
    return f"{html.escape(zh)} <code>{html.escape(text)}</code>" if zh else html.escape(text)


def _rejects_table(groups: Sequence[dict], pushed: bool = False) -> str:
    if not groups:
        none = (_("No rejects, duplicates or warnings in the messages listed.") if pushed else
                _("No rejects, duplicates or warnings in the last successful load."))
        return f'<p class="muted">{html.escape(none)}</p>'
    rows = []
    for g in groups:
        examples = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(msg)}</li>"
                           for k, msg in g["examples"])
        fix = fix_for(g["rule"], pushed) or _("see the message; correct the value at source")
        rows.append(f'<tr class="reject-group" data-field="{_e(g["field"], 50)}" data-rule="{_e(g["rule"], 50)}">'
                    f'<td>{_field_label(g["txCode"], g["field"])}</td><td>{_e(g["rule"], 50)}</td>'
                    f'<td>{html.escape(word(SEVERITY, _text(g["severity"], 20)))}'
                    f'</td><td class="n count">{g["count"]}</td><td><ul>{examples}</ul></td>'
                    f'<td>{html.escape(fix)}</td></tr>')
    heads = (_("field"), _("rule"), _("severity"), _("rows"), _("examples (source key: message)"),
             _("what to fix"))
    return (f'<table class="rejects"><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in heads)}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')


#: Characters a reader cannot tell apart on a page: spaces of every kind, line breaks, and the
#: zero-width and format characters (category Cf: U+200B, U+FEFF ...).
_BLANK_NAMES = {" ": "␠", "\t": "⇥", "\n": "↵", "\r": "␍"}


def _blank(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) in ("Cf", "Zs", "Zl", "Zp")


def whitespace_only(before: str, after: str) -> bool:
    """Whether two values differ only in characters a page does not show."""
    return before != after and ([c for c in before if not _blank(c)] == [c for c in after if not _blank(c)])


def reveal(text: str) -> str:
    """HTML of `text` with each blank or invisible character as a marker: ␠ a space, ⇥ a tab,
    ↵ a line break, any other (U+3000, U+00A0, U+200B, U+FEFF ...) as ⟨U+XXXX⟩."""
    out = []
    for ch in text:
        if _blank(ch):
            mark = _BLANK_NAMES.get(ch, f"⟨U+{ord(ch):04X}⟩")
            name = unicodedata.name(ch, "").lower()
            out.append(f'<span class="ws" title="U+{ord(ch):04X} {html.escape(name)}">{mark}</span>')
        else:
            out.append(html.escape(ch))
    return "".join(out)


def _audit_pair(pair: list) -> str:
    before, after = _text(pair[0], 100), _text(pair[1], 100)
    if whitespace_only(before, after):
        return f'<li class="whitespace"><code>{reveal(before)}</code> → <code>{reveal(after)}</code></li>'
    return f"<li><code>{html.escape(before)}</code> → <code>{html.escape(after)}</code></li>"


def _audit_table(audit: Sequence[dict], pushed: bool = False) -> str:
    if not audit:
        none = (_("Cleaning changed nothing in the messages listed.") if pushed else
                _("Cleaning changed nothing in the last successful load."))
        return f'<p class="muted">{html.escape(none)}</p>'
    rows = []
    for a in audit:
        try:
            examples = json.loads(a["examples"])
        except (TypeError, ValueError):
            examples = []
        shown = "".join(_audit_pair(pair) for pair in examples[:EXAMPLES_SHOWN]
                        if isinstance(pair, list) and len(pair) == 2)
        rows.append(f'<tr><td>{_field_label(a["txCode"], a["field"])}</td><td>{_e(a["rule"], 50)}</td>'
                    f'<td class="n">{int(a["count"])}</td><td><ul>{shown}</ul></td></tr>')
    heads = (_("field"), _("cleaning rule"), _("values changed"), _("examples (before → after)"))
    legend = _("␠ a space, ⇥ a tab, ↵ a line break, ⟨U+3000⟩ an ideographic space, ⟨U+200B⟩ a "
               "zero-width space: characters a page does not show, marked where they are all a "
               "change consists of.")
    return (f'<table class="audit"><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in heads)}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="muted">{html.escape(legend)}</p>')


EXPORT_COLUMNS = ("txCode", "dataset", "sourceKey", "field", "rule", "severity", "message",
                  "whatToFix", "runId", "createdAt", "batchNo")
#: The exports' header row: the reader's words, the column's identifier beside them.
EXPORT_HEADINGS = (N_("txCode"), N_("dataset"), N_("source key"), N_("field"), N_("rule"),
                   N_("severity"), N_("message"), N_("what to fix"), N_("run"), N_("recorded (CST)"),
                   N_("the unit's batchNo (interface route)"))


def export_headings() -> list[str]:
    return [_(h) for h in EXPORT_HEADINGS]


def export_rows(rejects: Iterable[dict]) -> list[list[str]]:
    out = []
    for x in rejects:
        ds = standard.BY_TX_CODE.get(x["txCode"])
        out.append([x["txCode"], ds.zh if ds else "", _text(x["sourceKey"]), _text(x["field"], 50),
                    _text(x["rule"], 50), word(SEVERITY, _text(x["severity"], 20)), _text(x["message"]),
                    fix_for(x["rule"], bool(x.get("batchNo"))), _text(x["runId"], 200), _when(x["createdAt"]),
                    _text(x.get("batchNo") or "", 20)])
    return out


def _inert(value: str) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula (=, +, -, @)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def export_files(rejects: Sequence[dict]) -> tuple[bytes, bytes]:
    """The CSV (UTF-8 with BOM, for Excel) and XLSX of every reject, warning and dropped
    duplicate of the last successful loads (of a pushed dataset: of the messages its page lists,
    each with the unit's batchNo), masked, every cell text (never a formula) and visible,
    rendered in memory: a unit's exports are written whole or not at all."""
    import xlsxwriter

    rows = [[visible("" if v is None else str(v)) for v in r] for r in export_rows(rejects)]
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(export_headings())
    w.writerows([[_inert(v) for v in r] for r in rows])
    csv_bytes = text.getvalue().encode("utf-8-sig")
    book = io.BytesIO()
    wb = xlsxwriter.Workbook(book, {"in_memory": True, "strings_to_numbers": False,
                                    "strings_to_formulas": False, "strings_to_urls": False})
    ws = wb.add_worksheet(_("rejects")[:31])
    for n, width in enumerate((7, 14, 22, 14, 14, 10, 70, 40, 30, 17, 18)):
        ws.set_column(n, n, width)
    ws.freeze_panes(1, 0)
    for i, r in enumerate([export_headings(), *rows]):
        for j, v in enumerate(r):
            ws.write_string(i, j, v)  # text, never a formula
    wb.close()
    return csv_bytes, book.getvalue()


def write_exports(folder: Path, stem: str, rejects: Sequence[dict]) -> tuple[Path, Path]:
    """`<stem>-rejects.csv` and `.xlsx` (`export_files`)."""
    csv_bytes, xlsx_bytes = export_files(rejects)
    csv_path, xlsx_path = folder / f"{stem}-rejects.csv", folder / f"{stem}-rejects.xlsx"
    _write_bytes(csv_path, csv_bytes)
    _write_bytes(xlsx_path, xlsx_bytes)
    return csv_path, xlsx_path


def _media_table(rows: Sequence[dict]) -> str:
    """The dataset's collected attachments (ingest_media): each name links to the stored file."""
    if not rows:
        return ""
    from urllib.parse import quote

    body = []
    for r in rows:
        name = _e(r["name"], 200)
        link = (f'<a href="{html.escape(quote(r["href"], safe="/.-_~"))}">{name}</a>'
                if r.get("href") else name)
        body.append(f'<tr><td>{_field_label(r["txCode"], r["field"])}</td><td>{link}</td><td>{_e(r["mediaType"], 100)}</td>'
                    f'<td class="n">{int(r["size"]):,}</td><td><code>{_e(r["sha256"][:12], 20)}</code></td>'
                    f'<td>{_when(r["fetchedAt"])}</td></tr>')
    heads = (_("field"), _("file"), _("type"), _("bytes"), "sha256", _("fetched (CST)"))
    title = html.escape(_("Attachments"))
    return (f"<h3>{title}</h3><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>" + "".join(body) + "</table>")


def _dataset_title(tx: str) -> str:
    ds = standard.BY_TX_CODE.get(tx)
    return (f'{_e(tx, 10)} {html.escape(ds.zh if ds else "")} '
            f'<span class="muted">({html.escape(ds.structure if ds else "")} {html.escape(ds.table if ds else "")})</span>')


def unit_html(data: UnitData, statuses: Sequence, now: datetime) -> str:
    """The unit's page: one section per dataset its mapping maps now (the statuses); the runs of
    a dataset it no longer maps are kept below, folded, marked "no longer mapped", never
    mistaken for a current failure."""
    stem = unit_key(data.org_no)
    by_tx = {s.tx_code: s for s in statuses if s.tx_code}
    groups = reject_groups(data.rejects)
    sections = []
    comma, never = _(", "), _("never")
    h_runs, h_rejects = html.escape(_("Last runs")), html.escape(_("Rejects, duplicates and warnings"))
    h_cleaning, no_runs = html.escape(_("What cleaning changed")), html.escape(_("No runs recorded."))
    pushed_mark = html.escape(_("interface route"))
    pushed_why = html.escape(_("The unit pushes this dataset over the interface (5.2.2): each run is "
                               "one message it sent, known by its batchNo; the findings are those "
                               "of the messages listed, each also returned in its answer."))
    for tx in sorted(by_tx):
        s = by_tx[tx]
        runs = data.runs.get(tx, [])
        pushed = tx in data.pushed
        status = html.escape(_("{frequency}, last successful load {last}, {records} records").format(
            frequency=word(FREQUENCY, s.frequency), last=_when(s.last_success) or never,
            records=s.records))
        status = (f'<span class="{s.status} status">{html.escape(word(STATUS_LABEL, s.status))}</span>'
                  f'{html.escape(comma)}{status}')
        mine = [g for g in groups if g["txCode"] == tx]
        audit = [a for a in data.audit if a["txCode"] == tx]
        route = ' pushed-dataset" data-route="interface' if pushed else ""
        heading = (f'{_dataset_title(tx)} · <span class="pushed">{pushed_mark}</span></h2>'
                   f'<p class="muted">{pushed_why}</p>' if pushed else f"{_dataset_title(tx)}</h2>")
        sections.append(
            f'<section class="dataset{route}" id="tx{_e(tx, 10)}" data-tx="{_e(tx, 10)}">'
            f'<h2>{heading}<p>{status}</p>'
            + (f"<h3>{h_runs}</h3>{chart_svg(runs)}{_runs_table(runs, pushed)}" if runs else
               f'<p class="muted">{no_runs}</p>')
            + f"<h3>{h_rejects}</h3>{_rejects_table(mine, pushed)}"
            + _media_table([x for x in data.media if x["txCode"] == tx])
            + f"<h3>{h_cleaning}</h3>{_audit_table(audit, pushed)}</section>")
    gone = sorted(tx for tx in data.runs if tx not in by_tx)
    if gone:
        marker, heading = html.escape(_("no longer mapped")), html.escape(_("No longer mapped"))
        why = html.escape(_("Datasets this unit delivered before and its mapping no longer maps: "
                            "their past runs, for the record. Nothing here is due or failing now."))
        folded = "".join(
            f'<details class="unmapped-dataset" data-tx="{_e(tx, 10)}"><summary>{_dataset_title(tx)} · '
            f'<span class="unmapped">{marker}</span></summary>'
            f'{_runs_table(data.runs[tx])}</details>' for tx in gone)
        sections.append(f'<section id="unmapped"><h2>{heading}</h2><p class="muted">{why}</p>'
                        f"{folded}</section>")
    errors = sum(1 for x in data.rejects if x["severity"] == "error")
    findings = _("{n} findings in the last successful loads ({errors} rejected rows)").format(
        n=len(data.rejects), errors=errors)
    org_no, download = html.escape(_("orgNo")), html.escape(_("Download every finding to fix at source:"))
    body = (f'<h1>{_e(data.com_name or data.org_no, 200)}</h1><p>{org_no} '
            f'<code>{_e(data.org_no, 50)}</code> · {html.escape(findings)}</p>'
            f'<p>{download} <a class="export" href="{stem}-rejects.csv" '
            f'download>CSV</a> · <a class="export" href="{stem}-rejects.xlsx" download>XLSX</a></p>'
            + "".join(sections))
    return _page(_text(data.com_name or data.org_no, 200) + " · " + _("ingestion"), body, now, home="../")


def unit_files(org_no: str) -> tuple[str, str, str]:
    """The names of a unit's page and exports in units/."""
    stem = unit_key(org_no)
    return f"{stem}.html", f"{stem}-rejects.csv", f"{stem}-rejects.xlsx"


def write_unit(out: Path, data: UnitData, statuses: Sequence, now: datetime) -> set[str]:
    """The unit's page and exports, all rendered before any is written; returns their file
    names. When writing one fails, those written are removed: a unit's files are of one build."""
    folder = Path(out) / "units"
    folder.mkdir(parents=True, exist_ok=True)
    page, csv_name, xlsx_name = unit_files(data.org_no)
    csv_bytes, xlsx_bytes = export_files(data.rejects)
    files = {page: unit_html(data, statuses, now).encode("utf-8"),
             csv_name: csv_bytes, xlsx_name: xlsx_bytes}
    done: list[Path] = []
    try:
        for name, body in files.items():
            _write_bytes(folder / name, body)
            done.append(folder / name)
    except BaseException:
        for path in done:
            path.unlink(missing_ok=True)
        raise
    return set(files)


# --- reconciliation -----------------------------------------------------------------------------

def _items(values: Sequence, render) -> str:
    shown = "".join(f"<li>{render(v)}</li>" for v in list(values)[:DETAILS_SHOWN])
    more = len(values) - DETAILS_SHOWN
    if more <= 0:
        return f"<ul>{shown}</ul>"
    and_more = html.escape(_("… and {n} more").format(n=more))
    return f'<ul>{shown}</ul><p class="muted">{and_more}</p>'


#: A pushed dataset's reconciliation (etl.report.reconcile.NO_SOURCE, translated).
NO_SOURCE_TEXT = N_("pushed over the interface (5.2.2): the unit has no source database to compare "
                    "with the target")


def reconcile_html(results: Sequence[dict], mappings: dict[str, Mapping], now: datetime,
                   pages: Iterable[str] = ()) -> str:
    """`pages`: orgNos of units that only push and whose page was built (linked, as mapped ones)."""
    title = _("Reconciliation")
    pages = set(pages)
    if not results:
        body = (f"<h1>{html.escape(title)}</h1><p id=\"none\">"
                + html.escape(_("No reconciliation yet: run {command} (the weekly DAG reconciles every unit)."))
                .format(command="<code>etl reconcile MAPPING</code>") + "</p>")
        return _page(title, body, now)
    rows, details = [], []
    for x in sorted(results, key=lambda x: (x.get("orgNo", ""), x.get("txCode", ""))):
        org, tx, state = x.get("orgNo", ""), x.get("txCode", ""), x.get("state", "")
        m = mappings.get(org)
        name = m.unit.comName if m else (x.get("name") or org)
        ds = standard.BY_TX_CODE.get(tx)
        anchor = f"r-{unit_key(org)}-{token(tx)}"
        shown_state = html.escape(word(STATE, _text(state, 20)))
        counts = "".join(f'<td class="n">{int(x.get(k) or 0)}</td>' for k in (
            "sourceValid", "targetActive", "missing", "differing", "extra", "notIngested"))
        rows.append(f'<tr class="rec" data-org="{_e(org, 50)}" data-tx="{_e(tx, 10)}" data-state="{_e(state, 20)}">'
                    + (f'<td><a href="units/{unit_key(org)}.html">{_e(name, 200)}</a></td>'
                       if m or org in pages else f'<td>{_e(name, 200)}</td>') + f'<td>{_e(org, 50)}</td>'
                    f'<td>{_e(tx, 10)} {html.escape(ds.zh if ds else "")}</td>'
                    f'<td class="{_e(state, 20)}"><a href="#{anchor}">{shown_state}</a></td>{counts}'
                    f'<td>{_e(x.get("checkedAt"), 40) if not isinstance(x.get("checkedAt"), datetime) else _when(x["checkedAt"])}</td></tr>')
        d = x.get("details") or {}
        if isinstance(d, str):
            try:
                d = json.loads(d)
            except ValueError:
                d = {}
        parts = []
        if state == "pushed":
            parts.append(f'<p class="pushed">{html.escape(_(NO_SOURCE_TEXT))}</p>')
        h_differing, h_missing = _("Differing records"), _("Valid source records missing in the target")
        h_extra, h_not = _("Active target records not in the source"), _("Not ingested (rejected at validation)")
        if d.get("differing"):
            heads = ("ID", _("source key"), _("field"), _("source"), _("target"))
            parts.append(f"<h4>{html.escape(h_differing)}</h4><table class=\"differing\"><thead><tr>"
                         + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr></thead><tbody>"
                         + "".join(f'<tr><td>{_e(v.get("id"), 80)}</td><td>{_e(v.get("source_key"), 100)}</td>'
                                   f'<td>{_field_label(tx, v.get("field"))}</td><td>{_e(v.get("source"), 200)}</td>'
                                   f'<td>{_e(v.get("target"), 200)}</td></tr>'
                                   for v in d["differing"][:DETAILS_SHOWN] if isinstance(v, dict))
                         + "</tbody></table>")
        if d.get("missing"):
            parts.append(f"<h4>{html.escape(h_missing)}</h4>"
                         + _items(d["missing"], lambda v: f"<code>{_e(v, 100)}</code>"))
        if d.get("extra"):
            parts.append(f"<h4>{html.escape(h_extra)}</h4>"
                         + _items(d["extra"], lambda v: f"<code>{_e(v, 100)}</code>"))
        if d.get("not_ingested"):
            parts.append(f"<h4>{html.escape(h_not)}</h4>" + _items(
                d["not_ingested"], lambda v: " · ".join(_e(p) for p in (v if isinstance(v, list) else [v]))))
        if parts:
            details.append(f'<section id="{anchor}" class="rec-details"><h3>{_e(name, 200)} · '
                           f'{_e(tx, 10)} · {shown_state}</h3>{"".join(parts)}</section>')
    heads = (_("unit"), _("orgNo"), _("dataset"), _("state"), _("valid in source"),
             _("active in target"), _("missing"), _("differing"), _("extra"), _("not ingested"),
             _("checked (CST)"))
    body = (f"<h1>{html.escape(title)}</h1><p>"
            + html.escape(_("The last automated comparison of each reconciled dataset with its "
                            "source (5.3): in agreement when every valid source record is in the "
                            "target with equal standard fields and no other record is active."))
            + '</p><table id="reconcile"><thead><tr>'
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>" + "".join(details))
    return _page(title, body, now)


def _pushed_recs(statuses: Sequence) -> list[dict]:
    """Reconciliation rows of the datasets units push and no mapping maps (the interface
    route): no source to compare, said as such."""
    from etl.report.reconcile import NO_SOURCE

    return [{"orgNo": s.org_no, "txCode": s.tx_code, "state": "pushed", "name": s.com_name,
             "targetActive": s.records, "details": {"message": NO_SOURCE}}
            for s in statuses if s.route == freshness.INTERFACE and not s.mapping]


def write_reconcile(out: Path, results: Sequence[dict], mappings: dict[str, Mapping],
                    now: datetime, pages: Iterable[str] = ()) -> Path:
    path = Path(out) / "reconcile.html"
    _write(path, reconcile_html(results, mappings, now, pages))
    return path
