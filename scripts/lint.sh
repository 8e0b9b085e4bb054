#!/usr/bin/env bash
# Lint and type-check amlrun/ and plugins/ with the configuration in pyproject.toml
# ([tool.ruff], [tool.mypy]). Installs the pinned tools into the current Python
# environment first. Runs both checkers, then exits non-zero if either found anything.
# Extra arguments go to `ruff check` (e.g. --statistics).
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check \
  ruff==0.17.6 mypy==2.4.1 types-PyYAML==6.0.12.20261122 types-tabulate==0.10.0.20261006 || exit 1
status=0
echo "== ruff check amlrun plugins"
python3 -m ruff check "$@" amlrun plugins || status=1
echo "== mypy (files: amlrun, plugins)"
python3 -m mypy || status=1
exit $status
