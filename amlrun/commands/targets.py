"""``amlrun targets``: the project's compute targets with their type and address."""

from __future__ import annotations

from amlrun.commands._common import load_config, parser


def main(argv: list[str], prog: str) -> int:
    from amlrun.errors import AmlrunError

    options = parser(prog, "List the project's compute targets (name, type, address).").parse_args(argv)
    config = load_config(options)
    project = config.project
    known = config.target_types
    extra = config.extra_compute_keys()
    rows = []
    names = project.compute_names()
    if "local" not in names:
        names = ["local", *names]
    for name in names:
        try:
            compute = project.compute_target(name, extra)
        except AmlrunError as exc:
            rows.append((name, "?", str(exc)))
            continue
        address = str(compute.address or "")
        if address and compute.get("port"):
            address += f":{compute.get('port')}"
        if compute.get("username") and address:
            address = f"{compute.get('username')}@{address}"
        kind = compute.type if compute.type in known else f"{compute.type} (no plugin provides this type)"
        rows.append((name, kind, address or compute.get("sparkMaster") or "-"))
    width = [max(len(r[i]) for r in rows + [("NAME", "TYPE", "ADDRESS")]) for i in range(3)]
    for row in [("NAME", "TYPE", "ADDRESS"), *rows]:
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)).rstrip())
    return 0
