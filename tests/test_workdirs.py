"""Cells' working directories (amlrun.workdirs): one private copy per running cell, reused
after a check, so that nothing a script does to its folder reaches another cell, the user's
tree or the snapshot store (the suite runs as root: read-only modes do not stop a script)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from amlrun.protocol import RUNTIME_SOURCE
from amlrun.snapshot import SnapshotStore, hash_file
from amlrun.targets.base import RUNTIME_DIRNAME
from amlrun.clonefile import clone_or_copy
from amlrun.workdirs import KEPT_PREFIX, MANIFEST, SLOT_PREFIX, WorkdirPool, layout_of, reap_stale_slots

FILES = {
    "train.py": "print('train')\n",
    "pkg/__init__.py": "",
    "pkg/model.py": "WEIGHTS = [1, 2, 3]\n",
    "pkg/deep/conf.txt": "depth=3\n",
    "data/table.csv": "a,b\n1,2\n",
    "data/blob.bin": "x" * 100_000,
}


@pytest.fixture
def tree(tmp_path):
    """A user's project, its snapshot, a pool of working directories, and a folder outside them all."""
    root = tmp_path / "proj"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    os.chmod(root / "train.py", 0o755)
    store, snapshot, pool = pool_of(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("outside\n")
    yield root, store, snapshot, pool, outside
    pool.close()


def pool_of(root: Path) -> tuple[SnapshotStore, object, WorkdirPool]:
    """The project's snapshot store, a snapshot of ``root`` and a pool of working directories of it."""
    store = SnapshotStore(root / ".amlrun")
    snapshot = store.take(root)
    return store, snapshot, WorkdirPool(root / ".amlrun" / "work",
                                        layout_of(store, snapshot, RUNTIME_SOURCE, RUNTIME_DIRNAME))


def walk(folder: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            found.add(Path(dirpath, name).relative_to(folder).as_posix())
    return found


def assert_pristine(workdir: Path, pool: WorkdirPool, snapshot) -> None:
    """``workdir`` holds exactly the snapshot (content and mode) and the run-time client."""
    assert walk(workdir) == set(pool.layout.files) | set(pool.layout.dirs)
    for entry in snapshot.entries:
        path = workdir / entry.path
        assert not path.is_symlink() and path.is_file(), entry.path
        assert hash_file(path) == entry.digest, entry.path
        assert stat.S_IMODE(path.lstat().st_mode) == entry.mode | stat.S_IWUSR, entry.path
        assert path.lstat().st_nlink == 1, entry.path
    for rel, (source, _mode, _digest) in pool.layout.files.items():
        if rel.startswith(RUNTIME_DIRNAME + "/"):
            assert (workdir / rel).read_bytes() == Path(source).read_bytes(), rel


def assert_store_intact(store: SnapshotStore, snapshot) -> None:
    for entry in snapshot.entries:
        assert hash_file(store.object_path(entry.digest)) == entry.digest, entry.path


def vandalise(workdir: Path, outside: Path) -> None:
    """What a careless or hostile script does to its working directory."""
    model = workdir / "pkg/model.py"
    before = model.stat()
    os.chmod(model, 0o444)
    with open(model, "r+b") as fh:          # same size, in place, through a read-only mode (root)
        fh.write(b"WEIGHTS = [6, 6, 6]\n")
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))   # and the mtime put back
    with open(workdir / "data/blob.bin", "r+b") as fh:
        fh.truncate(10)
    os.remove(workdir / "data/table.csv")
    os.chmod(workdir / "train.py", 0o600)
    (workdir / "pkg/deep/conf.txt").unlink()
    (workdir / "pkg/deep/conf.txt").symlink_to(outside / "victim.txt")
    os.link(workdir / "train.py", outside / "hardlink.py")
    (workdir / "new.txt").write_text("left behind")
    (workdir / "pkg/__pycache__").mkdir()
    (workdir / "pkg/__pycache__/model.cpython-311.pyc").write_bytes(b"planted")
    (workdir / "escape").symlink_to(outside, target_is_directory=True)
    (workdir / RUNTIME_DIRNAME / "amlrun_extra.py").write_text("planted = True\n")


