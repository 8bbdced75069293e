"""Attachments: the files behind the standard's three M (multimedia) fields — `fileAppendix`
(04, a rule's document), `trainFile` (05, a training's sign-in sheets and photos) and
`riskFile` (08, the four-colour risk map) — read from where a unit keeps them, checked, and
kept in the collecting organisation's own content-addressed store.

The target keeps the name the standard shows (`XX 管理制度.doc`); a name alone is not
evidence, the bytes are. So:

* `FileSource` reads a unit's files through fsspec from a base folder or URL (a mounted
  share, `file://`, `http(s)://`, `sftp://`). A relative path from the unit's data may not
  climb out of that base. Credentials come from the environment that built the base, never a
  mapping; every location shown or stored has them removed (`etl.common.masking`).
* `MediaStore.put` copies a stream in chunks while hashing (a 2 GB video is never in memory),
  judges the type from the first bytes (`filetype`), refuses what is not evidence, disagrees
  with its name, or passes the size limit (it stops reading there), and keeps each distinct
  content once: `<root>/<sha[:2]>/<sha[2:4]>/<sha256>.<ext>`.
* `fetch` joins the two, with a quick-skip index kept inside the store: a file whose location,
  size and modification time are unchanged since it was last stored is not read again.

Errors: a problem with one file is a `MediaError` (its row is rejected, `rule` says why); a file
server that cannot be reached at all is `FileServerUnreachable` (the dataset fails and is
retried: every row would fail alike, and it is not the data's fault). See docs/attachments.md.

    source = FileSource(os.environ["UNIT_FILES"], label="南京化工")
    store = MediaStore()                        # ETL_MEDIA_URL, else var/media
    located, stored = fetch(source, "制度/XX 管理制度.doc", store)
    stored.sha256, stored.media_type, stored.copied
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import secrets
import socket
import stat
import time
import unicodedata
import weakref
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from etl.common import outbound, private, settings
from etl.common.errors import (ConfigError, EtlError, FileServerUnreachable, MediaError,
                               MediaStoreError)
from etl.common.masking import (MASK, is_secret_param, mask_secrets_in_text, mask_url,
                                register_url_secrets)

__all__ = [
    "CHUNK_BYTES", "DEFAULT_LIMIT_BYTES", "EVIDENCE_TYPES", "FileServerUnreachable",
    "FileSource", "Located", "MEDIA_RULES", "MediaError", "MediaStore", "MediaStoreError",
    "Progress", "Stored", "fetch", "judge_type",
]

log = logging.getLogger("etl")

#: Why a file's row is rejected (`MediaError.rule`).
MEDIA_RULES = frozenset({"file_missing", "file_unreadable", "file_type", "file_size", "file_path",
                         "file_redirect"})

#: The largest file accepted unless a call says otherwise: a long training video fits, a disk
#: image dumped by mistake does not.
DEFAULT_LIMIT_BYTES = 2 * 1024 ** 3
#: How much is read, hashed and written at a time: memory per copy is about this much.
CHUNK_BYTES = 1024 * 1024
#: How many first bytes the type is judged from (`filetype` looks at no more).
HEAD_BYTES = 8192

#: Types people hand in as evidence, by the extension their content is judged to have, with
#: the MIME type recorded. Documents (Office 97-2003 and 2007+, WPS's own, OpenDocument, PDF,
#: RTF), photos and scans (phones' HEIC included), recordings and videos. Plain text, archives,
#: executables, databases are not: a `.txt` is no signed rule, a `.zip` could hold anything.
EVIDENCE_TYPES: Mapping[str, str] = MappingProxyType({
    "pdf": "application/pdf",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt": "application/vnd.ms-powerpoint",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "wps": "application/kswps",     # WPS Office's own (OLE) formats, common in Chinese offices
    "et": "application/kset",
    "dps": "application/ksdps",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "rtf": "application/rtf",
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "webp": "image/webp",
    "heic": "image/heic",
    "avif": "image/avif",
    "mp3": "audio/mpeg",
    "wav": "audio/x-wav",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "amr": "audio/amr",
    "ogg": "audio/ogg",
    "flac": "audio/x-flac",
    "mp4": "video/mp4",
    "m4v": "video/x-m4v",
    "mov": "video/quicktime",
    "3gp": "video/3gpp",
    "avi": "video/x-msvideo",
    "wmv": "video/x-ms-wmv",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
    "flv": "video/x-flv",
    "mpg": "video/mpeg",
})

# Other spellings of one extension, as names carry them.
_ALIASES = {"jpeg": "jpg", "jpe": "jpg", "jfif": "jpg", "tiff": "tif", "mpeg": "mpg",
            "heif": "heic", "3gpp": "3gp"}
# Extensions that name one kind of file to whoever opens it: a Word document saved as `.doc`
# with 2007+ content opens in Word and WPS alike, and phones and editors write the same ISO
# media container under all four video names. A name in a family agrees with content of the
# family; across families (a PNG named `.pdf`) it lies.
_FAMILIES = (frozenset({"doc", "docx", "wps"}), frozenset({"xls", "xlsx", "et"}),
             frozenset({"ppt", "pptx", "dps"}), frozenset({"mp4", "m4v", "mov", "3gp"}))
# Office 97-2003 files are OLE compound files: magic bytes say "OLE", and `filetype` guesses
# doc/xls/ppt from one sector, which misses often (and an `.et` looks like an `.xls`). Within
# this set the name's extension decides.
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE_EXTS = frozenset({"doc", "xls", "ppt", "wps", "et", "dps"})
# Office 2007+ files are zips; `filetype` recognises them from their first entries. A zip it
# calls plain `zip` but named like one is opened after copying and checked for the part folder.
_OOXML_PARTS = {"docx": "word/", "xlsx": "xl/", "pptx": "ppt/"}


# --- values ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Located:
    """What the source says about a file before anything is copied: enough to skip a file
    that has not changed since it was stored."""

    location: str  # the file's location at the source, credentials removed: safe to store/show
    size: int | None  # bytes, None when the source does not say (an HTTP server without length)
    mtime: str | None  # modification time / ETag / Last-Modified as the source reports it
    name: str = ""  # the file's name: the path's last segment (`XX 管理制度.doc`), never a query


@dataclass(frozen=True)
class Stored:
    """A file in the store, as judged by its content (never by its name)."""

    sha256: str
    size: int
    media_type: str  # MIME type, by content
    extension: str  # by content: `docx` even when named `.doc`
    copied: bool  # False when the store already had these bytes (another unit's, or earlier)


# --- types -------------------------------------------------------------------------------------

def _name_ext(name: str) -> str:
    """The name's extension, lower case, full-width letters and dot read as ASCII (NFKC:
    `制度．ＤＯＣ` is a `.doc`), spellings aliased (`jpeg` -> `jpg`)."""
    plain = unicodedata.normalize("NFKC", name).replace("\\", "/")
    ext = posixpath.splitext(plain)[1].lstrip(".").lower()
    return _ALIASES.get(ext, ext)


def _agrees(content_ext: str, name_ext: str) -> bool:
    if content_ext == name_ext:
        return True
    return any(content_ext in f and name_ext in f for f in _FAMILIES)


def _shown(name: str) -> str:
    return mask_secrets_in_text(name)


def judge_type(head: bytes, name: str) -> str:
    """The evidence extension of a file whose first bytes are `head` and which is named
    `name`; `MediaError(file_type)` when the content is not evidence or the name disagrees.

    Returns `"zip:docx"` (etc.) when the head shows a zip that only its full contents can
    prove to be a 2007+ Office file: `MediaStore.put` checks it after copying."""
    import filetype

    name_ext = _name_ext(name)
    shown = _shown(name)
    if not head:
        raise MediaError("file_type", f"{shown}: the file is empty: ask the unit for the "
                                      f"document itself")
    if head.startswith(_OLE_MAGIC):
        kind = filetype.guess(head)
        if name_ext in _OLE_EXTS:
            return name_ext
        if kind is not None and kind.extension in _OLE_EXTS and _agrees(kind.extension, name_ext):
            return kind.extension
        raise MediaError("file_type", f"{shown}: the content is an Office 97-2003 file but the "
                                      f"name says .{name_ext or '(none)'}: rename it .doc, .xls "
                                      f"or .ppt (whichever it is), or re-export the document")
    kind = filetype.guess(head)
    content_ext = kind.extension if kind is not None else None
    if content_ext == "zip" and name_ext in _OOXML_PARTS:
        return "zip:" + name_ext
    if content_ext is None or content_ext not in EVIDENCE_TYPES:
        what = f"a {content_ext} file" if content_ext else "not a document, image, audio or video"
        raise MediaError("file_type", f"{shown}: the content is {what}, not evidence "
                                      f"(a document, image, recording or video: pdf, doc/docx, "
                                      f"xls/xlsx, jpg, png, mp3, mp4 ...): ask the unit for the "
                                      f"document itself")
    if not _agrees(content_ext, name_ext):
        raise MediaError("file_type", f"{shown}: the content is {content_ext.upper()} but the "
                                      f"name says .{name_ext or '(none)'}: the name lies about "
                                      f"the file; rename it .{content_ext} or supply the right file")
    return content_ext


def _check_ooxml(fileobj: IO[bytes], expected: str, name: str) -> None:
    """A zip named `.docx`/`.xlsx`/`.pptx` must hold `[Content_Types].xml` and the part folder."""
    try:
        with zipfile.ZipFile(fileobj) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise MediaError("file_type", f"{_shown(name)}: a damaged zip, not a readable "
                                      f".{expected} ({exc}): supply the document again") from exc
    part = _OOXML_PARTS[expected]
    if "[Content_Types].xml" not in names or not any(n.startswith(part) for n in names):
        raise MediaError("file_type", f"{_shown(name)}: a zip archive, not a .{expected} "
                                      f"document (no {part} inside): archives are not evidence; "
                                      f"supply the document itself")


# --- sources -----------------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _clean_base(base: str) -> str:
    """`base` without password or secret query parameters: what a location may show."""
    parts = urlsplit(base)
    if not parts.scheme or len(parts.scheme) == 1:  # a folder (or C:\...)
        return mask_secrets_in_text(base)
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6
        netloc = f"[{netloc}]"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    query = "&".join(
        f"{k}={MASK}" if is_secret_param(unquote(k)) else (f"{k}={v}" if sep else k)
        for k, sep, v in (pair.partition("=") for pair in parts.query.split("&") if pair))
    # not `mask_url`: it would percent-encode a Chinese path, and locations are read by people
    return mask_secrets_in_text(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


def _relative_parts(rel: str, shown_base: str) -> list[str]:
    """The segments of a path from the unit's data, refused (`file_path`) when it is not a
    plain relative path under the base: a drive, a network path (`//host/...`) or URL, or
    climbing with `..`. Backslashes count as separators: Windows servers write
    `附件\\2024\\x.doc`. One leading `/` is the root of the unit's file base, as web systems
    store `/upload/risk/x.jpg` under their web root: it never reaches the server's own root."""
    text = rel.strip().replace("\\", "/")
    if not text:
        raise MediaError("file_missing", f"an empty file path (under {shown_base}): the record "
                                         f"names no file")
    if text.startswith("/") and not text.startswith("//"):
        text = text[1:]
    if "\x00" in text or text.startswith("/") or _DRIVE.match(text) or _SCHEME.match(text) \
            or "://" in text:
        raise MediaError("file_path", f"{_shown(rel)}: not a path relative to the unit's file "
                                      f"folder {shown_base} (drives, network paths and URLs "
                                      f"are refused): store paths relative to that folder")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts or not parts:
        raise MediaError("file_path", f"{_shown(rel)}: climbs out of the unit's file folder "
                                      f"{shown_base} with '..': store paths inside that folder")
    return parts


