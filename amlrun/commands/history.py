"""``amlrun history``: list, show, compare, follow, download, restore, prune and export recorded runs.

Every subcommand but ``export`` reads the project's ``.amlrun/`` directly (no plugin
manager, no session) so that it starts fast; each prints a table (tabulate) or, with
``--format json``, one JSON document for scripts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amlrun.errors import UsageError
from amlrun.store import FINAL, STATUSES, RunQuery, RunRecord, RunStore, RunSummary

if TYPE_CHECKING:
    from amlrun.snapshot import GcResult

DEFAULT_LIMIT = 50
DEFAULT_TAIL = 20
FOLLOW_POLL_SECONDS = 0.2
GC_GRACE_SECONDS = 60.0


# -- formatting helpers ---------------------------------------------------------------------


# made once: json.dumps with options builds an encoder per call (a third of a 10,000-row table)
_CELL_JSON = json.JSONEncoder(ensure_ascii=False, default=str)


def short(value: Any, width: int = 24) -> str:
    """A metric or parameter value for a table cell."""
    if type(value) is float:  # most values: first, without the checks below (50,000 calls in a long listing)
        return f"{value:.4g}"
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        text = value
    else:
        text = str(value) if isinstance(value, int) else _CELL_JSON.encode(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def when(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.2f}s"
    minutes, secs = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def size(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """tabulate's ``simple`` table. Printable ASCII, what nearly every history holds, is laid
    out here: tabulate spends about 0.1 ms a row measuring widths, 1.4 s of a 10,000-run
    ``history list --limit 0``. Anything else (wide or combining characters, newlines,
    escapes) goes through tabulate, which measures display widths."""
    cells = [["" if value is None else str(value).strip() for value in row] for row in rows]
    text = "".join(headers) + "".join(itertools.chain.from_iterable(cells))
    if not (text.isascii() and text.isprintable()):
        from tabulate import tabulate

        return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    columns = list(zip(*cells, strict=True)) if cells else [()] * len(headers)
    widths = [
        max(len(header) + 2, max(map(len, column), default=0)) for header, column in zip(headers, columns, strict=True)
    ]
    line = "  ".join(f"{{:<{width}}}" for width in widths).format
    lines = [line(*headers).rstrip(), "  ".join("-" * width for width in widths)]
    lines += [line(*row).rstrip() for row in cells]
    return "\n".join(lines)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_AGE_UNITS = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``45m``, ``90s``, ``2w`` (a bare number means days) → seconds."""
    match = _AGE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected an age such as 30d, 12h, 45m or 2w, got {text!r}")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def param_filter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


# -- reading a run's folder -------------------------------------------------------------------


def read_tail(path: Path, lines: int, skip: tuple[str, ...] = ()) -> list[str]:
    """The last ``lines`` lines of a text file without reading all of a large one, leaving
    out lines that start with one of ``skip``."""
    if lines <= 0 or not path.is_file():
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        block = 1 << 16
        data = b""
        pos = end
        text: list[str] = []
        while pos > 0 and len(text) <= lines:
            pos = max(0, pos - block)
            fh.seek(pos)
            data = fh.read(end - pos)
            text = [t for t in data.decode("utf-8", "replace").splitlines() if not t.startswith(skip)]
    return text[-lines:]


def metric_series(run_dir: Path) -> dict[str, list[dict]]:
    from amlrun.sink import read_metrics

    series: dict[str, list[dict]] = {}
    for row in read_metrics(run_dir):
        if isinstance(row, dict) and "name" in row:
            series.setdefault(str(row["name"]), []).append(row)
    return series


def current_metrics(store: RunStore, record: RunRecord) -> dict[str, Any]:
    """The record's metrics; for a run still going, the last values logged so far."""
    if record.metrics or record.status in FINAL:
        return dict(record.metrics)
    return {name: rows[-1].get("value") for name, rows in metric_series(store.run_dir(record.run_id)).items()}


# -- the command --------------------------------------------------------------------------------


