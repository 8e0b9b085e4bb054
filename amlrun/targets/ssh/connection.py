"""The SSH connection every target reached over SSH uses (``remote``, ``remotedocker``,
an addressed ``cluster``); nothing here knows about runs, snapshots or targets.

- :class:`SSHSettings` — where and how to log in (key or password, port, known_hosts);
  :func:`settings_from_compute` builds it from a compute file, resolving secret references.
- :class:`SSHSession` — one fabric connection reused by every cell of a session, reopened
  with backoff when it drops. Host keys are checked against known_hosts: an unknown host
  is refused with its fingerprint and the exact command that accepts it, never trusted.
- :meth:`SSHSession.run` — a short command, its output captured; :func:`retrying` — an
  idempotent step again after a dropped connection, within :func:`reconnect_seconds`.

Long commands that survive the network are in :mod:`amlrun.targets.ssh.detached`.
Every remote command is a POSIX ``sh`` script passed as one quoted argument, so the
user's login shell (bash, zsh, csh ...) never re-interprets it; every value placed in
one goes through :func:`q` (``shlex.quote``).
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from amlrun.errors import ConfigError, TargetUnavailable, UsageError
from amlrun.targets.outcome import ConnectionLost

q = shlex.quote
T = TypeVar("T")

#: seconds between connection attempts (then the last value again) while reconnecting
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)
DEFAULT_CONNECT_ATTEMPTS = 4
#: how long a running job keeps trying to get its connection back (AMLRUN_SSH_RECONNECT_SECONDS)
DEFAULT_RECONNECT_SECONDS = 300.0
RECONNECT_ENV = "AMLRUN_SSH_RECONNECT_SECONDS"


def reconnect_seconds() -> float:
    """How long a run keeps trying to get a dropped connection back: the one reader of
    ``AMLRUN_SSH_RECONNECT_SECONDS`` (default 300 s)."""
    text = os.environ.get(RECONNECT_ENV, "")
    try:
        return float(text) if text.strip() else DEFAULT_RECONNECT_SECONDS
    except ValueError:
        raise UsageError(f"{RECONNECT_ENV} must be a number of seconds, got {text!r}") from None


class HostKeyUnknown(TargetUnavailable):
    """The host's key is not in known_hosts (never retried, never auto-trusted)."""


class AuthenticationFailed(TargetUnavailable):
    """The host refused our credentials (never retried)."""


