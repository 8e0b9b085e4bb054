"""Environment images: a Docker image per (base image, dependency spec, build settings).

The image holds only the execution environment, never project code, so it is reused
until one of its inputs changes: the tag is a hash of the base image's id, the files of
the build context (a generated Dockerfile, an install script, the requirement lists)
and the build arguments. Code reaches each run separately (see :mod:`amlrun.targets.docker.target`).

Nothing here knows where the engine runs: every function takes a docker-py client,
so ``remotedocker`` reuses it with a client that reaches a VM's engine.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amlrun.config import CondaDependencies
from amlrun.errors import ConfigError, EnvironmentBuildError

#: bump when the generated files change meaning (it is part of every image's hash)
RECIPE_VERSION = "1"
IMAGE_REPOSITORY = "amlrun/env"
ENV_ROOT = "/opt/amlrun"
#: the interpreter of every environment image (a wrapper that execs the right python)
IMAGE_PYTHON = f"{ENV_ROOT}/bin/python"
CA_PATH = f"{ENV_ROOT}/ca-bundle.crt"
LABEL_MANAGED = "amlrun.managed"
LABEL_DIGEST = "amlrun.digest"
LABEL_BASE = "amlrun.base-image"
BUILD_TAIL_LINES = 25
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _words(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if str(v))
    return tuple(str(value).split())


def _secret_url(value: Any, where: str) -> str:
    """An index URL, or the secret it refers to (``secret:NAME``); its password is masked in output."""
    from amlrun import secrets

    url = secrets.resolve(value, where) if value not in (None, "") else ""
    match = re.match(r"^[a-z+]+://[^/@:]*:([^/@]+)@", url)
    if match:
        secrets.redactor.add(match.group(1))
    return url


@dataclass(frozen=True)
class BuildSettings:
    """How image builds reach package indexes (closed networks, TLS-inspecting proxies).

    ``ca_bundle`` is a PEM file on this machine; it is copied into the image, appended to
    the image's own bundle and named by PIP_CERT, SSL_CERT_FILE and REQUESTS_CA_BUNDLE.
    """

    ca_bundle: str | None = None
    pip_index_url: str | None = None
    pip_extra_index_urls: tuple[str, ...] = ()
    pip_trusted_hosts: tuple[str, ...] = ()
    network: str | None = None

    @classmethod
    def resolve(
        cls,
        compute,
        project_build: dict | None = None,
        environ: Mapping[str, str] | None = None,
        project_root: Path | None = None,
    ) -> BuildSettings:
        """Compute-file keys win over ``[tool.amlrun.build]``, which wins over PIP_* variables."""
        env: Mapping[str, str] = os.environ if environ is None else environ
        table = project_build or {}
        where = compute.source or compute.name

        def pick(compute_key: str, table_key: str, env_key: str | None) -> Any:
            if compute.get(compute_key) not in (None, ""):
                return compute.get(compute_key)
            if table.get(table_key) not in (None, ""):
                return table.get(table_key)
            return env.get(env_key) if env_key else None

        ca = pick("caBundle", "ca_bundle", "AMLRUN_BUILD_CA_BUNDLE") or env.get("PIP_CERT") or None
        if ca is not None:
            path = Path(os.path.expanduser(str(ca)))
            if not path.is_absolute() and project_root is not None:
                path = project_root / path
            if not path.is_file():
                raise ConfigError(
                    f"CA bundle {ca} (caBundle / [tool.amlrun.build] ca_bundle / PIP_CERT) is not a file", where
                )
            ca = str(path.resolve())
        network = pick("buildNetwork", "network", None)
        index = _secret_url(pick("pipIndexUrl", "pip_index_url", "PIP_INDEX_URL"), where)
        extra = tuple(
            _secret_url(u, where)
            for u in _words(pick("pipExtraIndexUrl", "pip_extra_index_url", "PIP_EXTRA_INDEX_URL"))
        )
        return cls(
            ca_bundle=ca,
            pip_index_url=index or None,
            pip_extra_index_urls=extra,
            pip_trusted_hosts=_words(pick("pipTrustedHost", "pip_trusted_host", "PIP_TRUSTED_HOST")),
            network=str(network) if network else None,
        )

    def buildargs(self) -> dict[str, str]:
        args = {}
        if self.pip_index_url:
            args["PIP_INDEX_URL"] = self.pip_index_url
        if self.pip_extra_index_urls:
            args["PIP_EXTRA_INDEX_URL"] = " ".join(self.pip_extra_index_urls)
        if self.pip_trusted_hosts:
            args["PIP_TRUSTED_HOST"] = " ".join(self.pip_trusted_hosts)
        return args

    def ca_bytes(self) -> bytes | None:
        return Path(self.ca_bundle).read_bytes() if self.ca_bundle else None


@dataclass(frozen=True)
class ImageSpec:
    """Everything that determines an environment image, and its content-hash tag."""

    base_image: str
    base_id: str
    base_user: str
    files: tuple[tuple[str, bytes], ...]
    buildargs: dict[str, str] = field(default_factory=dict)
    network: str | None = None
    digest: str = ""

    @property
    def tag(self) -> str:
        return f"{IMAGE_REPOSITORY}:{self.digest[:16]}"

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_MANAGED: "1", LABEL_DIGEST: self.digest, LABEL_BASE: self.base_image}

    def context(self) -> io.BytesIO:
        """The build context: the generated files only (never project code)."""
        import tarfile  # here: a local run imports this module (owners) but never builds

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in self.files:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        return buf


def requirement_lines(deps: CondaDependencies | None) -> tuple[str, ...]:
    return tuple(deps.pip_packages) if deps else ()


def install_script(deps: CondaDependencies | None, has_ca: bool) -> str:
    """The shell script run inside the build: conda (if asked for), a venv, pip, the wrapper."""
    conda = tuple(deps.conda_packages) if deps else ()
    pip = requirement_lines(deps)
    pin = deps.python_version if deps else None
    lines = [
        "#!/bin/sh",
        "# generated by amlrun: installs the run environment; project code never enters the image",
        "set -eu",
        f"mkdir -p {ENV_ROOT}/bin",
        'fail() { echo "amlrun: error: $*" >&2; exit 3; }',
    ]
    if has_ca:
        lines += [
            "# the configured CA bundle, appended to the image's own",
            f"if [ -f /etc/ssl/certs/ca-certificates.crt ]; then cat /etc/ssl/certs/ca-certificates.crt "
            f"{ENV_ROOT}/build/ca.crt > {CA_PATH}; else cp {ENV_ROOT}/build/ca.crt {CA_PATH}; fi",
        ]
    lines += _conda_lines(conda, deps, pin) if conda else _image_python_lines(pin, bool(pip))
    if pip:
        lines += [
            'echo "amlrun: pip install $(grep -c . ' + ENV_ROOT + '/build/requirements.txt) requirement(s)"',
            f'"$PY" -m pip install --no-input --disable-pip-version-check --no-cache-dir '
            f"-r {ENV_ROOT}/build/requirements.txt"
            " || fail \"pip install failed ($(paste -sd ' ' " + ENV_ROOT + "/build/requirements.txt)); "
            "pip's messages are above\"",
        ]
    lines += [
        f'printf \'#!/bin/sh\\nexec %s "$@"\\n\' "$PY" > {IMAGE_PYTHON}',
        f"chmod 755 {IMAGE_PYTHON}",
        f'"{IMAGE_PYTHON}" -c \'import sys; print("amlrun: environment python", sys.version.split()[0])\'',
    ]
    return "\n".join(lines) + "\n"


def _conda_lines(conda: tuple[str, ...], deps: CondaDependencies | None, pin: str | None) -> list[str]:
    """PY = a conda environment made with the image's conda, mamba or micromamba."""
    need = (
        f"conda packages ({', '.join(conda)}) need conda, mamba or micromamba, which the base image "
        "does not have; list them under pip: or use a base image with conda"
    )
    channels = " ".join(f"-c {_sh(c)}" for c in (deps.channels if deps else ()))
    specs = " ".join(_sh(p) for p in ((f"python={pin}",) if pin else ("python",)) + conda)
    return [
        "CONDA=''",
        "for c in micromamba mamba conda /opt/conda/bin/mamba /opt/conda/bin/conda; do",
        '  if command -v "$c" >/dev/null 2>&1; then CONDA="$c"; break; fi',
        "done",
        f'[ -n "$CONDA" ] || fail {_sh(need)}',
        'echo "amlrun: creating the conda environment with $CONDA"',
        f'"$CONDA" create -y -q -p {ENV_ROOT}/env {channels} {specs} || fail "$CONDA create failed"',
        f"PY={ENV_ROOT}/env/bin/python",
    ]


