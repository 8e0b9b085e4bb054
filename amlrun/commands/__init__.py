"""Subcommands of the ``amlrun`` CLI; each module has ``main(argv, prog) -> int``.

Without a subcommand, ``amlrun`` runs the matrix (:func:`amlrun.api.run_command`).
"""

#: subcommand → ("module:function", help); imported only when used, so ``amlrun --help`` stays fast.
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
