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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import standard, target
from etl.common import clock, settings
from etl.common.masking import MESSAGE_CHARS, RUN_MESSAGE_CHARS, cap
from etl.common.storage import token
from etl.mapping import Mapping
from etl.report import freshness, reconciled
from etl.report.freshness import InvalidMapping
from etl.report.text import COUNT_COLUMNS, RUN_COLUMN

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

STATUS_LABEL = {"on_time": "on time", "late": "late", "failing": "failing", "never": "never loaded",
                "pending": "pending first load"}

#: What a unit does about a rule, beside the rule's own message.
FIX = {
    "required": "fill the field at source, or map a column or default for it",
    "length": "shorten the value at source: the standard's field is shorter",
    "date": "write the date as a real date (e.g. 2024-07-08) at source",
    "enum": "use one of the standard's values, or map local codes with values:",
    "idcard": "correct the resident ID number (18 characters, GB 11643 check) at source",
    "phone": "correct the phone number at source",
    "reference": "add the referenced record (e.g. its risk point) or correct the code",
    "date_order": "correct the dates so they follow each other",
    "required_when": "fill the fields the record's state requires",
    "duplicate": "remove the repeated row at source",
    "same_id": "give each record its own key at source",
}


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


def _text(value: object, limit: int = MESSAGE_CHARS) -> str:
    """Data as shown anywhere in the site: masked, bounded, every character visible."""
    return "" if value is None else visible(cap(str(value), limit))


def _e(value: object, limit: int = MESSAGE_CHARS) -> str:
    return html.escape(_text(value, limit))


def _when(moment: datetime | None) -> str:
    return clock.naive(moment).strftime("%Y-%m-%d %H:%M") if moment else ""


# --- reading the target -------------------------------------------------------------------------

def _statuses(engine: Engine, units: Sequence[Mapping | InvalidMapping], now: datetime | None) -> list:
    return freshness.statuses(engine, list(units), now=now)


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
    rejects: list[dict]                # of each dataset's last successful run
    audit: list[dict]
    media: list[dict] = field(default_factory=list)  # ingest_media rows, each with its "href"


def _unit_data(engine: Engine, m: Mapping, since: datetime | None) -> UnitData:
    org = m.unit.orgNo
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
        latest: dict[str, str] = {}
        for tx, run_id in last_ok:
            latest.setdefault(tx, run_id)
        rejects, audit = [], []
        for tx, run_id in sorted(latest.items()):
            rejects += [dict(x) for x in conn.execute(
                sa.select(rej).where(rej.c.runId == run_id, rej.c.orgNo == org, rej.c.txCode == tx)
                .order_by(rej.c.rejectId)).mappings()]
            audit += [dict(x) for x in conn.execute(
                sa.select(aud).where(aud.c.runId == run_id, aud.c.orgNo == org, aud.c.txCode == tx)
                .order_by(aud.c.auditId)).mappings()]
        media = [dict(x) for x in conn.execute(
            sa.select(target.ingest_media).where(target.ingest_media.c.orgNo == org)
            .order_by(target.ingest_media.c.txCode, target.ingest_media.c.field,
                      target.ingest_media.c.name).limit(MEDIA_SHOWN)).mappings()]
    return UnitData(org, m.unit.comName, m.name, dict(runs), rejects, audit, media)


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


