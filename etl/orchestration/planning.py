"""What one Airflow run ingests, planned once: which units and datasets, their windows, and the
shards of units that Airflow runs as tasks.

A task instance costs Airflow a process (a second or two of CPU before any data moves), while a
unit's daily data costs a fraction of a second. So the unit of Airflow work is a *shard*: a
contiguous run of units (in mapping-file order), each shard one extract, one transform and one
load task, however many units there are. Shards default to one per parallel task slot, with at
least `MIN_UNITS_PER_SHARD` units each; `units_per_shard` (param or `ETL_UNITS_PER_SHARD`) sets
the size outright.

Planning reads every mapping file once (valid ones are cached by content hash) and hands each
shard its units' validated mappings, so the shard's tasks never read a mapping file again and
the whole run uses the mappings as they were when it was planned.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from collections.abc import Mapping as MappingABC
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from etl import standard
from etl.common import clock, settings
from etl.common.errors import ConfigError, MappingError
from etl.mapping import (Mapping, discover, load_mapping_cached, mapping_from_dict, mapping_to_dict,
                         period_minutes, raw_org_no)
from etl.mapping.loading import Outline, load_outline_cached, load_outlines

log = logging.getLogger("etl")

FREQUENCIES = ("daily", "weekly", "frequent")
MODES = ("incremental", "full")
#: A shard's three task processes cost Airflow some 5 s of CPU before any data moves; a unit's
#: daily data a tenth to a third of a second. Smaller shards spend more on Airflow than on data.
MIN_UNITS_PER_SHARD = 50
MAX_SHARDS = 256
_GLOB = re.compile(r"[*?\[]")


@dataclass
class Unit:
    """One mapping file of a run: its datasets (tx, since, until) in txCode order, or, for a
    mapping that did not validate, its problems."""

    name: str
    path: str
    org_no: str = ""
    mapping: dict[str, Any] | None = None     # etl.mapping.mapping_to_dict
    problems: str = ""
    datasets: list[dict[str, str | None]] = field(default_factory=list)

    def validated(self) -> Mapping:
        """The mapping itself, rebuilt from what planning validated (no file is read). The last
        few are kept: a unit's datasets come one after another, and a shard of thousands of
        units must not hold thousands of mappings (~70 KB each)."""
        if self.mapping is None:
            raise MappingError([self.problems or f"{self.path}: no validated mapping"])
        d = self.mapping
        return _rebuilt(d["path"], d["digest"], d.get("model"), d.get("text"))


@dataclass
class Shard:
    index: int
    of: int
    units: list[Unit]

    @property
    def label(self) -> str:
        """How the shard shows in the UI: its place and the range of unit names it holds."""
        names = [u.name for u in self.units]
        span = names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}"
        return f"{self.index + 1}/{self.of} {span} ({len(names)} unit{'s' * (len(names) != 1)})"


@dataclass
class RunPlan:
    dag_id: str
    airflow_run_id: str
    run_id: str            # ingest_run.runId: airflow__<dag_id>__<airflow run id>
    mode: str
    now: str               # ISO, CST: the run's "today"
    shards: list[Shard]
    choice: Choice = field(default_factory=lambda: Choice("daily"))

    def header(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in HEADER}, "choice": asdict(self.choice)}


HEADER = ("dag_id", "airflow_run_id", "run_id", "mode", "now")


@dataclass(frozen=True)
class Choice:
    """How a run chose each unit's datasets and windows: kept with the plan, so that a unit
    whose mapping file was fixed after planning is planned again the same way (`replan`)."""

    frequency: str
    tx_codes: tuple[str, ...] = ()
    since: str | None = None        # ISO, CST: the run-wide window, when it has one
    until: str | None = None
    tick_end: str | None = None     # the data interval's end, when the window is the interval
    allow_mass_delete: bool = False

    @property
    def scheduled(self) -> bool:
        """Whether the windows are the run's data interval (a scheduled run or a backfill), not
        one a person gave: such runs load a never-loaded dataset in full and fill gaps."""
        return self.tick_end is not None

    @cached_property
    def _moments(self) -> tuple[datetime | None, datetime | None, datetime | None]:
        """since, until, tick_end as datetimes (parsed once: planning asks for every unit)."""
        return (parse_moment(self.since, "since"), parse_moment(self.until, "until"),
                parse_moment(self.tick_end, "tick_end"))

    @classmethod
    def of(cls, d: MappingABC[str, Any] | None) -> Choice:
        return cls(**{**d, "tx_codes": tuple(d.get("tx_codes") or ())}) if d else cls("daily")

    def datasets(self, mapping: Mapping | Outline) -> list[dict[str, str | None]]:
        """The mapping's datasets this run ingests, with their windows, in txCode order."""
        frequencies = (mapping.frequencies if isinstance(mapping, Outline)
                       else {tx: spec.frequency for tx, spec in mapping.datasets.items()})
        if self.frequency == "frequent" and not any(frequencies.values()):
            return []  # the standard's frequencies (5.4) are daily and weekly: most units, most ticks
        since, until, tick_end = self._moments
        chosen = []
        for tx, override in sorted(frequencies.items()):
            freq = override or _standard_frequency(tx)
            if dag_frequency(freq) != self.frequency or (self.tx_codes and tx not in self.tx_codes):
                continue
            item_since, item_until = since, until
            if self.frequency == "frequent":
                period = period_minutes(freq)
                assert period is not None
                if tick_end is not None:  # else: a manual run takes every override
                    if int(tick_end.timestamp() // 60) % period:
                        continue  # not due at this tick
                    item_since, item_until = tick_end - timedelta(minutes=period), tick_end
            chosen.append({"tx": tx, "since": _iso(item_since), "until": _iso(item_until)})
        return chosen


@lru_cache(maxsize=None)
def _standard_frequency(tx: str) -> str:
    """A dataset's frequency by the standard (5.4), asked for every unit of a plan."""
    return standard.dataset(tx).frequency


@lru_cache(maxsize=8)
def _rebuilt(path: str, digest: str, model: str | None, text: str | None) -> Mapping:
    body = {"model": model} if model is not None else {"text": text}
    return mapping_from_dict({"path": path, "digest": digest, **body})


def shard_to_dict(plan: RunPlan, shard: Shard) -> dict[str, Any]:
    return shard_dict(plan.header(), shard)


def shard_dict(header: MappingABC[str, Any], shard: Shard) -> dict[str, Any]:
    """A shard's part of the plan from the run's header (`shard_from_dict`'s) and its units."""
    return {**header, "index": shard.index, "of": shard.of, "label": shard.label,
            "units": [asdict(u) for u in shard.units]}


def shard_from_dict(d: MappingABC[str, Any]) -> tuple[dict[str, Any], Shard]:
    header = {**{k: d[k] for k in HEADER}, "choice": d.get("choice")}
    return header, Shard(d["index"], d["of"], [Unit(**u) for u in d["units"]])


# --- params ------------------------------------------------------------------------------------


def parse_moment(value: Any, name: str) -> datetime | None:
    """A window bound from a param (ISO 8601; CST unless it carries an offset)."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return clock.to_cst(value)
    try:
        return clock.to_cst(datetime.fromisoformat(str(value).strip()))
    except ValueError:
        raise ConfigError(f"param {name}={value!r} is not an ISO 8601 date or time: "
                          f"use e.g. 2025-03-01 or 2025-03-01T08:00:00+08:00") from None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def dag_frequency(frequency: str) -> str:
    """Which DAG runs a dataset of this frequency (5.4, or the mapping's `frequency:`)."""
    return frequency if frequency in ("daily", "weekly") else "frequent"


def _positive(value: Any, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ConfigError(f"{name}={value!r}: give a whole number of units, 1 or more")
    return number


def shard_count(units: int, slots: int, units_per_shard: int | None = None,
                max_shards: int = MAX_SHARDS) -> int:
    """How many shards `units` units make: `units_per_shard` each when given, else one per
    parallel task slot with at least MIN_UNITS_PER_SHARD units in each; never more than
    `max_shards` (MAX_SHARDS, or Airflow's `max_map_length` when lower)."""
    if units == 0:
        return 0
    cap = max(1, min(MAX_SHARDS, max_shards))
    if units_per_shard:
        return min(cap, math.ceil(units / units_per_shard))
    return max(1, min(max(1, slots), cap, math.ceil(units / MIN_UNITS_PER_SHARD)))


# --- choosing units -----------------------------------------------------------------------------


def _select(paths: list[Path], wanted: list[str], load) -> list[Path]:
    """The mapping files a `units` param names: by file name (without .yaml), by orgNo, or by a
    pattern such as 南京* matched against file names."""
    if not wanted:
        return paths
    stems = {p.stem: p for p in paths}
    chosen: dict[Path, None] = {}
    unresolved = []
    for w in wanted:
        if w in stems:
            chosen[stems[w]] = None
        elif _GLOB.search(w):
            hits = [p for s, p in stems.items() if fnmatch.fnmatchcase(s, w)]
            chosen.update(dict.fromkeys(hits))
            if not hits:
                unresolved.append(w)
        else:
            unresolved.append(w)
    if unresolved:  # perhaps orgNos: only now read the files
        by_org: dict[str, list[Path]] = {}
        for p in paths:
            try:
                by_org.setdefault(load(p).org_no, []).append(p)
            except MappingError:
                continue
        missing = [w for w in unresolved if w.upper() not in by_org]
        if missing:
            some = ", ".join(sorted(stems)[:20]) + (" …" if len(stems) > 20 else "")
            raise ConfigError(f"param units: no mapping file or orgNo {', '.join(missing)} "
                              f"({len(stems)} units; e.g. {some or '(none)'})")
        for w in unresolved:
            chosen.update(dict.fromkeys(by_org[w.upper()]))
    return sorted(chosen)


def _same_unit(valid: list[tuple[Path, Outline]]) -> dict[Path, str]:
    """Files that claim the same orgNo: each would load over the other's records, so none of
    them is loaded until one is kept."""
    by_org: dict[str, list[Path]] = {}
    for path, m in valid:
        by_org.setdefault(m.org_no, []).append(path)
    return {p: f"{p} [unit.orgNo] {org} is also the orgNo of "
               f"{', '.join(str(o) for o in paths if o != p)}: keep one mapping file per unit"
            for org, paths in by_org.items() if len(paths) > 1 for p in paths}


def replan(choice: Choice, unit: Unit, cache_dir: Path | None = None) -> Unit:
    """A unit of a planned run as its mapping file says now, its datasets chosen as the run
    chose them: what a retried task loads after someone fixed the file. The same `unit` when
    the file did not change. A unit with problems, failing by name, when the file is gone or
    invalid, names another orgNo than the run planned (data staged and recorded under one orgNo
    must never load as another's: a new run loads it), or claims the orgNo of another file."""
    path = Path(unit.path)
    try:
        mapping = load_mapping_cached(path, cache_dir)
    except MappingError as e:
        problem = (f"{unit.path}: the mapping file is gone since this run was planned: its unit "
                   f"is not loaded by this run (a new run plans it where it is now)"
                   if not path.exists() else str(e)[:4000])
        return unit if problem == unit.problems else Unit(unit.name, unit.path, unit.org_no,
                                                          problems=problem)
    if unit.mapping is not None and mapping.digest == unit.mapping.get("digest"):
        return unit
    org = mapping.unit.orgNo
    problem = ""
    if unit.org_no and org != unit.org_no:
        problem = (f"{path} [unit.orgNo] is now {org}, but this run planned the file as "
                   f"{unit.org_no}: a new run loads it under its new orgNo")
    elif unit.problems and (twin := _claimed_elsewhere(path, org, cache_dir)):
        problem = (f"{path} [unit.orgNo] {org} is also the orgNo of {twin}: keep one mapping "
                   f"file per unit")
    if problem:
        return unit if problem == unit.problems else Unit(unit.name, unit.path, unit.org_no,
                                                          problems=problem)
    return Unit(unit.name, unit.path, org, mapping_to_dict(mapping), datasets=choice.datasets(mapping))


def _claimed_elsewhere(path: Path, org_no: str, cache_dir: Path | None) -> Path | None:
    """Another mapping file of the folder naming the same orgNo, if any."""
    for other in discover(path.parent):
        if other == path:
            continue
        try:
            if load_outline_cached(other, cache_dir).org_no == org_no:
                return other
        except MappingError:
            continue
    return None


def plan_run(frequency: str, *, mappings: Path, params: MappingABC[str, Any] | None = None,
             interval: tuple[datetime, datetime] | None = None, dag_id: str = "dual_prevention",
             run_id: str = "manual", now: datetime | None = None, slots: int = 16,
             max_shards: int = MAX_SHARDS, cache_dir: Path | None = None) -> RunPlan:
    """The units and datasets one DAG run ingests, in shards.

    `frequency` is the DAG's: `daily` and `weekly` take each dataset at the standard's frequency
    (5.4) unless its mapping overrides it; `frequent` takes the `hourly` / `Nmin` overrides due
    at the end of this tick. A mapping that does not validate is planned as a unit with its
    problems (on the daily and weekly DAGs), so it fails in its own shard, by name.

    Windows: `params.since` / `params.until` when given; else, with `params.resume`, from where
    each dataset's last successful run stopped until now; else the run's data interval
    (scheduled runs, backfills, manual runs with a logical date); else as with `resume`.
    """
    if frequency not in FREQUENCIES:
        raise ValueError(f"frequency must be one of {FREQUENCIES}, not {frequency!r}")
    params = dict(params or {})
    now = clock.to_cst(now or clock.now())
    mode = params.get("mode") or "incremental"
    if mode not in MODES:
        raise ConfigError(f"param mode={mode!r}: use incremental or full")
    try:
        wanted_tx = [standard.dataset(c).tx_code for c in (params.get("tx_codes") or [])]
    except KeyError as e:
        raise ConfigError(f"param tx_codes: {e.args[0]}") from None
    since = parse_moment(params.get("since"), "since")
    until = parse_moment(params.get("until"), "until")
    per_shard = (_positive(params.get("units_per_shard"), "param units_per_shard")
                 or settings.integer("ETL_UNITS_PER_SHARD"))
    wanted = [str(u).strip() for u in params.get("units") or [] if str(u).strip()]

    loaded: dict[Path, Outline | MappingError] = {}

    def load(path: Path) -> Outline:  # a cached file's model is validated by the shard's tasks
        if path not in loaded:
            try:
                loaded[path] = load_outline_cached(path, cache_dir)
            except MappingError as e:
                loaded[path] = e
        got = loaded[path]
        if isinstance(got, MappingError):
            raise got
        return got

    paths = _select(discover(mappings), wanted, load)
    # every file at once: those unchanged since the last plan come from the folder's index unread
    loaded.update(load_outlines([p for p in paths if p not in loaded], cache_dir,
                                complete=not wanted))
    if not paths:
        log.warning("no mapping files in %s: nothing to ingest", mappings)
    tick_end = None  # the data interval's end, when the run has one and params don't override it
    if since is None and until is None and interval is not None and interval[0] < interval[1] \
            and not params.get("resume"):
        since, until = clock.to_cst(interval[0]), clock.to_cst(interval[1])
        tick_end = until
    choice = Choice(frequency, tuple(wanted_tx), _iso(since), _iso(until), _iso(tick_end),
                    bool(params.get("allow_mass_delete")))

    valid: list[tuple[Path, Outline]] = []
    units: list[Unit] = []
    for path in paths:
        try:
            valid.append((path, load(path)))
        except MappingError as e:
            log.error("%s", e)
            units.append(Unit(path.stem, str(path), raw_org_no(path), problems=str(e)[:4000]))
    twins = _same_unit(valid)
    for path, mapping in valid:
        if path in twins:
            units.append(Unit(path.stem, str(path), mapping.org_no, problems=twins[path]))
            continue
        chosen = choice.datasets(mapping)
        if chosen:
            units.append(Unit(path.stem, str(path), mapping.org_no, mapping.to_dict(),
                              datasets=chosen))
    if frequency == "frequent":  # the daily and weekly DAGs report invalid mappings
        units = [u for u in units if not u.problems]
    units.sort(key=lambda u: (u.name, u.path))
    if wanted_tx and paths and not any(u.datasets for u in units):
        log.warning("none of txCodes %s runs %s here: each dataset runs on the DAG of its "
                    "frequency (the standard's 5.4, or the mapping's frequency:)", wanted_tx, frequency)

    n = shard_count(len(units), slots, per_shard, max_shards)
    size = math.ceil(len(units) / n) if n else 0
    if per_shard and size > per_shard:
        log.warning("units_per_shard=%d would make more than %d shards: %d units a shard instead",
                    per_shard, n, size)
    shards = [Shard(i, n, units[i * size:(i + 1) * size]) for i in range(n)]
    shards = [s for s in shards if s.units]
    for s in shards:
        s.of = len(shards)
    plan = RunPlan(dag_id, run_id, f"airflow__{dag_id}__{run_id}", mode, now.isoformat(), shards,
                   choice)
    log.info("%s: %d unit(s), %d dataset(s), %d invalid mapping(s), in %d shard(s) of up to %d "
             "(%d parallel task slots)", frequency, len(units),
             sum(len(u.datasets) for u in units), sum(1 for u in units if u.problems),
             len(shards), size, slots)
    return plan