def build_parser(prog: str):
    from amlrun.commands._common import parser as base_parser

    parser = base_parser(prog, "List, show, compare, follow, download, restore and prune recorded runs.")
    parser.epilog = "RUN is a run id, a unique prefix of one, or 'last'."
    sub = parser.add_subparsers(dest="action", metavar="ACTION")

    def add(name: str, help_: str):
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        p.add_argument(
            "--project",
            metavar="DIR",
            default=argparse.SUPPRESS,
            help="the project folder (default: found from the current folder)",
        )
        p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
        return p

    _add_reading_actions(add)
    _add_copying_actions(add)
    _add_upkeep_actions(add)
    sub.add_parser(
        "diff", help="what changed between two runs (code, environment, parameters, metrics)", add_help=False
    )
    return parser


def _add_reading_actions(add) -> None:
    """``list``, ``show``, ``compare``, ``logs``: the subcommands that only read runs."""
    p = add("list", "recorded runs, newest first, with their metrics as columns")
    p.add_argument("--script", action="append", metavar="PATH", help="only runs of this script (repeatable)")
    p.add_argument("--target", "-c", action="append", metavar="NAME", help="only runs on this target (repeatable)")
    p.add_argument("--status", action="append", choices=STATUSES, help="only runs with this status (repeatable)")
    p.add_argument(
        "--param",
        action="append",
        type=param_filter,
        default=[],
        metavar="NAME=VALUE",
        help="only runs whose parameter NAME equals VALUE (repeatable: all must match)",
    )
    p.add_argument(
        "--limit",
        "-n",
        type=nonnegative,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N runs (default {DEFAULT_LIMIT}; 0 means all)",
    )

    p = add("show", "one run: its record, metrics, artifacts and the end of its log")
    p.add_argument("run", metavar="RUN")
    p.add_argument(
        "--tail",
        type=nonnegative,
        default=DEFAULT_TAIL,
        metavar="N",
        help=f"log lines to show (default {DEFAULT_TAIL})",
    )

    p = add("compare", "parameters and metrics of runs side by side, differences marked with *")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--diff-only", action="store_true", help="only the rows whose values differ")

    p = add("logs", "a run's saved log (--follow: keep printing while the run is going)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--follow", "-f", action="store_true", help="print new lines until the run ends")
    p.add_argument("--tail", type=nonnegative, metavar="N", help="only the last N lines")


def _add_copying_actions(add) -> None:
    """``download``, ``restore``: the subcommands that write a run's files into a folder."""
    p = add("download", "copy a run's outputs/ into a folder (byte-identical)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-d", "--dir", required=True, metavar="DIR", help="destination folder")
    p.add_argument("--force", action="store_true", help="overwrite files that already exist in DIR")

    p = add("restore", "write the exact code snapshot a run used into a folder")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-d", "--dir", required=True, metavar="DIR", help="destination folder (must be empty)")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty (overwriting)")


def _add_upkeep_actions(add) -> None:
    """``gc``, ``rebuild``, ``export``: the subcommands that prune, repair or send elsewhere."""
    p = add("gc", "remove old runs and the snapshots no remaining run uses, showing what it frees")
    p.add_argument("--keep", type=nonnegative, metavar="N", help="keep the newest N runs")
    p.add_argument(
        "--older-than", type=parse_age, metavar="AGE", help="remove runs created more than AGE ago (30d, 12h, 45m, 2w)"
    )
    p.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    p.add_argument(
        "--grace",
        type=float,
        default=GC_GRACE_SECONDS,
        metavar="SECONDS",
        help=f"keep unreferenced snapshot files younger than this: a session running now may be about "
        f"to use them (default {GC_GRACE_SECONDS:g})",
    )

    add("rebuild", "rebuild the history index from the run folders' record.json (nothing on disk is lost)")

    p = add("export", "send finished runs to a tracker a plugin provides (e.g. mlflow); runs already there are skipped")
    p.add_argument("exporter", metavar="NAME", help="the tracker, e.g. mlflow (from the amlrun-mlflow plugin)")
    p.add_argument("runs", nargs="*", metavar="RUN", help="runs to export (default: every finished run)")


def open_store(options) -> tuple[Any, RunStore]:
    from amlrun.project import Project

    start = Path(getattr(options, "project", None) or Path.cwd())
    if not start.exists():
        raise UsageError(f"--project {start}: no such folder")
    project = Project.discover(start, start)
    return project, RunStore(project.state_dir)


def run_diff(argv: list[str], prog: str) -> int:
    import importlib

    try:
        history_diff = importlib.import_module("amlrun.commands.history_diff")
    except ModuleNotFoundError as exc:
        if exc.name == "amlrun.commands.history_diff":
            raise UsageError(
                f"'{prog}' is not available in this build of amlrun (amlrun/commands/history_diff.py is missing)"
            ) from None
        raise
    return history_diff.main(argv, prog)


