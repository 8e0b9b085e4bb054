"""Forwarding a service of a host reached over SSH (its Docker engine) to a local socket."""

from __future__ import annotations

import os
import socket
import threading

from amlrun.targets.ssh.connection import SSHSession


class SocketRelay:
    """A local unix socket (owner-only, in a private temp folder) whose every connection is
    relayed to a fresh channel running ``command`` on the host, e.g. ``docker system
    dial-stdio`` (the host's Docker engine) or ``nc -U /path.sock``. Channels are opened on
    the session's connection, so a dropped connection is reopened by the next client."""

    def __init__(self, session: SSHSession, command: str):
        import tempfile

        self.session = session
        self.command = command
        self._dir = tempfile.mkdtemp(prefix="amlrun-relay-")
        os.chmod(self._dir, 0o700)
        self.path = os.path.join(self._dir, "relay.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        os.chmod(self.path, 0o600)
        self._server.listen(32)
        self._closed = False
        threading.Thread(target=self._accept, name="amlrun-relay", daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            channel = self.session.open_channel(self.command)
        except Exception:
            conn.close()
            return

        def upstream():
            try:
                while True:
                    data = conn.recv(1 << 16)
                    if not data:
                        break
                    channel.sendall(data)
            except (OSError, EOFError):
                pass
            try:
                channel.shutdown_write()
            except (OSError, EOFError):
                pass

        up = threading.Thread(target=upstream, daemon=True)
        up.start()
        try:
            while True:
                data = channel.recv(1 << 16)
                if not data:
                    break
                conn.sendall(data)
        except (OSError, EOFError):
            pass
        finally:
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            up.join(5)
            channel.close()
            conn.close()

    def close(self) -> None:
        import shutil

        self._closed = True
        try:
            self._server.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
