"""The live kernel's VMCOREINFO, found in its memory without vmlinux.

A dump carries VMCOREINFO as a note; a live target does not say where it is (QEMU's ``-device
vmcoreinfo`` learns the address through fw_cfg, but no monitor command shows it). So it is
searched for the way :func:`gdbext.linux.vmcoreinfo.find_vmcoreinfo_by_pointer` describes: through
the kernel's own pointers to it, in the writable part of the kernel image that the selected
CPU's page table maps at ``__START_KERNEL_map`` (:mod:`gdbext.linux.kernelimage`), the direct map's
base found in the same table (:func:`gdbext.linux.detect.find_page_offset_base`). A kernel whose
image holds no such pointer is "not found": all of RAM is not scanned for it, as that takes
tens of seconds over a gdbstub and ``--labels auto`` asks on every walk.

:class:`LiveVmcoreinfo` keeps the answer for one stop (:meth:`LiveVmcoreinfo.invalidate` on
resume) and, across stops, where it was: the next stop reads the pointer and the text again (two
reads) and keeps them if they did not change; a search that found nothing is not repeated while
the image lies where it did.
"""

from __future__ import annotations

from collections.abc import Callable

from gdbext.cpu import CpuState
from gdbext.errors import GdbextError
from gdbext.linux.detect import find_page_offset_base
from gdbext.linux.kernelimage import ImagePart, bss_first, image_parts
from gdbext.linux.vmcoreinfo import (
    PointerHit,
    VmcoreInfo,
    find_vmcoreinfo_by_pointer,
    kernel_root,
    parse_vmcoreinfo,
    vmcore_facts,
)
from gdbext.mapper import PhysMapper
from gdbext.plugin.facts import VmcoreFacts
from gdbext.x86.paging import X86PageTable
from gdbext_gdbstub.link import TargetLostError

#: Under PTI a CPU in user mode runs on the user half of the PGD pair (root | 0x1000), which
#: maps little of the kernel image; the kernel half is the page before it.
_PTI_USER_BIT = 0x1000


class LiveVmcoreinfo:
    """VMCOREINFO of one connection's target, searched for at most once per stop."""

    def __init__(self, mapper: PhysMapper, ram_end: Callable[[], int | None]) -> None:
        self._mapper = mapper
        self._ram_end = ram_end
        self._resolved = False
        self._info: VmcoreInfo | None = None
        #: Where it was found (kept across stops) and the text then.
        self._hit: PointerHit | None = None
        #: The hit's text, parsed (the same text at a later stop parses the same).
        self._parsed: VmcoreInfo | None = None
        #: The image's parts when the last search found nothing (kept across stops).
        self._missed: tuple[ImagePart, ...] | None = None
        #: The direct map's base when it was found.
        self._base = 0
        self.origin = "not searched yet"

    def invalidate(self) -> None:
        """The target ran: look again (cheaply where it was) when next asked."""
        self._resolved = False
        self._info = None

    def get(self, cpu: CpuState) -> VmcoreInfo | None:
        """The VMCOREINFO at this stop, searched with ``cpu``'s page table, or ``None``."""
        if not self._resolved:
            self._info = self._find(cpu)
            self._resolved = True
        return self._info

    def facts(self, cpu: CpuState) -> VmcoreFacts | None:
        """What the VMCOREINFO at this stop says, for :attr:`Target.facts`."""
        info = self.get(cpu)
        return None if info is None else vmcore_facts(info)

    def details(self, cpu: CpuState) -> dict[str, str]:
        info = self.get(cpu)
        details = {"VMCOREINFO": self.origin}
        if info is not None:
            if info.osrelease is not None:
                details["OSRELEASE"] = info.osrelease
            root = kernel_root(info)
            if root is not None:
                details["kernel root"] = (
                    f"0x{root:x} (init_top_pgt - 0xffffffff80000000 + phys_base)"
                )
        return details

    # --- internals ---

    def _find(self, cpu: CpuState) -> VmcoreInfo | None:
        hit = self._hit
        if hit is not None and self._still_there(hit):
            self.origin = _found(hit, "where it was at the last stop")
            return self._parsed
        self._hit = None
        if cpu.root is None:
            self.origin = "not found (CR3 is unknown)"
            return None
        try:
            return self._search(cpu)
        except TargetLostError:
            raise
        except (GdbextError, ValueError) as exc:
            self.origin = f"not found ({exc})"
            return None

    def _search(self, cpu: CpuState) -> VmcoreInfo | None:
        assert cpu.root is not None
        roots = [cpu.root]
        if cpu.root & _PTI_USER_BIT:
            roots.append(cpu.root & ~_PTI_USER_BIT)
        for root in roots:
            pt = X86PageTable.from_cpu(self._mapper, cpu, root=root, cache=True)
            parts = image_parts(pt)
            writable = {p.range for p in parts if p.writable}
            if not writable:
                continue
            if self._missed == tuple(parts):
                self.origin = "not found (no pointer to it in the kernel image; not searched again)"
                return None
            base = find_page_offset_base(pt)
            ram_end = self._ram_end()
            if base is None or ram_end is None:
                self.origin = "not found (the direct map's base or the end of RAM is unknown)"
                return None
            ranges = [r for r in bss_first(parts) if r in writable]
            hit = find_vmcoreinfo_by_pointer(self._mapper.read, ranges, base, ram_end)
            if hit is None:
                self._missed = tuple(parts)
                self.origin = "not found (no pointer to it in the kernel image)"
                return None
            self._hit, self._missed, self._base = hit, None, base
            self.origin = _found(hit, f"through the kernel image's pointer at 0x{hit.pointer:x}")
            self._parsed = parse_vmcoreinfo(hit.text)
            return self._parsed
        self.origin = "not found (nothing mapped at __START_KERNEL_map: not a Linux kernel?)"
        return None

    def _still_there(self, hit: PointerHit) -> bool:
        """True if the pointer still holds the text's address and the text is unchanged."""
        try:
            pointer = int.from_bytes(self._mapper.read(hit.pointer, 8), "little")
            text = self._mapper.read(hit.paddr, len(hit.text) + 1)
        except GdbextError:
            return False
        return pointer == self._base + (hit.paddr & ~0xFFF) and text == hit.text + b"\0"


def _found(hit: PointerHit, how: str) -> str:
    return f"found in RAM at 0x{hit.paddr:x} ({len(hit.text)} bytes), {how}"
