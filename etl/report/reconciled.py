"""What reconciliations found, as kept in `ingest_reconcile` (`etl.report.reconcile` runs and
saves them): read for the report site without pulling in the pipeline that compares."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import standard, target
from etl.common import clock


def latest(engine: Engine) -> list[dict]:
    """The last saved result per (orgNo, txCode), sorted by both: the table's columns
    (`checkedAt` aware, CST), `table`, `message`, and `details` (missing, extra, differing,
    not_ingested) parsed from JSON."""
    target.ensure_schema(engine)
    rc = target.ingest_reconcile
    last = sa.select(sa.func.max(rc.c.reconcileId).label("k")).group_by(rc.c.orgNo, rc.c.txCode).subquery()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(rc).join(last, rc.c.reconcileId == last.c.k)
                            .order_by(rc.c.orgNo, rc.c.txCode)).mappings().all()
    out = []
    for row in rows:
        d = dict(row)
        d["checkedAt"] = clock.to_cst(d["checkedAt"]) if d["checkedAt"] else None
        details = json.loads(d["details"] or "{}")
        d["details"] = details
        d["table"] = details.get("table") or standard.dataset(d["txCode"]).table
        d["message"] = details.get("message")
        out.append(d)
    return out
