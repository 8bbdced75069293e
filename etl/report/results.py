"""A run's outcome as people read it, rebuilt from the target's run records (`ingest_run`,
`ingest_reject`): what every unit's dataset did, the top reject reasons, every failure by name.

The target is the record: whichever process or machine loaded a dataset, and however many tries
it took, the last `ingest_run` row of each unit's dataset says how it ended.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa

from etl import standard, target
from etl.pipeline import DatasetResult
from etl.report import text as report
from etl.target.load import Counts

#: Above this many datasets the summary shows totals per dataset instead of a line per unit.
DETAIL_ROWS = 300


@dataclass
class Summary:
    text: str
    failed: list[str] = field(default_factory=list)   # "unit tx" labels
    totals: dict[str, int] = field(default_factory=dict)


def _results(conn: sa.Connection, run_id: str) -> dict[tuple[str, str], DatasetResult]:
    """The last run row of each (unit, dataset) of the run, with its reject reasons."""
    r = target.ingest_run
    out: dict[tuple[str, str], DatasetResult] = {}
    for row in conn.execute(sa.select(r).where(r.c.runId == run_id).order_by(r.c.runKey)).mappings():
        counts = Counts(**{k: row[report.RUN_COLUMN.get(k, k)] or 0 for k in report.COUNT_COLUMNS})
        out[(row["mapping"], row["txCode"])] = DatasetResult(
            row["mapping"], row["orgNo"], row["txCode"], row["mode"], status=row["status"],
            counts=counts, window=(row["windowStart"], row["windowEnd"]),
            message=row["message"] or "")
    rej = target.ingest_reject
    reasons: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for org, tx, fld, rule, n in conn.execute(
            sa.select(rej.c.orgNo, rej.c.txCode, rej.c.field, rej.c.rule, sa.func.count())
            .where(rej.c.runId == run_id, rej.c.severity == "error")
            .group_by(rej.c.orgNo, rej.c.txCode, rej.c.field, rej.c.rule)):
        reasons[(org, tx)][f"{fld}:{rule}"] += n
    for res in out.values():
        res.reasons = reasons.get((res.org_no, res.tx_code), Counter())
    return out


def _by_dataset(results: list[DatasetResult]) -> str:
    """Totals per txCode, for runs too large to list every unit."""
    rows = []
    for tx in sorted({r.tx_code for r in results}):
        group = [r for r in results if r.tx_code == tx]
        ok = sum(1 for r in group if r.status == "success")
        sums = [sum(getattr(r.counts, k) for r in group) for k in report.COUNT_COLUMNS]
        rows.append([tx, standard.dataset(tx).table, len(group), ok, len(group) - ok, *sums])
    return report.table(["tx", "table", "units", "success", "failed", *report.COUNT_COLUMNS], rows)


def summarise(engine: sa.Engine, run_id: str, planned: list[tuple[str, str]],
              problems: dict[str, str]) -> Summary:
    """The run's summary: `planned` (unit name, txCode; "" for an invalid mapping) against
    what the run records say; a planned dataset without a record failed before it could say."""
    target.ensure_schema(engine)
    with engine.connect() as conn:
        recorded = _results(conn, run_id)
    shown: list[DatasetResult] = []
    failed: list[str] = []
    lines: list[str] = []
    for name, tx in sorted(set(planned)):
        if not tx:
            failed.append(f"{name} (invalid mapping)")
            lines.append(f"FAILED {name} (invalid mapping): {problems.get(name, '')}")
            continue
        res = recorded.get((name, tx)) or DatasetResult(
            name, "", tx, "", status="failed",
            message="no result: its shard's tasks failed before it was loaded (see their logs)")
        shown.append(res)
        if res.status != "success":
            failed.append(f"{name} {tx}")
    if len(shown) <= DETAIL_ROWS:
        text = report.run_summary(shown) if shown else "no datasets were planned for this run"
    else:
        reasons = sum((r.reasons for r in shown), Counter())
        text = "\n".join([_by_dataset(shown)] + (
            ["top reject reasons (field:rule): "
             + ", ".join(f"{k} ×{n}" for k, n in reasons.most_common(8))] if reasons else [])
            + [f"FAILED {r.mapping} {r.tx_code}: {r.message}" for r in shown if r.status != "success"])
    totals = {"datasets": len(planned), "failed": len(failed),
              **{k: sum(getattr(r.counts, k) for r in shown)
                 for k in ("inserted", "updated", "deleted", "rejected")}}
    return Summary("\n".join([text, *lines]), failed, totals)
