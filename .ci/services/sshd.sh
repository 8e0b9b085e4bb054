#!/usr/bin/env bash
# openssh-server for the remote-target tests (tests/sshd_fixture.py starts its own private
# sshd on 127.0.0.1 with a test user; nothing is started here). Idempotent and fast when done.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
apt_install openssh-server openssh-client
mkdir -p /run/sshd
