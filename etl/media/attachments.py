"""Attachments in the pipeline: the files behind a unit's M fields (`fileAppendix` 04,
`trainFile` 05, `riskFile` 08), collected while a chunk is prepared and recorded as it loads.

A mapping's `file:` (`etl.mapping.FileSpec`) says where an M field's file comes from: the
field's column holds a path under a base folder or URL (`base`, `base_env`, `conn_id`), or the
file's name while a BLOB column holds its bytes (`blob`). `collect` brings each live row's file
into the collecting organisation's store (`etl.media.files`: streamed, typed by content, size-limited,
stored once per content), keeps the file's base name in the field (what the standard shows, e.g.
`XX 管理制度.doc`), and hands on two hidden columns: `_media_sha256` (the files' digests, which
`rowHash` covers, so a changed file with the same name makes the record `U`) and `_media` (the
facts for `ingest_media`, as JSON). They ride through staging like any column. `record` writes
`ingest_media` in the load's transaction, for the rows that load only.

A file's own problem rejects its row (`MediaError`: rule `file_missing`, `file_unreadable`,
`file_type`, `file_size`, `file_path`, `file_redirect`); a file server that cannot be reached,
or that `etl.common.outbound`'s rules refuse, fails the dataset (`FileServerUnreachable`, raised
on), not the run. The unit's `source.require_tls` (the dataset's source's) covers its file
bases too: a base without TLS is refused before any file of the dataset is fetched.
"""

from __future__ import annotations

import json
import os
import posixpath
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from etl import target
from etl.common import clock, outbound
from etl.common.errors import ConfigError, MediaError
from etl.common.masking import cap, register_url_secrets
from etl.common.outbound import connection_uri
from etl.common.settings import unset_variable
from etl.mapping import FieldRule, FileSpec, Mapping
from etl.media import files as media
from etl.target.frame import DELETED, ID, MEDIA_SHA, REJECTED

MEDIA_FACTS = "_media"  # per row: JSON list of the facts of its files, for ingest_media
FACT_KEYS = ("field", "sha256", "size", "mediaType", "name", "location", "sourceSize",
             "sourceMtime", "fetchedAt")


def file_rules(mapping: Mapping, tx_code: str) -> dict[str, FieldRule]:
    """The dataset's M fields that collect a file (`file:`), by field name."""
    return {name: rule for name, rule in mapping.datasets[tx_code].fields.items()
            if rule.file is not None}


def resolve_base(spec: FileSpec, where: str) -> str:
    """The base folder or URL of `spec` (not for `blob:`): literal, from the environment or
    from an Airflow connection; any password in it is registered for masking."""
    if spec.base:
        return spec.base
    if spec.base_env:
        value = os.environ.get(spec.base_env, "").strip()
        if not value:
            raise ConfigError(f"{where}: " + unset_variable(
                spec.base_env, "the unit's file folder or URL (a mounted share, https://host/docs, "
                               "sftp://user:***@host/docs)"))
        register_url_secrets(value)
        return value

    return connection_uri(spec.conn_id or "")


def base_name(path: str) -> str:
    """The file name a path or name ends in (`附件\\2024\\XX 管理制度.doc` -> `XX 管理制度.doc`)."""
    return posixpath.basename(str(path).strip().replace("\\", "/").rstrip("/"))


def _blank(v: object) -> bool:
    if v is None:
        return True
    try:
        if pd.isna(v):
            return True
    except (TypeError, ValueError):
        return False
    return isinstance(v, str) and not v.strip()


def _bytes_of(value: object) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return None


