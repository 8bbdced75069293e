"""Mapping files: one YAML per using unit, parsed whole into typed models before anything connects.

Every problem is reported at once, each as `mappings/unit.yaml [datasets.06.fields.riskType] what
is wrong; what to do`, so whoever onboards a unit fixes the file in one pass.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from etl import standard
from etl.common.errors import MappingError
from etl.common.masking import is_secret_param, mask_url
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
    timezone: str = "Asia/Shanghai"  # the zone of the source's zone-less timestamps
    require_tls: bool = False  # refuse a connection without TLS (etl.tls; ETL_REQUIRE_TLS: all)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: {v[:60]!r} is not an IANA time zone: use e.g. "
                             f"Asia/Shanghai or UTC") from None
        return v

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
            except (ArgumentError, ValueError):
                raise ValueError("url is not a SQLAlchemy URL (dialect+driver://user@host/db)") from None
            where = ["user info"] if parsed.password else []
            where += [f"query parameter {k!r}" for k in parsed.query if is_secret_param(k)]
            if where:
                raise ValueError(f"url holds a password ({', '.join(where)}): move the URL to an "
                                 f"environment variable (url_env) or an Airflow connection (conn_id)")
            if bad := unsafe_url_options(parsed):
                raise ValueError(f"url sets {', '.join(bad)}, which could let a query do more "
                                 f"than read: remove it")
        return self

    def describe(self) -> str:
        if self.url_env:
            return f"env {self.url_env}"
        if self.conn_id:
            return f"Airflow connection {self.conn_id}"
        return mask_url(self.url or "")


class DeletedSpec(_Model):
    column: str
    value: Any = 1


class FileSpec(_Model):
    """Where an M (multimedia) field's file comes from (`etl.attachments`): the field's column
    holds a path relative to a base folder or URL (`base`, `base_env`, `conn_id`), or names
    the file whose bytes are in a BLOB column (`blob`). Exactly one of the four."""

    base: str | None = None       # a folder or URL without credentials (a mounted share, https://...)
    base_env: str | None = None   # an environment variable holding the base (may hold credentials)
    conn_id: str | None = None    # an Airflow connection whose URI is the base
    blob: str | None = None       # a source column holding the file's bytes
    max_mb: float | None = None   # the largest file accepted, in MiB (default etl.media's 2 GiB)

    @field_validator("max_mb")
    @classmethod
    def _positive_mb(cls, v: float | None) -> float | None:
        if v is not None and not v > 0:
            raise ValueError("max_mb: give a size in MiB above 0")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> "FileSpec":
        given = [k for k in ("base", "base_env", "conn_id", "blob") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("file: give exactly one of base (a folder or URL), base_env (an "
                             "environment variable holding it), conn_id (an Airflow connection) "
                             "or blob (a column holding the bytes)")
        if self.base and (where := _base_secrets(self.base)):
            raise ValueError(f"file.base holds a password ({', '.join(where)}): put the base in an "
                             f"environment variable (base_env) or an Airflow connection (conn_id)")
        return self

    @property
    def limit_bytes(self) -> int | None:
        return int(self.max_mb * 1024 * 1024) if self.max_mb is not None else None

    def describe(self) -> str:
        if self.base_env:
            return f"files from env {self.base_env}"
        if self.conn_id:
            return f"files from Airflow connection {self.conn_id}"
        if self.blob:
            return f"bytes in column {self.blob}"
        return f"files under {mask_url(self.base or '')}"


def _base_secrets(base: str) -> list[str]:
    """Where a literal file base holds a secret: `user:password@` or a secret query parameter."""
    from urllib.parse import parse_qsl, urlsplit

    if "://" not in base:
        return []
    try:
        parts = urlsplit(base)
        where = ["user info"] if parts.password else []
    except ValueError:
        return ["an address that cannot be read"]
    return where + [f"query parameter {k!r}" for k, _ in parse_qsl(parts.query) if is_secret_param(k)]


class FieldRule(_Model):
    """A standard field's source: a column (with optional value map and default) or a constant;
    an M field's column may name a file to collect (`file:`)."""

    column: str | None = None
    values: dict[str, Any] | None = None
    default: str | None = None
    value: Any = None
    file: FileSpec | None = None

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
        if self.file is not None and (not self.column or self.values is not None):
            raise ValueError("file: needs column: (the file's path, or its name with blob:) and "
                             "no values:")
        return self


