"""Helpers for the docker target's tests: the real engine, the local base images.

The base image ``amlrun-test/python:bookworm`` is built by ``.ci/services/docker.sh``
(debootstrap, no registry). Two small variants are derived from it here, once:
one whose default user is 1234 (ownership of outputs) and one with Debian's stock CA
bundle instead of the host's (pip then needs amlrun's CA bundle setting).
"""

from __future__ import annotations

import io
import os

from conftest import require_service

BASE = os.environ.get("AMLRUN_TEST_BASE_IMAGE", "amlrun-test/python:bookworm")
USER_BASE = "amlrun-test/python-user1234:bookworm"
NOCERT_BASE = "amlrun-test/python-stockca:bookworm"
#: the base image with a Java runtime, as Workbench's Spark images had: PySpark in docker
#: (apt from the machine's Debian mirror, about a minute, once per machine)
JAVA_BASE = "amlrun-test/python-java:bookworm"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
#: never passed to runs here: the tests say explicitly what builds get
BUILD_ENV_VARS = ("PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "AMLRUN_BUILD_CA_BUNDLE")

_DERIVED = {
    USER_BASE: f"FROM {BASE}\nUSER 1234:1234\n",
    NOCERT_BASE: f"FROM {BASE}\nRUN update-ca-certificates --fresh >/dev/null 2>&1\n",
    JAVA_BASE: f"FROM {BASE}\nRUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
               "--no-install-recommends openjdk-17-jre-headless >/dev/null && rm -rf /var/lib/apt/lists/*\n",
}


def engine():
    """A docker-py client of the real engine, or require_service."""
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        require_service("docker", f"no engine at {os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'}: "
                                  f"{str(exc).splitlines()[0][:100]} (run .ci/services/docker.sh)")
    try:
        client.images.get(BASE)
    except Exception:
        require_service("docker", f"base image {BASE} missing (run .ci/services/docker.sh)")
    return client


def derived_image(client, name: str) -> str:
    """Build one of the derived base images unless present (seconds, no network)."""
    import docker.errors

    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    client.images.build(fileobj=io.BytesIO(_DERIVED[name].encode()), tag=name, rm=True, labels={"amlrun-test": "1"})
    return name


def amlrun_containers(client, **labels) -> list:
    filters = [f"{k.replace('_', '-')}={v}" for k, v in labels.items()] or ["amlrun.managed"]
    return client.containers.list(all=True, filters={"label": filters})


def owned_by(client, pid: int) -> list:
    return client.containers.list(all=True, filters={"label": f"amlrun.owner-pid={pid}"})
