"""Staging: where the tasks of one unit (extract -> validate -> load) hand data to each other.

Under the CeleryExecutor the tasks of one unit run on different machines, so nothing staged
may live on one worker's disk. A `Store` is a flat map from keys to bytes, and there are two:

* `PathStore`: a folder or any fsspec URL through Airflow's `ObjectStoragePath` (`s3://`,
  `gs://`, ... with an Airflow connection for credentials; a local or shared folder by default).
* `TargetStore`: the table `ingest_stage` in the target database, which every worker reaches
  already: no bucket to provision. Objects are stored in parts of at most 4 MiB (MariaDB's
  default `max_allowed_packet` is 16 MiB); on PostgreSQL the table is UNLOGGED (scratch data).

`open_store()` picks one from a spec: an argument, else `ETL_STAGING_URL`, else
`ETL_STAGING_DIR` (a folder), else `var/staging` under the project folder; `"target"` means the
target database, a URL with a scheme an `ObjectStoragePath` (connection `ETL_STAGING_CONN_ID`),
anything else a folder.

Every store does the same four things: `put` (atomic: a reader sees the old object, the new
one or none, never half of one), `get` (`StagingMissing` when absent), `keys(prefix)` and
`delete(prefix)`. `describe()` names the store for logs without a password.

Keys are built by `key(...)` from parts that are safe by construction: `token(text)` turns any
text (a Chinese mapping name, a run id such as `manual__2025-03-01T16:00:00+00:00`, `..`) into
a readable ASCII prefix plus a digest of the whole text, so two texts never share a part and
no part can climb out of the store's root.

Frames are Parquet (`frame_bytes`, `frame_from_bytes`, and `put_frame`/`get_frame` on a store).
Source columns often mix Python types (text dates beside YYYYMMDD integers, Decimals of varying
scale); Arrow would refuse or coerce them, changing what cleaning sees and so the record
hashes. Such columns are stored as typed JSON text, one explicit tag per supported type, so
values and their Python types come back identical. There is no pickle: an unknown tag is an
error naming the column, never code to run. A frame may carry `meta` (the unit's orgNo, the
mapping's hash); `expect` refuses, on reading, a frame staged for anything else.

    store = open_store()                      # or open_store("target", engine_factory=...)
    unit = key(token(dag_id), token(run_id), token(mapping_name), tx_code) + "/"
    store.put_frame(unit + "raw-00000.parquet", frame, {"orgNo": org_no})
    frame = store.get_frame(unit + "raw-00000.parquet", expect={"orgNo": org_no})
    store.put_json(unit + "audit.json", rows)
    store.delete(unit)                        # after the load; empty folders are pruned
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import secrets
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from etl.common import private, settings
from etl.common.errors import ConfigError, TargetError
from etl.common.storage import filesystem, object_path, token

if TYPE_CHECKING:
    import pandas as pd
    from fsspec import AbstractFileSystem
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "PART_BYTES", "PathStore", "StagingMissing", "Store", "TargetStore", "check_key",
    "check_prefix", "frame_bytes", "frame_from_bytes", "key", "open_store", "token",
]

#: Largest piece of an object in one `ingest_stage` row.
PART_BYTES = 4 * 1024 * 1024
TARGET = "target"


class StagingMissing(ConfigError):
    """A staged object is not there: cleaned up after a load, or staged into another store.
    Retrying the same task cannot bring it back, hence terminal."""

    def __init__(self, key: str, where: str):
        self.key = key
        super().__init__(
            f"staged object {key} is not in {where}: it was removed after a load, or staged "
            f"into another store (check ETL_STAGING_URL / ETL_STAGING_DIR on every worker); "
            f"clear this unit's extract task too, so it stages afresh")


# --- keys --------------------------------------------------------------------------------------

_PART = re.compile(r"[A-Za-z0-9_-]{1,200}")
_LAST = re.compile(r"[A-Za-z0-9_-]{1,200}(?:\.[A-Za-z0-9]{1,16})?")
_TAIL = re.compile(r"[A-Za-z0-9_-]{0,200}(?:\.[A-Za-z0-9]{0,16})?")
MAX_KEY = 400  # ingest_stage.stageKey


def key(*parts: str) -> str:
    """Join key parts with `/`. Refuses anything that is not plainly one name: empty, `.`,
    `..`, separators, NUL, characters outside [A-Za-z0-9_-] (pass such text through `token`).
    Only the last part may carry one extension (`raw-00001.parquet`, `plan.json`)."""
    if not parts:
        raise ValueError("a staging key needs at least one part")
    for n, part in enumerate(parts):
        pattern = _LAST if n == len(parts) - 1 else _PART
        if not isinstance(part, str) or not pattern.fullmatch(part):
            raise ValueError(f"staging key part {part!r} (in {parts!r}): use [A-Za-z0-9_-] only, "
                             f"one extension on the last part; pass other text through token()")
    joined = "/".join(parts)
    if len(joined) > MAX_KEY:
        raise ValueError(f"staging key {joined[:60]}... is {len(joined)} characters, at most {MAX_KEY}")
    return joined


def check_key(text: str) -> str:
    """A whole key as `key()` would have built it (stores check what they are handed)."""
    if not isinstance(text, str):
        raise ValueError(f"staging key {text!r} is not a string")
    return key(*text.split("/"))


def check_prefix(prefix: str) -> str:
    """A key prefix: `""` (everything), whole parts ending in `/` (`dag/run/`), or whole parts
    and the start of a last one (`dag/run/raw-`)."""
    if not isinstance(prefix, str):
        raise ValueError(f"staging prefix {prefix!r} is not a string")
    folder, _, tail = prefix.rpartition("/")
    if folder:
        key(*folder.split("/"), "x")
    if not _TAIL.fullmatch(tail) or len(prefix) > MAX_KEY:
        raise ValueError(f"staging prefix {prefix!r}: whole key parts, then the start of one")
    return prefix


# --- stores ------------------------------------------------------------------------------------


class Store(ABC):
    """A flat map from keys (see `key`) to bytes, shared by every worker of a deployment."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing what was there, atomically."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object under `key`; `StagingMissing` if there is none."""

    @abstractmethod
    def keys(self, prefix: str = "") -> set[str]:
        """Every key starting with `prefix` (a plain string prefix, case-sensitive)."""

    @abstractmethod
    def delete(self, prefix: str) -> None:
        """Remove every key starting with `prefix` (not empty); nothing there is fine."""

    @abstractmethod
    def describe(self) -> str:
        """Where this store is, for logs and messages; never a password."""

    def close(self) -> None:
        """Release what the store holds (connections); it is not used afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        return self.describe()

    def put_frame(self, key: str, frame: pd.DataFrame, meta: dict[str, str] | None = None) -> None:
        self.put(key, frame_bytes(frame, meta, where=f"{self.describe()} {key}"))

    def get_frame(self, key: str, *, expect: dict[str, str] | None = None) -> pd.DataFrame:
        return frame_from_bytes(self.get(key), expect=expect, where=f"{self.describe()} {key}")

    def put_json(self, key: str, value: Any) -> None:
        self.put(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())

    def get_json(self, key: str) -> Any:
        data = self.get(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ConfigError(f"staged object {key} in {self.describe()} is not JSON ({exc}): "
                              f"clear this unit's extract task so it stages afresh") from exc


_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss",
                            "memory"})


