"""VMCOREINFO found through the kernel's pointers to it, on hand-built simulated machines.

The machine maps a direct map at 0xffff888000000000 and a writable "kernel image" at
0xffffffff81000000 (physical 0x1000000); the test writes ``vmcoreinfo_note``,
``vmcoreinfo_size`` and ``vmcoreinfo_data`` (as Linux 6.1 lays them out in ``.bss``) and the two
pages they point to, plus decoys. Reads are counted through the mapper.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from gdbext.addr import AddrRange
from gdbext.linux.vmcoreinfo import find_vmcoreinfo_by_pointer, kernel_root, parse_vmcoreinfo
from gdbext_gdbstub.livekernel import LiveVmcoreinfo
from gdbext_sim.scenario import SimMachine, build_machine

DIRECT = 0xFFFF_8880_0000_0000
IMAGE = AddrRange(0x1000000, 0x1400000)  # physical
TEXT = (
    b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a10000\n"
    b"NUMBER(phys_base)=0\nNUMBER(pgtable_l5_enabled)=0\nKERNELOFFSET=0\n"
)
DATA_PAGE = 0x2345000
NOTE_PAGE = 0x2346000
POINTERS = IMAGE.start + 0x3A0930  # in the image's top MiB


def machine() -> SimMachine:
    doc = {
        "levels": 4,
        "ram": "64M",
        "mappings": [
            {"vaddr": hex(DIRECT), "paddr": "0x0", "size": "2M", "count": 32,
             "flags": ["WRITABLE", "NO_EXECUTE", "GLOBAL"]},
            {"vaddr": "0xffffffff81000000", "paddr": hex(IMAGE.start), "size": "2M", "count": 2,
             "flags": ["WRITABLE", "NO_EXECUTE", "GLOBAL"]},
        ],
    }  # fmt: skip
    m = build_machine(doc, "<vmcoreinfo>")
    mem = m.memory
    # Decoys: the format string of the image's rodata, a pointer next to a wrong size, a
    # pointer next to a size but to a page without the text.
    mem.write(IMAGE.start + 0x1000, b"OSRELEASE=%s\n\0")
    mem.write(IMAGE.start + 0x3F0000, struct.pack("<QQ", DIRECT + DATA_PAGE, 12))
    mem.write(IMAGE.start + 0x3E0000, struct.pack("<QQ", DIRECT + 0x3000000, len(TEXT)))
    mem.write(DATA_PAGE, TEXT + b"\0")
    note = struct.pack("<III", 11, len(TEXT), 0) + b"VMCOREINFO\0\0" + TEXT + b"\0"
    mem.write(NOTE_PAGE, note)
    mem.write(POINTERS, struct.pack("<QQQ", DIRECT + NOTE_PAGE, len(TEXT), DIRECT + DATA_PAGE))
    return m


def counted(read: Callable[[int, int], bytes]) -> tuple[Callable[[int, int], bytes], list[int]]:
    sizes: list[int] = []

    def wrapper(paddr: int, size: int) -> bytes:
        sizes.append(size)
        return read(paddr, size)

    return wrapper, sizes


def test_the_pointer_next_to_the_size_leads_to_the_text() -> None:
    m = machine()
    read, sizes = counted(m.memory.read)
    hit = find_vmcoreinfo_by_pointer(read, [IMAGE], DIRECT, 64 << 20)
    assert hit is not None
    # Top down: vmcoreinfo_data (the higher of the two pointers) is met first.
    assert (hit.pointer, hit.paddr, hit.text) == (POINTERS + 16, DATA_PAGE, TEXT)
    assert kernel_root(parse_vmcoreinfo(hit.text)) == 0x2A10000
    assert sum(sizes) < (1 << 20) + 3 * 4096 + 64  # the top MiB, decoys' and the text's pages

    m.memory.write(POINTERS + 16, bytes(8))  # vmcoreinfo_data gone: the note's pointer
    hit = find_vmcoreinfo_by_pointer(m.memory.read, [IMAGE], DIRECT, 64 << 20)
    assert hit is not None and (hit.pointer, hit.paddr) == (POINTERS, NOTE_PAGE + 24)

    assert find_vmcoreinfo_by_pointer(m.memory.read, [IMAGE], DIRECT, 64 << 20, limit=0) is None
    assert find_vmcoreinfo_by_pointer(m.memory.read, [IMAGE], DIRECT + (1 << 30), 64 << 20) is None


def test_live_vmcoreinfo_is_kept_per_stop_and_checked_at_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = machine()
    cpu = m.cpus[0]
    read, reads = counted(m.memory.read)
    monkeypatch.setattr(m.memory, "read", read)
    live = LiveVmcoreinfo(m.memory, lambda: 64 << 20)
    info = live.get(cpu)
    assert info is not None and info.osrelease == "6.1.0-test"
    assert live.details(cpu)["VMCOREINFO"] == (
        f"found in RAM at 0x{DATA_PAGE:x} ({len(TEXT)} bytes), through the kernel image's "
        f"pointer at 0x{POINTERS + 16:x}"
    )
    assert live.facts(cpu).kernel_root == 0x2A10000  # type: ignore[union-attr]
    reads.clear()
    assert live.get(cpu) is info and not reads  # the same stop: nothing read
    live.invalidate()  # the next stop: the pointer and the text, read again
    assert live.get(cpu) is not None and len(reads) == 2
    assert "where it was at the last stop" in live.origin

    other = b"OSRELEASE=6.1.0-other\nPAGESIZE=4096\n\0"  # another text, vmcoreinfo_size stale
    m.memory.write(DATA_PAGE, other)
    m.memory.write(NOTE_PAGE + 24, other)
    live.invalidate()
    assert live.get(cpu) is None
    assert live.origin == "not found (no pointer to it in the kernel image)"
    live.invalidate()
    reads.clear()
    assert live.get(cpu) is None  # not searched again while the image is where it was
    assert "not searched again" in live.origin and sum(reads) < 64 << 10
