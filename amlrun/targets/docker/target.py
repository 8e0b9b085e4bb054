"""The ``docker`` compute target (Workbench's ``localdocker``): runs in a container of an
environment image built from the run's dependencies (see :mod:`amlrun.envimage`).

The image holds the environment only; each run's code arrives separately, mounted
(``sharedVolumes: true``) or copied in with ``put_archive``, and ``outputs/`` comes
back with ``get_archive`` or from the mount. Every container carries amlrun labels
(owner pid, run id); a target's start-up removes containers whose amlrun process is
gone, so not even ``kill -9`` of amlrun leaves one behind for long.

For reuse (``remotedocker``): the engine client comes from :meth:`DockerTarget._client`,
code delivery is :meth:`_deliver_code`, outputs retrieval :meth:`_fetch_outputs`, and
nothing assumes the engine's filesystem is this machine's unless ``sharedVolumes`` is on.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

from amlrun import envimage
from amlrun.errors import ConfigError, EnvironmentBuildError, TargetUnavailable
from amlrun.hookspec import hookimpl
from amlrun.targets.base import Check, ExecResult, PreparedEnvironment, Target, contract_env
from amlrun.targets.local import move_outputs, share_directory

CONTAINER_ROOT = "/amlrun"
CONTAINER_WORKDIR = f"{CONTAINER_ROOT}/run"
CONTAINER_SHARE = f"{CONTAINER_ROOT}/share"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
STOP_GRACE_SECONDS = 3

LABEL_MANAGED = envimage.LABEL_MANAGED
LABEL_OWNER_PID = "amlrun.owner-pid"
LABEL_OWNER_START = "amlrun.owner-start"
LABEL_OWNER_HOST = "amlrun.owner-host"
LABEL_RUN_ID = "amlrun.run-id"
LABEL_CELL = "amlrun.cell"
LABEL_TARGET = "amlrun.target"

#: compute-file keys of the docker target (besides the common ones in config.COMPUTE_KEYS)
DOCKER_KEYS = frozenset({
    "cpus", "memory", "shmSize", "dockerRunArguments",
    "caBundle", "pipIndexUrl", "pipExtraIndexUrl", "pipTrustedHost", "buildNetwork",
})


def _process_start(pid: int) -> str:
    from amlrun.store import _process_start as start

    return start(pid)


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the amlrun process that started a container (per its labels) still runs."""
    from amlrun.store import _alive

    if labels.get(LABEL_OWNER_HOST) not in (None, "", socket.gethostname()):
        return True  # another machine's amlrun: not ours to judge
    try:
        pid = int(labels.get(LABEL_OWNER_PID, ""))
    except ValueError:
        return False
    return _alive(pid, labels.get(LABEL_OWNER_START, ""))


def remove_orphans(client) -> list[str]:
    """Remove amlrun containers whose amlrun process is dead; return their names."""
    docker = envimage.docker_sdk()
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL_OWNER_PID}):
        if owner_alive(container.labels):
            continue
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise
    return removed


# -- leftovers of a killed amlrun, found from any later amlrun command ------------------------------
#
# Each amlrun process that starts containers on the local engine leaves a marker file
# (pid, start time, DOCKER_HOST) in the cache until its teardown. A later amlrun
# command of any kind (``amlrun_configure``) looks for markers of dead processes and
# removes their containers: one directory listing when there is nothing to do.


def _markers_dir(cache_dir: Path) -> Path:
    return cache_dir / "docker-owners"


def _marker_path(cache_dir: Path) -> Path:
    pid = os.getpid()
    return _markers_dir(cache_dir) / f"{socket.gethostname()}-{pid}-{_process_start(pid) or 0}.json"


def write_owner_marker(cache_dir: Path) -> None:
    import json

    path = _marker_path(cache_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": os.getpid(), "start": _process_start(os.getpid()),
                                    "host": socket.gethostname(), "docker_host": os.environ.get("DOCKER_HOST")}))


def drop_owner_marker(cache_dir: Path) -> None:
    try:
        _marker_path(cache_dir).unlink()
    except FileNotFoundError:
        pass