def test_nothing_a_script_does_to_its_folder_reaches_the_next_run(tree):
    root, store, snapshot, pool, outside = tree
    first = pool.acquire("run-1")
    assert first == pool.root / "run-1"
    assert_pristine(first, pool, snapshot)
    vandalise(first, outside)
    pool.release(first)
    second = pool.acquire("run-2")
    assert not first.exists()
    assert_pristine(second, pool, snapshot)
    # nothing outside the folder was followed or changed, and the user's tree and the store are as they were
    assert walk(outside) == {"victim.txt", "hardlink.py"} and (outside / "victim.txt").read_text() == "outside\n"
    for rel, text in FILES.items():
        assert (root / rel).read_text() == text
    assert_store_intact(store, snapshot)
    # the hard link the first run made out of its folder no longer reaches the next run's file
    (outside / "hardlink.py").write_text("changed through the link\n")
    assert (second / "train.py").read_text() == FILES["train.py"]


def test_a_write_right_after_the_folder_is_handed_out_is_seen(tree):
    """Timestamp granularity: a same-size write within a kernel tick of amlrun's own copy."""
    _root, _store, snapshot, pool, _outside = tree
    for n in range(5):
        workdir = pool.acquire(f"run-{n}")
        assert_pristine(workdir, pool, snapshot)
        path = workdir / "pkg/model.py"
        st = path.stat()
        path.write_text("WEIGHTS = [0, 0, 0]\n")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        pool.release(workdir)


def test_a_write_to_a_large_file_right_after_the_hand_out_is_seen(tmp_path, monkeypatch):
    """Large files are not hashed at the next reset: the slot waits out the timestamp window
    instead, so an in-place write with the mtime put back still changes the ctime."""
    import amlrun.workdirs

    hashed = []
    real_hash = amlrun.workdirs.hash_file
    monkeypatch.setattr(amlrun.workdirs, "hash_file", lambda path: hashed.append(path.name) or real_hash(path))
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    (root / "data/big.bin").write_bytes(b"\0" * (40 << 20))
    _store, snapshot, pool = pool_of(root)
    try:
        for n in range(4):
            workdir = pool.acquire(f"run-{n}")
            assert_pristine(workdir, pool, snapshot)
            big = workdir / "data/big.bin"
            before = big.stat()
            if n % 2:                           # at once, same size, in place, the mtime put back
                with open(big, "r+b") as fh:
                    fh.seek(1 << 20)
                    fh.write(b"vandalised")
                os.utime(big, ns=(before.st_atime_ns, before.st_mtime_ns))
            pool.release(workdir)
    finally:
        pool.close()
    assert "big.bin" not in hashed


def test_folders_running_at_once_are_separate(tree):
    _root, _store, snapshot, pool, _outside = tree
    one, two = pool.acquire("run-1"), pool.acquire("run-2")
    assert (one / "data/blob.bin").stat().st_ino != (two / "data/blob.bin").stat().st_ino
    (one / "data/blob.bin").write_text("one's")
    assert_pristine(two, pool, snapshot)
    pool.release(one)
    pool.release(two)
    assert sorted(p.name.startswith(SLOT_PREFIX) for p in pool.root.iterdir()) == [True, True]
    pool.close()
    assert [p.name.startswith(KEPT_PREFIX) for p in pool.root.iterdir()] == [True]  # one kept for the next session


def test_untouched_files_are_not_copied_again(tree):
    """The per-run cost: a file the script did not change stays the very same file (no copy)."""
    _root, _store, _snapshot, pool, _outside = tree
    seen = set()
    for n in range(4):
        workdir = pool.acquire(f"run-{n}")
        st = (workdir / "data/blob.bin").stat()
        seen.add((st.st_ino, st.st_ctime_ns))
        pool.release(workdir)
    assert len(seen) == 1


def test_a_folder_replaced_by_a_link_is_rebuilt_without_following_it(tree):
    _root, _store, snapshot, pool, outside = tree
    workdir = pool.acquire("run-1")
    import shutil

    shutil.rmtree(workdir / "pkg")
    (workdir / "pkg").symlink_to(outside, target_is_directory=True)
    os.chmod(workdir / "data", 0o700)
    pool.release(workdir)
    workdir = pool.acquire("run-2")
    assert_pristine(workdir, pool, snapshot)
    assert walk(outside) == {"victim.txt"}