def sweep_dead_sessions() -> None:
    """Remove the containers a ``kill -9``ed amlrun left on this machine's engine (as every
    command does): one folder listing when no dead session left any."""
    from amlrun.envs import cache_dir
    from amlrun.targets.docker.owners import sweep_dead_owners

    sweep_dead_owners(cache_dir())


def main(argv: list[str], prog: str = "amlrun history") -> int:
    if argv and argv[0] == "diff":
        return run_diff(argv[1:], f"{prog} diff")
    parser = build_parser(prog)
    options = parser.parse_args(argv)
    if not options.action:
        parser.print_help()
        return 0
    project, store = open_store(options)
    sweep_dead_sessions()
    try:
        return ACTIONS[options.action](options, store, project)
    finally:
        store.close()


# -- list -----------------------------------------------------------------------------------------


def _normalise_script(path: str, project) -> str:
    candidate = Path(path)
    if candidate.is_absolute() or Path.cwd() != project.root:
        try:
            return (Path.cwd() / candidate).resolve().relative_to(project.root).as_posix()
        except ValueError:
            pass
    return candidate.as_posix().removeprefix("./")


def metric_columns(records: Sequence[RunRecord | RunSummary]) -> list[str]:
    names: dict[str, None] = {}
    for record in reversed(records):  # oldest first: columns keep the order metrics were logged
        for name in record.metrics:
            names.setdefault(name, None)
    return list(names)


def cmd_list(options, store: RunStore, project) -> int:
    limit = options.limit or None
    scripts = [_normalise_script(s, project) for s in options.script] if options.script else None
    params = dict(options.param)
    query = RunQuery(limit=limit, status=options.status, script=scripts, target=options.target, params=params or None)
    if options.format == "json":  # the stored JSON as it is: one record a line, nothing re-encoded
        payloads = store.list_json(query)
        sys.stdout.write("[\n" + ",\n".join(payloads) + "\n]\n" if payloads else "[]\n")
        return 0
    records = store.summaries(query)
    if not records:
        filtered = any((options.script, options.target, options.status, options.param))
        print("no runs match" if filtered and store.count() else f"no runs recorded in {store.state_dir}")
        return 0
    metrics = metric_columns(records)
    headers = ["run", "status", "cell", "started", "duration", *metrics]
    rows = [
        [
            r.run_id,
            r.status,
            r.cell_id,
            when(r.started or r.created),
            seconds(r.duration),
            *(short(r.metrics.get(m)) for m in metrics),
        ]
        for r in records
    ]
    print(table(rows, headers))
    if limit is not None and len(records) == limit and not params:
        total = store.count(status=options.status, script=scripts, target=options.target)
        if total > limit:
            print(f"(showing the newest {limit} of {total} runs; --limit 0 shows all)")
    return 0


# -- show -----------------------------------------------------------------------------------------


RECORD_FIELDS = (
    ("run id", "run_id"),
    ("cell", "cell_id"),
    ("status", "status"),
    ("exit code", "exit_code"),
    ("reason", "reason"),
    ("script", "script"),
    ("target", "target"),
    ("target type", "target_type"),
    ("run configuration", "runconfig"),
    ("created", "created"),
    ("started", "started"),
    ("ended", "ended"),
    ("duration", "duration"),
    ("amlrun", "amlrun_version"),
    ("host", "host"),
    ("git commit", "git_commit"),
    ("git dirty", "git_dirty"),
    ("code snapshot", "snapshot_digest"),
    ("environment", "environment_digest"),
)