def _image_python_lines(pin: str | None, pip: bool) -> list[str]:
    """PY = the image's own python (a warning when it is not the pinned version), in a venv
    when there is something to pip install."""
    lines = [
        'PY="$(command -v python3 || command -v python || true)"',
        "[ -n \"$PY\" ] || fail 'the base image has no python3 or python on PATH'",
    ]
    if pin:
        lines += [
            'have="$($PY -c \'import sys; print("%d.%d" % sys.version_info[:2])\')"',
            f'case "$have" in {_sh(pin)}*|"$(echo {_sh(pin)} | cut -d. -f1-2)") ;; '
            f'*) echo "amlrun: warning: the dependency file pins python={pin} but base image has python $have '
            '(no conda to install another)" ;; esac',
        ]
    if pip:
        lines += [
            "# a venv keeps pip away from an 'externally managed' system python (PEP 668)",
            f'if "$PY" -m venv --system-site-packages {ENV_ROOT}/venv >/dev/null 2>&1; then',
            f"  PY={ENV_ROOT}/venv/bin/python",
            "else",
            "  echo 'amlrun: python -m venv is unavailable in the base image; installing into its python'",
            "  export PIP_BREAK_SYSTEM_PACKAGES=1",
            "fi",
        ]
    return lines


def dockerfile(base_id: str, base_user: str, buildargs: Iterable[str], has_ca: bool) -> str:
    lines = [
        "# generated by amlrun",
        f"FROM {base_id}",
        "USER root",
        f"COPY . {ENV_ROOT}/build/",
    ]
    if has_ca:
        lines.append(
            f"ENV PIP_CERT={CA_PATH} SSL_CERT_FILE={CA_PATH} REQUESTS_CA_BUNDLE={CA_PATH} CONDA_SSL_VERIFY={CA_PATH}"
        )
    lines += [f"ARG {name}" for name in buildargs]
    lines.append(f"RUN sh {ENV_ROOT}/build/install.sh")
    if base_user and base_user not in ("root", "0", "0:0"):
        lines.append(f"USER {base_user}")
    return "\n".join(lines) + "\n"