def test_kept_folders_stay_as_the_run_left_them(tree):
    _root, _store, _snapshot, pool, _outside = tree
    workdir = pool.acquire("run-1")
    (workdir / "result.txt").write_text("look at me")
    pool.release(workdir, keep=True)
    assert (workdir / "result.txt").read_text() == "look at me"
    other = pool.acquire("run-2")
    assert other != workdir and not (other / "result.txt").exists()
    pool.release(other)


def test_slots_of_a_killed_amlrun_are_removed(tmp_path):
    from amlrun.process import process_start

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    parent = os.getppid()
    names = {"dead": f"{SLOT_PREFIX}{int(gone.stdout)}-12345-0",
             "alive": f"{SLOT_PREFIX}{parent}-{process_start(parent)}-0",
             "pid reused": f"{SLOT_PREFIX}{parent}-1-3"}      # the parent's pid, another process's start
    for name in names.values():
        (tmp_path / name / "sub").mkdir(parents=True)
    (tmp_path / "20260101-000000-abcdef12").mkdir()
    assert reap_stale_slots(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["alive"], "20260101-000000-abcdef12"])



# -- a slot kept between sessions --------------------------------------------------------------


def kept_slots(pool: WorkdirPool) -> list[Path]:
    return sorted(p for p in pool.root.iterdir() if p.name.startswith(KEPT_PREFIX))


def session_of_two_runs(pool: WorkdirPool) -> None:
    """Two runs, the second one handed the slot after amlrun's writes are out of the window
    in which files are checked by content: from then on only their stat tells a change."""
    import time

    import amlrun.workdirs

    pool.release(pool.acquire("run-1"))
    time.sleep(2 * amlrun.workdirs.SETTLE_NS / 1e9)
    pool.release(pool.acquire("run-1b"))
    pool.close()


def test_the_next_session_gets_the_kept_slot_checked(tree):
    """A session keeps one small slot; the next session's first run gets it after the usual
    check: what the last script did is undone, an untouched file stays the same file (no copy)."""
    root, store, snapshot, pool, outside = tree
    first = pool.acquire("run-1")
    vandalise(first, outside)
    pool.release(first)
    pool.close()
    (kept,) = kept_slots(pool)
    assert walk(kept) == set(pool.layout.files) | set(pool.layout.dirs) | {MANIFEST}  # nothing the script left
    untouched = (kept / "pkg/__init__.py").stat().st_ino
    _store, snapshot, later = pool_of(root)
    second = later.acquire("run-2")
    assert_pristine(second, later, snapshot)  # the manifest is gone from it too
    assert (second / "pkg/__init__.py").stat().st_ino == untouched
    assert walk(outside) == {"victim.txt", "hardlink.py"} and (outside / "victim.txt").read_text() == "outside\n"
    assert_store_intact(store, snapshot)
    assert kept_slots(later) == []
    later.release(second)
    later.close()
    assert len(kept_slots(later)) == 1


def test_a_kept_slot_follows_what_the_user_changed_between_sessions(tree):
    root, _store, _snapshot, pool, _outside = tree
    session_of_two_runs(pool)
    (root / "pkg/model.py").write_text("WEIGHTS = [9, 9, 9]\n")   # same size, new content
    os.chmod(root / "train.py", 0o700)                             # a new mode
    os.remove(root / "data/table.csv")                             # gone
    import shutil

    shutil.rmtree(root / "pkg/deep")                                # a folder gone
    (root / "new/sub").mkdir(parents=True)                          # new folders and files
    (root / "new/sub/added.txt").write_text("added\n")
    (kept,) = kept_slots(pool)
    untouched = (kept / "data/blob.bin").stat().st_ino
    store, snapshot, later = pool_of(root)
    workdir = later.acquire("run-2")
    assert_pristine(workdir, later, snapshot)
    assert (workdir / "data/blob.bin").stat().st_ino == untouched  # retargeted, not made again
    assert (workdir / "new/sub/added.txt").read_text() == "added\n"
    assert not (workdir / "data/table.csv").exists() and not (workdir / "pkg/deep").exists()
    assert_store_intact(store, snapshot)
    later.release(workdir)
    later.close()
    (root / "data/blob.bin").unlink()
    (root / "data/blob.bin").mkdir()                                # a file became a folder
    (root / "data/blob.bin/inner.txt").write_text("inner\n")
    _store, snapshot, last = pool_of(root)
    try:
        assert_pristine(last.acquire("run-3"), last, snapshot)
    finally:
        last.close()


