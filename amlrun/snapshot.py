"""Content-addressed snapshots of a project's code.

A snapshot is a manifest (path, sha256, size, mode) whose own sha256 is its digest.
File contents live once in ``.amlrun/objects/`` however many runs use them, so 1,000
runs of an unchanged project store one copy. Hashing is skipped for files whose
(size, mtime, inode) match the stat cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from amlrun.clonefile import clone_or_copy

# Never part of a snapshot, whatever .gitignore says.
EXCLUDED_DIRS = {
    ".git",
    ".amlrun",
    "outputs",
    "__pycache__",
    ".hg",
    ".svn",
    ".venv",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".ipynb_checkpoints",
}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class SnapshotEntry:
    """One file of a snapshot: its path, its content's digest, size and mode."""

    path: str
    digest: str
    size: int
    mode: int


@dataclass(frozen=True)
class Snapshot:
    """A project's files at submission, by content: the manifest's digest and its entries."""

    digest: str
    entries: tuple[SnapshotEntry, ...]

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


class SnapshotMissing(Exception):
    """A run's code snapshot (or some of its files) is not in the store any more."""


class SnapshotDamaged(SnapshotMissing, ValueError):
    """A snapshot manifest whose content no longer matches its digest (a ValueError, as
    unreadable JSON was before)."""


@dataclass(frozen=True)
class GcResult:
    """What ``history gc`` removed, or would remove."""

    manifests: int  # snapshot manifests removed (or that would be)
    objects: int  # file objects removed
    bytes: int  # disk space they used
    kept_manifests: int


def disk_usage(path: Path, _seen: set | None = None) -> int:
    """Bytes ``path`` (a file, or a folder recursively) occupies on disk; a file with
    several hard links inside ``path`` counts once, like ``du``."""
    seen = set() if _seen is None else _seen

    def blocks(st) -> int:
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen:
                return 0
            seen.add(key)
        return st.st_blocks * 512

    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    total = blocks(st)
    if not stat.S_ISDIR(st.st_mode):
        return total
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                total += blocks(os.lstat(os.path.join(dirpath, name)))
            except FileNotFoundError:
                continue
    return total


def _credentials_rel(root: Path) -> str | None:
    """The credentials file's path relative to ``root`` when someone put it inside a project."""
    from amlrun.secrets import credentials_path

    try:
        return credentials_path().resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return None


def _excluded(rel: str) -> bool:
    parts = rel.split("/")
    return any(p in EXCLUDED_DIRS for p in parts[:-1]) or parts[-1] in EXCLUDED_DIRS or rel.endswith(EXCLUDED_SUFFIXES)


