"""What to audit and how: the options of one audit run (:func:`gdbext.audit.engine.run_audit`),
which the :class:`~gdbext.audit.context.AuditContext` holds for the rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from gdbext.audit.model import Severity
from gdbext.frontend.commands import RootOptions
from gdbext.frontend.heap import HeapOptions

__all__ = ["AuditOptions"]


@dataclass(frozen=True)
class AuditOptions:
    """What to audit and how.

    ``rules`` selects rule ids (``None``: every rule); ``skip`` removes ids; ``heap`` gives the
    heap command's options to rules that need the heap (``heap-contract``); ``fail_on`` makes
    :attr:`AuditResult.exit_status` :data:`~gdbext.errors.EXIT_FINDINGS` when a finding is at
    least that severe.
    """

    root: RootOptions = field(default_factory=RootOptions)
    rules: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()
    heap: HeapOptions | None = None
    fail_on: Severity | None = None
    #: ``--all-roots``: also the rules that audit every address space (``opt_in`` rules,
    #: which otherwise run only when named in ``rules``).
    all_roots: bool = False
