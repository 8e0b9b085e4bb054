"""The test harness (pytest's ``pytester``, for amlrun): a throw-away project, ``amlrun`` run
in it as a subprocess or in-process, and a result that reads what the run did.

    result = project.run("-c", "local")
    result.assert_outcomes(passed=2, failed=1)
    result.fnmatch_lines(["PASSED exp/a.py::local*", "*1 failed, 2 passed in *"])
    result.record("exp/a.py::local")["metrics"]       # the run record of this call
    result.cell_ids("failed")                          # cells by the terminal's result lines
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

#: the terminal's result line of a cell: "PASSED exp/a.py::local  0.12s  run ..."
RESULT_LINE = re.compile(r"^(PASSED|FAILED|ERROR|REUSED|CANCELED|SKIPPED|RETRY) (\S+)  ")
#: the final line: "===== 2 passed, 1 failed, 3 deselected in 1.23s ====="
STATS_LINE = re.compile(r"^=+ (.+) in [\d.]+s =+$")
#: outcome nouns of the final line → the keyword assert_outcomes takes
NOUNS = {"passed": "passed", "failed": "failed", "error": "errors", "errors": "errors", "canceled": "canceled",
         "skipped": "skipped", "reused": "reused", "deselected": "deselected"}


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def result_lines(text: str, *outcomes: str) -> list[str]:
    """The terminal's per-cell result lines in ``text`` (not the short summary, whose id is
    followed by ' - reason'), optionally only those of some outcomes (``"passed"``, ``"retry"``)."""
    wanted = {o.upper() for o in outcomes}
    return [line for line in text.splitlines()
            if (m := RESULT_LINE.match(line)) and (not wanted or m.group(1) in wanted)]


def read_records(root: Path) -> list[dict[str, Any]]:
    """Every run record under ``root/.amlrun/runs``, oldest first (run ids of one second sort at random)."""
    runs = root / ".amlrun" / "runs"
    found = []
    for path in runs.glob("*/record.json") if runs.is_dir() else ():
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a record being replaced right now
    return sorted(found, key=lambda r: (r.get("created") or 0, r["run_id"]))


class LineMatcher:
    """pytest's ``LineMatcher``: match glob or regex patterns against output lines, in order."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def fnmatch_lines(self, patterns: Iterable[str], *, consecutive: bool = False) -> None:
        self._match(list(patterns), fnmatch.fnmatch, "fnmatch", consecutive)

    def re_match_lines(self, patterns: Iterable[str], *, consecutive: bool = False) -> None:
        self._match(list(patterns), lambda line, pat: re.match(pat, line) is not None, "re.match", consecutive)

    def no_fnmatch_line(self, pattern: str) -> None:
        hits = [line for line in self.lines if fnmatch.fnmatch(line, pattern)]
        assert not hits, f"no line should match {pattern!r}, but these do:\n" + "\n".join(hits)

    def _match(self, patterns: list[str], match, how: str, consecutive: bool) -> None:
        position = 0
        for n, pattern in enumerate(patterns):
            end = position + 1 if consecutive and n else len(self.lines)
            index = next((i for i in range(position, min(end, len(self.lines))) if match(self.lines[i], pattern)), None)
            if index is None:
                shown = "\n".join(f"    {line}" for line in self.lines)
                raise AssertionError(f"{how}: no line matching {pattern!r} after the lines already matched "
                                     f"(pattern {n + 1} of {len(patterns)}); output:\n{shown}")
            position = index + 1

    def __str__(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Result:
    """One amlrun invocation: exit code, output, and what it recorded."""

    returncode: int
    stdout: str
    stderr: str
    root: Path | None = None
    before: frozenset[str] = frozenset()       # run ids that existed before the call
    _records: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def ret(self) -> int:
        return self.returncode

    # -- lines ---------------------------------------------------------------------------

    @property
    def lines(self) -> LineMatcher:
        return LineMatcher(self.stdout.splitlines())

    def fnmatch_lines(self, patterns: Iterable[str], *, consecutive: bool = False) -> None:
        """Every pattern (a glob) matches a line of stdout, in this order."""
        self.lines.fnmatch_lines(patterns, consecutive=consecutive)

    def re_match_lines(self, patterns: Iterable[str], *, consecutive: bool = False) -> None:
        self.lines.re_match_lines(patterns, consecutive=consecutive)

    def no_fnmatch_line(self, pattern: str) -> None:
        self.lines.no_fnmatch_line(pattern)

    def result_lines(self, *outcomes: str) -> list[str]:
        """The per-cell result lines of stdout (see :func:`result_lines`)."""
        return result_lines(self.stdout, *outcomes)

    def cell_ids(self, *outcomes: str) -> list[str]:
        """The cells of the result lines, in the order the terminal printed them."""
        return [RESULT_LINE.match(line).group(2) for line in self.result_lines(*outcomes)]

    def collected_ids(self) -> list[str]:
        """``--collect-only``: the cells of the plan, in matrix order."""
        return [line.split("  (")[0] for line in self.stdout.splitlines() if "::" in line]

    # -- the final line --------------------------------------------------------------------

    def outcomes(self) -> dict[str, int]:
        """The counts of the final line: ``{"passed": 2, "failed": 1, "errors": 1, "deselected": 3}``."""
        for line in reversed(self.stdout.splitlines()):
            found = STATS_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", line))
            if found:
                counts = {}
                for piece in found.group(1).split(", "):
                    number, _, noun = piece.partition(" ")
                    if number.isdigit() and noun in NOUNS:
                        counts[NOUNS[noun]] = int(number)
                return counts
        raise AssertionError(f"no final summary line in the output:\n{self.output}")

    def assert_outcomes(self, passed: int = 0, failed: int = 0, errors: int = 0, canceled: int = 0,
                        skipped: int = 0, reused: int = 0, deselected: int | None = None) -> None:
        """The final line's counts are exactly these (``deselected`` checked only when given)."""
        expected = {"passed": passed, "failed": failed, "errors": errors, "canceled": canceled,
                    "skipped": skipped, "reused": reused}
        found = self.outcomes()
        actual = {key: found.get(key, 0) for key in expected}
        if deselected is not None:
            expected["deselected"], actual["deselected"] = deselected, found.get("deselected", 0)
        assert actual == expected, f"outcomes {actual} != expected {expected}\n{self.output}"

    # -- the history -------------------------------------------------------------------------

    @property
    def records(self) -> list[dict[str, Any]]:
        """The run records this call created, oldest first."""
        if self._records is None:
            found = read_records(self.root) if self.root is not None else []
            self._records = [r for r in found if r["run_id"] not in self.before]
        return self._records

    def record(self, cell_id: str) -> dict[str, Any]:
        """The one run record of ``cell_id`` made by this call."""
        found = [r for r in self.records if r["cell_id"] == cell_id]
        assert len(found) == 1, f"{len(found)} records of {cell_id} (have: {[r['cell_id'] for r in self.records]})"
        return found[0]

    def records_by_cell(self) -> dict[str, dict[str, Any]]:
        """cell id → its (last) run record of this call."""
        return {r["cell_id"]: r for r in self.records}

    def run_dir(self, record: dict[str, Any] | str) -> Path:
        run_id = record if isinstance(record, str) else record["run_id"]
        assert self.root is not None
        return self.root / ".amlrun" / "runs" / run_id


class Project:
    """A throw-away project folder with helpers to run amlrun in it and read its history."""

    def __init__(self, root: Path):
        self.root = root

    def write(self, files: dict[str, str]) -> "Project":
        write_files(self.root, files)
        return self

    # -- running -------------------------------------------------------------------------

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300, input: str | None = None,
            in_process: bool = False) -> Result:
        """``amlrun ARGS`` in the project: a subprocess (the default), or in this process
        (``in_process=True``: ~10x faster, for core tests; no ``input``, no ``timeout``)."""
        if in_process:
            return self.run_in_process(*args, env=env)
        before = self._run_ids()
        full_env = os.environ.copy()
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "amlrun", *args], cwd=self.root, env=full_env, capture_output=True, text=True,
            timeout=timeout, input=input,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, self.root, before)

    def run_in_process(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """``amlrun.cli.main(ARGS)`` in this process, cwd and environment as a subprocess would have them."""
        from amlrun.cli import main

        before = self._run_ids()
        out, err = io.StringIO(), io.StringIO()
        with _environment(env or {}), _cwd(self.root), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            code = main(list(args))
        return Result(code, out.getvalue(), err.getvalue(), self.root, before)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        full_env = os.environ.copy()
        full_env.update(env or {})
        return subprocess.Popen(
            [sys.executable, "-m", "amlrun", *args], cwd=self.root, env=full_env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )

    # -- the history -------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every run record of the project, oldest first."""
        return read_records(self.root)

    def records_by_cell(self) -> dict[str, dict[str, Any]]:
        """cell id → its latest run record."""
        return {r["cell_id"]: r for r in self.records()}

    def run_dir(self, record: dict[str, Any] | str) -> Path:
        run_id = record if isinstance(record, str) else record["run_id"]
        return self.root / ".amlrun" / "runs" / run_id

    def _run_ids(self) -> frozenset[str]:
        runs = self.root / ".amlrun" / "runs"
        return frozenset(p.name for p in runs.iterdir()) if runs.is_dir() else frozenset()


@contextlib.contextmanager
def _environment(changes: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
