"""What ``translate`` returns: each address's outcome (a translation or its error).

Apart from :mod:`gdbext.frontend.commands`, whose :func:`~gdbext.frontend.commands.translate`
makes them, so that the commands that do not translate do not declare these dataclasses (each
costs start-up time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gdbext.errors import EXIT_BAD_INPUT

if TYPE_CHECKING:
    from gdbext.errors import TranslationError
    from gdbext.x86.records import Translation


@dataclass(frozen=True)
class TranslateOutcome:
    vaddr: int
    translation: Translation | None
    error: TranslationError | None = None
    #: False when the address is mapped but its frame is in RAM and not in the dump (its bytes
    #: are unknown); True otherwise.
    captured: bool = True
    #: ``symbol+0xoff`` of the address, when symbols were given and it is in the kernel image.
    symbol: str | None = None


@dataclass(frozen=True)
class TranslateResult:
    levels: int
    root: int
    outcomes: Sequence[TranslateOutcome]
    #: One-line warnings about the selected table (see :func:`root_warnings`).
    warnings: Sequence[str] = ()

    @property
    def all_mapped(self) -> bool:
        return all(o.translation is not None for o in self.outcomes)

    @property
    def exit_status(self) -> int:
        """0 if every address translated, else the worst status of the errors (1 not mapped,
        2 a malformed table or a bad address)."""
        return max((o.error.exit_status for o in self.outcomes if o.error is not None), default=0)

    @property
    def failures(self) -> list[TranslationError]:
        """The errors of exit status 2 (bad address, malformed table, unreadable memory):
        front ends report them as errors, not as results."""
        return [o.error for o in self.outcomes if o.error is not None and _failed(o)]

    def results(self) -> TranslateResult:
        """This result without the outcomes in :attr:`failures`: what is printed as output."""
        return dataclasses.replace(self, outcomes=[o for o in self.outcomes if not _failed(o)])


def _failed(outcome: TranslateOutcome) -> bool:
    """``outcome`` is an error of exit status 2, not a result (:attr:`TranslateResult.failures`)."""
    return outcome.error is not None and outcome.error.exit_status >= EXIT_BAD_INPUT
