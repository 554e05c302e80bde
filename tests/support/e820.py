"""The e820 map QEMU's ``pc`` machine gives a 128 MiB guest (what its kernel prints as
``BIOS-e820``), for the tests that build boot_params by hand."""

from __future__ import annotations

#: One e820 entry: start, size, type.
Entry = tuple[int, int, int]
#: The map of QEMU's ``pc`` machine with 128 MiB of RAM.
QEMU_E820: list[Entry] = [
    (0x0, 0x9FC00, 1),
    (0x9FC00, 0x400, 2),
    (0xF0000, 0x10000, 2),
    (0x100000, 0x7EE0000, 1),
    (0x7FE0000, 0x20000, 2),
    (0xFFFC0000, 0x40000, 2),
]
