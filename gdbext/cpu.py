"""The control-register state that decides how the MMU walks page tables.

>>> cpu = CpuState(cr0=0x80050033, cr3=0x1c0d001, cr4=0x3206f0, efer=0xd01)
>>> cpu.levels, cpu.nxe, cpu.wp, cpu.smep, cpu.smap
(4, True, True, True, True)
>>> hex(cpu.root), cpu.pcid
('0x1c0d000', 1)
"""

from __future__ import annotations

from dataclasses import dataclass

CR0_PG = 1 << 31
CR0_WP = 1 << 16
CR4_PAE = 1 << 5
CR4_PCIDE = 1 << 17
CR4_SMEP = 1 << 20
CR4_SMAP = 1 << 21
CR4_PKE = 1 << 22
CR4_LA57 = 1 << 12
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11
#: The address bits of CR3 (bits 12..51); bits 0..11 are PCID or PWT/PCD.
CR3_ADDR_MASK = 0x000F_FFFF_FFFF_F000


@dataclass(frozen=True)
class CpuState:
    """CR0, CR3, CR4 and EFER of one CPU. ``None`` means the backend does not know."""

    cr0: int | None = None
    cr3: int | None = None
    cr4: int | None = None
    efer: int | None = None
    #: MAXPHYADDR (CPUID 0x80000008), when the backend knows it.
    max_phys_bits: int | None = None

    @property
    def levels(self) -> int:
        """5 if CR4.LA57 is set, else 4 (also when CR4 is unknown)."""
        return 5 if self.cr4 is not None and self.cr4 & CR4_LA57 else 4

    @property
    def root(self) -> int | None:
        """Physical address of the top-level table, PCID and PWT/PCD bits masked."""
        return None if self.cr3 is None else self.cr3 & CR3_ADDR_MASK

    @property
    def pcid(self) -> int | None:
        """CR3 bits 0..11 when CR4.PCIDE is set, else ``None``."""
        if self.cr3 is None or not self.pcide:
            return None
        return self.cr3 & 0xFFF

    def _cr4(self, bit: int) -> bool:
        return self.cr4 is not None and bool(self.cr4 & bit)

    @property
    def nxe(self) -> bool:
        """EFER.NXE; assumed on when EFER is unknown (every x86-64 kernel sets it)."""
        return self.efer is None or bool(self.efer & EFER_NXE)

    @property
    def wp(self) -> bool:
        return self.cr0 is not None and bool(self.cr0 & CR0_WP)

    @property
    def paging(self) -> bool:
        return self.cr0 is not None and bool(self.cr0 & CR0_PG)

    @property
    def long_mode(self) -> bool:
        return self.efer is not None and bool(self.efer & EFER_LMA)

    @property
    def pcide(self) -> bool:
        return self._cr4(CR4_PCIDE)

    @property
    def smep(self) -> bool:
        return self._cr4(CR4_SMEP)

    @property
    def smap(self) -> bool:
        return self._cr4(CR4_SMAP)

    @property
    def pke(self) -> bool:
        return self._cr4(CR4_PKE)

    @property
    def la57(self) -> bool:
        return self._cr4(CR4_LA57)
