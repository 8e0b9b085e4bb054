"""The scripts the conformance kit runs on a target, and the values it sends them.

Each is plain Python with only the standard library (it runs in whatever interpreter the
target uses). One probe run reports on many promises at once, so a slow target (Spark:
~20 s a job) pays for few runs: the probe prints one ``##kit-report`` line of JSON.
"""

from __future__ import annotations

import json
from typing import Any

#: spaces, both quotes, a variable, ; | &, backticks, a newline, a comma, non-ASCII
HOSTILE = "two words 'single' \"double\" $HOME ${PATH} ; a|b && c `echo no` $(echo no)\nline2, naïve 日本語 ✓"
#: what the kit's runconfig adds to the argument vector (besides the script's $file)
RUNCONFIG_ARGS = ("--from-runconfig", "rc value; `not run`")
REPORT_PREFIX = "##kit-report "
BIG_OUTPUT_BYTES = 50 * 1024 * 1024
ORDER_LINES = 12
EXIT_CODE = 3
OUTSIDE_TEXT = "kit: this file is outside outputs/ and must not come back through a link"
SNAPSHOT_FILE = "kitdata/snapshot.txt"
SNAPSHOT_TEXT = "kit: the user's copy of this file must stay as it is\n"

PROBE = r"""
import hashlib, json, os, sys

AMLRUN_PARAMS = [{"msg": PARAM_VALUE, "count": 3}]

report = {"argv": sys.argv, "cwd": os.getcwd()}
report["env"] = {k: v for k, v in os.environ.items() if k.startswith(("AMLRUN_", "AZUREML_", "KIT_"))}
report["env"].pop("KIT_SECRET", None)
secret = os.environ.get("KIT_SECRET", "")
report["secret_sha256"] = hashlib.sha256(secret.encode()).hexdigest() if secret else None
with open("SNAPSHOT_FILE", encoding="utf-8") as fh:
    report["snapshot_text"] = fh.read()
with open("SNAPSHOT_FILE", "w", encoding="utf-8") as fh:
    fh.write("changed by the run\n")
with open("kit-written-by-run.txt", "w") as fh:
    fh.write("a run writes into its working folder, never into the user's tree\n")

# outputs/: nested folders, a binary file, a big file, an empty folder, links pointing out
out = os.environ.get("AMLRUN_OUTPUTS_DIR") or "outputs"
os.makedirs(os.path.join("outputs", "nested", "deeper", "deepest"), exist_ok=True)
with open(os.path.join("outputs", "nested", "deeper", "deepest", "leaf.txt"), "w") as fh:
    fh.write("leaf\n")
with open(os.path.join("outputs", "binary.bin"), "wb") as fh:
    fh.write(bytes(range(256)) * 4)
block = hashlib.sha256(b"kit").digest() * 32768          # 1 MiB
with open(os.path.join("outputs", "big.bin"), "wb") as fh:
    for _ in range(BIG_MB):
        fh.write(block)
os.makedirs(os.path.join("outputs", "empty"), exist_ok=True)
with open(os.path.join(out, "via-env.txt"), "w") as fh:
    fh.write("written through AMLRUN_OUTPUTS_DIR\n")
with open("outside.txt", "w") as fh:
    fh.write(OUTSIDE_TEXT)
for name, target in (("link-relative", os.path.join("..", "outside.txt")),
                     ("link-absolute", os.path.abspath("outside.txt")), ("link-etc", "/etc/passwd")):
    try:
        os.symlink(target, os.path.join("outputs", name))
    except OSError as exc:
        report.setdefault("symlink_errors", []).append(str(exc))

share = os.environ.get("AMLRUN_SHARE_DIRECTORY")
if share:
    try:
        path = os.path.join(share, "kit-share-probe.txt")
        with open(path, "w") as fh:
            fh.write("share\n")
        with open(path) as fh:
            report["share_roundtrip"] = fh.read() == "share\n"
    except OSError as exc:
        report["share_roundtrip"] = str(exc)

# every process this run can see whose command line holds the secret
seen = []
if secret and os.path.isdir("/proc"):
    needle = secret.encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                if needle in fh.read():
                    seen.append(pid)
        except OSError:
            pass
report["secret_in_argv_of_pids"] = seen
report["proc_visible"] = os.path.isdir("/proc")

print("##amlrun-metric " + json.dumps({"name": "kit_metric", "value": 0.25, "step": 1}), flush=True)
for i in range(ORDER_LINES):
    stream = sys.stdout if i % 2 == 0 else sys.stderr
    print("kit-order %02d %s" % (i, "out" if i % 2 == 0 else "err"), file=stream, flush=True)
sys.stdout.flush()
sys.stdout.buffer.write(b"kit-bytes \xff\xfe\xfd end\n")
sys.stdout.buffer.flush()
print(REPORT_PREFIX + json.dumps(report, ensure_ascii=True), flush=True)
"""

FAIL = r"""
import sys
print("kit: exiting with EXIT_CODE on purpose", flush=True)
sys.exit(EXIT_CODE)
"""

#: sleeps (with a child process) until stopped; its file name holds a marker, so the argv
#: of both does (whatever the target does with parameters)
SLEEPER = r"""
import subprocess, sys, time

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)", __file__])
print("kit-sleeper started", flush=True)
time.sleep(900)
"""


def _fill(template: str, **values: Any) -> str:
    text = template
    for name, value in values.items():
        text = text.replace(name, value if name in ("SNAPSHOT_FILE",) else repr(value))
    return text.lstrip("\n")


def probe_script(big_mb: int) -> str:
    return _fill(
        PROBE,
        PARAM_VALUE=HOSTILE,
        BIG_MB=big_mb,
        OUTSIDE_TEXT=OUTSIDE_TEXT,
        ORDER_LINES=ORDER_LINES,
        REPORT_PREFIX=REPORT_PREFIX,
        SNAPSHOT_FILE=SNAPSHOT_FILE,
    )


def fail_script() -> str:
    return _fill(FAIL, EXIT_CODE=EXIT_CODE)


def sleeper_script() -> str:
    return SLEEPER.lstrip("\n")


def read_report(log: str) -> dict[str, Any] | None:
    """The probe's report from a run's log, or None when it printed none."""
    for line in reversed(log.splitlines()):
        if line.startswith(REPORT_PREFIX):
            try:
                found = json.loads(line[len(REPORT_PREFIX) :])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None
