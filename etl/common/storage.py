"""Object storage for what the collecting organisation keeps itself (staged data, the media
store): an fsspec URL through Airflow's `ObjectStoragePath`, credentials in an Airflow
connection, and `token`, a storage-safe name for any text (a Chinese unit name, an orgNo)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import TYPE_CHECKING, Any

from etl.common.errors import ConfigError

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

_DIGEST = 16  # hex characters of SHA-256 in a token


def token(text: str, *, keep: int = 24) -> str:
    """A key part for any text: up to `keep` readable ASCII characters, then `-` and 16 hex
    of the text's SHA-256. The digest covers the whole text, so `南京化工` and `苏州电梯` (no
    readable characters at all) or two names equal in their first `keep` characters still get
    different parts."""
    if not 0 <= keep <= 150:
        raise ValueError(f"token keep={keep}: between 0 and 150 readable characters")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST]
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text)[:keep].strip("_-")
    return f"{readable}-{digest}" if readable else digest


def object_path(url: str, conn_id: str | None) -> Any:
    """An `ObjectStoragePath` for `url` (staging, the media store). A password in it is refused:
    `ObjectStoragePath` would take the user part for a connection id, and the URL ends up in
    logs."""
    from urllib.parse import urlsplit

    from airflow.sdk import ObjectStoragePath

    scheme = url.split("://", 1)[0]
    if urlsplit(url).password is not None:
        raise ConfigError(f"staging URL {scheme}://***@...: keep credentials in an Airflow "
                          f"connection (ETL_STAGING_CONN_ID or {scheme}://CONN_ID@bucket/...), "
                          f"not in the URL")
    try:
        return ObjectStoragePath(url, conn_id=conn_id)
    except ValueError as exc:
        raise no_file_system(scheme, exc) from exc


def no_file_system(scheme: str, why: Exception) -> ConfigError:
    return ConfigError(f"staging {scheme}://...: no file system for it ({why}); install the "
                       f"Airflow provider for {scheme} (it brings the fsspec package), or stage "
                       f"into the target (ETL_STAGING_URL=target)")


def filesystem(root: Any) -> AbstractFileSystem:
    """The root's file system: Airflow's (which applies the connection's credentials), else,
    for a scheme no Airflow provider registers and no connection named, fsspec's own."""
    try:
        return root.fs
    except ValueError as exc:
        airflow_error = exc
    if root.conn_id is None:
        import fsspec

        try:
            return fsspec.filesystem(root.protocol)
        except (ValueError, ImportError) as exc:
            airflow_error = exc
    raise no_file_system(root.protocol, airflow_error)
