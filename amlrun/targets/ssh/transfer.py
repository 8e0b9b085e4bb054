"""Moving files to and from a host reached over SSH, incrementally and safely.

Target-independent (``remote``, ``remotedocker``, an addressed ``cluster`` use it):

- :func:`sync_tree` sends a local folder into ``<workspace>/files`` on the host. The
  host keeps ``<workspace>/manifest.json`` (path → sha256, mode, last sent); only files
  whose digest or mode changed travel, in one gzip'd tar over the SSH channel's stdin,
  with the new manifest. The mirror is the union of the trees sent recently (several
  kinds of job may share a workspace without resending each other's files; a path unsent
  for a day is pruned); ``copy_to`` gives exactly this tree: the mirror is copied there
  and the paths not in this tree are removed from the copy. Updates are serialized by
  ``flock`` on the host and guarded by the manifest's own digest (optimistic
  concurrency: a concurrent sync makes the loser re-diff and retry).
- :func:`fetch_tree` brings a folder back as a tar stream and :func:`safe_extract` unpacks
  it: no absolute paths, no ``..``, no links pointing out of the folder, no device files.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from amlrun.errors import TargetUnavailable
from amlrun.targets.ssh.connection import SSHSession, q

MANIFEST = "manifest.json"
CHUNK = 1 << 20
#: a path no sync has sent for this long leaves the mirror (AMLRUN_... not needed: a day is plenty)
PRUNE_SECONDS = 24 * 3600
_CONFLICT = 75


@dataclass(frozen=True)
class TransferStats:
    files_total: int
    files_sent: int
    files_absent: int
    bytes_sent: int  # payload bytes over the channel (the compressed tar)
    seconds: float

    def to_json(self) -> dict:
        return {
            "files_total": self.files_total,
            "files_sent": self.files_sent,
            "files_absent": self.files_absent,
            "bytes_sent": self.bytes_sent,
            "seconds": round(self.seconds, 3),
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_manifest(root: Path) -> dict[str, list]:
    """``{relative posix path: [sha256, mode]}`` of the regular files under ``root``."""
    found: dict[str, list] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = path.relative_to(root).as_posix()
            found[rel] = [_sha256(path), stat.S_IMODE(st.st_mode) | stat.S_IRUSR]
    return found


def _manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def _last_used(meta) -> int:
    return int(meta[2]) if isinstance(meta, list) and len(meta) > 2 else 0


def _build_payload(root: Path, changed: list[str], lists: dict[str, list[str]], manifest: dict, out) -> None:
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1, format=tarfile.PAX_FORMAT) as tar:
        for rel in changed:
            info = tar.gettarinfo(str(root / rel), arcname=f"files/{rel}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = manifest[rel][1]
            with open(root / rel, "rb") as fh:
                tar.addfile(info, fh)
        extra = {name: b"\0".join(p.encode() for p in paths) for name, paths in lists.items()}
        for name, data in ((f"{MANIFEST}.new", _manifest_bytes(manifest)), *extra.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            info.mtime = int(time.time())
            tar.addfile(info, _BytesReader(data))


class _BytesReader:
    def __init__(self, data: bytes):
        self._data, self._pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk, self._pos = self._data[self._pos : end], min(end, len(self._data))
        return chunk


def _chunks(fh):
    fh.seek(0)
    yield from iter(lambda: fh.read(CHUNK), b"")


@dataclass(frozen=True)
class _Plan:
    """One sync attempt's diff against the host's manifest: what to send, what this tree lacks, what to prune."""

    changed: list[str]
    absent: list[str]
    pruned: list[str]
    merged: dict[str, list]


def _remote_manifest(session: SSHSession, ws: str) -> tuple[dict, str]:
    """The host's manifest and the digest a sync must find unchanged (``""`` none yet, ``"corrupt"`` unreadable)."""
    current = session.run(f"cat {ws}/{MANIFEST} 2>/dev/null || true", timeout=120).stdout
    expected = hashlib.sha256(current.encode()).hexdigest() if current else ""
    try:
        remote = json.loads(current) if current else {}
        if not isinstance(remote, dict):
            raise ValueError
    except ValueError:
        return {}, "corrupt"
    return remote, expected


def _plan(local: dict[str, list], remote: dict, now: int) -> _Plan:
    """Diff ``local`` against ``remote``; the merged manifest keeps recently sent paths of other trees."""
    changed = sorted(p for p, meta in local.items() if list(remote.get(p, ()))[:2] != meta)
    absent = sorted(p for p in remote if p not in local)
    pruned = [p for p in absent if _last_used(remote[p]) < now - PRUNE_SECONDS]
    merged = {p: list(meta)[:2] + [_last_used(meta)] for p, meta in remote.items() if p not in pruned}
    merged.update({p: [*meta, now] for p, meta in local.items()})
    return _Plan(changed, absent, pruned, merged)


def _copy_script(ws: str, copy_to: str, plan: _Plan, local: dict, lists: dict[str, list[str]]) -> str:
    """Shell that puts exactly this tree at ``copy_to``; may add ``tree.list`` to ``lists``."""
    parent = q(str(PurePosixPath(copy_to).parent))
    dest = q(copy_to)
    if len(plan.absent) > len(local):
        # most of the mirror is other trees': copy just this tree's paths
        lists["tree.list"] = sorted(local)
        return (
            f"rm -rf {dest}; mkdir -p {dest}; (cd {ws}/files && tar -cf {ws}/tree.tar --null "
            f"--verbatim-files-from -T {ws}/tree.list); (cd {dest} && tar -xpf {ws}/tree.tar); "
            f"rm -f {ws}/tree.tar; "
        )
    return (
        f"rm -rf {dest}; mkdir -p {parent}; cp -a {ws}/files {dest}; "
        f"if [ -s absent.list ]; then (cd {dest} && xargs -0 rm -f -- < {ws}/absent.list); fi; "
    )


