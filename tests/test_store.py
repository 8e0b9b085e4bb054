"""The run store and the snapshot store, driven directly (the CLI tests are in test_history.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from amlrun.snapshot import SnapshotMissing, SnapshotStore, disk_usage
from amlrun.store import RunStore, param_matches

WRITER = textwrap.dedent("""
    import dataclasses, sys, time
    from pathlib import Path
    from amlrun.store import RunStore

    state, worker, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = RunStore(state)
    for i in range(count):
        record = store.save(store.new_record(
            cell_id=f"train.py::local[w={worker}-i={i}]", script="train.py", target="local",
            target_type="local", runconfig="local", params={"w": worker, "i": i}, status="queued"))
        record = store.update(record, status="running", started=time.time())
        store.update(record, status="completed", ended=time.time(), exit_code=0,
                     metrics={"accuracy": i / count, "worker": worker})
    store.close()
""")


def _writers(state: Path, workers: int, runs: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", WRITER, str(state), str(w), str(runs)]) for w in range(workers)]


def test_four_processes_record_1000_runs_none_lost(tmp_path):
    state = tmp_path / ".amlrun"
    procs = _writers(state, 4, 250)
    reader = RunStore(state)
    # read (and reap) while they write: readers must not disturb writers
    while any(p.poll() is None for p in procs):
        reader.list(limit=20)
        time.sleep(0.05)
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    records = reader.list()
    assert len(records) == 1000
    assert len({r.run_id for r in records}) == 1000
    assert {(r.params["w"], r.params["i"]) for r in records} == {(w, i) for w in range(4) for i in range(250)}
    assert {r.status for r in records} == {"completed"}
    for record in records[::50]:
        on_disk = json.loads((state / "runs" / record.run_id / "record.json").read_text())
        assert on_disk["status"] == "completed" and on_disk["metrics"] == record.metrics
    reader.close()
    conn = sqlite3.connect(state / "history.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_run_of_a_killed_process_is_marked_failed_on_next_read(tmp_path):
    state = tmp_path / ".amlrun"
    store = RunStore(state)
    done = store.save(store.new_record(cell_id="a", script="a.py", target="local", target_type="local",
                                       runconfig="local", status="completed"))
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from amlrun.store import RunStore
        store = RunStore(Path(sys.argv[1]))
        record = store.save(store.new_record(cell_id="b", script="b.py", target="local", target_type="local",
                                             runconfig="local", status="running", started=time.time()))
        print(record.run_id, flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(state)], stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    assert store.get(run_id).status == "running"
    assert store.list()[0].status == "running"  # alive: left alone
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    records = {r.run_id: r for r in store.list()}
    assert records[run_id].status == "failed"
    assert "died" in records[run_id].reason and records[run_id].ended
    assert records[done.run_id].status == "completed"
    assert json.loads((state / "runs" / run_id / "record.json").read_text())["status"] == "failed"


def test_a_reused_pid_does_not_keep_a_dead_run_alive(tmp_path):
    store = RunStore(tmp_path / ".amlrun")
    # our own pid, but a different process start time: the process that made the run is gone
    record = store.save(dataclasses.replace(store.new_record(
        cell_id="c", script="c.py", target="local", target_type="local", runconfig="local", status="running"),
        pid_started="1"))
    assert store.resolve(record.run_id[:12]).status == "failed"


def test_resolve_by_id_prefix_and_last(tmp_path):
    store = RunStore(tmp_path / ".amlrun")
    first = store.save(store.new_record(cell_id="a", script="a.py", target="local", target_type="local",
                                        runconfig="local", status="completed"))
    second = store.save(dataclasses.replace(store.new_record(
        cell_id="b", script="b.py", target="local", target_type="local", runconfig="local", status="completed"),
        created=first.created + 1))
    assert store.resolve("last").run_id == second.run_id
    assert store.resolve(first.run_id).run_id == first.run_id
    assert store.resolve(first.run_id[:-3]).run_id == first.run_id
    from amlrun.errors import UsageError

    with pytest.raises(UsageError, match="ambiguous"):
        store.resolve(first.run_id[:4])
    with pytest.raises(UsageError, match="no run matches"):
        store.resolve("nope")
    with pytest.raises(UsageError, match="no run matches"):
        store.resolve("%")  # a LIKE wildcard is taken literally


def test_list_filters(tmp_path):
    store = RunStore(tmp_path / ".amlrun")
    for i, (script, status, lr) in enumerate([("a.py", "completed", 0.1), ("a.py", "failed", "0.2"),
                                               ("b.py", "completed", 0.2), ("b.py", "completed", 1.0)]):
        store.save(dataclasses.replace(store.new_record(
            cell_id=f"{script}::local", script=script, target="local" if i < 3 else "docker",
            target_type="local", runconfig="local", params={"lr": lr}, status=status), created=1000.0 + i))
    assert [r.params["lr"] for r in store.list()] == [1.0, 0.2, "0.2", 0.1]
    assert len(store.list(script="a.py")) == 2
    assert len(store.list(status=["failed"])) == 1
    assert len(store.list(target="docker")) == 1
    assert [r.script for r in store.list(params={"lr": "0.2"})] == ["b.py", "a.py"]
    assert len(store.list(params={"lr": "1"})) == 1
    assert len(store.list(params={"lr": "0.2"}, limit=1)) == 1
    assert store.count(script="b.py") == 2
    assert param_matches({"flag": True}, "flag", "true")
    assert not param_matches({"lr": 0.1}, "depth", "0.1")


def test_new_run_ids_are_unique_and_sortable(tmp_path):
    store = RunStore(tmp_path / ".amlrun")
    ids = [store.save(store.new_record(cell_id="a", script="a.py", target="local", target_type="local",
                                       runconfig="local")).run_id for _ in range(300)]
    assert len(set(ids)) == 300
    assert all(len(i.split("-")[-1]) == 8 for i in ids)


# -- snapshots --------------------------------------------------------------------------------


def _project(root: Path, big: int = 2 << 20) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    (root / "pkg" / "data.bin").write_bytes(os.urandom(big))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    return root


def test_unchanged_project_is_stored_once(tmp_path):
    root = _project(tmp_path / "proj")
    snaps = SnapshotStore(tmp_path / "state")
    first = snaps.take(root)
    one = disk_usage(snaps.objects) + disk_usage(snaps.manifests)
    for _ in range(30):
        assert snaps.take(root).digest == first.digest
    assert disk_usage(snaps.objects) + disk_usage(snaps.manifests) == one
    (root / "train.py").write_text("print('changed')\n")
    second = snaps.take(root)
    assert second.digest != first.digest
    # only the changed file is new
    objects = [p for p in snaps.objects.rglob("*") if p.is_file()]
    assert len(objects) == 4
    assert disk_usage(snaps.objects) - one < 64 * 1024


def test_restore_is_byte_identical(tmp_path):
    root = _project(tmp_path / "proj")
    snaps = SnapshotStore(tmp_path / "state")
    snap = snaps.take(root)
    before = {p: (root / p).read_bytes() for p in ("train.py", "pkg/data.bin", "run.sh")}
    (root / "train.py").write_text("edited after the run\n")
    dest = tmp_path / "restored"
    snaps.restore(snap.digest, dest)
    assert {p: (dest / p).read_bytes() for p in before} == before
    assert os.access(dest / "run.sh", os.X_OK)
    with pytest.raises(SnapshotMissing):
        snaps.restore("0" * 64, tmp_path / "x")


def test_gc_removes_only_unreferenced_snapshots(tmp_path):
    root = _project(tmp_path / "proj")
    snaps = SnapshotStore(tmp_path / "state")
    old = snaps.take(root)
    (root / "pkg" / "data.bin").write_bytes(os.urandom(1 << 20))
    new = snaps.take(root)
    # young files are protected by the grace period
    assert snaps.collect_garbage({new.digest}, grace=3600).manifests == 0
    dry = snaps.collect_garbage({new.digest}, dry_run=True)
    assert (dry.manifests, dry.objects) == (1, 1) and dry.bytes >= 2 << 20
    assert (snaps.manifests / f"{old.digest}.json").exists()
    result = snaps.collect_garbage({new.digest})
    assert (result.manifests, result.objects) == (1, 1)
    assert not (snaps.manifests / f"{old.digest}.json").exists()
    snaps.restore(new.digest, tmp_path / "restored")  # the kept snapshot is whole
    assert (tmp_path / "restored" / "pkg" / "data.bin").read_bytes() == (root / "pkg" / "data.bin").read_bytes()


def test_credentials_file_inside_a_project_never_enters_a_snapshot(tmp_path, monkeypatch):
    root = _project(tmp_path / "proj", big=10)
    creds = root / "creds.yml"
    creds.write_text("TOKEN: s3cr3t-value\n")
    monkeypatch.setenv("AMLRUN_CREDENTIALS", str(creds))
    snap = SnapshotStore(tmp_path / "state").take(root)
    assert "creds.yml" not in {e.path for e in snap.entries}
    assert "train.py" in {e.path for e in snap.entries}
