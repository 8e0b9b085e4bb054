"""Command line: ``amlrun [options] [paths]`` runs the matrix; subcommands do the rest.

The run is :func:`amlrun.api.run_command`: the command line is a thin layer over the API
that turns its results and errors into output and an exit code. Subcommand modules are
imported only when used, so ``amlrun --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
import traceback

from amlrun.commands import COMMANDS
from amlrun.errors import AmlrunError, UsageError
from amlrun.options import ArgumentParser  # noqa: F401  (kept importable from here for plugins' subcommands)

EXIT_INTERNAL = 3


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
        # --help goes through the run command's parser too: plugins' options (reports, --lf,
        # --repeat, the project's amlrunconf.py) belong in it
        from amlrun.api import run_command

        with _terminate_as_interrupt():
            return run_command(argv).exit_code
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