def _as_key(v: Any) -> str:
    """Source codes compare as text: 1, 1.0, Decimal('1.0') and '1' are the same code, and
    Decimal('2.50') is 2.5 (a unit altering a column to DECIMAL changes no code or record ID).
    Bytes are their text when they are printable UTF-8, else a number (MySQL BIT(1): b'\x01' is 1)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, Decimal) and v.is_finite():
        return str(int(v)) if v == v.to_integral_value() else format(v.normalize(), "f")
    if isinstance(v, (bytes, bytearray, memoryview)):
        raw = bytes(v)
        if not raw:
            return ""
        text = ""
        for encoding in ("utf-8", "gb18030"):  # GBK text of a legacy source
            try:
                text = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        return text.strip() if text.isprintable() and text.strip() else str(int.from_bytes(raw, "big"))
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
    hard_deletes: Literal["each_run", "daily", "weekly", "never"] = "each_run"
    checks: dict[str, Any] | None = None

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
            if rule.file is not None and rule.file.blob:
                cols.append(rule.file.blob)
            cols.extend(template_columns(rule.default))
        return list(dict.fromkeys(cols))


class UnitSpec(_Model):
    orgNo: str
    comName: str

    @field_validator("orgNo", mode="before")
    @classmethod
    def _org_no(cls, v: Any) -> Any:
        from etl.standard.checks import is_valid_uscc

        if not isinstance(v, str) or not is_valid_uscc(v.strip().upper()):
            raise ValueError("orgNo must be the unit's 18-character unified social credit code "
                             "(GB 32100) with a valid check character")
        return v.strip().upper()


class MappingModel(_Model):
    unit: UnitSpec
    source: SourceSpec | None = None
    checks: dict[str, Any] | None = None
    datasets: dict[str, DatasetSpec]

    @field_validator("datasets", mode="before")
    @classmethod
    def _tx_codes(cls, v: Any) -> Any:
        if isinstance(v, dict):
            twins = _tx_twins(v)
            if twins:
                raise ValueError(twins[0][1])
            return {_tx_key(k): d for k, d in v.items()}
        return v


def _tx_key(k: Any) -> str:
    """A dataset key as a txCode: `6:` (a YAML number) is "06"."""
    return str(k).zfill(2) if isinstance(k, int) and not isinstance(k, bool) else str(k)


def _tx_twins(datasets: dict) -> list[tuple[str, str]]:
    """Keys spelt differently that name one txCode (`"04":` and `4:`): one would silently
    replace the other."""
    by_tx: dict[str, list[Any]] = {}
    for k in datasets:
        by_tx.setdefault(_tx_key(k), []).append(k)
    shown = lambda k: _short(k) if isinstance(k, int) else repr(_short(k))  # noqa: E731
    return [(f"datasets.{_short(tx)}", f"{' and '.join(map(shown, keys))} both name txCode "
             f"{_short(tx)}: keep one") for tx, keys in by_tx.items() if len(keys) > 1]


@dataclass(frozen=True)
class Mapping:
    """A validated mapping file. `digest` is the sha256 of the file's bytes: staged data carries
    it, so a file changed mid-run or data staged for another unit is never loaded as this one."""

    path: Path
    model: MappingModel
    digest: str = ""
    exact_json: str = field(default="", compare=False, repr=False)  # the model as JSON, when that is exact
    templates: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)  # extends: (path, sha256)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def unit(self) -> UnitSpec:
        return self.model.unit

    @property
    def datasets(self) -> dict[str, DatasetSpec]:
        return dict(sorted(self.model.datasets.items()))

    def checks_for(self, tx_code: str) -> dict[tuple[str, str], str]:
        """{(field, rule): "warning" | "off"}: the unit's `checks:`, then the dataset's."""
        from etl.standard.validate import lowerable_rules

        ds = standard.dataset(tx_code)
        out: dict[tuple[str, str], str] = {}
        for raw in (self.model.checks, self.model.datasets[tx_code].checks):
            for name, setting in (raw or {}).items():
                rules = lowerable_rules(ds, name)
                levels = ({r: _level(setting) for r in rules} if not isinstance(setting, dict)
                          else {r: _level(v) for r, v in setting.items() if r in rules})
                out.update({(name, r): lv for r, lv in levels.items()})
        return out

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


MAX_BYTES = 1_000_000     # a mapping is a few KB; anything near this is a mistake or an attack
MAX_ALIAS_NODES = 100_000  # nodes that aliases (*name) may add by repeating what they name
MAX_QUOTED = 80            # characters of a file's own text quoted in a message


def _short(v: Any) -> str:
    """A value from the file, as a message may quote it: never the whole of a huge key."""
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED - 1] + "…"


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: ~10x faster
    """Safe YAML as a mapping needs it: two equal keys are refused (PyYAML keeps the last one
    silently); aliases may not expand a small file into a huge document (a "billion laughs");
    yes/no/on/off stay text (YAML 1.2: only true/false are booleans), so `values: {yes: 是}`,
    `deleted: {value: no}` and a column named `no` mean what they say."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # no anchor, no alias: nothing to count (the count is ~15% of a load)
        self.anchors_possible = not isinstance(stream, str) or "&" in stream

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        if self.anchors_possible:
            _check_expansion(node)
        return self.construct_document(node)


