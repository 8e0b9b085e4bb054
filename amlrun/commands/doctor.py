"""``amlrun doctor -c NAME``: check that a target works, one line per check.

Generic: asks the target's ``doctor()`` for :class:`amlrun.targets.base.Check` values.
Exit code 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

from amlrun.commands._common import load_config, parser


def main(argv: list[str], prog: str) -> int:
    from amlrun.secrets import redactor

    p = parser(prog, "Check that compute targets work: login, PATH, Python or Docker access, free disk.")
    p.add_argument(
        "-c", "--compute", action="append", required=True, metavar="NAME", help="the target to check (repeatable)"
    )
    options = p.parse_args(argv)
    config = load_config(options)
    failed = 0
    for name in options.compute:
        runconfig = config.resolve_runconfig(name)
        target = config.make_target(runconfig)
        print(f"{name}: {target.describe()}")
        try:
            checks = target.doctor()
        finally:
            target.teardown()
        if not checks:
            print("  (this target type has no checks)")
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            print(redactor(f"  {mark} {check.name}: {check.detail}".rstrip(": ")))
            failed += not check.ok
    return 1 if failed else 0
