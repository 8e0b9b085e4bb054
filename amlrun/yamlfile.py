"""Reading YAML files so that a mistake names the file and the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amlrun.errors import ConfigError


def read_yaml(path: Path, *, display: str | None = None, tabs: bool = False) -> Any:
    """The YAML document of ``path``. With ``tabs``, a file YAML refuses because of TAB
    characters is read again with them as spaces (Workbench accepted them in its files)."""
    import yaml

    shown = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", shown) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", shown) from None
    if tabs and "\t" in text:
        try:
            return parse(text)
        except yaml.YAMLError:
            text = untab(text)  # same lines: an error found now names the user's line
    try:
        return parse(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # an unclosed quote or bracket is only noticed at the end of the file: name the
        # line where it was opened instead
        if exc.context_mark is not None and mark is not None and mark.index >= len(text.rstrip()):
            mark = exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and mark is exc.context_mark:
            problem = f"{exc.problem} {exc.context}"
        raise ConfigError(f"invalid YAML: {problem}", shown, line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", shown) from None


def parse(text: str) -> Any:
    """``yaml.safe_load`` with libyaml's loader where PyYAML has it (several times faster);
    a document it refuses is parsed again by the pure-Python loader, whose messages and
    marks the errors above are written for."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", None)
    if loader is not None:
        try:
            return yaml.load(text, Loader=loader)  # noqa: S506 - CSafeLoader is the safe loader
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def untab(text: str) -> str:
    """``text`` with TABs outside quoted scalars and comments as spaces: to the next
    multiple of 8 in indentation (a consistently tab-indented file keeps its structure),
    one space elsewhere."""
    lines = []
    for line in text.split("\n"):
        body = line.lstrip(" \t")
        out = [line[: len(line) - len(body)].expandtabs(8)]
        quote = ""
        for at, char in enumerate(body):
            if quote:
                quote = "" if char == quote else quote
            elif char in "\"'":
                quote = char
            elif char == "#" and (at == 0 or body[at - 1] in " \t"):
                out.append(body[at:])
                break
            elif char == "\t":
                char = " "
            out.append(char)
        lines.append("".join(out))
    return "\n".join(lines)


def read_mapping(path: Path, *, display: str | None = None, tabs: bool = False) -> dict:
    data = read_yaml(path, display=display, tabs=tabs)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of keys to values, got {type(data).__name__}", display or path)
    return data
