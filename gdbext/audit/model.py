"""What an audit is made of: severities, findings, the reason a rule skips.

A rule (:class:`~gdbext.audit.rule.AuditRule`) is any object with an ``id``, a default
``severity``, a one-line ``summary`` and a ``check(ctx)`` method that yields :class:`Finding`
objects; plugins return rules from the ``gdbext_audit_rules`` hook. A rule that cannot run on
a target (no PTI, no memory map) raises :class:`RuleSkipped` with the reason, and the audit's
summary lists it as skipped.

>>> Severity.parse("HIGH"), str(Severity.MEDIUM)
(<Severity.HIGH: 3>, 'medium')
>>> f = Finding("wx", Severity.HIGH, "writable and executable", vaddr=0x1000, end=0x3000)
>>> f.pages
0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from gdbext.addr import hex_repr
from gdbext.errors import GdbextError, UsageError
from gdbext.units import shown

__all__ = ["Finding", "RuleIdentity", "RuleSkipped", "Severity", "once_per_table"]


class Severity(IntEnum):
    """How bad a finding is; ordered, so ``--fail-on medium`` means ``>= MEDIUM``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """A severity by name, case-insensitive; :class:`UsageError` naming the choices."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            choices = ", ".join(str(s) for s in cls)
            raise UsageError(f"unknown severity {shown(text)} (choose from {choices})") from None


@hex_repr("vaddr", "end", "paddr", "paddr_end")
@dataclass(frozen=True)
class Finding:
    """One thing an audit rule found.

    Addresses are virtual (``vaddr``, ``end`` exclusive) and physical (``paddr``,
    ``paddr_end`` exclusive, ``None`` when the frames are not contiguous); permissions are
    the *effective* ones (``None`` when they do not apply, e.g. a CPU setting). ``root``
    names the table the finding is in: ``"cr3"`` (the selected root), ``"kernel"`` or
    ``"user"`` (the PTI pair's halves), or ``"kernel+user"`` when it involves both (a frame
    writable through one and executable through the other: ``alias-wx``). ``evidence`` holds
    the walk steps of the first page (``"PML4[511] @0x1a0c000 = 0x1a0f063"``) and other
    facts, one line each. ``pages`` counts 4 KiB units.

    ``cause`` says what the finding is about without its addresses (``"user code writable
    through a kernel mapping outside the direct map"``); findings of one rule, severity, root
    and cause in one region of Linux's layout are grouped into one
    (:func:`gdbext.audit.grouping.group_findings`), whose ``ranges`` are the findings it
    groups (empty for a finding that is not a group). A rule that sets no cause gets its
    message with the numbers masked.
    """

    rule: str
    severity: Severity
    #: One line.
    message: str
    vaddr: int | None = None
    end: int | None = None
    paddr: int | None = None
    paddr_end: int | None = None
    user: bool | None = None
    writable: bool | None = None
    executable: bool | None = None
    root: str = "cr3"
    evidence: tuple[str, ...] = ()
    pages: int = 0
    cause: str = ""
    ranges: tuple[Finding, ...] = ()

    def sort_key(self) -> tuple[int, str, int, str, str]:
        """Severity (highest first), rule, virtual address (none first), root, message."""
        return (
            -int(self.severity),
            self.rule,
            -1 if self.vaddr is None else self.vaddr,
            self.root,
            self.message,
        )


class RuleSkipped(GdbextError):
    """Raised by a rule that cannot run on this target; ``reason`` says why (one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RuleIdentity(Protocol):
    """What a finding needs of its rule: the id and default severity (every
    :class:`~gdbext.audit.rule.AuditRule` has them)."""

    @property
    def id(self) -> str: ...

    @property
    def severity(self) -> Severity: ...


def once_per_table(findings: Iterable[Finding], names: Mapping[str, str]) -> Iterator[Finding]:
    """``findings`` once per (range, frames, permissions, message): a repeat from another
    table (the halves of a PTI pair share their user-half tables) becomes an evidence line of
    the first, ``"the same through the user table 0x201000 (shared tables)"`` (``names``:
    table name -> how to call it)."""
    first: dict[tuple[object, ...], int] = {}
    out: list[Finding] = []
    for f in findings:
        key = (f.vaddr, f.end, f.paddr, f.paddr_end, f.user, f.writable, f.executable, f.message)
        at = first.get(key)
        if at is None:
            first[key] = len(out)
            out.append(f)
            continue
        also = f"the same through the {names.get(f.root, f.root)} (shared tables)"
        if also not in out[at].evidence:
            out[at] = dataclasses.replace(out[at], evidence=(*out[at].evidence, also))
    return iter(out)