def list_files(root: Path) -> list[str]:
    """Project files to snapshot: git's view (tracked + untracked, not ignored) when a git work tree."""
    if (root / ".git").exists() and shutil.which("git"):
        proc = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
        )
        if proc.returncode == 0:
            names = [n for n in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
            return sorted(n for n in set(names) if not _excluded(n) and (root / n).is_file())
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            if not _excluded(rel):
                found.append(rel)
    return sorted(found)


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class SnapshotStore:
    """Objects and manifests under a state directory (``.amlrun/``)."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.objects = state_dir / "objects"
        self._objects = os.fspath(self.objects)
        self.manifests = state_dir / "snapshots"
        self._stat_cache_path = state_dir / "statcache.json"

    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest[2:]

    def object_file(self, digest: str) -> str:
        """:meth:`object_path` as a string, built without ``Path`` (a snapshot asks per file)."""
        return f"{self._objects}/{digest[:2]}/{digest[2:]}"

    def _load_stat_cache(self) -> dict:
        try:
            return json.loads(self._stat_cache_path.read_text())
        except (OSError, ValueError):
            return {}

    def _save_stat_cache(self, cache: dict) -> None:
        tmp = self._stat_cache_path.with_name(f"statcache.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, self._stat_cache_path)

    def take(self, root: Path, exclude: frozenset[str] = frozenset()) -> Snapshot:
        """Snapshot ``root``: hash changed files, store new objects, write the manifest.

        ``exclude``: project-relative paths left out (files amlrun itself wrote there)."""
        self.objects.mkdir(parents=True, exist_ok=True)
        self.manifests.mkdir(parents=True, exist_ok=True)
        cache = self._load_stat_cache()
        fresh_cache = {}
        entries = []
        secret_file = _credentials_rel(root)
        top = os.fspath(root)
        for rel in list_files(root):
            if rel == secret_file or rel in exclude:
                continue  # the user's credentials file and amlrun's own files never enter a snapshot
            try:
                st = os.stat(f"{top}/{rel}")
            except OSError:
                continue
            key = [st.st_size, st.st_mtime_ns, st.st_ino]
            cached = cache.get(rel)
            digest = cached[3] if cached and cached[:3] == key else None
            if digest is None or not os.path.exists(self.object_file(digest)):
                digest = self._store_object(root / rel)
            fresh_cache[rel] = [*key, digest]
            entries.append(SnapshotEntry(rel, digest, st.st_size, stat.S_IMODE(st.st_mode)))
        manifest = json.dumps([[e.path, e.digest, e.size, e.mode] for e in entries], separators=(",", ":"))
        snap_digest = hashlib.sha256(manifest.encode()).hexdigest()
        target = self.manifests / f"{snap_digest}.json"
        if self._intact(target, manifest):
            os.utime(target)  # reused: its fresh mtime protects it from a concurrent gc
        else:  # new, or damaged (truncated, edited): a damaged manifest is never reused
            tmp = target.with_name(f"{snap_digest}.{os.getpid()}.tmp")
            tmp.write_text(manifest)
            os.replace(tmp, target)
        if fresh_cache != cache:
            self._save_stat_cache(fresh_cache)
        return Snapshot(snap_digest, tuple(entries))

    @staticmethod
    def _intact(path: Path, manifest: str) -> bool:
        try:
            return path.read_text(encoding="utf-8", errors="replace") == manifest
        except OSError:
            return False

    def _store_object(self, path: Path) -> str:
        digest = hash_file(path)
        dest = self.object_path(digest)
        if not dest.exists():
            dest.parent.mkdir(exist_ok=True)
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
            clone_or_copy(path, tmp)  # shares the user's file's blocks where the file system can
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        return digest

    def put_file(self, dest: Path, data: bytes) -> str:
        """Write ``data`` at ``dest`` as a hard link to its content-addressed object, so a
        file that many runs keep (an environment's package list) is stored once.

        ``dest`` is replaced, never written through (that would change every link); a copy
        is made where links are impossible (another file system).
        """
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        obj = self.object_path(digest)
        if not obj.exists():
            obj.parent.mkdir(parents=True, exist_ok=True)
            tmp = obj.with_name(f"{obj.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, 0o444)
            os.replace(tmp, obj)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            os.link(obj, tmp)
        except OSError:
            tmp.write_bytes(data)
        os.replace(tmp, dest)
        return digest

    def load(self, digest: str) -> Snapshot:
        """The manifest ``digest``, refused when its content no longer hashes to its name."""
        raw = (self.manifests / f"{digest}.json").read_bytes()
        if hashlib.sha256(raw).hexdigest() != digest:
            raise SnapshotDamaged(f"code snapshot {digest[:12]}: its manifest is damaged (does not match its digest)")
        try:
            data = json.loads(raw)
            return Snapshot(digest, tuple(SnapshotEntry(*row) for row in data))
        except (ValueError, TypeError) as exc:
            raise SnapshotDamaged(f"code snapshot {digest[:12]}: its manifest is damaged ({exc})") from None

    def materialize(self, snapshot: Snapshot, dest: Path) -> None:
        """Write the snapshot's files into ``dest`` (fresh copies: a run may modify them)."""
        made: set[str] = set()
        for entry in snapshot.entries:
            target = dest / entry.path
            parent = os.path.dirname(entry.path)
            if parent and parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(parent)
            clone_or_copy(self.object_path(entry.digest), target)
            os.chmod(target, entry.mode | stat.S_IWUSR)

    def restore(self, digest: str, dest: Path) -> Snapshot:
        """Write snapshot ``digest`` into ``dest`` and verify every file's sha256."""
        try:
            snapshot = self.load(digest)
        except FileNotFoundError:
            raise SnapshotMissing(f"code snapshot {digest[:12]} is no longer stored (removed by gc?)") from None
        missing = [e.path for e in snapshot.entries if not self.object_path(e.digest).is_file()]
        if missing:
            raise SnapshotMissing(f"code snapshot {digest[:12]} lost {len(missing)} file(s), e.g. {missing[0]}")
        self.materialize(snapshot, dest)
        for entry in snapshot.entries:
            if hash_file(dest / entry.path) != entry.digest:
                raise SnapshotMissing(f"restored {entry.path} does not match the snapshot (object store damaged?)")
        return snapshot

    def manifest_digests(self) -> list[str]:
        if not self.manifests.is_dir():
            return []
        return sorted(p.name[:-5] for p in self.manifests.glob("*.json"))

    def collect_garbage(self, keep: set[str], *, grace: float = 0.0, dry_run: bool = False) -> GcResult:
        """Remove manifests not in ``keep`` and objects no kept manifest uses.

        Anything modified less than ``grace`` seconds ago is kept as well: a session
        running at the same time may have just written (or reused) it without having
        recorded a run that references it yet.
        """
        import time

        now = time.time()
        kept: set[str] = set()
        doomed_manifests: list[Path] = []
        for digest in self.manifest_digests():
            path = self.manifests / f"{digest}.json"
            try:
                young = now - path.stat().st_mtime < grace
            except FileNotFoundError:
                continue
            if digest in keep or young:
                kept.add(digest)
            else:
                doomed_manifests.append(path)
        used: set[str] = set()
        for digest in kept:
            try:
                used.update(e.digest for e in self.load(digest).entries)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError) as exc:
                # removing objects now could break a snapshot that is kept
                raise SnapshotMissing(f"cannot read snapshot manifest {digest[:12]} ({exc}); nothing removed") from None
        doomed_objects: list[Path] = []
        if self.objects.is_dir():
            for sub in self.objects.iterdir():
                if not sub.is_dir():
                    continue
                for obj in sub.iterdir():
                    digest = sub.name + obj.name
                    if digest in used or obj.name.endswith(".tmp"):
                        continue
                    try:
                        st = obj.stat()
                    except FileNotFoundError:
                        continue
                    if now - st.st_mtime < grace:
                        continue
                    doomed_objects.append(obj)
        freed = 0
        for path in doomed_manifests + doomed_objects:
            try:
                if path.stat().st_nlink == 1:  # else runs still hold the data through a hard link
                    freed += disk_usage(path)
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:
                continue
        return GcResult(len(doomed_manifests), len(doomed_objects), freed, len(kept))
