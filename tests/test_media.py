"""etl.media.files: a unit's attachments read from a local folder and from an HTTP file server the
test starts on 127.0.0.1, judged by content, stored once per content, streamed with bounded
memory. Real files (etl.onboarding.sample_files builds them to their specifications), real servers."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from etl.common.errors import EtlError
from etl.media import files as media
from etl.media.files import (CHUNK_BYTES, FileServerUnreachable, FileSource, MediaError,
                             MediaStore, Progress, Stored, fetch)
from etl.onboarding.sample_files import (docx_bytes, gif_bytes, jpeg_bytes, mp4_header, ole_header,
                                         pdf_bytes, png_bytes, pptx_bytes, xlsx_bytes)

try:
    from sftp_server import sftp_server
except ImportError:  # tests/ became a package
    from tests.sftp_server import sftp_server  # type: ignore[no-redef]

DOC_NAME = "制度/XX 管理制度（２０２５版）.docx"  # Chinese, a space, full-width digits and brackets


def write(folder: Path, rel: str, data: bytes) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture()
def unit_files(tmp_path: Path) -> Path:
    """A unit's file folder: evidence of each kind, and files that must be refused."""
    folder = tmp_path / "unit"
    write(folder, DOC_NAME, docx_bytes("安全生产管理制度"))
    write(folder, "培训/签到表 #1.pdf", pdf_bytes("sign-in sheet"))
    write(folder, "培训/现场照片.jpg", jpeg_bytes())
    write(folder, "风险/四色图.png", png_bytes())
    write(folder, "风险/假的.pdf", png_bytes())  # a PNG named .pdf: the name lies
    write(folder, "制度/说明.doc", "这不是文档，是纯文本".encode())  # text named .doc
    return folder


@pytest.fixture()
def store(tmp_path: Path) -> MediaStore:
    return MediaStore(str(tmp_path / "media"))


def leftovers(store_root: Path) -> list[Path]:
    """Temporary copies left in the store (none may be)."""
    return list((store_root / "tmp").glob("*")) if (store_root / "tmp").exists() else []


def objects(store_root: Path) -> list[Path]:
    """The stored files: <root>/<ab>/<cd>/<sha256>.<ext> (not the index, not tmp)."""
    return [p for p in store_root.rglob("*") if p.is_file()
            and p.parent.parent.parent == store_root and len(p.parent.parent.name) == 2]


# --- an HTTP file server on loopback -----------------------------------------------------------

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; counts requests; names containing `forbidden` answer 403; the
    server's `no_head` refuses HEAD (405) and `no_length` sends bodies without a length;
    `redirects` maps a path to the URL it answers 302 with."""

    def log_message(self, *args):  # quiet
        pass

    def _count(self) -> None:
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.requests[(self.command, self.path)] += 1  # type: ignore[attr-defined]

    def _redirected(self) -> bool:
        target = self.server.redirects.get(self.path)  # type: ignore[attr-defined]
        if target is None:
            return False
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def do_HEAD(self):
        self._count()
        if self._redirected():
            return
        if self.server.no_head:  # type: ignore[attr-defined]
            self.send_error(405)
            return
        if "forbidden" in self.path:
            self.send_error(403)
            return
        super().do_HEAD()

    def do_GET(self):
        self._count()
        if self._redirected():
            return
        if "forbidden" in self.path:
            self.send_error(403)
            return
        if "truncated" in self.path:  # promises 4 MiB, sends 1 MiB and hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(4 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(mp4_header() + bytes(1024 * 1024))
            self.wfile.flush()
            self.close_connection = True
            return
        if not self.server.no_length:  # type: ignore[attr-defined]
            super().do_GET()
            return
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()  # HTTP/1.0, no Content-Length: the body ends when the socket closes
        sent = 0
        with open(path, "rb") as f:
            while block := f.read(256 * 1024):
                try:
                    self.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(block)
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.sent[self.path] += sent  # type: ignore[attr-defined]


@contextmanager
def http_files(folder: Path, *, no_head: bool = False, no_length: bool = False,
               redirects: dict[str, str] | None = None):
    """(base URL, server) of a real HTTP server on 127.0.0.1 serving `folder` (`redirects`: a
    path -> the URL it redirects to; `server.redirects` may be filled once the port is known)."""
    handler = lambda *a, **kw: _Handler(*a, directory=str(folder), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.requests = Counter()
    server.sent = Counter()
    server.lock = threading.Lock()
    server.no_head, server.no_length = no_head, no_length
    server.redirects = dict(redirects or {})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/files", server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def web(unit_files: Path):
    """The unit's folder served under /files/ by a real HTTP server."""
    root = unit_files.parent / "www"
    root.mkdir()
    (root / "files").symlink_to(unit_files)
    with http_files(root) as (base, server):
        yield base, server


