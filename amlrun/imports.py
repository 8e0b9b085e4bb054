"""Which of a project's Python files a script can import, read statically (never executed).

The rerun cache keys a cell on "the code it can see". Every non-Python file counts, and so
does every Python file the script imports, directly or through other project modules; a
Python file it never imports (another experiment, say) does not, so editing one script
does not invalidate the others' cached runs. A script that imports dynamically
(``importlib``, ``__import__``, ``runpy``, ``exec``, ``sys.path`` changes, subprocesses)
is taken to see every file.

The answer depends only on the snapshot, never on which paths were typed.
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Callable

#: spellings that can reach code the static reading cannot follow
_DYNAMIC = re.compile(rb"importlib|__import__|runpy|\bexec\s*\(|sys\.path|subprocess|os\.system|os\.exec|\bimp\b")
_IMPORT_HINT = re.compile(rb"^[ \t]*(?:from|import)[ \t]", re.M)

Reader = Callable[[str], "bytes | None"]


def _module_files(name: str, roots: list[str], files: frozenset[str]) -> list[str]:
    """The project files that importing ``name`` (``a.b.c``) may execute, from any root."""
    found: list[str] = []
    parts = name.split(".") if name else []
    for root in roots:
        for depth in range(1, len(parts) + 1):
            base = posixpath.join(root, *parts[:depth]) if root else posixpath.join(*parts[:depth])
            for candidate in (base + ".py", posixpath.join(base, "__init__.py")):
                if candidate in files:
                    found.append(candidate)
        if not parts:
            init = posixpath.join(root, "__init__.py") if root else "__init__.py"
            if init in files:
                found.append(init)
    return found


def _imports(path: str, source: bytes, roots: list[str], files: frozenset[str]) -> list[str] | None:
    """Project files imported by the file ``path``; None when it may import dynamically."""
    if _DYNAMIC.search(source):
        return None
    if not _IMPORT_HINT.search(source):
        return []
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return None  # unreadable here (maybe a newer Python's syntax): assume it sees everything
    here = posixpath.dirname(path)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += _module_files(alias.name, roots, files)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = posixpath.dirname(base)
                search = [base]
            else:
                search = roots
            module = node.module or ""
            found += _module_files(module, search, files)
            for alias in node.names:
                found += _module_files(f"{module}.{alias.name}" if module else alias.name, search, files)
    return found


def visible_python(
    script: str, files: frozenset[str], read: Reader, memo: dict[str, list[str] | None] | None = None
) -> frozenset[str] | None:
    """The Python files of ``files`` that ``script`` can import (itself included), or None
    when it may reach any of them (or is not a Python file). ``read(path)`` returns a file's
    bytes (None if unreadable); ``memo`` keeps each file's imports between calls."""
    if not script.endswith(".py"):
        return None
    memo = {} if memo is None else memo
    roots = [posixpath.dirname(script), ""]
    roots += [r for r in ("src",) if any(f.startswith(r + "/") for f in files)]
    seen = {script}
    todo = [script]
    while todo:
        path = todo.pop()
        key = f"{roots[0]}\0{path}"
        if key not in memo:
            source = read(path)
            memo[key] = None if source is None else _imports(path, source, roots, files)
        imported = memo[key]
        if imported is None:
            return None
        for other in imported:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return frozenset(seen)