def build(engine: Engine, units: Sequence[Mapping | InvalidMapping],
          out: str | os.PathLike[str] | None = None, *,
          since: date | datetime | None = None, now: datetime | None = None) -> Built:
    """Write the whole site into `out`. `units` are the mapping files as
    `etl.report.freshness.load_units` reads them: an invalid one is listed as failing. A unit
    whose page or exports fail is listed on the overview as not built, the others are built."""
    mappings = [m for m in units if isinstance(m, Mapping)]
    out = reports_dir(out)
    (out / "units").mkdir(parents=True, exist_ok=True)
    target.ensure_schema(engine)
    now = clock.to_cst(now or clock.now())
    start = datetime.combine(since, datetime.min.time()) if isinstance(since, date) and not isinstance(
        since, datetime) else since
    start = clock.to_cst(start) if start else None  # an instant: timestamptz compares it right
    statuses = _statuses(engine, units, now)
    recs = _reconciliations(engine)
    before = read_manifest(out)
    written: set[str] = set()
    failed: list[PageFailure] = []
    by_org = {m.unit.orgNo: m for m in mappings}
    for m in mappings:
        try:
            data = _unit_data(engine, m, start)
            _link_media(data.media, out / "units")
            mine = [s for s in statuses if s.org_no == m.unit.orgNo]
            written |= {f"units/{name}" for name in write_unit(out, data, mine, now)}
        except Exception as e:  # one unit's data: that unit's page, never the site
            log.debug("unit page of %s (%s) not built", m.unit.orgNo, m.name, exc_info=True)
            failed.append(PageFailure(m.unit.orgNo, m.name, _text(m.unit.comName, 200), _reason(e)))
    try:
        write_reconcile(out, [x for x in recs if x.get("orgNo") in by_org], by_org, now)
        written.add("reconcile.html")
    except Exception as e:
        log.debug("reconcile.html not built", exc_info=True)
        failed.append(PageFailure("", "reconcile.html", "", _reason(e)))
    write_overview(out, statuses, now, {f.org_no: f.reason for f in failed if f.org_no})
    written.add("index.html")
    left, kept = _tidy(out, before, written)
    write_manifest(out, written | left)
    return Built(out / "index.html", failed, kept)


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
.agree{color:#1a7f37}.differ,.failed{color:#c62828;font-weight:600}
.summary span{display:inline-block;margin-right:1.2em}.muted{color:#777}.msg{max-width:40em;word-break:break-word}
th[data-key]{cursor:pointer}th[data-key]:hover{background:#e8e8e8}
#controls input,#controls select,#controls button{font:inherit;margin-right:.6em}
"""


def _page(title: str, body: str, now: datetime, home: str = "") -> str:
    nav = (f'<p><a href="{home}index.html">Overview</a> · <a href="{home}reconcile.html">'
           f'Reconciliation</a></p>')
    return (f'<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{nav}{body}'
            f'<p class="muted">Built {_when(now)} CST from the target\'s bookkeeping tables '
            f'(ingest_run, ingest_reject, ingest_audit). Personal data is masked.</p></body></html>\n')


def _json_for_script(value: Any) -> str:
    """JSON safe inside <script>: no `</script>`, no `<!--` can end or change the element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --- overview -----------------------------------------------------------------------------------

def overview_data(statuses: Sequence, now: datetime, failed: dict[str, str] | None = None) -> dict:
    """Units once, rows referring to them: 2,000 units x 9 datasets stay a few MB. A unit in
    `failed` (orgNo -> why) has no page to link to, and says why."""
    failed = failed or {}
    units: list[list[str]] = []
    index: dict[str, int] = {}
    rows = []
    for s in statuses:
        if s.org_no not in index:
            index[s.org_no] = len(units)
            units.append([_text(s.com_name, 200), _text(s.org_no, 50),
                          "" if s.org_no in failed else f"units/{unit_key(s.org_no)}.html",
                          _text(failed.get(s.org_no, ""), 300)])
        ds = standard.BY_TX_CODE.get(s.tx_code)
        rate = round(100 * s.rejected / s.extracted, 1) if s.extracted else None
        rows.append([index[s.org_no], visible(s.tx_code), ds.zh if ds else "", visible(s.frequency),
                     _when(s.last_success), s.status, _text(s.message, 300) if s.message else "",
                     s.records, rate])
    counts = {k: sum(1 for s in statuses if s.status == k) for k in STATUS_LABEL}
    return {"units": units, "rows": rows, "labels": STATUS_LABEL, "counts": counts,
            "order": list(freshness.ORDER), "pageRows": PAGE_ROWS, "builtAt": _when(now)}


_OVERVIEW_JS = r"""
(function(){
"use strict";
var D=JSON.parse(document.getElementById("data").textContent);
var U=D.units, R=D.rows, L=D.labels;
var COLS=[["name",function(r){return U[r[0]][0];}],["orgNo",function(r){return U[r[0]][1];}],
 ["tx",function(r){return r[1];}],["frequency",function(r){return r[3];}],
 ["last",function(r){return r[4];}],["status",function(r){return r[5];}],
 ["records",function(r){return r[7];}],["rate",function(r){return r[8]===null?-1:r[8];}]];
var state={q:"",status:"",sort:"status",dir:1,page:0}, view=R;
var ORDER={}; D.order.forEach(function(k,i){ORDER[k]=i;});  // etl.report.freshness.ORDER
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
function render(){
  var body=document.getElementById("rows"); body.textContent="";
  var pages=Math.max(1,Math.ceil(view.length/D.pageRows));
  if(state.page>=pages){state.page=pages-1;}
  var from=state.page*D.pageRows, part=view.slice(from,from+D.pageRows), frag=document.createDocumentFragment();
  part.forEach(function(r){
    var u=U[r[0]], tr=document.createElement("tr"), name=document.createElement("td"), a=document.createElement("a");
    tr.dataset.status=r[5]; tr.dataset.org=u[1]; tr.dataset.tx=r[1];
    if(u[2]){a.href=u[2]; a.textContent=u[0]; name.appendChild(a);}else{name.textContent=u[0];}
    if(u[3]){var f=document.createElement("span"); f.className="failing page-failed";
      f.textContent=" (page not built)"; f.title=u[3]; name.appendChild(f); tr.dataset.pageFailed="1";}
    tr.appendChild(name);
    tr.appendChild(td(u[1])); tr.appendChild(td(r[1]+" "+r[2])); tr.appendChild(td(r[3]));
    tr.appendChild(td(r[4]||"—")); tr.appendChild(td(L[r[5]],r[5]+" status"));
    tr.appendChild(td(r[6],"msg")); tr.appendChild(td(String(r[7]),"n records"));
    tr.appendChild(td(r[8]===null?"—":r[8].toFixed(1)+"%","n rate"));
    frag.appendChild(tr);
  });
  body.appendChild(frag);
  document.getElementById("shown").textContent=view.length?("rows "+(from+1)+"–"+(from+part.length)+" of "+view.length+(view.length!==R.length?" (filtered from "+R.length+")":"")):"no rows match";
  document.getElementById("page").textContent="page "+(state.page+1)+" of "+pages;
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
    return (f'<div id="failed-pages"><p class="failing">The page of {len(failed)} unit(s) was not '
            f'built; every other unit\'s is up to date:</p><ul>{items}</ul></div>')


def overview_html(statuses: Sequence, now: datetime, failed: dict[str, str] | None = None) -> str:
    data = overview_data(statuses, now, failed)
    counts = data["counts"]
    units = len(data["units"])
    summary = "".join(f'<span class="{k}" data-count="{k}">{html.escape(v)}: {counts[k]}</span>'
                      for k, v in STATUS_LABEL.items())
    options = "".join(f'<option value="{k}">{html.escape(v)}</option>' for k, v in STATUS_LABEL.items())
    heads = [("name", "unit"), ("orgNo", "orgNo"), ("tx", "dataset"), ("frequency", "frequency"),
             ("last", "last successful load"), ("status", "status"), (None, "message"),
             ("records", "records"), ("rate", "reject rate")]
    thead = "".join(f'<th data-key="{k}">{v}</th>' if k else f"<th>{v}</th>" for k, v in heads)
    body = (f"<h1>Ingestion overview</h1>"
            f'<p class="summary"><span>{units} units, {len(data["rows"])} datasets</span>{summary}</p>'
            f'{_failed_list(data)}'
            f'<p id="controls"><input id="q" type="search" placeholder="search unit name or orgNo" '
            f'aria-label="search unit name or orgNo" size="32"> <select id="status" aria-label="status">'
            f'<option value="">every status</option>{options}</select>'
            f'<button id="prev" type="button">‹ previous</button><span id="page"></span> '
            f'<button id="next" type="button">next ›</button> <span id="shown" class="muted"></span></p>'
            f'<table id="overview"><thead><tr>{thead}</tr></thead><tbody id="rows"></tbody></table>'
            f'<noscript>This table needs JavaScript; the unit pages do not.</noscript>'
            f'<p class="muted">Late: no successful load within the dataset\'s period plus a grace. '
            f'Pending first load: never loaded, and its mapping (or a template it extends) changed '
            f'less than a period plus a grace ago, so the first load is not due yet. '
            f'Reject rate: rejected / extracted rows of the last successful load.</p>'
            f'<script type="application/json" id="data">{_json_for_script(data)}</script>'
            f"<script>{_OVERVIEW_JS}</script>")
    return _page("Ingestion overview", body, now)


def write_overview(out: Path, statuses: Sequence, now: datetime,
                   failed: dict[str, str] | None = None) -> Path:
    path = Path(out) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, overview_html(statuses, now, failed))
    return path


# --- unit pages ---------------------------------------------------------------------------------

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
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" role="img" aria-label="rows extracted and rejected per run">',
             f'<line x1="{left}" y1="{y(0):.1f}" x2="{w - 4}" y2="{y(0):.1f}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{y(peak) + 4:.1f}" font-size="11" text-anchor="end">{peak}</text>',
             f'<text x="{left - 4}" y="{y(0) + 4:.1f}" font-size="11" text-anchor="end">0</text>']
    for i, r in enumerate(runs):
        x = left + i * slot + (slot - 2 * bar) / 2
        ext, rej = r["extracted"] or 0, r["rejected"] or 0
        when = html.escape(_when(r["startedAt"]))
        for dx, value, colour, what in ((0, ext, "#4a78c2", "extracted"), (bar, rej, "#d64541", "rejected")):
            top_y = y(value)
            parts.append(f'<rect x="{x + dx:.1f}" y="{top_y:.1f}" width="{bar:.1f}" '
                         f'height="{max(y(0) - top_y, 0):.1f}" fill="{colour}" class="{what}">'
                         f'<title>{when} {r["status"]}: {value} {what}</title></rect>')
        if r["status"] != "success":
            parts.append(f'<text x="{x + bar:.1f}" y="{y(0) - 3:.1f}" font-size="12" fill="#c62828" '
                         f'text-anchor="middle">✕<title>{when} failed</title></text>')
        if len(runs) <= 10 or i % max(len(runs) // 8, 1) == 0:
            parts.append(f'<text x="{x + bar:.1f}" y="{h - 6}" font-size="10" text-anchor="middle">'
                         f'{when[5:10]}</text>')
    parts.append(f'<g font-size="11"><rect x="{w - 190}" y="2" width="10" height="10" fill="#4a78c2"/>'
                 f'<text x="{w - 176}" y="11">extracted</text><rect x="{w - 110}" y="2" width="10" '
                 f'height="10" fill="#d64541"/><text x="{w - 96}" y="11">rejected</text></g></svg>')
    return "".join(parts)


def _runs_table(runs: Sequence[dict]) -> str:
    cols = [c for c in COUNT_COLUMNS if c != "overridden"]
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
    rows = []
    for r in runs:
        cells = "".join(f'<td class="n">{int(r[RUN_COLUMN.get(c, c)] or 0)}</td>' for c in cols)
        rows.append(f'<tr class="run" data-status="{_e(r["status"], 20)}"><td>{_when(r["startedAt"])}'
                    f'</td><td>{_e(r["mode"], 20)}</td><td class="{"on_time" if r["status"] == "success" else "failing"}">'
                    f'{_e(r["status"], 20)}</td>{cells}<td class="msg">{_e(r["message"], RUN_MESSAGE_CHARS)}</td></tr>')
    return (f'<table class="runs"><thead><tr><th>started (CST)</th><th>mode</th><th>status</th>{head}'
            f'<th>message</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


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


def _rejects_table(groups: Sequence[dict]) -> str:
    if not groups:
        return '<p class="muted">No rejects, duplicates or warnings in the last successful load.</p>'
    rows = []
    for g in groups:
        examples = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(msg)}</li>"
                           for k, msg in g["examples"])
        fix = FIX.get(g["rule"], "see the message; correct the value at source")
        rows.append(f'<tr class="reject-group" data-field="{_e(g["field"], 50)}" data-rule="{_e(g["rule"], 50)}">'
                    f'<td>{_e(g["field"], 50)}</td><td>{_e(g["rule"], 50)}</td><td>{_e(g["severity"], 20)}'
                    f'</td><td class="n count">{g["count"]}</td><td><ul>{examples}</ul></td>'
                    f'<td>{html.escape(fix)}</td></tr>')
    return (f'<table class="rejects"><thead><tr><th>field</th><th>rule</th><th>severity</th>'
            f'<th>rows</th><th>examples (source key: message)</th><th>what to fix</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _audit_table(audit: Sequence[dict]) -> str:
    if not audit:
        return '<p class="muted">Cleaning changed nothing in the last successful load.</p>'
    rows = []
    for a in audit:
        try:
            examples = json.loads(a["examples"])
        except (TypeError, ValueError):
            examples = []
        shown = "".join(f"<li><code>{_e(pair[0], 100)}</code> → <code>{_e(pair[1], 100)}</code></li>"
                        for pair in examples[:EXAMPLES_SHOWN] if isinstance(pair, list) and len(pair) == 2)
        rows.append(f'<tr><td>{_e(a["field"], 50)}</td><td>{_e(a["rule"], 50)}</td>'
                    f'<td class="n">{int(a["count"])}</td><td><ul>{shown}</ul></td></tr>')
    return (f'<table class="audit"><thead><tr><th>field</th><th>cleaning rule</th><th>values changed</th>'
            f'<th>examples (before → after)</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


EXPORT_COLUMNS = ("txCode", "dataset", "sourceKey", "field", "rule", "severity", "message",
                  "whatToFix", "runId", "createdAt")


def export_rows(rejects: Iterable[dict]) -> list[list[str]]:
    out = []
    for x in rejects:
        ds = standard.BY_TX_CODE.get(x["txCode"])
        out.append([x["txCode"], ds.zh if ds else "", _text(x["sourceKey"]), _text(x["field"], 50),
                    _text(x["rule"], 50), _text(x["severity"], 20), _text(x["message"]),
                    FIX.get(x["rule"], ""), _text(x["runId"], 200), _when(x["createdAt"])])
    return out


def _inert(value: str) -> str:
    """A CSV cell a spreadsheet shows as text, never runs as a formula (=, +, -, @)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def export_files(rejects: Sequence[dict]) -> tuple[bytes, bytes]:
    """The CSV (UTF-8 with BOM, for Excel) and XLSX of every reject, warning and dropped
    duplicate of the last successful loads, masked, every cell text (never a formula) and
    visible, rendered in memory: a unit's exports are written whole or not at all."""
    from openpyxl import Workbook
    from openpyxl.cell.cell import TYPE_STRING

    rows = [[visible("" if v is None else str(v)) for v in r] for r in export_rows(rejects)]
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(EXPORT_COLUMNS)
    w.writerows([[_inert(v) for v in r] for r in rows])
    csv_bytes = text.getvalue().encode("utf-8-sig")
    wb = Workbook()
    ws = wb.active
    ws.title = "rejects"
    ws.append(list(EXPORT_COLUMNS))
    for r in rows:
        ws.append(r)
    for row in ws.iter_rows(min_row=2):
        for cell in row:
            cell.data_type = TYPE_STRING  # text, never a formula
    ws.freeze_panes = "A2"
    for col, width in zip("ABCDEFGHIJ", (7, 14, 22, 14, 14, 10, 70, 40, 30, 17)):
        ws.column_dimensions[col].width = width
    book = io.BytesIO()
    wb.save(book)
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
        body.append(f'<tr><td>{_e(r["field"], 50)}</td><td>{link}</td><td>{_e(r["mediaType"], 100)}</td>'
                    f'<td class="n">{int(r["size"]):,}</td><td><code>{_e(r["sha256"][:12], 20)}</code></td>'
                    f'<td>{_when(r["fetchedAt"])}</td></tr>')
    return ("<h3>Attachments</h3><table><tr><th>field</th><th>file</th><th>type</th>"
            "<th>bytes</th><th>sha256</th><th>fetched (CST)</th></tr>" + "".join(body) + "</table>")


def unit_html(data: UnitData, statuses: Sequence, now: datetime) -> str:
    stem = unit_key(data.org_no)
    by_tx = {s.tx_code: s for s in statuses}
    groups = reject_groups(data.rejects)
    sections = []
    for tx in sorted(set(by_tx) | set(data.runs)):
        ds = standard.BY_TX_CODE.get(tx)
        s = by_tx.get(tx)
        runs = data.runs.get(tx, [])
        status = (f'<span class="{s.status} status">{STATUS_LABEL.get(s.status, s.status)}</span>, '
                  f'{s.frequency}, last successful load {_when(s.last_success) or "never"}, '
                  f'{s.records} records' if s else "")
        mine = [g for g in groups if g["txCode"] == tx]
        audit = [a for a in data.audit if a["txCode"] == tx]
        sections.append(
            f'<section class="dataset" id="tx{_e(tx, 10)}" data-tx="{_e(tx, 10)}">'
            f'<h2>{_e(tx, 10)} {html.escape(ds.zh if ds else "")} ({html.escape(ds.table if ds else "")})</h2>'
            f'<p>{status}</p>'
            + (f"<h3>Last runs</h3>{chart_svg(runs)}{_runs_table(runs)}" if runs else
               '<p class="muted">No runs recorded.</p>')
            + f"<h3>Rejects, duplicates and warnings</h3>{_rejects_table(mine)}"
            + _media_table([x for x in data.media if x["txCode"] == tx])
            +             f"<h3>What cleaning changed</h3>{_audit_table(audit)}</section>")
    errors = sum(1 for x in data.rejects if x["severity"] == "error")
    body = (f'<h1>{_e(data.com_name, 200)}</h1><p>orgNo <code>{_e(data.org_no, 50)}</code> · '
            f'{len(data.rejects)} findings in the last successful loads ({errors} rejected rows)</p>'
            f'<p>Download every finding to fix at source: <a class="export" href="{stem}-rejects.csv" '
            f'download>CSV</a> · <a class="export" href="{stem}-rejects.xlsx" download>XLSX</a></p>'
            + "".join(sections))
    return _page(f"{_text(data.com_name, 200)} · ingestion", body, now, home="../")


def write_unit(out: Path, data: UnitData, statuses: Sequence, now: datetime) -> set[str]:
    """The unit's page and exports, all rendered before any is written; returns their file
    names. When writing one fails, those written are removed: a unit's files are of one build."""
    folder = Path(out) / "units"
    folder.mkdir(parents=True, exist_ok=True)
    stem = unit_key(data.org_no)
    csv_bytes, xlsx_bytes = export_files(data.rejects)
    files = {f"{stem}.html": unit_html(data, statuses, now).encode("utf-8"),
             f"{stem}-rejects.csv": csv_bytes, f"{stem}-rejects.xlsx": xlsx_bytes}
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
    return f"<ul>{shown}</ul>" + (f'<p class="muted">… and {more} more</p>' if more > 0 else "")


def reconcile_html(results: Sequence[dict], mappings: dict[str, Mapping], now: datetime) -> str:
    if not results:
        body = ("<h1>Reconciliation</h1><p id=\"none\">No reconciliation yet: run "
                "<code>etl reconcile MAPPING</code> (the weekly DAG reconciles every unit).</p>")
        return _page("Reconciliation", body, now)
    rows, details = [], []
    for x in sorted(results, key=lambda x: (x.get("orgNo", ""), x.get("txCode", ""))):
        org, tx, state = x.get("orgNo", ""), x.get("txCode", ""), x.get("state", "")
        m = mappings.get(org)
        name = m.unit.comName if m else org
        ds = standard.BY_TX_CODE.get(tx)
        anchor = f"r-{unit_key(org)}-{token(tx)}"
        counts = "".join(f'<td class="n">{int(x.get(k) or 0)}</td>' for k in (
            "sourceValid", "targetActive", "missing", "differing", "extra", "notIngested"))
        rows.append(f'<tr class="rec" data-org="{_e(org, 50)}" data-tx="{_e(tx, 10)}" data-state="{_e(state, 20)}">'
                    f'<td><a href="units/{unit_key(org)}.html">{_e(name, 200)}</a></td><td>{_e(org, 50)}</td>'
                    f'<td>{_e(tx, 10)} {html.escape(ds.zh if ds else "")}</td>'
                    f'<td class="{_e(state, 20)}"><a href="#{anchor}">{_e(state, 20)}</a></td>{counts}'
                    f'<td>{_e(x.get("checkedAt"), 40) if not isinstance(x.get("checkedAt"), datetime) else _when(x["checkedAt"])}</td></tr>')
        d = x.get("details") or {}
        if isinstance(d, str):
            try:
                d = json.loads(d)
            except ValueError:
                d = {}
        parts = []
        if d.get("differing"):
            parts.append("<h4>Differing records</h4><table class=\"differing\"><thead><tr><th>ID</th>"
                         "<th>source key</th><th>field</th><th>source</th><th>target</th></tr></thead><tbody>"
                         + "".join(f'<tr><td>{_e(v.get("id"), 80)}</td><td>{_e(v.get("source_key"), 100)}</td>'
                                   f'<td>{_e(v.get("field"), 50)}</td><td>{_e(v.get("source"), 200)}</td>'
                                   f'<td>{_e(v.get("target"), 200)}</td></tr>'
                                   for v in d["differing"][:DETAILS_SHOWN] if isinstance(v, dict))
                         + "</tbody></table>")
        if d.get("missing"):
            parts.append("<h4>Valid source records missing in the target</h4>"
                         + _items(d["missing"], lambda v: f"<code>{_e(v, 100)}</code>"))
        if d.get("extra"):
            parts.append("<h4>Active target records not in the source</h4>"
                         + _items(d["extra"], lambda v: f"<code>{_e(v, 100)}</code>"))
        if d.get("not_ingested"):
            parts.append("<h4>Not ingested (rejected at validation)</h4>" + _items(
                d["not_ingested"], lambda v: " · ".join(_e(p) for p in (v if isinstance(v, list) else [v]))))
        if parts:
            details.append(f'<section id="{anchor}" class="rec-details"><h3>{_e(name, 200)} · '
                           f'{_e(tx, 10)} · {_e(state, 20)}</h3>{"".join(parts)}</section>')
    body = ("<h1>Reconciliation</h1><p>The last automated comparison of each reconciled dataset "
            "with its source (5.3): in agreement when every valid source record is in the target "
            "with equal standard fields and no other record is active.</p>"
            '<table id="reconcile"><thead><tr><th>unit</th><th>orgNo</th><th>dataset</th><th>state</th>'
            "<th>valid in source</th><th>active in target</th><th>missing</th><th>differing</th>"
            "<th>extra</th><th>not ingested</th><th>checked</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>" + "".join(details))
    return _page("Reconciliation", body, now)


def write_reconcile(out: Path, results: Sequence[dict], mappings: dict[str, Mapping],
                    now: datetime) -> Path:
    path = Path(out) / "reconcile.html"
    _write(path, reconcile_html(results, mappings, now))
    return path
