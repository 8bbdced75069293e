"""Encryption at rest of personal data (issue 14): optional, off without a data key.

With a data key (`ETL_DATA_KEY`, or the Airflow variable / connection `etl_data_key` inside an
Airflow task) the fields `etl.standard` marks `encrypted` (ID number, certificate number,
phones) are stored as `enc:v1:<key id>:<base64(nonce + ciphertext)>`: AES-256-GCM, a fresh
96-bit nonce per value, the field name and the record ID as associated data (a ciphertext moved
to another record or field fails to decrypt), key id = the first 8 hex digits of sha256(key)
so that rotation knows which key a value used. Beside each such field, `<field>Hmac` holds
HMAC-SHA256 of the plaintext under a key derived from the data key (HKDF): the blind index
that lets a lookup find a value without decrypting every row.

Encryption happens after validation and identity (`pipeline.prepare`): validation reads the
plaintext, and `rowHash` digests it, so an unchanged record is unchanged although each run's
ciphertext differs.

The target knows the key its values are under (issue 23): `ingest_key` holds its id and a
fingerprint (HKDF-SHA256 of the key under a label of its own: one-way, never the key), written
by the first load that stores an encrypted value (`claim`) and moved by `rotate` (as the owner).
A load with another key, or with none, is refused (`check_key`), so one target never needs two
keys, and a worker that lost its key does not store personal data in clear beside ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable
import dataclasses
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from etl import standard
from etl.common import settings
from etl.common.errors import ConfigError

PREFIX = "enc:v1:"
KEY_ID_CHARS = 8
KEY_ENV, OLD_KEYS_ENV = "ETL_DATA_KEY", "ETL_DATA_KEY_OLD"
AIRFLOW_KEY = "etl_data_key"  # Airflow variable or connection (its password)
MAKE_KEY = 'python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"'
NONCE_BYTES = 12


class DecryptError(ValueError):
    """A value could not be decrypted: no key with its id, or it was altered or moved."""


class KeyMismatch(ConfigError):
    """The data key given is not the one the target's values are under (or none is given for a
    target whose values are encrypted): a load would leave the target needing two keys, or
    store personal data in clear beside ciphertext. Retrying with the same key fails alike."""


@dataclass(frozen=True)
class DataKey:
    """A 256-bit data key; `str()` shows only its id. `origin`: where it was read from, for
    messages (`ETL_DATA_KEY`, `Airflow etl_data_key`)."""

    secret: bytes
    origin: str = dataclasses.field(default=KEY_ENV, compare=False)

    @property
    def id(self) -> str:
        return hashlib.sha256(self.secret).hexdigest()[:KEY_ID_CHARS]

    @property
    def fingerprint(self) -> str:
        """What `ingest_key` keeps of the key: HKDF-SHA256 of it under a label of its own, hex.
        One-way, and independent of the cipher and the blind index (other labels)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"etl key fingerprint v1").derive(self.secret).hex()

    def __repr__(self) -> str:
        return f"DataKey({self.id})"

    __str__ = __repr__

    def _aead(self):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(self.secret)

    def index_key(self) -> bytes:
        """The blind index's HMAC key: HKDF-SHA256 of the data key, never the key itself."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"etl blind index v1").derive(self.secret)


def parse_key(text: str, origin: str) -> DataKey:
    """A key from its base64 text; a `ConfigError` naming `origin` (never the text) if it is
    not base64 of 32 bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{origin}: not a data key (base64 of 32 random bytes); make one "
                          f"with {MAKE_KEY}")
    return DataKey(raw, origin)


#: (dag, run, task, try) -> what `_airflow_key` found for that task instance's try
_AIRFLOW_KEY_SEEN: dict[tuple[str, ...], str | None] = {}
_TASK_CONTEXT = ("DAG_ID", "DAG_RUN_ID", "TASK_ID", "TRY_NUMBER")


def _airflow_key() -> str | None:
    """`etl_data_key` from Airflow: a variable, else a connection's password; only inside an
    Airflow task (`settings.in_airflow_task`: AIRFLOW_CTX_* alone are no proof, they outlive
    `dag.test()` and pass to children such as `etl serve`, which then imported Airflow and lost
    its logging), as `etl_target` is read there. Asked once per task instance's try: each ask is
    two API round trips, and a shard's task asks for every dataset of its units (issue 26)."""
    if not settings.in_airflow_task():
        return None
    task = tuple(os.environ.get(f"AIRFLOW_CTX_{name}", "") for name in _TASK_CONTEXT)
    if task in _AIRFLOW_KEY_SEEN:
        return _AIRFLOW_KEY_SEEN[task]
    value, sure = _ask_airflow_key()
    if sure:  # an answer, not a failure to ask: the next dataset asks again
        _AIRFLOW_KEY_SEEN.clear()
        _AIRFLOW_KEY_SEEN[task] = value
    return value


