"""List every function in amlrun/ and plugins/ longer than a limit (default 60 lines,
the project's standard), longest first; exit 1 when there is one.

    python3 scripts/long_functions.py [LIMIT]
"""

import ast
import sys
from pathlib import Path

ROOTS = ("amlrun", "plugins")


def long_functions(limit: int) -> list[tuple[int, str, int, str]]:
    """(lines, file, first line, name) of each function or method over ``limit`` lines."""
    found = []
    for root in ROOTS:
        for path in sorted(Path(root).rglob("*.py")):
            if "build" in path.parts or any(p.endswith(".egg-info") for p in path.parts):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > limit:
                        found.append((lines, str(path), node.lineno, node.name))
    return sorted(found, reverse=True)


def main() -> int:
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    found = long_functions(limit)
    for lines, path, line, name in found:
        print(f"{lines:4d} lines  {path}:{line}  {name}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
