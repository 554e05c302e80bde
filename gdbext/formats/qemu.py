"""QEMU's ``dump-guest-memory`` per-CPU note: ``QEMUCPUState`` (``target/i386/arch_dump.c``).

A ``"QEMU"`` note of type 0 per CPU. Version 1 has grown without a version bump; the fields
after ``cr[4]`` are recognised by ``size``: ``kernel_gs_base`` (QEMU >= 7.x, size >= 440), and
EFER after it in a patched QEMU some Xen tools expect (size >= 448; upstream has no EFER). QEMU
writes the same bytes in 32-bit cores.
"""

from __future__ import annotations

from typing import Final

from gdbext.formats.layout import Field, Layout

QEMU_CPU_STATE_VERSION: Final = 1
#: The general registers in ``QEMUCPUState`` order.
QEMU_GENERAL_REGS: Final = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12",
    "r13", "r14", "r15", "rip", "rflags",
)  # fmt: skip
#: The ``QEMUCPUSegment`` fields of ``QEMUCPUState``, in order.
QEMU_SEGMENTS: Final = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
#: ``QEMUCPUSegment``'s fields (each named ``<segment>_<field>`` in ``QEMUCPUState``).
_SEGMENT_FIELDS: Final[list[Field]] = [
    ("selector", "I"),
    ("limit", "I"),
    ("flags", "I"),
    ("pad", "I"),
    ("base", "Q"),
]
#: ``QEMUCPUSegment``, 24 bytes.
QEMU_CPU_SEGMENT: Final = Layout("QEMUCPUSegment", _SEGMENT_FIELDS)

_CPU_STATE_UP_TO_CR4: Final[list[Field]] = [
    ("version", "I"),
    ("size", "I"),
    *((reg, "Q") for reg in QEMU_GENERAL_REGS),
    *((f"{seg}_{name}", fmt) for seg in QEMU_SEGMENTS for name, fmt in _SEGMENT_FIELDS),
    *((f"cr{i}", "Q") for i in range(5)),
]
#: ``QEMUCPUState`` version 1 up to ``cr[4]``, 432 bytes: what every version-1 note holds.
QEMU_CPU_STATE: Final = Layout("QEMUCPUState", _CPU_STATE_UP_TO_CR4)
#: ``QEMUCPUState`` with ``kernel_gs_base`` (440 bytes), as QEMU 7.x writes it.
QEMU_CPU_STATE_GS: Final = Layout("QEMUCPUState", [*_CPU_STATE_UP_TO_CR4, ("kernel_gs_base", "Q")])
#: ``QEMUCPUState`` with EFER after ``kernel_gs_base`` (448 bytes; patched QEMU only).
QEMU_CPU_STATE_EFER: Final = Layout(
    "QEMUCPUState", [*_CPU_STATE_UP_TO_CR4, ("kernel_gs_base", "Q"), ("efer", "Q")]
)