def gets(server, fragment: str) -> int:
    return sum(n for (method, path), n in server.requests.items()
               if method == "GET" and fragment in path)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sources(unit_files: Path, web) -> list[FileSource]:
    return [FileSource(str(unit_files), label="local"), FileSource(web[0], label="http")]


# --- storing evidence --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["local", "file-url", "http"])
def test_evidence_is_stored_by_content(kind, unit_files, web, store, tmp_path):
    base = {"local": str(unit_files), "file-url": f"file://{unit_files}", "http": web[0]}[kind]
    source = FileSource(base, label="南京化工")
    expected = {DOC_NAME: ("docx", docx_bytes("安全生产管理制度")),
                "培训/签到表 #1.pdf": ("pdf", pdf_bytes("sign-in sheet")),
                "培训/现场照片.jpg": ("jpg", jpeg_bytes())}
    for rel, (ext, data) in expected.items():
        located, stored = fetch(source, rel, store)
        assert located.size == len(data)
        assert located.mtime
        assert located.location.endswith(rel)
        assert located.name == rel.rsplit("/", 1)[-1]
        assert stored.sha256 == hashlib.sha256(data).hexdigest()
        assert (stored.size, stored.extension, stored.media_type) == \
            (len(data), ext, media.EVIDENCE_TYPES[ext])
        path = Path(store.path_of(stored.sha256))
        assert path.read_bytes() == data
        assert path.name == f"{stored.sha256}.{ext}"  # built from the digest only
        assert path.relative_to(tmp_path / "media").parts[:2] == \
            (stored.sha256[:2], stored.sha256[2:4])
    assert len(objects(tmp_path / "media")) == 3
    assert leftovers(tmp_path / "media") == []  # no temporary copy left


def test_local_store_is_private(unit_files, store, tmp_path):
    _, stored = fetch(FileSource(str(unit_files)), DOC_NAME, store)
    path = Path(store.path_of(stored.sha256))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (tmp_path / "media", path.parent, path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    index = [p for p in (tmp_path / "media" / "index").rglob("*.json")]
    assert index and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in index)


def test_same_bytes_from_two_units_are_stored_once(unit_files, web, store, tmp_path):
    other = tmp_path / "other-unit"
    write(other, "上报/风险四色图.png", png_bytes())
    first = fetch(FileSource(web[0], label="A"), "风险/四色图.png", store)[1]
    second = fetch(FileSource(str(other), label="B"), "上报/风险四色图.png", store)[1]
    assert first.copied and not second.copied
    assert first.sha256 == second.sha256
    assert len(objects(tmp_path / "media")) == 1
    # two units' files at the same relative path are two index entries, never one
    write(other, "风险/四色图.png", png_bytes(rgb=(0, 0, 255)))
    a = fetch(FileSource(str(unit_files)), "风险/四色图.png", store)[1]
    b = fetch(FileSource(str(other)), "风险/四色图.png", store)[1]
    assert a.sha256 != b.sha256 and b.copied


def test_office_kinds_judged_by_content(store):
    assert store.put_bytes(xlsx_bytes(), name="隐患台账.xlsx").extension == "xlsx"
    assert store.put_bytes(pptx_bytes(), name="风险四色图.pptx").extension == "pptx"
    assert store.put_bytes(gif_bytes(), name="a.GIF").extension == "gif"
    assert store.put_bytes(jpeg_bytes(), name="照片.JPEG").extension == "jpg"  # alias, any case
    assert store.put_bytes(docx_bytes("全角"), name="制度．ＤＯＣＸ").extension == "docx"  # full width
    # a 2007+ Word file named .doc opens in Word and WPS alike: kept, typed by its content
    stored = store.put_bytes(docx_bytes("另存为"), name="XX 管理制度.doc")
    assert (stored.extension, stored.media_type) == ("docx", media.EVIDENCE_TYPES["docx"])
    # Office 97-2003 (OLE) files: magic bytes say OLE, the name says which
    assert store.put_bytes(ole_header("doc"), name="制度.doc").extension == "doc"
    assert store.put_bytes(ole_header("xls") + b"et", name="台账.et").extension == "et"
    assert store.put_bytes(ole_header("doc") + b"w", name="制度.wps").extension == "wps"
    with pytest.raises(MediaError) as err:
        store.put_bytes(ole_header("doc") + b"p", name="制度.pdf")
    assert err.value.rule == "file_type" and "Office 97-2003" in str(err.value)


