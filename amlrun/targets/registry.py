"""The target types of one invocation, gathered from every plugin's ``amlrun_register_targets``.

A plugin registers a class, or ``"module:Class"`` to have the class imported only when a
target of that type is made (so a local run never imports the Docker, SSH or Spark code);
a lazily registered type lists its aliases as keys of their own. A type name (or alias)
belongs to one plugin: a second registration is refused with one line naming both plugins,
never silently dropped. Replacing a built-in is explicit: block it with ``-p no:NAME``
(``amlrun plugins`` names them), then register your own.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, cast

from amlrun.errors import UsageError
from amlrun.targets.base import Target

if TYPE_CHECKING:
    import pluggy

Registered = type[Target] | str


class TargetTypes(Mapping[str, type[Target]]):
    """``{type name or alias: class}``; a class registered as ``"module:Class"`` is imported when asked for."""

    def __init__(self, entries: dict[str, Registered], owners: dict[str, str]):
        self._entries = entries
        self._owners = owners

    def __getitem__(self, key: str) -> type[Target]:
        found = self._entries[key]
        if isinstance(found, str):
            cls = _import(found, self._owners[key], key)
            for name, value in self._entries.items():  # the type's aliases are the same class
                if value == found:
                    self._entries[name] = cls
            return cls
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _import(spec: str, plugin: str, name: str) -> type[Target]:
    module_name, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UsageError(
            f"plugin '{plugin}' registers target type '{name}' as {spec!r}, which cannot be imported: {exc}"
        ) from None
    _check(cls, plugin, name)
    return cls


def _check(cls: object, plugin: str, name: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise UsageError(
            f"plugin '{plugin}' registers target type '{name}' as {cls!r}, "
            "which is not a subclass of amlrun.targets.base.Target"
        )


def collect_target_types(pm: pluggy.PluginManager) -> TargetTypes:
    """Every registered target type, by name and alias (lazy ones not imported yet)."""
    types: dict[str, Registered] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.amlrun_register_targets.get_hookimpls():  # in registration order
        if impl.hookwrapper or impl.wrapper:
            continue
        plugin = impl.plugin_name
        registered = cast("dict[str, Registered]", impl.function() or {})
        for name, found in registered.items():
            if isinstance(found, str):
                if ":" not in found:
                    raise UsageError(
                        f"plugin '{plugin}' registers target type '{name}' as {found!r}; "
                        "expected a class or 'module:Class'"
                    )
                keys: tuple[str, ...] = (name,)
            else:
                _check(found, plugin, name)
                keys = (name, *found.aliases)
            for key in keys:
                if key in owners and types[key] != found:
                    raise UsageError(
                        f"target type '{key}' is registered twice: by plugin '{owners[key]}' and by plugin "
                        f"'{plugin}'; keep one of them: -p no:{owners[key]} or -p no:{plugin}"
                    )
                types[key], owners[key] = found, plugin
    return TargetTypes(types, owners)
