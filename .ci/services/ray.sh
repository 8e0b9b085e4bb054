#!/usr/bin/env bash
# Ray for the ray target's tests: "ray[default]" (job server and dashboard) in a venv of its
# own, so the test environment stays lean: amlrun talks to the job server over HTTP with
# the standard library and never imports ray. The tests start their own head on 127.0.0.1
# (tests/ray_fixture.py) with $VENV/bin/ray; nothing is left running here.
# Idempotent: a venv whose marker and ray import are fine is kept (well under a second).
set -euo pipefail
VENV=${AMLRUN_RAY_VENV:-/opt/amlrun-ray}
if [ -f "$VENV/.amlrun-complete" ] && "$VENV/bin/python" -c "import ray" 2>/dev/null; then
  echo "ray: $(cat "$VENV/.amlrun-complete") in $VENV"
  exit 0
fi
rm -rf "$VENV"
python3 -m venv "$VENV"
if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "ray[default]"; then
  rm -rf "$VENV"
  echo "ray.sh: installing ray[default] into $VENV failed" >&2
  exit 1
fi
"$VENV/bin/python" -c "import ray, ray.dashboard; print(ray.__version__)" > "$VENV/.amlrun-complete"
chmod -R a+rX "$VENV"
echo "ray: $(cat "$VENV/.amlrun-complete") in $VENV"
