"""Airflow Assets the ingestion updates, so that other DAGs can follow the data: one asset per
dataset of the standard (`dual_prevention_09`, `x-dual-prevention://target/09`), updated by a
shard's `ingest.load` when it loaded something of that txCode, its event's extra saying which
units and how many records.

Airflow records an event for every `Asset` a task declares as an outlet whenever the task
succeeds, with or without anything recorded for it (`register_asset_changes_in_db`: an outlet
with no `outlet_events` entry gets an event with no extra); an outlet event cannot be skipped.
So the load tasks declare one `AssetAlias` (`dual_prevention_loaded`) as their outlet and add,
through it, an event for each txCode they loaded: none for a dataset that loaded nothing.
Airflow records no event at all for a task that fails, so a shard whose load fails (one of its
units failed) tells nothing until a retry, or a clear, succeeds; that try reports everything the
shard loaded in this run, earlier tries included.

A downstream DAG schedules on `asset("09")` (the same name and URI); the freshness DAG keeps
the `dual_prevention_ingestion` asset of the report task (docs/airflow.md, Assets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

GROUP = "dual-prevention"
#: the load tasks' outlet: the assets of the txCodes a try loaded are added through it
ALIAS = "dual_prevention_loaded"
#: the most units an event's extra lists by name (a shard holds at most 256)
LISTED = 300


def name(tx: str) -> str:
    return f"dual_prevention_{tx}"


def uri(tx: str) -> str:
    return f"x-dual-prevention://target/{tx}"


def asset(tx: str):
    """The Airflow Asset of one dataset (txCode `01`..`09`)."""
    from airflow.sdk import Asset

    return Asset(name=name(tx), uri=uri(tx), group=GROUP)


def every() -> list:
    """The nine datasets' assets (`summarise`'s inlets: registered when the DAG is parsed)."""
    return [asset(f"0{n}") for n in range(1, 10)]


def alias():
    from airflow.sdk import AssetAlias

    return AssetAlias(name=ALIAS, group=GROUP)


def extras(loaded: Iterable[Mapping[str, Any]], dag_run_id: str) -> dict[str, dict[str, Any]]:
    """{txCode: event extra} from what a load loaded: dicts of unit, orgNo, tx and counts."""
    out: dict[str, dict[str, Any]] = {}
    for item in loaded:
        extra = out.setdefault(item["tx"], {"txCode": item["tx"], "dag_run_id": dag_run_id,
                                            "units": [], "unit_count": 0, "rows": 0})
        rows = sum(int(item.get(k) or 0) for k in ("inserted", "updated", "deleted", "unchanged"))
        extra["unit_count"] += 1
        extra["rows"] += rows
        if len(extra["units"]) < LISTED:
            extra["units"].append({"unit": item["unit"], "orgNo": item["orgNo"], "rows": rows,
                                   **{k: int(item.get(k) or 0)
                                      for k in ("inserted", "updated", "deleted")}})
    return out


def emit(context: Mapping[str, Any] | None, loaded: Iterable[Mapping[str, Any]],
         dag_run_id: str) -> list[str]:
    """Add, through the task's alias outlet, one asset event per txCode loaded; the txCodes.
    Outside Airflow (no context, or a task without the alias) nothing is emitted."""
    if not context or "outlet_events" not in context:
        return []
    task = context.get("task")
    if not any(getattr(o, "name", None) == ALIAS for o in getattr(task, "outlets", None) or ()):
        return []
    events = context["outlet_events"][alias()]
    found = extras(loaded, dag_run_id)
    for tx, extra in sorted(found.items()):
        events.add(asset(tx), extra=extra)
    return sorted(found)
