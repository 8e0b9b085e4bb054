"""Run one Jupyter notebook as an amlrun run, on any target:

    python .amlrun_runtime/amlrun_notebook.py NOTEBOOK.ipynb [--name value ...]

amlrun puts this in a notebook cell's argument vector in place of ``$file``. It executes
the notebook with papermill in a kernel of *this* interpreter (the run's environment,
whatever kernel the notebook's metadata names), with the working directory of the run:

- parameters arrive as the run's ``--name value`` arguments, read as papermill's ``-p``
  reads them (ints, floats, True/False/None, else text), and are injected as papermill
  does: a cell tagged ``injected-parameters`` after the cell tagged ``parameters``;
- every stream output of every cell goes to this process's stdout/stderr, i.e. the
  run's log, so ``##amlrun-metric`` lines (``amlrun_client``) are recorded as from a
  script; a metric line printed mid-line starts a line of its own;
- the executed notebook is written (cell by cell) to ``outputs/<name>.ipynb``;
- a failing cell ends the run with exit code 1 after printing the cell's number, its
  error and its traceback, which the failure report shows.

papermill and ipykernel are the run environment's packages, never amlrun's: amlrun adds
them to a managed environment when a notebook runs; a user-managed environment without
them fails with one line saying so. The kernel's own output (start-up warnings, a crash)
goes to a log file whose end is printed when the kernel dies.
"""

import json
import os
import re
import shutil
import signal
import sys
import tempfile

EXIT_FAILED = 1
EXIT_MISSING = 3
MARKERS = re.compile(r"(?<!\n)(##amlrun-(?:metric|tag) )")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
KERNEL_NAME = "amlrun-python"

# The kernel: fd 1 and 2 go to a log file (ipykernel forwards what is written to them
# to the notebook, and would otherwise echo it into the run's log a second time: metric
# lines of amlrun_client and subprocesses' output are fd writes), and it
# exits when this process is gone (jupyter_client starts kernels in their own session,
# out of reach of the process-group stop of a canceled run).
_KERNEL_LAUNCHER = """
import os, sys, threading, time
log = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
os.dup2(log, 1); os.dup2(log, 2)
parent = int(sys.argv[3])
def _watch():
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)
threading.Thread(target=_watch, daemon=True).start()
os.environ.pop("PYTEST_CURRENT_TEST", None)  # ipykernel stops forwarding fd output under pytest
sys.argv = [sys.argv[0], "-f", sys.argv[1], "--IPKernelApp.capture_fd_output=True"]
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""


def parse_value(text):
    """A parameter's text as papermill's ``-p`` reads it."""
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_args(argv):
    if not argv or not argv[0].endswith(".ipynb"):
        raise SystemExit("usage: amlrun_notebook.py NOTEBOOK.ipynb [--name value ...]")
    notebook, rest = argv[0], argv[1:]
    params = {}
    index = 0
    while index < len(rest):
        name = rest[index]
        if not name.startswith("--") or len(name) < 3:
            raise SystemExit("amlrun: %s: unexpected argument %r (parameters are --name value)" % (notebook, name))
        if "=" in name:
            key, value = name[2:].split("=", 1)
            index += 1
        elif index + 1 < len(rest):
            key, value = name[2:], rest[index + 1]
            index += 2
        else:
            raise SystemExit("amlrun: %s: parameter %s has no value" % (notebook, name))
        params[key] = parse_value(value)
    return notebook, params


class _Output(object):
    """One of the run's streams; cell output passes through it unchanged, except that a
    metric line begins at the start of a line (the state is shared by stdout and stderr,
    which the target merges into one log)."""

    at_line_start = [True]

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        if not text:
            return
        text = MARKERS.sub("\n\\1", text)
        if text.startswith("\n##amlrun-") and self.at_line_start[0]:
            text = text[1:]
        self.stream.write(text)
        self.at_line_start[0] = text.endswith("\n")

    def flush(self):
        self.stream.flush()

    @classmethod
    def end_line(cls, stream):
        if not cls.at_line_start[0]:
            stream.write("\n")
            cls.at_line_start[0] = True


def _missing():
    for name in ("papermill", "ipykernel"):
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def _write_kernelspec(folder, kernel_log):
    spec_dir = os.path.join(folder, "kernels", KERNEL_NAME)
    os.makedirs(spec_dir)
    spec = {
        "argv": [sys.executable, "-c", _KERNEL_LAUNCHER, "{connection_file}", kernel_log, str(os.getpid())],
        "display_name": "amlrun (%s)" % sys.executable,
        "language": "python",
    }
    with open(os.path.join(spec_dir, "kernel.json"), "w") as handle:
        json.dump(spec, handle)


def _original_cell(notebook, source, fallback):
    """The 1-based number of the notebook's cell whose source is ``source``."""
    try:
        with open(notebook, encoding="utf-8") as handle:
            cells = json.load(handle).get("cells", [])
        for number, cell in enumerate(cells, 1):
            text = cell.get("source", "")
            if ("".join(text) if isinstance(text, list) else text) == source:
                return number
    except (OSError, ValueError, AttributeError):
        pass
    return fallback


