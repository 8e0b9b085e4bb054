"""amlrun: run experiment scripts like tests, on any compute target."""

__version__ = "0.1.0"
