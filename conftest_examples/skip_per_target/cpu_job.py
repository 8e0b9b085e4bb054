"""Runs anywhere."""

from amlrun_client import log

log("device", "cpu")
