"""Environment drift: the fully resolved package list of each run's environment.

Once per prepared environment and session, amlrun runs ``.amlrun_runtime/amlrun_freeze.py``
on the target through the target's own ``execute`` (so it works on every target type,
plugins' included) and keeps the result as text: one ``name==version`` line per package
after a few ``# key: value`` header lines. The text goes to
``.amlrun/environments/<environment digest>.txt`` (the latest list seen for that
environment) and to every run's folder as ``environment.txt``; the run record's
``extra["environment_packages"]`` holds its sha256.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from amlrun.targets.base import RUNTIME_DIRNAME, Job

FREEZE_PREFIX = "##amlrun-freeze "
FREEZE_SCRIPT = f"{RUNTIME_DIRNAME}/amlrun_freeze.py"
RUN_FILE = "environment.txt"
FREEZE_TIMEOUT = 300.0


@dataclass(frozen=True)
class Freeze:
    """One environment's package list, as recorded."""

    text: str
    paths: tuple[str, ...] = ()  # folders the packages were read from (not part of the text)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def packages(self) -> dict[str, str]:
        """``{normalised name: version}`` of Python packages (conda ones as ``conda:name``)."""
        return parse_packages(self.text)

    @property
    def header(self) -> dict[str, str]:
        found = {}
        for line in self.text.splitlines():
            if line.startswith("# ") and ":" in line:
                key, _, value = line[2:].partition(":")
                found[key.strip()] = value.strip()
        return found


def normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def parse_packages(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("conda:"):
            name, _, rest = line[len("conda:") :].partition("=")
            found["conda:" + normalise(name)] = rest
        elif "==" in line:
            name, _, version = line.partition("==")
            found[normalise(name)] = version.strip()
        else:
            found[normalise(line)] = ""
    return found


def render(report: dict) -> str:
    lines = [
        f"# python: {report.get('python', '?')} ({report.get('implementation', '?')})",
        f"# platform: {report.get('platform', '?')}",
    ]
    lines += [str(p) for p in report.get("packages") or []]
    lines += [f"conda:{p}" for p in report.get("conda") or []]
    return "\n".join(lines) + "\n"


def parse_output(lines) -> dict | None:
    for line in lines:
        if line.startswith(FREEZE_PREFIX):
            try:
                data = json.loads(line[len(FREEZE_PREFIX) :])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


class _CaptureSink:
    """A sink that keeps every line (the freeze script's output is not a run's log)."""

    def __init__(self):
        self.lines: list[str] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=30)
        self.metrics: dict = {}

    def write(self, line: str) -> None:
        self.lines.append(line)
        self.tail.append(line)

    def note(self, line: str) -> None:
        self.tail.append(line)


class EnvironmentRecorder:
    """Runs the freeze script once per (target, environment digest) in a session."""

    def __init__(self, state_dir: Path, work_root: Path):
        self.dir = state_dir / "environments"
        self.work_root = work_root
        self._results: dict[tuple[str, str], Freeze | str] = {}
        #: packages that changed since an earlier session recorded the same environment digest
        self.drift: dict[tuple[str, str], list[tuple[str, str | None, str | None]]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def cached(self, digest: str) -> Freeze | None:
        path = self.dir / f"{digest}.txt"
        try:
            return Freeze(path.read_text(encoding="utf-8"))
        except OSError:
            return None

    def _fingerprint_path(self, digest: str) -> Path:
        return self.dir / f"{digest}.paths.json"

    @staticmethod
    def _stat_paths(paths) -> dict[str, int] | None:
        try:
            return {p: os.stat(p).st_mtime_ns for p in paths}
        except OSError:
            return None

    def _image_path(self, digest: str) -> Path:
        return self.dir / f"{digest}.image"

    def _still_valid(self, target, prepared) -> Freeze | None:
        """A cached list that is still right, so no process (or container) has to start: an
        image whose id is unchanged cannot have changed; on a target sharing this filesystem,
        package folders with unchanged mtimes had nothing installed or removed."""
        digest = prepared.digest
        image_id = prepared.image_id
        if image_id:
            try:
                same = self._image_path(digest).read_text(encoding="utf-8") == image_id
            except OSError:
                same = False
            return self.cached(digest) if same else None
        if not getattr(target, "local_filesystem", False):
            return None
        try:
            recorded = json.loads(self._fingerprint_path(digest).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not recorded or self._stat_paths(recorded) != recorded:
            return None
        return self.cached(digest)

    def record(self, target, prepared, runconfig, cancel=None) -> Freeze | str:
        """The environment's package list, or a one-line reason why it could not be read.

        ``cancel``: the event of the run waiting for it, so that canceling the run stops this too."""
        key = (target.name, prepared.digest)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            found = self._results.get(key)
            if found is None:
                found = self._still_valid(target, prepared)
                if found is not None:
                    self._results[key] = found
                    return found
                found = self._run(target, prepared, runconfig, cancel)
                if isinstance(found, Freeze):
                    before = self.cached(prepared.digest)
                    if before is not None and before.text != found.text:
                        self.drift[key] = package_changes(before.packages, found.packages)
                    self.dir.mkdir(parents=True, exist_ok=True)
                    path = self.dir / f"{prepared.digest}.txt"
                    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                    tmp.write_text(found.text, encoding="utf-8")
                    os.replace(tmp, path)
                    image_id = prepared.image_id
                    paths = self._stat_paths(found.paths) if getattr(target, "local_filesystem", False) else None
                    if image_id:
                        self._image_path(prepared.digest).write_text(str(image_id), encoding="utf-8")
                    elif paths:
                        self._fingerprint_path(prepared.digest).write_text(json.dumps(paths), encoding="utf-8")
                self._results[key] = found
            return found

    def _run(self, target, prepared, runconfig, cancel=None) -> Freeze | str:
        from amlrun.protocol import RUNTIME_SOURCE

        workdir = self.work_root / f"freeze-{os.urandom(5).hex()}"
        try:
            workdir.mkdir(parents=True)
            shutil.copytree(RUNTIME_SOURCE, workdir / RUNTIME_DIRNAME, ignore=shutil.ignore_patterns("__pycache__"))
            job = Job(
                run_id=workdir.name,
                cell_id="(environment)",
                workdir=workdir,
                argv=(FREEZE_SCRIPT,),
                env={"AMLRUN_RUN_ID": workdir.name, "AMLRUN_CELL_ID": "(environment)", "AMLRUN_TARGET": target.name},
                outputs_dir=workdir / "fetched-outputs",
                timeout=FREEZE_TIMEOUT,
                # plain Python on the node: listing packages must not cost a Spark application
                runconfig=dataclasses.replace(runconfig, framework="Python"),
                **({"cancel": cancel} if cancel is not None else {}),
            )
            sink = _CaptureSink()
            try:
                result = target.execute(job, prepared, sink)
            except Exception as exc:  # recording the environment must never fail a run
                return f"cannot list the environment's packages: {exc}"
            data = parse_output(sink.lines)
            if data is None:
                why = result.reason or "the freeze script printed no package list"
                return f"cannot list the environment's packages: {why}"
            return Freeze(render(data), tuple(str(p) for p in data.get("paths") or ()))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def package_changes(old: dict[str, str], new: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    """``(name, old version or None, new version or None)`` for every package that differs."""
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before != after:
            changes.append((name, before, after))
    return changes


def describe_change(name: str, before: str | None, after: str | None) -> str:
    if before is None:
        return f"+ {name} {after}".rstrip()
    if after is None:
        return f"- {name} {before}".rstrip()
    return f"~ {name} {before} -> {after}"