def test_a_kept_slot_changed_or_broken_between_sessions_is_repaired_or_replaced(tree):
    """What a stray process does to a kept slot after its session, or a damaged manifest."""
    root, _store, _snapshot, pool, outside = tree
    session_of_two_runs(pool)
    (kept,) = kept_slots(pool)
    vandalise(kept, outside)
    _store, snapshot, later = pool_of(root)
    workdir = later.acquire("run-2")
    assert_pristine(workdir, later, snapshot)
    later.release(workdir)
    later.close()
    for damage in ("not json", '{"root": [1, 2]}', '{"root": 1, "handed_ns": "x", "entries": []}'):
        (kept,) = kept_slots(later)
        (kept / MANIFEST).write_text(damage)
        _store, snapshot, later = pool_of(root)
        workdir = later.acquire("run-3")
        assert_pristine(workdir, later, snapshot)
        assert [p.name for p in later.root.iterdir()] == ["run-3"]  # the damaged one is gone
        later.release(workdir)
        later.close()
    (kept,) = kept_slots(later)
    (kept / MANIFEST).unlink()
    _store, snapshot, later = pool_of(root)
    assert_pristine(later.acquire("run-4"), later, snapshot)


def test_two_sessions_never_share_a_kept_slot(tree):
    root, _store, _snapshot, pool, _outside = tree
    pool.release(pool.acquire("run-1"))
    pool.close()
    (kept,) = kept_slots(pool)
    inode = (kept / "train.py").stat().st_ino
    (_s1, snapshot, one), (_s2, _snapshot, two) = pool_of(root), pool_of(root)
    a, b = one.acquire("run-a"), two.acquire("run-b")
    assert_pristine(a, one, snapshot)
    assert_pristine(b, two, snapshot)
    assert (a / "train.py").stat().st_ino == inode != (b / "train.py").stat().st_ino
    one.release(a)
    two.release(b)
    one.close()
    two.close()
    assert len(kept_slots(one)) == 1  # a session keeps one only when none is kept


def test_a_large_slot_is_not_kept_unless_it_shares_the_store_s_blocks(tree, monkeypatch):
    """Past ``KEEP_BYTES`` a kept slot would be a second copy of the project's data on disk."""
    import amlrun.workdirs

    root, store, snapshot, pool, _outside = tree
    monkeypatch.setattr(amlrun.workdirs, "KEEP_BYTES", 50_000)  # data/blob.bin has 100,000 bytes
    pool.release(pool.acquire("run-1"))
    pool.close()
    probe = root.parent / "probe"
    reflinks = clone_or_copy(store.object_path(snapshot.entries[0].digest), probe)
    assert len(kept_slots(pool)) == (1 if reflinks else 0)


def test_a_single_run_reuses_the_slot_of_the_last_session(project):
    """The command line: a project's second session gets the first one's folder, checked."""
    project.write({"look.py": "import os\nst = os.stat('untouched.txt')\nprint('SAME', st.st_ino, st.st_ctime_ns)\n"
                                "print('SEEN', open('data.txt').read() + open('helper.txt').read())\n"
                                "open('data.txt', 'a').write('x')\nos.remove('helper.txt')\nopen('left.txt', 'w')\n",
                   "data.txt": "data\n", "helper.txt": "helper\n", "untouched.txt": "as it was\n"})
    first, second = project.run("-c", "local", "look.py"), project.run("-c", "local", "look.py")
    first.assert_outcomes(passed=1)
    second.assert_outcomes(passed=1)
    logs = [(project.run_dir(record) / "log.txt").read_text() for record in project.records()]
    assert len(logs) == 2 and all("SEEN data\nhelper\n" in log for log in logs), logs
    same = [line for log in logs for line in log.splitlines() if line.startswith("SAME ")]
    assert len(same) == 2 and same[0] == same[1], same  # the very same file: the folder was reused, not copied
    assert (project.root / "data.txt").read_text() == "data\n"
    assert (project.root / "helper.txt").read_text() == "helper\n"
    restored = project.root.parent / "restored"
    restored.mkdir()
    SnapshotStore(project.root / ".amlrun").restore(second.records[0]["snapshot_digest"], restored)
    assert (restored / "helper.txt").read_text() == "helper\n"


