"""makedumpfile's kdump-compressed ("diskdump") format: headers and page descriptors.

Little-endian, 64-bit layouts (the 32-bit ones are not declared: no reader uses them), from
makedumpfile's ``diskdump_mod.h`` and ``makedumpfile.h``, and the flattened form's big-endian
headers.
"""

from __future__ import annotations

from typing import Final

from gdbext.formats.layout import Layout

#: ``disk_dump_header`` (64-bit), 464 bytes. ``utsname`` is six 65-byte strings (sysname,
#: nodename, release, version, machine, domainname); ``max_mapnr`` is the 32-bit count
#: (``kdump_sub_header.max_mapnr_64`` from version 6).
DISK_DUMP_HEADER: Final = Layout(
    "disk_dump_header",
    [
        ("signature", "8s"),
        ("header_version", "i"),
        ("utsname", "390s"),
        ("", "6x"),
        ("timestamp", "16s"),
        ("status", "I"),
        ("block_size", "i"),
        ("sub_hdr_size", "i"),
        ("bitmap_blocks", "I"),
        ("max_mapnr", "I"),
        ("total_ram_blocks", "I"),
        ("device_blocks", "I"),
        ("written_blocks", "I"),
        ("current_cpu", "I"),
        ("nr_cpus", "i"),
    ],
)
KDUMP_SIGNATURE: Final = b"KDUMP   "
UTSNAME_FIELD: Final = 65
UTSNAME_FIELDS: Final = ("sysname", "nodename", "release", "version", "machine", "domainname")

#: ``kdump_sub_header`` (64-bit), 104 bytes, at file offset ``block_size``. Later header
#: versions define more of it: :data:`SUB_HEADER_FIELDS_BY_VERSION`.
SUB_HEADER: Final = Layout(
    "kdump_sub_header",
    [
        ("phys_base", "Q"),
        ("dump_level", "i"),
        ("split", "i"),
        ("start_pfn", "Q"),  # v2+
        ("end_pfn", "Q"),
        ("offset_vmcoreinfo", "Q"),  # v3+
        ("size_vmcoreinfo", "Q"),
        ("offset_note", "Q"),  # v4+
        ("size_note", "Q"),
        ("offset_eraseinfo", "Q"),  # v5+
        ("size_eraseinfo", "Q"),
        ("start_pfn_64", "Q"),  # v6+
        ("end_pfn_64", "Q"),
        ("max_mapnr_64", "Q"),
    ],
)
#: How many of :data:`SUB_HEADER`'s fields each header version defines.
SUB_HEADER_FIELDS_BY_VERSION: Final = {1: 3, 2: 5, 3: 7, 4: 9, 5: 11, 6: 14}
#: How many bytes of the sub-header each header version defines.
SUB_HEADER_SIZE_BY_VERSION: Final = {
    version: SUB_HEADER.end(SUB_HEADER.names[count - 1])
    for version, count in SUB_HEADER_FIELDS_BY_VERSION.items()
}

#: ``page_desc``, 24 bytes, one per dumped page: ``offset`` is absolute in the file.
PAGE_DESC: Final = Layout(
    "page_desc", [("offset", "Q"), ("size", "I"), ("flags", "I"), ("page_flags", "Q")]
)

#: The flattened form's header (big-endian), padded with zeros to :data:`FLAT_HEADER_SIZE`.
FLAT_HEADER: Final = Layout(
    "makedumpfile_header", [("signature", "16s"), ("type", "q"), ("version", "q")], ">"
)
FLAT_HEADER_SIZE: Final = 4096
FLAT_SIGNATURE: Final = b"makedumpfile\0\0\0\0"
FLAT_TYPE: Final = 1
FLAT_VERSION: Final = 1
#: A flattened record's header (big-endian); ``{-1, -1}`` ends the records.
FLAT_RECORD: Final = Layout("makedumpfile_data_header", [("offset", "q"), ("size", "q")], ">")
FLAT_END: Final = -1