def _ask_airflow_key() -> tuple[str | None, bool]:
    """The key, and whether Airflow answered (a value, or that there is none)."""
    try:
        from airflow.sdk import Connection, Variable
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:  # pragma: no cover
        return None, False
    sure = True
    try:
        value = Variable.get(AIRFLOW_KEY, default=None)
    except Exception:  # no such variable or no way to ask: try the connection
        value, sure = None, False
    if not value:
        try:
            value = Connection.get(AIRFLOW_KEY).password
        except AirflowNotFoundException:
            value = None
        except Exception:
            value, sure = None, False
    if value:
        from etl.common.masking import register_secrets

        register_secrets([value])
        sure = True
    return value or None, sure


def data_key() -> DataKey | None:
    """The data key to encrypt with, or None: encryption is off."""
    text = settings.text(KEY_ENV)
    if text:
        return parse_key(text, KEY_ENV)
    text = _airflow_key()
    return parse_key(text, f"Airflow {AIRFLOW_KEY}") if text else None


def old_keys() -> list[DataKey]:
    """`ETL_DATA_KEY_OLD`: the keys values may still be under (comma-separated), for rotation."""
    text = settings.text(OLD_KEYS_ENV) or ""
    return [parse_key(part, f"{OLD_KEYS_ENV} (key {i})")
            for i, part in enumerate(text.split(","), 1) if part.strip()]


def _aad(field: str, record_id: str) -> bytes:
    return f"{field}\x1f{record_id}".encode()


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def key_id_of(value: str) -> str:
    return value[len(PREFIX):].split(":", 1)[0]


def encrypt(value: str, field: str, record_id: str, key: DataKey) -> str:
    nonce = os.urandom(NONCE_BYTES)
    ct = key._aead().encrypt(nonce, value.encode(), _aad(field, record_id))
    return f"{PREFIX}{key.id}:{base64.b64encode(nonce + ct).decode()}"


def decrypt(value: str, field: str, record_id: str, keys: Iterable[DataKey]) -> str:
    """The plaintext of a stored value (a value in clear is returned as it is)."""
    if not is_encrypted(value):
        return value
    kid = key_id_of(value)
    key = next((k for k in keys if k.id == kid), None)
    if key is None:
        raise DecryptError(f"{field} of record {record_id}: encrypted under key {kid}, which "
                           f"is not given (ETL_DATA_KEY, ETL_DATA_KEY_OLD)")
    from cryptography.exceptions import InvalidTag

    try:
        raw = base64.b64decode(value[len(PREFIX) + len(kid) + 1:], validate=True)
        return key._aead().decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                   _aad(field, record_id)).decode()
    except (InvalidTag, binascii.Error, ValueError):
        raise DecryptError(f"{field} of record {record_id}: does not decrypt under key {kid} "
                           f"(altered, or moved from another record or field)") from None


def blind_index(value: str, key: DataKey, index_key: bytes | None = None) -> str:
    """HMAC-SHA256 of the plaintext, hex: equal values have equal indexes under one key."""
    return hmac.new(index_key or key.index_key(), value.encode(), hashlib.sha256).hexdigest()


def encrypt_frame(frame: pd.DataFrame, ds: standard.Dataset, key: DataKey,
                  rows: pd.Series) -> pd.DataFrame:
    """Encrypt the encrypted fields of `rows` (a boolean mask: the rows that load) in place of
    their plaintext, and fill their `<field>Hmac`; other rows keep NULL indexes."""
    from etl.target.schema import hmac_column
    from etl.target.frame import ID

    fields = standard.encrypted_fields(ds)
    if not fields:
        return frame
    ikey, aead = key.index_key(), key._aead()
    head = f"{PREFIX}{key.id}:"
    ids = frame[ID].to_numpy(dtype=object)
    wanted = rows.to_numpy(dtype=bool)
    for f in fields:  # a plain loop over arrays: per-cell pandas access cost 10x the cipher
        values = frame[f.name].to_numpy(dtype=object, na_value=None).copy()
        idx = np.full(len(values), None, dtype=object)
        for i in np.flatnonzero(wanted):
            v = values[i]
            if v is None or (isinstance(v, str) and v.startswith(PREFIX)):
                continue
            plain = str(v).encode()
            nonce = os.urandom(NONCE_BYTES)
            ct = aead.encrypt(nonce, plain, _aad(f.name, ids[i]))
            values[i] = head + base64.b64encode(nonce + ct).decode()
            idx[i] = hmac.new(ikey, plain, hashlib.sha256).hexdigest()
        frame[f.name] = pd.Series(values, index=frame.index, dtype=object)
        frame[hmac_column(f.name)] = pd.Series(idx, index=frame.index, dtype=object)
    return frame


