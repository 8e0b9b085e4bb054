"""Print the fully resolved package list of the interpreter running this script.

amlrun runs it once per prepared environment and session, on the target, through the
same machinery as a run, and records the result with every run (``environment.txt``).
Standard library only; runs on any Python the target has (2.7 included). Prints one line:

    ##amlrun-freeze {"python": "3.11.7", "packages": ["numpy==1.26.4", ...], ...}
"""

import json
import os
import platform
import sys

PREFIX = "##amlrun-freeze "


def _python_packages():
    try:
        from importlib import metadata
    except ImportError:  # Python < 3.8
        metadata = None  # type: ignore[assignment]
    found = {}
    if metadata is not None:
        for dist in metadata.distributions():
            try:
                meta = dist.metadata  # parsed once: name and version from the same read
                name, version = meta["Name"], meta["Version"]
            except Exception:
                continue
            if name:
                found[name.lower().replace("_", "-")] = "%s==%s" % (name, version)
        return sorted(found.values(), key=lambda s: s.lower())
    try:
        import pkg_resources
    except ImportError:
        return []
    for dist in pkg_resources.working_set:  # pragma: no cover - old interpreters only
        found[dist.project_name.lower()] = "%s==%s" % (dist.project_name, dist.version)
    return sorted(found.values(), key=lambda s: s.lower())


def _conda_packages():
    """Packages of the active conda environment, read from ``conda-meta`` (no conda call)."""
    prefix = os.environ.get("CONDA_PREFIX") or sys.prefix
    meta = os.path.join(prefix, "conda-meta")
    if not os.path.isdir(meta):
        return []
    found = []
    for name in sorted(os.listdir(meta)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(meta, name)) as fh:
                data = json.load(fh)
            found.append("%s=%s=%s" % (data["name"], data["version"], data.get("build", "")))
        except Exception:
            continue
    return found


def _package_dirs():
    """The folders packages were read from: their mtimes tell amlrun when to list again."""
    here = os.getcwd()
    dirs = [p for p in sys.path if p and os.path.isdir(p) and not os.path.abspath(p).startswith(here)]
    meta = os.path.join(os.environ.get("CONDA_PREFIX") or sys.prefix, "conda-meta")
    if os.path.isdir(meta):
        dirs.append(meta)
    return [os.path.abspath(p) for p in dirs]


def main():
    report = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": "%s-%s" % (platform.system(), platform.machine()),
        "packages": _python_packages(),
        "conda": _conda_packages(),
        "paths": _package_dirs(),
    }
    sys.stdout.write(PREFIX + json.dumps(report, sort_keys=True) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