@dataclass(frozen=True)
class SSHSettings:
    host: str
    username: str
    port: int = 22
    password: str | None = field(default=None, repr=False)
    key_file: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    known_hosts: str | None = None  # None: $AMLRUN_KNOWN_HOSTS, else ~/.ssh/known_hosts
    connect_timeout: float = 15.0

    @property
    def known_hosts_path(self) -> Path:
        path = self.known_hosts or os.environ.get("AMLRUN_KNOWN_HOSTS") or "~/.ssh/known_hosts"
        return Path(os.path.expanduser(path))

    @property
    def host_key_name(self) -> str:
        """How known_hosts names this host (``[host]:port`` unless port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def label(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


def settings_from_compute(compute, where: str | None = None) -> SSHSettings:
    """Build settings from a compute target's ``address``/``port``/``username``/``password``/
    ``privateKeyFile``/``passphrase``/``knownHostsFile``; secret references are resolved
    (and registered for redaction)."""
    from amlrun.secrets import resolve

    where = where or compute.source or compute.name
    address = str(compute.get("address") or "").strip()
    if not address:
        raise ConfigError("'address' is required for a target reached over SSH", where)
    host, port = address, compute.get("port")
    if "@" in host:
        user_part, host = host.rsplit("@", 1)
    else:
        user_part = None
    if host.startswith("[") and "]" in host:  # [v6]:port
        inner, _, rest = host[1:].partition("]")
        host, port = inner, (rest.lstrip(":") or port)
    elif host.count(":") == 1:
        host, _, port_text = host.partition(":")
        port = port or port_text
    try:
        port = int(port or 22)
    except (TypeError, ValueError):
        raise ConfigError(f"'port' must be a number, got {port!r}", where) from None
    username = str(compute.get("username") or user_part or "").strip()
    if not username:
        raise ConfigError("'username' is required for a target reached over SSH", where)
    password = compute.get("password")
    key_file = compute.get("privateKeyFile")
    passphrase = compute.get("passphrase")
    if not password and not key_file:
        raise ConfigError("set 'password' (a secret reference) or 'privateKeyFile'", where)
    if key_file:
        key_file = os.path.expanduser(str(key_file))
        if not os.path.isfile(key_file):
            raise ConfigError(f"'privateKeyFile' {key_file} does not exist", where)
    from amlrun.secrets import is_reference, redactor

    for key, value in (("password", password), ("passphrase", passphrase)):
        if value and not is_reference(value):
            redactor.add(str(value))
            from amlrun.diagnostics import warn

            warn(
                f"{where}: '{key}' holds the secret itself; move it out of the project with "
                f"'amlrun attach ... --force' (it then becomes a secret: reference)"
            )
    return SSHSettings(
        host=host,
        port=port,
        username=username,
        password=resolve(password, where) if password else None,
        key_file=key_file or None,
        passphrase=resolve(passphrase, where) if passphrase else None,
        known_hosts=compute.get("knownHostsFile"),
    )


def fingerprint(key) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a paramiko key."""
    import base64
    import hashlib

    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def accept_command(settings: SSHSettings, key) -> str:
    """The exact shell command that adds this host key to the known_hosts file in use."""
    line = f"{settings.host_key_name} {key.get_name()} {key.get_base64()}"
    path = settings.known_hosts_path
    return f"mkdir -p {q(str(path.parent))} && echo {q(line)} >> {q(str(path))}"


def _refusing_policy(settings: SSHSettings):
    import paramiko

    class RefuseUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            raise HostKeyUnknown(
                f"{settings.label}: unknown host key {key.get_name()} {fingerprint(key)} (not in "
                f"{settings.known_hosts_path}); if that is the VM's key, accept it with: "
                f"{accept_command(settings, key)}"
            )

    return RefuseUnknown()


def _silence_paramiko() -> None:
    """paramiko logs every failed handshake with a traceback (Python's last-resort
    handler prints it when nothing is configured); amlrun reports the failure in one line."""
    import logging

    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _connect_kwargs(settings: SSHSettings) -> dict[str, object]:
    """paramiko's ``connect`` arguments: only the key or password the compute file names,
    never an agent's or ``~/.ssh``'s."""
    kwargs: dict[str, object] = {
        "allow_agent": False,
        "look_for_keys": False,
        "banner_timeout": settings.connect_timeout,
        "auth_timeout": settings.connect_timeout,
    }
    if settings.key_file:
        kwargs["key_filename"] = [settings.key_file]
        if settings.passphrase:
            kwargs["passphrase"] = settings.passphrase
    if settings.password:
        kwargs["password"] = settings.password
    return kwargs