def cmd_show(options, store: RunStore, project) -> int:
    record = store.resolve(options.run)
    run_dir = store.run_dir(record.run_id)
    series = metric_series(run_dir)
    metrics = current_metrics(store, record)
    from amlrun.sink import METRIC_PREFIX, TAG_PREFIX

    tail = read_tail(run_dir / "log.txt", options.tail, skip=(METRIC_PREFIX, TAG_PREFIX))
    diff = run_dir / "git.diff"
    if options.format == "json":
        emit_json(
            {
                "record": record.to_json(),
                "metrics": metrics,
                "metric_series": {
                    name: [[row.get("step"), row.get("value")] for row in rows] for name, rows in series.items()
                },
                "log_tail": tail,
                "run_dir": str(run_dir),
                "git_diff": str(diff) if diff.is_file() else None,
            }
        )
        return 0
    values = record.to_json()
    rows = []
    for label, key in RECORD_FIELDS:
        value = values.get(key)
        if key in ("created", "started", "ended"):
            value = when(value)
        elif key == "duration":
            value = seconds(value)
        if value in (None, ""):
            continue
        rows.append([label, value])
    for name, value in record.params.items():
        rows.append([f"param {name}", short(value, 60)])
    for name, value in record.tags.items():
        rows.append([f"tag {name}", short(value, 60)])
    if diff.is_file():
        rows.append(["git diff", str(diff)])
    rows.append(["folder", str(run_dir)])
    print(table(rows, ["field", "value"]))
    if metrics:
        print()
        metric_rows = [[name, short(value, 60), len(series.get(name, ())) or ""] for name, value in metrics.items()]
        print(table(metric_rows, ["metric", "last value", "points"]))
    if record.artifacts:
        print()
        print(
            table(
                [[a.get("path"), size(a.get("size")), a.get("sha256", "")[:16]] for a in record.artifacts],
                ["artifact", "size", "sha256"],
            )
        )
    if tail:
        print()
        print(f"--- last {len(tail)} line{'s' * (len(tail) != 1)} of {run_dir / 'log.txt'} ---")
        for line in tail:
            print(line)
    return 0


# -- compare --------------------------------------------------------------------------------------


def compare_rows(store: RunStore, records: list[RunRecord]) -> list[dict[str, Any]]:
    def union(dicts) -> list[str]:
        seen: dict[str, None] = {}
        for d in dicts:
            for k in d:
                seen.setdefault(k, None)
        return list(seen)

    metrics = [current_metrics(store, r) for r in records]
    rows: list[dict[str, Any]] = []
    for field_name in ("script", "target", "status", "duration", "git_commit", "snapshot_digest", "environment_digest"):
        values = [r.to_json().get(field_name) for r in records]
        if any(v not in (None, "") for v in values):
            rows.append({"kind": "run", "name": field_name, "values": values})
    for name in union(r.params for r in records):
        rows.append({"kind": "param", "name": name, "values": [r.params.get(name) for r in records]})
    for name in union(metrics):
        rows.append({"kind": "metric", "name": name, "values": [m.get(name) for m in metrics]})
    for row in rows:
        if row["name"] == "duration":  # timings always differ; not a difference worth marking
            row["differs"] = False
            continue
        texts = {json.dumps(v, sort_keys=True, default=str) for v in row["values"]}
        row["differs"] = len(texts) > 1
    return rows


def cmd_compare(options, store: RunStore, project) -> int:
    if len(options.runs) < 2:
        raise UsageError("history compare: give at least two runs to compare")
    records = [store.resolve(ref) for ref in options.runs]
    rows = compare_rows(store, records)
    if options.diff_only:
        rows = [r for r in rows if r["differs"]]
    if options.format == "json":
        emit_json({"runs": [r.run_id for r in records], "rows": rows})
        return 0
    body = []
    for row in rows:
        if row["name"] == "duration":
            cells = [seconds(v) for v in row["values"]]
        elif row["name"] in ("git_commit", "snapshot_digest", "environment_digest"):
            cells = [(v or "")[:12] for v in row["values"]]
        else:
            cells = [short(v) for v in row["values"]]
        body.append(["*" if row["differs"] else "", row["kind"], row["name"], *cells])
    print(table(body, ["", "", "", *[r.run_id for r in records]]))
    differing = sum(1 for r in rows if r["differs"] and r["kind"] in ("param", "metric"))
    print(f"\n* marks values that differ ({differing} parameter/metric row{'s' * (differing != 1)})")
    return 0


# -- logs -----------------------------------------------------------------------------------------


def cmd_logs(options, store: RunStore, project) -> int:
    record = store.resolve(options.run)
    path = store.run_dir(record.run_id) / "log.txt"
    as_json = options.format == "json"
    if not options.follow:
        lines = (
            read_tail(path, options.tail)
            if options.tail is not None
            else (path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else [])
        )
        if as_json:
            emit_json({"run_id": record.run_id, "status": record.status, "lines": lines})
        else:
            for line in lines:
                print(line)
        return 0
    return follow(store, record, path, options.tail, as_json)


