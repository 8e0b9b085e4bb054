"""What goes to the cluster for a batch of cells, and how a job's end is read.

Layout in the project's workspace on the shared filesystem::

    snapshots/<tree digest>/      the synced working tree (immutable, shared by cells)
    batches/<batch>/job.sh        one batch script for the whole job array (task i: case i)
    batches/<batch>/slurm-<i>.out SLURM's own messages for task i (time limit, cancel ...)
    runs/<run id>/cmd             the run's argv (no secrets: argv never holds them)
    runs/<run id>/env             its environment: 0600, sourced then deleted by the job
    runs/<run id>/log             stdout+stderr, followed live
    runs/<run id>/started         "<epoch> <node> <partition> <job id>" when the task starts
    runs/<run id>/exit            "<exit code> <epoch> <1 if outputs/ has entries>" when the script ends
    runs/<run id>/work/           the run's working directory (a copy of its snapshot)

Nothing secret is in sbatch's argv or in job.sh: the environment travels in ``env``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from amlrun.targets.base import Status

q = shlex.quote

#: SLURM job states that end a job; and those meaning SLURM itself stopped it
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
#: state → (what the user reads, infrastructure error: eligible for --retries)
KILLED_BY_SLURM = {
    "TIMEOUT": ("time limit", False),
    "OUT_OF_MEMORY": ("out of memory", False),
    "DEADLINE": ("deadline", False),
    "NODE_FAIL": ("node failure", True),
    "PREEMPTED": ("preemption", True),
    "BOOT_FAIL": ("node boot failure", True),
}


def batch_script(runs: list[tuple[str, str]]) -> str:
    """The job script of a batch: array task i runs the i-th (run folder, snapshot folder).

    Few processes a task (a 2-core node runs hundreds of trivial tasks a minute): the task's
    folders come from a ``case``, the snapshot (which holds an empty ``outputs/``) is copied
    whole, the environment file is sourced by the shell itself."""
    cases = "".join(f"  {i}) rd={q(rd)}; snap={q(snap)};;\n" for i, (rd, snap) in enumerate(runs))
    return f"""#!/bin/sh
# amlrun: array task i runs the cell of case i
i=${{SLURM_ARRAY_TASK_ID:-0}}
case $i in
{cases}  *) echo "amlrun: no run for array index $i" >&2; exit 97;;
esac
exec >> "$rd/log" 2>&1
printf '%s %s %s %s\\n' "$(date +%s.%N)" "${{SLURMD_NODENAME:-$(hostname)}}" "${{SLURM_JOB_PARTITION:-}}" \\
  "${{SLURM_JOB_ID:-}}" > "$rd/started"
if [ -f "$rd/env" ]; then . "$rd/env"; rm -f "$rd/env"; fi
if [ -e "$rd/work" ]; then rm -rf "$rd/work"; fi
if cp -a "$snap" "$rd/work"; then
  (cd "$rd/work" && . "$rd/cmd"); code=$?
else
  echo "amlrun: cannot copy the snapshot $snap into $rd/work"; code=126
fi
o=0; for f in "$rd/work/outputs/"* "$rd/work/outputs/".[!.]*; do [ -e "$f" ] || [ -L "$f" ] && {{ o=1; break; }}; done
printf '%s %s %s\\n' "$code" "$(date +%s.%N)" "$o" > "$rd/exit.tmp" && mv "$rd/exit.tmp" "$rd/exit"
exit "$code"
"""


def command_file(argv: list[str], work: str, share: str | None) -> str:
    """``cmd``: sourced in the run's working directory by :func:`batch_script` (a snapshot
    placed by an older amlrun has no ``outputs/``: made then)."""
    outputs = q(f"{work}/outputs")
    made = f"[ -d {outputs} ] || mkdir -p {outputs} || exit 126\n"
    if share:
        made += f"mkdir -p {q(share)} || exit 126\n"
    return f"{made}exec {' '.join(q(a) for a in argv)}\n"


@dataclass(frozen=True)
class Ending:
    """How a task ended, as the target reports it."""

    status: Status  # completed | failed | canceled
    exit_code: int | None
    reason: str = ""
    infrastructure_error: bool = False


def classify(state: str | None, exit_code: int | None, canceled_by_us: bool, slurm_reason: str = "") -> Ending:
    """The run's ending from SLURM's final state (None: unknown) and the script's exit code
    (None: the script did not get to write one)."""
    if state in KILLED_BY_SLURM:
        what, infra = KILLED_BY_SLURM[state]
        return Ending("failed", exit_code, f"killed by SLURM: {what} ({state})", infra)
    if canceled_by_us:
        return Ending("canceled", exit_code, "canceled")
    if exit_code == 0:
        return Ending("completed", 0)
    if exit_code is not None:
        return Ending("failed", exit_code, f"exited with code {exit_code}")
    if state == "CANCELLED":
        return Ending("canceled", None, "canceled outside amlrun (scancel, or by an administrator)")
    if state is None:
        return Ending("failed", None, "the SLURM job left the queue without an exit code (purged, or lost)", True)
    why = f", {slurm_reason}" if slurm_reason and slurm_reason not in ("None", "(null)") else ""
    return Ending(
        "failed", None, f"the SLURM job ended {state}{why} before the script wrote its exit code", state == "BOOT_FAIL"
    )
