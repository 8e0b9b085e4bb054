"""Cells' working directories, at a cost that does not grow with the project.

Every cell needs a private copy of the session's snapshot: its script may modify or delete
any file there. A fresh copy per cell made the per-cell cost grow with the project's file
count and bytes, so a session keeps *slots* instead: full copies, one per cell running at
the same time, never one per cell. A cell gets a slot renamed to its run id. Before the next
cell gets it, the slot is compared with what amlrun wrote there: every entry is lstat-ed
(inode, type and mode, size, mtime, ctime, link count), what the last script changed, added
or removed is put back, and a slot that looks odd in any other way (a directory replaced,
an unreadable folder) is thrown away and made again. No file's content is read, so a large
file is copied once per slot (as a reflink where the file system has them), never per cell.

Why not links into one shared tree: through a hard link or a symlink a script writes the
shared file in place (root ignores read-only modes), changing other cells' files or the
snapshot store. A script cannot set a file's ctime (even root's ``utime`` sets it to now),
so an unchanged stat means an unchanged file, unless the script wrote it within the kernel's
timestamp tick of amlrun's own write: the files amlrun wrote less than ``SETTLE_NS`` before
the slot was handed out (the last few of a fresh slot, the ones put back) are compared by
content, once; when those hold tens of megabytes, the slot waits out the window instead.
Slots on a file system with coarse (whole-millisecond or coarser) timestamps are not reused.

A slot also outlives its session when it is small (``KEEP_BYTES``, or its files share blocks
with the store): parked as ``kept-*`` with a manifest of what amlrun wrote, it is the next
session's first slot after the same check, retargeted to that session's snapshot (files the
user changed, added or removed are written or removed; the rest is lstat-ed). A single run in
a project of thousands of files then costs a scan, not a file creation per file.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from amlrun.clonefile import clone_or_copy
from amlrun.process import alive, process_start
from amlrun.snapshot import hash_file

#: a file amlrun wrote less than this before the slot was handed out is checked by content (> a kernel tick)
SETTLE_NS = 30_000_000
#: when the files still inside that window hold more than this, waiting it out is cheaper than hashing them
#: later (sha256 reads about 1 GB/s: 32 MiB take about as long as the longest wait)
SETTLE_INSTEAD_OF_HASHING_BYTES = 32 << 20
#: a parked slot's folder name: slot-<pid>-<process start>-<n> (another session's, or a killed one's)
SLOT_PREFIX = "slot-"
#: a slot kept for the next session: kept-<pid>-<process start>-<n>, with its manifest inside
KEPT_PREFIX = "kept-"
#: the kept slot's manifest, at its top (taken out before the slot is checked)
MANIFEST = ".amlrun-slot.json"
#: a slot is kept between sessions when its files hold at most this (or share blocks with the store):
#: the disk a kept slot holds stays small, and a large file costs its copy per session, not per cell
KEEP_BYTES = 16 << 20
#: an expected key no entry has: the entry is written again at the next check
_REWRITE: tuple = ()


@dataclass(frozen=True)
class Layout:
    """What a cell's working directory holds: its folders (parents first) and its files
    (path → the file copied there, the mode it gets, its sha256)."""

    dirs: tuple[str, ...]
    files: dict[str, tuple[str, int, str]]


def layout_of(store, snapshot, runtime_source: Path, runtime_dirname: str) -> Layout:
    """The working directory of a run of ``snapshot``: its files, plus the run-time client."""
    files = {e.path: (store.object_file(e.digest), e.mode | stat.S_IWUSR, e.digest) for e in snapshot.entries}
    for dirpath, dirnames, filenames in os.walk(runtime_source):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel_dir = Path(dirpath).relative_to(runtime_source).as_posix()
        prefix = runtime_dirname if rel_dir == "." else f"{runtime_dirname}/{rel_dir}"
        for name in filenames:
            if not name.endswith((".pyc", ".pyo")):
                source = os.path.join(dirpath, name)
                files[f"{prefix}/{name}"] = (
                    source,
                    stat.S_IMODE(os.stat(source).st_mode) | stat.S_IWUSR,
                    hash_file(Path(source)),
                )
    dirs = {parent for rel in files for parent in _parents(rel)}
    return Layout(tuple(sorted(dirs, key=lambda d: (d.count("/"), d))), files)


def _parents(rel: str):
    parts = rel.split("/")[:-1]
    for n in range(1, len(parts) + 1):
        yield "/".join(parts[:n])


def _file_key(st: os.stat_result) -> tuple:
    return st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_uid, st.st_gid


def _dir_key(st: os.stat_result) -> tuple:
    return st.st_ino, st.st_mode


class _Discard(Exception):
    """The slot is not worth repairing: make a new one."""


@dataclass(eq=False)
class Slot:
    """One private copy of the layout and what lstat said of each entry amlrun wrote."""

    path: Path
    seen: dict[str, tuple] = field(default_factory=dict)
    root_key: tuple = ()
    handed_ns: int = 0  # when a run last got it (time.time_ns())
    reusable: bool = True
    shares_blocks: bool = True  # every file amlrun wrote is a reflink of the store's


class WorkdirPool:
    """The session's slots: ``acquire`` a working directory for a run, ``release`` it after."""

    def __init__(self, root: Path, layout: Layout):
        self.root = root
        self.layout = layout
        self._free: list[Slot] = []
        self._busy: dict[Path, Slot] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._reaped = False
        self._owner = f"{os.getpid()}-{process_start(os.getpid()) or 0}"  # pid and start: no pid reuse

    def acquire(self, name: str) -> Path:
        """A working directory ``root/name`` holding the layout, private to the caller until released."""
        with self._lock:
            slot = self._free.pop() if self._free else None
        if slot is not None and not self._reset(slot):
            remove_tree(slot.path)
            slot = None
        if slot is None:
            slot = self._make()
        path = self.root / name
        if os.path.lexists(path):
            remove_tree(path)
        os.rename(slot.path, path)
        slot.path = path
        slot.handed_ns = time.time_ns()
        with self._lock:
            self._busy[path] = slot
        return path

    def release(self, path: Path, *, keep: bool = False) -> None:
        """The run is over: park its folder for the next run (``keep``: leave it as it is, for the user)."""
        with self._lock:
            slot = self._busy.pop(path, None)
        if slot is None or keep:
            return
        parked = self._slot_path()
        try:
            if not slot.reusable:
                raise OSError("coarse timestamps")
            os.rename(path, parked)
        except OSError:
            remove_tree(path)
            return
        slot.path = parked
        with self._lock:
            self._free.append(slot)

    def close(self) -> None:
        """Remove the parked slots (the session is over), but keep one for the next session
        when it is small."""
        with self._lock:
            free, self._free = self._free, []
        kept = False
        for slot in free:
            if not kept and self._keep(slot):
                kept = True
                continue
            remove_tree(slot.path)

    # -- slots kept between sessions ---------------------------------------------------------

    def _keep(self, slot: Slot) -> bool:
        """Park ``slot`` as ``kept-*`` with its manifest, when it is worth its disk; checked
        first, so that nothing the last script left (a huge file, a link) outlives the session."""
        size = sum(key[2] for rel, key in slot.seen.items() if rel in self.layout.files and key)
        if not slot.reusable or (size > KEEP_BYTES and not slot.shares_blocks) or self._kept_names():
            return False
        if MANIFEST in self.layout.files or MANIFEST in self.layout.dirs or not self._reset(slot):
            return False
        files = self.layout.files
        manifest = {
            "root": list(slot.root_key),
            "handed_ns": slot.handed_ns,
            "shares_blocks": slot.shares_blocks,
            "entries": {rel: [list(key), *(files[rel][1:] if rel in files else ())] for rel, key in slot.seen.items()},
        }
        try:
            with open(slot.path / MANIFEST, "x", encoding="utf-8") as handle:
                handle.write(json.dumps(manifest))  # the C encoder: json.dump writes in Python chunks
            os.rename(slot.path, self.root / f"{KEPT_PREFIX}{self._owner}-{next(self._numbers)}")
        except OSError:
            return False
        return True

    def _kept_names(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root) if n.startswith(KEPT_PREFIX))
        except OSError:
            return []

    def _claim_kept(self) -> Slot | None:
        """A slot an earlier session kept, checked and made to hold this session's layout."""
        for name in self._kept_names():
            slot = Slot(self._slot_path())
            try:
                os.rename(self.root / name, slot.path)  # atomic: one session gets it
            except OSError:
                continue
            try:
                self._load_manifest(slot)
                if self._reset(slot):
                    return slot
            except (OSError, ValueError, TypeError, KeyError, IndexError, _Discard):
                pass
            remove_tree(slot.path)
        return None

    def _load_manifest(self, slot: Slot) -> None:
        """Read and remove the kept slot's manifest; retarget what it says amlrun wrote to
        this session's layout (an entry whose content or mode differs is written again)."""
        with open(slot.path / MANIFEST, encoding="utf-8") as handle:
            manifest = json.load(handle)
        os.unlink(slot.path / MANIFEST)
        slot.root_key = tuple(manifest["root"])
        slot.handed_ns = int(manifest["handed_ns"])
        slot.shares_blocks = manifest["shares_blocks"] is True
        files, dirs = self.layout.files, set(self.layout.dirs)
        for rel, (key, *written) in manifest["entries"].items():
            if rel in files:
                slot.seen[rel] = tuple(key) if written == list(files[rel][1:]) else _REWRITE
            elif rel in dirs:
                if len(key) != 2:
                    raise _Discard(rel)  # a file then, a folder now
                slot.seen[rel] = tuple(key)
            # not in the layout any more: the check removes it, as it removes what a script left
        for rel in self.layout.dirs:  # parents first
            if rel not in slot.seen:
                (slot.path / rel).mkdir()
                slot.seen[rel] = _dir_key(os.lstat(slot.path / rel))
        for rel in files:
            slot.seen.setdefault(rel, _REWRITE)

    # -- making and repairing slots ----------------------------------------------------------

    def _slot_path(self) -> Path:
        return self.root / f"{SLOT_PREFIX}{self._owner}-{next(self._numbers)}"

    def _make(self) -> Slot:
        if not self._reaped:
            self._reaped = True
            reap_stale_slots(self.root)
            kept = self._claim_kept()
            if kept is not None:
                return kept
        slot = Slot(self._slot_path())
        slot.path.mkdir(parents=True)
        for rel in self.layout.dirs:
            (slot.path / rel).mkdir()
        for rel in self.layout.files:
            self._write(slot, rel)
        for rel in self.layout.dirs:
            slot.seen[rel] = _dir_key(os.lstat(slot.path / rel))
        slot.root_key = _dir_key(os.lstat(slot.path))
        _settle_large_files(slot, self.layout.files)
        # whole-millisecond ctimes: a file system whose clock is too coarse to tell a later write
        slot.reusable = any(key[4] % 1_000_000 for rel, key in slot.seen.items() if rel in self.layout.files)
        return slot

    def _write(self, slot: Slot, rel: str) -> None:
        source, mode, _digest = self.layout.files[rel]
        target = slot.path / rel
        slot.shares_blocks = clone_or_copy(source, target) and slot.shares_blocks
        os.chmod(target, mode)
        slot.seen[rel] = _file_key(os.lstat(target))

    def _reset(self, slot: Slot) -> bool:
        """Put back what the last run changed in ``slot``; False when it must be made again."""
        try:
            if _dir_key(os.lstat(slot.path)) != slot.root_key:
                return False
            stale = self._scan(slot)
            for rel, st in stale:
                if st is not None:
                    remove_entry(slot.path / rel, st)
                self._write(slot, rel)
            if stale:
                _settle_large_files(slot, [rel for rel, _ in stale])
        except (OSError, _Discard):
            return False
        return True

    def _scan(self, slot: Slot) -> list[tuple[str, os.stat_result | None]]:
        """Remove what the run added; return the files it changed (with their stat) or removed (None)."""
        files, seen = self.layout.files, slot.seen
        stale: list[tuple[str, os.stat_result | None]] = []
        racy = slot.handed_ns - SETTLE_NS  # a ctime after this may hide a write in the same tick
        matched = 0
        pending = [""]
        while pending:
            rel_dir = pending.pop()
            with os.scandir(slot.path / rel_dir) as entries:
                for entry in entries:
                    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                    st = entry.stat(follow_symlinks=False)
                    expected = seen.get(rel)
                    if expected is None:
                        remove_entry(Path(entry.path), st)
                        continue
                    matched += 1
                    if rel in files:
                        if _file_key(st) != expected or (
                            expected[4] > racy and hash_file(Path(entry.path)) != files[rel][2]
                        ):
                            stale.append((rel, st))
                    elif _dir_key(st) == expected:
                        pending.append(rel)
                    else:
                        raise _Discard(rel)
        if matched != len(seen):
            if any(not os.path.isdir(slot.path / d) for d in self.layout.dirs):
                raise _Discard("a folder was removed")
            found = {rel for rel, _ in stale}
            stale += [(rel, None) for rel in files if rel not in found and not os.path.lexists(slot.path / rel)]
        return stale


