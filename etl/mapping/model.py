"""A mapping's model: what one YAML file per using unit says, as typed, validated values.

Every problem is reported at once, each as `mappings/unit.yaml [datasets.06.fields.riskType] what
is wrong; what to do` (`problems`), so whoever onboards a unit fixes the file in one pass. Reading
files is `etl.mapping.reading`'s, putting templates and files together `etl.mapping.loading`'s.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from etl import standard
from etl.common.masking import is_secret_param, mask_url
from etl.mapping.sql_guard import select_problem, unsafe_url_options

FREQUENCY = re.compile(r"^(daily|weekly|hourly|\d+min)$")
SCHEMA_NAME = re.compile(r"^[^\W\d][\w$]{0,62}$")
#: How often the "frequent" DAG ticks; `hourly` and `Nmin` frequency overrides run on it.
TICK_MINUTES = 5


def period_minutes(frequency: str) -> int | None:
    """Minutes between runs of an `hourly` / `Nmin` override on the frequent DAG (a multiple of
    its tick); None for daily and weekly."""
    if frequency == "hourly":
        return 60
    m = re.fullmatch(r"(\d+)min", frequency)
    if not m:
        return None
    return max(TICK_MINUTES, math.ceil(int(m.group(1)) / TICK_MINUTES) * TICK_MINUTES)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Model):
    """Where a unit's data lives: exactly one of an env var, an Airflow connection or a URL.
    `schema` names the schema of the tables its datasets name without one (units of one system
    often keep the same tables in a schema of their own): `apply_unit_defaults` qualifies them."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_alias=True,
                              validate_by_name=False, serialize_by_alias=True)

    url_env: str | None = None
    conn_id: str | None = None
    url: str | None = None
    statement_timeout_s: float = 3600.0  # one query (PostgreSQL statement_timeout, MySQL read_timeout)
    connect_timeout_s: float = 30.0  # connecting; SQLite's wait for a locked file
    timezone: str = "Asia/Shanghai"  # the zone of the source's zone-less timestamps
    require_tls: bool = False  # refuse a connection without TLS (etl.common.outbound; ETL_REQUIRE_TLS: all)
    #: `schema:` in the file (a BaseModel attribute has the name): tables named without a schema
    db_schema: str | None = Field(default=None, alias="schema")

    @field_validator("db_schema")
    @classmethod
    def _schema_name(cls, v: str | None) -> str | None:
        if v is not None and not SCHEMA_NAME.match(v):
            raise ValueError(f"schema: {short(v)!r} is not a schema name (letters, digits, _ $ and "
                             f"non-ASCII letters; no dot)")
        return v

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


class FilesSpec(_Model):
    """A unit's attachment base (`files:` at the top of a mapping): the folder or URL its M
    fields' paths are relative to, for every `file:` rule that names no base of its own (a
    system template's `file: {}`), so a unit of that system gives it once (and a register as a
    column). One of the three, as in `file:`."""

    base: str | None = None
    base_env: str | None = None
    conn_id: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "FilesSpec":
        given = [k for k in FILE_BASES if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("files: give exactly one of base (a folder or URL), base_env (an "
                             "environment variable holding it) or conn_id (an Airflow connection)")
        if self.base and (where := _base_secrets(self.base)):
            raise ValueError(f"files.base holds a password ({', '.join(where)}): put the base in an "
                             f"environment variable (base_env) or an Airflow connection (conn_id)")
        return self


FILE_BASES = ("base", "base_env", "conn_id")


def apply_unit_defaults(raw: Any) -> Any:
    """A mapping's raw values with the unit-wide settings applied where a rule leaves them out:
    `files:` to each `file:` naming no base (nor blob), `source.schema` (a dataset's own
    source's, when it has one) to each `table:` named without a schema. Idempotent (a table with
    a schema and a file with a base are left as they are), so a validated model read back
    from JSON is the same model. Anything malformed is left for validation to report."""
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
        return raw
    files = raw.get("files")
    base = ({k: v for k, v in files.items() if k in FILE_BASES and v not in (None, "")}
            if isinstance(files, dict) else {})
    top = raw.get("source")
    top_schema = top.get("schema") if isinstance(top, dict) else None
    datasets = {}
    for tx, ds in raw["datasets"].items():
        if isinstance(ds, dict):
            ds = dict(ds)
            own = ds.get("source")
            schema = own.get("schema") if isinstance(own, dict) else top_schema
            if isinstance(schema, str) and schema and isinstance(ds.get("table"), str) \
                    and "." not in ds["table"] and ds["table"].strip():
                ds["table"] = f"{schema}.{ds['table']}"
            if base and isinstance(ds.get("fields"), dict):
                ds["fields"] = {name: ({**rule, "file": {**base, **rule["file"]}}
                                       if isinstance(rule, dict) and isinstance(rule.get("file"), dict)
                                       and not any(rule["file"].get(k) not in (None, "")
                                                   for k in (*FILE_BASES, "blob")) else rule)
                                for name, rule in ds["fields"].items()}
        datasets[tx] = ds
    return {**raw, "datasets": datasets}


class DeletedSpec(_Model):
    column: str
    value: Any = 1


class FileSpec(_Model):
    """Where an M (multimedia) field's file comes from (`etl.media.attachments`): the field's column
    holds a path relative to a base folder or URL (`base`, `base_env`, `conn_id`), or names
    the file whose bytes are in a BLOB column (`blob`). Exactly one of the four."""

    base: str | None = None       # a folder or URL without credentials (a mounted share, https://...)
    base_env: str | None = None   # an environment variable holding the base (may hold credentials)
    conn_id: str | None = None    # an Airflow connection whose URI is the base
    blob: str | None = None       # a source column holding the file's bytes
    max_mb: float | None = None   # the largest file accepted, in MiB (default etl.media.files's 2 GiB)

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
                             "or blob (a column holding the bytes), or none of them and the "
                             "unit's files: base at the top of the mapping")
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
            return {as_key(k): val for k, val in v.items()}
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