def collect(frame: pd.DataFrame, raw: pd.DataFrame, mapping: Mapping, tx_code: str,
            skip: set) -> list:
    """Fetch the files of the frame's live rows (not in `skip`, not deleted) into the media
    store, in place: each M field with `file:` gets the file's base name, and the hidden
    columns `_media_sha256` and `_media` are added. Returns a `validate.Finding` per row whose
    file is refused (one per row: its first refused file). `raw` is the chunk's source rows,
    index-aligned with `frame` (BLOB bytes are read from it)."""
    from etl.standard.validate import Finding

    rules = file_rules(mapping, tx_code)
    if not rules:
        return []
    store = media.MediaStore()
    label = f"{mapping.name} {tx_code}"
    progress = media.Progress(label)
    found: list[Finding] = []
    refused: set = set()
    facts: dict[object, list[dict]] = {}
    deleted = frame[DELETED].astype(bool)
    live = [i for i in frame.index if i not in skip and not deleted.at[i]]
    fetched_at = clock.now().isoformat()
    sources: dict[str, media.FileSource] = {}  # closed at the end: an SFTP source holds a connection
    try:
        why = outbound.requirement(mapping.source_for(tx_code))
        for name, rule in rules.items():  # every base checked before any file is fetched
            assert rule.file is not None
            if not rule.file.blob:
                where = f"{mapping.path} [datasets.{tx_code}.fields.{name}.file]"
                sources[name] = media.FileSource(resolve_base(rule.file, where),
                                                 label=f"{label} {name}", require_tls=why,
                                                 where=where)
        for name, rule in rules.items():
            spec = rule.file
            assert spec is not None
            limit = spec.limit_bytes or media.DEFAULT_LIMIT_BYTES
            source = sources.get(name)
            values = frame[name].astype(object).copy()
            for i in live:
                if i in refused:
                    continue
                text = values.at[i]
                try:
                    if spec.blob:
                        data = raw.at[i, spec.blob]
                        if _blank(text):
                            if _bytes_of(data):
                                raise MediaError("file_type", f"bytes in column {spec.blob} "
                                                 f"without a name in column {rule.column}: the "
                                                 f"name's extension must agree with the content")
                            continue
                        file_name = base_name(text)
                        located, stored = _from_blob(store, data, spec.blob, file_name, limit)
                    else:
                        if _blank(text):
                            continue
                        assert source is not None
                        located, stored = media.fetch(source, str(text), store,
                                                      limit_bytes=limit, progress=progress.add)
                        file_name = located.name or base_name(str(text))
                except MediaError as e:
                    found.append(Finding(i, name, e.rule, str(e)))
                    refused.add(i)
                    continue
                progress.file_done(stored)
                values.at[i] = file_name
                facts.setdefault(i, []).append({
                    "field": name, "sha256": stored.sha256, "size": stored.size,
                    "mediaType": stored.media_type, "name": file_name,
                    "location": located.location, "sourceSize": located.size,
                    "sourceMtime": located.mtime, "fetchedAt": fetched_at})
            frame[name] = values
    finally:
        progress.close()
        for source in sources.values():
            source.close()
    for i in refused:  # a refused row keeps no facts of its other files
        facts.pop(i, None)
    frame[MEDIA_SHA] = pd.Series(
        [";".join(f"{f['field']}={f['sha256']}" for f in facts[i]) if i in facts else None
         for i in frame.index], index=frame.index, dtype=object)
    frame[MEDIA_FACTS] = pd.Series(
        [json.dumps(facts[i], ensure_ascii=False) if i in facts else None for i in frame.index],
        index=frame.index, dtype=object)
    return found


def _from_blob(store, data: object, column: str, file_name: str, limit: int):
    """A BLOB cell's bytes into the store, with what `ingest_media` says of where they came from."""

    blob = _bytes_of(data)
    if blob is None:
        if _blank(data):
            raise MediaError("file_missing", f"{file_name}: no bytes in column {column}: the "
                                             f"record names a file the unit did not store")
        raise MediaError("file_type", f"{file_name}: column {column} holds "
                                      f"{type(data).__name__}, not a file's bytes: map a "
                                      f"BLOB/BYTEA column")
    if len(blob) > limit:
        raise MediaError("file_size", f"{file_name}: {len(blob):,} bytes in column {column}, "
                                      f"larger than the limit of {limit:,} bytes: ask the unit "
                                      f"for a smaller export, or raise max_mb")
    stored = store.put_bytes(blob, name=file_name, limit_bytes=limit)
    return media.Located(f"column {column} (BLOB)", len(blob), None, file_name), stored


# --- loading --------------------------------------------------------------------------------


def facts_of(frame: pd.DataFrame) -> list[tuple[int, dict]]:
    """(row position, `ingest_media` row) for each file of a prepared chunk's rows that may
    load (not rejected, not deleted): one per record and field."""

    if MEDIA_FACTS not in frame.columns:
        return []
    live = ((frame[REJECTED] == 0) & (frame[DELETED] == 0)).to_numpy()
    out = []
    for pos, (ok, rid, text) in enumerate(zip(live, frame[ID], frame[MEDIA_FACTS])):
        if not ok or _blank(text):
            continue
        out += [(pos, {"ID": rid, **{k: f.get(k) for k in FACT_KEYS}}) for f in json.loads(text)]
    return out


