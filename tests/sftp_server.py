"""A real SFTP server on 127.0.0.1 for tests: paramiko's server side, serving one folder
read-only to one user and password. The client side under test (fsspec's SFTPFileSystem, also
paramiko) talks SSH to it over a real socket like to any unit's file server.

    with sftp_server(folder, "collector", "pw") as port:
        FileSource(f"sftp://collector:pw@127.0.0.1:{port}/") ...
"""

from __future__ import annotations

import os
import posixpath
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko

_HOST_KEY: paramiko.RSAKey | None = None


def _host_key() -> paramiko.RSAKey:
    global _HOST_KEY
    if _HOST_KEY is None:
        _HOST_KEY = paramiko.RSAKey.generate(2048)
    return _HOST_KEY


class _Auth(paramiko.ServerInterface):
    def __init__(self, user: str, password: str):
        self.user, self.password = user, password

    def check_auth_password(self, username, password):
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
def sftp_server(folder: Path, user: str, password: str) -> Iterator[tuple[int, list[str]]]:
    """(port, paths opened so far) of an SFTP server serving `folder` until the block ends."""
    opened: list[str] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    transports: list[paramiko.Transport] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(_host_key())
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Files,
                                            root=str(folder), opened=opened)
            transports.append(transport)
            try:
                transport.start_server(server=_Auth(user, password))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], opened
    finally:
        stop.set()
        listener.close()
        for t in transports:
            t.close()
