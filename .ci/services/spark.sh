#!/usr/bin/env bash
# Spark for the cluster target's tests: pyspark (brings spark-submit and spark-class)
# and a Java runtime. The tests start their own standalone master and worker on
# 127.0.0.1 (tests/spark_fixture.py); nothing is left running here.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
python3 -c "import pyspark" 2>/dev/null || python3 -m pip install -q --disable-pip-version-check pyspark
if ! command -v spark-submit >/dev/null 2>&1; then
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
fi
command -v spark-submit >/dev/null 2>&1 || { echo "spark.sh: spark-submit is not on PATH after installing pyspark" >&2; exit 1; }
echo "spark: pyspark $(python3 -c 'import pyspark; print(pyspark.__version__)'), $(java -version 2>&1 | head -1)"

# A copy every user can read, for the tests that submit through the test sshd's
# unprivileged user (root's own site-packages may be unreadable to it).
SHARED=/opt/amlrun-spark
version=$(python3 -c 'import pyspark; print(pyspark.__version__)')
if [ ! -x "$SHARED/pyspark/bin/spark-submit" ] || [ "$(cat "$SHARED/.version" 2>/dev/null)" != "$version" ]; then
  rm -rf "$SHARED.tmp"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$SHARED.tmp" "pyspark==$version"
  chmod -R a+rX "$SHARED.tmp"
  echo "$version" > "$SHARED.tmp/.version"
  rm -rf "$SHARED" && mv "$SHARED.tmp" "$SHARED"
fi
echo "spark: shared copy for other users in $SHARED/pyspark"
