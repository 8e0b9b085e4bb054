"""A private sshd on 127.0.0.1 standing in for a remote VM (the real thing, not a mock).

Its own host key, config (``UsePAM no``), pid file and a high port; a test user of the
session's own (``amlrt<pid>``, removed afterwards) made with ``useradd -m`` + ``chpasswd``
that logs in with a key or a password and is in the ``docker`` group when there is one. Needs root (CI runs as root) and openssh-server
(``.ci/services/sshd.sh`` installs it); otherwise ``require_service``.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
USER_PREFIX = "amlrt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


@dataclass
class SSHServer:
    root: Path
    port: int
    user: str
    password: str
    key_file: Path
    known_hosts: Path
    host_key: Path
    config: Path
    home: Path

    @property
    def pidfile(self) -> Path:
        return self.root / "sshd.pid"

    def start(self) -> None:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        subprocess.run([SSHD, "-f", str(self.config), "-E", str(self.root / "sshd.log")], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start: " + (self.root / "sshd.log").read_text()[-2000:])

    def stop(self) -> None:
        """Kill the listener and every connection it serves (as a network failure would)."""
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return
        for child in [pid, *_descendants(pid)]:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.pidfile.unlink(missing_ok=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.05)
            except OSError:
                return

    def remove_user(self) -> None:
        """Stop what the session's test user still runs (a failed test's leftovers), then
        delete the user and its home (workspaces, envs)."""
        proc = subprocess.run(["ps", "-u", self.user, "-o", "pid="], capture_output=True, text=True)
        for pid in proc.stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["userdel", "-r", "-f", self.user], capture_output=True)

    def user_processes(self) -> list[str]:
        proc = subprocess.run(["ps", "-u", self.user, "-o", "pid=,args="], capture_output=True, text=True)
        return [line.strip() for line in proc.stdout.splitlines() if line.strip()]

    def compute_yaml(self, kind: str = "remote", auth: str = "key", extra: str = "") -> str:
        lines = [f"type: {kind}", "address: 127.0.0.1", f"port: {self.port}", f"username: {self.user}",
                 f"knownHostsFile: {self.known_hosts}"]
        if auth == "key":
            lines.append(f"privateKeyFile: {self.key_file}")
        else:
            lines.append("password: secret:AMLRUN_TEST_SSH_PASSWORD")
        return "\n".join(lines) + "\n" + extra


#: the servers this process started (one at most: they would share the test user)
_started: list[Path] = []


def _run(*cmd: str, input: str | None = None) -> None:
    subprocess.run(cmd, check=True, input=input, text=True, capture_output=True)


def start_test_sshd(root: Path) -> SSHServer:
    """Create a test user of its own (``amlrt<pid>``: concurrent sessions never share one)
    and start a private sshd with its files under ``root``. Needs root."""
    os.chmod(root, 0o755)
    if _started:
        raise RuntimeError("a second test sshd in one process would reset the first one's user, password and key: "
                           "use the conftest's sshd fixture, do not import it into a test module")
    _started.append(root)
    user = f"{USER_PREFIX}{os.getpid()}"
    try:
        pwd.getpwnam(user)
    except KeyError:
        _run("useradd", "-m", "-s", "/bin/bash", user)
    password = "pw-" + secrets.token_hex(12)
    _run("chpasswd", input=f"{user}:{password}\n")
    try:
        grp.getgrnam("docker")
        _run("usermod", "-aG", "docker", user)
    except KeyError:
        pass
    entry = pwd.getpwnam(user)
    home = Path(entry.pw_dir)
    key = root / "id_ed25519"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    host_key = root / "host_ed25519"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {root / 'sshd.pid'}\n"
        "UsePAM no\nPasswordAuthentication yes\nPubkeyAuthentication yes\nKbdInteractiveAuthentication no\n"
        "AuthorizedKeysFile .ssh/authorized_keys\nStrictModes no\nPermitRootLogin no\n"
        f"AllowUsers {user}\nMaxSessions 50\nMaxStartups 50\nClientAliveInterval 0\n"
    )
    known = root / "known_hosts"
    pub = (root / "host_ed25519.pub").read_text().split()
    known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    server = SSHServer(root, port, user, password, key, known, host_key, config, home)
    server.start()
    return server


def sshd_unavailable() -> str | None:
    """Why a private sshd cannot run here (None when it can)."""
    if not os.path.exists(SSHD):
        return "openssh-server is not installed (.ci/services/sshd.sh installs it)"
    if os.geteuid() != 0:
        return "creating the test user and starting sshd need root"
    return None


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    from conftest import require_service

    why = sshd_unavailable()
    if why:
        require_service("sshd", why)
    server = start_test_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
    server.remove_user()