def test_docx_whose_parts_come_late_is_checked_whole(store):
    """filetype sees only the first entries; a zip named .docx is opened after copying."""
    stored = store.put_bytes(docx_bytes(late_part=True), name="制度.docx")
    assert stored.extension == "docx"
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        for i in range(6):
            z.writestr(f"data/{i}.bin", os.urandom(10))
    with pytest.raises(MediaError) as err:
        store.put_bytes(buf.getvalue(), name="伪装.docx")
    assert err.value.rule == "file_type" and "zip archive" in str(err.value)
    assert leftovers(Path(store._root)) == []


def test_put_bytes_for_blob_columns(store, tmp_path):
    data = pdf_bytes("blob")
    first = store.put_bytes(data, name="整改报告.pdf")
    again = store.put_bytes(data, name="另一个名字.pdf")
    assert first.copied and not again.copied and first.sha256 == again.sha256
    assert store.exists(first.sha256)
    assert not store.exists("0" * 64)
    with pytest.raises(FileNotFoundError):
        store.path_of("0" * 64)
    with pytest.raises(ValueError):
        store.exists("../../etc/passwd")


def test_progress_reports_chunks(store):
    seen: list[int] = []
    data = mp4_header() + bytes(3 * CHUNK_BYTES)
    stored = store.put_bytes(data, name="培训.mp4")
    assert stored.copied
    again = store.put(__import__("io").BytesIO(data + b"x"), name="培训.mp4", progress=seen.append)
    assert sum(seen) == len(data) + 1 == again.size
    assert max(seen) <= CHUNK_BYTES


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("via", ["local", "http"])
def test_missing_lying_and_non_evidence_files(via, unit_files, web, store, tmp_path):
    source = sources(unit_files, web)[0 if via == "local" else 1]
    cases = {"制度/不存在.doc": "file_missing", "风险/假的.pdf": "file_type",
             "制度/说明.doc": "file_type",
             # a folder: locally not a file; over HTTP the server's listing page, not evidence
             "制度": "file_missing" if via == "local" else "file_type"}
    for rel, rule in cases.items():
        with pytest.raises(MediaError) as err:
            fetch(source, rel, store)
        assert err.value.rule == rule, (rel, str(err.value))
        assert rel.rsplit("/", 1)[-1] in str(err.value)  # the message names the file
        assert "\n" not in str(err.value)
    assert "the content is PNG but the name says .pdf" in _message(source, "风险/假的.pdf", store)
    assert objects(tmp_path / "media") == []
    assert leftovers(tmp_path / "media") == []


def _message(source, rel, store) -> str:
    with pytest.raises(MediaError) as err:
        fetch(source, rel, store)
    return str(err.value)


def test_http_forbidden_is_unreadable(unit_files, web, store):
    write(unit_files, "forbidden/制度.pdf", pdf_bytes())
    with pytest.raises(MediaError) as err:
        fetch(FileSource(web[0]), "forbidden/制度.pdf", store)
    assert err.value.rule == "file_unreadable" and "HTTP 403" in str(err.value)


@pytest.mark.parametrize("via", ["local", "http"])
def test_paths_may_not_leave_the_base(via, unit_files, web, store, tmp_path):
    write(tmp_path, "secret.pdf", pdf_bytes("not the unit's"))
    source = sources(unit_files, web)[0 if via == "local" else 1]
    for rel in ["../secret.pdf", "培训/../../secret.pdf", "..\\secret.pdf", "/../secret.pdf",
                "C:\\Windows\\win.ini",
                "http://example.com/x.pdf", "//example.com/x.pdf", "file:///etc/passwd"]:
        with pytest.raises(MediaError) as err:
            fetch(source, rel, store)
        assert err.value.rule == "file_path", rel
    assert web[1].requests == Counter() or via == "local" or \
        all("secret" not in p for _, p in web[1].requests)
    assert objects(tmp_path / "media") == []


