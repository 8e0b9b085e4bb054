#!/usr/bin/env bash
# The MLflow tracking server for tests/test_mlflow*.py, in its own venv so the test
# environment stays lean (the server pulls in ~850 MB; amlrun's plugin needs only
# mlflow-skinny). The tests start `mlflow server` from this venv on 127.0.0.1.
# Idempotent: nothing to do when the venv's mlflow answers --version.
set -euo pipefail
venv="${AMLRUN_MLFLOW_VENV:-/opt/amlrun-mlflow}"
if [ -x "$venv/bin/mlflow" ] && "$venv/bin/python" -c "import mlflow.server" >/dev/null 2>&1; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check "mlflow>=2.10,<4"
"$venv/bin/mlflow" --version
