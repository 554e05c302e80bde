"""What QEMU printed for the frozen VM each committed dump was taken from
(``fixtures/kernels/NAME.*``): the expected values of the tests on real kernels."""

from __future__ import annotations

import functools
import lzma
import re

from support.paths import KERNELS


def gva2gpa(name: str) -> dict[int, int | None]:
    """QEMU's ``gva2gpa`` samples: VADDR -> PADDR, ``None`` for unmapped."""
    found: dict[int, int | None] = {}
    for line in (KERNELS / f"{name}.gva2gpa.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        vaddr, paddr = line.split()
        found[int(vaddr, 16)] = None if paddr == "-" else int(paddr, 16)
    return found


#: A line of QEMU's ``info tlb``: ``VADDR: PADDR FLAGS``.
TLB_LINE = re.compile(r"^([0-9a-f]{16}): ([0-9a-f]{16}) ([-XGPDACTUW]{9})$")


@functools.cache
def tlb_lines(golden: str) -> tuple[tuple[int, int, str], ...]:
    """``(vaddr, paddr, flags)`` of each line of QEMU's ``info tlb`` in ``GOLDEN.txt.xz``, read
    once a session (many tests compare with the same goldens)."""
    text = lzma.decompress((KERNELS / f"{golden}.txt.xz").read_bytes()).decode()
    out = []
    for line in text.splitlines():
        m = TLB_LINE.match(line)
        assert m is not None, line
        out.append((int(m[1], 16), int(m[2], 16), m[3]))
    return tuple(out)


def info_tlb(golden: str) -> dict[int, tuple[int, str]]:
    """QEMU's ``info tlb`` lines: VADDR -> (PADDR, flags)."""
    return {vaddr: (paddr, flags) for vaddr, paddr, flags in tlb_lines(golden)}


def registers(name: str) -> dict[str, int]:
    """CR0, CR2, CR3, CR4 and EFER of QEMU's ``info registers``."""
    text = (KERNELS / f"{name}.info-registers.txt").read_text()
    return {k: int(v, 16) for k, v in re.findall(r"\b(CR[0234]|EFER)=([0-9a-f]+)", text)}


def kernel_paddr(name: str, vaddr: int) -> int:
    """Where QEMU's ``info tlb`` of the kernel's root (``NAME.info-tlb-kernel``) maps
    ``vaddr``, whatever the size of its page."""
    tlb = info_tlb(f"{name}.info-tlb-kernel")
    for size in (1 << 12, 1 << 21, 1 << 30):
        page = vaddr & ~(size - 1)
        if page in tlb:
            return tlb[page][0] + vaddr - page
    raise AssertionError(f"0x{vaddr:x} is not in QEMU's info tlb")
