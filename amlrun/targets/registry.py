"""The target types of one invocation, gathered from every plugin's ``amlrun_register_targets``.

A type name (or alias) belongs to one plugin: a second registration is refused with one
line naming both plugins, never silently dropped. Replacing a built-in is explicit: block
it with ``-p no:NAME`` (``amlrun plugins`` names them), then register your own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from amlrun.errors import UsageError
from amlrun.targets.base import Target

if TYPE_CHECKING:
    import pluggy


def collect_target_types(pm: pluggy.PluginManager) -> dict[str, type[Target]]:
    """``{type name or alias: class}`` of every registered target type."""
    types: dict[str, type[Target]] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.amlrun_register_targets.get_hookimpls():   # in registration order
        if impl.hookwrapper or impl.wrapper:
            continue
        plugin = impl.plugin_name
        for name, cls in (impl.function() or {}).items():
            if not (isinstance(cls, type) and issubclass(cls, Target)):
                raise UsageError(f"plugin '{plugin}' registers target type '{name}' as {cls!r}, "
                                 "which is not a subclass of amlrun.targets.base.Target")
            for key in (name, *cls.aliases):
                if key in owners and types[key] is not cls:
                    raise UsageError(
                        f"target type '{key}' is registered twice: by plugin '{owners[key]}' and by plugin "
                        f"'{plugin}'; keep one of them: -p no:{owners[key]} or -p no:{plugin}")
                types[key], owners[key] = cls, plugin
    return types
