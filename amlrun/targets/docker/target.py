"""The ``docker`` compute target (Workbench's ``localdocker``): runs in a container of an
environment image built from the run's dependencies (see :mod:`amlrun.targets.docker.image`).

The image holds the environment only; each run's code arrives separately, mounted
(``sharedVolumes: true``) or copied in with ``put_archive``, and ``outputs/`` comes
back with ``get_archive`` or from the mount. Every container carries amlrun labels
(see :mod:`amlrun.targets.docker.owners`), so not even ``kill -9`` of amlrun leaves one
behind for long. Where the engine is and how files reach it is the target's
:class:`~amlrun.targets.docker.engine.Engine` (``remotedocker`` gives it one over SSH).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import threading
from typing import Any, ClassVar

from amlrun.config import ComputeTarget, RunConfig
from amlrun.errors import ConfigError, EnvironmentBuildError, TargetUnavailable
from amlrun.targets.base import (
    Check,
    ExecResult,
    Job,
    PreparedEnvironment,
    Progress,
    Sink,
    Target,
    TargetContext,
    contract_env,
)
from amlrun.targets.docker import image as envimage
from amlrun.targets.docker.archive import extract_outputs, tar_tree
from amlrun.targets.docker.engine import Engine, LocalEngine, Staging
from amlrun.targets.docker.follow import follow, short_reason
from amlrun.targets.docker.owners import drop_owner_marker, remove_orphans, run_labels, write_owner_marker
from amlrun.targets.docker.runargs import parse_run_arguments
from amlrun.targets.docker.secretfile import deliver, private_env, unwrap, wrap
from amlrun.targets.outcome import infrastructure_failure, lost_connection

CONTAINER_ROOT = "/amlrun"
CONTAINER_WORKDIR = f"{CONTAINER_ROOT}/run"
CONTAINER_SHARE = f"{CONTAINER_ROOT}/share"

#: compute-file keys of the docker target (besides the common ones in config.COMPUTE_KEYS)
DOCKER_KEYS = frozenset(
    {
        "cpus",
        "memory",
        "shmSize",
        "dockerRunArguments",
        "caBundle",
        "pipIndexUrl",
        "pipExtraIndexUrl",
        "pipTrustedHost",
        "buildNetwork",
    }
)


class DockerTarget(Target):
    type_name = "docker"
    aliases: ClassVar[tuple[str, ...]] = ("localdocker",)
    run_workdir = CONTAINER_WORKDIR
    compute_keys = DOCKER_KEYS
    default_parallel = 2
    #: the image build's name in messages
    what = "environment"

    def __init__(self, compute: ComputeTarget, context: TargetContext):
        super().__init__(compute, context)
        self.engine = self.make_engine()
        self._client_obj: Any = None
        self._client_lock = threading.Lock()
        self._spec_cache: dict[tuple[str, object], envimage.ImageSpec] = {}
        self._removals: list[threading.Thread] = []

    def make_engine(self) -> Engine:
        """The engine this target's containers run on."""
        return LocalEngine()

    # -- the engine -------------------------------------------------------------------------

    def _client(self) -> Any:
        """The engine client, created (and pinged) once; leftovers are removed at start-up."""
        with self._client_lock:
            if self._client_obj is None:
                docker = envimage.docker_sdk()
                try:
                    client = self.engine.connect()
                    client.ping()
                except TargetUnavailable:
                    raise
                except Exception as exc:  # docker.errors.DockerException, requests' connection errors
                    raise TargetUnavailable(
                        f"target '{self.name}': no Docker engine answers at {self.engine.describe()} "
                        f"({short_reason(exc)}); start dockerd or set DOCKER_HOST"
                    ) from None
                try:
                    remove_orphans(client)
                except docker.errors.APIError:
                    pass  # a cleanup problem must not stop the run
                self._client_obj = client
            return self._client_obj

    def teardown(self) -> None:
        for thread in list(self._removals):
            thread.join(60)
        self._removals = []
        if self.engine.writes_owner_markers:
            drop_owner_marker(self.context.cache_dir)
        if self._client_obj is not None:
            try:
                self._client_obj.close()
            except Exception:
                pass
            self._client_obj = None
        self.engine.close()

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
        """Mount code (and outputs) from the engine's host: by default when it has them."""
        return self.compute.flag("sharedVolumes", default=self.engine.mounts_by_default())

    def build_settings(self) -> envimage.BuildSettings:
        return envimage.BuildSettings.resolve(
            self.compute, dict(self.context.build_settings), project_root=self.project.root
        )

    def describe(self) -> str:
        mode = "mounted" if self.shared_volumes() else "copied"
        return f"{self.compute.type} {self.compute.get('baseDockerImage')} (code {mode})"

    # -- environment ----------------------------------------------------------------------------

    def image_spec(self, runconfig: RunConfig, progress: Progress | None = None) -> envimage.ImageSpec:
        key = (runconfig.name, runconfig.extra_requirements)
        if key not in self._spec_cache:
            deps = self.project.conda_dependencies(runconfig)
            base = self.base_image()
            settings = self.build_settings()
            base_id, base_user = envimage.base_image_info(self._client(), base, progress)
            self._spec_cache[key] = envimage.plan_image(base, base_id, base_user, deps, settings)
        return self._spec_cache[key]

    def environment_digest(self, runconfig: RunConfig) -> str:
        return self.image_spec(runconfig).digest[:20]

    def is_prepared(self, runconfig: RunConfig) -> bool:
        try:
            spec = self.image_spec(runconfig)
        except EnvironmentBuildError:
            return False  # the base image is missing: nothing is built
        return envimage.image_exists(self._client(), spec.tag)

    def check_configuration(self) -> None:
        """Raise ConfigError for a wrong resource or ``dockerRunArguments`` value before the
        engine is asked (a user's mistake: exit 4, not a failed cell nor an engine error)."""
        self._resource_options()
        parse_run_arguments(self.compute.get("dockerRunArguments"), self.where)

    def prepare(self, runconfig: RunConfig, progress: Progress) -> PreparedEnvironment:
        self.check_configuration()
        spec = self.image_spec(runconfig, progress)
        client = self._client()
        built = envimage.ensure_image(
            client,
            spec,
            progress,
            self.context.cache_dir / "docker-locks",
            what=self.what,
            abort=self.context.stopping.is_set,
        )
        python = str(self.compute.get("pythonLocation") or envimage.IMAGE_PYTHON)
        details = {"base_image": spec.base_image}
        if runconfig.framework == "PySpark":
            from amlrun.targets.cluster.localmaster import find_in_image

            details["spark_submit"], details["spark_home"] = find_in_image(
                client, spec.tag, python, self.name, self.where, runconfig.conda_dependencies_file
            )
        # what the image holds can change only with its id (a rebuild of the same spec after
        # `amlrun clean` may resolve newer packages)
        return PreparedEnvironment(
            spec.digest[:20],
            python=python,
            image=spec.tag,
            image_id=client.images.get(spec.tag).id,
            built=built,
            details=details,
        )

    def command(self, job, prepared) -> list[str]:
        """The container's argv: the script with the image's python, or with ``Framework:
        PySpark`` through the image's spark-submit with a local master."""
        if job.runconfig.framework != "PySpark":
            return job.command(prepared.python)
        from amlrun.targets.cluster.localmaster import submission

        return submission(
            self.project, job, spark_submit=prepared.details["spark_submit"], python=prepared.python
        ).argv()

    # -- running ---------------------------------------------------------------------------------

    def _resource_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        cpus = self.compute.get("cpus")
        if cpus not in (None, ""):
            try:
                opts["nano_cpus"] = int(float(str(cpus)) * 1e9)
            except (TypeError, ValueError):
                raise ConfigError(f"'cpus' must be a number, got {cpus!r}", self.where) from None
        for key, option in (("memory", "mem_limit"), ("shmSize", "shm_size")):
            if self.compute.get(key) not in (None, ""):
                opts[option] = str(self.compute.get(key)).strip()
        if self.compute.flag("nvidiaDocker", default=False):
            docker = envimage.docker_sdk()
            opts["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        return opts

    def create_options(self, job: Job, prepared: PreparedEnvironment, staging: Staging | None = None) -> dict[str, Any]:
        """The docker-py ``containers.create`` keyword arguments of ``job`` (no engine call)."""
        if staging is None:
            staging = self.engine.stage(job, self.shared_volumes(), None)
        share = self.engine.share_source(self, staging.bind is not None)
        env = contract_env(
            job,
            workdir=CONTAINER_WORKDIR,
            outputs=f"{CONTAINER_WORKDIR}/outputs",
            share=CONTAINER_SHARE if share else None,
        )
        for name in private_env(job):
            del env[name]  # in the wrapper's owner-only file, not in the engine's Config.Env
        if prepared.details.get("spark_home"):
            env.setdefault("SPARK_HOME", prepared.details["spark_home"])  # pip's spark-submit looks for it
        volumes = [f"{staging.bind}:{CONTAINER_WORKDIR}:rw"] if staging.bind else []
        if share:
            volumes.append(f"{share}:{CONTAINER_SHARE}:rw")
        opts: dict[str, Any] = {
            "image": prepared.image,
            "command": wrap(self.command(job, prepared)),
            "working_dir": CONTAINER_WORKDIR,
            "labels": run_labels(job.run_id, job.cell_id, self.name),
            "detach": True,
            "stdin_open": False,
            "tty": False,
            "init": True,
            "name": f"amlrun-{job.run_id}",
        }
        if staging.user:
            opts["user"] = staging.user
        if staging.home:
            env.setdefault("HOME", staging.home)
        opts.update(self._resource_options())
        extra = parse_run_arguments(self.compute.get("dockerRunArguments"), self.where)
        env.update(extra.pop("environment", {}))
        opts["labels"] = {**extra.pop("labels", {}), **opts["labels"]}
        volumes += extra.pop("volumes", [])
        opts.update(extra)
        opts["environment"] = env
        opts["volumes"] = volumes
        return opts

    def execute(self, job: Job, prepared: PreparedEnvironment, sink: Sink) -> ExecResult:
        staging = self.engine.stage(job, self.shared_volumes(), sink)
        try:
            result = self._run_container(job, prepared, sink, staging)
        except Exception as exc:
            docker = envimage.docker_sdk()
            if not (lost_connection(exc) or isinstance(exc, docker.errors.DockerException)):
                raise
            result = infrastructure_failure(f"lost {self.engine.describe()}: {short_reason(exc)}")
        finally:
            self.engine.release(staging)
        return dataclasses.replace(result, extra={**staging.extra, **result.extra})

    def _run_container(self, job: Job, prepared: PreparedEnvironment, sink: Sink, staging: Staging) -> ExecResult:
        docker = envimage.docker_sdk()
        client = self._client()
        (job.workdir / "outputs").mkdir(exist_ok=True)
        options = self.create_options(job, prepared, staging)
        container = None
        try:
            try:
                if self.engine.writes_owner_markers:
                    write_owner_marker(self.context.cache_dir)
                container = client.containers.create(**options)
                if staging.bind is None:
                    container.put_archive("/", tar_tree(job.workdir, CONTAINER_WORKDIR.lstrip("/")))
                deliver(container, private_env(job), options.get("user") or self.image_spec(job.runconfig).base_user)
                container.start()
            except docker.errors.APIError as exc:
                return infrastructure_failure(f"cannot start the container: {self._start_problem(exc, options)}")
            result = follow(container, job, sink, window=self.engine.reconnect_window(), engine=self.engine.describe())
            self._fetch_outputs(container, job, staging, sink)
            if job.runconfig.framework == "PySpark":
                submitted = unwrap(options["command"])
                result = dataclasses.replace(
                    result, extra={**result.extra, "spark_submit": shlex.join(submitted), "spark_master": submitted[2]}
                )
            return result
        finally:
            if container is not None:
                self._remove_later(container)

    @staticmethod
    def _start_problem(exc: Exception, options: dict[str, Any]) -> str:
        reason = envimage.explain(exc)
        if options.get("device_requests") and ("device driver" in reason or "gpu" in reason.lower()):
            reason = f"the engine cannot provide GPUs (nvidiaDocker: true): {reason}"
        return reason

    def _fetch_outputs(self, container: Any, job: Job, staging: Staging, sink: Sink) -> None:
        """Bring ``outputs/`` back into ``job.outputs_dir``, owned by the invoking user."""
        docker = envimage.docker_sdk()
        try:
            if staging.bind is not None:
                self.engine.fetch_mounted_outputs(staging, job, sink)
                return
            stream, _ = container.get_archive(f"{CONTAINER_WORKDIR}/outputs")
            extract_outputs(stream, job.outputs_dir)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            sink.write(f"[amlrun] could not fetch outputs/: {envimage.explain(exc)}")

    def _remove_later(self, container: Any) -> None:
        """Remove a finished container off the run's critical path; teardown waits for it."""

        def remove() -> None:
            docker = envimage.docker_sdk()
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass
            except Exception:  # the engine went away: the orphan sweep removes it later
                pass

        thread = threading.Thread(target=remove, name="amlrun-docker-rm", daemon=True)
        thread.start()
        with self._client_lock:
            self._removals = [t for t in self._removals if t.is_alive()] + [thread]

    # -- checks ------------------------------------------------------------------------------------

    def doctor(self) -> list[Check]:
        checks = self.engine.checks()
        if checks and not checks[0].ok:
            return checks
        try:
            client = self._client()
            version = client.version().get("Version", "?")
            checks.append(Check("docker engine", True, f"{self.engine.describe()} (Docker {version})"))
        except TargetUnavailable as exc:
            return checks + [Check("docker engine", False, str(exc))]
        checks.append(self._base_image_check(client))
        if self.engine.local_disk:
            checks.append(self._disk_check(client))
        return checks

    def _base_image_check(self, client: Any) -> Check:
        try:
            base = self.base_image()
        except ConfigError as exc:
            return Check("base image", False, str(exc))
        docker = envimage.docker_sdk()
        try:
            client.images.get(base)
            return Check("base image", True, base)
        except docker.errors.ImageNotFound:
            return Check("base image", False, f"{base} is not on the engine (build or pull it first)")

    def _disk_check(self, client: Any) -> Check:
        try:
            root = client.info().get("DockerRootDir") or "/var/lib/docker"
            probe = root if self.shared_volumes() and os.path.isdir(root) else str(self.context.cache_dir.parent)
            os.makedirs(probe, exist_ok=True)
            free = shutil.disk_usage(probe).free / 2**30
            return Check("disk space", free > 2, f"{free:.1f} GiB free under {probe}")
        except OSError as exc:
            return Check("disk space", False, str(exc))
