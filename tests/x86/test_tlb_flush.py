"""The engine's TLB invalidations, checked against the simulator's modelled TLB.

Every operation of X86PageTable reports the flushes it needs and hands them to the flush hook.
With the modelled TLB as the hook, no cached translation or paging-structure entry may ever
disagree with the tables. Without the hook (a "forgotten" flush) the model must catch it.
"""

from __future__ import annotations

import random

import pytest

from gdbext.flags import PageTableFlags as F
from gdbext.x86.paging import SIZE_2M, SIZE_4K, X86PageTable
from gdbext.x86.tlbflush import Flush, FlushAll, FlushPage
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
from gdbext_sim.tlb import SimTlb


class Machine:
    def __init__(self, levels: int = 4, hooked: bool = True) -> None:
        self.mem = SparsePhysMemory(64 << 20)
        self.alloc = TopDownFrameAllocator(self.mem)
        root = self.alloc.allocate_frame()
        assert root is not None
        self.tlb = SimTlb(self.mem, root, levels)
        self.seen: list[Flush] = []
        #: False models a kernel that forgets to pass the flushes on to the TLB.
        self.hooked = hooked

        def hook(flush: Flush) -> None:
            self.seen.append(flush)
            if self.hooked:
                self.tlb(flush)

        self.pt = X86PageTable(self.mem, root, levels, allow_writes=True, flush_hook=hook)

    def touch(self, *vaddrs: int) -> None:
        """The CPU uses these addresses: the TLB and PSC fill."""
        for v in vaddrs:
            self.tlb.access(v)


def test_unmap_without_flush_is_caught() -> None:
    m = Machine(hooked=False)
    m.pt.map(0x400000, 0x10000, SIZE_4K, F.WRITABLE, m.alloc)
    m.touch(0x400000)
    m.seen.clear()
    m.pt.unmap(0x400000)
    assert m.tlb.access(0x400123) == 0x10123  # the stale translation is still used
    stale = m.tlb.stale_entries()
    assert [s.kind for s in stale] == ["tlb"] and stale[0].current is None
    assert m.seen == [FlushPage(0x400000, SIZE_4K)]  # what should have been done


def test_unmap_with_flush_is_coherent() -> None:
    m = Machine()
    m.pt.map(0x400000, 0x10000, SIZE_4K, F.WRITABLE, m.alloc)
    m.touch(0x400000)
    m.pt.unmap(0x400000)
    assert m.tlb.access(0x400123) is None
    assert m.tlb.stale_entries() == []


def test_write_protect_without_flush_is_caught() -> None:
    m = Machine(hooked=False)
    m.pt.map(0x400000, 0x10000, SIZE_4K, F.WRITABLE, m.alloc)
    m.touch(0x400000)
    m.pt.update_flags(0x400000, F(0))
    assert [s.kind for s in m.tlb.stale_entries()] == ["tlb"]


def test_clean_up_needs_the_full_flush() -> None:
    """clean_up frees tables a paging-structure cache may still hold (the x86_64 crate bug)."""
    for hooked in (False, True):
        m = Machine()
        m.pt.map(0x400000, 0x10000, SIZE_4K, 0, m.alloc)
        m.pt.map(0x401000, 0x11000, SIZE_4K, 0, m.alloc)
        m.touch(0x400000, 0x401000)
        m.pt.unmap(0x400000)
        m.pt.unmap(0x401000)
        m.touch(0x400000)  # a walk that ends at the now empty PT fills the PSC
        assert m.tlb.stale_entries() == []
        m.seen.clear()
        m.hooked = hooked
        result = m.pt.clean_up(m.alloc)
        assert len(result.freed) == 3 and result.flushes == (FlushAll(),)
        assert m.seen == [FlushAll()]
        stale = m.tlb.stale_entries()
        if hooked:
            assert stale == []
        else:
            assert stale and {s.kind for s in stale} == {"psc"}


def test_intermediate_change_asks_for_full_flush() -> None:
    m = Machine()
    m.pt.map(0x400000, 0x10000, SIZE_4K, 0, m.alloc)
    m.touch(0x400000)
    m.seen.clear()
    # A writable neighbour makes the parents writable: an intermediate change.
    m.pt.map(0x401000, 0x11000, SIZE_4K, F.WRITABLE, m.alloc)
    assert m.seen == [FlushAll()]
    m.seen.clear()
    m.pt.map(0x402000, 0x12000, SIZE_4K, F.WRITABLE, m.alloc)  # parents already allow it
    assert m.seen == [FlushPage(0x402000, SIZE_4K)]
    assert m.tlb.stale_entries() == []


@pytest.mark.parametrize("levels", [4, 5])
def test_random_operations_stay_coherent(levels: int) -> None:
    """Hundreds of random changes, the CPU touching pages in between: never a stale entry."""
    rng = random.Random(levels)
    m = Machine(levels)
    bases = [0x0, 0x4000_0000, 0xFFFF_8000_0000_0000 if levels == 4 else 0xFF00_0000_0000_0000]
    mapped: dict[int, int] = {}
    for _ in range(400):
        base = rng.choice(bases)
        size = rng.choice([SIZE_4K, SIZE_4K, SIZE_2M])
        va = (
            base
            + rng.randrange(4) * SIZE_2M
            + (rng.randrange(4) * SIZE_4K if size == SIZE_4K else 0)
        )
        op = rng.random()
        try:
            if op < 0.5:
                flags = F.WRITABLE if rng.random() < 0.5 else F(0)
                m.pt.map(va, rng.randrange(64) * SIZE_2M, size, flags, m.alloc)
                mapped[va] = size
            elif op < 0.75 and mapped:
                victim = rng.choice(sorted(mapped))
                m.pt.unmap(victim)
                del mapped[victim]
            elif op < 0.9 and mapped:
                m.pt.update_flags(rng.choice(sorted(mapped)), F.USER_ACCESSIBLE)
            else:
                m.pt.clean_up(m.alloc)
        except Exception as exc:  # conflicts are expected; they must change nothing
            assert type(exc).__name__ in {
                "AlreadyMappedError",
                "TableInTheWayError",
                "ParentHugePageError",
            }, exc
        m.touch(*rng.sample([b + k * SIZE_4K for b in bases for k in range(0, 2048, 97)], 20))
        assert m.tlb.stale_entries() == []