# --- the target's key ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredKey:
    """What `ingest_key` says of the key the target's values are under."""

    key_id: str
    fingerprint: str


def stored_key(conn) -> StoredKey | None:
    """The target's key, or None: no value was stored encrypted since migration 0010."""
    import sqlalchemy as sa

    from etl.target import schema as target

    k = target.ingest_key
    row = conn.execute(sa.select(k.c.keyId, k.c.fingerprint)
                       .where(k.c.purpose == target.DATA_KEY_PURPOSE)).first()
    return StoredKey(row[0], row[1]) if row else None


def _rotate_hint(new: str, old: Iterable[str]) -> str:
    olds = ",".join(f"<key {k}>" for k in old)
    return (f"`ETL_DATA_KEY=<key {new}> {OLD_KEYS_ENV}={olds} etl rotate-key`, run as the owner")


def check_key(stored: StoredKey | None, key: DataKey | None) -> None:
    """Refuse a load whose key is not the target's: another key (a mistyped secret would leave
    the target needing two keys), or none where values are encrypted (personal data in clear
    beside them). A target without a stored key takes any."""
    if stored is None:
        return
    if key is None:
        raise KeyMismatch(
            f"the target's personal data is encrypted under data key {stored.key_id} and no key is "
            f"set: set {KEY_ENV} (or the Airflow variable {AIRFLOW_KEY}) to that key; without it "
            f"this load would store ID numbers and phones in clear beside them")
    if key.fingerprint != stored.fingerprint:
        same_id = " (another key with the same id)" if key.id == stored.key_id else ""
        raise KeyMismatch(
            f"{key.origin} is data key {key.id}{same_id}, but the target's values are under key "
            f"{stored.key_id}: set {key.origin} to that key (a mistyped secret?), or move the "
            f"target to this one with {_rotate_hint(key.id, [stored.key_id])}")


def key_ids_in(conn, besides: Iterable[str] = ()) -> list[str]:
    """The key ids the dataset tables' encrypted values carry, but those in `besides`: one scan
    of each encrypted column (a target encrypted before migration 0010 has no stored key)."""
    import sqlalchemy as sa

    from etl.target import schema as target

    found: set[str] = set()
    known = sorted(set(besides))
    for ds in standard.DATASETS:
        t = target.table(ds.tx_code)
        for f in standard.encrypted_fields(ds):
            col = t.c[f.name]
            kid = sa.func.substr(col, len(PREFIX) + 1, KEY_ID_CHARS)
            q = sa.select(kid).where(col.like(f"{PREFIX}%")).distinct()
            found.update(conn.execute(q.where(kid.not_in(known)) if known else q).scalars())
    return sorted(found)


def _refuse_other_keys(conn, key: DataKey) -> None:
    others = key_ids_in(conn, [key.id])
    if others:
        raise KeyMismatch(
            f"{key.origin} is data key {key.id}, but the target holds values under key(s) "
            f"{', '.join(others)}: set {key.origin} to the key they are under (a mistyped "
            f"secret?), or move them to this one with {_rotate_hint(key.id, others)}")


def check_target(engine, key: DataKey | None) -> None:
    """Before `etl run` writes anything: the target's stored key against `key` (`check_key`);
    with a key and none stored yet, the key ids of the values already there. A target whose
    schema predates `ingest_key` is checked by each load once it is upgraded."""
    import sqlalchemy as sa

    from etl.target import schema as target

    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(target.ingest_key.name):
            return
        stored = stored_key(conn)
        check_key(stored, key)
        if stored is None and key is not None:
            _refuse_other_keys(conn, key)


def check_frame(frame: pd.DataFrame, ds: standard.Dataset, key: DataKey | None) -> None:
    """Refuse prepared rows whose encrypted fields are not under the load's key (or, without
    one, not in clear): under Airflow the transform task encrypts and another worker may load."""
    from etl.target.frame import DELETED, REJECTED

    fields = standard.encrypted_fields(ds)
    if not fields or frame.empty:
        return
    loading = (frame[REJECTED] == 0) & (frame[DELETED] == 0)
    for f in fields:
        values = frame.loc[loading, f.name].dropna().astype(str)
        wrong = ~values.str.startswith(f"{PREFIX}{key.id}:") if key else values.str.startswith(PREFIX)
        if wrong.any():
            first = values[wrong].iloc[0]
            found = f"under key {key_id_of(first)}" if is_encrypted(first) else "in clear"
            mine = f"the load's key {key.id} ({key.origin})" if key else "no key (the load has none)"
            raise KeyMismatch(
                f"{ds.table}.{f.name}: {int(wrong.sum())} value(s) prepared for this load are "
                f"{found}, not under {mine}: the process that prepared them (Airflow's transform "
                f"task) had another data key; give every worker the same {KEY_ENV} or Airflow "
                f"variable {AIRFLOW_KEY}")


