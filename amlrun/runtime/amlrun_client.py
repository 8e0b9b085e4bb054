"""amlrun's metric client: one module, standard library only, put on every run's
import path by amlrun (nothing to install on the target).

    from amlrun_client import log
    log("accuracy", 0.93)            # numbers, strings, lists
    log("loss", 0.21, step=10)       # a series: one value per step

Each call prints one line to stdout, which amlrun reads on every target:

    ##amlrun-metric {"name": "accuracy", "value": 0.93}
    ##amlrun-metric {"name": "loss", "value": 0.21, "step": 10}

Any language can log a metric by printing that line: the prefix ``##amlrun-metric ``
at the start of a line, then one JSON object with ``name`` (a string), ``value`` (a
number, string, boolean, null or a list of them) and optionally ``step`` (a number).
The record keeps each metric's last value; ``metrics.jsonl`` in the run's folder keeps
every point.
"""

import json
import os
import sys

PREFIX = "##amlrun-metric "


def _plain(value):
    """``value`` as something JSON can hold (numpy scalars and arrays, tuples, others as text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
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


def log(name, value, step=None):
    """Record metric ``name`` with ``value`` (a number, a string or a list of them)."""
    record = {"name": str(name), "value": _plain(value)}
    if step is not None:
        record["step"] = _plain(step)
    text = json.dumps(record, ensure_ascii=False)
    stream = sys.__stdout__ or sys.stdout
    stream.write(PREFIX + text + "\n")
    stream.flush()


def run_id():
    return os.environ.get("AMLRUN_RUN_ID")


def outputs_dir():
    return os.environ.get("AMLRUN_OUTPUTS_DIR", "outputs")


def share_directory():
    return os.environ.get("AMLRUN_SHARE_DIRECTORY")
