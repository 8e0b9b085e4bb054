"""Warnings about a user's files, printed once each as one line."""

from __future__ import annotations

import sys
from collections.abc import Iterable

_seen: set[str] = set()


def warn(message: str) -> None:
    """Print ``warning: message`` to stderr, once per distinct message per process."""
    if message in _seen:
        return
    _seen.add(message)
    print(f"warning: {message}", file=sys.stderr)


def nearest(word: str, choices: Iterable[str]) -> str | None:
    import difflib  # only once a user's word is unknown

    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in choices}
        return lowered.get(word.lower())
    return matches[0]


def warn_unknown_keys(where: str, keys: Iterable[str], known: Iterable[str]) -> None:
    known = list(known)
    for key in keys:
        if key in known:
            continue
        hint = nearest(str(key), known)
        suffix = f" (did you mean '{hint}'?)" if hint else ""
        warn(f"{where}: unknown key '{key}'{suffix}")
