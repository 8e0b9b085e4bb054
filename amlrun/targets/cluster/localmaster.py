"""``Framework: PySpark`` on the ``local`` and ``docker`` targets, as Workbench ran it
(its docker base image carried Spark): the script goes through ``spark-submit`` with a
local master, with ``spark_dependencies.yml``'s configuration, repositories and packages
exactly as on the cluster target. pyspark is never imported here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from amlrun.errors import ConfigError, TargetUnavailable
from amlrun.targets.cluster import spark

#: the master of a run on one machine: every core of it
LOCAL_MASTER = "local[*]"

#: a POSIX shell snippet that prints the spark-submit a container has for ``$1`` (its
#: python): the environment's own (pyspark installed by pip), else PATH, else $SPARK_HOME;
#: and whether Java is there. Exit 3: no spark-submit, 4: no java. A second line is the
#: SPARK_HOME of the environment's pyspark when the image sets none (pip's spark-submit
#: finds it only through a ``python3`` that imports pyspark, which the image's may not).
FIND_IN_IMAGE = (
    'd=$("$1" -c "import os, sys; print(os.path.dirname(sys.executable))" 2>/dev/null); '
    'c=""; for x in "${d:-/nonexistent}/spark-submit" "$(command -v spark-submit 2>/dev/null)" '
    '"${SPARK_HOME:-/nonexistent}/bin/spark-submit"; do '
    '[ -n "$x" ] && [ -f "$x" ] && [ -x "$x" ] && { c="$x"; break; }; done; '
    '[ -n "$c" ] || exit 3; '
    '{ command -v java >/dev/null 2>&1 || [ -x "${JAVA_HOME:-/nonexistent}/bin/java" ]; } || exit 4; '
    'echo "$c"; '
    '[ -n "${SPARK_HOME:-}" ] || "$1" -c "import os, pyspark; print(os.path.dirname(pyspark.__file__))" 2>/dev/null; '
    "exit 0"
)


def no_spark_message(
    target: str, where: str, conda_file: str | None, *, image: str | None = None, java: bool = False
) -> str:
    """The one line that says a PySpark run has no Spark and how to get it."""
    place = f"the image {image}" if image else "this machine"
    what = "Java (Spark needs it)" if java else "spark-submit"
    fixes = (
        (["a base image with Java (baseDockerImage)"] if image else ["install Java"])
        if java
        else (
            [
                f"a base image with Spark (baseDockerImage in {where})"
                if image
                else f"set sparkSubmitLocation in {where}",
                f"pyspark in the pip: list of {conda_file or 'the conda dependency file'}"
                + ("" if image else " with userManagedEnvironment: false"),
                *([] if image else ["pip install pyspark"]),
            ]
        )
    )
    return f"target '{target}': Framework PySpark needs {what}, and {place} has none; " + " or ".join(fixes)


def local_spark_submit(target, python: str, conda_file: str | None) -> str:
    """spark-submit for a local PySpark run: ``sparkSubmitLocation`` (a name on PATH, a
    file, or a Spark home / bin folder), else the run environment's own, else PATH, else
    ``$SPARK_HOME/bin``."""
    where = target.compute.source or target.name
    configured = target.compute.get("sparkSubmitLocation")
    if configured:
        text = os.path.expanduser(str(configured))
        candidates = [Path(text), Path(text) / "spark-submit", Path(text) / "bin" / "spark-submit"]
        if os.sep not in text:
            found = shutil.which(text)
            candidates.insert(0, Path(found) if found else Path(text))
        for candidate in candidates:
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        raise TargetUnavailable(
            f"target '{target.name}': sparkSubmitLocation {configured} is not an executable spark-submit ({where})"
        )
    beside = Path(python).parent / "spark-submit"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = spark.find_spark_submit()
    if found:
        return found
    raise TargetUnavailable(no_spark_message(target.name, where, conda_file))


def submission(project, job, *, spark_submit: str, python: str, master: str = LOCAL_MASTER) -> spark.Submission:
    """The spark-submit call of ``job``: driver and workers use the run's ``python``; the
    user's ``configuration`` wins over ours, as on the cluster target."""
    if not job.argv or not job.argv[0].endswith(".py"):
        raise ConfigError(
            "Framework PySpark needs an ArgumentVector that starts with the script ($file), got "
            f"{' '.join(job.argv)!r}",
            job.runconfig.source or job.runconfig.name,
        )
    sdeps = project.spark_dependencies(job.runconfig)
    ours = {"spark.pyspark.python": python, "spark.pyspark.driver.python": python}
    return spark.Submission(
        spark_submit=spark_submit,
        master=master,
        script=job.argv[0],
        args=tuple(job.argv[1:]),
        conf=spark.merge_conf(ours, dict(sdeps.configuration) if sdeps else {}),
        packages=sdeps.packages if sdeps else (),
        repositories=sdeps.repositories if sdeps else (),
    )


def find_in_image(client, image: str, python: str, target: str, where: str, conda_file: str | None) -> tuple[str, str]:
    """The spark-submit of the environment image and the SPARK_HOME to give it ("" when the
    image sets its own), found by a short container; or the one line that says the image
    has no Spark (or no Java) and how to fix it."""
    container = client.containers.create(
        image,
        ["sh", "-c", FIND_IN_IMAGE, "sh", python],
        entrypoint=[],
        labels={"amlrun.managed": "1", "amlrun.probe": "spark"},
    )
    try:
        container.start()
        code = container.wait(timeout=120).get("StatusCode")
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace").strip()
    finally:
        try:
            container.remove(force=True)
        except Exception:
            pass
    lines = out.splitlines()
    if code == 0 and lines:
        return lines[0], (lines[1] if len(lines) > 1 else "")
    raise TargetUnavailable(no_spark_message(target, where, conda_file, image=image, java=code == 4))
