#!/usr/bin/env bash
# The whole test suite, services included: installs amlrun with its test extras and
# the plugin distributions, installs and starts the services the tests need (Docker
# engine, sshd, Spark are started by .ci/services/*.sh or by the tests' fixtures),
# then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
for plugin in plugins/*/; do
  [ -f "$plugin/pyproject.toml" ] && python3 -m pip install -q --disable-pip-version-check -e "$plugin"
done
for service in .ci/services/*.sh; do
  [ "$(basename "$service")" = lib.sh ] && continue
  echo "== service: $service"
  bash "$service"
done
exec python3 -m pytest "$@"
