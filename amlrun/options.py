"""The run command line's options, parsed into a :class:`amlrun.session.Config`.

Shared by :mod:`amlrun.api` (which turns its arguments into this command line) and, through
it, by :mod:`amlrun.cli`. Parsing is two-phase: plugins and the project's ``amlrunconf.py``
are loaded first, because they add options.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from amlrun.commands import COMMANDS
from amlrun.errors import UsageError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 4) instead of exiting 2."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def _number(convert, expected: str, rule: str, allowed):
    """An argparse ``type``: ``convert(value)``, which ``allowed`` must accept, else ``rule``."""

    def parse(value: str):
        try:
            number = convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value!r}") from None
        if not allowed(number):
            raise argparse.ArgumentTypeError(rule)
        return number

    return parse


_workers = _number(int, "a number or 'auto'", "must be at least 1", lambda n: n >= 1)
_count = _number(int, "a whole number", "must not be negative", lambda n: n >= 0)
_seconds = _number(float, "seconds", "must be positive", lambda n: n > 0)


def _positive_workers(value: str) -> int:
    return (os.cpu_count() or 1) if value == "auto" else _workers(value)


def run_parser(prog: str = "amlrun") -> ArgumentParser:
    commands = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
    commands += f"\n  {'repro':<10} run the selected cells and check them against the baseline (= --check-baseline)"
    parser = ArgumentParser(
        prog=prog,
        usage=f"{prog} [options] [paths ...] [-- script arguments ...]\n       {prog} COMMAND [options]",
        description="Run experiment scripts like tests: every script x parameter set x compute target.",
        epilog=f"commands:\n{commands}\n\nRun '{prog} COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths",
        nargs="*",
        help="experiment files or folders (default: [tool.amlrun] experiment_paths, else the project)",
    )
    _add_matrix_options(parser.add_argument_group("matrix"))
    _add_running_options(parser.add_argument_group("running"))
    out = parser.add_argument_group("reporting")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more output (build logs, details)")
    out.add_argument("-q", "--quiet", action="count", default=0, help="less output")
    parser.add_argument("--version", action="store_true", help="print amlrun's version")
    return parser


def _add_matrix_options(sel) -> None:
    """What the matrix is made of: paths aside, the targets, parameters, plugins and selection."""
    sel.add_argument(
        "-c",
        "--compute",
        action="append",
        default=[],
        metavar="NAME",
        help="run configuration or compute target to run on "
        "(repeatable; default: [tool.amlrun] default_targets or local)",
    )
    sel.add_argument(
        "-p",
        dest="p_options",
        action="append",
        default=[],
        metavar="NAME=V1,V2 | PLUGIN",
        help="a parameter sweep (NAME=V1,V2: cartesian product across -p) or, without '=', "
        "a plugin to load (no:NAME blocks one)",
    )
    sel.add_argument(
        "--param", dest="params", action="append", default=[], metavar="NAME=V1,V2", help="same as -p NAME=V1,V2"
    )
    sel.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="NAME", help="same as -p NAME")
    sel.add_argument(
        "-k", dest="keyword", metavar="EXPR", help="select cells whose id matches EXPR (and/or/not, substrings)"
    )
    sel.add_argument("-m", dest="markexpr", metavar="EXPR", help="select cells by marks (and/or/not)")
    sel.add_argument("--collect-only", "--co", action="store_true", help="print the matrix, run nothing")


def _add_running_options(run) -> None:
    """How the cells run: parallelism, stopping, retries, timeouts, streaming, the seed."""
    run.add_argument(
        "-n",
        "--numprocesses",
        type=_positive_workers,
        default=1,
        metavar="N",
        help="run up to N cells at once ('auto': one per core); each target also has its own limit",
    )
    run.add_argument(
        "-x", "--exitfirst", action="store_const", const=1, dest="maxfail", help="stop after the first failure"
    )
    run.add_argument("--maxfail", type=_count, default=0, metavar="N", help="stop after N failures (0: never)")
    run.add_argument(
        "--retries",
        type=_count,
        default=0,
        metavar="N",
        help="re-run a cell up to N times when the infrastructure failed it (lost connection, "
        "engine unavailable, OOM kill); never for a script's own failure",
    )
    run.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="cancel a cell running longer than this")
    run.add_argument(
        "--stream", action="store_true", help="stream every cell's output live, each line prefixed with its cell id"
    )
    run.add_argument("--seed", type=int, metavar="N", help="the value of AMLRUN_SEED in every run (default 0)")


def split_p_options(values: list[str]) -> tuple[list[str], list[str]]:
    """``-p`` carries parameters (NAME=...) and plugins (NAME, no:NAME)."""
    params = [v for v in values if "=" in v]
    plugins = [v for v in values if "=" not in v]
    return params, plugins


def _prescan_plugins(argv: list[str]) -> list[str]:
    plugins = []
    for i, arg in enumerate(argv):
        value = None
        if arg in ("-p", "--plugin") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("-p") and len(arg) > 2 and arg[2] != "-":
            value = arg[2:]
        elif arg.startswith("--plugin="):
            value = arg.split("=", 1)[1]
        if value is not None and "=" not in value:
            plugins.append(value)
    return plugins


def _exists(arg: str) -> bool:
    try:
        return Path(arg).exists()
    except (OSError, ValueError):  # e.g. a long -p value list: "File name too long"
        return False


def _prescan_paths(argv: list[str]) -> list[str]:
    return [a for a in argv if not a.startswith("-") and _exists(a)]


def split_script_args(argv: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """Everything after the first ``--`` is the scripts' own arguments (Workbench's
    ``az ml experiment submit -c local train.py 0.01``), appended to every script's argv."""
    if "--" not in argv:
        return argv, ()
    at = argv.index("--")
    return argv[:at], tuple(argv[at + 1 :])


def make_config(argv: list[str], prog: str = "amlrun"):
    """Parse the run command in two phases: plugins and project first, then every option."""
    from amlrun.plugins import build_pluginmanager
    from amlrun.project import Project
    from amlrun.session import Config
    from amlrun.sink import log_limit

    log_limit()  # a malformed AMLRUN_LOG_MAX_BYTES is a usage error before anything runs
    argv, script_args = split_script_args(argv)
    pm = build_pluginmanager(_prescan_plugins(argv))
    paths = _prescan_paths(argv)
    project = Project.discover(Path(paths[0]) if paths else Path.cwd(), Path.cwd())
    # the root amlrunconf.py may add options, so it is loaded before parsing
    parser = run_parser(prog)
    config = Config(argparse.Namespace(), project, pm)
    config.conftests.load(project.root)
    group = parser.add_argument_group("plugins")
    pm.hook.amlrun_addoption.call_historic(kwargs=dict(parser=parser, group=group))
    options = parser.parse_args(argv)
    params, plugins = split_p_options(options.p_options)
    for name in [*plugins, *options.plugins]:
        if not name.strip() or name.strip() == "no:":
            raise UsageError(f"-p {name!r}: expected a plugin module name, no:NAME or NAME=VALUE[,VALUE...]")
    options.params = [*options.params, *params]
    options.plugins = [*options.plugins, *plugins]
    options.script_args = script_args
    config.options = options
    pm.hook.amlrun_configure.call_historic(kwargs=dict(config=config))
    return config
