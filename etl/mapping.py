"""Mapping files: one YAML per using unit, parsed whole into typed models before anything connects.

Every problem is reported at once, each as `mappings/unit.yaml [datasets.06.fields.riskType] what
is wrong; what to do`, so whoever onboards a unit fixes the file in one pass.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from etl import standard
from etl.errors import MappingError
from etl.sql_guard import select_problem, unsafe_url_options

FREQUENCY = re.compile(r"^(daily|weekly|hourly|\d+min)$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Model):
    """Where a unit's data lives: exactly one of an env var, an Airflow connection or a URL."""

    url_env: str | None = None
    conn_id: str | None = None
    url: str | None = None
    statement_timeout_s: float = 3600.0  # one query (PostgreSQL statement_timeout, MySQL read_timeout)
    connect_timeout_s: float = 30.0  # connecting; SQLite's wait for a locked file

    @field_validator("statement_timeout_s", "connect_timeout_s")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("give a number of seconds above 0")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> "SourceSpec":
        given = [k for k in ("url_env", "conn_id", "url") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of url_env, conn_id or url")
        if self.url:
            try:
                parsed = make_url(self.url)
            except ArgumentError:
                raise ValueError("url is not a SQLAlchemy URL (dialect+driver://user@host/db)") from None
            if parsed.password:
                raise ValueError("url holds a password: move it to an environment variable "
                                 "(url_env) or an Airflow connection (conn_id)")
            if bad := unsafe_url_options(parsed):
                raise ValueError(f"url sets {', '.join(bad)}, which could let a query do more "
                                 f"than read: remove it")
        return self

    def describe(self) -> str:
        if self.url_env:
            return f"env {self.url_env}"
        if self.conn_id:
            return f"Airflow connection {self.conn_id}"
        return make_url(self.url).render_as_string(hide_password=True)


class DeletedSpec(_Model):
    column: str
    value: Any = 1


class FieldRule(_Model):
    """A standard field's source: a column (with optional value map and default) or a constant."""

    column: str | None = None
    values: dict[str, Any] | None = None
    default: str | None = None
    value: Any = None

    @field_validator("values", mode="before")
    @classmethod
    def _keys_as_text(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {_as_key(k): val for k, val in v.items()}
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "FieldRule":
        if self.value is not None:
            if self.column or self.values or self.default:
                raise ValueError("value: is a constant; it cannot go with column, values or default")
        elif not self.column and self.default is None:
            raise ValueError("give column: (a source column), value: (a constant) or default:")
        if self.values is not None and not self.column:
            raise ValueError("values: maps a column's codes; add column:")
        return self


def _as_key(v: Any) -> str:
    """Source codes compare as text: 1, 1.0 and '1' are the same code."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


class DatasetSpec(_Model):
    table: str | None = None
    query: str | None = None
    key: list[str]
    updated_at: str | None = None
    deleted: DeletedSpec | None = None
    fields: dict[str, FieldRule]
    source: SourceSpec | None = None
    frequency: str | None = None
    lookback_hours: float = 24.0

    @field_validator("fields", mode="before")
    @classmethod
    def _plain_column(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: {"column": r} if isinstance(r, str) else r for k, r in v.items()}
        return v

    @field_validator("key", mode="before")
    @classmethod
    def _key_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("key")
    @classmethod
    def _key_not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("key: name at least one source column that identifies a row")
        return v

    @field_validator("frequency")
    @classmethod
    def _frequency(cls, v: str | None) -> str | None:
        if v is not None and not FREQUENCY.match(v):
            raise ValueError("frequency: use daily, weekly, hourly or N min such as 15min")
        return v

    @field_validator("query")
    @classmethod
    def _single_select(cls, v: str | None) -> str | None:
        if v is not None and (problem := select_problem(v)):
            raise ValueError(f"query: {problem}")
        return v

    @model_validator(mode="after")
    def _table_or_query(self) -> "DatasetSpec":
        if bool(self.table) == bool(self.query):
            raise ValueError("give exactly one of table: or query:")
        return self

    def columns(self) -> list[str]:
        """Source columns this dataset reads, in a stable order, without repeats."""
        cols: list[str] = [*self.key]
        if self.updated_at:
            cols.append(self.updated_at)
        if self.deleted:
            cols.append(self.deleted.column)
        for rule in self.fields.values():
            if rule.column:
                cols.append(rule.column)
            cols.extend(template_columns(rule.default))
        return list(dict.fromkeys(cols))


class UnitSpec(_Model):
    orgNo: str
    comName: str

    @field_validator("orgNo", mode="before")
    @classmethod
    def _org_no(cls, v: Any) -> Any:
        from etl.checks import is_valid_uscc

        if not isinstance(v, str) or not is_valid_uscc(v.strip().upper()):
            raise ValueError("orgNo must be the unit's 18-character unified social credit code "
                             "(GB 32100) with a valid check character")
        return v.strip().upper()


class MappingModel(_Model):
    unit: UnitSpec
    source: SourceSpec | None = None
    datasets: dict[str, DatasetSpec]

    @field_validator("datasets", mode="before")
    @classmethod
    def _tx_codes(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k).zfill(2) if isinstance(k, int) else str(k): d for k, d in v.items()}
        return v


@dataclass(frozen=True)
class Mapping:
    """A validated mapping file. `digest` is the sha256 of the file's bytes: staged data carries
    it, so a file changed mid-run or data staged for another unit is never loaded as this one."""

    path: Path
    model: MappingModel
    digest: str = ""
    exact_json: str = field(default="", compare=False, repr=False)  # the model as JSON, when that is exact

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def unit(self) -> UnitSpec:
        return self.model.unit

    @property
    def datasets(self) -> dict[str, DatasetSpec]:
        return dict(sorted(self.model.datasets.items()))

    def source_for(self, tx_code: str) -> SourceSpec:
        spec = self.model.datasets[tx_code].source or self.model.source
        assert spec is not None  # guaranteed by validation
        return spec


TEMPLATE_FIELD = re.compile(r"\{([^{}]+)\}")


def template_columns(template: str | None) -> list[str]:
    """Source columns a default template reads (`{unit.*}` names the mapping's unit)."""
    if not template:
        return []
    return [n for n in TEMPLATE_FIELD.findall(template) if not n.startswith("unit.")]


# --- loading ---------------------------------------------------------------------------------


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: ~10x faster
    """PyYAML keeps the last of two equal keys silently; a mapping must not."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (first at line {seen[key] + 1}); "
                f"keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _pydantic_problems(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if not str(p).startswith(("function-", "union["))]
        kind, msg = e["type"], e["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}: remove it or fix its spelling"
        elif kind == "missing":
            msg = f"missing key {loc[-1]!r}: add it"
        out.append((".".join(loc), msg))
    return out


def _dataset_problems(tx: str, raw: Any, has_top_source: bool) -> list[tuple[str, str]]:
    """Problems of one dataset entry, found even where its model does not parse."""
    where = f"datasets.{tx}"
    if tx not in standard.BY_TX_CODE:
        return [(where, f"unknown txCode {tx!r}: use one of {', '.join(standard.TX_CODES)}")]
    out: list[tuple[str, str]] = []
    parsed: DatasetSpec | None = None
    try:
        parsed = DatasetSpec.model_validate(raw)
    except ValidationError as e:
        out += [(f"{where}.{loc}" if loc else where, msg) for loc, msg in _pydantic_problems(e)]
    spec = standard.BY_TX_CODE[tx]
    fields = raw.get("fields") if isinstance(raw, dict) else None
    fields = fields if isinstance(fields, dict) else {}
    for name in fields:
        if name not in spec.field_names:
            hint = _closest(name, spec.field_names)
            out.append((f"{where}.fields.{name}",
                        f"{name!r} is not a field of {spec.structure} {spec.zh}"
                        + (f": did you mean {hint!r}?" if hint else "")))
    implicit = {"orgNo", "comName"} if tx == "01" else set()
    for name in spec.required_fields:
        if name not in fields and name not in implicit:
            out.append((f"{where}.fields",
                        f"required field {name!r} ({spec.field(name).zh}) is not mapped: "
                        f"map a column, a default or a constant"))
    if parsed is None:
        return out
    if parsed.source is None and not has_top_source:
        out.append((where, "no source: add a top-level source: or one under this dataset"))
    for name, rule in parsed.fields.items():
        if rule.values and name in spec.field_names:
            f = spec.field(name)
            if f.enum and f.separator is None:
                bad = sorted(v for v in {_as_key(v) for v in rule.values.values()}
                             if _canonical(v, f) not in f.enum)
                if bad:
                    out.append((f"{where}.fields.{name}.values",
                                f"{', '.join(bad)} not allowed for {name}: use {'、'.join(f.enum)}"))
    return out


@lru_cache(maxsize=8192)
def _canonical(value: str, f: standard.Field) -> str:
    """How cleaning will spell a value-map target (synonyms such as 较大 are fine). Cached: a
    province's mappings repeat the same few targets thousands of times."""
    import pandas as pd

    from etl.clean import Audit, clean_column

    out = clean_column(pd.Series([value], dtype=object), f, Audit()).iloc[0]
    return "" if pd.isna(out) else str(out)


def _problems(raw: dict) -> list[tuple[str, str]]:
    datasets = raw.get("datasets")
    out: list[tuple[str, str]] = []
    try:
        MappingModel.model_validate({**raw, "datasets": {}})
    except ValidationError as e:
        out += _pydantic_problems(e)
    if not isinstance(datasets, dict) or not datasets:
        out.append(("datasets", "no datasets: add at least one txCode such as \"06\" with its table"))
        return out
    for key, ds_raw in datasets.items():
        tx = str(key).zfill(2) if isinstance(key, int) else str(key)
        out += _dataset_problems(tx, ds_raw, bool(raw.get("source")))
    return out


def _closest(name: str, names: tuple[str, ...]) -> str | None:
    import difflib

    hits = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if not hits:
        hits = [n for n in names if n.lower() == name.lower()]
    return hits[0] if hits else None


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_mapping(path: str | Path) -> Mapping:
    """Parse and validate one mapping file; raise MappingError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise MappingError([f"{_display(path)}: no such mapping file"])
    return parse_mapping(path, path.read_bytes())


def parse_mapping(path: Path, data: bytes) -> Mapping:
    """Validate a mapping file's bytes (read once by the caller); `path` names it."""
    shown = _display(path)
    try:
        raw = yaml.load(data.decode("utf-8"), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        raise MappingError([f"{shown} [line {line}] not valid YAML: {e.problem}"]) from None
    except yaml.YAMLError as e:
        raise MappingError([f"{shown}: not valid YAML: {' '.join(str(e).split())}"]) from None
    except UnicodeDecodeError:
        raise MappingError([f"{shown}: not UTF-8: save the file as UTF-8"]) from None
    if not isinstance(raw, dict):
        raise MappingError([f"{shown}: expected keys unit:, source:, datasets:"])
    problems = _problems(raw)
    if problems:
        raise MappingError([f"{shown} [{loc}] {msg}" for loc, msg in problems])
    return Mapping(path, MappingModel.model_validate(raw), hashlib.sha256(data).hexdigest())


# --- handing a validated mapping on -----------------------------------------------------------


def mapping_to_dict(m: Mapping) -> dict[str, Any]:
    """A validated mapping as JSON-able values, for the next process (an Airflow task): its
    model when that survives JSON exactly (nearly always), else the file's text to re-parse."""
    dumped = m.exact_json or m.model.model_dump_json()
    exact = bool(m.exact_json) or MappingModel.model_validate_json(dumped) == m.model
    body: dict[str, Any] = {"model": dumped} if exact else {"text": m.path.read_text(encoding="utf-8")}
    return {"path": str(m.path), "digest": m.digest, **body}


def mapping_from_dict(d: dict[str, Any]) -> Mapping:
    path = Path(d["path"])
    if "model" in d:
        return Mapping(path, MappingModel.model_validate_json(d["model"]), d["digest"])
    m = parse_mapping(path, d["text"].encode("utf-8"))
    if m.digest != d["digest"]:
        raise MappingError([f"{_display(path)}: changed since it was handed on: rerun"])
    return m


_CODE = ("mapping.py", "standard.py", "clean.py", "divisions.py", "checks.py", "sql_guard.py")


@lru_cache(maxsize=1)
def _code_digest() -> bytes:
    """What a cached verdict depends on besides the file: the validating code."""
    h = hashlib.sha256()
    for name in _CODE:
        h.update(Path(__file__).with_name(name).read_bytes())
    return h.digest()


def load_mapping_cached(path: str | Path, cache_dir: Path | None) -> Mapping:
    """`load_mapping`, remembering valid files by content (and code) hash in `cache_dir`:
    planning a province's run reads thousands of files that rarely change. A file is read once;
    an invalid one is never cached, so its problems are always reported afresh."""
    path = Path(path)
    if cache_dir is None:
        return load_mapping(path)
    try:
        data = path.read_bytes()
    except OSError:
        return load_mapping(path)  # says what is wrong
    digest = hashlib.sha256(data).hexdigest()
    entry = cache_dir / (hashlib.sha256(_code_digest() + data).hexdigest() + ".json")
    try:
        cached = entry.read_text(encoding="utf-8")
        return Mapping(path, MappingModel.model_validate_json(cached), digest, cached)
    except (OSError, ValidationError, ValueError):
        pass
    m = parse_mapping(path, data)
    dumped = m.model.model_dump_json()
    if MappingModel.model_validate_json(dumped) == m.model:
        m = Mapping(m.path, m.model, m.digest, dumped)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
            tmp.write_text(dumped, encoding="utf-8")
            tmp.replace(entry)
        except OSError:
            pass  # a cache that cannot be written only costs time
    return m


def load_mappings(paths: list[str | Path]) -> list[Mapping]:
    """Validate every file; raise one MappingError with the problems of all of them."""
    mappings, problems = [], []
    for p in paths:
        try:
            mappings.append(load_mapping(p))
        except MappingError as e:
            problems.extend(e.problems)
    if problems:
        raise MappingError(problems)
    names = [m.unit.orgNo for m in mappings]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MappingError([f"{', '.join(_display(m.path) for m in mappings if m.unit.orgNo == d)}: "
                            f"two mappings for orgNo {d}: keep one file per unit" for d in dupes])
    return mappings


def discover(folder: str | Path = "mappings") -> list[Path]:
    """Mapping files of a folder, sorted, so runs and DAGs see units in a stable order."""
    folder = Path(folder)
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


Mode = Literal["full", "incremental"]
