"""amlrun's metric client: one module, standard library only, put on every run's
import path by amlrun (nothing to install on the target).

    from amlrun_client import log
    log("accuracy", 0.93)            # numbers, strings, lists
    log("loss", 0.21, step=10)       # a series

Each call prints one line to stdout, which amlrun reads on every target:

    ##amlrun-metric {"name": "accuracy", "value": 0.93}

Any language can log a metric by printing that line (JSON object with ``name``,
``value`` and optionally ``step``).
"""

import json
import sys

PREFIX = "##amlrun-metric "


def log(name, value, step=None):
    """Record metric ``name`` with ``value`` (a number, a string or a list of them)."""
    record = {"name": str(name), "value": value}
    if step is not None:
        record["step"] = step
    try:
        text = json.dumps(record, ensure_ascii=False)
    except (TypeError, ValueError):
        record["value"] = str(value)
        text = json.dumps(record, ensure_ascii=False)
    stream = sys.__stdout__ or sys.stdout
    stream.write(PREFIX + text + "\n")
    stream.flush()


def run_id():
    import os

    return os.environ.get("AMLRUN_RUN_ID")
