"""Every hook a gdbext plugin can implement, in one place.

A plugin is a module or object with functions marked ``@hookimpl``; it is found through the
``gdbext.plugins`` entry-point group (built-in backends too) or registered directly.

>>> from gdbext.plugin.hookspecs import hookimpl
>>> class MyPlugin:
...     @hookimpl
...     def gdbext_backends(self):
...         return []
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from gdbext.audit.model import AuditRule
    from gdbext.plugin.formats import OutputFormat
    from gdbext.plugin.target import BackendInfo

PROJECT = "gdbext"
ENTRY_POINT_GROUP = "gdbext.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gdbext_backends() -> Sequence[BackendInfo]:
    """The backends this plugin provides."""
    raise NotImplementedError


@hookspec
def gdbext_output_formats() -> Sequence[OutputFormat]:
    """Output formats (renderers) this plugin provides, each for one command."""
    raise NotImplementedError


@hookspec
def gdbext_audit_rules() -> Sequence[AuditRule]:
    """Audit rules this plugin provides (see :mod:`gdbext.audit.model`); ids must be unique
    across plugins."""
    raise NotImplementedError