def claim(conn, key: DataKey, set_by: str, now: datetime) -> None:
    """Make `key` the target's, in the transaction of the first load that stores a value
    under it: only when no key is stored (the loader may INSERT into `ingest_key`, never
    UPDATE), after checking that no value is under another key already. Two first loads
    with different keys: the primary key lets one in, the other is refused."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    from etl.target import roles
    from etl.target import schema as target

    if stored_key(conn) is None:
        _refuse_other_keys(conn, key)
        k = target.ingest_key
        row = {"purpose": target.DATA_KEY_PURPOSE, "keyId": key.id, "fingerprint": key.fingerprint,
               "setAt": now, "setBy": set_by[:200]}
        name = conn.dialect.name
        if name in ("postgresql", "sqlite"):
            insert = (postgresql.insert(k) if name == "postgresql" else sqlite.insert(k))
            stmt = insert.values(row).on_conflict_do_nothing(index_elements=[k.c.purpose])
        else:
            stmt = mysql.insert(k).values(row).prefix_with("IGNORE")
        try:
            conn.execute(stmt)
        except sa.exc.DBAPIError as e:
            if not roles.is_permission_error(e):
                raise
            raise ConfigError(f"this account may not record the target's data key in "
                              f"{k.name}: run `etl init-target --roles` as the owner "
                              f"({roles.OWNER} or a member of it) to grant it") from None
    check_key(stored_key(conn), key)


def _record(engine, key: DataKey, set_by: str) -> None:
    """`rotate`: make `key` the target's, as the owner (the loader may not UPDATE it)."""
    import sqlalchemy as sa

    from etl.common import clock
    from etl.target import roles
    from etl.target import schema as target

    k = target.ingest_key
    values = {"keyId": key.id, "fingerprint": key.fingerprint, "setAt": clock.now(), "setBy": set_by}
    mine = k.c.purpose == target.DATA_KEY_PURPOSE
    try:
        with engine.begin() as conn:
            # first, whatever there is: refused to any account but the owner's, before a value changes
            conn.execute(sa.update(k).where(mine, k.c.fingerprint != key.fingerprint).values(values))
            if stored_key(conn) is None:
                conn.execute(sa.insert(k).values(purpose=target.DATA_KEY_PURPOSE, **values))
    except sa.exc.DBAPIError as e:
        if not roles.is_permission_error(e):
            raise
        raise ConfigError(f"etl rotate-key rewrites the target's key and ledger, which this "
                          f"account may not (the loader only appends to them): run it as the "
                          f"owner ({roles.OWNER} or a member of it)") from None


# --- the target: rotation and reading ----------------------------------------------------------


def _new_value(value: str | None, field: str, record_id: str, new: DataKey,
               keys: list[DataKey], where: str) -> tuple[str, str] | None:
    """(plaintext, ciphertext under `new`) for a stored value, None when it is NULL or under
    `new` already; a value in clear is encrypted too (encryption turned on for old records)."""
    if value is None or (is_encrypted(value) and key_id_of(value) == new.id):
        return None
    try:
        plain = decrypt(value, field, record_id, keys)
    except DecryptError as e:
        raise ConfigError(f"{where}: {e}; set {OLD_KEYS_ENV} to the key(s) it was under") from None
    return plain, encrypt(plain, field, record_id, new)


