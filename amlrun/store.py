"""The run history: an embedded SQLite index plus one folder per run under ``.amlrun/runs/``.

SQLite in WAL mode with a generous busy timeout lets several amlrun processes record
at once without losing or corrupting anything. A run left "running" by an amlrun
process that died is marked failed the next time the history is read.

The index is only an index: every run's ``record.json`` is written first and is the
truth. An index that is missing or emptied while run folders exist, or that SQLite finds
damaged (truncated, garbled), is set aside and rebuilt from the run folders, with one
line saying so (``amlrun history rebuild`` does it on request).
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from amlrun import strictjson
from amlrun.errors import UsageError
from amlrun.process import alive, process_start
from amlrun.secrets import redactor

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
CREATE TABLE IF NOT EXISTS runcache (
    key      TEXT PRIMARY KEY,
    run_id   TEXT NOT NULL
);
"""


_FIELD_NAMES: dict[type, frozenset[str]] = {}


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
    script_args: tuple[str, ...] = ()  # given after `--` on the command line
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
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[dict, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        return elapsed(self.started, self.ended)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["artifacts"] = list(self.artifacts)
        data["duration"] = self.duration
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
        values = {k: v for k, v in data.items() if k in names}
        values["artifacts"] = tuple(values.get("artifacts") or ())
        values["script_args"] = tuple(values.get("script_args") or ())
        return cls(**values)


def new_run_id() -> str:
    """Sortable by time, with 32 random bits: thousands of runs a second stay unique
    (and :meth:`RunStore.new_record` still checks the index)."""
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "-" + os.urandom(4).hex()


HOST = os.uname().nodename if hasattr(os, "uname") else os.environ.get("COMPUTERNAME", "")


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file itself is broken (not busy, not a constraint)."""
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return False
    text = str(exc).lower()
    return any(word in text for word in ("malformed", "not a database", "corrupt", "no such table"))


class RunSummary(NamedTuple):
    """The fields of a run that ``history list`` shows. A named tuple, not a dataclass: it is
    made 10,000 times for a long listing, and this module is imported on every start-up."""

    run_id: str
    status: str
    cell_id: str
    created: float
    started: float | None
    ended: float | None
    metrics: dict[str, Any]

    @property
    def duration(self) -> float | None:
        return elapsed(self.started, self.ended)


def elapsed(started: float | None, ended: float | None) -> float | None:
    """Seconds from ``started`` to ``ended``, or None while either is unknown."""
    return None if started is None or ended is None else ended - started


class RunQuery(NamedTuple):
    """Which runs a listing reads, newest first: status, script and target are filtered in SQL
    (indexed by creation time, so ``limit`` reads only that many rows); ``params`` (name → text
    as given on the command line) are matched after decoding. (A named tuple: defining a
    dataclass costs every start-up half a millisecond.)"""

    limit: int | None = None
    status: str | Sequence[str] | None = None
    script: str | Sequence[str] | None = None
    target: str | Sequence[str] | None = None
    params: Mapping[str, str] | None = None


#: every run, newest first
ALL_RUNS = RunQuery()

_ROW_COLUMNS = (
    "(run_id, created, status, cell_id, script, target, host, pid, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _index_row(record: RunRecord, payload: str) -> tuple:
    """The values of a run's row in the index (the columns queries filter on, and the record)."""
    return (
        record.run_id,
        record.created,
        record.status,
        record.cell_id,
        record.script,
        record.target,
        record.host,
        record.pid,
        payload,
    )


def _decoded_records(params: Mapping[str, str] | None):
    """A row filter of :meth:`RunStore._select` that decodes whole records (matching ``params``)."""

    def keep(row: tuple) -> RunRecord | None:
        data = json.loads(row[0])
        return RunRecord.from_json(data) if _params_match(data.get("params"), params) else None

    return keep


def _params_match(stored: Mapping[str, Any] | None, wanted: Mapping[str, str] | None) -> bool:
    return not wanted or all(param_matches(stored or {}, k, v) for k, v in wanted.items())


def param_matches(params: Mapping[str, Any], name: str, text: str) -> bool:
    """Whether parameter ``name`` equals ``text`` as typed on a command line (``lr=0.1``
    matches 0.1 given as a number or as the string "0.1")."""
    if name not in params:
        return False
    value = params[name]
    if str(value) == text:
        return True
    from amlrun.matrix import format_value

    if format_value(value) == text:
        return True
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    try:
        return float(value) == float(text)
    except (TypeError, ValueError):
        return False


class RunStore:
    """The history of one project (``.amlrun/``)."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.runs_dir = state_dir / "runs"
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._checked = False
        self._inode = 0

    # -- connection ----------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.state_dir / "history.sqlite"

    def _db(self) -> sqlite3.Connection:
        if self._conn is not None and self._inode != self._current_inode():
            self.close()  # another process rebuilt a damaged index: use the new file
        if self._conn is None:
            with self._lock:
                if self._conn is None:
                    self._conn = self._open_checked()
                    self._inode = self._current_inode()
        return self._conn

    def _current_inode(self) -> int:
        try:
            return os.stat(self.db_path).st_ino
        except OSError:
            return 0

    def _open_checked(self) -> sqlite3.Connection:
        """Open the index; rebuild it first when it is damaged, or missing or emptied while
        run folders exist (checked before opening: a writer creates the index before it
        writes its first record.json, so this is no race with a first run elsewhere)."""
        try:
            lost = not self.db_path.is_file() or self.db_path.stat().st_size == 0
        except OSError:
            lost = True
        lost = lost and not self._checked and self._has_run_folders()
        try:
            conn = self._connect(self.db_path)
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            self._rebuild_damaged(f"the history index {self.db_path} is damaged ({exc})")
            conn = self._connect(self.db_path)
        if lost and conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is None:
            # (in WAL mode a healthy index may have an empty main file: its rows are in the WAL)
            count, unreadable = self._index_folders(conn, clear=False)
            self._say(
                f"the history index {self.db_path} was missing or empty while run folders exist", count, unreadable
            )
        self._checked = True
        return conn

    def _has_run_folders(self) -> bool:
        try:
            with os.scandir(self.runs_dir) as entries:
                return any(os.path.isfile(os.path.join(e.path, "record.json")) for e in entries)
        except OSError:
            return False

    def _connect(self, path: Path) -> sqlite3.Connection:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        try:
            self._init_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA busy_timeout = 60000")
        # Several processes may create the index at the same moment: switching to WAL
        # and creating the schema can meet a lock that the busy handler does not wait on.
        for attempt in range(200):
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or attempt == 199:
                    raise
                time.sleep(0.02 + 0.03 * os.urandom(1)[0] / 255)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("SELECT run_id FROM runs LIMIT 1").fetchall()  # a garbled file fails here

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def exists(self) -> bool:
        return self.db_path.is_file() or self._has_run_folders()

    # -- damage and rebuilding -------------------------------------------------------------

    def _query(self, sql: str, args: Sequence[Any] = (), fetch: str = "all") -> Any:
        """Run one statement; on an index SQLite finds damaged, rebuild it and retry once."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    cursor = self._db().execute(sql, args)
                    if fetch == "one":
                        return cursor.fetchone()
                    return cursor.fetchall() if fetch == "all" else None
                except sqlite3.DatabaseError as exc:
                    if attempt or not _is_damage(exc):
                        raise
                    self._rebuild_damaged(f"the history index {self.db_path} is damaged ({exc})")
        return None

    def rebuild(self) -> int:
        """Index every run folder's ``record.json`` again, in place and in one transaction (safe
        while other amlrun processes record; the ``--reuse`` cache is kept): ``history rebuild``."""
        with self._lock:
            try:
                return self._index_folders(self._db(), clear=True)[0]
            except sqlite3.DatabaseError as exc:
                if not _is_damage(exc):
                    raise
                return self._rebuild_damaged(f"the history index {self.db_path} is damaged ({exc})")

    def _index_folders(self, conn: sqlite3.Connection, *, clear: bool) -> tuple[int, int]:
        """Insert every readable ``record.json`` into ``conn``'s index: (indexed, unreadable)."""
        count = unreadable = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            if clear:
                conn.execute("DELETE FROM runs")
            verb = "INSERT OR REPLACE" if clear else "INSERT OR IGNORE"
            entries = sorted(os.scandir(self.runs_dir), key=lambda e: e.name) if self.runs_dir.is_dir() else []
            for entry in entries:
                try:
                    payload = Path(entry.path, "record.json").read_text(encoding="utf-8")
                    record = RunRecord.from_json(json.loads(payload))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except (OSError, ValueError, TypeError):
                    unreadable += 1
                    continue
                conn.execute(f"{verb} INTO runs {_ROW_COLUMNS}", _index_row(record, payload))
                count += 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return count, unreadable

    @staticmethod
    def _say(reason: str, count: int, unreadable: int, note: str = "") -> None:
        skipped = f" ({unreadable} unreadable record.json skipped)" if unreadable else ""
        print(
            f"amlrun: {reason}: rebuilt it from {count} run folder{'s' * (count != 1)}{skipped}{note}", file=sys.stderr
        )

    def _rebuild_damaged(self, reason: str) -> int:
        """Set a damaged index aside (kept as ``history.sqlite.damaged-*``) and build a new one
        from the run folders, under a file lock so that concurrent processes do it once."""
        import fcntl

        self.close()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "history.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._healthy_since_damage():
                return 0  # another process rebuilt it meanwhile
            tmp = self.db_path.with_name(f"history.sqlite.{os.getpid()}.rebuild")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
            conn = self._connect(tmp)
            try:
                count, unreadable = self._index_folders(conn, clear=False)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            for suffix in ("-wal", "-shm"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
            kept = self.db_path.with_name(f"history.sqlite.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
            if self.db_path.exists():
                os.replace(self.db_path, kept)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
            os.replace(tmp, self.db_path)
        self._say(reason, count, unreadable, f"; the damaged file is kept as {kept.name}")
        return count

    def _healthy_since_damage(self) -> bool:
        """Whether the index on disk now opens and reads (another process rebuilt it)."""
        try:
            if not self.db_path.is_file() or self.db_path.stat().st_size == 0:
                return False
            conn = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            try:
                ok = conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
                has_rows = conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None
            finally:
                conn.close()
            return ok and (has_rows or not self._has_run_folders())
        except sqlite3.DatabaseError:
            return False

    # -- writing -------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def new_record(self, **fields: Any) -> RunRecord:
        from amlrun import __version__

        pid = os.getpid()
        run_id = new_run_id()
        while self.run_dir(run_id).exists() or self.get(run_id) is not None:
            run_id = new_run_id()
        return RunRecord(
            run_id=run_id,
            created=time.time(),
            amlrun_version=__version__,
            host=HOST,
            pid=pid,
            pid_started=process_start(pid),
            **fields,
        )

    def save(self, record: RunRecord) -> RunRecord:
        """Insert or replace ``record`` in the index and its folder's ``record.json``."""
        self._db()  # the index exists before any record.json (how a lost index is told from a new one)
        folder = self.run_dir(record.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        # defence in depth: a secret that reached a reason or a parameter is masked here too
        payload = redactor(strictjson.dumps(record.to_json(), default=str))
        tmp = folder / f"record.json.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(payload, encoding="utf-8")
        os.replace(tmp, folder / "record.json")
        self._query(f"INSERT OR REPLACE INTO runs {_ROW_COLUMNS}", _index_row(record, payload), fetch="none")
        return record

    def update(self, record: RunRecord, **changes: Any) -> RunRecord:
        return self.save(dataclasses.replace(record, **changes))

    def delete(self, run_id: str, *, remove_folder: bool = False) -> None:
        """Remove ``run_id`` from the index (and its folder: first the row, so a reader never
        finds a row whose folder is half gone)."""
        with self._lock:
            self._query("DELETE FROM runs WHERE run_id = ?", (run_id,), fetch="none")
            self._query("DELETE FROM runcache WHERE run_id = ?", (run_id,), fetch="none")
        if remove_folder:
            shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # -- the result cache (--reuse): input key → the last completed run with those inputs --

    def remember_run(self, key: str, run_id: str) -> None:
        self._query("INSERT OR REPLACE INTO runcache (key, run_id) VALUES (?, ?)", (key, run_id), fetch="none")

    def cached_run(self, key: str) -> str | None:
        if not self.exists():
            return None
        row = self._query("SELECT run_id FROM runcache WHERE key = ?", (key,), fetch="one")
        return row[0] if row else None

    # -- reading -------------------------------------------------------------------------

    def reap(self) -> list[RunRecord]:
        """Mark runs whose amlrun process died as failed (readers do this on every read)."""
        if not self.exists():
            return []
        return self._reap()

    def _reap(self) -> list[RunRecord]:
        """Mark runs of dead amlrun processes on this host as failed; return them.

        Only active rows are read (an indexed query), so this costs nothing on a large
        history. Runs recorded on another host (a shared folder) are left alone: their
        process cannot be checked from here.
        """
        rows = self._query(
            f"SELECT record FROM runs WHERE status IN ({','.join('?' * len(ACTIVE))}) AND host = ?",
            (*ACTIVE, HOST),
        )
        reaped = []
        for (payload,) in rows:
            record = RunRecord.from_json(json.loads(payload))
            if not alive(record.pid, record.pid_started):
                reaped.append(
                    self.update(
                        record,
                        status="failed",
                        ended=record.ended or time.time(),
                        reason="the amlrun process that ran it died (killed or crashed)",
                    )
                )
        return reaped

    def _where(self, status, script, target) -> tuple[str, list]:
        clauses, args = [], []
        for column, value in (("status", status), ("script", script), ("target", target)):
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            args.extend(values)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def list(
        self,
        *,
        limit: int | None = None,
        status: str | Sequence[str] | None = None,
        script: str | Sequence[str] | None = None,
        target: str | Sequence[str] | None = None,
        params: Mapping[str, str] | None = None,
        reap: bool = True,
    ) -> builtins.list[RunRecord]:
        """Records newest first, filtered as :class:`RunQuery` says."""
        query = RunQuery(limit=limit, status=status, script=script, target=target, params=params)
        return self._select("record", _decoded_records(params), query, reap)

    def list_json(self, query: RunQuery = ALL_RUNS, *, reap: bool = True) -> builtins.list[str]:
        """Like :meth:`list`, but each record as its stored JSON text (nothing decoded
        unless ``params`` must be matched): ``history list --format json`` of 10,000 runs."""
        params = query.params

        def keep(row: tuple) -> str | None:
            if params and not _params_match(json.loads(row[0]).get("params"), params):
                return None
            return row[0]

        return self._select("record", keep, query, reap)

    def summaries(self, query: RunQuery = ALL_RUNS, *, reap: bool = True) -> builtins.list[RunSummary]:
        """Like :meth:`list`, but only the columns of ``history list``, read by SQLite out of
        the stored JSON: decoding 10,000 whole records is most of a ``--limit 0`` listing."""
        params = query.params
        wanted = "'$.started', '$.ended', '$.metrics'" + (", '$.params'" if params else "")  # params: only to match
        columns = f"run_id, status, cell_id, created, json_extract(record, {wanted})"

        def keep(row: tuple) -> tuple | None:
            return row if not params or _params_match(json.loads(row[4])[3], params) else None

        try:
            rows = self._select(columns, keep, query, reap)
        except sqlite3.OperationalError as exc:  # an SQLite built without its JSON functions
            if "json_extract" not in str(exc):
                raise
            records = self._select("record", _decoded_records(params), query, reap)
            return [
                RunSummary(r.run_id, r.status, r.cell_id, r.created, r.started, r.ended, r.metrics) for r in records
            ]
        # one decode for all of them: json.loads costs about 4 us a call, whatever the size
        extracted = json.loads("[" + ",".join(row[4] for row in rows) + "]")
        return [
            RunSummary(row[0], row[1], row[2], row[3], started, ended, metrics or {})
            for row, (started, ended, metrics, *_) in zip(rows, extracted, strict=True)
        ]

    def _select(self, columns: str, keep, query: RunQuery, reap: bool) -> builtins.list:
        """What ``keep(row)`` makes of each row of ``columns``, newest first, up to ``limit``
        of them (``None`` from ``keep``: the row does not match)."""
        if not self.exists():
            return []
        if reap:
            self._reap()
        limit = query.limit
        where, args = self._where(query.status, query.script, query.target)
        sql = f"SELECT {columns} FROM runs" + where + " ORDER BY created DESC, run_id DESC"
        if limit is not None and not query.params:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            try:
                return self._scan(sql, args, limit, keep)
            except sqlite3.DatabaseError as exc:
                if not _is_damage(exc):
                    raise
                self._rebuild_damaged(f"the history index {self.db_path} is damaged ({exc})")
                return self._scan(sql, args, limit, keep)

    def _scan(self, sql, args, limit, keep) -> builtins.list:
        """The rows of ``sql`` read one at a time (10,000 records are not all decoded at once)."""
        found: builtins.list = []
        cursor = self._db().execute(sql, args)
        for row in cursor:
            item = keep(row)
            if item is None:
                continue
            found.append(item)
            if limit is not None and len(found) >= limit:
                break
        cursor.close()
        return found

    def count(self, *, status=None, script=None, target=None) -> int:
        if not self.exists():
            return 0
        where, args = self._where(status, script, target)
        with self._lock:
            return int(self._query("SELECT COUNT(*) FROM runs" + where, args, fetch="one")[0])

    def snapshot_digests(self) -> set[str]:
        """Digests of the code snapshots that recorded runs reference."""
        if not self.exists():
            return set()
        rows = self._query("SELECT DISTINCT json_extract(record, '$.snapshot_digest') FROM runs")
        return {r[0] for r in rows if r[0]}

    def get(self, run_id: str) -> RunRecord | None:
        if not self.exists():
            return None
        row = self._query("SELECT record FROM runs WHERE run_id = ?", (run_id,), fetch="one")
        return RunRecord.from_json(json.loads(row[0])) if row else None

    def resolve(self, ref: str) -> RunRecord:
        """A run by id, unique id prefix, or ``last``; a clear error otherwise."""
        if not self.exists():
            raise UsageError(f"no run history in {self.state_dir}")
        self._reap()
        if ref == "last":
            rows = self._query("SELECT record FROM runs ORDER BY created DESC, run_id DESC LIMIT 1")
        else:
            escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._query("SELECT record FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 6", (escaped + "%",))
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
