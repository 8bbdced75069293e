"""System templates: most units of a province run one of a few vendors' systems, the same schema
again and again, so a unit's mapping may say `extends: systems/<vendor-system>.yaml` and hold only
what is its own (`unit:`, `source:`, overrides). The template holds the datasets.

Rules (README "Onboarding many units"):
- `extends:` names a file relative to the mappings folder (the unit file's folder), in a unit and
  in a template alike; an absolute path or one that leaves the folder is refused.
- A template has no `unit:`; it may lack `source:`; it may itself extend a template (a chain of
  at most MAX_DEPTH files; a cycle is refused).
- Merging goes key by key from the deepest template to the unit: `datasets` by txCode, a
  dataset's `fields` by field name (an override replaces that field's rule whole), `source`,
  `checks` and a dataset's `source`/`checks` key by key; any other value is replaced whole.
  `null` removes what a template gave (`"07": null` a dataset, `riskFile: null` a field).
  Giving table: or query: replaces the other.
- A template names no connection (url_env, conn_id, url), neither in `source:` nor in a
  dataset's `source:`: a unit's rows come only from connections its own file names. A template
  may give a dataset a `source:` without one (settings such as timezone, or `{}`): that
  dataset lives in a database of its own, which each unit names under `datasets.NN.source`.
- Every file of the chain is read with the same bounds as a mapping (size, aliases, regular
  file); a problem of the resolved mapping names the file its key came from.
- The digest of a unit that extends covers every file of its chain, so a changed template
  changes `mappingHash` and misses the planning cache.
- A template may declare `per_unit:` settings, each a name and the mapping key a unit fills
  (`schema: source.schema`, `file_base: {key: files.base, required: true}`): what differs
  between units of one system beside their unit and connection, which a register gives as
  columns (`etl onboard`). Only keys a unit file may set are accepted (PER_UNIT_KEYS); a unit
  file has no `per_unit:`.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from etl.common.errors import MappingError
from etl.mapping.model import (FILE_BASES, FilesSpec, SourceSpec, problems_of, short, tx_key,
                               tx_twins)
from etl.mapping.reading import discover, display, parse_yaml, read_mapping_file

EXTENDS = "extends"
PER_UNIT = "per_unit"
MAX_DEPTH = 8           # templates in one chain: a vendor, its versions, a province's variant
CONNECTION = ("url_env", "conn_id", "url")
TABLE_OR_QUERY = ("table", "query")
#: The mapping keys a template's `per_unit:` may name: the source's settings (not its
#: connection, which a register gives in its own columns) and the unit's attachment base.
PER_UNIT_KEYS = tuple([f"source.{f.alias or name}" for name, f in SourceSpec.model_fields.items()
                       if name not in CONNECTION] + [f"files.{k}" for k in FilesSpec.model_fields])
PER_UNIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
RESERVED_NAMES = ("orgNo", "comName", "conn_id", "url_env", "unit", "source", "extends")


@dataclass(frozen=True)
class Setting:
    """One setting a template leaves to each unit: `name` (a register's column), the mapping
    `key` it fills (`source.schema`), whether a unit must give it, and what it is."""

    name: str
    key: str
    required: bool = False
    description: str = ""


def per_unit_problems(layer: "Layer") -> list[str]:
    """A template's `per_unit:` declarations that are wrong, one line each naming the file and
    the key: a name a register column cannot be, a mapping key a unit may not set."""
    shown = display(layer.path)
    raw = layer.raw.get(PER_UNIT)
    if PER_UNIT not in layer.raw:
        return []
    if "unit" in layer.raw:
        return [f"{shown} [{PER_UNIT}] a unit file gives its settings, it declares none: move "
                f"per_unit: to its template"]
    if not isinstance(raw, dict):
        return [f"{shown} [{PER_UNIT}] map each setting's name to the mapping key it fills, e.g. "
                f"per_unit: {{schema: source.schema, file_base: files.base}}"]
    out, keys = [], {}
    for name, spec in raw.items():
        where = f"{shown} [{PER_UNIT}.{short(str(name))}]"
        if spec is None:
            continue  # removes a setting a deeper template declared
        if not isinstance(name, str) or not PER_UNIT_NAME.match(name) or name in RESERVED_NAMES:
            out.append(f"{where} {short(str(name))!r} cannot name a register column: use letters, "
                       f"digits and _ (not {', '.join(RESERVED_NAMES)})")
            continue
        spec = {"key": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict):
            out.append(f"{where} give the mapping key it fills (source.schema), or {{key: ..., "
                       f"required: true, description: ...}}")
            continue
        if unknown := [k for k in spec if k not in ("key", "required", "description")]:
            out.append(f"{where} unknown key {short(str(unknown[0]))!r}: use key, required, description")
            continue
        key = spec.get("key")
        if key not in PER_UNIT_KEYS:
            out.append(f"{where} {short(str(key))!r} is not a key a unit may set: use one of "
                       f"{', '.join(PER_UNIT_KEYS)}")
        elif key in keys:
            out.append(f"{where} {key} is also filled by per_unit.{keys[key]}: keep one")
        else:
            keys[key] = name
        if not isinstance(spec.get("required", False), bool):
            out.append(f"{where} required: is true or false")
        if not isinstance(spec.get("description", ""), str):
            out.append(f"{where} description: is text")
    bases = [k for k in keys if k.startswith("files.")]
    if len(bases) > 1:
        out.append(f"{shown} [{PER_UNIT}] {' and '.join(bases)}: a unit gives one attachment base: "
                   f"declare one of {', '.join('files.' + b for b in FILE_BASES)}")
    return out


def settings_of(resolved: "Resolved") -> list[Setting]:
    """The per-unit settings of a resolved template chain, deepest first, a nearer template's
    declaration of a name replacing a deeper one's (null removes it). Valid: `chain` checked."""
    merged: dict[str, Setting] = {}
    for lay in reversed(resolved.layers):
        if not is_template(lay.raw) or not isinstance(lay.raw.get(PER_UNIT), dict):
            continue
        for name, spec in lay.raw[PER_UNIT].items():
            if spec is None:
                merged.pop(name, None)
                continue
            spec = {"key": spec} if isinstance(spec, str) else spec
            merged[name] = Setting(name, spec["key"], bool(spec.get("required", False)),
                                   str(spec.get("description", "")))
    return list(merged.values())


class ChainError(MappingError):
    """A unit's problems, each with the file it came from, so that a broken template can be
    reported once with every unit it breaks (`etl check`)."""

    def __init__(self, unit: str, items: list[tuple[str, str]]):
        self.unit = unit
        self.items = items  # (file shown, line naming that file): the line without the unit
        super().__init__([line if origin == unit else f"{line} (used by {unit})"
                          for origin, line in items])


@dataclass(frozen=True)
class Layer:
    path: Path
    data: bytes
    raw: dict

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Resolved:
    """A unit merged with its templates: `raw` to validate; `layers` unit first, then each
    template it extends; `origins` which file set each key (a tuple path into `raw`)."""

    raw: dict
    layers: list[Layer]
    root: Path
    origins: dict[tuple[str, ...], Path] = field(default_factory=dict)

    @property
    def templates(self) -> list[tuple[str, str]]:
        """(path relative to the mappings folder, sha256) of each template, nearest first."""
        return [(relative(self.root, lay.path), lay.sha) for lay in self.layers[1:]]

    @property
    def digest(self) -> str:
        return chain_digest(self.layers[0].data, self.templates)

    def origin(self, loc: str | tuple[str, ...]) -> Path:
        """The file that set the key at `loc` (`datasets.06.fields.riskType`): the deepest
        key of `loc` some file set."""
        parts = tuple(loc.split(".")) if isinstance(loc, str) else loc
        for n in range(len(parts), 0, -1):
            if parts[:n] in self.origins:
                return self.origins[parts[:n]]
        return self.layers[0].path

    def problems(self, problems: list[tuple[str, str]]) -> ChainError:

        unit = display(self.layers[0].path)
        sourceless = [p for p in problems if p[1].startswith("no source:")]
        if sourceless:  # the unit's to give, once rather than per dataset of the template
            problems = [p for p in problems if p not in sourceless]
            problems.append(("source", "no source: give the unit's source: (url_env, conn_id or "
                             "url) in the unit file"))
        own = {f"datasets.{tx}.source": tx for tx in own_source_datasets(self.raw)}
        items = []
        for loc, msg in problems:
            if loc in own and self.origin(loc) != self.layers[0].path:
                # a template's dataset in a database of its own: the unit names that connection
                tx = own[loc]
                items.append((unit, f"{unit} [{loc}] {relative(self.root, self.origin(loc))} reads "
                              f"dataset {tx} from a database of its own: name its connection here "
                              f"(datasets: {{\"{tx}\": {{source: {{url_env: ...}}}}}}, or conn_id / "
                              f"url)"))
                continue
            shown = display(self.origin(loc))
            items.append((shown, f"{shown} [{loc}] {msg}"))
        return ChainError(str(unit), items)


def chain_digest(unit_data: bytes, templates: list[tuple[str, str]]) -> str:
    """A unit's `Mapping.digest`: its file's sha256 when it extends nothing (as before
    templates), else the sha256 of its file's and every template's sha256 and path."""
    own = hashlib.sha256(unit_data).hexdigest()
    if not templates:
        return own
    text = "\n".join([own, *(f"{sha} {rel}" for rel, sha in templates)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def relative(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def template_path(root: Path, ref: Any, where: Path) -> Path:
    """The file `extends: ref` (written in `where`) names, inside the mappings folder `root`."""

    shown = display(where)
    if not isinstance(ref, str) or not ref.strip():
        raise MappingError([f"{shown} [extends] give a template file relative to the mappings "
                            f"folder, such as systems/vendor_system.yaml"])
    text = ref.strip()
    if os.path.isabs(text) or text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
        raise MappingError([f"{shown} [extends] {short(text)!r} is an absolute path: name the "
                            f"template relative to the mappings folder ({display(root)}), such "
                            f"as systems/vendor_system.yaml"])
    path = Path(os.path.normpath(root / text))
    if os.path.relpath(path, root).split(os.sep)[0] == os.pardir:
        raise MappingError([f"{shown} [extends] {short(text)!r} leaves the mappings folder "
                            f"({display(root)}): keep templates inside it, e.g. in systems/"])
    return path


class _Shown:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:

        return display(self.path)


def read_layer(path: Path, data: bytes | None = None) -> Layer:
    """One file of a chain, read and parsed within a mapping's bounds."""

    if data is None:
        data = read_mapping_file(path)
    return Layer(path, data, _parsed(str(path), data))


@lru_cache(maxsize=64)
def _parsed(path: str, data: bytes) -> dict:
    """A template's YAML, parsed once per content: a province's units share a few templates
    (parsing one is most of resolving a unit). Merging copies before it changes anything, so
    the shared value is never modified."""

    raw = parse_yaml(Path(path), data)
    if not isinstance(raw, dict):
        raise MappingError([f"{display(Path(path))}: expected keys such as extends:, source:, datasets:"])
    return raw


def chain(path: Path, data: bytes, raw: dict, root: Path | None = None) -> list[Layer]:
    """The file and the templates it extends, nearest first, each read within bounds; a
    problem of a template names the template (and the unit, as a ChainError)."""

    root = Path(os.path.normpath(root or path.parent))
    layers = [Layer(path, data, raw)]
    unit = _Shown(path)  # named only when something is wrong: resolving a path costs
    while EXTENDS in layers[-1].raw:
        where = layers[-1].path
        try:
            target = template_path(root, layers[-1].raw[EXTENDS], where)
        except MappingError as e:
            raise ChainError(str(unit), [(display(where), p) for p in e.problems]) from None
        names = [Path(os.path.normpath(lay.path)) for lay in layers]
        if target in names:  # named from the template it starts at: the same line for every unit
            loop = " -> ".join(relative(root, p) for p in [*names[names.index(target):], target])
            raise ChainError(str(unit), [(display(where), f"{display(where)} [extends] {loop} is a "
                                     f"cycle: one of them must not extend the other")])
        if len(layers) > MAX_DEPTH:
            raise ChainError(str(unit), [(display(where), f"{display(where)} [extends] more than "
                                     f"{MAX_DEPTH} templates in a chain: flatten some of them")])
        if not target.exists():  # the file that names it is wrong
            raise ChainError(str(unit), [(display(where), f"{display(where)} [extends] no such "
                                     f"template {relative(root, target)} in {display(root)}: "
                                     f"templates live in its systems/ folder")])
        try:
            layer = read_layer(target)
        except MappingError as e:
            raise ChainError(str(unit), [(display(target), p) for p in e.problems]) from None
        if "unit" in layer.raw:
            raise ChainError(str(unit), [(display(target), f"{display(target)} [unit] a template "
                                     f"names no unit: keep unit: in the unit files that extend it")])
        if found := connection_problems(layer) + per_unit_problems(layer):
            raise ChainError(str(unit), [(display(target), line) for line in found])
        layers.append(layer)
    return layers


def template_connections(raw: Any) -> list[str]:
    """Where a template's YAML names a connection: `source.conn_id`, `datasets.07.source.url`."""
    if not isinstance(raw, dict):
        return []
    blocks: list[tuple[str, Any]] = [("source", raw.get("source"))]
    if isinstance(raw.get("datasets"), dict):
        blocks += [(f"datasets.{short(tx_key(tx))}.source", ds.get("source"))
                   for tx, ds in raw["datasets"].items() if isinstance(ds, dict)]
    return [f"{where}.{k}" for where, block in blocks if isinstance(block, dict)
            for k in CONNECTION if block.get(k) not in (None, "")]


def connection_problems(layer: Layer) -> list[str]:
    """A template that names a connection, one line per key: every unit extending it would
    read that database's rows (a dataset's `source:` is not replaced by the unit's `source:`)
    and load them under its own orgNo."""
    shown = display(layer.path)
    out = []
    for loc in template_connections(layer.raw):
        where, key = loc.rsplit(".", 1)
        line = (f"{shown} [{loc}] a template names no connection, else every unit extending it "
                f"loads that database's rows as its own: remove {key}")
        out.append(line + (" (each unit file names its source)" if where == "source" else
                           f" (keep {where}: {{}} if {where.split('.')[1]} lives in a second "
                           f"database: each unit names it there)"))
    return out


def own_source_datasets(raw: Any) -> list[str]:
    """The txCodes of a resolved mapping whose dataset has a `source:` naming no connection:
    a template's way of saying the dataset lives in a database of its own."""
    datasets = raw.get("datasets") if isinstance(raw, dict) else None
    if not isinstance(datasets, dict):
        return []
    return [tx_key(tx) for tx, ds in datasets.items() if isinstance(ds, dict)
            and isinstance(ds.get("source"), dict)
            and not any(ds["source"].get(k) not in (None, "") for k in CONNECTION)]


def resolve(path: Path, data: bytes, raw: dict, root: Path | None = None) -> Resolved:
    """A unit (or a template) merged with the templates it extends."""

    layers = chain(path, data, raw, root)
    twins = [(display(lay.path), f"{display(lay.path)} [{loc}] {msg}") for lay in layers
             if isinstance(lay.raw.get("datasets"), dict) for loc, msg in tx_twins(lay.raw["datasets"])]
    if twins:
        raise ChainError(display(path), twins)
    resolved = Resolved({}, layers, Path(os.path.normpath(root or path.parent)))
    for lay in reversed(layers):  # a template's per_unit: is for `etl onboard`, not a key of a unit
        over = {k: v for k, v in lay.raw.items() if k != PER_UNIT} if is_template(lay.raw) else lay.raw
        _merge_top(resolved.raw, over, lay.path, resolved.origins)
    return resolved


# --- merging ------------------------------------------------------------------------------------


def _set(out: dict, key: Any, value: Any, where: tuple[str, ...], path: Path,
         origins: dict[tuple[str, ...], Path]) -> None:
    """`out[key] = value` (None removes it), recording `path` as its origin, and forgetting
    the origins of whatever it replaced."""
    loc = (*where, str(key))
    for k in [k for k in origins if k[:len(loc)] == loc]:
        del origins[k]
    origins[loc] = path
    if value is None:
        out.pop(key, None)
    else:
        out[key] = value


def _merge_flat(out: dict, over: dict, where: tuple[str, ...], path: Path, origins: dict,
                exclusive: tuple[str, ...] = ()) -> None:
    """Key by key, each value replaced whole; giving one of `exclusive` drops the others."""
    if any(over.get(k) is not None for k in exclusive):
        for k in exclusive:
            if k not in over and k in out:
                _set(out, k, None, where, path, origins)
    for k, v in over.items():
        _set(out, k, v, where, path, origins)


def _merge_into(out: dict, key: str, over: Any, where: tuple[str, ...], path: Path, origins: dict,
                merge) -> None:
    """Merge `over` into `out[key]` with `merge` when both are mappings, else replace."""
    if isinstance(over, dict) and isinstance(out.get(key), dict):
        inner = dict(out[key])
        merge(inner, over, (*where, key), path, origins)
        out[key] = inner
    else:
        _set(out, key, over, where, path, origins)


def _merge_top(out: dict, over: dict, path: Path, origins: dict) -> None:

    for k, v in over.items():
        if k == EXTENDS:
            continue
        if k == "source":
            _merge_into(out, k, v, (), path, origins,
                        lambda o, v2, w, p, og: _merge_flat(o, v2, w, p, og, CONNECTION))
        elif k == "checks":
            _merge_into(out, k, v, (), path, origins, _merge_flat)
        elif k == "files":  # one base: a unit's replaces the template's
            _merge_into(out, k, v, (), path, origins,
                        lambda o, v2, w, p, og: _merge_flat(o, v2, w, p, og, FILE_BASES))
        elif k == "datasets" and isinstance(v, dict):
            v = {tx_key(tx): ds for tx, ds in v.items()}
            _merge_into(out, k, v, (), path, origins, _merge_datasets)
        else:
            _set(out, k, v, (), path, origins)


def _merge_datasets(out: dict, over: dict, where: tuple[str, ...], path: Path, origins: dict) -> None:
    for tx, ds in over.items():
        _merge_into(out, tx, ds, where, path, origins, _merge_dataset)


def _merge_dataset(out: dict, over: dict, where: tuple[str, ...], path: Path, origins: dict) -> None:
    if any(over.get(k) is not None for k in TABLE_OR_QUERY):
        for k in TABLE_OR_QUERY:
            if k not in over and k in out:
                _set(out, k, None, where, path, origins)
    for k, v in over.items():
        if k == "fields":  # field by field, each rule replaced whole
            _merge_into(out, k, v, where, path, origins, _merge_flat)
        elif k == "source":
            _merge_into(out, k, v, where, path, origins,
                        lambda o, v2, w, p, og: _merge_flat(o, v2, w, p, og, CONNECTION))
        elif k == "checks":
            _merge_into(out, k, v, where, path, origins, _merge_flat)
        else:
            _set(out, k, v, where, path, origins)


# --- finding the units of a template -------------------------------------------------------------


def is_template(raw: Any) -> bool:
    """A file without `unit:` is a template (it lives in systems/, which discovery skips)."""
    return isinstance(raw, dict) and "unit" not in raw


def templates_of(path: Path, root: Path | None = None) -> list[Path]:
    """The templates a mapping file extends, nearest first, as far as they can be read: a unit
    whose template is broken still names it (for `etl check TEMPLATE`)."""

    root = Path(os.path.normpath(root or path.parent))
    out: list[Path] = []
    current = path
    seen = {Path(os.path.normpath(path))}
    for _ in range(MAX_DEPTH + 1):
        try:
            raw = parse_yaml(current, read_mapping_file(current))
            if not isinstance(raw, dict) or EXTENDS not in raw:
                return out
            current = template_path(root, raw[EXTENDS], current)
        except MappingError:
            return out
        if current in seen:
            return out
        seen.add(current)
        out.append(current)
    return out


def template_root(path: Path, mappings_dir: Path | None = None) -> Path | None:
    """The mappings folder of `path` when it is a template (a file without `unit:`, or one
    that does not parse but that a unit extends), else None. Templates live in a folder of the
    mappings folder (mappings/systems/), so that is the default."""

    if not path.is_file():
        return None
    root = Path(os.path.normpath(mappings_dir or path.parent.parent))
    try:
        raw = parse_yaml(path, read_mapping_file(path))
    except MappingError:
        return root if users(path, root) else None
    return root if is_template(raw) else None


def users(template: Path, root: Path) -> list[Path]:
    """The unit files of `root` that extend `template`, directly or through a chain."""

    target = Path(os.path.normpath(template))
    return [p for p in discover(root) if target in templates_of(p, root)]


PLACEHOLDER_SOURCE = {"url_env": "ETL_TEMPLATE_CHECK_URL"}


def standalone_problems(template: Path, root: Path) -> list[str]:
    """A template no unit extends, validated as a unit with a stand-in unit (and source, when
    it has none) would be."""
    from stdnum.cn import uscc


    try:
        layer = read_layer(template, read_mapping_file(template))
        if found := connection_problems(layer) + per_unit_problems(layer):
            return found
        resolved = resolve(template, layer.data, layer.raw, root)
    except MappingError as e:
        return e.problems
    base = "91320000MA0000000"
    raw = {"unit": {"orgNo": base + uscc.calc_check_digit(base), "comName": "(template check)"},
           **resolved.raw}
    source = raw.get("source")
    if source is None or (isinstance(source, dict) and not any(source.get(k) for k in CONNECTION)):
        raw["source"] = {**PLACEHOLDER_SOURCE, **(source or {})}  # the units give the connection
    if "files" not in raw and any(st.key.startswith("files.") for st in settings_of(resolved)):
        raw["files"] = {"base_env": "ETL_TEMPLATE_CHECK_FILES"}  # each unit gives its base
    own = own_source_datasets(raw)
    if own:  # datasets in a database of their own: each unit names that connection too
        raw["datasets"] = {tx: ({**ds, "source": {**PLACEHOLDER_SOURCE, **ds["source"]}}
                                if tx_key(tx) in own else ds) for tx, ds in raw["datasets"].items()}
    return resolved.problems(problems_of(raw)).problems


def field_origins(m) -> dict[tuple[str, str], str]:
    """{(txCode, field): the template (path in the mappings folder) or "unit"} for a unit that
    extends: which file each field's rule came from, for the coverage table."""

    data = read_mapping_file(m.path)
    layer = read_layer(m.path, data)
    resolved = resolve(m.path, data, layer.raw)
    out = {}
    for tx, ds in m.datasets.items():
        for name in ds.fields:
            path = resolved.origin(("datasets", tx, "fields", name))
            out[(tx, name)] = "unit" if path == m.path else relative(resolved.root, path)
    return out


def source_origins(m) -> dict[str, tuple[str, str, str]]:
    """{txCode: (where it reads from, the key naming that connection, the file holding the
    key)}, e.g. ("env A_URL", "datasets.07.source.url_env", "mappings/a.yaml"): `etl check`
    shows that a unit's rows come from connections its own file names."""
    resolved = None
    if m.templates:
        data = read_mapping_file(m.path)
        resolved = resolve(m.path, data, read_layer(m.path, data).raw)
    out = {}
    for tx, ds in m.datasets.items():
        spec = ds.source or m.model.source
        where = ("datasets", tx, "source") if ds.source else ("source",)
        loc = (*where, next(k for k in CONNECTION if getattr(spec, k)))
        out[tx] = (spec.describe(), ".".join(loc),
                   display(resolved.origin(loc) if resolved else m.path))
    return out


def resolved_yaml(m) -> str:
    """A validated mapping as the YAML it resolves to, its source URLs masked (`etl check
    --resolved`): what a unit that extends a template really maps, and per dataset the key
    and file its connection comes from (as comments)."""
    import yaml

    from etl.common.masking import mask_url

    raw = m.model.model_dump(mode="json", exclude_defaults=True)
    for spec in [raw.get("source"), *(ds.get("source") for ds in raw.get("datasets", {}).values())]:
        if isinstance(spec, dict) and spec.get("url"):
            spec["url"] = mask_url(spec["url"])
    head = f"# {m.path} resolved" + (f" (extends {' -> '.join(t for t, _ in m.templates)})"
                                     if m.templates else "")
    reads = ["".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}"  # one comment line each
                     for ch in f"# datasets.{tx} reads from {what}: {key} in {file}")
             for tx, (what, key, file) in source_origins(m).items()]
    return "\n".join([head, *reads]) + "\n" + yaml.safe_dump(raw, allow_unicode=True,
                                                              sort_keys=False, width=100)


def raw_unit(path: Path) -> tuple[str, str, str]:
    """An invalid file's orgNo, comName and extends as written, when they are text (for the
    summary table); read within a mapping's bounds."""

    try:
        raw = parse_yaml(path, read_mapping_file(path))
    except MappingError:
        return "", "", ""
    raw = raw if isinstance(raw, dict) else {}
    unit = raw.get("unit") if isinstance(raw.get("unit"), dict) else {}
    text = [unit.get("orgNo"), unit.get("comName"), raw.get(EXTENDS)]
    return tuple(short(v) if isinstance(v, str) else "" for v in text)  # type: ignore[return-value]