def _tail(path, lines=15):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().splitlines()[-lines:]
    except OSError:
        return []


def _stop(signum, frame):
    raise KeyboardInterrupt  # papermill then shuts the kernel down


def main(argv=None):
    notebook, params = parse_args(sys.argv[1:] if argv is None else argv)
    missing = _missing()
    if missing:
        sys.stderr.write(
            "amlrun: %s is a notebook: its run environment (%s) needs papermill and ipykernel, and has no %s; "
            "add both to the environment, or let amlrun manage it (userManagedEnvironment: false)\n"
            % (notebook, sys.executable, missing))
        return EXIT_MISSING
    signal.signal(signal.SIGTERM, _stop)
    import papermill

    outputs = os.environ.get("AMLRUN_OUTPUTS_DIR", "outputs")
    if not os.path.isdir(outputs):
        os.makedirs(outputs)
    executed = os.path.join(outputs, os.path.basename(notebook))
    scratch = tempfile.mkdtemp(prefix="amlrun-kernel-")
    kernel_log = os.path.join(scratch, "kernel.log")
    _write_kernelspec(scratch, kernel_log)
    os.environ["JUPYTER_PATH"] = scratch + (os.pathsep + os.environ["JUPYTER_PATH"]
                                            if os.environ.get("JUPYTER_PATH") else "")
    stdout, stderr = _Output(sys.stdout), _Output(sys.stderr)
    try:
        papermill.execute_notebook(
            notebook, executed, parameters=params or None, kernel_name=KERNEL_NAME, cwd=os.getcwd(),
            progress_bar=False, log_output=False, stdout_file=stdout, stderr_file=stderr,
        )
    except papermill.PapermillExecutionError as exc:
        _Output.end_line(sys.stdout)
        sys.stdout.flush()
        number = _original_cell(notebook, exc.source, exc.cell_index + 1)
        sys.stderr.write("[amlrun] %s: cell %s (In [%s]) failed: %s: %s\n"
                         % (notebook, number, exc.exec_count, exc.ename, exc.evalue))
        for line in exc.traceback:
            sys.stderr.write(ANSI.sub("", line) + "\n")
        sys.stderr.write("[amlrun] the executed notebook, outputs up to the error, is the run's outputs/%s\n"
                         % os.path.basename(notebook))
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("[amlrun] %s: stopped\n" % notebook)
        return 130
    except Exception as exc:  # the kernel died, could not start, or the notebook is unreadable
        _Output.end_line(sys.stdout)
        sys.stderr.write("[amlrun] %s: %s: %s\n" % (notebook, type(exc).__name__, ANSI.sub("", str(exc)).strip()))
        for line in _tail(kernel_log):
            sys.stderr.write("[kernel] " + line + "\n")
        return EXIT_FAILED
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _Output.end_line(sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
