"""The daily and weekly DAGs' schedule: China Standard Time days (and Mon-Sun weeks), whatever
zone the operator's browser is in (issue 24).

Airflow's UI takes a backfill's dates in the browser's zone and shows only a small "UTC" beside
them. With Airflow's own `CronDataIntervalTimetable` a run is in a range when its logical date
(the start of the day it ingests, 16:00 UTC the day before) is, so `12/01 00:00 → 12/03 00:00`
from a UTC browser leaves out 1 December CST. `CstTimetable` keeps everything of that timetable
(cron, zone, intervals, summary and description in the UI) and changes two things:

- a range's bounds are moved to the start of the CST day (week) they fall in, so a range covers
  every CST day it touches: from a UTC browser, as from a CST one, 12/01 → 12/03 makes the runs
  of 1, 2 and 3 December;
- the runs it names (scheduled, and manual ones with a data interval) say the CST day they
  ingest: `scheduled__2026-12-06_CST`, weekly `scheduled__2026-11-30~2026-12-06_CST`. Airflow
  3.3 names backfill runs itself (`backfill__<end of the day, UTC>`), without asking the
  timetable.

The scheduler deserialises a DAG's timetable by its import path, so Airflow must know the class:
`CstCalendarPlugin` registers it, through the `airflow.plugins` entry point in pyproject.toml.
Cheap to import (the DAG file does, at parse time): Airflow's timetables and nothing of etl.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction
from airflow.timetables.interval import CronDataIntervalTimetable

if TYPE_CHECKING:
    from pendulum import DateTime

    from airflow.utils.types import DagRunType


class CstTimetable(CronDataIntervalTimetable):
    """Cron data intervals in CST whose ranges are whole periods and whose runs name them."""

    def _whole(self, when: DateTime | None) -> DateTime | None:
        """The start of the period (CST day, week) `when` falls in."""
        return None if when is None else self._align_to_prev(when)

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         restriction: TimeRestriction) -> DagRunInfo | None:
        # backfills (catchup=True restrictions from the picked range) and the DAG's start/end
        # dates: every period a bound falls in is in, wherever the bound was picked
        whole = TimeRestriction(self._whole(restriction.earliest), self._whole(restriction.latest),
                                restriction.catchup)
        return super().next_dagrun_info(last_automated_data_interval=last_automated_data_interval,
                                        restriction=whole)

    def generate_run_id(self, *, run_type: DagRunType, run_after: DateTime,
                        data_interval: DataInterval | None, **extra: Any) -> str:
        if data_interval is None:
            return super().generate_run_id(run_type=run_type, run_after=run_after,
                                           data_interval=data_interval, **extra)
        days = cst_days(data_interval)
        if run_type.value == "scheduled":  # one per period: the period names it
            return run_type.generate_run_id(suffix=days)
        # manual: several may read one day; the trigger time keeps them apart
        return run_type.generate_run_id(suffix=f"{days}__{run_after.isoformat()}")


def cst_days(interval: DataInterval) -> str:
    """`2026-12-06_CST` for one CST day, `2026-11-30~2026-12-06_CST` for several (the last
    day included): characters Airflow's run ids allow (`..` is refused, as a path traversal)."""
    first = interval.start.in_timezone("Asia/Shanghai").date()
    last = (interval.end.in_timezone("Asia/Shanghai") - timedelta(microseconds=1)).date()
    return f"{first}_CST" if first == last else f"{first}~{last}_CST"


class CstCalendarPlugin(AirflowPlugin):
    """Lets the scheduler, DAG processor and API server deserialise `CstTimetable`."""

    name = "dual_prevention_calendar"
    timetables = [CstTimetable]