def plan_image(
    base_image: str, base_id: str, base_user: str, deps: CondaDependencies | None, settings: BuildSettings
) -> ImageSpec:
    """The build context and the content hash of an environment image (no engine call)."""
    ca = settings.ca_bytes()
    buildargs = settings.buildargs()
    files: list[tuple[str, bytes]] = [
        ("Dockerfile", dockerfile(base_id, base_user, buildargs, ca is not None).encode()),
        ("install.sh", install_script(deps, ca is not None).encode()),
        ("requirements.txt", "".join(f"{r}\n" for r in requirement_lines(deps)).encode()),
    ]
    if ca is not None:
        files.append(("ca.crt", ca))
    hasher = hashlib.sha256()
    hasher.update(
        json.dumps(
            {
                "recipe": RECIPE_VERSION,
                "base": base_id,
                "user": base_user,
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files},
                "buildargs": buildargs,
                "network": settings.network,
            },
            sort_keys=True,
        ).encode()
    )
    return ImageSpec(base_image, base_id, base_user, tuple(files), buildargs, settings.network, hasher.hexdigest())


# -- engine side ------------------------------------------------------------------------------


def docker_sdk():
    """``import docker``, without the 0.1-0.3 s of paramiko that docker-py imports eagerly
    for ``ssh://`` engines: the SSH transport is imported when an ``ssh://`` client is made."""
    found = sys.modules.get("docker")
    if found is not None:
        return found
    key = "docker.transport.sshconn"
    if "paramiko" in sys.modules or key in sys.modules:
        import docker

        return docker
    sys.modules[key] = None  # type: ignore[assignment]  # makes docker-py's guarded `from .sshconn import ...` skip it
    try:
        import docker
    except ImportError:
        for name in [n for n in sys.modules if n == "docker" or n.startswith("docker.")]:
            del sys.modules[name]
        import docker

        return docker
    finally:
        if key in sys.modules and sys.modules[key] is None:
            del sys.modules[key]
    api_client = sys.modules.get("docker.api.client")
    if api_client is not None and not hasattr(api_client, "SSHHTTPAdapter"):

        def SSHHTTPAdapter(*args, **kwargs):  # noqa: N802 - stands in for docker-py's class
            from docker.transport.sshconn import SSHHTTPAdapter as adapter

            return adapter(*args, **kwargs)

        api_client.SSHHTTPAdapter = SSHHTTPAdapter  # type: ignore[attr-defined]
    return docker


def base_image_info(client, name: str, progress=None) -> tuple[str, str]:
    """(id, configured user) of ``name`` on the engine; pulls it when missing."""
    docker = docker_sdk()
    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        if progress is not None:
            progress.status(f"pulling base image {name}")
        try:
            image = client.images.pull(name)
        except docker.errors.APIError as exc:
            raise EnvironmentBuildError(
                f"base image {name} is not on the engine and cannot be pulled: {explain(exc)}"
            ) from None
    return image.id, str((image.attrs.get("Config") or {}).get("User") or "")


def image_exists(client, tag: str) -> bool:
    docker = docker_sdk()
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


class BuildInterrupted(EnvironmentBuildError):
    """The session was interrupted (Ctrl-C, --maxfail) while an image was being built."""


