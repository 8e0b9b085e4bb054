"""Command line: ``amlrun [options] [paths]`` runs the matrix; subcommands do the rest.

Subcommand modules are imported only when used, so ``amlrun --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

from amlrun.errors import AmlrunError, UsageError

EXIT_INTERNAL = 3

#: subcommand → "module:function"; each function takes (argv, prog) and returns an exit code.
COMMANDS = {
    "init": ("amlrun.commands.init:main", "scaffold a new project"),
    "prepare": ("amlrun.commands.prepare:main", "build targets' environments ahead of time"),
    "history": ("amlrun.commands.history:main", "list, show, compare, download recorded runs"),
    "targets": ("amlrun.commands.targets:main", "list the project's compute targets"),
    "attach": ("amlrun.commands.attach:main", "add a remote compute target (SSH)"),
    "doctor": ("amlrun.commands.doctor:main", "check that a target works"),
    "clean": ("amlrun.commands.clean:main", "remove amlrun's images, containers and environments"),
    "baseline": ("amlrun.commands.baseline:main", "save and show reproducibility baselines"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 4) instead of exiting 2."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")


def _positive_workers(value: str) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return number


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
    parser.add_argument("paths", nargs="*", help="experiment files or folders (default: [tool.amlrun] experiment_paths, else the project)")
    sel = parser.add_argument_group("matrix")
    sel.add_argument("-c", "--compute", action="append", default=[], metavar="NAME",
                     help="run configuration or compute target to run on (repeatable; default: [tool.amlrun] default_targets or local)")
    sel.add_argument("-p", dest="p_options", action="append", default=[], metavar="NAME=V1,V2 | PLUGIN",
                     help="a parameter sweep (NAME=V1,V2: cartesian product across -p) or, without '=', a plugin to load (no:NAME blocks one)")
    sel.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=V1,V2", help="same as -p NAME=V1,V2")
    sel.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="NAME", help="same as -p NAME")
    sel.add_argument("-k", dest="keyword", metavar="EXPR", help="select cells whose id matches EXPR (and/or/not, substrings)")
    sel.add_argument("-m", dest="markexpr", metavar="EXPR", help="select cells by marks (and/or/not)")
    sel.add_argument("--collect-only", "--co", action="store_true", help="print the matrix, run nothing")
    run = parser.add_argument_group("running")
    run.add_argument("-n", "--numprocesses", type=_positive_workers, default=1, metavar="N",
                     help="run up to N cells at once ('auto': one per core); each target also has its own limit")
    run.add_argument("-x", "--exitfirst", action="store_const", const=1, dest="maxfail", help="stop after the first failure")
    run.add_argument("--maxfail", type=_count, default=0, metavar="N", help="stop after N failures (0: never)")
    run.add_argument("--retries", type=_count, default=0, metavar="N",
                     help="re-run a cell up to N times when the infrastructure failed it (lost connection, "
                          "engine unavailable, OOM kill); never for a script's own failure")
    run.add_argument("--timeout", type=_seconds, metavar="SECONDS", help="cancel a cell running longer than this")
    run.add_argument("--stream", action="store_true", help="stream every cell's output live, each line prefixed with its cell id")
    run.add_argument("--seed", type=int, metavar="N", help="the value of AMLRUN_SEED in every run (default 0)")
    out = parser.add_argument_group("reporting")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more output (build logs, details)")
    out.add_argument("-q", "--quiet", action="count", default=0, help="less output")
    parser.add_argument("--version", action="store_true", help="print amlrun's version")
    return parser


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
    return argv[:at], tuple(argv[at + 1:])


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


class _terminate_as_interrupt:
    """SIGTERM (a CI job canceled, ``timeout``, ``kill``) stops a session as Ctrl-C does.

    Runs live in their own process groups, so without this a terminated amlrun would
    leave them running; as a KeyboardInterrupt the session kills their groups, records
    them canceled and exits 2.
    """

    def __enter__(self):
        import signal
        import threading

        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    @staticmethod
    def _handle(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._previous is not None:
            import signal

            signal.signal(signal.SIGTERM, self._previous)
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "repro":  # `amlrun repro ...` = `amlrun --check-baseline ...`
            argv = ["--check-baseline", *argv[1:]]
        if argv and argv[0] in COMMANDS:
            spec, _ = COMMANDS[argv[0]]
            module_name, _, func = spec.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name == module_name:
                    raise UsageError(f"'{argv[0]}' is not available in this build of amlrun") from None
                raise
            return getattr(module, func)(argv[1:], f"amlrun {argv[0]}")
        if "--version" in argv:
            from amlrun import __version__

            print(f"amlrun {__version__}")
            return 0
        # --help goes through make_config too: plugins' options (reports, --lf, --repeat,
        # the project's amlrunconf.py) belong in it
        from amlrun.runner import run_session

        with _terminate_as_interrupt():
            return run_session(make_config(argv))
    except AmlrunError as exc:
        from amlrun.secrets import redactor

        print(f"amlrun: error: {redactor(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("amlrun: interrupted", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except Exception:
        from amlrun.secrets import redactor

        print(redactor(traceback.format_exc()), file=sys.stderr, end="")
        print("amlrun: internal error (a bug in amlrun or a plugin; the traceback is above)", file=sys.stderr)
        return EXIT_INTERNAL