def rotate(engine, new: DataKey, old: list[DataKey], batch_rows: int = 1000) -> dict[str, int]:
    """Re-encrypt every encrypted value of the target (tables and ledger) under `new`, in
    batches of `batch_rows` each committed on its own, in place: rowHash, busType, batchNo and
    updateDate are untouched, no batch is written. Values under `new` already are skipped, so
    a rotation that stopped halfway is finished by running it again. Returns values changed
    per table (`ingest_change`: ledger rows).

    Before any value changes: the tables' values under a key not given stop it, naming the key;
    then `new` becomes the target's key (`ingest_key`, as the owner), so that from then on
    loads with the old key are refused and loads with the new one are not."""
    import sqlalchemy as sa

    from etl.target import schema as target
    from etl.target.frame import ID

    keys = [new, *old]
    with engine.connect() as conn:
        missing = key_ids_in(conn, [k.id for k in keys])
    if missing:
        raise ConfigError(f"the target holds values under key(s) {', '.join(missing)}, which are "
                          f"not given: set {OLD_KEYS_ENV} to the key(s) they are under "
                          f"(comma-separated); nothing was changed")
    _record(engine, new, "etl rotate-key")
    counts: dict[str, int] = {}
    ikey = new.index_key()

    for ds in standard.DATASETS:
        fields = [f.name for f in standard.encrypted_fields(ds)]
        if not fields:
            continue
        t = target.table(ds.tx_code)
        counts[ds.table] = 0
        last = ""
        while True:
            with engine.begin() as conn:
                rows = conn.execute(sa.select(t.c[ID], *[t.c[f] for f in fields])
                                    .where(t.c[ID] > last).order_by(t.c[ID]).limit(batch_rows)).all()
                if not rows:
                    break
                last = rows[-1][0]
                for row in rows:
                    values = {}
                    for f, v in zip(fields, row[1:]):
                        done = _new_value(v, f, row[0], new, keys, f"{ds.table} record {row[0]} {f}")
                        if done:
                            values[f] = done[1]
                            values[target.hmac_column(f)] = blind_index(done[0], new, ikey)
                    if values:
                        conn.execute(sa.update(t).where(t.c[ID] == row[0]).values(values))
                        counts[ds.table] += len([k for k in values if k in fields])
    counts["ingest_change"] = _rotate_ledger(engine, new, keys, ikey, batch_rows)
    return counts


def _rotate_ledger(engine, new: DataKey, keys: list[DataKey], ikey: bytes, batch_rows: int) -> int:
    import json

    import sqlalchemy as sa

    from etl.target import schema as target

    fields_of = {ds.tx_code: [f.name for f in standard.encrypted_fields(ds)] for ds in standard.DATASETS}
    codes = [tx for tx, names in fields_of.items() if names]
    c, b = target.ingest_change, target.ingest_batch
    changed, last = 0, 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.select(c.c.changeId, c.c.ID, c.c.record, b.c.txCode)
                .select_from(c.join(b, b.c.batchNo == c.c.batchNo))
                .where(c.c.changeId > last, b.c.txCode.in_(codes))
                .order_by(c.c.changeId).limit(batch_rows)).all()
            if not rows:
                return changed
            last = rows[-1][0]
            for change_id, rid, text, tx in rows:
                record = json.loads(text)
                dirty = False
                for f in fields_of[tx]:
                    done = _new_value(record.get(f), f, rid, new, keys,
                                      f"ingest_change {change_id} (record {rid}) {f}")
                    if done:
                        record[f] = done[1]
                        record[target.hmac_column(f)] = blind_index(done[0], new, ikey)
                        dirty = True
                if dirty:
                    conn.execute(sa.update(c).where(c.c.changeId == change_id).values(
                        record=json.dumps(record, ensure_ascii=False, separators=(",", ":"))))
                    changed += 1


def shown(value: str | None, field: standard.Field, clear: bool) -> str | None:
    """A decrypted value as `etl decrypt` prints it: in full with `clear`, else as every
    surface shows the field (`masking.shown`)."""
    from etl.common.masking import shown as masked

    if value is None or clear:
        return value
    return masked(value, field)


def records(engine, org_no: str, tx_code: str, keys: list[DataKey], clear: bool = False,
            find: str | None = None) -> list[dict]:
    """A unit's records of one dataset with the encrypted fields decrypted (masked unless
    `clear`); `find`: only records where an encrypted field equals it (by the blind index)."""
    import sqlalchemy as sa

    from etl.target import schema as target
    from etl.target.frame import ID

    ds = standard.dataset(tx_code)
    t = target.table(ds.tx_code)
    fields = standard.encrypted_fields(ds)
    q = sa.select(*[t.c[n] for n in standard.record_columns(ds)]).where(
        t.c[standard.UNIT_KEY] == org_no).order_by(t.c[ID])
    if find is not None:
        indexes = [blind_index(find, k) for k in keys]
        q = q.where(sa.or_(sa.false(), *[t.c[target.hmac_column(f.name)].in_(indexes) for f in fields],
                           *[t.c[f.name] == find for f in fields]))
    out = []
    with engine.connect() as conn:
        for row in conn.execute(q).mappings():
            rec = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            for f in fields:
                rec[f.name] = shown(decrypt(rec[f.name], f.name, rec[ID], keys)
                                    if rec[f.name] is not None else None, f, clear)
            out.append(rec)
    return out