def follow(store: RunStore, record: RunRecord, path: Path, tail: int | None, as_json: bool) -> int:
    """Print the log and then its new lines until the run reaches a final status.

    A run whose amlrun process died is reaped (marked failed) by the store, so this
    never waits forever on a run nobody is running any more.
    """
    out = sys.stdout

    def show(line: str) -> None:
        out.write((json.dumps({"line": line}, ensure_ascii=False) if as_json else line) + "\n")

    offset = 0
    pending = b""
    if tail is not None and path.is_file():
        for line in read_tail(path, tail):
            show(line)
        offset = path.stat().st_size
    last_reap = 0.0
    while True:
        final = record.status in FINAL
        if path.is_file():
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
            offset += len(data)
            pending += data
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                show(raw.decode("utf-8", "replace"))
            out.flush()
        if final:
            if pending:
                show(pending.decode("utf-8", "replace"))
            break
        time.sleep(FOLLOW_POLL_SECONDS)
        now = time.monotonic()
        if now - last_reap > 2.0:
            store.reap()
            last_reap = now
        record = store.get(record.run_id) or record
    if as_json:
        out.write(json.dumps({"run_id": record.run_id, "status": record.status}) + "\n")
    else:
        print(
            f"--- run {record.run_id} {record.status}" + (f": {record.reason}" if record.reason else "") + " ---",
            file=sys.stderr,
        )
    return 0


# -- download / restore ---------------------------------------------------------------------------


def cmd_download(options, store: RunStore, project) -> int:
    from amlrun.artifacts import open_regular, output_files
    from amlrun.snapshot import hash_file

    record = store.resolve(options.run)
    source = store.run_dir(record.run_id) / "outputs"
    dest = Path(options.dir)
    files = list(output_files(source))  # regular files only, never through a link
    if not files:
        message = f"run {record.run_id} has no outputs" + ("" if record.status in FINAL else f" yet ({record.status})")
        if options.format == "json":
            emit_json({"run_id": record.run_id, "dest": str(dest), "files": []})
        else:
            print(message)
        return 0
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"-d {dest}: exists and is not a folder")
    conflicts = [dest / p.relative_to(source) for p in files if (dest / p.relative_to(source)).exists()]
    if conflicts and not options.force:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise UsageError(f"{conflicts[0]} already exists{more}; use --force to overwrite")
    expected = {a.get("path"): a.get("sha256") for a in record.artifacts}
    written: list[dict[str, Any]] = []
    for path in files:
        rel = path.relative_to(source)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.amlrun-tmp")
        with open_regular(path) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        shutil.copymode(path, tmp)
        os.replace(tmp, target)
        digest = hash_file(target)
        want = expected.get(f"outputs/{rel.as_posix()}")
        if want and want != digest:
            raise UsageError(
                f"{path} does not match the sha256 recorded for run {record.run_id} (changed after the run?)"
            )
        written.append({"path": rel.as_posix(), "size": target.stat().st_size, "sha256": digest})
    if options.format == "json":
        emit_json({"run_id": record.run_id, "dest": str(dest), "files": written})
        return 0
    print(table([[f["path"], size(f["size"]), f["sha256"][:16]] for f in written], ["file", "size", "sha256"]))
    total = sum(f["size"] for f in written)
    print(
        f"\ndownloaded {len(written)} file{'s' * (len(written) != 1)} ({size(total)}) of run {record.run_id} to {dest}"
    )
    return 0


def cmd_restore(options, store: RunStore, project) -> int:
    from amlrun.snapshot import SnapshotMissing, SnapshotStore

    record = store.resolve(options.run)
    if not record.snapshot_digest:
        raise UsageError(f"run {record.run_id} has no code snapshot recorded")
    dest = Path(options.dir)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"-d {dest}: exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not options.force:
        raise UsageError(f"-d {dest}: folder is not empty; use --force to write into it")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        snapshot = SnapshotStore(store.state_dir).restore(record.snapshot_digest, dest)
    except SnapshotMissing as exc:
        raise UsageError(f"run {record.run_id}: {exc}") from None
    if options.format == "json":
        emit_json(
            {
                "run_id": record.run_id,
                "snapshot": snapshot.digest,
                "dest": str(dest),
                "files": [{"path": e.path, "size": e.size, "sha256": e.digest} for e in snapshot.entries],
            }
        )
        return 0
    print(
        f"restored {len(snapshot.entries)} file{'s' * (len(snapshot.entries) != 1)} ({size(snapshot.size)}) "
        f"of snapshot {snapshot.digest[:12]} (run {record.run_id}) to {dest}"
    )
    diff = store.run_dir(record.run_id) / "git.diff"
    if record.git_commit:
        dirty = " plus uncommitted changes" if record.git_dirty else ""
        print(
            f"the run used git commit {record.git_commit[:12]}{dirty}" + (f" (diff: {diff})" if diff.is_file() else "")
        )
    return 0


