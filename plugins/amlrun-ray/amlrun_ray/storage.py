"""``outputsStorage`` on an object store (``s3://``, ``gs://``, ``az://`` ...) through fsspec,
imported only here: a run whose outputs come back another way never loads it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from amlrun.errors import TargetUnavailable


def fetch(location: str, dest: Path, note: Callable[[str], None]) -> None:
    """Download ``location``'s files into ``dest`` (names that would leave it are refused),
    then remove them from the store."""
    try:
        import fsspec
    except ImportError:
        raise TargetUnavailable(f"outputsStorage {location} needs fsspec here: pip install fsspec") from None
    fs, root = fsspec.core.url_to_fs(location)
    root = root.rstrip("/")
    if not fs.exists(root):
        return
    base = dest.resolve()
    for remote in fs.find(root):
        rel = remote[len(root) :].lstrip("/")
        local = (dest / rel).resolve()
        if not rel or base not in local.parents:
            note(f"refused an output entry: {rel}")
            continue
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
    fs.rm(root, recursive=True)