def _settle_large_files(slot: Slot, written) -> None:
    """Wait until the files just written are out of the settle window when they are large.

    A file written less than ``SETTLE_NS`` before the hand-out is checked by content at the next
    reset: for a 300 MB data file that is a 0.3 s hash on the next cell of a sweep. Past a few
    tens of megabytes, sleeping out the rest of the window (at most ``SETTLE_NS``, once per
    slot made or repaired) costs less, and the stat check alone is then sound."""
    now = time.time_ns()
    recent = [slot.seen[rel] for rel in written if slot.seen[rel][4] > now - SETTLE_NS]
    if sum(key[2] for key in recent) >= SETTLE_INSTEAD_OF_HASHING_BYTES:
        time.sleep(max(0, max(key[4] for key in recent) + SETTLE_NS - time.time_ns()) / 1e9)


def remove_entry(path: Path, st: os.stat_result) -> None:
    """Remove a file, link or folder (a folder's links are removed, never followed)."""
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def reap_stale_slots(root: Path) -> int:
    """Remove parked slots of amlrun processes that are gone (killed before they cleaned up)."""
    removed = 0
    try:
        names = [n for n in os.listdir(root) if n.startswith(SLOT_PREFIX)]
    except OSError:
        return 0
    for name in names:
        pid, _, rest = name[len(SLOT_PREFIX) :].partition("-")
        started = rest.rpartition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid), started):
            remove_tree(root / name)
            removed += 1
    return removed