@pytest.mark.parametrize("via", ["local", "http"])
def test_a_leading_slash_is_the_root_of_the_unit_base_not_the_server(via, unit_files, web, store,
                                                                     tmp_path):
    """Web systems store `/upload/risk/x.jpg` under their web root: read under the unit's base."""
    write(tmp_path, "secret.pdf", pdf_bytes("not the unit's"))
    source = sources(unit_files, web)[0 if via == "local" else 1]
    for rel in ["/etc/passwd", str(tmp_path / "secret.pdf")]:
        with pytest.raises(MediaError) as err:
            fetch(source, rel, store)
        assert err.value.rule == "file_missing", rel
    write(unit_files, "upload/risk/图.pdf", pdf_bytes("the unit's"))
    located, stored = fetch(source, "/upload/risk/图.pdf", store)
    assert located.name == "图.pdf" and stored.media_type == "application/pdf"
    assert [p.read_bytes() for p in objects(tmp_path / "media")] == [pdf_bytes("the unit's")]


def test_a_symlink_out_of_a_local_base_is_refused(unit_files, store, tmp_path):
    write(tmp_path, "elsewhere/secret.pdf", pdf_bytes())
    (unit_files / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(MediaError) as err:
        fetch(FileSource(str(unit_files)), "link/secret.pdf", store)
    assert err.value.rule == "file_path"


def test_windows_separators_are_read_as_folders(unit_files, store):
    _, stored = fetch(FileSource(str(unit_files)), "培训\\现场照片.jpg", store)
    assert stored.extension == "jpg"


@pytest.mark.parametrize("via", ["local", "put"])
def test_over_the_limit_stops_reading(via, unit_files, store, tmp_path):
    size = 5 * CHUNK_BYTES + 123
    write(unit_files, "培训/录像.mp4", mp4_header() + bytes(size - len(mp4_header())))
    limit = 2 * CHUNK_BYTES

    class Counting:  # counts what the store asked for and got
        def __init__(self, f):
            self.f, self.read_bytes = f, 0

        def read(self, n=-1):
            data = self.f.read(n)
            self.read_bytes += len(data)
            return data

    with open(unit_files / "培训/录像.mp4", "rb") as f:
        stream = Counting(f)
        with pytest.raises(MediaError) as err:
            store.put(stream, name="录像.mp4", limit_bytes=limit)
    assert err.value.rule == "file_size" and "2 MB" in str(err.value)
    assert stream.read_bytes <= limit + 1 < size  # stopped right after passing the limit
    assert objects(tmp_path / "media") == []
    assert leftovers(tmp_path / "media") == []
    if via == "local":  # the source says the size: refused before opening
        with pytest.raises(MediaError) as err:
            fetch(FileSource(str(unit_files)), "培训/录像.mp4", store, limit_bytes=limit)
        assert err.value.rule == "file_size" and "录像.mp4" in str(err.value)


def test_over_the_limit_over_http(unit_files, store, tmp_path):
    size = 8 * CHUNK_BYTES
    write(unit_files, "培训/录像.mp4", mp4_header() + bytes(size - len(mp4_header())))
    root = unit_files.parent / "www2"
    root.mkdir()
    (root / "files").symlink_to(unit_files)
    with http_files(root) as (base, server):  # the size is known from HEAD: no GET at all
        with pytest.raises(MediaError) as err:
            fetch(FileSource(base), "培训/录像.mp4", store, limit_bytes=CHUNK_BYTES)
        assert err.value.rule == "file_size"
        assert gets(server, "mp4") == 0
    with http_files(root, no_head=True, no_length=True) as (base, server):
        located = FileSource(base).locate("培训/录像.mp4")
        assert located.size is None  # no length anywhere: only reading can tell
        with pytest.raises(MediaError) as err:
            fetch(FileSource(base), "培训/录像.mp4", store, limit_bytes=CHUNK_BYTES)
        assert err.value.rule == "file_size"
    assert objects(tmp_path / "media") == []


def test_server_without_head_or_length_still_works(unit_files, store, tmp_path):
    root = unit_files.parent / "www3"
    root.mkdir()
    (root / "files").symlink_to(unit_files)
    with http_files(root, no_head=True, no_length=True) as (base, server):
        source = FileSource(base)
        first = fetch(source, DOC_NAME, store)
        second = fetch(source, DOC_NAME, store)
    assert first[0].size is None
    assert first[1].extension == "docx" and first[1].copied and not second[1].copied
    assert gets(server, "docx") >= 3  # no size to trust: the file is read again each time


# --- SFTP ------------------------------------------------------------------------------------

def test_sftp_server(unit_files, store, tmp_path, known_hosts):
    with sftp_server(unit_files.parent, "collector", "Sh1ny-pa55") as server:
        port, opened = server.port, server.opened
        known_hosts.write_text(server.known_hosts_line())  # its key pinned, as a deployment would
        base = f"sftp://collector:Sh1ny-pa55@127.0.0.1:{port}/unit"
        source = FileSource(base, label="无锡锅炉")
        assert "Sh1ny-pa55" not in repr(source)
        located, stored = fetch(source, DOC_NAME, store)
        assert stored.extension == "docx" and stored.copied
        assert stored.sha256 == hashlib.sha256((unit_files / DOC_NAME).read_bytes()).hexdigest()
        assert located.location == f"sftp://collector@127.0.0.1:{port}/unit/{DOC_NAME}"
        assert located.size == (unit_files / DOC_NAME).stat().st_size and located.mtime
        assert len(opened) == 1
        again = fetch(source, DOC_NAME, store)[1]
        assert not again.copied and len(opened) == 1  # unchanged: not opened again
        for rel, rule in [("制度/不存在.doc", "file_missing"), ("风险/假的.pdf", "file_type"),
                          ("../secret.pdf", "file_path")]:
            with pytest.raises(MediaError) as err:
                fetch(source, rel, store)
            assert err.value.rule == rule
            assert "Sh1ny-pa55" not in str(err.value)
        transport = source._fs.client.get_transport()
        assert transport.is_active()
        with source:
            assert fetch(source, DOC_NAME, store)[1].sha256 == stored.sha256
        assert not transport.is_active()  # closed: no SSH thread and socket left per source
        assert not fetch(source, DOC_NAME, store)[1].copied  # reconnects when used again
        source.close()
        wrong = FileSource(base.replace("Sh1ny-pa55", "wrong-pa55"), label="无锡锅炉")
        with pytest.raises(FileServerUnreachable) as err:
            fetch(wrong, DOC_NAME, store)
        assert not err.value.transient  # a wrong password stays wrong: no retry
        assert "wrong-pa55" not in str(err.value) and "credentials" in str(err.value)


# --- unreachable servers -----------------------------------------------------------------------

def test_unreachable_http_server_fails_the_dataset(store):
    source = FileSource(f"http://127.0.0.1:{closed_port()}/files", label="苏州电梯")
    with pytest.raises(FileServerUnreachable) as err:
        fetch(source, DOC_NAME, store)
    assert err.value.transient and isinstance(err.value, EtlError)
    assert "苏州电梯" in str(err.value) and "127.0.0.1" in str(err.value)
    assert "check" in str(err.value)


def test_check_says_whether_a_base_can_be_reached(unit_files, web, tmp_path):
    FileSource(str(unit_files)).check()
    FileSource(web[0]).check()
    FileSource(web[0] + "/no-such-folder").check()  # the server answers: reachable
    for base in (str(tmp_path / "not-mounted"), f"http://127.0.0.1:{closed_port()}/files",
                 f"sftp://u:secret-pw@127.0.0.1:{closed_port()}/files"):
        with pytest.raises(FileServerUnreachable) as err:
            FileSource(base).check()
        assert "secret-pw" not in str(err.value)


def test_a_connection_lost_mid_copy_fails_the_dataset(unit_files, web, store, tmp_path):
    write(unit_files, "truncated/录像.mp4", mp4_header() + bytes(4 * 1024 * 1024 - 40))
    with pytest.raises(FileServerUnreachable) as err:
        fetch(FileSource(web[0], label="常州"), "truncated/录像.mp4", store)
    assert err.value.transient and "常州" in str(err.value)
    assert objects(tmp_path / "media") == [] and leftovers(tmp_path / "media") == []


def test_unknown_host_is_unreachable(store):
    with pytest.raises(FileServerUnreachable):
        fetch(FileSource("http://files.unit.invalid/x"), "a.pdf", store)


def test_unreachable_sftp_server_hides_the_password(store):
    port = closed_port()
    source = FileSource(f"sftp://collector:Sh1ny-pa55@127.0.0.1:{port}/srv/files", label="u")
    assert "Sh1ny-pa55" not in source.shown
    with pytest.raises(FileServerUnreachable) as err:
        fetch(source, "制度/a.pdf", store)
    assert "Sh1ny-pa55" not in str(err.value) and f"127.0.0.1:{port}" in str(err.value)


def test_unmounted_share_is_unreachable(tmp_path, store):
    with pytest.raises(FileServerUnreachable) as err:
        fetch(FileSource(str(tmp_path / "mnt" / "unit-share")), "a.pdf", store)
    assert "mounted" in str(err.value)


def test_credentials_never_reach_a_location(unit_files, web, store):
    base = web[0].replace("http://", "http://collector:Sh1ny-pa55@")
    located, stored = fetch(FileSource(base), DOC_NAME, store)
    assert "Sh1ny-pa55" not in located.location and "collector@127.0.0.1" in located.location
    assert stored.extension == "docx"
    index = "".join(p.read_text() for p in Path(store._root, "index").rglob("*.json"))
    assert "Sh1ny-pa55" not in index and DOC_NAME.split("/")[-1] in index


# --- incremental: an unchanged file is not read again ------------------------------------------

def test_base_with_chinese_path_and_a_token(unit_files, store):
    root = unit_files.parent / "www-cn"
    (root / "单位 附件").mkdir(parents=True)
    write(root / "单位 附件", "制度/XX 管理制度.pdf", pdf_bytes())
    with http_files(root) as (base, server):
        base = base.rsplit("/files", 1)[0] + "/单位 附件?token=Sekr3t-value"
        located, stored = fetch(FileSource(base), "制度/XX 管理制度.pdf", store)
        assert stored.extension == "pdf"
        assert located.location.endswith("/单位 附件/制度/XX 管理制度.pdf?token=***")
        assert located.name == "XX 管理制度.pdf"
        assert "Sekr3t-value" not in located.location
        with pytest.raises(MediaError) as err:
            fetch(FileSource(base), "制度/没有.pdf", store)
        assert "Sekr3t-value" not in str(err.value) and "没有.pdf" in str(err.value)
    with pytest.raises(EtlError):
        FileSource("http://[::1]:8080/docs")


def test_unchanged_http_file_is_not_downloaded_again(unit_files, web, store):
    base, server = web
    source = FileSource(base)
    first = fetch(source, "培训/签到表 #1.pdf", store)
    assert gets(server, ".pdf") == 1
    second = fetch(source, "培训/签到表 #1.pdf", store)
    assert gets(server, ".pdf") == 1  # HEAD only
    assert second == (first[0], Stored(**{**first[1].__dict__, "copied": False}))
    # changed: new bytes, new size, new Last-Modified -> read again, a new object
    path = unit_files / "培训/签到表 #1.pdf"
    path.write_bytes(pdf_bytes("sign-in sheet, second session"))
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    third = fetch(source, "培训/签到表 #1.pdf", store)
    assert gets(server, ".pdf") == 2
    assert third[1].copied and third[1].sha256 != first[1].sha256


def test_quick_skip_trusts_location_size_and_mtime(unit_files, store):
    """Same size and mtime: the store's answer comes from its index (the file is not read, as
    the stale digest shows). A new mtime makes it read the file afresh."""
    source = FileSource(str(unit_files))
    path = unit_files / "风险/四色图.png"
    _, first = fetch(source, "风险/四色图.png", store)
    before = path.stat()
    path.write_bytes(png_bytes(rgb=(30, 200, 30)))  # same size, other colour
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    _, again = fetch(source, "风险/四色图.png", store)
    assert again.sha256 == first.sha256 and not again.copied  # not read
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    _, changed = fetch(source, "风险/四色图.png", store)
    assert changed.copied and changed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_remembered_needs_size_mtime_and_the_object(store):
    stored = store.put_bytes(gif_bytes(), name="a.gif")
    store.remember("/unit/a.gif", 10, "t1", stored)
    assert store.remembered("/unit/a.gif", 10, "t1") == Stored(**{**stored.__dict__, "copied": False})
    assert store.remembered("/unit/a.gif", 11, "t1") is None
    assert store.remembered("/unit/a.gif", 10, "t2") is None
    assert store.remembered("/other-unit/a.gif", 10, "t1") is None
    assert store.remembered("/unit/a.gif", None, "t1") is None
    store.remember("/unit/b.gif", 10, None, stored)
    assert store.remembered("/unit/b.gif", 10, None) is None
    os.unlink(store.path_of(stored.sha256))  # the object went: copy again
    assert store.remembered("/unit/a.gif", 10, "t1") is None


def test_store_url_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ETL_MEDIA_URL", str(tmp_path / "from-env"))
    store = MediaStore()
    stored = store.put_bytes(png_bytes(), name="x.png")
    assert Path(store.path_of(stored.sha256)).is_relative_to(tmp_path / "from-env")


def test_fsspec_store(tmp_path):
    store = MediaStore("memory://media-test-store")
    stored = store.put_bytes(docx_bytes(late_part=True), name="制度.docx")
    assert store.exists(stored.sha256) and stored.extension == "docx"
    assert store.path_of(stored.sha256).startswith("memory://")
    assert not store.put_bytes(docx_bytes(late_part=True), name="b.docx").copied
    store.remember("memory-loc", 1, "t", stored)
    assert store.remembered("memory-loc", 1, "t").sha256 == stored.sha256
    with pytest.raises(Exception) as err:
        MediaStore("s3://user:pw@bucket/media")
    assert "pw@" not in str(err.value)


def test_progress_lines(caplog):
    ticks = iter(range(0, 1000, 10))
    progress = Progress("南京化工 04", every_seconds=25, clock=lambda: next(ticks))
    with caplog.at_level(logging.INFO, logger="etl"):
        for _ in range(3):
            progress.add(300 * 1024 * 1024)
            progress.file_done(Stored("0" * 64, 1, "application/pdf", "pdf", True))
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1] == "南京化工 04: 3 files, 900 MB copied"
    assert 2 <= len(lines) <= 4  # at most one per 25 s of the fake clock, plus the last