# -- gc -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Swept:
    """What ``gc`` removed (or, with ``--dry-run``, would remove) and the disk that frees."""

    dry: bool
    records: list[RunRecord]
    doomed: list[RunRecord]
    run_bytes: int
    leftovers: list[Path]
    leftover_bytes: int
    untracked: list[Path]
    untracked_bytes: int
    snaps: GcResult

    @property
    def total(self) -> int:
        return self.run_bytes + self.leftover_bytes + self.untracked_bytes + self.snaps.bytes

    @property
    def kept_runs(self) -> int:
        return len(self.records) - len(self.doomed)


def _doomed_runs(records: list[RunRecord], keep: int | None, older_than: float | None, now: float) -> list[RunRecord]:
    """The final runs (never active ones) beyond ``--keep`` and/or older than ``--older-than`` (both: and)."""
    doomed: list[RunRecord] = []
    finals = [r for r in records if r.status in FINAL]
    for index, record in enumerate(finals):
        beyond_keep = keep is not None and index >= keep
        too_old = older_than is not None and now - record.created > older_than
        if keep is not None and older_than is not None:
            remove = beyond_keep and too_old
        else:
            remove = beyond_keep or too_old
        if remove:
            doomed.append(record)
    return doomed


def _leftover_workdirs(store: RunStore, records: list[RunRecord], now: float) -> list[Path]:
    """Working copies left behind by runs whose amlrun process was killed.

    Only those of recorded runs that are final (an untracked run's copy has no record to tell
    whether it is still going), and environment-freeze jobs' copies older than a day.
    """
    final = {r.run_id for r in records if r.status in FINAL}
    work_root = store.state_dir / "work"
    leftovers = []
    if work_root.is_dir():
        for path in work_root.iterdir():
            try:
                stale_freeze = path.name.startswith("freeze-") and now - path.stat().st_mtime > 86400
            except FileNotFoundError:
                continue
            if path.name in final or stale_freeze:
                leftovers.append(path)
    return leftovers


def _old_untracked(store: RunStore, older_than: float | None, now: float) -> list[Path]:
    """Folders of untracked runs (TrackedRun: false): removed only by age."""
    untracked_root = store.state_dir / "untracked"
    untracked = []
    if older_than is not None and untracked_root.is_dir():
        for path in untracked_root.iterdir():
            try:
                if now - path.stat().st_mtime > older_than:
                    untracked.append(path)
            except FileNotFoundError:
                continue
    return untracked


def _remove_trees(paths: list[Path], dry: bool) -> int:
    """Remove ``paths`` (unless ``dry``); the bytes they held."""
    from amlrun.snapshot import disk_usage

    freed = sum(disk_usage(p) for p in paths)
    if not dry:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
    return freed


def _sweep(options, store: RunStore) -> _Swept:
    """Remove old runs, leftover working copies, old untracked folders, then the snapshots nothing uses."""
    from amlrun.snapshot import SnapshotMissing, SnapshotStore, disk_usage

    dry = options.dry_run
    records = store.list()  # newest first; reaps dead runs first
    now = time.time()
    doomed = _doomed_runs(records, options.keep, options.older_than, now)
    run_bytes = 0
    for record in doomed:
        run_bytes += disk_usage(store.run_dir(record.run_id))
        if not dry:
            store.delete(record.run_id, remove_folder=True)
    leftovers = _leftover_workdirs(store, records, now)
    leftover_bytes = _remove_trees(leftovers, dry)
    untracked = _old_untracked(store, options.older_than, now)
    untracked_bytes = _remove_trees(untracked, dry)
    removed_ids = {r.run_id for r in doomed}
    keep = {r.snapshot_digest for r in records if r.run_id not in removed_ids and r.snapshot_digest}
    if not dry:
        keep |= store.snapshot_digests()  # runs recorded meanwhile by another process
    try:
        snaps = SnapshotStore(store.state_dir).collect_garbage(keep, grace=max(0.0, options.grace), dry_run=dry)
    except SnapshotMissing as exc:
        raise UsageError(str(exc)) from None
    return _Swept(dry, records, doomed, run_bytes, leftovers, leftover_bytes, untracked, untracked_bytes, snaps)