def ensure_image(client, spec: ImageSpec, progress, lock_dir: Path, *, what: str = "environment", abort=None) -> bool:
    """Build ``spec`` unless its tag exists; True when this call built it.

    A file lock per digest keeps two amlrun processes from building the same image at
    once: the second waits, then finds the image built.
    """
    if image_exists(client, spec.tag):
        return False
    from filelock import FileLock, Timeout  # 20 ms of imports (asyncio): not for a warm run

    lock_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_dir / f"{spec.digest[:32]}.lock"))
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        progress.status(f"waiting for another amlrun process building {spec.tag}")
        while True:
            try:
                lock.acquire(timeout=0.5)
                break
            except Timeout:
                if abort is not None and abort():
                    raise BuildInterrupted(f"interrupted while waiting for the {what} image build") from None
    try:
        if image_exists(client, spec.tag):
            return False
        _build(client, spec, progress, what, abort)
        return True
    finally:
        lock.release()


def _build(client, spec: ImageSpec, progress, what: str, abort=None) -> None:
    """Run the build, streaming its output; ``abort()`` is polled at every line of it
    (closing the stream makes the engine abandon the build)."""
    docker = docker_sdk()
    started = time.monotonic()
    progress.status(f"building {what} image {spec.tag} from {spec.base_image}")
    log: list[str] = []
    error: str | None = None
    partial = ""
    done = threading.Event()
    if abort is not None:
        threading.Thread(target=_watch_abort, args=(client, log, abort, done), daemon=True).start()
    try:
        stream = client.api.build(
            fileobj=spec.context(),
            custom_context=True,
            tag=spec.tag,
            labels=spec.labels,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            buildargs=spec.buildargs or None,
            network_mode=spec.network,
        )
        error, partial = _follow_build(stream, log, progress, abort)
    except docker.errors.APIError as exc:
        error = explain(exc)
    except Exception as exc:  # a dropped connection mid-build
        if not isinstance(exc, (OSError, ConnectionError)) and "requests" not in type(exc).__module__:
            raise
        error = f"lost the engine during the build: {exc}"
    finally:
        done.set()
    partial = _ANSI.sub("", partial).strip()
    if partial:
        log.append(partial)
        progress.line(partial)
    if abort is not None and abort():
        _drop_intermediate(client, log)
        raise BuildInterrupted(f"the {what} image build was interrupted", "\n".join(log[-BUILD_TAIL_LINES:]))
    if error is not None:
        _drop_intermediate(client, log)
        ours = [line[len("amlrun: error: ") :] for line in log if line.startswith("amlrun: error: ")]
        reason = f"{ours[-1]} (base image {spec.base_image})" if ours else error
        raise EnvironmentBuildError(f"building the {what} image failed: {reason}", "\n".join(log[-BUILD_TAIL_LINES:]))
    progress.status(f"built {spec.tag} in {time.monotonic() - started:.1f}s")


def _follow_build(stream, log: list[str], progress, abort) -> tuple[str | None, str]:
    """Show and keep the build's output lines; returns the engine's error, if it gave one,
    and the last line if it did not end with a newline."""
    error = None
    partial = ""
    for chunk in stream:
        if abort is not None and abort():
            stream.close()
            break
        if "stream" in chunk:
            partial += chunk["stream"]
            *complete, partial = partial.split("\n")
            for line in complete:
                line = _ANSI.sub("", line).rstrip("\r")
                if line.strip():
                    log.append(line)
                    progress.line(line)
        elif "error" in chunk:
            error = str(chunk.get("error") or "").strip()
        elif "status" in chunk and chunk.get("status"):
            progress.line(str(chunk["status"]))
    return error, partial


def _watch_abort(client, log: list[str], abort, done: threading.Event) -> None:
    """On ``abort()``, kill the build step's container so the build ends now, not at its next line."""
    while not done.wait(0.2):
        if abort():
            steps = [line.rsplit(" ", 1)[-1] for line in list(log) if "---> Running in " in line]
            if steps:
                try:
                    client.api.kill(steps[-1])
                except Exception:
                    pass  # already finished
            return


def _drop_intermediate(client, log: list[str]) -> None:
    """Remove the untagged layers a failed build leaves (the engine drops their parents too)."""
    docker = docker_sdk()
    layers = [line.split("--->", 1)[1].strip() for line in log if line.strip().startswith("---> ")]
    layers = [layer for layer in layers if re.fullmatch(r"[0-9a-f]{12,64}", layer)]
    if not layers:
        return
    try:
        image = client.images.get(layers[-1])
        if not image.tags:
            client.images.remove(image.id, noprune=False)
    except docker.errors.DockerException:
        pass  # still a parent of something, or already gone


def _sh(text: str) -> str:
    import shlex

    return shlex.quote(str(text))


def explain(exc) -> str:
    """The engine's one-line explanation of an API error."""
    text = getattr(exc, "explanation", None) or str(exc)
    return re.sub(r"\s+", " ", str(text)).strip()
