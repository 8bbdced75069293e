"""What the target remembers of a unit's dataset between runs, read from `ingest_run`: whether it
ever loaded under its current record key, up to where its reads got, and when hard deletes were
last looked for. A run decides from it how much to read (5.2.1: full or incremental), so a
scheduled run needs no hand: a dataset never loaded is loaded in full, a gap since the last
successful load is read again, a deleted row is found on the mapping's schedule.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl.common import clock
from etl.target import schema as target

#: How often `hard_deletes:` compares a dataset's source keys with the target (None: every run).
SWEEP_PERIODS: dict[str, timedelta | None] = {
    "each_run": None, "daily": timedelta(days=1), "weekly": timedelta(days=7)}
#: A periodic comparison is due this much before its period is over: a daily run that started a
#: few seconds earlier than yesterday's still compares.
SWEEP_SLACK = timedelta(hours=1)


KEY_CHARS = 500  # ingest_run.keyColumns
#: `ingest_run.mode` of a message a unit pushed (the interface route, etl.interface.receive)
PUSH_MODE = "push"


def key_columns(key: list[str]) -> str:
    """How `ingest_run.keyColumns` records a mapping's source key: the record IDs derive from
    these columns' values, so another list means other IDs for the same rows. A list too long
    for the column is recorded by its digest."""
    text = json.dumps(list(key), ensure_ascii=False)
    if len(text) <= KEY_CHARS:
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class History:
    loaded: bool                     # a successful load under the current key (or unrecorded)
    covered_until: datetime | None   # where those loads' reads got to (naive CST), if known
    other_keys: tuple[str, ...]      # keys successful loads used that differ from the current
    last_sweep: datetime | None      # when a successful run last compared all keys (CST)

    def why_full(self, key: str) -> str | None:
        """Why an incremental run must read everything instead, or None when it need not."""
        if self.loaded:
            return None
        if self.other_keys:
            return (f"the record key changed ({self.other_keys[-1]} -> {key}): loaded in full, so "
                    f"records are identified by the new key and those of the old one marked D")
        return "first load: no successful load of this dataset yet, so loaded in full"


def read(conn: Connection, org_no: str, tx_code: str, key: str) -> History:
    """One GROUP BY over the unit's successful runs of the dataset. Runs recorded before keys
    were (migration 0009) count as loaded under any key: an upgrade starts no full loads."""
    r = target.ingest_run
    swept = sa.case((sa.or_(r.c.sweptKeys.is_not(None), r.c.mode == "full"), r.c.startedAt))
    rows = conn.execute(
        sa.select(r.c.keyColumns, sa.func.max(r.c.windowEnd), sa.func.max(swept),
                  sa.func.max(r.c.runKey))
        .where(r.c.orgNo == org_no, r.c.txCode == tx_code, r.c.status == "success",
               r.c.mode != PUSH_MODE)  # a pushed message reads no source: no window, no key
        .group_by(r.c.keyColumns)).all()
    mine = [row for row in rows if row[0] in (key, None)]
    ends = [row[1] for row in mine if row[1] is not None]
    sweeps = [clock.to_cst(row[2]) for row in rows if row[2] is not None]
    others = tuple(row[0] for row in sorted(rows, key=lambda row: row[3]) if row[0] not in (key, None))
    return History(bool(mine), max(ends) if ends else None, others, max(sweeps) if sweeps else None)


def sweep_due(setting: str, last_sweep: datetime | None, now: datetime) -> bool:
    """Whether this run compares the dataset's source keys with the target (`hard_deletes:`)."""
    if setting == "never":
        return False
    period = SWEEP_PERIODS[setting]
    return period is None or last_sweep is None or now - last_sweep >= period - SWEEP_SLACK