# --- bounded memory ----------------------------------------------------------------------------

_COPY = textwrap.dedent("""
    import json, resource, sys
    from etl.media.files import FileSource, MediaStore, fetch
    from etl.onboarding.sample_files import mp4_header
    base, rel, store_root, warm = sys.argv[1:5]
    store, source = MediaStore(store_root), FileSource(base)
    fetch(source, warm, store)            # imports, event loop, sessions: part of the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    located, stored = fetch(source, rel, store)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_kb": baseline, "peak_kb": peak, "sha256": stored.sha256,
                      "size": stored.size, "copied": stored.copied}))
""")


def big_mp4(folder: Path, mb: int) -> tuple[str, str]:
    """An MP4 header then filler, written a chunk at a time; (rel, sha256)."""
    rel = "培训/消防演练 录像.mp4"
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    block = bytes(range(256)) * 4096  # 1 MiB, not all zeros
    with open(path, "wb") as f:
        head = mp4_header()
        f.write(head)
        digest.update(head)
        for _ in range(mb):
            f.write(block)
            digest.update(block)
    return rel, digest.hexdigest()


@pytest.mark.parametrize("via", ["local", "http"])
def test_200_mb_copied_with_bounded_memory(via, tmp_path):
    folder = tmp_path / "unit"
    rel, sha = big_mp4(folder, 200)
    write(folder, "warm.jpg", jpeg_bytes())
    script = tmp_path / "media_copy_child.py"
    script.write_text(_COPY)

    def run(base: str) -> dict:
        out = subprocess.run([sys.executable, str(script), base, rel, str(tmp_path / "media"),
                              "warm.jpg"], capture_output=True, text=True, timeout=600,
                             cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    if via == "local":
        result = run(str(folder))
    else:
        with http_files(folder) as (base, _):
            result = run(base.rsplit("/files", 1)[0])
    assert result["sha256"] == sha and result["copied"]
    assert result["size"] == 200 * 1024 * 1024 + len(mp4_header())
    grew_mb = (result["peak_kb"] - result["baseline_kb"]) / 1024
    assert grew_mb < 64, f"peak RSS grew by {grew_mb:.0f} MB copying 200 MB"
