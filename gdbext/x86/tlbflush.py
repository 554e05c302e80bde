"""TLB invalidations that page-table changes require.

The rule gdbext follows (the seed kernel's, and conservative on purpose): a change to a leaf
entry needs that page flushed (``invlpg``); a change to an intermediate entry, or a freed
table, needs everything flushed, because paging-structure caches may hold it.

Operations of :class:`~gdbext.x86.paging.X86PageTable` return the flushes they require and hand
each to a :class:`FlushHook` that the backend implements.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class FlushPage(NamedTuple):
    """Invalidate the translation of the page of ``page_size`` bytes at ``vaddr``. (The flushes
    are named tuples: every command that opens a page table imports them, and making a
    dataclass costs start-up time.)"""

    vaddr: int
    page_size: int


class FlushAll(NamedTuple):
    """Invalidate every translation and every paging-structure cache entry."""


Flush = FlushPage | FlushAll


class FlushHook(Protocol):
    def __call__(self, flush: Flush) -> None: ...
