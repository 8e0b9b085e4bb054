"""What subcommands share: finding the project and building a Config without running."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from amlrun.options import ArgumentParser


def parser(prog: str, description: str) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=description)
    p.add_argument("--project", metavar="DIR", help="the project folder (default: found from the current folder)")
    return p


def load_config(options: argparse.Namespace, plugin_options: Sequence[str] = ()):
    """A Config (project + plugin manager) for commands that do not run the matrix."""
    from amlrun.plugins import build_pluginmanager
    from amlrun.project import Project
    from amlrun.session import Config

    start = Path(getattr(options, "project", None) or Path.cwd())
    project = Project.discover(start, start)
    pm = build_pluginmanager(list(plugin_options))
    config = Config(options, project, pm)
    config.conftests.load(project.root)
    pm.hook.amlrun_configure.call_historic(kwargs=dict(config=config))
    return config
