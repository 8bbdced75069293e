"""China Standard Time: every date the standard speaks of ("today", batch days, updateDate,
incremental windows) is in Asia/Shanghai, whatever zone the machine runs in."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

CST = ZoneInfo("Asia/Shanghai")


def now() -> datetime:
    """The current instant, zone-aware, in CST."""
    return datetime.now(CST)


def to_cst(moment: datetime) -> datetime:
    """A zone-aware instant in CST; naive values are taken to be CST already."""
    return moment.replace(tzinfo=CST) if moment.tzinfo is None else moment.astimezone(CST)


def naive(moment: datetime) -> datetime:
    """CST wall-clock time without a zone: how source timestamps and windows are compared."""
    return to_cst(moment).replace(tzinfo=None)


def today(moment: datetime | None = None) -> date:
    return to_cst(moment or now()).date()