VANDAL = """
import hashlib, os, sys
def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
print("SEEN", digest("data/big.bin"), digest("vandal.py"), open("conf.txt").read().strip(),
      os.stat("data/big.bin").st_ino, sorted(os.listdir(".")), flush=True)
os.chmod("conf.txt", 0o444)
with open("conf.txt", "r+") as fh:
    fh.write("XXXXXXX")
with open("data/big.bin", "r+b") as fh:
    fh.write(b"corrupted")
os.remove("vandal.py")
open("extra.txt", "w").write("left")
"""


def _seen_lines(project, result) -> list[str]:
    lines = []
    for record in result.records:
        log = (project.run_dir(record) / "log.txt").read_text()
        lines += [line for line in log.splitlines() if line.startswith("SEEN ")]
    return lines


@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_cell_of_a_sweep_sees_the_snapshot(project, workers):
    """A real sweep whose script vandalises its folder (as root): every cell sees the
    project as it was, the user's tree and the stored snapshot stay intact, the large file
    is put back, and no working directory is left behind."""
    big = os.urandom(3_000_000)
    project.write({"vandal.py": VANDAL, "conf.txt": "depth=3\n"})
    (project.root / "data").mkdir()
    (project.root / "data/big.bin").write_bytes(big)
    result = project.run("-c", "local", "vandal.py", "-p", "i=1,2,3,4,5,6", "-n", workers)
    result.assert_outcomes(passed=6)
    lines = _seen_lines(project, result)
    assert len(lines) == 6
    expected = (hashlib.sha256(big).hexdigest()[:16], hashlib.sha256(VANDAL.lstrip("\n").encode()).hexdigest()[:16],
                "depth=3")
    listings = set()
    for line in lines:
        _, big_digest, script_digest, conf, _inode, listing = line.split(" ", 5)
        assert (big_digest, script_digest, conf) == expected, line
        listings.add(listing)
    assert len(listings) == 1 and "extra.txt" not in next(iter(listings))
    assert (project.root / "conf.txt").read_text() == "depth=3\n"
    assert (project.root / "data/big.bin").read_bytes() == big
    store = SnapshotStore(project.root / ".amlrun")
    digest = result.records[0]["snapshot_digest"]
    restored = project.root.parent / "restored"
    restored.mkdir()
    store.restore(digest, restored)
    assert (restored / "vandal.py").read_text() == VANDAL.lstrip("\n")
    assert (restored / "data/big.bin").read_bytes() == big
    left = [p.name for p in (project.root / ".amlrun" / "work").iterdir()]
    assert len(left) == 1 and left[0].startswith(KEPT_PREFIX)  # one small slot kept for the next session
    # the next session's cell gets the kept folder, checked: what the last cell did to it is undone
    again = project.run("-c", "local", "vandal.py", "-p", "i=7")
    again.assert_outcomes(passed=1)
    (line,) = _seen_lines(project, again)
    _, big_digest, script_digest, conf, _inode, listing = line.split(" ", 5)
    assert (big_digest, script_digest, conf, listing) == (*expected, next(iter(listings)))


def test_unchanged_large_files_stay_the_same_file_across_cells(project):
    """The large file is copied once per session's folder, not once per cell."""
    project.write({"look.py": "import os\nprint('SEEN', os.stat('big.bin').st_ino, os.stat('big.bin').st_ctime_ns)\n"})
    (project.root / "big.bin").write_bytes(os.urandom(2_000_000))
    result = project.run("-c", "local", "look.py", "-p", "i=1,2,3,4", "-n", "1")
    result.assert_outcomes(passed=4)
    lines = _seen_lines(project, result)
    assert len(lines) == 4 and len(set(lines)) == 1, lines
