"""Loading mappings: a file read, merged with the templates it extends, validated into a
`Mapping`; remembered by content hash for planners that read thousands; handed to another
process as JSON."""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from etl.common import private
from etl.common.errors import MappingError
from etl.mapping import templates as tpl
from etl.mapping.model import Mapping, MappingModel, problems_of
from etl.mapping.reading import display, parse_yaml, read_mapping_file

def load_mapping(path: str | Path) -> Mapping:
    """Parse and validate one mapping file; raise MappingError listing every problem."""
    path = Path(path)
    return parse_mapping(path, read_mapping_file(path))


def parse_mapping(path: Path, data: bytes) -> Mapping:
    """Validate a mapping file's bytes (read once by the caller); `path` names it. A file that
    says `extends:` is validated merged with its templates (etl.mapping.templates)."""
    shown = display(path)
    raw = parse_yaml(path, data)
    if not isinstance(raw, dict):
        raise MappingError([f"{shown}: expected keys unit:, source:, datasets:"])
    if "extends" in raw:
        resolved = tpl.resolve(path, data, raw)
        if problems := problems_of(resolved.raw):
            raise resolved.problems(problems)
        return Mapping(path, MappingModel.model_validate(resolved.raw), resolved.digest,
                       templates=tuple(resolved.templates))
    problems = problems_of(raw)
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
        raise MappingError([f"{display(path)}: changed since it was handed on: rerun"])
    return m


_CODE = ("etl.mapping.model", "etl.mapping.reading", "etl.mapping.loading", "etl.mapping.templates",
         "etl.mapping.sql_guard", "etl.standard.tables", "etl.standard.clean",
         "etl.standard.divisions", "etl.standard.checks", "etl.standard.validate")


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


@dataclass(frozen=True)
class Outline:
    """What planning needs of a valid mapping file, read from the cache without validating the
    model again: a province's planner reads thousands of files every few minutes, and most of
    them have nothing due. `mapping()` validates the model when a unit is actually planned."""

    path: Path
    digest: str                              # the file's sha256 (with templates: the chain's)
    org_no: str
    frequencies: dict[str, str | None]       # txCode -> the mapping's `frequency:` (None: 5.4's)
    body: bytes | None = field(repr=False)   # the model as JSON, exact (b"" when it is not;
    templates: tuple[tuple[str, str], ...] = ()  # None: in the cache entry `entry`, unread)
    validated: Mapping | None = field(default=None, repr=False, compare=False)
    entry: str = field(default="", repr=False, compare=False)
    cache_dir: Path | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, m: Mapping) -> Outline:
        return cls(m.path, m.digest, m.unit.orgNo,
                   {tx: spec.frequency for tx, spec in m.datasets.items()},
                   m.exact_json.encode("utf-8"), m.templates, m)

    def _full(self) -> Outline:
        """This outline with its body: one known by the folder index reads its cache entry now,
        and, should the entry be gone or damaged, the file itself (read, hashed, validated)."""
        if self.body is not None:
            return self
        try:
            hit = _read_entry(self.path, b"", self.digest, _read(self.entry))
        except (OSError, ValueError, KeyError, TypeError):
            hit = None
        if hit is None or hit.digest != self.digest or hit.body is None:
            return load_outline_cached(self.path, self.cache_dir)
        return hit

    @property
    def model_json(self) -> str:
        body = self._full().body
        return body.decode("utf-8") if body else ""

    def mapping(self) -> Mapping:
        """The validated mapping (validated now from the cached JSON, unless it already was)."""
        if self.validated is not None:
            return self.validated
        full = self._full()
        if full is not self:
            return full.mapping()
        try:
            model = MappingModel.model_validate_json(self.body or b"")
        except (ValidationError, ValueError):  # not what was cached: validate the file itself
            return load_mapping(self.path)
        return Mapping(self.path, model, self.digest, self.model_json, self.templates)

    def to_dict(self) -> dict[str, Any]:
        """`mapping_to_dict(self.mapping())`, without validating the cached model again."""
        full = self._full()
        if not full.body:
            return mapping_to_dict(full.mapping())
        return {"path": str(full.path), "digest": full.digest, "model": full.model_json}


def load_mapping_cached(path: str | Path, cache_dir: Path | None) -> Mapping:
    """`load_mapping`, remembering valid files by content (and code) hash in `cache_dir`:
    planning a province's run reads thousands of files that rarely change. A file is read once;
    an invalid one is never cached, so its problems are always reported afresh."""
    if cache_dir is None:
        return load_mapping(path)
    return load_outline_cached(path, cache_dir).mapping()