def record(conn: Connection, rows: list[dict], org_no: str, tx_code: str, run_id: str) -> int:
    """Make `ingest_media` hold one current row per (record, field) of `rows`: inserted when
    new, updated when the file (its digest, name or location) changed, untouched otherwise,
    so an unchanged rerun writes nothing. Never deletes. Returns the rows written."""
    if not rows:
        return 0
    t = target.ingest_media
    latest = {(r["ID"], r["field"]): r for r in rows}  # a later chunk's row wins
    existing: dict[tuple[str, str], tuple] = {}
    ids = sorted({rid for rid, _ in latest})
    for start in range(0, len(ids), 1000):
        part = ids[start:start + 1000]
        for rid, fld, sha, name, loc in conn.execute(sa.select(
                t.c.ID, t.c.field, t.c.sha256, t.c.name, t.c.location).where(t.c.ID.in_(part))):
            existing[(rid, fld)] = (sha, name, loc)
    inserts, updates = [], []
    for key, r in latest.items():
        row = {**r, "orgNo": org_no, "txCode": tx_code, "runId": run_id,
               "fetchedAt": datetime.fromisoformat(r["fetchedAt"]),
               "name": r["name"][:500], "location": r["location"][:1000]}
        old = existing.get(key)
        if old is None:
            inserts.append(row)
        elif old != (row["sha256"], row["name"], row["location"]):
            updates.append(row)
    if inserts:
        conn.execute(sa.insert(t), inserts)
    if updates:
        stmt = (sa.update(t).where(t.c.ID == sa.bindparam("b_id"), t.c.field == sa.bindparam("b_field"))
                .values({c: sa.bindparam(c) for c in ("orgNo", "txCode", "sha256", "size",
                                                        "mediaType", "name", "location",
                                                        "sourceSize", "sourceMtime",
                                                        "fetchedAt", "runId")}))
        conn.execute(stmt, [{**{k: v for k, v in u.items() if k not in ("ID", "field")},
                             "b_id": u["ID"], "b_field": u["field"]} for u in updates])
    return len(inserts) + len(updates)


# --- etl check ------------------------------------------------------------------------------


def base_checks(mapping: Mapping) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the mapping's file bases, for `etl check`. A base the outbound
    rules refuse whatever its server does (plain `http://` with TLS required, a metadata
    address) is a problem, as a source URL that asks for no TLS is. One that cannot be reached
    now (not set, not mounted, the server down or refused: a redirect elsewhere, an address, a
    host key) is a `warning:` line, not a failure: a share may be mounted only where the loads
    run."""

    problems, warnings = [], []
    for tx in sorted(mapping.datasets):
        why = outbound.requirement(mapping.source_for(tx))
        for name, rule in file_rules(mapping, tx).items():
            spec = rule.file
            assert spec is not None
            if spec.blob:
                continue
            where = f"{mapping.path} [datasets.{tx}.fields.{name}.file]"
            try:
                base = resolve_base(spec, where)
            except Exception as e:  # noqa: BLE001 - reported, never raised by a check
                warnings.append(f"warning: {where} files cannot be reached now: {e}")
                continue
            try:
                source = media.FileSource(base, require_tls=why, where=where)
            except ConfigError as e:
                problems.append(str(e))
                continue
            try:
                with source:
                    source.check()
            except Exception as e:  # noqa: BLE001 - reported, never raised by a check
                warnings.append(f"warning: {where} files cannot be reached now: {e}")
    return problems, warnings


def summary(engine: sa.Engine) -> str:
    """What `ingest_media` holds, per unit, dataset and field (a few names each), and where the
    store is: the lines `etl demo` prints."""

    t = target.ingest_media
    target.ensure_schema(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.orgNo, t.c.txCode, t.c.field, t.c.name, t.c.size)
                            .order_by(t.c.orgNo, t.c.txCode, t.c.field, t.c.name)).all()
        distinct = conn.execute(sa.select(sa.func.count(sa.distinct(t.c.sha256)))).scalar_one()
    groups: dict[tuple[str, str, str], list[tuple[str, int]]] = {}
    for org, tx, fld, name, size in rows:
        groups.setdefault((org, tx, fld), []).append((name, size))
    lines = [f"attachments: {len(rows)} file(s) recorded in ingest_media, {distinct} distinct, "
             f"stored in {media.MediaStore().describe}"]
    for (org, tx, fld), files in groups.items():
        names = ", ".join(n for n, _ in files[:3]) + (", …" if len(files) > 3 else "")
        lines.append(f"  {org} {tx} {fld}: {len(files)} file(s), {sum(s for _, s in files):,} "
                     f"bytes ({cap(names, 200)})")
    return "\n".join(lines)
