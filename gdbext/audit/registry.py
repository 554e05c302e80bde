"""The audit rules the registered plugins provide, by id.

>>> from gdbext.plugin.host import Host
>>> "wx" in audit_rules(Host.create())
True
"""

from __future__ import annotations

from gdbext.audit.model import AuditRule
from gdbext.errors import PluginError
from gdbext.plugin.host import Host
from gdbext.units import shown


def audit_rules(host: Host) -> dict[str, AuditRule]:
    """Every audit rule ``host``'s plugins provide, by id (sorted); :class:`PluginError` when
    two rules share an id."""
    found: dict[str, AuditRule] = {}
    for rules in host.pm.hook.gdbext_audit_rules():
        for rule in rules:
            if rule.id in found:
                raise PluginError(f"two plugins provide an audit rule with the id {shown(rule.id)}")
            found[rule.id] = rule
    return dict(sorted(found.items()))
