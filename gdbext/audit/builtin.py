"""The built-in audit rules, registered as a plugin through the ``gdbext.plugins`` entry point
``audit`` (pyproject.toml), exactly as a third-party rule plugin would be.

Rule modules are imported when the rules are asked for, not when plugins load (GDB loads every
plugin at start-up). Each module listed here has ``RULES``, a sequence of rules.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gdbext.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from gdbext.audit.rule import AuditRule

#: One line per rule module.
RULE_MODULES: tuple[str, ...] = (
    "gdbext.audit.rules.wx",
    "gdbext.audit.rules.cpu_hardening",
    "gdbext.audit.rules.global_user",
    "gdbext.audit.rules.user_kernel",
    "gdbext.audit.rules.pti",
    "gdbext.audit.rules.reserved_bits",
    "gdbext.audit.rules.alias_wx",
    "gdbext.audit.rules.pt_writable_alias",
    "gdbext.audit.rules.heap_contract",
    "gdbext.audit.rules.address_spaces",
)


@hookimpl
def gdbext_audit_rules() -> Sequence[AuditRule]:
    rules: list[AuditRule] = []
    for name in RULE_MODULES:
        rules.extend(importlib.import_module(name).RULES)
    return rules
