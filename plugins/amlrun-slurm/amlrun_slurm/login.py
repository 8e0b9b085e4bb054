"""The login node: this machine, or one reached over SSH.

Both answer the same small interface as :class:`amlrun.targets.ssh.connection.SSHSession` (``run`` a POSIX
sh script with optional stdin, ``run_checked``, ``settings.label``), so amlrun's SSH layer
(:func:`amlrun.targets.ssh.transfer.sync_tree`, :func:`amlrun.targets.ssh.transfer.fetch_tree` with its safe
extraction) serves both: over SSH they use the session's connection (host-key checks,
reconnects); here they run ``sh -c`` locally.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from amlrun.errors import TargetUnavailable


@dataclass(frozen=True)
class LocalLabel:
    label: str = "the login node (this machine)"


class LocalShell:
    """``sh -c SCRIPT`` on this machine, shaped like :class:`amlrun.targets.ssh.connection.SSHSession`."""

    def __init__(self) -> None:
        self.settings = LocalLabel()

    def run(
        self, script: str, *, stdin: bytes | Iterable[bytes] | None = None, timeout: float | None = 120, stdout_to=None
    ):
        from amlrun.targets.ssh.connection import CommandResult

        data = stdin if stdin is None or isinstance(stdin, (bytes, bytearray)) else b"".join(stdin)
        try:
            proc = subprocess.run(
                ["sh", "-c", script],
                input=data if data is not None else b"",
                capture_output=True,
                timeout=timeout,
                env=local_environment(),
            )
        except subprocess.TimeoutExpired:
            raise TargetUnavailable(f"{self.settings.label}: a command did not finish within {timeout:g}s") from None
        out = proc.stdout
        if stdout_to is not None:
            stdout_to.write(out)
            out = b""
        return CommandResult(proc.returncode, out.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))

    def run_checked(self, script: str, what: str, **kwargs):
        result = self.run(script, **kwargs)
        if not result.ok:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise TargetUnavailable(
                f"{self.settings.label}: {what} failed (exit {result.exit_code})"
                + (f": {detail[-1]}" if detail else "")
            )
        return result

    def close(self) -> None:
        pass


def local_environment() -> dict[str, str]:
    """This process's environment without any variable holding a secret amlrun resolved:
    sbatch exports the caller's environment into the job (and SLURM's saved state)."""
    from amlrun.secrets import redactor

    return {k: v for k, v in os.environ.items() if redactor(v) == v}
