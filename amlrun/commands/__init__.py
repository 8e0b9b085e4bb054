"""Subcommands of the ``amlrun`` CLI; each module has ``main(argv, prog) -> int``."""