def sweep_dead_owners(cache_dir: Path) -> list[str]:
    """Remove containers of dead amlrun processes named by markers; quiet when the engine is away."""
    import json

    folder = _markers_dir(cache_dir)
    try:
        markers = list(folder.iterdir())
    except FileNotFoundError:
        return []
    removed: list[str] = []
    for marker in markers:
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            marker.unlink(missing_ok=True)
            continue
        labels = {LABEL_OWNER_PID: str(data.get("pid")), LABEL_OWNER_START: data.get("start") or "",
                  LABEL_OWNER_HOST: data.get("host") or ""}
        if owner_alive(labels):
            continue
        try:
            docker = envimage.docker_sdk()
            client = docker.DockerClient(base_url=data.get("docker_host") or DEFAULT_SOCKET, timeout=30)
            try:
                for container in client.containers.list(
                        all=True, filters={"label": f"{LABEL_OWNER_PID}={data.get('pid')}"}):
                    if not owner_alive(container.labels):
                        container.remove(force=True)
                        removed.append(container.name)
            finally:
                client.close()
        except Exception:
            continue  # engine unreachable: try again next time
        marker.unlink(missing_ok=True)
    return removed


@hookimpl
def amlrun_configure(config):
    from amlrun.envs import cache_dir

    sweep_dead_owners(cache_dir())


# -- dockerRunArguments: a documented subset of `docker run` options -----------------------------


def _size(value: str) -> str:
    return str(value).strip()


_VALUED = frozenset({
    "--cap-add", "--cap-drop", "--device", "--dns", "--security-opt", "--group-add", "--network", "--net", "--ipc",
    "--pid", "--hostname", "-h", "--shm-size", "--memory", "-m", "--memory-swap", "--pids-limit", "--user", "-u",
    "--cpuset-cpus", "--runtime", "--cpus", "-e", "--env", "-v", "--volume", "--add-host", "--tmpfs", "--ulimit",
    "--label", "-l",
})


def parse_run_arguments(args: Any, where: str) -> dict[str, Any]:
    """Translate ``dockerRunArguments`` (docker run options) into docker-py ``create`` kwargs."""
    if args in (None, ""):
        return {}
    if isinstance(args, str):
        args = shlex.split(args)
    if not isinstance(args, list):
        raise ConfigError("'dockerRunArguments' must be a list of docker run options", where)
    tokens: list[str] = []
    for arg in map(str, args):
        if arg.startswith("--") and "=" in arg:
            tokens += arg.split("=", 1)
        else:
            tokens.append(arg)
    out: dict[str, Any] = {}
    flags = {"--privileged": "privileged", "--init": "init", "--read-only": "read_only"}
    listed = {"--cap-add": "cap_add", "--cap-drop": "cap_drop", "--device": "devices", "--dns": "dns",
              "--security-opt": "security_opt", "--group-add": "group_add"}
    single = {"--network": "network_mode", "--net": "network_mode", "--ipc": "ipc_mode", "--pid": "pid_mode",
              "--hostname": "hostname", "-h": "hostname", "--shm-size": "shm_size", "--memory": "mem_limit",
              "-m": "mem_limit", "--memory-swap": "memswap_limit", "--pids-limit": "pids_limit",
              "--user": "user", "-u": "user", "--cpuset-cpus": "cpuset_cpus", "--runtime": "runtime"}
    i = 0
    while i < len(tokens):
        opt = tokens[i]
        if opt in flags:
            out[flags[opt]] = True
            i += 1
            continue
        if opt not in _VALUED:
            raise ConfigError(f"'dockerRunArguments': unsupported option {opt} (supported: "
                              f"{', '.join(sorted([*flags, *_VALUED]))})", where)
        if i + 1 >= len(tokens):
            raise ConfigError(f"'dockerRunArguments': {opt} needs a value", where)
        value = tokens[i + 1]
        i += 2
        if opt in listed:
            out.setdefault(listed[opt], []).append(value)
        elif opt in single:
            out[single[opt]] = int(value) if opt == "--pids-limit" else value
        elif opt == "--cpus":
            out["nano_cpus"] = int(float(value) * 1e9)
        elif opt in ("-e", "--env"):
            name, _, val = value.partition("=")
            out.setdefault("environment", {})[name] = val if _ else os.environ.get(name, "")
        elif opt in ("-v", "--volume"):
            out.setdefault("volumes", []).append(value)
        elif opt == "--add-host":
            host, _, ip = value.partition(":")
            out.setdefault("extra_hosts", {})[host] = ip
        elif opt == "--tmpfs":
            path, _, options = value.partition(":")
            out.setdefault("tmpfs", {})[path] = options
        elif opt == "--ulimit":
            docker = envimage.docker_sdk()
            name, _, limits = value.partition("=")
            soft, _, hard = limits.partition(":")
            out.setdefault("ulimits", []).append(
                docker.types.Ulimit(name=name, soft=int(soft), hard=int(hard or soft)))
        elif opt == "--label" or opt == "-l":
            key, _, val = value.partition("=")
            out.setdefault("labels", {})[key] = val
    return out