class PathStore(Store):
    """Objects as files under a root: a local or shared folder, or any fsspec URL through
    Airflow's `ObjectStoragePath` (its connection supplies credentials).

    A key is a relative path under the root, and must stay under it once resolved (symbolic
    links included), whatever `key()` let through. Local writes go to a hidden temporary name
    in the same folder and are renamed into place; object stores (S3, GCS, Azure, memory)
    publish an object whole on their own, other fsspec file systems get the same temporary
    name and rename. `delete` prunes the folders it empties on local roots (object stores have
    none). A key is either an object or a folder of others, never both."""

    def __init__(self, root: str | os.PathLike[str] | Any, *, conn_id: str | None = None):
        self._fs: AbstractFileSystem | None = None
        self._conn_id: str | None = None
        if isinstance(root, (str, os.PathLike)) and not _has_scheme(os.fspath(root)):
            self._local: str | None = os.path.realpath(os.fspath(root))
            self._base = self._local
            private.tighten(self._local)  # staged rows hold personal data: 0700, files 0600
            return
        if isinstance(root, (str, os.PathLike)):
            root = object_path(os.fspath(root), conn_id)
        fs = filesystem(root)
        self._protocol = root.protocol or "file"
        self._conn_id = root.conn_id
        from fsspec.implementations.local import LocalFileSystem

        if isinstance(fs, LocalFileSystem):
            self._local = os.path.realpath(root.path)
            self._base = self._local
            private.tighten(self._local)
        else:
            self._local = None
            self._fs = fs
            self._base = root.path.rstrip("/")

    def _resolve(self, relative: str) -> str:
        """`relative` under the root, refused if it resolves outside (a symbolic link)."""
        if self._local is not None:
            resolved = os.path.realpath(os.path.join(self._local, relative))
            if not resolved.startswith(self._local + os.sep):
                raise ConfigError(f"staging key {relative} resolves to {resolved}, outside "
                                  f"{self.describe()} (a symbolic link?): remove the link")
            return resolved
        normal = posixpath.normpath(posixpath.join(self._base, relative))
        if not normal.startswith(self._base + "/"):
            raise ConfigError(f"staging key {relative} resolves outside {self.describe()}")
        return normal

    def _path(self, key: str) -> str:
        return self._resolve(check_key(key))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if self._fs is not None:
            if self._protocol in _OBJECT_STORES:
                self._fs.pipe_file(path, bytes(data))
                return
            folder, name = posixpath.split(path)
            self._fs.makedirs(folder, exist_ok=True)
            tmp = posixpath.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
            self._fs.pipe_file(tmp, bytes(data))
            self._fs.mv(tmp, path)
            return
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            for attempt in range(3):  # a concurrent delete() may prune the folder just made
                try:
                    private.makedirs(folder)
                    with private.create(tmp) as f:
                        f.write(data)
                    break
                except FileNotFoundError:
                    if attempt == 2:
                        raise
            os.replace(tmp, path)
        except (NotADirectoryError, FileExistsError, IsADirectoryError) as exc:
            raise ConfigError(f"staging key {key} clashes with {self.describe()}: a key is an "
                              f"object or a folder of objects, never both") from exc
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            if self._fs is not None:
                return self._fs.cat_file(path)
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise StagingMissing(key, self.describe()) from None

    def _matching(self, prefix: str) -> tuple[str, list[str]]:
        """The folder a prefix names and its entries (names) that start with the prefix's tail,
        temporary files of matching objects included."""
        folder, _, tail = check_prefix(prefix).rpartition("/")
        path = self._resolve(folder) if folder else self._base
        try:
            if self._fs is not None:
                names = [posixpath.basename(p.rstrip("/"))
                         for p in self._fs.ls(path, detail=False)]
            else:
                names = os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):
            return path, []
        return path, [n for n in names if n.startswith(tail) or n.startswith("." + tail)]

    def keys(self, prefix: str = "") -> set[str]:
        folder, names = self._matching(prefix)
        out: set[str] = set()
        base = len(self._base) + 1
        for name in names:
            if name.startswith("."):
                continue
            path = (posixpath if self._fs is not None else os.path).join(folder, name)
            if self._fs is not None:
                found = self._fs.find(path)
            elif os.path.isdir(path) and not os.path.islink(path):
                found = [os.path.join(d, f) for d, dirs, files in os.walk(path) for f in files]
            else:
                found = [path]
            out.update(p[base:].replace(os.sep, "/") for p in found
                       if not posixpath.basename(p).startswith("."))
        return out

    def delete(self, prefix: str) -> None:
        if not prefix:
            raise ValueError("delete('') would empty the whole staging store: name a prefix")
        folder, names = self._matching(prefix)
        for name in names:
            if self._fs is not None:
                try:
                    self._fs.rm(posixpath.join(folder, name), recursive=True)
                except FileNotFoundError:
                    pass
                continue
            path = os.path.join(folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        if self._local is not None:
            while folder != self._local and folder.startswith(self._local + os.sep):
                try:
                    os.rmdir(folder)
                except OSError:  # not empty (or gone): stop pruning
                    break
                folder = os.path.dirname(folder)

    def describe(self) -> str:
        if self._fs is None:
            return f"staging folder {self._base}"
        via = f" (connection {self._conn_id})" if self._conn_id else ""
        return f"staging {self._protocol}://{self._base.lstrip('/')}{via}"


def _has_scheme(text: str) -> bool:
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


class TargetStore(Store):
    """Objects as rows of `ingest_stage` in the target database, in parts of `part_bytes`.

    `put` replaces all of an object's parts in one transaction, so a reader sees the old object
    or the new one; `keys` and `delete` match prefixes exactly (LIKE wildcards in keys, such as
    `_`, are escaped, and the match is re-checked byte-wise). The table is created by the
    target's migrations (`etl.target.upgrade`)."""

    def __init__(self, engine: Engine, *, part_bytes: int = PART_BYTES,
                 dispose_on_close: bool = False):
        from etl.target import ingest_stage

        if not 0 < part_bytes <= PART_BYTES:
            raise ValueError(f"part_bytes={part_bytes}: between 1 and {PART_BYTES}")
        self.engine = engine
        self.part_bytes = part_bytes
        self._table = ingest_stage
        self._dispose = dispose_on_close

    @contextmanager
    def _transaction(self, what: str) -> Iterator[Connection]:
        import sqlalchemy as sa

        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.IntegrityError) as exc:
            # IntegrityError: two attempts of one task put the same key at the same moment.
            raise TargetError(f"staging {what} in {self.describe()} failed: {exc.orig}; "
                              f"retrying may succeed") from exc

    def _under(self, prefix: str) -> Any:
        import sqlalchemy as sa

        column = self._table.c.stageKey
        if not prefix:
            return sa.true()
        # LIKE finds candidates by the key's index; the comparison makes the match exact where
        # LIKE ignores case (SQLite) whatever the column's collation.
        return sa.and_(column.startswith(prefix, autoescape=True),
                       sa.func.substr(column, 1, len(prefix)) == prefix)

    def put(self, key: str, data: bytes) -> None:
        import sqlalchemy as sa

        key = check_key(key)
        view = memoryview(data)
        now = datetime.now(timezone.utc)
        t = self._table
        with self._transaction(f"put {key}") as conn:
            conn.execute(sa.delete(t).where(t.c.stageKey == key))
            for part, start in enumerate(range(0, max(len(view), 1), self.part_bytes)):
                conn.execute(sa.insert(t).values(stageKey=key, part=part, createdAt=now,
                                                 data=bytes(view[start:start + self.part_bytes])))

    def get(self, key: str) -> bytes:
        import sqlalchemy as sa

        key = check_key(key)
        t = self._table
        with self._transaction(f"get {key}") as conn:
            if conn.dialect.driver == "psycopg":
                # bytea in binary rather than hex text: 5 MiB in 11 instead of 45 ms (measured)
                with conn.connection.driver_connection.cursor(binary=True) as cursor:
                    cursor.execute('SELECT part, data FROM ingest_stage WHERE "stageKey" = %s '
                                   'ORDER BY part', (key,))
                    rows = cursor.fetchall()
            else:
                rows = conn.execute(sa.select(t.c.part, t.c.data).where(t.c.stageKey == key)
                                    .order_by(t.c.part)).all()
        parts = [part for part, _ in rows]
        if not parts:
            raise StagingMissing(key, self.describe())
        if parts != list(range(len(parts))):
            raise ConfigError(f"staged object {key} in {self.describe()} has parts {parts}: "
                              f"clear this unit's extract task so it stages afresh")
        return b"".join(data for _, data in rows)

    def keys(self, prefix: str = "") -> set[str]:
        import sqlalchemy as sa

        check_prefix(prefix)
        t = self._table
        with self._transaction(f"list {prefix or '(all)'}") as conn:
            found = conn.execute(sa.select(t.c.stageKey).where(self._under(prefix), t.c.part == 0))
            return {k for (k,) in found if k.startswith(prefix)}

    def delete(self, prefix: str) -> None:
        import sqlalchemy as sa

        if not prefix:
            raise ValueError("delete('') would empty the whole staging store: name a prefix")
        check_prefix(prefix)
        with self._transaction(f"delete {prefix}") as conn:
            conn.execute(sa.delete(self._table).where(self._under(prefix)))

    def describe(self) -> str:
        from etl.common.masking import mask_url

        return f"staging table ingest_stage in {mask_url(self.engine.url)}"

    def close(self) -> None:
        if self._dispose:
            self.engine.dispose()


