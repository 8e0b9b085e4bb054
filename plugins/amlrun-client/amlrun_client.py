"""amlrun's run-time client: one module, standard library only.

amlrun puts this module on every run's import path (``.amlrun_runtime/``), so nothing
needs to be installed on a target. It is also its own distribution, ``amlrun-client``
(no dependencies), so a script run by hand, a test or an IDE resolves the import too.

    from amlrun_client import log, log_list, log_row, tag, param, save_artifact
    log("accuracy", 0.93)                  # numbers, strings, lists
    log("loss", 0.21, step=10)             # a series: one value per step
    log_list("fold_scores", [0.8, 0.9])    # one list value (Workbench's log_list)
    log_row("pr_curve", recall=0.5, precision=0.9)   # one row of a table per call
    tag("dataset", "iris-v2")              # a label on the run
    lr = param("lr", 0.01)                 # the run's parameter, typed like the default
    save_artifact("model.pkl")             # copied into outputs/, kept with the run

Inside a run (``AMLRUN_RUN_ID`` is set) each metric call prints one line to stdout,
which amlrun reads on every target:

    ##amlrun-metric {"name": "accuracy", "value": 0.93}
    ##amlrun-metric {"name": "loss", "value": 0.21, "step": 10}
    ##amlrun-tag {"name": "dataset", "value": "iris-v2"}

Any language can log a metric by printing that line: the prefix ``##amlrun-metric ``
at the start of a line, then one JSON object with ``name`` (a string), ``value`` (a
number, string, boolean, null, a list of them, or an object: one table row) and
optionally ``step`` (a number). The record keeps each metric's last value;
``metrics.jsonl`` in the run's folder keeps every point.

Outside a run nothing is recorded: each metric, row, list and tag is printed as one
readable line on stderr (``[amlrun_client] accuracy = 0.93``; ``AMLRUN_CLIENT_QUIET=1``
silences them), ``param`` returns its default, and ``save_artifact`` copies into
``./outputs/`` as a run would.
"""

import json
import os
import shutil
import sys

PREFIX = "##amlrun-metric "
TAG_PREFIX = "##amlrun-tag "


def _plain(value):
    """``value`` as something JSON can hold (numpy scalars and arrays, tuples, others as text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return dict((str(k), _plain(v)) for k, v in value.items())
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, without importing numpy
    if callable(tolist):
        try:
            return _plain(tolist())
        except Exception:
            pass
    for convert in (int, float):
        if type(value).__name__.startswith(convert.__name__):
            try:
                return convert(value)
            except Exception:
                pass
    return str(value)


def in_run():
    """Whether this process runs inside an amlrun run."""
    return bool(os.environ.get("AMLRUN_RUN_ID"))


def _metric_stream():
    """Where a metric line goes: the process's own stdout, which amlrun reads on every target,
    whatever a library made of ``sys.stdout``; in a Jupyter kernel the cell's own stream, which
    the kernel sends before the cell ends (its file descriptor 1 is read on another thread, and
    a line written there as a cell ended could arrive after it, when nobody records it)."""
    if type(sys.stdout).__module__.startswith("ipykernel."):
        return sys.stdout
    return sys.__stdout__ or sys.stdout


def _emit(prefix, record):
    if in_run():
        stream = _metric_stream()
        stream.write(prefix + json.dumps(record, ensure_ascii=False) + "\n")
        stream.flush()
    elif os.environ.get("AMLRUN_CLIENT_QUIET", "") in ("", "0"):
        step = "" if record.get("step") is None else " (step %s)" % json.dumps(record["step"])
        shown = json.dumps(record["value"], ensure_ascii=False)
        sys.stderr.write("[amlrun_client] %s = %s%s\n" % (record["name"], shown, step))
        sys.stderr.flush()


def log(name, value, step=None):
    """Record metric ``name`` with ``value`` (a number, a string or a list of them)."""
    record = {"name": str(name), "value": _plain(value)}
    if step is not None:
        record["step"] = _plain(step)
    _emit(PREFIX, record)


def log_list(name, values):
    """Record metric ``name`` as one list of values (Workbench's ``log_list``)."""
    log(name, list(values))


def log_row(name, **columns):
    """Record one row of table ``name`` (Workbench's ``log_row``); every call adds a row."""
    log(name, columns)


def tag(name, value=""):
    """Label the run: ``name`` = ``value`` (a string), kept in the run's record."""
    _emit(TAG_PREFIX, {"name": str(name), "value": str(value)})


def _typed(text, default):
    if isinstance(default, bool):
        return text.strip().lower() in ("1", "true", "yes", "on")
    for kind in (int, float):
        if isinstance(default, kind):
            try:
                return kind(text)
            except ValueError:
                return default
    return text


def param(name, default=None):
    """The run's parameter ``name`` (from ``AMLRUN_PARAM_<NAME>``), converted to the type of
    ``default``; ``default`` when the run has no such parameter or outside a run."""
    key = "AMLRUN_PARAM_" + "".join(c if c.isalnum() else "_" for c in str(name)).upper()
    text = os.environ.get(key)
    if text is None:
        return default
    return text if default is None else _typed(text, default)


def save_artifact(path, name=None):
    """Copy file ``path`` into the run's ``outputs/`` (as ``name``); returns where it went."""
    dest = os.path.join(outputs_dir(), name or os.path.basename(str(path)))
    parent = os.path.dirname(dest)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent)
    if os.path.abspath(str(path)) != os.path.abspath(dest):
        shutil.copyfile(str(path), dest)
    return dest


def run_id():
    return os.environ.get("AMLRUN_RUN_ID")


def outputs_dir():
    return os.environ.get("AMLRUN_OUTPUTS_DIR", "outputs")


def share_directory():
    return os.environ.get("AMLRUN_SHARE_DIRECTORY")
