"""The plugin host: a pluggy plugin manager and typed access to what plugins provide.

>>> host = Host.create()
>>> "sim" in host.backends()
True
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import pluggy

from gdbext.errors import PluginError, UsageError
from gdbext.plugin import hookspecs
from gdbext.plugin.entrypoints import entry_points
from gdbext.plugin.formats import OutputFormat
from gdbext.plugin.target import BackendInfo, OpenRequest
from gdbext.units import shown

#: Comma-separated plugin names to block (e.g. ``GDBEXT_BLOCK_PLUGINS=sim``).
BLOCK_ENV = "GDBEXT_BLOCK_PLUGINS"


def make_plugin_manager(
    *,
    block: Iterable[str] = (),
    extra_plugins: Iterable[object] = (),
    load_entry_points: bool = True,
) -> pluggy.PluginManager:
    """A plugin manager with gdbext's hookspecs, built-ins, and entry-point plugins.

    :param block: plugin names (entry-point names, e.g. ``"sim"``) never to register; names in
        the ``GDBEXT_BLOCK_PLUGINS`` environment variable are added.
    :param extra_plugins: more plugin objects to register (tests, embedding applications).
    :param load_entry_points: load the ``gdbext.plugins`` entry-point group.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = set(block) | {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n}
    for name in sorted(blocked):
        pm.set_blocked(name)
    if load_entry_points:
        try:
            # As pm.load_setuptools_entrypoints(group), without importlib.metadata's cost.
            for ep in entry_points(hookspecs.ENTRY_POINT_GROUP):
                if not (pm.has_plugin(ep.name) or pm.is_blocked(ep.name)):
                    pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken third-party plugin must not take gdbext down
            raise PluginError(f"loading plugins of {hookspecs.ENTRY_POINT_GROUP}: {exc}") from exc
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


#: The backend a dump file (a positional DUMP, ``--dump FILE``, ``gdbext.open(PATH)``) opens.
DUMP_BACKEND = "core"


class Host:
    """Typed views of what the registered plugins provide."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    @classmethod
    def create(
        cls,
        *,
        block: Iterable[str] = (),
        extra_plugins: Iterable[object] = (),
        load_entry_points: bool = True,
    ) -> Host:
        """A host over :func:`make_plugin_manager` (same keyword arguments)."""
        return cls(
            make_plugin_manager(
                block=block, extra_plugins=extra_plugins, load_entry_points=load_entry_points
            )
        )

    def backends(self) -> dict[str, BackendInfo]:
        found: dict[str, BackendInfo] = {}
        for infos in self.pm.hook.gdbext_backends():
            for info in infos:
                if info.name in found:
                    raise PluginError(f"two plugins provide a backend named {shown(info.name)}")
                found[info.name] = info
        return dict(sorted(found.items()))

    def backend(self, name: str) -> BackendInfo:
        backends = self.backends()
        try:
            return backends[name]
        except KeyError:
            known = ", ".join(backends) or "none"
            raise PluginError(f"no backend named {shown(name)} (known: {known})") from None

    def backend_request(
        self, name: str, options: Mapping[str, str | None], source: str | None = None
    ) -> tuple[BackendInfo, OpenRequest]:
        """The backend ``name`` and what to ask it to open: ``source`` and ``options`` (backend
        option names, ``None`` where not given; the command line's and the API's alike).
        Another backend's option, a source for a backend that takes none
        (:attr:`BackendInfo.source`; :data:`DUMP_BACKEND` takes its DUMP), or a missing
        required option is a :class:`~gdbext.errors.UsageError`."""
        info = self.backend(name)
        if source is not None and name != DUMP_BACKEND and not info.source:
            raise UsageError(
                f"a DUMP is opened by the {DUMP_BACKEND} backend; backend {shown(name)} takes "
                f"none ({shown(source)})"
            )
        own = {opt.name: options.get(opt.name) for opt in info.options}
        for other in self.backends().values():
            for opt in other.options:
                if opt.name not in own and options.get(opt.name) is not None:
                    raise UsageError(
                        f"--{opt.name.replace('_', '-')} is an option of backend {other.name}, "
                        f"not of {shown(name)}"
                    )
        for opt in info.options:
            if opt.required and own[opt.name] is None:
                raise UsageError(f"backend {name} needs --{opt.name.replace('_', '-')}")
        return info, OpenRequest(source, own)

    def output_formats(self, command: str) -> dict[str, OutputFormat]:
        found: dict[str, OutputFormat] = {}
        for formats in self.pm.hook.gdbext_output_formats():
            for fmt in formats:
                if fmt.command == command:
                    found.setdefault(fmt.name, fmt)
        return found
