#!/usr/bin/env bash
# Lint, format-check and type-check amlrun/ and plugins/ with the configuration in
# pyproject.toml ([tool.ruff], [tool.ruff.format], [tool.mypy]). Installs the pinned tools
# into the current Python environment first. `scripts/lint.sh` runs all; `scripts/lint.sh
# ruff` (lint and format) or `scripts/lint.sh mypy` runs one (CI runs all: all at zero).
# `python3 -m ruff format amlrun plugins` applies the formatting.
# Exits non-zero if a checker found anything.
set -uo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
python3 -m pip install -q --disable-pip-version-check \
  ruff==0.17.6 mypy==2.4.1 types-PyYAML==6.0.12.20261122 types-tabulate==0.10.0.20261006 || exit 1
status=0
if [ "$which" = all ] || [ "$which" = ruff ]; then
  echo "== ruff check amlrun plugins"
  python3 -m ruff check amlrun plugins || status=1
  echo "== ruff format --check amlrun plugins"
  python3 -m ruff format --check amlrun plugins || status=1
fi
if [ "$which" = all ] || [ "$which" = mypy ]; then
  # mypy follows imports into pluggy and pytest: in a fresh environment (CI runs lint before the
  # test command installs anything) install amlrun with its test extras first
  python3 -m pip install -q --disable-pip-version-check -e '.[test]' || exit 1
  echo "== mypy (files: amlrun, plugins)"
  python3 -m mypy || status=1
fi
exit $status