def load_outline_cached(path: str | Path, cache_dir: Path | None) -> Outline:
    """A valid mapping file's `Outline`: from the cache when its entry (keyed by the file's and
    the validating code's hash) is there and intact, else validated and cached. Raises
    MappingError for an invalid file, which is never cached. Planning calls it for every file
    of the folder on every tick, so a hit reads two small files and hashes one, nothing more."""
    path = path if isinstance(path, Path) else Path(path)
    if cache_dir is None:
        return Outline.of(load_mapping(path))
    data = read_mapping_file(path)
    own = hashlib.sha256(data).hexdigest()
    name = hashlib.sha256(_code_digest() + own.encode("ascii")).hexdigest() + ".json"
    try:
        hit = _read_entry(path, data, own, _read(os.path.join(cache_dir, name)))
        if hit is not None:
            return replace(hit, entry=os.path.join(cache_dir, name), cache_dir=cache_dir)
    except (OSError, ValueError, KeyError, TypeError, MappingError):
        pass
    m = parse_mapping(path, data)
    dumped = m.model.model_dump_json()
    if MappingModel.model_validate_json(dumped) != m.model:
        return Outline.of(m)  # not exact as JSON: never cached, handed on as its text
    outline = replace(Outline.of(Mapping(m.path, m.model, m.digest, dumped, m.templates)),
                      entry=os.path.join(cache_dir, name), cache_dir=cache_dir)
    try:
        private.private_dir(cache_dir)  # a mapping names a unit's sources and columns
        entry = cache_dir / name
        tmp = entry.with_name(f"{name}.{os.getpid()}.tmp")
        with private.create(tmp, exclusive=False) as f:
            f.write(_entry_bytes(outline))
        tmp.replace(entry)
    except OSError:
        pass  # a cache that cannot be written only costs time
    return outline


