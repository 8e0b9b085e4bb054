"""The ``docker`` compute target (Workbench's ``localdocker``): runs in a container of an
environment image built from the run's dependencies (see :mod:`amlrun.targets.docker.image`).

The image holds the environment only; each run's code arrives separately, mounted
(``sharedVolumes: true``) or copied in with ``put_archive``, and ``outputs/`` comes
back with ``get_archive`` or from the mount. Every container carries amlrun labels
(see :mod:`amlrun.targets.docker.owners`), so not even ``kill -9`` of amlrun leaves one
behind for long.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

from amlrun.errors import ConfigError, EnvironmentBuildError, TargetUnavailable
from amlrun.hookspec import hookimpl
from amlrun.targets.base import Check, ExecResult, PreparedEnvironment, Target, contract_env
from amlrun.targets.docker import image as envimage
from amlrun.targets.docker.archive import extract_outputs, tar_tree
from amlrun.targets.docker.owners import (
    DEFAULT_SOCKET,
    drop_owner_marker,
    remove_orphans,
    run_labels,
    sweep_dead_owners,
    write_owner_marker,
)
from amlrun.targets.docker.runargs import parse_run_arguments
from amlrun.targets.local import move_outputs, share_directory

CONTAINER_ROOT = "/amlrun"
CONTAINER_WORKDIR = f"{CONTAINER_ROOT}/run"
CONTAINER_SHARE = f"{CONTAINER_ROOT}/share"
STOP_GRACE_SECONDS = 3

#: compute-file keys of the docker target (besides the common ones in config.COMPUTE_KEYS)
DOCKER_KEYS = frozenset({
    "cpus", "memory", "shmSize", "dockerRunArguments",
    "caBundle", "pipIndexUrl", "pipExtraIndexUrl", "pipTrustedHost", "buildNetwork",
})


class DockerTarget(Target):
    type_name = "docker"
    aliases = ("localdocker",)
    run_workdir = CONTAINER_WORKDIR
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
        key = (runconfig.name, runconfig.extra_requirements)
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

    def check_configuration(self) -> None:
        """Raise ConfigError for a wrong resource or ``dockerRunArguments`` value before the
        engine is asked (a user's mistake: exit 4, not a failed cell nor an engine error)."""
        self._resource_options()
        parse_run_arguments(self.compute.get("dockerRunArguments"), self.where)

    def prepare(self, runconfig, progress) -> PreparedEnvironment:
        self.check_configuration()
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
            "labels": run_labels(job.run_id, job.cell_id, self.name), "detach": True, "stdin_open": False, "tty": False, "init": True,
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
        container.put_archive("/", tar_tree(job.workdir, CONTAINER_WORKDIR.lstrip("/")))

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
        extract_outputs(stream, job.outputs_dir)

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
                reason = envimage.explain(exc)
                if options.get("device_requests") and ("device driver" in reason or "gpu" in reason.lower()):
                    reason = f"the engine cannot provide GPUs (nvidiaDocker: true): {reason}"
                return ExecResult("failed", None, f"cannot start the container: {reason}", infrastructure_error=True)
            outcome = self._follow(container, job, sink)
            try:
                self._fetch_outputs(container, job)
            except docker.errors.APIError as exc:
                sink.write(f"[amlrun] could not fetch outputs/: {envimage.explain(exc)}")
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
                stop_container(container)
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


def _size(value: str) -> str:
    return str(value).strip()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40] or "x"


def _short_reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("No such file or directory", "Connection refused", "Permission denied", "timed out"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def stop_container(container) -> None:
    """Stop a container (TERM, then KILL after the grace period)."""
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


@hookimpl
def amlrun_configure(config):
    from amlrun.envs import cache_dir

    sweep_dead_owners(cache_dir())


@hookimpl
def amlrun_register_targets():
    return {"docker": DockerTarget}