def open_store(spec: str | None = None, *,
               engine_factory: Callable[[], Engine] | None = None) -> Store:
    """The store a spec names: `spec`, else `ETL_STAGING_URL`, else the folder
    `ETL_STAGING_DIR`, else `var/staging`. `"target"` is the target database (`engine_factory`
    makes its engine, default `etl.target.connect(etl.target.target_url())`; the store upgrades
    its schema if needed and disposes the engine on `close`); a URL with a scheme (`s3://`,
    `gs://`, `file://`, `memory://`, ...) is an `ObjectStoragePath` with the Airflow connection
    `ETL_STAGING_CONN_ID` if set; anything else is a folder, relative ones under `ETL_HOME` or
    the project root (not the working directory, which differs between workers)."""
    if spec is None:
        spec = settings.text("ETL_STAGING_URL")
        if spec is None:
            return PathStore(settings.path("ETL_STAGING_DIR"))
    if spec.strip().lower() == TARGET:
        from etl import target

        engine = (engine_factory or (lambda: target.connect(target.target_url())))()
        if engine.dialect.name == "sqlite":
            engine.dispose()
            raise ConfigError("ETL_STAGING_URL=target with a SQLite target: a SQLite file has one "
                              "writer, and the load would wait forever for it while reading its "
                              "own stage; stage in a folder (unset ETL_STAGING_URL, or set "
                              "ETL_STAGING_DIR) or use a PostgreSQL or MariaDB target")
        target.ensure_schema(engine)
        return TargetStore(engine, dispose_on_close=True)
    if _has_scheme(spec):
        return PathStore(object_path(spec, settings.text("ETL_STAGING_CONN_ID")))
    return PathStore(settings.path("ETL_STAGING_DIR", spec))