def open_connection(settings: SSHSettings):
    """One fabric ``Connection``, opened, with host keys checked. Raises TargetUnavailable."""
    import fabric
    import paramiko

    _silence_paramiko()

    config = fabric.Config(lazy=True, overrides={"load_ssh_configs": False})
    conn = fabric.Connection(
        settings.host,
        user=settings.username,
        port=settings.port,
        config=config,
        connect_timeout=settings.connect_timeout,
        connect_kwargs=_connect_kwargs(settings),
    )
    client = conn.client
    client.set_missing_host_key_policy(_refusing_policy(settings))
    if settings.known_hosts_path.is_file():
        try:
            client.load_host_keys(str(settings.known_hosts_path))
        except (OSError, paramiko.SSHException) as exc:
            raise TargetUnavailable(f"cannot read known_hosts {settings.known_hosts_path}: {exc}") from None
    try:
        conn.open()
    except HostKeyUnknown:
        raise
    except paramiko.BadHostKeyException as exc:
        raise TargetUnavailable(
            f"{settings.label}: HOST KEY MISMATCH: the host offered {exc.key.get_name()} {fingerprint(exc.key)} "
            f"but {settings.known_hosts_path} expects {fingerprint(exc.expected_key)}; if the VM was "
            f"reinstalled, remove the old entry with: ssh-keygen -f {q(str(settings.known_hosts_path))} -R "
            f"{q(settings.host_key_name)}"
        ) from None
    except paramiko.AuthenticationException as exc:
        how = "key " + settings.key_file if settings.key_file else "password"
        raise AuthenticationFailed(f"{settings.label}: login refused ({how}): {exc}") from None
    except paramiko.PasswordRequiredException:
        raise AuthenticationFailed(
            f"{settings.label}: the private key {settings.key_file} needs a passphrase "
            "('passphrase' in the compute file, a secret reference)"
        ) from None
    except paramiko.SSHException as exc:
        if "private key" in str(exc).lower() or "not a valid" in str(exc).lower():
            raise AuthenticationFailed(f"{settings.label}: cannot use private key {settings.key_file}: {exc}") from None
        raise _Transient(f"{settings.label}: SSH error: {exc}") from None
    except (TimeoutError, OSError, EOFError) as exc:
        raise _Transient(f"{settings.label}: cannot connect: {exc}") from None
    return conn


class _Transient(TargetUnavailable):
    """A connection failure worth retrying (refused, reset, timed out)."""


def connect_with_retry(
    settings: SSHSettings,
    attempts: int = DEFAULT_CONNECT_ATTEMPTS,
    deadline: float | None = None,
    on_retry: Callable[[str], None] | None = None,
):
    """:func:`open_connection`, retried with backoff for connection failures only
    (never for a refused login or an unknown host key)."""
    tries = 0
    while True:
        try:
            return open_connection(settings)
        except _Transient as exc:
            tries += 1
            wait = BACKOFF[min(tries - 1, len(BACKOFF) - 1)]
            out_of_time = deadline is not None and time.monotonic() + wait > deadline
            if (deadline is None and tries >= attempts) or out_of_time:
                raise ConnectionLost(str(exc)) from None
            if on_retry is not None:
                on_retry(f"{exc}; retrying in {wait:g}s")
            time.sleep(wait)


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def sh(script: str) -> str:
    """``script`` as a command line any login shell hands to POSIX sh unchanged."""
    return "sh -c " + q(script)


class SSHSession:
    """A connection reused by all cells of a session (thread-safe), reopened when it drops."""

    def __init__(self, settings: SSHSettings):
        self.settings = settings
        self._conn = None
        self._lock = threading.Lock()
        self._connected_once = False
        #: why the first connection failed: every later call of the session gets the same
        #: error at once instead of connecting again (a VM that is down stays one line)
        self._first_failure: TargetUnavailable | None = None

    def connection(self, deadline: float | None = None, on_retry=None):
        with self._lock:
            conn = self._conn
            if conn is not None and conn.transport is not None and conn.transport.is_active():
                return conn
            if conn is not None:
                _quiet_close(conn)
                self._conn = None
            if self._first_failure is not None:
                raise type(self._first_failure)(str(self._first_failure))
            if self._connected_once or deadline is not None:
                # a connection that dropped is worth waiting for
                self._conn = connect_with_retry(self.settings, deadline=deadline, on_retry=on_retry)
            else:
                try:
                    self._conn = connect_with_retry(self.settings, attempts=1)
                except TargetUnavailable as exc:
                    self._first_failure = exc
                    raise
            self._connected_once = True
            return self._conn

    def transport(self, deadline: float | None = None, on_retry=None):
        return self.connection(deadline, on_retry).client.get_transport()

    def drop(self) -> None:
        """Forget the current connection (the next call reconnects)."""
        with self._lock:
            if self._conn is not None:
                _quiet_close(self._conn)
                self._conn = None

    def close(self) -> None:
        self.drop()

    def open_channel(self, command: str, deadline: float | None = None, on_retry=None):
        """An exec channel running ``command`` (already a full command line)."""
        for attempt in (1, 2):
            transport = self.transport(deadline, on_retry)
            try:
                channel = transport.open_session(timeout=self.settings.connect_timeout)
                channel.exec_command(command)
                return channel
            except Exception as exc:  # a half-dead transport: reconnect once
                self.drop()
                if attempt == 2:
                    raise ConnectionLost(f"{self.settings.label}: cannot open a channel: {exc}") from None
        raise AssertionError("unreachable")

    def run(
        self, script: str, *, stdin: bytes | Iterable[bytes] | None = None, timeout: float | None = 120, stdout_to=None
    ) -> CommandResult:
        """Run a POSIX sh ``script`` and capture its output (``stdout_to``: a binary file
        receiving stdout instead). ``stdin``: bytes or an iterable of byte chunks."""
        import paramiko

        channel = self.open_channel(sh(script))
        try:
            return _communicate(channel, stdin, timeout, stdout_to)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"{self.settings.label}: the connection dropped during a command: {exc}") from None
        finally:
            channel.close()

    def run_checked(self, script: str, what: str, **kwargs) -> CommandResult:
        result = self.run(script, **kwargs)
        if not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise TargetUnavailable(
                f"{self.settings.label}: {what} failed (exit {result.exit_code})"
                + (f": {detail[-1]}" if detail else "")
            )
        return result


