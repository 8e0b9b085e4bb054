#!/usr/bin/env bash
# Headless Chromium for the HTML report's browser test (tests/test_reports.py opens the
# page with --headless --dump-dom). Idempotent: nothing to do when chromium is installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=lib.sh
. "$here/lib.sh"
command -v chromium >/dev/null 2>&1 || apt_install chromium
