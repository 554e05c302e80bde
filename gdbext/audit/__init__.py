"""Page-table audits: rules as plugins, run on one shared walk.

- :mod:`gdbext.audit.model`: :class:`Severity`, :class:`Finding`, :class:`RuleSkipped`;
  :mod:`gdbext.audit.rule`: the :class:`AuditRule` protocol and :class:`FunctionRule`;
- :mod:`gdbext.audit.options`: :class:`~gdbext.audit.options.AuditOptions`;
- :mod:`gdbext.audit.context`: :class:`~gdbext.audit.context.AuditContext`, what rules look at;
- :mod:`gdbext.audit.spans`: :class:`~gdbext.audit.spans.LeafSpan` (a leaf run and its
  repetitions through collapsed aliases) and groups of them; :mod:`gdbext.audit.frames`:
  sweeps over physical frames; :mod:`gdbext.audit.evidence`: walk steps as evidence lines;
- :mod:`gdbext.audit.engine`: :func:`~gdbext.audit.engine.run_audit`;
- :mod:`gdbext.audit.rules`: the built-in rules, registered by :mod:`gdbext.audit.builtin`
  through the ``gdbext.plugins`` entry point ``audit``, as a third-party rule would be.

A third-party rule::

    from gdbext.audit.rule import FunctionRule

    from gdbext.audit.model import Severity
    from gdbext.plugin.hookspecs import hookimpl

    def check(ctx):
        for span in ctx.main.spans:
            if span.run.user and span.run.executable and ctx.is_kernel_half(span.vaddr):
                yield ctx.finding(RULE, ctx.main, "user code in the kernel half", span=span)

    RULE = FunctionRule("my-rule", Severity.MEDIUM, "user code in the kernel half", check)

    @hookimpl
    def gdbext_audit_rules():
        return [RULE]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gdbext.audit.model import Finding, RuleSkipped, Severity
    from gdbext.audit.rule import AuditRule, FunctionRule

__all__ = ["AuditRule", "Finding", "FunctionRule", "RuleSkipped", "Severity"]

#: Where each name of ``__all__`` is defined: loaded on first use, so that loading the plugins
#: (every command does, through the built-in rules' plugin) loads no audit module.
_HOMES = {
    "AuditRule": "gdbext.audit.rule",
    "Finding": "gdbext.audit.model",
    "FunctionRule": "gdbext.audit.rule",
    "RuleSkipped": "gdbext.audit.model",
    "Severity": "gdbext.audit.model",
}


def __getattr__(name: str) -> object:
    import importlib

    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
