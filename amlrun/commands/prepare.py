"""``amlrun prepare -c NAME``: build targets' execution environments ahead of time.

Generic over target types: it calls ``amlrun_prepare_environment`` exactly as a run
would, so a later run finds the environment cached (and a runconfig with
``PrepareEnvironment: false`` may then run).
Exit codes: 0 every environment is ready, 1 a build failed, 4 a usage/config error or
an unreachable target.
"""

from __future__ import annotations

import sys
import time

from amlrun.commands._common import load_config, parser
from amlrun.errors import AmlrunError, EnvironmentBuildError


class _Progress:
    def __init__(self, name: str, verbose: int, out):
        self.name = name
        self.verbose = verbose
        self.out = out

    def status(self, message: str) -> None:
        print(f"[{self.name}] {message}", file=self.out, flush=True)

    def line(self, text: str) -> None:
        if self.verbose:
            print(f"[{self.name}]   {text}", file=self.out, flush=True)


def main(argv: list[str], prog: str) -> int:
    p = parser(prog, "Build (or find cached) the execution environment of each named target.")
    p.add_argument(
        "-c",
        "--compute",
        action="append",
        default=[],
        metavar="NAME",
        help="run configuration or compute target (repeatable; default: [tool.amlrun] default_targets)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="show the build output")
    p.add_argument("-p", dest="plugins", action="append", default=[], metavar="PLUGIN", help="load a plugin module")
    options = p.parse_args(argv)
    config = load_config(options, options.plugins)
    names = list(dict.fromkeys(options.compute or config.project.settings.default_targets))
    from amlrun.secrets import redactor

    status = 0
    for name in names:
        target = None
        started = time.monotonic()
        try:
            runconfig = config.resolve_runconfig(name)
            target = config.make_target(runconfig)
            progress = _Progress(name, options.verbose, sys.stdout)
            prepared = config.hook.amlrun_prepare_environment(target=target, runconfig=runconfig, progress=progress)
            what = prepared.image or prepared.python
            how = f"built in {time.monotonic() - started:.1f}s" if prepared.built else "cached"
            print(f"{name}: ready ({what}, {how})")
        except EnvironmentBuildError as exc:
            print(f"{name}: error: {redactor(str(exc))}", file=sys.stderr)
            for line in (exc.log_tail or "").splitlines()[-15:]:
                print(f"{name}:   {redactor(line)}", file=sys.stderr)
            status = max(status, 1)
        except AmlrunError as exc:
            print(f"{name}: error: {redactor(str(exc))}", file=sys.stderr)
            status = max(status, exc.exit_code)
        finally:
            if target is not None:
                try:
                    target.teardown()
                except Exception:
                    pass
    return status
