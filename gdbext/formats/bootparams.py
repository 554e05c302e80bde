"""Linux's ``struct boot_params`` (the x86 "zero page") and its e820 entries.

From ``arch/x86/include/uapi/asm/bootparam.h``: the fields gdbext reads are named, the rest is
padding that keeps them at the kernel's offsets (``e820_entries`` at 0x1e8, the setup header's
``boot_flag`` at 0x1fe, its magic ``header`` at 0x202, ``e820_table`` at 0x2d0). Read by
:mod:`gdbext.linux.e820`, written by the simulator and the tests.

>>> hex(BOOT_PARAMS.size), hex(BOOT_PARAMS.offset("e820_entries")), E820_ENTRY.size
('0x1000', '0x1e8', 20)
>>> E820_ENTRY.unpack(E820_ENTRY.pack(addr=0x100000, size=0x7EE0000, type=1))["size"]
133038080
"""

from __future__ import annotations

from typing import Final

from gdbext.formats.layout import Layout

#: ``struct boot_e820_entry`` (packed): ``size`` bytes at ``addr`` of e820 ``type`` (1: RAM).
E820_ENTRY: Final = Layout("boot_e820_entry", [("addr", "Q"), ("size", "Q"), ("type", "I")])
#: ``E820_MAX_ENTRIES_ZEROPAGE``: the entries ``e820_table`` has room for.
E820_MAX_ENTRIES: Final = 128

#: ``struct boot_params``, 4 KiB.
BOOT_PARAMS: Final = Layout(
    "boot_params",
    [
        ("", "488x"),  # screen_info ... edid_info, efi_info, alt_mem_k, scratch, ...
        ("e820_entries", "B"),  # 0x1e8: how many entries of e820_table are valid
        ("", "21x"),  # eddbuf_entries ... hdr.root_dev
        ("boot_flag", "H"),  # 0x1fe: hdr.boot_flag, 0xAA55
        ("jump", "H"),  # 0x200: hdr.jump
        ("header", "4s"),  # 0x202: hdr.header, the magic "HdrS"
        ("version", "H"),  # 0x206: hdr.version, the boot protocol version (e.g. 0x020F)
        ("", "200x"),  # the rest of the setup header, edd_mbr_sig_buffer, ...
        ("e820_table", f"{E820_MAX_ENTRIES * E820_ENTRY.size}s"),  # 0x2d0
        ("", "816x"),  # _pad8, eddbuf, _pad9
    ],
)
#: ``hdr.header`` of a setup header.
SETUP_MAGIC: Final = b"HdrS"
#: ``hdr.boot_flag`` of a bootable image.
BOOT_FLAG_VALUE: Final = 0xAA55
