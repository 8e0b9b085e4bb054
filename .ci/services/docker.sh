#!/usr/bin/env bash
# Docker engine for the docker target's tests: install docker.io (dockerd) and
# debootstrap, start dockerd in the background when no engine answers, and build the
# local base image amlrun-test/python:bookworm from Debian packages (no registry is
# reachable here). Idempotent: every step is skipped when already done.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"

IMAGE="${AMLRUN_TEST_BASE_IMAGE:-amlrun-test/python:bookworm}"
LOG="${AMLRUN_DOCKERD_LOG:-/var/log/amlrun-dockerd.log}"

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1 \
   || ! command -v docker >/dev/null 2>&1; then
  apt_install docker.io debootstrap
fi

if ! docker info >/dev/null 2>&1; then
  if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST#unix://}" = "$DOCKER_HOST" ]; then
    echo "docker.sh: DOCKER_HOST=$DOCKER_HOST does not answer and is not a local socket" >&2
    exit 1
  fi
  echo "starting dockerd (log: $LOG)"
  setsid nohup dockerd >"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  if ! docker info >/dev/null 2>&1; then
    echo "docker.sh: dockerd did not start within 60s; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi

# the machine's configured Debian mirror (deb822 or one-line sources), else deb.debian.org
mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)"
if [ -z "$mirror" ]; then
  mirror="$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep debian | grep -v security | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d /tmp/amlrun-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "building $IMAGE with debootstrap from $mirror (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# pip in a container reaches PyPI only with the host's CA bundle (TLS-inspecting networks)
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "built $IMAGE"