# --- frames ------------------------------------------------------------------------------------

_FORMAT_KEY, _FORMAT = b"etl.staging", b"1"
_META_KEY = b"etl.meta"
_TAGGED_KEY = b"etl.tagged"  # positions of object columns stored as typed JSON text
_OBJECT_KEY = b"etl.object"  # positions of object columns Arrow stores as they are
_ARROW_KEEPS = frozenset({"string", "boolean", "bytes", "date", "empty"})


def frame_bytes(frame: pd.DataFrame, meta: dict[str, str] | None = None, *, where: str = "") -> bytes:
    """A DataFrame as Parquet that `frame_from_bytes` turns back into the same values.

    Object columns holding only str, bool, bytes or date (missing values only as None) go
    through Arrow as they are and come back as object columns; every other object column is
    stored as typed JSON text (see `_tag`). A value of a type not listed there is refused
    with its column's name rather than stored approximately. `meta` lands in the schema
    metadata for `expect` to check."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = dict(meta or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise TypeError(f"staging meta {meta!r}: keys and values are strings")
    data = frame.copy(deep=False)
    tagged: list[int] = []
    native: list[int] = []
    for i in range(data.shape[1]):
        col = data.iloc[:, i]
        if col.dtype != object:
            continue
        if _arrow_keeps(col):
            native.append(i)
            continue
        name = data.columns[i]
        cells = [None if v is None else _dumps(_tag(v, name, where)) for v in col.to_numpy()]
        data.isetitem(i, pd.Series(cells, index=data.index, dtype=object))
        tagged.append(i)
    table = pa.Table.from_pandas(data, preserve_index=None)
    schema_meta = dict(table.schema.metadata or {})
    schema_meta.update({_FORMAT_KEY: _FORMAT, _META_KEY: _dumps(meta).encode(),
                        _TAGGED_KEY: _dumps(tagged).encode(), _OBJECT_KEY: _dumps(native).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(schema_meta), sink)
    return sink.getvalue().to_pybytes()


def frame_from_bytes(data: bytes, *, expect: dict[str, str] | None = None,
                     where: str = "") -> pd.DataFrame:
    """The DataFrame `frame_bytes` stored. `expect` (e.g. the unit's orgNo and the mapping's
    hash) must equal the stored meta: an object staged for another unit or another version
    of the mapping is never loaded. Nothing read here is executed: tags are looked up in a
    fixed table and anything else is an error."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    label = where or "staged frame"
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{label} is not readable Parquet ({exc}): clear this unit's extract "
                          f"task so it stages afresh") from exc
    md = table.schema.metadata or {}
    if md.get(_FORMAT_KEY) != _FORMAT:
        raise ConfigError(f"{label} was not written by etl.orchestration.staging (format "
                          f"{md.get(_FORMAT_KEY)!r}): clear this unit's extract task")
    try:
        meta = json.loads(md.get(_META_KEY, b"{}"))
        tagged = json.loads(md[_TAGGED_KEY])
        native = json.loads(md[_OBJECT_KEY])
        positions = range(table.num_columns)
        if not (isinstance(meta, dict) and all(type(i) is int and i in positions
                                               for i in (*tagged, *native))):
            raise ValueError("column positions out of range")
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{label}: damaged staging metadata ({exc}): clear this unit's "
                          f"extract task") from exc
    for name, wanted in (expect or {}).items():
        if meta.get(name) != wanted:
            raise ConfigError(f"{label} was staged for {name} {meta.get(name)!r}, not {wanted!r}: "
                              f"it is never loaded for another unit or mapping version; clear "
                              f"this unit's extract task so it stages afresh")
    frame = table.to_pandas()
    for i in native:
        frame.isetitem(i, pd.Series(table.column(i).to_pylist(), index=frame.index, dtype=object))
    for i in tagged:
        name = frame.columns[i]
        column = table.column(i)
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            raise ConfigError(f"{label} column {name!r}: tagged values are not text")
        values = [None if cell is None else _untag(_loads(cell, name, label), name, label)
                  for cell in column.to_pylist()]
        frame.isetitem(i, pd.Series(values, index=frame.index, dtype=object))
    return frame


