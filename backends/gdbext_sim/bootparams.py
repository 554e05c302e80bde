"""A Linux ``struct boot_params`` with an e820 map, as a boot loader leaves it in memory.

Written with the declaration the reader uses (:mod:`gdbext.formats.bootparams`), so a simulated
machine or a test can hold the map that ``heap --memmap e820`` finds.

>>> from gdbext.linux.e820 import parse_boot_params
>>> blob = boot_params([(0x0, 0x9FC00, 1), (0x100000, 0x7EE0000, 1)])
>>> [(hex(e.addr), e.kind) for e in parse_boot_params(blob, 0x7000).entries]
[('0x0', 'Usable'), ('0x100000', 'Usable')]
"""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.formats.bootparams import BOOT_FLAG_VALUE, BOOT_PARAMS, E820_ENTRY, SETUP_MAGIC

#: An e820 entry: ``(addr, size, type)``.
E820Tuple = tuple[int, int, int]


def boot_params(
    entries: Sequence[E820Tuple],
    *,
    count: int | None = None,
    magic: bytes = SETUP_MAGIC,
    version: int = 0x020F,
) -> bytes:
    """The 4 KiB of a boot_params whose e820 table holds ``entries`` (at most 128);
    ``count``, if given, is written as ``e820_entries`` instead of their number (masked to its
    byte), and ``magic`` as the setup header's."""
    table = b"".join(E820_ENTRY.pack(addr=a, size=s, type=t) for a, s, t in entries)
    return BOOT_PARAMS.pack(
        e820_entries=(len(entries) if count is None else count) & 0xFF,
        boot_flag=BOOT_FLAG_VALUE,
        jump=0,
        header=magic,
        version=version,
        e820_table=table,
    )
