"""
### Dual prevention ingestion (特种设备双重预防数据归集)

Ingests each using unit's dual-prevention data into the target database, one mapping file per
unit in `mappings/` (`ETL_MAPPINGS_DIR`). A new file is picked up by the next run: no code change.

| DAG | runs (Asia/Shanghai) | datasets |
|---|---|---|
| `dual_prevention_daily` | every day at 00:00, for the day before | the standard's daily txCodes 06, 07, 09 |
| `dual_prevention_weekly` | Mondays at 00:00, for the week before | the weekly txCodes 01, 02, 03, 04, 05, 08 |
| `dual_prevention_frequent` | every 5 minutes | datasets a mapping sets to `frequency: hourly` or `Nmin` |

A mapping's `frequency:` moves a dataset from its standard DAG to another one.

**Tasks.** `plan_units` reads the mapping files and lists the (unit, txCode) pairs of this run.
Each pair runs `ingest.extract` → `ingest.validate` → `ingest.load` as mapped tasks, with data
passed as Parquet files in `ETL_STAGING_DIR` (XCom holds only paths and counts). Datasets that
refer to another dataset of the same unit (03 to 02, 07 to 06) run after it, in
`ingest_referencing`. `summarise` logs the counts and top reject reasons, and fails the run when
any unit failed. One unit's failure never stops the others; an invalid mapping fails its own
`ingest.extract` at once (no retries) with every problem listed.

**Windows.** Scheduled runs and backfills read rows changed within their data interval
(incremental; datasets without `updated_at` are loaded in full). A manual trigger takes the form's
params: `units` (mapping file names without `.yaml`; empty = all), `tx_codes`, `mode`, and an
optional `since` / `until` (ISO 8601, China Standard Time unless an offset is given).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import (
    CronDataIntervalTimetable,
    Param,
    TriggerRule,
    dag,
    get_current_context,
    task,
    task_group,
)

TIMEZONE = "Asia/Shanghai"
# one YAML file per using unit; a relative ETL_MAPPINGS_DIR is taken from the project folder
MAPPINGS_DIR = Path(__file__).resolve().parents[1] / (os.environ.get("ETL_MAPPINGS_DIR") or "mappings")
# loads share the one target database: an Airflow pool (airflow pools set ...) caps how many run at once
TARGET_POOL = os.environ.get("ETL_TARGET_POOL") or "default_pool"

# frequency -> (cron in CST: a run starts when its interval ends, what it ingests)
SCHEDULES = {
    "daily": ("0 0 * * *", "the standard's daily datasets (06, 07, 09), for the day before"),
    "frequent": ("*/5 * * * *", "datasets a mapping sets to frequency: hourly or Nmin"),
    "weekly": ("0 0 * * 1", "the standard's weekly datasets (01-05, 08), for the week before"),
}

DEFAULT_ARGS = {
    "owner": "dual-prevention",
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=4),
}


def _unit_names() -> list[str]:
    """Mapping file names, for the trigger form (a file listing: cheap at parse time)."""
    if not MAPPINGS_DIR.is_dir():
        return []
    return sorted({p.stem for pattern in ("*.yaml", "*.yml") for p in MAPPINGS_DIR.glob(pattern)})


def _params() -> dict[str, Param]:
    units = _unit_names()
    return {
        "units": Param(
            [], type="array", items={"type": "string"}, title="Units",
            description="Mapping files to ingest, by name without .yaml; empty = every unit.",
            **({"examples": units} if units else {}),
        ),
        "tx_codes": Param(
            [], type="array", items={"type": "string", "pattern": "^0[1-9]$"}, title="txCodes",
            description="Datasets to ingest, e.g. 06; empty = every dataset of this DAG.",
        ),
        "mode": Param(
            "incremental", type="string", enum=["incremental", "full"], title="Mode",
            description="incremental reads rows changed in the window (datasets without "
                        "updated_at are read in full); full reads everything and marks records "
                        "gone from the source as deleted.",
        ),
        "since": Param(
            None, type=["null", "string"], title="Since",
            description="Window start, ISO 8601 (CST unless an offset is given). Empty: the "
                        "run's data interval, or where the last run stopped.",
        ),
        "until": Param(
            None, type=["null", "string"], title="Until",
            description="Window end (exclusive). Empty: the run's data interval end, or now.",
        ),
    }


def build(frequency: str, cron: str, summary: str):
    @dag(
        dag_id=f"dual_prevention_{frequency}",
        description=f"Dual prevention ingestion: {summary}",
        schedule=CronDataIntervalTimetable(cron, timezone=TIMEZONE),
        start_date=pendulum.datetime(2025, 1, 1, tz=TIMEZONE),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params=_params(),
        tags=["dual-prevention", "etl", frequency],
        doc_md=__doc__,
    )
    def ingestion():
        @task
        def plan_units(wave: int) -> list[dict]:
            from etl import orchestrate

            ctx = get_current_context()
            return orchestrate.units_for(frequency, wave=wave, mappings=str(MAPPINGS_DIR),
                                         **orchestrate.context_args(ctx))

        @task(map_index_template="{{ label }}")
        def extract(unit: dict) -> dict:
            from etl import orchestrate

            return orchestrate.extract_to_parquet(unit, get_current_context())

        @task(map_index_template="{{ label }}")
        def validate(staged: dict) -> dict:
            from etl import orchestrate

            return orchestrate.validate_parquet(staged, get_current_context())

        @task(map_index_template="{{ label }}", pool=TARGET_POOL)
        def load(staged: dict) -> dict:
            from etl import orchestrate

            return orchestrate.load_parquet(staged, get_current_context())

        @task_group
        def ingest(unit: dict):
            return load(validate(extract(unit)))

        @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
        def summarise(first: list | None, then: list | None, first_results: list | None,
                      then_results: list | None) -> dict:
            from etl import orchestrate

            return orchestrate.summarise([first, then], [first_results, then_results])

        units = plan_units.override(task_id="plan_units")(0)
        results = ingest.expand(unit=units)
        referencing = plan_units.override(task_id="plan_referencing",
                                          trigger_rule=TriggerRule.ALL_DONE)(1)
        results >> referencing
        later_results = ingest.override(group_id="ingest_referencing").expand(unit=referencing)
        summarise(units, referencing, results, later_results)

    return ingestion()


for _frequency, (_cron, _summary) in sorted(SCHEDULES.items()):
    build(_frequency, _cron, _summary)