def _arrow_keeps(col: pd.Series) -> bool:
    """Whether Arrow stores this object column so that its values and types come back: one of
    str, bool, bytes, date (exactly: `infer_dtype` calls datetimes dates) with None as the only
    missing value (NaN, NaT and NA are tagged, so they come back as themselves)."""
    import pandas as pd

    kind = pd.api.types.infer_dtype(col, skipna=True)
    if kind not in _ARROW_KEEPS:
        return False
    values = col.to_numpy()
    missing = col.isna().to_numpy()
    if missing.any() and any(v is not None for v in values[missing]):
        return False
    if kind == "date":
        return all(type(v) is date for v in values[~missing])
    return True


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(cell: str, column: Any, where: str) -> Any:
    try:
        return json.loads(cell)
    except ValueError as exc:
        raise ConfigError(f"{where} column {column!r}: a cell is not tagged JSON ({exc})") from exc


# Tags: ["b", bool] ["i", "123"] ["f", "0.1"] ["s", str] ["d", "0.100"] ["da", "2025-03-01"]
# ["dt", ISO, fold] ["dtz", ISO with offset, fold, zone] ["t", ISO (offset kept), fold]
# ["td", days, s, us]
# ["x", hex] ["u", UUID] ["ts", count, unit, zone|null] ["ptd", count, unit] ["nat"] ["na"]
# ["l", [...]] ["tu", [...]] ["m", [[k, v], ...]]; zones: ["z", IANA key] ["o", offset us]
# ["pytz", name]. Inside lists, tuples and dicts None is JSON null.