def _read(name: str) -> bytes:
    """A cache entry's bytes: os calls, not pathlib or a file object (read by the 10,000)."""
    fd = os.open(name, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


CHAIN_MARK = "#templates "
OUTLINE_MARK = "#outline "


def _entry_bytes(o: Outline) -> bytes:
    """A cache entry: the templates it was resolved with (checked on every hit), the outline
    (orgNo, frequencies, the body's length and CRC-32: an entry cut short or damaged is a miss),
    then the model JSON."""
    head = ""
    if o.templates:
        head += f"{CHAIN_MARK}{json.dumps([list(t) for t in o.templates])}\n"
    head += OUTLINE_MARK + json.dumps({"orgNo": o.org_no, "frequency": o.frequencies,
                                       "bytes": len(o.body), "crc32": zlib.crc32(o.body)},
                                      ensure_ascii=False) + "\n"
    return head.encode("utf-8") + o.body


def _read_entry(path: Path, data: bytes, own: str, entry: bytes) -> Outline | None:
    """The outline a cache entry holds, or None when it is not usable (written by other code,
    cut short, damaged, or one of its templates changed). `own` is the sha256 of `data`."""
    templates: list[tuple[str, str]] = []
    if entry.startswith(CHAIN_MARK.encode()):
        head, _, entry = entry.partition(b"\n")
        templates = [(str(rel), str(sha)) for rel, sha in json.loads(head[len(CHAIN_MARK):])]
    if not entry.startswith(OUTLINE_MARK.encode()):
        return None
    head, _, body = entry.partition(b"\n")
    outline = json.loads(head[len(OUTLINE_MARK):])
    if len(body) != outline["bytes"] or zlib.crc32(body) != outline["crc32"]:
        return None
    digest = _chain_digest(path, data, templates) if templates else own
    if digest is None:
        return None
    return Outline(path, digest, str(outline["orgNo"]), dict(outline["frequency"]), body,
                   tuple(templates))


def _chain_digest(path: Path, data: bytes, templates: list[tuple[str, str]]) -> str | None:
    """The unit's digest when each template of a cached chain is still as it was, else None
    (a changed template misses the cache)."""
    for rel, sha in templates:
        if hashlib.sha256(read_mapping_file(path.parent / rel)).hexdigest() != sha:
            return None
    return tpl.chain_digest(data, templates)


# --- a folder's index: an idle tick reads no mapping file ----------------------------------------

#: A file whose status changed this recently before the index was taken may change again within
#: the file system's timestamp granularity without its status changing: it is read again.
RACY_SECONDS = 2.0
INDEX_VERSION = 2


def load_outlines(paths: list[Path], cache_dir: Path | None, *,
                  complete: bool = True) -> dict[Path, Outline | MappingError]:
    """`load_outline_cached` for every file of a planned folder, a valid file unchanged since
    the last call (same inode, size, mtime and ctime, and not changed within RACY_SECONDS of
    that call: git's rule) taken from the folder's index in `cache_dir` without reading it.
    Every other file (new, changed, invalid, extending templates) is read as
    `load_outline_cached` reads it, and the index is written again when it changed (only when
    `paths` are every file of their folders, `complete`: a run of a few units leaves it be)."""
    out: dict[Path, Outline | MappingError] = {}
    if cache_dir is None:
        for p in paths:
            try:
                out[p] = load_outline_cached(p, None)
            except MappingError as e:
                out[p] = e
        return out
    by_folder: dict[str, list[Path]] = {}
    for p in paths:
        by_folder.setdefault(os.path.dirname(p), []).append(p)
    for folder, files in by_folder.items():
        _index_folder(Path(folder), files, cache_dir, out, complete)
    return out


def _packed(frequencies: dict[str, str | None]) -> str:
    """A mapping's datasets and their `frequency:` overrides as one string ("06 07 09=hourly"):
    the index holds 10,000 and is read on every tick."""
    return " ".join(tx if f is None else f"{tx}={f}" for tx, f in frequencies.items())


def _unpacked(packed: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in packed.split():
        tx, _, f = item.partition("=")
        out[tx] = f or None
    return out


def _index_path(cache_dir: Path, folder: Path) -> str:
    key = hashlib.sha256(os.path.abspath(folder).encode("utf-8") + _code_digest()).hexdigest()
    return os.path.join(cache_dir, f"folder-{key[:32]}.index")


def _index_folder(folder: Path, paths: list[Path], cache_dir: Path,
                  out: dict[Path, Outline | MappingError], complete: bool) -> None:
    index_path = _index_path(cache_dir, folder)
    try:
        index = json.loads(_read(index_path))
        if index.get("version") != INDEX_VERSION:
            index = {}
    except (OSError, ValueError):
        index = {}
    known: dict[str, list] = index.get("files") or {}
    trusted_before = float(index.get("taken") or 0) - RACY_SECONDS
    taken = time.time()
    files: dict[str, list] = {}
    racy = False  # a file read again only for being recent: a newer index trusts it next time
    for path in paths:
        name = path.name
        try:
            st = os.stat(path)
        except OSError:
            st = None
        status = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns] if st else None
        row = known.get(name)
        if (row is not None and status is not None and row[:4] == status
                and max(st.st_mtime, st.st_ctime) < trusted_before):
            digest, org_no, frequencies, entry = row[4:8]
            out[path] = Outline(path, digest, org_no, _unpacked(frequencies), None, (),
                                entry=os.path.join(cache_dir, entry), cache_dir=cache_dir)
            files[name] = row
            continue
        racy = racy or (row is not None and row[:4] == status)
        try:
            o = load_outline_cached(path, cache_dir)
        except MappingError as e:
            out[path] = e
            continue
        out[path] = o
        if status is not None and not o.templates and o.entry and o.body:
            files[name] = [*status, o.digest, o.org_no, _packed(o.frequencies),
                           os.path.basename(o.entry)]
    if complete and (files != known or racy or not index):
        try:
            private.private_dir(cache_dir)
            tmp = f"{index_path}.{os.getpid()}.tmp"
            with private.create(tmp, exclusive=False) as f:
                f.write(json.dumps({"version": INDEX_VERSION, "folder": os.path.abspath(folder),
                                    "taken": taken, "files": files},
                                   ensure_ascii=False).encode("utf-8"))
            os.replace(tmp, index_path)
        except OSError:
            pass  # an index that cannot be written only costs time


def load_each(paths: list[str | Path]) -> tuple[list[Mapping], dict[Path, list[str]]]:
    """Every valid file, and each invalid one with its problems: a run over a whole folder goes
    on past a broken file, as Airflow's planning does. Two files of one orgNo are both invalid."""
    mappings: list[Mapping] = []
    invalid: dict[Path, list[str]] = {}
    for p in paths:
        try:
            mappings.append(load_mapping(p))
        except MappingError as e:
            invalid[Path(p)] = e.problems
    names = [m.unit.orgNo for m in mappings]
    for m in [m for m in mappings if names.count(m.unit.orgNo) > 1]:
        others = ", ".join(display(o.path) for o in mappings if o.unit.orgNo == m.unit.orgNo and o is not m)
        invalid[m.path] = [f"{display(m.path)}: orgNo {m.unit.orgNo} is also the unit of {others}: "
                           f"keep one file per unit"]
    return [m for m in mappings if m.path not in invalid], invalid


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
        raise MappingError([f"{', '.join(display(m.path) for m in mappings if m.unit.orgNo == d)}: "
                            f"two mappings for orgNo {d}: keep one file per unit" for d in dupes])
    return mappings
