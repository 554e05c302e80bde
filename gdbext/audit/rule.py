"""The audit rule protocol: what a plugin's rule is.

A rule is any object with an ``id``, a default ``severity``, a one-line ``summary`` and a
``check(ctx)`` method that yields :class:`~gdbext.audit.model.Finding` objects for the
:class:`~gdbext.audit.context.AuditContext` it is given; plugins return rules from the
``gdbext_audit_rules`` hook. :class:`FunctionRule` makes one of a function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gdbext.audit.model import Finding, Severity

if TYPE_CHECKING:
    from gdbext.audit.context import AuditContext

__all__ = ["AuditRule", "FunctionRule"]


@runtime_checkable
class AuditRule(Protocol):
    """An audit rule, as a plugin provides it (see the module docstring)."""

    @property
    def id(self) -> str:
        """Short, unique, lowercase with dashes: ``"wx"``, ``"cpu-hardening"``."""
        ...

    @property
    def severity(self) -> Severity:
        """The default severity of its findings."""
        ...

    @property
    def summary(self) -> str:
        """One line for ``--list-rules``."""
        ...

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        """The findings on ``ctx``'s target; :class:`~gdbext.audit.model.RuleSkipped` if the
        rule cannot run."""
        ...


@dataclass(frozen=True)
class FunctionRule:
    """A rule made of a function, for rules that need no state of their own.

    >>> r = FunctionRule("none", Severity.LOW, "never finds anything", lambda ctx: ())
    >>> list(r.check(None))  # type: ignore[arg-type]
    []
    """

    id: str
    severity: Severity
    summary: str
    func: Callable[[AuditContext], Iterable[Finding]]

    def check(self, ctx: AuditContext) -> Iterable[Finding]:
        return self.func(ctx)