def _unsupported(value: Any, column: Any, where: str, why: str = "") -> ConfigError:
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    return ConfigError(
        f"{where + ' ' if where else ''}column {column!r}: a {kind} value{why} cannot be staged "
        f"exactly (staging keeps str, int, float, bool, Decimal, date, time, datetime, timedelta, "
        f"bytes, UUID, list, tuple, dict, pandas Timestamp/Timedelta/NaT/NA, numpy scalars): "
        f"convert it in the mapping's query")


def _zone(tz: Any, value: Any, column: Any, where: str) -> list[Any]:
    if type(tz) is ZoneInfo and tz.key:
        return ["z", tz.key]
    if type(tz) is timezone:
        return ["o", tz.utcoffset(None) // timedelta(microseconds=1)]
    if type(tz).__module__.startswith("pytz") and isinstance(getattr(tz, "zone", None), str):
        return ["pytz", tz.zone]
    raise _unsupported(value, column, where, f" with time zone {tz!r}")


def _zone_from(spec: Any) -> Any:
    match spec:
        case ["z", str(name)]:
            return ZoneInfo(name)
        case ["o", int(micros)]:
            return timezone(timedelta(microseconds=micros))
        case ["pytz", str(name)]:
            import pytz

            return pytz.timezone(name)
    raise ValueError(f"unknown time zone {spec!r}")


def _tag(value: Any, column: Any, where: str) -> Any:
    """One value as JSON that says its Python type (`_untag` reverses it)."""
    if value is None:
        return None
    t = type(value)
    if t is str:
        return ["s", value]
    if t is bool:
        return ["b", value]
    if t is int:
        return ["i", str(value)]
    if t is float:
        return ["f", repr(value)]
    if t is Decimal:
        return ["d", str(value)]
    if t is datetime:
        if value.tzinfo is None:
            return ["dt", value.isoformat(), value.fold]
        return ["dtz", value.isoformat(), value.fold, _zone(value.tzinfo, value, column, where)]
    if t is date:
        return ["da", value.isoformat()]
    if t is time:
        if value.tzinfo is not None and type(value.tzinfo) is not timezone:
            raise _unsupported(value, column, where, f" with time zone {value.tzinfo!r}")
        return ["t", value.isoformat(), value.fold]
    if t is timedelta:
        return ["td", value.days, value.seconds, value.microseconds]
    if t in (bytes, bytearray, memoryview):
        return ["x", bytes(value).hex()]
    if t is uuid.UUID:
        return ["u", str(value)]
    if t is list:
        return ["l", [_tag(v, column, where) for v in value]]
    if t is tuple:
        return ["tu", [_tag(v, column, where) for v in value]]
    if t is dict:
        return ["m", [[_tag(k, column, where), _tag(v, column, where)] for k, v in value.items()]]
    return _tag_pandas_numpy(value, column, where)


def _tag_pandas_numpy(value: Any, column: Any, where: str) -> Any:
    import numpy as np
    import pandas as pd

    t = type(value)
    if t is pd.Timestamp:
        count = int(value.to_datetime64().astype("int64"))  # UTC for zone-aware values
        zone = None if value.tz is None else _zone(value.tz, value, column, where)
        return ["ts", count, value.unit, zone]
    if t is pd.Timedelta:
        return ["ptd", int(value.to_timedelta64().astype("int64")), value.unit]
    if value is pd.NaT:
        return ["nat"]
    if value is pd.NA:
        return ["na"]
    if isinstance(value, np.datetime64):
        return _tag(pd.Timestamp(value), column, where)
    if isinstance(value, np.timedelta64):
        return _tag(pd.Timedelta(value), column, where)
    if isinstance(value, np.generic):
        plain = value.item()
        if not isinstance(plain, np.generic):
            return _tag(plain, column, where)
    raise _unsupported(value, column, where)


def _untag(tagged: Any, column: Any, where: str) -> Any:
    try:
        return _decode(tagged)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, LookupError,
            RecursionError) as exc:
        shown = repr(tagged)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ConfigError(f"{where or 'staged frame'} column {column!r}: unreadable cell {shown} "
                          f"({exc}); nothing in it was run: clear this unit's extract task so "
                          f"it stages afresh") from exc