def _print_swept(swept: _Swept) -> None:
    dry, doomed, snaps = swept.dry, swept.doomed, swept.snaps
    rows = [
        ["runs", len(doomed), size(swept.run_bytes)],
        ["leftover working copies", len(swept.leftovers), size(swept.leftover_bytes)],
        ["untracked run folders", len(swept.untracked), size(swept.untracked_bytes)],
        ["snapshots (manifests)", snaps.manifests, ""],
        ["snapshot files (objects)", snaps.objects, size(snaps.bytes)],
    ]
    if dry and doomed:
        shown = ", ".join(r.run_id for r in doomed[:5]) + (" ..." if len(doomed) > 5 else "")
        print(f"would remove: {shown}")
    print(table(rows, ["removed" if not dry else "to remove", "count", "disk"]))
    verb = "would free" if dry else "freed"
    print(
        f"\n{verb} {size(swept.total)}; kept {swept.kept_runs} run{'s' * (swept.kept_runs != 1)} "
        f"and {snaps.kept_manifests} snapshot{'s' * (snaps.kept_manifests != 1)}"
    )


def cmd_gc(options, store: RunStore, project) -> int:
    if not store.state_dir.is_dir():
        if options.format == "json":
            emit_json({"dry_run": options.dry_run, "runs": [], "bytes": 0})
        else:
            print(f"nothing to clean: {store.state_dir} does not exist")
        return 0
    swept = _sweep(options, store)
    if options.format == "json":
        snaps = swept.snaps
        emit_json(
            {
                "dry_run": swept.dry,
                "runs": [r.run_id for r in swept.doomed],
                "run_bytes": swept.run_bytes,
                "workdirs": len(swept.leftovers),
                "untracked": len(swept.untracked),
                "workdir_bytes": swept.leftover_bytes + swept.untracked_bytes,
                "snapshots": snaps.manifests,
                "objects": snaps.objects,
                "snapshot_bytes": snaps.bytes,
                "bytes": swept.total,
                "kept_runs": swept.kept_runs,
                "kept_snapshots": snaps.kept_manifests,
            }
        )
        return 0
    _print_swept(swept)
    return 0


def cmd_rebuild(options, store: RunStore, project) -> int:
    count = store.rebuild()
    if options.format == "json":
        emit_json({"runs": count, "index": str(store.db_path)})
    else:
        print(f"rebuilt {store.db_path} from {count} run folder{'s' * (count != 1)}")
    return 0


# -- export ---------------------------------------------------------------------------------------


def cmd_export(options, store: RunStore, project) -> int:
    """Loads the plugins (the other subcommands don't) to find the exporter."""
    from amlrun.commands._common import load_config

    config = load_config(options)
    exporters: dict[str, Any] = {}
    for found in config.hook.amlrun_register_exporters():
        exporters.update(found or {})
    export = exporters.get(options.exporter)
    if export is None:
        known = ", ".join(sorted(exporters)) or "none; install a plugin such as amlrun-mlflow"
        raise UsageError(f"history export: no exporter named '{options.exporter}' (known: {known})")
    if options.runs:
        records = [store.resolve(ref) for ref in options.runs]
        active = [r for r in records if r.status not in FINAL]
        if active:
            raise UsageError(f"history export: run {active[0].run_id} has not finished ({active[0].status})")
    else:
        records = list(reversed(store.list(status=FINAL)))  # oldest first
    return int(export(config=config, store=store, records=records))


ACTIONS = {
    "list": cmd_list,
    "show": cmd_show,
    "compare": cmd_compare,
    "logs": cmd_logs,
    "download": cmd_download,
    "restore": cmd_restore,
    "gc": cmd_gc,
    "rebuild": cmd_rebuild,
    "export": cmd_export,
}