_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases would add more than MAX_ALIAS_NODES nodes, or refer to
    themselves, before anything is built from it. The composed graph shares an anchored node
    among its aliases, so its expanded size is counted in one pass over the distinct nodes."""
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            size[id(node)] = 1
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) \
            else node.value
        if done:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if size[id(node)] - len(size) > MAX_ALIAS_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases (*name) expand this file to more than "
                    f"{MAX_ALIAS_NODES:,} values: write the values out or use fewer aliases",
                    node.start_mark)
            continue
        if id(node) in size:
            continue
        if id(node) in open_:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to the value that contains it: remove it", node.start_mark)
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            twice = key in seen
        except TypeError:  # a list or mapping as a key
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be text or a number", key_node.start_mark) from None
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {_short(key)!r} appears twice (first at line {seen[key] + 1}); "
                f"keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _construct_int(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> int | str:
    """An integer of more than 100 characters stays text as written: no code is that long, and
    Python refuses to print one of more than 4,300 digits (a key's message would crash)."""
    if len(node.value) > 100:
        return loader.construct_scalar(node)
    return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _level(setting: Any) -> str:
    """A `checks:` level: `off` (YAML 1.1 reads a bare off as false) or `warning`."""
    return "off" if setting is False else str(setting)


def checks_problems(where: str, raw: Any, datasets: list[standard.Dataset]) -> list[tuple[str, str]]:
    """Problems of a `checks:` block that lowers rules for the fields of `datasets`."""
    from etl.standard.validate import LEVELS, lowerable_rules

    if raw is None:
        return []
    if not isinstance(raw, dict):
        return [(where, "checks: map a field to off, warning, or {rule: off/warning}")]
    out: list[tuple[str, str]] = []
    for name, setting in raw.items():
        loc = f"{where}.{name}"
        if not any(name in ds.field_names for ds in datasets):
            out.append((loc, f"{name!r} is not a field of {', '.join(ds.tx_code for ds in datasets)}"))
            continue
        rules = sorted({r for ds in datasets for r in lowerable_rules(ds, name)})
        if not rules:
            out.append((loc, f"{name} has no rule a mapping may lower (length, date, enumeration, "
                             f"required and references are the standard's): remove it"))
            continue
        settings = setting if isinstance(setting, dict) else {None: setting}
        for rule, level in settings.items():
            if rule is not None and rule not in rules:
                out.append((loc, f"{name} has no rule {rule!r} to lower: use {', '.join(rules)}"))
            elif _level(level) not in LEVELS:
                out.append((f"{loc}.{rule}" if rule else loc,
                            f"{_level(level)!r} is not a level: use warning or off (a rule is "
                            f"never raised past what the standard allows)"))
    return out


def _pydantic_problems(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        loc = [_short(str(p)) for p in e["loc"] if not str(p).startswith(("function-", "union["))]
        kind, msg = e["type"], e["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}: remove it or fix its spelling"
        elif kind == "missing":
            msg = f"missing key {loc[-1]!r}: add it"
        out.append((".".join(loc), msg))
    return out


def _dataset_problems(tx: str, raw: Any, has_top_source: bool) -> list[tuple[str, str]]:
    """Problems of one dataset entry, found even where its model does not parse."""
    where = f"datasets.{_short(tx)}"
    if tx not in standard.BY_TX_CODE:
        return [(where, f"unknown txCode {_short(tx)!r}: use one of {', '.join(standard.TX_CODES)}")]
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
            hint = _closest(str(name)[:100], spec.field_names)
            out.append((f"{where}.fields.{_short(name)}",
                        f"{_short(name)!r} is not a field of {spec.structure} {spec.zh}"
                        + (f": did you mean {hint!r}?" if hint else "")))
    implicit = {"orgNo", "comName"} if tx == "01" else set()
    for name in spec.required_fields:
        if name not in fields and name not in implicit:
            out.append((f"{where}.fields",
                        f"required field {name!r} ({spec.field(name).zh}) is not mapped: "
                        f"map a column, a default or a constant"))
    out += checks_problems(f"{where}.checks", raw.get("checks") if isinstance(raw, dict) else None, [spec])
    if parsed is None:
        return out
    if parsed.source is None and not has_top_source:
        out.append((where, "no source: add a top-level source: or one under this dataset"))
    for name, rule in parsed.fields.items():
        if rule.file is not None and name in spec.field_names and spec.field(name).type != "M":
            out.append((f"{where}.fields.{_short(name)}.file",
                        f"file: collects an attachment, only for multimedia (M) fields "
                        f"({', '.join(f.name for f in spec.fields if f.type == 'M') or 'none in ' + tx}): "
                        f"remove it"))
        unknown = [t for t in TEMPLATE_FIELD.findall(rule.default or "")
                   if t.startswith("unit.") and t.removeprefix("unit.") not in UnitSpec.model_fields]
        if unknown:
            out.append((f"{where}.fields.{_short(name)}.default",
                        f"{', '.join('{' + _short(t) + '}' for t in unknown)} is not a unit's value: "
                        f"use {', '.join('{unit.' + n + '}' for n in UnitSpec.model_fields)}"))
        if rule.values and name in spec.field_names:
            f = spec.field(name)
            if f.enum and f.separator is None:
                bad = sorted(v for v in {_as_key(v) for v in rule.values.values()}
                             if _canonical(v, f) not in f.enum)
                if bad:
                    out.append((f"{where}.fields.{name}.values",
                                f"{', '.join(_short(b) for b in bad[:10])}{' …' if len(bad) > 10 else ''} "
                                f"not allowed for {name}: use {'、'.join(f.enum)}"))
    return out


@lru_cache(maxsize=8192)
def _canonical(value: str, f: standard.Field) -> str:
    """How cleaning will spell a value-map target (synonyms such as 较大 are fine). Cached: a
    province's mappings repeat the same few targets thousands of times."""
    import pandas as pd

    from etl.standard.clean import Audit, clean_column

    out = clean_column(pd.Series([value], dtype=object), f, Audit()).iloc[0]
    return "" if pd.isna(out) else str(out)


def _problems(raw: dict) -> list[tuple[str, str]]:
    datasets = raw.get("datasets")
    out: list[tuple[str, str]] = []
    try:
        MappingModel.model_validate({**raw, "datasets": {}})
    except ValidationError as e:
        out += _pydantic_problems(e)
    if "unit" not in raw:  # the one key a system template never has
        out = [(loc, msg + " (unit: {orgNo: ..., comName: ...}); a file without one reads as a "
                "system template: keep templates in mappings/systems/, which is not planned")
               if loc == "unit" else (loc, msg) for loc, msg in out]
    if not isinstance(datasets, dict) or not datasets:
        out.append(("datasets", "no datasets: add at least one txCode such as \"06\" with its table"))
        return out
    out += _tx_twins(datasets)
    for key, ds_raw in datasets.items():
        out += _dataset_problems(_tx_key(key), ds_raw, bool(raw.get("source")))
    mapped = [standard.BY_TX_CODE[_tx_key(k)] for k in datasets if _tx_key(k) in standard.BY_TX_CODE]
    out += checks_problems("checks", raw.get("checks"), mapped or list(standard.DATASETS))
    return _with_todos(raw, out)


TODO = "TODO"  # what `etl scaffold` writes where it found nothing
_TODO_HINTS = {"orgNo": "give the unit's unified social credit code",
               "comName": "give the unit's name (单位名称)", "key": "name the column(s) that identify a row",
               "table": "name the source table"}


def _with_todos(raw: Any, problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A draft's `TODO` values as one line each, in place of what else they break (an orgNo
    of TODO is no credit code), so a draft fails only on its TODOs."""
    todos: list[str] = []
    stack: list[tuple[Any, list[str]]] = [(raw, [])]  # no recursion: a hostile file may nest deep
    while stack:
        v, loc = stack.pop()
        if isinstance(v, str) and v.strip() == TODO:
            todos.append(".".join(loc))
        elif isinstance(v, dict):
            stack += [(item, [*loc, _tx_key(k) if loc == ["datasets"] else _short(str(k))])
                      for k, item in reversed(v.items())]
        elif isinstance(v, list):
            stack += [(item, loc if loc[-1:] == ["key"] else [*loc, str(i)])
                      for i, item in reversed(list(enumerate(v)))]
    if not todos:
        return problems
    covered = lambda loc: any(loc == t or loc.startswith(t + ".") for t in todos)  # noqa: E731
    rest = [(loc, msg) for loc, msg in problems if not covered(loc)]
    hint = lambda loc: _TODO_HINTS.get(loc.split(".")[-1], "name the source column" if ".fields." in loc
                                       else "replace it")  # noqa: E731
    return [(t, f"TODO left by etl scaffold: {hint(t)}") for t in dict.fromkeys(todos)] + rest


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


def read_mapping_file(path: str | Path) -> bytes:
    """A mapping file's bytes, read only if it is a regular file of at most MAX_BYTES: never a
    directory, a device (a link to /dev/zero would read forever) or a pipe (opening it would
    wait for a writer)."""
    path = Path(path)
    shown = _display(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise MappingError([f"{shown}: no such mapping file"]) from None
    except OSError as e:
        raise MappingError([f"{shown}: cannot be read ({e.strerror}): check its permissions"]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MappingError([f"{shown}: not a regular file (a folder, device or pipe): "
                                f"a mapping is a YAML file"])
        if st.st_size > MAX_BYTES:
            raise _too_big(shown, f"{st.st_size:,} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise MappingError([f"{shown}: cannot be read ({e.strerror})"]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:  # grew after fstat
        raise _too_big(shown, "more bytes")
    return data


def _too_big(shown: str, size: str) -> MappingError:
    return MappingError([f"{shown}: {size}, more than a mapping's {MAX_BYTES:,} bytes: "
                         f"is this the right file?"])


def load_mapping(path: str | Path) -> Mapping:
    """Parse and validate one mapping file; raise MappingError listing every problem."""
    path = Path(path)
    return parse_mapping(path, read_mapping_file(path))


def parse_yaml(path: Path, data: bytes) -> Any:
    """A mapping file's YAML as Python values (not yet validated), within the bounds above."""
    shown = _display(path)
    if len(data) > MAX_BYTES:
        raise _too_big(shown, f"{len(data):,} bytes")
    try:
        return yaml.load(data.decode("utf-8"), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        raise MappingError([f"{shown} [line {line}] not valid YAML: {e.problem}"]) from None
    except yaml.YAMLError as e:
        raise MappingError([f"{shown}: not valid YAML: {' '.join(str(e).split())}"]) from None
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise MappingError([f"{shown} [line {line}] not UTF-8: save the file as UTF-8"]) from None
    except (ValueError, TypeError, RecursionError) as e:  # whatever else a hostile file finds
        raise MappingError([f"{shown}: not a mapping PyYAML can read ({type(e).__name__}: "
                            f"{_short(' '.join(str(e).split()))})"]) from None


def parse_mapping(path: Path, data: bytes) -> Mapping:
    """Validate a mapping file's bytes (read once by the caller); `path` names it. A file that
    says `extends:` is validated merged with its templates (etl.templates)."""
    shown = _display(path)
    raw = parse_yaml(path, data)
    if not isinstance(raw, dict):
        raise MappingError([f"{shown}: expected keys unit:, source:, datasets:"])
    if "extends" in raw:
        from etl import templates

        resolved = templates.resolve(path, data, raw)
        if problems := _problems(resolved.raw):
            raise resolved.problems(problems)
        return Mapping(path, MappingModel.model_validate(resolved.raw), resolved.digest,
                       templates=tuple(resolved.templates))
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


_CODE = ("etl.mapping", "etl.standard.tables", "etl.standard.clean", "etl.standard.divisions",
         "etl.standard.checks", "etl.standard.validate", "etl.sql_guard", "etl.templates")


@lru_cache(maxsize=1)
def _code_digest() -> bytes:
    """What a cached verdict depends on besides the file: the validating code."""
    import importlib.util

    h = hashlib.sha256()
    for name in _CODE:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, name
        h.update(Path(spec.origin).read_bytes())
    return h.digest()


def load_mapping_cached(path: str | Path, cache_dir: Path | None) -> Mapping:
    """`load_mapping`, remembering valid files by content (and code) hash in `cache_dir`:
    planning a province's run reads thousands of files that rarely change. A file is read once;
    an invalid one is never cached, so its problems are always reported afresh."""
    path = Path(path)
    if cache_dir is None:
        return load_mapping(path)
    data = read_mapping_file(path)
    entry = cache_dir / (hashlib.sha256(_code_digest() + data).hexdigest() + ".json")
    try:
        cached = entry.read_text(encoding="utf-8")
        templates, cached = _cached_chain(cached)
        digest = _chain_digest(path, data, templates)
        if digest is not None:
            return Mapping(path, MappingModel.model_validate_json(cached), digest, cached,
                           tuple(templates))
    except (OSError, ValidationError, ValueError, MappingError):
        pass
    m = parse_mapping(path, data)
    dumped = m.model.model_dump_json()
    if MappingModel.model_validate_json(dumped) == m.model:
        m = Mapping(m.path, m.model, m.digest, dumped, m.templates)
        try:
            import json

            from etl.common import private

            private.private_dir(cache_dir)  # a mapping names a unit's sources and columns
            chain = [list(t) for t in m.templates]
            tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
            with private.create(tmp, exclusive=False) as f:
                if chain:  # the templates it was resolved with: checked on every hit
                    f.write(f"{CHAIN_MARK}{json.dumps(chain)}\n".encode("utf-8"))
                f.write(dumped.encode("utf-8"))
            tmp.replace(entry)
        except OSError:
            pass  # a cache that cannot be written only costs time
    return m


CHAIN_MARK = "#templates "


def _cached_chain(cached: str) -> tuple[list[tuple[str, str]], str]:
    """A cache entry's templates (relative path, sha256) and model JSON."""
    import json

    if not cached.startswith(CHAIN_MARK):
        return [], cached
    head, _, body = cached.partition("\n")
    return [(str(rel), str(sha)) for rel, sha in json.loads(head[len(CHAIN_MARK):])], body


def _chain_digest(path: Path, data: bytes, templates: list[tuple[str, str]]) -> str | None:
    """The unit's digest when each template of a cached chain is still as it was, else None
    (a changed template misses the cache)."""
    from etl import templates as tpl

    for rel, sha in templates:
        if hashlib.sha256(read_mapping_file(path.parent / rel)).hexdigest() != sha:
            return None
    return tpl.chain_digest(data, templates)


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