def _decode(tagged: Any) -> Any:
    if tagged is None:
        return None
    match tagged:
        case ["s", str(v)]:
            return v
        case ["b", bool(v)]:
            return v
        case ["i", str(v)]:
            return int(v)
        case ["f", str(v)]:
            return float(v)
        case ["d", str(v)]:
            return Decimal(v)
        case ["dt", str(v), 0 | 1 as fold]:
            moment = datetime.fromisoformat(v)
            if moment.tzinfo is not None:
                raise ValueError("a naive datetime with a zone")
            return moment.replace(fold=fold)
        case ["dtz", str(v), 0 | 1 as fold, zone]:
            moment = datetime.fromisoformat(v)  # the wall time and its offset then
            tz = _zone_from(zone)
            if moment.tzinfo is None:
                raise ValueError("a zone-aware datetime without its offset")
            if hasattr(tz, "localize"):  # pytz: its zones are only right when reached by instant
                return moment.astimezone(tz)
            return moment.replace(tzinfo=tz, fold=fold)
        case ["da", str(v)]:
            return date.fromisoformat(v)
        case ["t", str(v), 0 | 1 as fold]:
            return time.fromisoformat(v).replace(fold=fold)
        case ["td", int(days), int(seconds), int(micros)]:
            return timedelta(days=days, seconds=seconds, microseconds=micros)
        case ["x", str(v)]:
            return bytes.fromhex(v)
        case ["u", str(v)]:
            return uuid.UUID(v)
        case ["l", list(items)]:
            return [_decode(x) for x in items]
        case ["tu", list(items)]:
            return tuple(_decode(x) for x in items)
        case ["m", list(pairs)]:
            return {_decode(k): _decode(v) for k, v in pairs}
    return _decode_pandas(tagged)


def _decode_pandas(tagged: Any) -> Any:
    import numpy as np
    import pandas as pd

    match tagged:
        case ["ts", int(count), str(unit), zone] if unit in _UNITS:
            moment = pd.Timestamp(np.datetime64(count, unit))
            return moment if zone is None else moment.tz_localize("UTC").tz_convert(_zone_from(zone))
        case ["ptd", int(count), str(unit)] if unit in _UNITS:
            return pd.Timedelta(np.timedelta64(count, unit))
        case ["nat"]:
            return pd.NaT
        case ["na"]:
            return pd.NA
    raise ValueError(f"unknown tag {tagged[0] if isinstance(tagged, list) and tagged else tagged!r}")


_UNITS = frozenset({"s", "ms", "us", "ns"})
