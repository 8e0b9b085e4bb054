"""Marked 'gpu': amlrunconf.py skips it on targets without a GPU."""

AMLRUN_MARKS = ["gpu"]

import os

from amlrun_client import log

log("device", "gpu")
log("target", os.environ["AMLRUN_TARGET"])
