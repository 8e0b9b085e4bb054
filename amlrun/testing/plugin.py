"""The kit's pytest plugin (entry point ``pytest11``): a marker for the kit's tests and, at
the end of a session, the checks each target declared unsupported (never skipped silently).

Imports nothing of amlrun until a test class of the kit is collected, so every other
pytest session in the environment pays nothing for it.
"""

from __future__ import annotations

import sys

import pytest

MARKER = "amlrun_conformance"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a check of amlrun's target conformance kit")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "amlrun.testing.conformance" not in sys.modules:
        return
    from amlrun.testing.conformance import TargetConformance

    declared: dict[str, dict[str, str]] = {}
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, TargetConformance):
            item.add_marker(MARKER)
            if cls.unsupported:
                declared[f"{cls.__name__} ({cls.target_name})"] = dict(cls.unsupported)
    config.stash[_DECLARED] = declared


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    declared = config.stash.get(_DECLARED, {})
    if not declared:
        return
    terminalreporter.section("amlrun conformance: declared unsupported")
    for owner, checks in sorted(declared.items()):
        for check, reason in sorted(checks.items()):
            terminalreporter.write_line(f"{owner}: {check}: {reason}")


_DECLARED = pytest.StashKey[dict]()