def _quiet_close(conn) -> None:
    try:
        conn.close()
    except Exception:
        pass


def _communicate(channel, stdin, timeout, stdout_to) -> CommandResult:
    out: list[bytes] = []
    err: list[bytes] = []

    def reader(recv, collected: list[bytes], sink):
        while True:
            data = recv(1 << 16)
            if not data:
                return
            if sink is not None:
                sink.write(data)
            else:
                collected.append(data)

    t_out = threading.Thread(target=reader, args=(channel.recv, out, stdout_to), daemon=True)
    t_err = threading.Thread(target=reader, args=(channel.recv_stderr, err, None), daemon=True)
    t_out.start()
    t_err.start()
    try:
        if stdin is not None:
            for chunk in [stdin] if isinstance(stdin, (bytes, bytearray)) else stdin:
                if chunk:
                    channel.sendall(chunk)
        channel.shutdown_write()
    except (OSError, EOFError):
        # the command may have stopped reading (it failed): that is its exit status, not a lost connection
        channel.status_event.wait(10)
        if not channel.exit_status_ready():
            raise ConnectionLost("the connection dropped while sending to a remote command") from None
    deadline = time.monotonic() + timeout if timeout else None
    while not channel.exit_status_ready():
        if deadline is not None and time.monotonic() > deadline:
            channel.close()
            raise TargetUnavailable(f"remote command did not finish within {timeout:g}s")
        if channel.closed:
            break
        channel.status_event.wait(0.2)
    t_out.join(30)
    t_err.join(30)
    status = channel.recv_exit_status() if channel.exit_status_ready() else -1
    if status == -1:
        raise ConnectionLost("the connection dropped while a remote command ran")
    return CommandResult(status, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace"))


def retrying(
    session: SSHSession,
    step: Callable[[], T],
    *,
    window: float | None = None,
    on_note: Callable[[str], None] | None = None,
) -> T:
    """Run an idempotent ``step`` (a sync, a fetch, starting a detached command for a run
    folder), again after a dropped connection, until ``window`` seconds (default
    :func:`reconnect_seconds`) have passed.
    Only connection failures are retried, never a refused login or a failing command."""
    import paramiko

    window = reconnect_seconds() if window is None else window
    deadline = time.monotonic() + window
    tries = 0
    while True:
        try:
            return step()
        except (HostKeyUnknown, AuthenticationFailed):
            raise
        except (ConnectionLost, OSError, EOFError, paramiko.SSHException) as exc:
            wait = BACKOFF[min(tries, len(BACKOFF) - 1)]
            tries += 1
            if time.monotonic() + wait > deadline:
                raise ConnectionLost(f"{session.settings.label}: connection lost: {exc}") from None
            if on_note is not None:
                on_note(f"connection lost ({exc}); retrying in {wait:g}s")
            session.drop()
            time.sleep(wait)
