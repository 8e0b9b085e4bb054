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
from amlrun.workdirs import SLOT_PREFIX, WorkdirPool, layout_of, reap_stale_slots

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
    assert list(pool.root.iterdir()) == []


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
    assert list((project.root / ".amlrun" / "work").iterdir()) == []


def test_unchanged_large_files_stay_the_same_file_across_cells(project):
    """The large file is copied once per session's folder, not once per cell."""
    project.write({"look.py": "import os\nprint('SEEN', os.stat('big.bin').st_ino, os.stat('big.bin').st_ctime_ns)\n"})
    (project.root / "big.bin").write_bytes(os.urandom(2_000_000))
    result = project.run("-c", "local", "look.py", "-p", "i=1,2,3,4", "-n", "1")
    result.assert_outcomes(passed=4)
    lines = _seen_lines(project, result)
    assert len(lines) == 4 and len(set(lines)) == 1, lines
