"""A real SFTP server on 127.0.0.1 for tests: paramiko's server side, serving one folder
read-only to one user and password under a host key. The client side under test (fsspec's
SFTPFileSystem, also paramiko) talks SSH to it over a real socket like to any unit's file server.

    with sftp_server(folder, "collector", "pw") as server:
        known_hosts.write_text(server.known_hosts_line())   # pin its key
        FileSource(f"sftp://collector:pw@127.0.0.1:{server.port}/") ...
"""

from __future__ import annotations

import os
import posixpath
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

_HOST_KEY: paramiko.RSAKey | None = None


def _host_key() -> paramiko.RSAKey:
    global _HOST_KEY
    if _HOST_KEY is None:
        _HOST_KEY = paramiko.RSAKey.generate(2048)
    return _HOST_KEY


@dataclass
class SftpServer:
    """A running server: its port and host key, and what reached it."""

    port: int
    host_key: paramiko.PKey
    opened: list[str] = field(default_factory=list)  # paths opened
    logins: list[str] = field(default_factory=list)  # user names that sent a password
    connections: list[tuple] = field(default_factory=list)  # peers that connected

    def known_hosts_line(self, host: str = "127.0.0.1", key: paramiko.PKey | None = None) -> str:
        """The server's line in a known_hosts file (`key`: another key, as a stale line)."""
        key = key or self.host_key
        return f"[{host}]:{self.port} {key.get_name()} {key.get_base64()}\n"


class _Auth(paramiko.ServerInterface):
    def __init__(self, user: str, password: str, logins: list[str]):
        self.user, self.password, self.logins = user, password, logins

    def check_auth_password(self, username, password):
        self.logins.append(username)
        if (username, password) == (self.user, self.password):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def get_allowed_auths(self, username):
        return "password"

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _Handle(paramiko.SFTPHandle):
    def stat(self):
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))


class _Files(paramiko.SFTPServerInterface):
    """`/` is the served folder; paths are normalised, never leave it."""

    def __init__(self, server, *args, root: str, opened: list[str], **kwargs):
        super().__init__(server, *args, **kwargs)
        self.root, self.opened = root, opened

    def _real(self, path: str) -> str:
        return os.path.join(self.root, posixpath.normpath("/" + path).lstrip("/"))

    def canonicalize(self, path):
        return posixpath.normpath("/" + path)

    def stat(self, path):
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._real(path)))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    lstat = stat

    def list_folder(self, path):
        real = self._real(path)
        try:
            return [paramiko.SFTPAttributes.from_stat(os.stat(os.path.join(real, n)), n)
                    for n in os.listdir(real)]
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def open(self, path, flags, attr):
        if flags & (os.O_WRONLY | os.O_RDWR):
            return paramiko.SFTP_PERMISSION_DENIED
        try:
            f = open(self._real(path), "rb")  # noqa: SIM115 - the handle closes it
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        self.opened.append(path)
        handle = _Handle(flags)
        handle.filename = self._real(path)
        handle.readfile = f
        return handle


@contextmanager
def sftp_server(folder: Path, user: str, password: str,
                host_key: paramiko.PKey | None = None, port: int = 0) -> Iterator[SftpServer]:
    """An SFTP server serving `folder` until the block ends, under `host_key` (default: one
    RSA key per test process), on `port` (default: a free one; give an earlier server's to
    restart it there)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    server = SftpServer(listener.getsockname()[1], host_key or _host_key())
    transports: list[paramiko.Transport] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            server.connections.append(peer)
            transport = paramiko.Transport(conn)
            transport.add_server_key(server.host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Files,
                                            root=str(folder), opened=server.opened)
            transports.append(transport)
            try:
                transport.start_server(server=_Auth(user, password, server.logins))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        try:  # wakes the accepting thread: a closed but still listening socket keeps the port
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        listener.close()
        thread.join(timeout=5)
        for t in transports:
            t.close()
