"""The run history: an embedded SQLite index plus one folder per run under ``.amlrun/runs/``.

SQLite in WAL mode with a generous busy timeout lets several amlrun processes record
at once without losing or corrupting anything. A run left "running" by an amlrun
process that died is marked failed the next time the history is read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets as _random
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.errors import UsageError

ACTIVE = ("queued", "preparing", "running")
FINAL = ("completed", "failed", "canceled")
STATUSES = ACTIVE + FINAL

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    created  REAL NOT NULL,
    status   TEXT NOT NULL,
    cell_id  TEXT NOT NULL,
    script   TEXT NOT NULL,
    target   TEXT NOT NULL,
    host     TEXT NOT NULL,
    pid      INTEGER NOT NULL,
    record   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
"""


@dataclass(frozen=True)
class RunRecord:
    """Everything the history keeps about one run."""

    run_id: str
    cell_id: str
    script: str
    target: str
    target_type: str
    runconfig: str
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "queued"
    exit_code: int | None = None
    reason: str = ""
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    amlrun_version: str = ""
    host: str = ""
    pid: int = 0
    pid_started: str = ""
    git_commit: str | None = None
    git_dirty: bool | None = None
    snapshot_digest: str | None = None
    environment_digest: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    artifacts: tuple[dict, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["artifacts"] = list(self.artifacts)
        data["duration"] = self.duration
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["artifacts"] = tuple(values.get("artifacts") or ())
        return cls(**values)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + _random.token_hex(3)


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (guards against pid reuse); empty off Linux."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not started or _process_start(pid) in ("", started)


HOST = socket.gethostname()


class RunStore:
    """The history of one project (``.amlrun/``)."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.runs_dir = state_dir / "runs"
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    # -- connection ----------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.state_dir / "history.sqlite"

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=60, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def exists(self) -> bool:
        return self.db_path.is_file()

    # -- writing -------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def new_record(self, **fields: Any) -> RunRecord:
        from amlrun import __version__

        pid = os.getpid()
        return RunRecord(
            run_id=new_run_id(), created=time.time(), amlrun_version=__version__, host=HOST, pid=pid,
            pid_started=_process_start(pid), **fields,
        )

    def save(self, record: RunRecord) -> RunRecord:
        """Insert or replace ``record`` in the index and its folder's ``record.json``."""
        folder = self.run_dir(record.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(record.to_json(), default=str)
        tmp = folder / f"record.json.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(payload, encoding="utf-8")
        os.replace(tmp, folder / "record.json")
        with self._lock:
            self._db().execute(
                "INSERT OR REPLACE INTO runs (run_id, created, status, cell_id, script, target, host, pid, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.run_id, record.created, record.status, record.cell_id, record.script, record.target,
                 record.host, record.pid, payload),
            )
        return record

    def update(self, record: RunRecord, **changes: Any) -> RunRecord:
        return self.save(dataclasses.replace(record, **changes))

    def delete(self, run_id: str) -> None:
        with self._lock:
            self._db().execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    # -- reading -------------------------------------------------------------------------

    def _reap(self) -> None:
        """Mark runs of dead amlrun processes on this host as failed."""
        with self._lock:
            rows = self._db().execute(
                f"SELECT record FROM runs WHERE status IN ({','.join('?' * len(ACTIVE))}) AND host = ?",
                (*ACTIVE, HOST),
            ).fetchall()
        for (payload,) in rows:
            record = RunRecord.from_json(json.loads(payload))
            if not _alive(record.pid, record.pid_started):
                self.update(
                    record, status="failed", ended=record.ended or time.time(),
                    reason="the amlrun process that ran it died (killed or crashed)",
                )

    def list(self, *, limit: int | None = None, status: str | None = None, script: str | None = None,
             target: str | None = None, reap: bool = True) -> list[RunRecord]:
        """Records newest first, filtered in SQL where possible."""
        if not self.exists():
            return []
        if reap:
            self._reap()
        clauses, args = [], []
        for column, value in (("status", status), ("script", script), ("target", target)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT record FROM runs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created DESC, run_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db().execute(sql, args).fetchall()
        return [RunRecord.from_json(json.loads(payload)) for (payload,) in rows]

    def count(self) -> int:
        if not self.exists():
            return 0
        with self._lock:
            return self._db().execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def get(self, run_id: str) -> RunRecord | None:
        if not self.exists():
            return None
        with self._lock:
            row = self._db().execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return RunRecord.from_json(json.loads(row[0])) if row else None

    def resolve(self, ref: str) -> RunRecord:
        """A run by id, unique id prefix, or ``last``; a clear error otherwise."""
        if not self.exists():
            raise UsageError(f"no run history in {self.state_dir}")
        self._reap()
        with self._lock:
            if ref == "last":
                rows = self._db().execute(
                    "SELECT record FROM runs ORDER BY created DESC, run_id DESC LIMIT 1").fetchall()
            else:
                escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                rows = self._db().execute(
                    "SELECT record FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 6", (escaped + "%",)
                ).fetchall()
        if not rows:
            raise UsageError(f"no run matches {ref!r}")
        records = [RunRecord.from_json(json.loads(r[0])) for r in rows]
        exact = [r for r in records if r.run_id == ref]
        if exact:
            return exact[0]
        if len(records) > 1:
            shown = ", ".join(r.run_id for r in records[:5])
            raise UsageError(f"run prefix {ref!r} is ambiguous: {shown}")
        return records[0]