class DockerTarget(Target):
    type_name = "docker"
    aliases = ("localdocker",)
    compute_keys = DOCKER_KEYS
    default_parallel = 2
    #: whether ``sharedVolumes`` defaults to on (the engine sees this machine's files)
    shared_volumes_default = True
    #: the image build's name in messages
    what = "environment"

    def __init__(self, compute, context):
        super().__init__(compute, context)
        self._client_obj = None
        self._client_lock = threading.Lock()
        self._spec_cache: dict[str, envimage.ImageSpec] = {}
        self._removals: list[threading.Thread] = []

    # -- the engine -------------------------------------------------------------------------

    def engine_description(self) -> str:
        """The engine this target talks to, for messages (socket or DOCKER_HOST)."""
        host = os.environ.get("DOCKER_HOST")
        return f"DOCKER_HOST={host}" if host else DEFAULT_SOCKET

    def _connect(self):
        """Create a docker-py client (overridden by targets that reach other engines)."""
        return envimage.docker_sdk().from_env(timeout=300)

    def _client(self):
        """The engine client, created (and pinged) once; leftovers are removed at start-up."""
        with self._client_lock:
            if self._client_obj is None:
                docker = envimage.docker_sdk()
                try:
                    client = self._connect()
                    client.ping()
                except TargetUnavailable:
                    raise
                except Exception as exc:  # docker.errors.DockerException, requests' connection errors
                    reason = _short_reason(exc)
                    raise TargetUnavailable(
                        f"target '{self.name}': no Docker engine answers at {self.engine_description()} ({reason}); "
                        "start dockerd or set DOCKER_HOST") from None
                try:
                    remove_orphans(client)
                except docker.errors.APIError:
                    pass  # a cleanup problem must not stop the run
                self._client_obj = client
            return self._client_obj

    def _marks_owner(self) -> bool:
        """Markers name an engine by DOCKER_HOST, so only the default connection writes them."""
        return type(self)._connect is DockerTarget._connect

    def teardown(self) -> None:
        for thread in list(self._removals):
            thread.join(60)
        self._removals = []
        if self._marks_owner():
            drop_owner_marker(self.context.cache_dir)
        if self._client_obj is not None:
            try:
                self._client_obj.close()
            except Exception:
                pass
            self._client_obj = None

    # -- configuration ------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return self.compute.source or self.compute.name

    def base_image(self) -> str:
        image = self.compute.get("baseDockerImage")
        if not image:
            raise ConfigError(f"'baseDockerImage' is required for a {self.compute.type} target", self.where)
        return str(image)

    def shared_volumes(self) -> bool:
        """Mount code (and outputs) from this machine: on by default for a local engine only."""
        default = self.shared_volumes_default
        if default and self._marks_owner():
            host = os.environ.get("DOCKER_HOST", "")
            default = not host or host.startswith("unix://") or host.startswith("npipe://")
        return self.compute.flag("sharedVolumes", default=default)

    def build_settings(self) -> envimage.BuildSettings:
        return envimage.BuildSettings.resolve(self.compute, self.context.build_settings,
                                              project_root=self.project.root)

    def describe(self) -> str:
        mode = "mounted" if self.shared_volumes() else "copied"
        return f"{self.compute.type} {self.compute.get('baseDockerImage')} (code {mode})"

    # -- environment ----------------------------------------------------------------------------

    def image_spec(self, runconfig, progress=None) -> envimage.ImageSpec:
        key = runconfig.name
        if key not in self._spec_cache:
            deps = self.project.conda_dependencies(runconfig)
            base = self.base_image()
            settings = self.build_settings()
            base_id, base_user = envimage.base_image_info(self._client(), base, progress)
            self._spec_cache[key] = envimage.plan_image(base, base_id, base_user, deps, settings)
        return self._spec_cache[key]

    def environment_digest(self, runconfig) -> str:
        return self.image_spec(runconfig).digest[:20]

    def is_prepared(self, runconfig) -> bool:
        try:
            spec = self.image_spec(runconfig)
        except EnvironmentBuildError:
            return False  # the base image is missing: nothing is built
        return envimage.image_exists(self._client(), spec.tag)

    def _interrupted(self) -> bool:
        return self.context.stopping.is_set()

    def _lock_dir(self) -> Path:
        return self.context.cache_dir / "docker-locks"

    def prepare(self, runconfig, progress) -> PreparedEnvironment:
        spec = self.image_spec(runconfig, progress)
        client = self._client()
        built = envimage.ensure_image(client, spec, progress, self._lock_dir(), what=self.what,
                                      abort=self._interrupted)
        image_id = client.images.get(spec.tag).id
        python = str(self.compute.get("pythonLocation") or envimage.IMAGE_PYTHON)
        return PreparedEnvironment(spec.digest[:20], python=python, image=spec.tag, built=built,
                                   details={"base_image": spec.base_image, "image": spec.tag,
                                            # what the image holds can change only with its id (a rebuild
                                            # of the same spec after `amlrun clean` may resolve newer packages)
                                            "image_id": image_id})

    # -- running ---------------------------------------------------------------------------------

    def _labels(self, job) -> dict[str, str]:
        pid = os.getpid()
        return {
            LABEL_MANAGED: "1", LABEL_OWNER_PID: str(pid), LABEL_OWNER_START: _process_start(pid),
            LABEL_OWNER_HOST: socket.gethostname(), LABEL_RUN_ID: job.run_id, LABEL_CELL: job.cell_id[:200],
            LABEL_TARGET: self.name,
        }

    def _share_volume(self) -> tuple[str, dict] | None:
        """The ``nativeSharedDirectory`` bind (or named volume) for the engine's host."""
        base = self.compute.get("nativeSharedDirectory")
        if not base:
            return None
        if self.shared_volumes():
            return share_directory(self), {"bind": CONTAINER_SHARE, "mode": "rw"}
        path = str(base)
        if path.startswith("~") or not path.startswith("/"):
            # a path on an engine host whose home amlrun does not know: a named volume instead
            name = f"amlrun-share-{_slug(self.project.root.name)}-{_slug(self.name)}"
            return name, {"bind": CONTAINER_SHARE, "mode": "rw"}
        return str(PurePosixPath(path) / self.project.root.name / self.name), {"bind": CONTAINER_SHARE, "mode": "rw"}

    def _resource_options(self) -> dict[str, Any]:
        where = self.where
        opts: dict[str, Any] = {}
        if self.compute.get("cpus") not in (None, ""):
            try:
                opts["nano_cpus"] = int(float(self.compute.get("cpus")) * 1e9)
            except (TypeError, ValueError):
                raise ConfigError(f"'cpus' must be a number, got {self.compute.get('cpus')!r}", where) from None
        if self.compute.get("memory") not in (None, ""):
            opts["mem_limit"] = _size(self.compute.get("memory"))
        if self.compute.get("shmSize") not in (None, ""):
            opts["shm_size"] = _size(self.compute.get("shmSize"))
        if self.compute.flag("nvidiaDocker", default=False):
            docker = envimage.docker_sdk()
            opts["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        return opts

    def create_options(self, job, prepared) -> dict[str, Any]:
        """The docker-py ``containers.create`` keyword arguments of ``job`` (no engine call)."""
        outputs = f"{CONTAINER_WORKDIR}/outputs"
        share = self._share_volume()
        env = contract_env(job, workdir=CONTAINER_WORKDIR, outputs=outputs, share=CONTAINER_SHARE if share else None)
        volumes: dict[str, dict] = {}
        opts: dict[str, Any] = {
            "image": prepared.image, "command": job.command(prepared.python), "working_dir": CONTAINER_WORKDIR,
            "labels": self._labels(job), "detach": True, "stdin_open": False, "tty": False, "init": True,
            "name": f"amlrun-{job.run_id}",
        }
        if self.shared_volumes():
            volumes[str(job.workdir)] = {"bind": CONTAINER_WORKDIR, "mode": "rw"}
            # files written into the mounted tree belong to the invoking user, not root
            opts["user"] = f"{os.getuid()}:{os.getgid()}"
            env.setdefault("HOME", "/tmp")
        if share:
            volumes[share[0]] = share[1]
        opts.update(self._resource_options())
        extra = parse_run_arguments(self.compute.get("dockerRunArguments"), self.where)
        for key in ("environment", "labels"):
            if key in extra:
                extra_values = extra.pop(key)
                if key == "environment":
                    env.update(extra_values)
                else:
                    opts["labels"] = {**extra_values, **opts["labels"]}
        extra_volumes = extra.pop("volumes", [])
        opts.update(extra)
        opts["environment"] = env
        opts["volumes"] = [f"{src}:{spec['bind']}:{spec['mode']}" for src, spec in volumes.items()] + extra_volumes
        return opts

    def _deliver_code(self, container, job) -> None:
        """Copy the run's working folder into the container (when it is not mounted)."""
        if self.shared_volumes():
            return
        container.put_archive("/", _tar_tree(job.workdir, CONTAINER_WORKDIR.lstrip("/")))

    def _fetch_outputs(self, container, job) -> None:
        """Bring ``outputs/`` back into ``job.outputs_dir``, owned by the invoking user."""
        if self.shared_volumes():
            move_outputs(job.workdir / "outputs", job.outputs_dir)
            return
        docker = envimage.docker_sdk()
        try:
            stream, _ = container.get_archive(f"{CONTAINER_WORKDIR}/outputs")
        except docker.errors.NotFound:
            return
        _extract_outputs(stream, job.outputs_dir)

    def execute(self, job, prepared, sink) -> ExecResult:
        try:
            return self._execute(job, prepared, sink)
        except TargetUnavailable:
            raise
        except Exception as exc:  # the engine went away mid-run (requests/urllib3/docker errors)
            if type(exc).__module__.split(".")[0] not in ("requests", "urllib3", "docker") and \
                    not isinstance(exc, ConnectionError):
                raise
            return ExecResult("failed", None, f"lost the Docker engine at {self.engine_description()}: "
                                              f"{_short_reason(exc)}", infrastructure_error=True)

    def _execute(self, job, prepared, sink) -> ExecResult:
        docker = envimage.docker_sdk()
        client = self._client()
        (job.workdir / "outputs").mkdir(exist_ok=True)
        try:
            options = self.create_options(job, prepared)
        except ConfigError:
            raise
        container = None
        try:
            try:
                if self._marks_owner():
                    write_owner_marker(self.context.cache_dir)
                container = client.containers.create(**options)
                self._deliver_code(container, job)
                container.start()
            except docker.errors.APIError as exc:
                reason = envimage._explain(exc)
                if options.get("device_requests") and ("device driver" in reason or "gpu" in reason.lower()):
                    reason = f"the engine cannot provide GPUs (nvidiaDocker: true): {reason}"
                return ExecResult("failed", None, f"cannot start the container: {reason}", infrastructure_error=True)
            outcome = self._follow(container, job, sink)
            try:
                self._fetch_outputs(container, job)
            except docker.errors.APIError as exc:
                sink.write(f"[amlrun] could not fetch outputs/: {envimage._explain(exc)}")
            return outcome
        finally:
            if container is not None:
                self._remove_later(container)

    def _remove_later(self, container) -> None:
        """Remove a finished container off the run's critical path; teardown waits for it."""

        def remove():
            docker = envimage.docker_sdk()
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass

        thread = threading.Thread(target=remove, name="amlrun-docker-rm", daemon=True)
        thread.start()
        with self._client_lock:
            self._removals = [t for t in self._removals if t.is_alive()] + [thread]

    def _follow(self, container, job, sink) -> ExecResult:
        """Stream logs while waiting for exit, a timeout or a cancel."""
        pump = threading.Thread(target=_pump_logs, args=(container, sink), daemon=True)
        pump.start()
        deadline = time.monotonic() + job.timeout if job.timeout else None
        stopped = None
        while pump.is_alive():
            pump.join(0.05)
            if not pump.is_alive():
                break
            if job.cancel.is_set():
                stopped = "canceled"
            elif deadline is not None and time.monotonic() > deadline:
                stopped = f"timed out after {job.timeout:g}s"
            if stopped:
                _stop(container)
                pump.join(5)
                break
        try:
            state = container.wait(timeout=30)
            code = state.get("StatusCode")
        except Exception:
            code = None
        if stopped:
            return ExecResult("canceled", code, stopped)
        if code == 0:
            return ExecResult("completed", 0)
        container.reload()
        if container.attrs.get("State", {}).get("OOMKilled"):
            return ExecResult("failed", code, "killed: out of memory (the container's memory limit)",
                              infrastructure_error=True)
        return ExecResult("failed", code, f"exited with code {code}")

    # -- checks ------------------------------------------------------------------------------------

    def doctor(self) -> list[Check]:
        checks = []
        try:
            client = self._client()
            version = client.version().get("Version", "?")
            checks.append(Check("docker engine", True, f"{self.engine_description()} (Docker {version})"))
        except TargetUnavailable as exc:
            return [Check("docker engine", False, str(exc))]
        try:
            base = self.base_image()
            docker = envimage.docker_sdk()
            try:
                client.images.get(base)
                checks.append(Check("base image", True, base))
            except docker.errors.ImageNotFound:
                checks.append(Check("base image", False, f"{base} is not on the engine (build or pull it first)"))
        except ConfigError as exc:
            checks.append(Check("base image", False, str(exc)))
        try:
            root = client.info().get("DockerRootDir") or "/var/lib/docker"
            probe = root if self.shared_volumes() and os.path.isdir(root) else str(self.context.cache_dir.parent)
            os.makedirs(probe, exist_ok=True)
            free = shutil.disk_usage(probe).free / 2**30
            checks.append(Check("disk space", free > 2, f"{free:.1f} GiB free under {probe}"))
        except OSError as exc:
            checks.append(Check("disk space", False, str(exc)))
        return checks


# -- helpers --------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40] or "x"


def _short_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("No such file or directory", "Connection refused", "Permission denied", "timed out"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _stop(container) -> None:
    docker = envimage.docker_sdk()
    try:
        container.stop(timeout=STOP_GRACE_SECONDS)
    except docker.errors.APIError:
        try:
            container.kill()
        except docker.errors.APIError:
            pass


def _pump_logs(container, sink) -> None:
    partial = b""
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for line in lines:
                sink.write(line.decode("utf-8", "replace").rstrip("\r"))
    except Exception:  # the container was removed under us (cancel) or the engine went away
        pass
    if partial:
        sink.write(partial.decode("utf-8", "replace").rstrip("\r"))


def _tar_tree(root: Path, arcroot: str) -> bytes:
    """A tar of ``root`` placed at ``arcroot``, root-owned and writable by any container user."""
    buf = io.BytesIO()

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if info.isdir():
            info.mode = 0o777
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = PurePosixPath(arcroot).parts
        for depth in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        tar.add(str(root), arcname=arcroot, filter=normalise)
    return buf.getvalue()


def _extract_outputs(stream, dest: Path) -> None:
    """Unpack a ``get_archive`` stream of ``outputs/`` into ``dest`` as the invoking user."""
    buf = io.BytesIO()
    for chunk in stream:
        buf.write(chunk)
    buf.seek(0)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    uid, gid = os.getuid(), os.getgid()
    with tarfile.open(fileobj=buf, mode="r") as tar:
        members = []
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if not name.parts or name.parts[0] != "outputs" or ".." in name.parts or name.is_absolute():
                continue
            if not (member.isfile() or member.isdir()):
                continue  # no links or devices out of a container
            member.name = str(PurePosixPath(*name.parts[1:])) if len(name.parts) > 1 else "."
            member.uid, member.gid, member.uname, member.gname = uid, gid, "", ""
            member.mode = (member.mode | 0o600) & 0o777 if member.isfile() else 0o755
            if member.name != ".":
                members.append(member)
        tar.extractall(dest, members=members)
        for member in members:
            try:
                os.chown(dest / member.name, uid, gid)
            except OSError:
                pass


@hookimpl
def amlrun_register_targets():
    return {"docker": DockerTarget}