def _sync_script(ws: str, expected: str, copy: str) -> str:
    """Shell that, under the workspace lock, unpacks the payload on stdin unless the manifest moved."""
    if expected == "corrupt":
        reset = f"rm -rf {ws}/files; mkdir -p {ws}/files; "
        guard = ""
    else:
        reset = ""
        guard = (
            f"cur=$(sha256sum {MANIFEST} 2>/dev/null | cut -c1-64); "
            f'if [ "$cur" != {q(expected)} ]; then cat > /dev/null; exit {_CONFLICT}; fi; '
        )
    return (
        f"set -e; mkdir -p {ws}/files; cd {ws}; exec 9>>lock; "
        "if command -v flock >/dev/null 2>&1; then flock 9; fi; "
        f"{guard}{reset}"
        "tar -xzpf - --no-same-owner; "
        "if [ -s pruned.list ]; then (cd files && xargs -0 rm -f -- < ../pruned.list); fi; "
        f"mv {MANIFEST}.new {MANIFEST}; {copy}rm -f pruned.list absent.list tree.list; echo ok"
    )


def sync_tree(
    session: SSHSession, root: Path, workspace: str, *, copy_to: str | None = None, attempts: int = 5
) -> TransferStats:
    """Bring local ``root`` into ``<workspace>/files`` on the host, sending only changes.

    ``workspace`` is an absolute path on the host. ``copy_to`` (absolute): also put
    exactly this tree there (replacing it), under the same lock.
    """
    started = time.monotonic()
    ws = q(workspace)
    local = local_manifest(root)
    for _ in range(attempts):
        remote, expected = _remote_manifest(session, ws)
        plan = _plan(local, remote, int(time.time()))
        lists = {"pruned.list": plan.pruned, "absent.list": plan.absent}
        copy = _copy_script(ws, copy_to, plan, local, lists) if copy_to else ""
        with tempfile.TemporaryFile() as payload:
            _build_payload(root, plan.changed, lists, plan.merged, payload)
            size = payload.tell()
            result = session.run(_sync_script(ws, expected, copy), stdin=_chunks(payload), timeout=3600)
        if result.exit_code == _CONFLICT:
            continue
        if not result.ok:
            raise TargetUnavailable(
                f"{session.settings.label}: sending the project to {workspace} failed: "
                f"{(result.stderr or result.stdout).strip()[-300:]}"
            )
        return TransferStats(len(local), len(plan.changed), len(plan.absent), size, time.monotonic() - started)
    raise TargetUnavailable(f"{session.settings.label}: {workspace} kept changing under concurrent syncs")


# -- coming back -------------------------------------------------------------------------


def _member_problem(member: tarfile.TarInfo, dest: Path) -> str | None:
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name).parts:
        return "'..' in the path"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "not a regular file, folder or link"
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        return "outside the folder"
    if member.issym() or member.islnk():
        link = member.linkname
        if link.startswith("/"):
            return "a link to an absolute path"
        base = (dest / name).parent if member.issym() else dest
        resolved = (base / link).resolve()
        if resolved != dest and dest not in resolved.parents:
            return "a link pointing out of the folder"
    return None


def safe_extract(archive: Path | str, dest: Path) -> list[str]:
    """Extract a (possibly compressed) tar into ``dest``, refusing hostile members.

    Returns ``["name: why", ...]`` for the members that were refused (the rest is extracted).
    """
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    refused: list[str] = []
    with tarfile.open(archive, "r:*") as tar:
        accepted = []
        for member in tar.getmembers():
            problem = _member_problem(member, dest)
            if problem:
                refused.append(f"{member.name}: {problem}")
            else:
                accepted.append(member)
        if hasattr(tarfile, "data_filter"):

            def _filter(member, path):
                try:
                    return tarfile.data_filter(member, path)
                except tarfile.FilterError as exc:
                    refused.append(f"{member.name}: {exc}")
                    return None

            tar.extractall(dest, members=accepted, filter=_filter)
        else:  # pragma: no cover - Python < 3.11.4
            tar.extractall(dest, members=accepted)
    return refused


def fetch_tree(session: SSHSession, remote_dir: str, dest: Path) -> tuple[int, list[str]]:
    """Bring the contents of ``remote_dir`` on the host into local ``dest`` (merged).

    Returns (bytes received, refused members). A missing ``remote_dir`` brings nothing.
    """
    script = f"[ -d {q(remote_dir)} ] || exit 0; cd {q(remote_dir)} && tar -czf - ."
    with tempfile.TemporaryFile() as archive:
        result = session.run(script, timeout=3600, stdout_to=archive)
        if not result.ok:
            raise TargetUnavailable(
                f"{session.settings.label}: fetching {remote_dir} failed: {result.stderr.strip()[-300:]}"
            )
        size = archive.tell()
        if size == 0:
            return 0, []
        archive.seek(0)
        with tempfile.NamedTemporaryFile(suffix=".tar.gz") as named:
            for chunk in iter(lambda: archive.read(CHUNK), b""):
                named.write(chunk)
            named.flush()
            return size, safe_extract(named.name, dest)
