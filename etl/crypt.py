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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from etl import standard
from etl.errors import ConfigError

PREFIX = "enc:v1:"
KEY_ENV, OLD_KEYS_ENV = "ETL_DATA_KEY", "ETL_DATA_KEY_OLD"
AIRFLOW_KEY = "etl_data_key"  # Airflow variable or connection (its password)
MAKE_KEY = 'python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"'
NONCE_BYTES = 12


class DecryptError(ValueError):
    """A value could not be decrypted: no key with its id, or it was altered or moved."""


@dataclass(frozen=True)
class DataKey:
    """A 256-bit data key; `str()` shows only its id."""

    secret: bytes

    @property
    def id(self) -> str:
        return hashlib.sha256(self.secret).hexdigest()[:8]

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
    return DataKey(raw)


def _airflow_key() -> str | None:
    """`etl_data_key` from Airflow: a variable, else a connection's password; only inside an
    Airflow task (whose runner sets AIRFLOW_CTX_DAG_ID), as `etl_target` is read there."""
    if not os.environ.get("AIRFLOW_CTX_DAG_ID"):
        return None
    try:
        from airflow.sdk import Connection, Variable
    except ImportError:  # pragma: no cover
        return None
    try:
        value = Variable.get(AIRFLOW_KEY, default=None)
    except Exception:  # no such variable or no way to ask: try the connection
        value = None
    if not value:
        try:
            value = Connection.get(AIRFLOW_KEY).password
        except Exception:
            value = None
    if value:
        from etl.masking import register_secrets

        register_secrets([value])
    return value or None


def data_key() -> DataKey | None:
    """The data key to encrypt with, or None: encryption is off."""
    text = os.environ.get(KEY_ENV)
    if text:
        return parse_key(text, KEY_ENV)
    text = _airflow_key()
    return parse_key(text, f"Airflow {AIRFLOW_KEY}") if text else None


def old_keys() -> list[DataKey]:
    """`ETL_DATA_KEY_OLD`: the keys values may still be under (comma-separated), for rotation."""
    text = os.environ.get(OLD_KEYS_ENV, "")
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
    from etl.target import hmac_column
    from etl.transform import ID

    fields = standard.encrypted_fields(ds)
    if not fields:
        return frame
    ikey = key.index_key()
    for f in fields:
        col = frame[f.name]
        todo = rows & col.notna() & ~col.map(is_encrypted, na_action="ignore").fillna(False).astype(bool)
        enc = col.astype(object).copy()
        idx = pd.Series(None, index=frame.index, dtype=object)
        for i in frame.index[todo]:
            plain = str(col.at[i])
            enc.at[i] = encrypt(plain, f.name, frame.at[i, ID], key)
            idx.at[i] = blind_index(plain, key, ikey)
        frame[f.name] = enc
        frame[hmac_column(f.name)] = idx
    return frame
