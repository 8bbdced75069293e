"""One run of one unit's dataset, the same for `etl run` and Airflow's tasks: plan (what to read,
from the target's memory), extract, map and identify (`transform`), clean and validate, load
(`run`). What the drivers compose is re-exported here: `pipeline.run_dataset(...)`."""

from etl.pipeline.run import (DEADLOCK_RETRIES, DatasetResult, Plan, Prepared, check_references,
                              extract_chunks, is_deadlock, key_chunks, load, load_checked,
                              masked_source_key, new_run_id, plan, prepare, record_run,
                              references, run_dataset, run_mapping, run_planned)

__all__ = ["DEADLOCK_RETRIES", "DatasetResult", "Plan", "Prepared", "check_references",
           "extract_chunks", "is_deadlock", "key_chunks", "load", "load_checked",
           "masked_source_key", "new_run_id", "plan", "prepare", "record_run", "references",
           "run_dataset", "run_mapping", "run_planned"]
