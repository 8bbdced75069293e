"""
### Dual prevention ingestion (特种设备双重预防数据归集)

Ingests each using unit's dual-prevention data into the target database, one mapping file per
unit in `mappings/` (`ETL_MAPPINGS_DIR`). A new file is picked up by the next run: no code change,
no restart. A unit's environment variables (`url_env`, `base_env`) are another matter: tasks see
only those the scheduler or Celery workers started with, so set them there and restart them
(an Airflow connection, `conn_id`, needs no restart).

| DAG | runs (Asia/Shanghai) | datasets |
|---|---|---|
| `dual_prevention_daily` | every day at 00:00, for the day before | the standard's daily txCodes 06, 07, 09 |
| `dual_prevention_weekly` | Mondays at 00:00, for the week before | the weekly txCodes 01, 02, 03, 04, 05, 08 |
| `dual_prevention_frequent` | every 5 minutes | datasets a mapping sets to `frequency: hourly` or `Nmin` |
| `dual_prevention_freshness` | daily at 08:00, and after every daily or weekly run | checks timeliness (4.2, 5.4); loads nothing |

A mapping's `frequency:` moves a dataset from its standard DAG to another one.

**Tasks.** `plan` reads the mapping files once and splits the run's units into *shards* (one per
parallel task slot, at least 50 units each; the `units_per_shard` param sets the size). Each
shard is one task, `ingest.load`: it extracts, transforms (map, clean, validate) and loads each
dataset in memory, as `etl run` does. With `ETL_SHARD_TASKS=three` (the default when
`ETL_LOAD_QUEUE` gives loads their own Celery queue) a shard runs `ingest.extract` →
`ingest.transform` → `ingest.load` instead, handing the data over through the staging store.
A shard's units go one after another, each unit's datasets in txCode order (02 before 03,
06 before 07). A shard's
map index names its units (`2/8 南京化工 … 苏州电梯 (125 units)`). One unit's failure never
stops the others: `load` loads every other unit first, then fails naming the failed ones; its
retry loads only those. An invalid mapping fails its shard without retries. `summarise` logs
the run's table from the target's run records and fails the run when any dataset failed.

**After the loads**, whatever they did: the weekly DAG's `reconcile` compares each shard's units
with the target (5.3) and keeps the results (before `summarise`); in the daily and weekly DAGs,
`report_pages` then writes the report site's unit pages in shares, one task a shard in
parallel, and `report` completes the site (`ETL_REPORTS_DIR`, default `var/report/`: any page
no share wrote, the overview) and updates the asset `dual_prevention_ingestion`; `summarise`
comes last, so the run's state is its own: an ingestion run is red exactly when a dataset (or
the planning) failed.

**Timeliness** is `dual_prevention_freshness`'s: its one task fails, naming them, when any
unit's dataset is late, failing or never loaded; a dataset never loaded whose mapping appeared
less than a period plus a grace ago is *pending first load*, not late. It runs at 08:00 (so a
paused or stuck ingestion is noticed too) and after each update of the asset. A DAG of its own because a DAG run's state is what the
UI colours and the REST API and alerting read: a red ingestion run means "ingestion broke", a red
freshness run "data is late". Airflow 3 has no SLA misses, and its deadline alerts time a DAG
run, not the age of a unit's data; assets are how Airflow 3 runs one DAG after another's data
changed.

**Alerts and assets.** A failed run of any of these DAGs is e-mailed (`ETL_ALERT_EMAIL`,
Airflow's SMTP connection) and posted to a DingTalk or WeCom robot (`ETL_ALERT_WEBHOOK_CONN_ID`,
an HTTP connection), naming the failed or late units. Each `ingest.load` updates the asset of
every txCode it loaded (`dual_prevention_09`, ...): schedule a DAG on it to follow the data.

**Windows.** Scheduled runs and backfills read rows changed within their data interval
(incremental; datasets without `updated_at` are loaded in full). A dataset never loaded under its
record key (a unit whose file was just dropped in, a newly mapped dataset, a changed `key:`) is
loaded in full by its next run, and a window after failed days reaches back to where the last
successful load ended; incremental runs compare every source key to mark rows deleted at the
source D (`hard_deletes:`). A manual trigger takes the form's params: `units` (mapping file names
without `.yaml`, orgNos, or patterns such as `南京*`; empty = all), `tx_codes`, `mode`, `resume`
(each dataset from where its last successful run stopped, until now), an optional `since` /
`until` (ISO 8601, China Standard Time unless an offset is given), and `allow_mass_delete`.

**Fix, then clear.** A failed shard's `ingest.load` names its failed units; fix them (mapping
file, source, or an environment variable: restart Airflow), then clear that task instance with
Downstream: it reads its units' mapping files and sources again (docs/airflow.md).
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta

import pendulum
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    dag,
    get_current_context,
    task,
    task_group,
)

from etl.common import settings  # the ETL_* variables (stdlib only: cheap at parse time)
from etl.orchestration import alerts, assets  # notifiers from ETL_ALERT_*; the datasets' assets
from etl.orchestration.timetable import CstTimetable  # CST days whatever the browser's zone

TIMEZONE = "Asia/Shanghai"
# one YAML file per using unit; a relative ETL_MAPPINGS_DIR is taken from ETL_HOME
MAPPINGS_DIR = settings.path("ETL_MAPPINGS_DIR")
# loads share the one target database: an Airflow pool (`etl airflow` creates it) caps how many run at once
TARGET_POOL = settings.text("ETL_TARGET_POOL") or "dual_prevention_target"
# Celery: the queue of the workers that load (e.g. those near the target); empty = the default queue
LOAD_QUEUE = settings.text("ETL_LOAD_QUEUE")
# a shard in one task (in memory, as `etl run`) or three (extract -> transform -> load, staged)
SHARD_TASKS = settings.shard_tasks()
# the trigger form lists units to pick from up to this many; beyond, they are typed (or patterns)
LISTED_UNITS = 300

# frequency -> (cron in CST: a run starts when its interval ends, what it ingests, txCodes)
SCHEDULES = {
    "daily": ("0 0 * * *", "the standard's daily datasets (06, 07, 09), for the day before",
              ["06", "07", "09"]),
    "frequent": ("*/5 * * * *", "datasets a mapping sets to frequency: hourly or Nmin",
                 [f"0{n}" for n in range(1, 10)]),
    "weekly": ("0 0 * * 1", "the standard's weekly datasets (01-05, 08), for the week before",
               ["01", "02", "03", "04", "05", "08"]),
}

# updated by the daily and weekly runs' `report` task after every run, whatever the loads did:
# the target's bookkeeping (ingest_run) changed, so timeliness is worth checking again
INGESTED = Asset(name="dual_prevention_ingestion", uri="x-dual-prevention://target/ingest_run",
                 group="dual-prevention")
# the timeliness check also runs once a day (CST) whatever ran: a paused DAG makes no event
FRESHNESS_CRON = "0 8 * * *"
DAGRUN_TIMEOUT = {"daily": timedelta(hours=20), "weekly": timedelta(days=6),
                  "frequent": timedelta(hours=1), "freshness": timedelta(hours=2)}

DEFAULT_ARGS = {
    "owner": "dual-prevention",
    "retries": 3,
    "retry_delay": timedelta(seconds=settings.number("ETL_RETRY_DELAY_SECONDS") or 0),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(hours=4),
}


@functools.cache  # once a parse, not once a DAG: a province has 10,000 files
def _unit_names() -> list[str]:
    """Mapping file names, for the trigger form (a file listing: cheap at parse time)."""
    try:
        names = os.listdir(MAPPINGS_DIR)
    except OSError:  # no folder (yet)
        return []
    return sorted({n.rsplit(".", 1)[0] for n in names if n.endswith((".yaml", ".yml"))})


def _params(tx_codes: list[str]) -> dict[str, Param]:
    units = _unit_names()
    listed = {"examples": units} if 0 < len(units) <= LISTED_UNITS else {}
    return {
        "units": Param(
            None, type=["null", "array"], items={"type": "string"}, title="使用单位",
            description=(f"要归集的使用单位：映射文件名（不含 .yaml）、统一社会信用代码，或 南京* 这样的"
                         f"通配模式；留空 = 全部 {len(units)} 个单位。"
                         + ("" if listed else "每行一个。")),
            **listed,
        ),
        "tx_codes": Param(
            None, type=["null", "array"], items={"type": "string", "pattern": "^0[1-9]$"},
            examples=tx_codes, title="数据信息类别（txCode）",
            description="要归集的数据信息类别代码（01 单位基本信息 … 09 隐患排查治理信息）；"
                        "留空 = 本 DAG 的全部类别。",
        ),
        "mode": Param(
            "incremental", type="string", enum=["incremental", "full"], title="归集方式",
            description="incremental（增量）：读取数据时段内变更的行（没有 updated_at 的类别、"
                        "从未加载的类别按全量读取），并比对来源的全部主键以找出已删除的行；"
                        "full（全量）：读取全部数据，来源中已不存在的记录标记为删除（D）。",
        ),
        "resume": Param(
            False, type="boolean", title="接续上次",
            description="每类数据从其上次成功加载结束处读到现在，而不是本次运行的数据区间"
                        "（此时忽略逻辑日期）。",
        ),
        "since": Param(
            None, type=["null", "string"], title="数据时段开始",
            description="读取时段的开始，ISO 8601 格式（未写时区即为北京时间），如 2025-03-01。"
                        "留空：本次运行的数据区间。",
        ),
        "until": Param(
            None, type=["null", "string"], title="数据时段结束",
            description="读取时段的结束（不含）。留空：本次运行数据区间的结束，或现在。",
        ),
        "allow_mass_delete": Param(
            False, type="boolean", title="允许大量删除",
            description="确认来源确实删除了大量记录：未勾选时，若某类数据的加载会把一个单位五分之一"
                        "以上（至少 10 条）或全部有效记录标记为删除，该类数据失败且不加载任何数据。",
        ),
        "units_per_shard": Param(
            None, type=["null", "integer"], minimum=1, title="每个分片的单位数",
            description="每个抽取/转换/加载任务处理的单位数。留空：ETL_UNITS_PER_SHARD，"
                        "否则每个并行任务槽一个分片。",
        ),
    }


def build(frequency: str, cron: str, summary: str, tx_codes: list[str]):
    @dag(
        dag_id=f"dual_prevention_{frequency}",
        description=f"Dual prevention ingestion: {summary}",
        # daily, weekly: whole CST days/weeks, runs named by them; the 5-minute DAG: Airflow's own
        schedule=(CronDataIntervalTimetable if frequency == "frequent" else CstTimetable)(
            cron, timezone=TIMEZONE),
        # a stuck run fails before the next period's run is due (max_active_runs=1 would hold it)
        dagrun_timeout=DAGRUN_TIMEOUT[frequency],
        start_date=pendulum.datetime(2025, 1, 1, tz=TIMEZONE),
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        on_failure_callback=alerts.notifiers("ingestion"),  # e-mail, DingTalk/WeCom: ETL_ALERT_*
        params=_params(tx_codes),
        tags=["dual-prevention", "etl", frequency],
        doc_md=__doc__,
    )
    def ingestion():
        @task
        def plan() -> list[dict]:
            from etl.orchestration import tasks

            return tasks.plan(frequency, get_current_context(), mappings=str(MAPPINGS_DIR))

        # one task a shard: it reads, transforms and loads each dataset in memory (`ingest.load`,
        # the name the three-task form's last task has: clear it after a fix, either way)
        @task(task_id="load", map_index_template="{{ label }}", pool=TARGET_POOL,
              outlets=[assets.alias()], **({"queue": LOAD_QUEUE} if LOAD_QUEUE else {}))
        def ingest_shard(shard: dict) -> dict:
            from etl.orchestration import tasks

            return tasks.ingest(shard, get_current_context())

        @task(map_index_template="{{ label }}")
        def extract(shard: dict) -> dict:
            from etl.orchestration import tasks

            return tasks.extract(shard, get_current_context())

        @task(map_index_template="{{ label }}")
        def transform(staged: dict) -> dict:
            from etl.orchestration import tasks

            return tasks.transform(staged, get_current_context())

        # outlet: an alias through which it adds an event to each loaded txCode's asset
        @task(map_index_template="{{ label }}", pool=TARGET_POOL, outlets=[assets.alias()],
              **({"queue": LOAD_QUEUE} if LOAD_QUEUE else {}))
        def load(staged: dict) -> dict:
            from etl.orchestration import tasks

            return tasks.load(staged, get_current_context())

        @task_group
        def ingest(shard: dict):
            if SHARD_TASKS == "one":
                return ingest_shard(shard)
            return load(transform(extract(shard)))

        # inlets: it reads what the loads did to every dataset. Declaring the datasets' assets
        # here has the DAG processor register them before any load emits through its alias:
        # otherwise two loads finishing at once both create the asset, and one fails
        @task(trigger_rule=TriggerRule.ALL_DONE, retries=0, inlets=assets.every())
        def summarise(shards: list | None, loaded: list | None) -> dict:
            from etl.orchestration import tasks

            return tasks.summarise(shards, get_current_context())

        @task(map_index_template="{{ label }}", trigger_rule=TriggerRule.ALL_DONE, retries=0)
        def reconcile(ref: dict) -> dict:
            from etl.orchestration import tasks

            return tasks.reconcile(ref, get_current_context())

        # the report's unit pages in shares, one task a shard, in parallel: a province's pages
        # take minutes in one process
        @task(map_index_template="{{ label }}", trigger_rule=TriggerRule.ALL_DONE, retries=0)
        def report_pages(ref: dict) -> dict:
            from etl.orchestration import tasks

            return tasks.build_report_pages(ref, get_current_context())

        @task(trigger_rule=TriggerRule.ALL_DONE, retries=0, outlets=[INGESTED])
        def report(pages: list | None) -> str:
            from etl.orchestration import tasks

            return tasks.build_report(get_current_context(), pages)

        shards = plan()
        loaded = ingest.expand(shard=shards)
        summary = summarise(shards, loaded)
        done = loaded  # what comes before summarise: the run's state is summarise's (the leaf)
        if frequency == "weekly":  # before summarise, which removes a successful run's staging
            done = done >> reconcile.expand(ref=shards)
        if frequency in ("daily", "weekly"):  # the report site (5.3); its asset wakes freshness
            pages = report_pages.expand(ref=shards)
            done >> pages
            done = report(pages)  # writes the pages no share wrote, then the overview
        done >> summary

    return ingestion()


@dag(
    dag_id="dual_prevention_freshness",
    description="Dual prevention timeliness (4.2, 5.4): fails, naming them, when units' datasets "
                "are late, failing or never loaded",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(FRESHNESS_CRON, timezone=TIMEZONE),
                                 assets=INGESTED),
    start_date=pendulum.datetime(2025, 1, 1, tz=TIMEZONE),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=DAGRUN_TIMEOUT["freshness"],
    default_args=DEFAULT_ARGS,
    on_failure_callback=alerts.notifiers("freshness"),  # e-mail, DingTalk/WeCom: ETL_ALERT_*
    tags=["dual-prevention", "etl", "freshness"],
    doc_md=__doc__,
)
def timeliness():
    @task(retries=0)  # a late unit stays late on a retry; the next run comes with the next event
    def freshness() -> dict:
        from etl.orchestration import tasks

        return tasks.check_freshness(get_current_context())

    freshness()


for _frequency, (_cron, _summary, _tx_codes) in sorted(SCHEDULES.items()):
    build(_frequency, _cron, _summary, _tx_codes)
timeliness()