def as_key(v: Any) -> str:
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
    files: FilesSpec | None = None
    checks: dict[str, Any] | None = None
    datasets: dict[str, DatasetSpec]

    @model_validator(mode="before")
    @classmethod
    def _unit_defaults(cls, v: Any) -> Any:
        return apply_unit_defaults(v)

    @field_validator("datasets", mode="before")
    @classmethod
    def _tx_codes(cls, v: Any) -> Any:
        if isinstance(v, dict):
            twins = tx_twins(v)
            if twins:
                raise ValueError(twins[0][1])
            return {tx_key(k): d for k, d in v.items()}
        return v


def tx_key(k: Any) -> str:
    """A dataset key as a txCode: `6:` (a YAML number) is "06"."""
    return str(k).zfill(2) if isinstance(k, int) and not isinstance(k, bool) else str(k)


def tx_twins(datasets: dict) -> list[tuple[str, str]]:
    """Keys spelt differently that name one txCode (`"04":` and `4:`): one would silently
    replace the other."""
    by_tx: dict[str, list[Any]] = {}
    for k in datasets:
        by_tx.setdefault(tx_key(k), []).append(k)
    shown = lambda k: short(k) if isinstance(k, int) else repr(short(k))  # noqa: E731
    return [(f"datasets.{short(tx)}", f"{' and '.join(map(shown, keys))} both name txCode "
             f"{short(tx)}: keep one") for tx, keys in by_tx.items() if len(keys) > 1]


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


MAX_QUOTED = 80            # characters of a file's own text quoted in a message


def short(v: Any) -> str:
    """A value from the file, as a message may quote it: never the whole of a huge key."""
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED - 1] + "…"


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
        loc = [short(str(p)) for p in e["loc"] if not str(p).startswith(("function-", "union["))]
        kind, msg = e["type"], e["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}: remove it or fix its spelling"
        elif kind == "missing":
            msg = f"missing key {loc[-1]!r}: add it"
        out.append((".".join(loc), msg))
    return out


def _dataset_problems(tx: str, raw: Any, has_top_source: bool) -> list[tuple[str, str]]:
    """Problems of one dataset entry, found even where its model does not parse."""
    where = f"datasets.{short(tx)}"
    if tx not in standard.BY_TX_CODE:
        return [(where, f"unknown txCode {short(tx)!r}: use one of {', '.join(standard.TX_CODES)}")]
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
            out.append((f"{where}.fields.{short(name)}",
                        f"{short(name)!r} is not a field of {spec.structure} {spec.zh}"
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
            out.append((f"{where}.fields.{short(name)}.file",
                        f"file: collects an attachment, only for multimedia (M) fields "
                        f"({', '.join(f.name for f in spec.fields if f.type == 'M') or 'none in ' + tx}): "
                        f"remove it"))
        unknown = [t for t in TEMPLATE_FIELD.findall(rule.default or "")
                   if t.startswith("unit.") and t.removeprefix("unit.") not in UnitSpec.model_fields]
        if unknown:
            out.append((f"{where}.fields.{short(name)}.default",
                        f"{', '.join('{' + short(t) + '}' for t in unknown)} is not a unit's value: "
                        f"use {', '.join('{unit.' + n + '}' for n in UnitSpec.model_fields)}"))
        if rule.values and name in spec.field_names:
            f = spec.field(name)
            if f.enum and f.separator is None:
                bad = sorted(v for v in {as_key(v) for v in rule.values.values()}
                             if _canonical(v, f) not in f.enum and v != TODO)
                if bad:
                    out.append((f"{where}.fields.{name}.values",
                                f"{', '.join(short(b) for b in bad[:10])}{' …' if len(bad) > 10 else ''} "
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


def problems_of(raw: dict) -> list[tuple[str, str]]:
    raw = apply_unit_defaults(raw)
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
    out += tx_twins(datasets)
    for key, ds_raw in datasets.items():
        out += _dataset_problems(tx_key(key), ds_raw, bool(raw.get("source")))
    mapped = [standard.BY_TX_CODE[tx_key(k)] for k in datasets if tx_key(k) in standard.BY_TX_CODE]
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
            stack += [(item, [*loc, tx_key(k) if loc == ["datasets"] else short(str(k))])
                      for k, item in reversed(v.items())]
        elif isinstance(v, list):
            stack += [(item, loc if loc[-1:] == ["key"] else [*loc, str(i)])
                      for i, item in reversed(list(enumerate(v)))]
    if not todos:
        return problems
    covered = lambda loc: any(loc == t or loc.startswith(t + ".") for t in todos)  # noqa: E731
    rest = [(loc, msg) for loc, msg in problems if not covered(loc)]
    hint = lambda loc: _TODO_HINTS.get(loc.split(".")[-1], "map this code to the field's value"
                                       if ".values." in loc else "name the source column"
                                       if ".fields." in loc else "replace it")  # noqa: E731
    return [(t, f"TODO left by etl scaffold: {hint(t)}") for t in dict.fromkeys(todos)] + rest


def _closest(name: str, names: tuple[str, ...]) -> str | None:
    import difflib

    hits = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if not hits:
        hits = [n for n in names if n.lower() == name.lower()]
    return hits[0] if hits else None


Mode = Literal["full", "incremental"]