def _append(base: str, rel: str) -> str:
    """`rel` appended to the path of `base` (a URL's query, such as a signed server's
    `?token=`, stays at the end)."""
    if "?" in base and "://" in base:
        parts = urlsplit(base)
        return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + rel,
                           parts.query, ""))
    return base.rstrip("/") + "/" + rel


def _file_name(rel: str) -> str:
    return rel.strip().replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _walk(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


class FileSource:
    """A base folder or URL of a unit's files, read through fsspec: a local or mounted folder
    path, `file://`, `http(s)://` (a unit's web file server), `sftp://`. A password may reach
    the base only from the environment or an Airflow connection (never from a mapping); it is
    registered for masking and never appears in a `Located.location`, message or log.

    Paths come from the unit's data, so they are untrusted: `..`, absolute paths, drives and
    URLs are refused (`MediaError(file_path)`), and on local folders a symbolic link may not
    lead out of the base either.

    The server is the unit's, so it is not trusted either: connections follow
    `etl.common.outbound`'s rules for file servers. `require_tls` says why TLS is required for
    this base (`outbound.requirement(source spec)`; `ETL_REQUIRE_TLS` applies regardless), and
    a base without it is refused here, before anything is fetched (`ConfigError` naming `where`,
    the mapping key the base comes from). A redirect to another origin rejects that file
    (`file_redirect`); a name leading to an address the base does not name, or an SSH host key
    not recorded, fails the dataset for good (`FileServerUnreachable`, not transient)."""

    #: Seconds to wait for an HTTP server to connect / to send the next bytes.
    CONNECT_TIMEOUT = 30
    READ_TIMEOUT = 120

    def __init__(self, base: str, *, label: str = "", require_tls: str | None = None,
                 where: str = "") -> None:
        if not base or not str(base).strip():
            raise ConfigError(f"{label or 'a unit'}: no base folder or URL for its files")
        base = os.fspath(base)
        register_url_secrets(base)
        self.label = label
        self._raw = base
        self.shown = _clean_base(base)  # the base as messages and locations show it
        scheme = urlsplit(base).scheme.lower() if "://" in base else ""
        if scheme and "::" in base:
            raise ConfigError(f"{label or 'a unit'}: file base {self.shown}: fsspec reads '::' "
                              f"as a chain of file systems, so an IPv6 address cannot be a host "
                              f"here: use a host name")
        self.protocol = scheme or "file"
        outbound.check_file_base(base, require_tls or outbound.requirement(),
                                 where or label or "a unit's file base", self.shown)
        self._fs: Any = None
        self._root: str = ""
        self._local: str | None = None
        if self.protocol == "file":
            path = base[len("file://"):] if base.startswith("file://") else base
            self._local = os.path.realpath(os.path.expanduser(path))
            self.shown = self._local

    def __repr__(self) -> str:
        return f"FileSource({self.shown!r})"

    # -- file system --

    def _filesystem(self) -> tuple[Any, str]:
        """fsspec's file system and root path, made on first use: an sftp connection is opened
        here, so a server that is down fails the first file, as `FileServerUnreachable`."""
        if self._fs is None:
            from fsspec.core import url_to_fs

            kwargs: dict[str, Any] = {}
            if self.protocol in ("http", "https"):
                import aiohttp

                kwargs["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(
                    total=None, sock_connect=self.CONNECT_TIMEOUT, sock_read=self.READ_TIMEOUT)}
                kwargs["get_client"] = outbound.http_client(self._raw)
                kwargs["skip_instance_cache"] = True
            try:
                if self.protocol in ("sftp", "ssh"):
                    self._fs, self._root = _sftp(self._raw, self.CONNECT_TIMEOUT)
                else:
                    self._fs, self._root = url_to_fs(self._raw, **kwargs)
            except Exception as exc:  # noqa: BLE001 - classified below
                raise self._unreachable(exc) from None
            self._root = self._root.rstrip("/")
            if self.protocol in ("sftp", "ssh"):  # an SSH transport is a thread and a socket until closed
                self._finalizer = weakref.finalize(self, _close_sftp, self._fs)
        return self._fs, self._root

    def close(self) -> None:
        """Close the connection to the server (an SFTP session; HTTP sessions close when the
        source is dropped). The source opens a new one if used again."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
        self._fs = None

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _path(self, rel: str) -> tuple[str, str]:
        """(the path fsspec reads, the location shown) for `rel`."""
        parts = _relative_parts(rel, self.shown)
        shown = _append(self.shown, "/".join(parts))
        if self._local is not None:
            path = os.path.join(self._local, *parts)
            real = os.path.realpath(path)
            if real != self._local and not real.startswith(self._local.rstrip(os.sep) + os.sep):
                raise MediaError("file_path", f"{shown}: a symbolic link out of the unit's file "
                                              f"folder {self.shown}: copy the file into the folder")
            return real, shown
        fs, root = self._filesystem()
        if self.protocol in ("http", "https"):
            # each segment percent-encoded: a `#`, `?` or `%` in a Chinese file name is a name
            return _append(root, "/".join(quote(p, safe="") for p in parts)), shown
        return root + "/" + "/".join(parts), shown

    # -- errors --

    def _unreachable(self, exc: BaseException) -> FileServerUnreachable:
        refused = next((e for e in _walk(exc) if isinstance(e, outbound.Refused)), None)
        if refused is not None:  # the rules' refusal: trying again cannot help
            err = FileServerUnreachable(
                f"{self.label + ': ' if self.label else ''}the file server {self.shown} is "
                f"refused: {mask_secrets_in_text(refused.reason)[:600]}")
            err.transient = False
            return err
        detail = mask_secrets_in_text(f"{type(exc).__name__}: {exc}")[:300]
        err = FileServerUnreachable(
            f"{self.label + ': ' if self.label else ''}the file server {self.shown} cannot be "
            f"reached ({detail}): check that it is up, the address and port, the network or "
            f"VPN from this machine, and its credentials")
        if any(type(e).__name__ in ("AuthenticationException", "BadAuthenticationType")
               for e in _walk(exc)):
            err.transient = False  # a wrong password stays wrong
        return err

    def classify(self, exc: BaseException, shown: str) -> EtlError:
        """An error reading one file as what it means for the run: this file missing or
        unreadable (`MediaError`, the row is rejected) or the server out of reach
        (`FileServerUnreachable`, the dataset fails)."""
        if isinstance(exc, EtlError):
            return exc
        chain = _walk(exc)
        for e in chain:
            if isinstance(e, outbound.RedirectRefused):
                return MediaError("file_redirect", f"{shown}: the unit's file server redirects it "
                                                   f"to {e.target}, another server than the base's "
                                                   f"{e.origin}: not followed; ask the unit to "
                                                   f"serve the file under the base, or, if that "
                                                   f"server is the unit's, make it the base")
            if isinstance(e, outbound.Refused):
                return self._unreachable(e)
        for e in chain:
            status = getattr(e, "status", None)
            if type(e).__name__ == "ClientResponseError" and isinstance(status, int):
                if status in (404, 410):
                    return MediaError("file_missing", f"{shown}: not on the unit's file server "
                                                      f"(HTTP {status}): check the path in the "
                                                      f"record or ask the unit to upload it")
                if status >= 500 or status in (408, 429):
                    return self._unreachable(e)
                return MediaError("file_unreadable", f"{shown}: the unit's file server refuses "
                                                     f"it (HTTP {status}): check the account's "
                                                     f"permission on the file")
        for e in chain:
            if isinstance(e, (socket.gaierror, ConnectionError, TimeoutError,
                              asyncio.TimeoutError)) or type(e).__name__ in (
                    "ClientConnectorError", "ClientConnectionError", "ServerDisconnectedError",
                    "ServerTimeoutError", "ClientOSError", "ClientPayloadError",
                    "NoValidConnectionsError", "SSHException", "AuthenticationException"):
                return self._unreachable(e)
        for e in chain:
            if isinstance(e, (IsADirectoryError, NotADirectoryError)):
                return MediaError("file_missing", f"{shown}: a folder, not a file: the record "
                                                  f"should name the file inside it")
            if isinstance(e, FileNotFoundError):
                return MediaError("file_missing", f"{shown}: no such file: check the path in "
                                                  f"the record or ask the unit to upload it")
            if isinstance(e, PermissionError):
                return MediaError("file_unreadable", f"{shown}: permission denied: give the "
                                                     f"collecting account read access")
        detail = mask_secrets_in_text(f"{type(exc).__name__}: {exc}")[:300]
        return MediaError("file_unreadable", f"{shown}: cannot be read ({detail})")

    def _base_gone(self) -> bool:
        return self._local is not None and not os.path.isdir(self._local)

    # -- API --

    def locate(self, rel: str) -> Located:
        """The file's size and modification time, without reading it. `MediaError` when it is
        not there (`file_missing`) or not a plain relative path (`file_path`);
        `FileServerUnreachable` when the server (or the mounted share) is not there at all."""
        path, shown = self._path(rel)
        if self._base_gone():
            raise FileServerUnreachable(
                f"{self.label + ': ' if self.label else ''}the unit's file folder {self.shown} "
                f"does not exist: check that the share is mounted on this machine")
        if self._local is not None:
            try:
                st = os.stat(path)
            except OSError as exc:
                raise self.classify(exc, shown) from None
            if not stat.S_ISREG(st.st_mode):
                raise MediaError("file_missing", f"{shown}: a folder, not a file: the record "
                                                 f"should name the file inside it")
            mtime = datetime.fromtimestamp(st.st_mtime_ns / 1e9, timezone.utc).isoformat()
            return Located(shown, st.st_size, mtime, _file_name(rel))
        fs, _ = self._filesystem()
        try:
            info = fs.info(path)
        except Exception as exc:  # noqa: BLE001 - classified
            raise self.classify(exc, shown) from None
        if info.get("type") == "directory":
            raise MediaError("file_missing", f"{shown}: a folder, not a file: the record should "
                                             f"name the file inside it")
        size = info.get("size")
        return Located(shown, int(size) if size is not None else None, _mtime_of(info),
                       _file_name(rel))

    def open(self, rel: str) -> BinaryIO:
        """A stream of the file's bytes, read as they are consumed (one HTTP GET, no range
        requests or read-ahead cache; a local file as it is)."""
        path, shown = self._path(rel)
        try:
            if self._local is not None:
                if self._base_gone():
                    raise FileServerUnreachable(
                        f"the unit's file folder {self.shown} does not exist: check that the "
                        f"share is mounted on this machine")
                return open(path, "rb")  # noqa: SIM115 - the caller closes it
            fs, _ = self._filesystem()
            if self.protocol in ("http", "https"):
                # block_size=0 streams one GET; a size given stops fsspec from sending a HEAD
                # first (`locate` did), any true value does
                return _FilledHttpStream(fs.open(path, "rb", block_size=0, size=1))
            return fs.open(path, "rb")
        except Exception as exc:  # noqa: BLE001 - classified
            raise self.classify(exc, shown) from None

    def check(self) -> None:
        """Whether the base can be reached now, for `etl check`: `FileServerUnreachable` when
        not (a folder that does not exist, a server that refuses, a wrong password). A server
        that answers 404 for the base itself (no index page) is reachable."""
        if self._local is not None:
            if self._base_gone():
                raise FileServerUnreachable(
                    f"{self.label + ': ' if self.label else ''}the unit's file folder "
                    f"{self.shown} does not exist: check that the share is mounted on this machine")
            return
        fs, root = self._filesystem()
        try:
            fs.info(root or "/")
        except Exception as exc:  # noqa: BLE001 - classified
            problem = self.classify(exc, self.shown)
            if isinstance(problem, FileServerUnreachable) or (
                    isinstance(problem, MediaError) and problem.rule == "file_redirect"):
                raise problem from None

    def location(self, rel: str) -> str:
        """Where `rel` is, as a location is shown and stored (no credentials)."""
        return self._path(rel)[1]


@functools.cache
def _checked_sftp() -> type:
    """fsspec's SFTP file system, connecting through `outbound.ssh_client` (known host keys, an
    address the rules allow) instead of its own `SSHClient` (which accepts any host key)."""
    from fsspec.implementations.sftp import SFTPFileSystem

    class CheckedSFTPFileSystem(SFTPFileSystem):
        def _connect(self) -> None:
            self.client = outbound.ssh_client(self.host, **self.ssh_kwargs)
            self.ftp = self.client.open_sftp()

    return CheckedSFTPFileSystem


def _sftp(url: str, timeout: float) -> tuple[Any, str]:
    """(file system, root path) of an `sftp://` base: one connection per source (a cached one
    would outlive a server restart)."""
    cls = _checked_sftp()
    options = {**cls._get_kwargs_from_urls(url), "timeout": timeout}
    return cls(skip_instance_cache=True, **options), cls._strip_protocol(url)


def _close_sftp(fs: Any) -> None:
    for thing in (getattr(fs, "ftp", None), getattr(fs, "client", None)):
        try:
            if thing is not None:
                thing.close()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass


def _mtime_of(info: Mapping[str, Any]) -> str | None:
    """The modification stamp fsspec's `info` gives, as text: an ETag and Last-Modified for
    HTTP (both, when given), `mtime` / `LastModified` / `last_modified` for other systems."""
    etag, modified = info.get("ETag"), info.get("Last-Modified")
    if etag or modified:
        return " ".join(f"{k}={v}" for k, v in (("etag", etag), ("last-modified", modified)) if v)
    for key in ("mtime", "LastModified", "last_modified", "modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, datetime):
            return value.isoformat()
        return str(value)
    return None


class _FilledHttpStream(io.RawIOBase):
    """fsspec's streaming HTTP file, read a whole chunk per call: its `read(n)` hands back
    whatever aiohttp has buffered (a 512 MiB file took 860-3,700 reads of "1 MiB"), one hop to
    fsspec's event-loop thread each; filling `n` bytes on the loop makes one hop per chunk
    (512 reads) and memory stays one chunk."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        from fsspec.asyn import sync

        content = self._f.r.content  # the aiohttp response's body stream

        async def fill() -> bytes:
            if n is None or n < 0:
                return await content.read()
            parts, got = [], 0
            while got < n:
                part = await content.read(n - got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
            return b"".join(parts)

        return sync(self._f.loop, fill)

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


class _ClassifiedReader(io.RawIOBase):
    """A source stream whose read errors say what they mean (`FileSource.classify`): a reset
    mid-copy fails the dataset as unreachable, it does not reject the row."""

    def __init__(self, stream: BinaryIO, source: FileSource, shown: str) -> None:
        self._s, self._source, self._shown = stream, source, shown
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._s.read(n)
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._source.classify(exc, self._shown) from None
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        try:
            self._s.close()
        except Exception:  # noqa: BLE001 - closing a half-read HTTP response may complain
            pass
        super().close()


# --- the store ---------------------------------------------------------------------------------

_SHA = re.compile(r"^[0-9a-f]{64}$")


class MediaStore:
    """The collecting organisation's content-addressed file store: each distinct content once,
    at `<root>/<sha[:2]>/<sha[2:4]>/<sha256>.<ext>` (the extension by content, so a report's
    link opens in the browser; the path is built from the digest only, so no Chinese name,
    space or `..` from a unit can shape it). Temporary copies go to `<root>/tmp/`, the
    quick-skip index to `<root>/index/`.

    `url`: a folder (default `ETL_MEDIA_URL`, else `var/media` under the project), or any fsspec
    URL (`s3://bucket/media`, `memory://...`), through Airflow's `ObjectStoragePath` when
    `ETL_MEDIA_CONN_ID` names a connection for its credentials. Local folders and files are
    private (0700 / 0600): evidence holds names, phones and signatures."""

    def __init__(self, url: str | None = None) -> None:
        spec = url if url is not None else (settings.text("ETL_MEDIA_URL") or "var/media")
        spec = os.fspath(spec)
        self._fs: Any = None
        self._local: str | None = None
        has_scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", spec) is not None
        if has_scheme and urlsplit(spec).password is not None:
            scheme = spec.split("://", 1)[0]
            raise ConfigError(f"media store URL {scheme}://***@...: keep credentials in an "
                              f"Airflow connection (ETL_MEDIA_CONN_ID) or the environment, "
                              f"not in the URL")
        if not has_scheme or spec.startswith("file://"):
            folder = Path(spec[len("file://"):] if spec.startswith("file://") else spec)
            folder = folder.expanduser()
            if not folder.is_absolute():
                folder = settings.project_dir() / folder
            self._local = os.path.realpath(folder)
            self._root = self._local
            private.private_dir(self._local)
        else:
            conn_id = settings.text("ETL_MEDIA_CONN_ID")
            if conn_id:
                from etl.common.storage import filesystem, object_path

                root = object_path(spec, conn_id)
                self._fs, self._root = filesystem(root), root.path.rstrip("/")
            else:
                from fsspec.core import url_to_fs

                self._fs, root_path = url_to_fs(spec)
                self._root = root_path.rstrip("/")
            self._protocol = spec.split("://", 1)[0]
        self.describe = mask_url(spec) if has_scheme else self._root

    def __repr__(self) -> str:
        return f"MediaStore({self.describe!r})"

    # -- paths --

    def _join(self, *parts: str) -> str:
        if self._local is not None:
            return os.path.join(self._root, *parts)
        return "/".join((self._root, *parts))

    def _folder_of(self, sha256: str) -> str:
        if not _SHA.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self._join(sha256[:2], sha256[2:4])

    def _find(self, sha256: str) -> str | None:
        folder = self._folder_of(sha256)
        try:
            if self._local is not None:
                names = os.listdir(folder)
            else:
                names = [posixpath.basename(p.rstrip("/")) for p in self._fs.ls(folder, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return None
        for n in sorted(names):
            if n == sha256 or n.startswith(sha256 + "."):
                return self._join(sha256[:2], sha256[2:4], n)
        return None

    def exists(self, sha256: str) -> bool:
        """Whether the store holds content with this digest."""
        return self._find(sha256) is not None

    def path_of(self, sha256: str) -> str:
        """Where stored content is (a local path or the store's URL path): for links in
        reports. `FileNotFoundError` when the store does not hold it."""
        found = self._find(sha256)
        if found is None:
            raise FileNotFoundError(f"{sha256} is not in the media store {self.describe}")
        if self._local is None and "://" not in found:
            return f"{self._protocol}://{found}"
        return found

    # -- low-level writes --

    def _makedirs(self, folder: str) -> None:
        if self._local is not None:
            private.makedirs(folder)
        else:
            self._fs.makedirs(folder, exist_ok=True)

    def _open_temp(self) -> tuple[str, IO[bytes]]:
        tmp = self._join("tmp", f"{os.getpid()}-{secrets.token_hex(8)}.part")
        try:
            self._makedirs(self._join("tmp"))
            if self._local is not None:
                return tmp, private.create(tmp)
            return tmp, self._fs.open(tmp, "wb")
        except OSError as exc:
            raise self._store_error("create a temporary file", exc) from exc

    def _remove(self, path: str) -> None:
        try:
            if self._local is not None:
                os.unlink(path)
            else:
                self._fs.rm_file(path)
        except (FileNotFoundError, OSError):
            pass

    def _publish(self, tmp: str, final: str) -> None:
        """Rename into place: a reader sees the whole object or none (a local rename is
        atomic; other file systems rename as well as they can, object stores copy)."""
        folder = final.rsplit("/" if self._local is None else os.sep, 1)[0]
        self._makedirs(folder)
        if self._local is not None:
            os.replace(tmp, final)
        else:
            self._fs.mv(tmp, final)

    def _store_error(self, what: str, exc: BaseException) -> MediaStoreError:
        detail = mask_secrets_in_text(f"{type(exc).__name__}: {exc}")[:300]
        return MediaStoreError(f"the media store {self.describe} could not {what} ({detail}): "
                               f"check its free space and permissions (ETL_MEDIA_URL)")

    # -- put --

    def put(self, stream: BinaryIO, *, name: str, limit_bytes: int = DEFAULT_LIMIT_BYTES,
            progress: Callable[[int], None] | None = None) -> Stored:
        """Copy `stream` into the store in `CHUNK_BYTES` pieces while hashing it, and return
        what was stored. `name` is the file's name as the standard shows it: its extension
        must agree with the content (`judge_type`). The type is judged from the first bytes
        before anything is written; the copy stops as soon as it passes `limit_bytes`
        (`MediaError(file_size)`), having read at most one byte more. Content the store holds
        already is not kept twice (`copied=False`). `progress(n)` is called with the number
        of bytes of each chunk copied. Never holds more than a chunk in memory."""
        if limit_bytes < 0:
            raise ValueError("limit_bytes must be >= 0")
        head = bytearray()
        while len(head) < HEAD_BYTES:  # a stream may return less than asked
            piece = stream.read(min(HEAD_BYTES - len(head), limit_bytes + 1 - len(head)) or 1)
            if not piece:
                break
            head += piece
            if len(head) > limit_bytes:
                break
        if len(head) > limit_bytes:
            raise self._too_large(name, limit_bytes)
        judged = judge_type(bytes(head), name)
        digest = hashlib.sha256()
        total = 0
        tmp, out = self._open_temp()
        try:
            try:
                chunk = bytes(head)
                while chunk:
                    total += len(chunk)
                    if total > limit_bytes:
                        raise self._too_large(name, limit_bytes)
                    digest.update(chunk)
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise self._store_error("write", exc) from exc
                    if progress is not None:
                        progress(len(chunk))
                    chunk = stream.read(min(CHUNK_BYTES, limit_bytes + 1 - total))
            finally:
                try:
                    out.close()
                except OSError as exc:  # flushing the last bytes
                    raise self._store_error("write", exc) from exc
            if judged.startswith("zip:"):
                judged = judged[4:]
                if self._local is not None:
                    with open(tmp, "rb") as f:
                        _check_ooxml(f, judged, name)
                else:
                    with self._fs.open(tmp, "rb") as f:
                        _check_ooxml(f, judged, name)
            sha = digest.hexdigest()
            existing = self._find(sha)
            if existing is not None:
                self._remove(tmp)
                ext = posixpath.splitext(existing.replace(os.sep, "/"))[1].lstrip(".") or judged
                return Stored(sha, total, EVIDENCE_TYPES.get(ext, EVIDENCE_TYPES[judged]), ext,
                              copied=False)
            final = self._join(sha[:2], sha[2:4], f"{sha}.{judged}")
            try:
                self._publish(tmp, final)
            except OSError as exc:
                raise self._store_error("publish a copied file", exc) from exc
            return Stored(sha, total, EVIDENCE_TYPES[judged], judged, copied=True)
        except BaseException:
            self._remove(tmp)
            raise

    def _too_large(self, name: str, limit: int) -> MediaError:
        return MediaError("file_size", f"{_shown(name)}: larger than the limit of "
                                       f"{_human(limit)}: ask the unit for a smaller export "
                                       f"(compressed video, scanned at a lower resolution), or "
                                       f"raise the limit")

    def put_bytes(self, data: bytes, *, name: str, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> Stored:
        """`put` for bytes already in memory: a BLOB column's value."""
        return self.put(io.BytesIO(data), name=name, limit_bytes=limit_bytes)

    # -- the quick-skip index --

    def _index_path(self, location: str) -> str:
        key = hashlib.sha256(location.encode("utf-8", "surrogatepass")).hexdigest()
        return self._join("index", key[:2], key + ".json")

    def remembered(self, location: str, size: int | None, mtime: str | None) -> Stored | None:
        """What was stored from this exact location when it last had this size and mtime
        (`copied=False`), if the store still holds it; None when unknown, changed, or when
        the source gives no size or no mtime (then only reading the file can tell)."""
        if size is None or mtime is None:
            return None
        path = self._index_path(location)
        try:
            if self._local is not None:
                with open(path, encoding="utf-8") as f:
                    entry = json.load(f)
            else:
                entry = json.loads(self._fs.cat_file(path))
        except (FileNotFoundError, ValueError, OSError):
            return None
        if (entry.get("location"), entry.get("source_size"), entry.get("mtime")) != \
                (location, size, mtime):
            return None
        sha = entry.get("sha256", "")
        if not _SHA.match(sha) or not self.exists(sha):
            return None
        return Stored(sha, int(entry["size"]), entry["media_type"], entry["extension"],
                      copied=False)

    def remember(self, location: str, size: int | None, mtime: str | None,
                 stored: Stored) -> None:
        """Note that `location` with this size and mtime holds `stored`, for `remembered`.
        Nothing is noted without a size and mtime. The location includes the unit's base,
        so two units' `附件/1.doc` are two entries."""
        if size is None or mtime is None:
            return
        entry = {"location": location, "source_size": size, "mtime": mtime,
                 **{k: v for k, v in asdict(stored).items() if k != "copied"}}
        data = json.dumps(entry, ensure_ascii=False, sort_keys=True).encode("utf-8")
        path = self._index_path(location)
        folder = path.rsplit("/" if self._local is None else os.sep, 1)[0]
        try:
            self._makedirs(folder)
            if self._local is not None:
                tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
                try:
                    with private.create(tmp) as f:
                        f.write(data)
                    os.replace(tmp, path)
                finally:
                    if os.path.lexists(tmp):
                        os.unlink(tmp)
            else:
                self._fs.pipe_file(path, data)
        except OSError as exc:
            raise self._store_error("write its index", exc) from exc


# --- fetch -------------------------------------------------------------------------------------

def fetch(source: FileSource, rel: str, store: MediaStore, *, name: str | None = None,
          limit_bytes: int = DEFAULT_LIMIT_BYTES,
          progress: Callable[[int], None] | None = None) -> tuple[Located, Stored]:
    """Bring one file of a unit into the store: locate it; if the store remembers this
    location with this size and mtime, nothing is read; else stream it in (`put`) and
    remember it. `name` (default: the path's last segment) is the name whose extension the
    content must agree with. A file the source says is over the limit is refused unread."""
    located = source.locate(rel)
    file_name = name or located.name or _file_name(rel)
    if located.size is not None and located.size > limit_bytes:
        raise MediaError("file_size", f"{located.location}: {_human(located.size)}, larger than "
                                      f"the limit of {_human(limit_bytes)}: ask the unit for a "
                                      f"smaller export, or raise the limit")
    known = store.remembered(located.location, located.size, located.mtime)
    if known is not None:
        return located, known
    reader = _ClassifiedReader(source.open(rel), source, located.location)
    try:
        try:
            stored = store.put(reader, name=file_name, limit_bytes=limit_bytes, progress=progress)
        except MediaError as exc:
            text, named = str(exc), _shown(file_name)
            if text.startswith(named + ":"):  # name the file by its whole location
                raise MediaError(exc.rule, located.location + text[len(named):]) from None
            raise
    finally:
        reader.close()
    if located.size == stored.size:  # else it changed while being read: ask again next time
        store.remember(located.location, located.size, located.mtime, stored)
    return located, stored


# --- progress ----------------------------------------------------------------------------------

def _human(n: int) -> str:
    for unit, size in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


class Progress:
    """One log line per dataset at most every `every_seconds` (and on `close`), so a long
    transfer shows it is alive without a line per file: `南京化工 04: 3 files, 812 MB copied`.

    Pass `progress.add` as `put`/`fetch`'s `progress`, call `file_done(stored)` after each
    file. Counts files and copied bytes; deduplicated and skipped files count as files."""

    def __init__(self, label: str, *, every_seconds: float = 30.0,
                 logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.every = every_seconds
        self.log = logger or log
        self._clock = clock
        self.files = 0
        self.copied_files = 0
        self.bytes = 0
        self._last = clock()
        self._logged = False

    def add(self, n: int) -> None:
        """`n` more bytes copied; logs if the last line is older than `every_seconds`."""
        self.bytes += n
        self._maybe_log()

    def file_done(self, stored: Stored | None = None) -> None:
        self.files += 1
        if stored is not None and stored.copied:
            self.copied_files += 1
        self._maybe_log()

    def line(self) -> str:
        files = f"{self.files} file{'s' if self.files != 1 else ''}"
        return f"{self.label}: {files}, {_human(self.bytes)} copied"

    def _maybe_log(self) -> None:
        now = self._clock()
        if now - self._last >= self.every:
            self._last = now
            self._logged = True
            self.log.info("%s", self.line())

    def close(self) -> None:
        """The last line, if anything was logged before or anything was copied."""
        if self._logged or self.bytes:
            self.log.info("%s", self.line())
