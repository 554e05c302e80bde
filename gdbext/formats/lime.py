"""LiME memory images: the header in front of each physical range (``lime.h``)."""

from __future__ import annotations

from typing import Final

from gdbext.formats.layout import Layout

#: ``lime_mem_range_header``, 32 bytes, little-endian; ``s_addr`` and ``e_addr`` are both
#: inclusive.
LIME_HEADER: Final = Layout(
    "lime_mem_range_header",
    [("magic", "I"), ("version", "I"), ("s_addr", "Q"), ("e_addr", "Q"), ("", "8x")],
)
LIME_MAGIC: Final = 0x4C694D45
#: The magic as it starts a file ("EMiL").
LIME_MAGIC_BYTES: Final = LIME_MAGIC.to_bytes(4, "little")
LIME_VERSION: Final = 1
#: AVML (Microsoft's variant): snappy-framed ranges.
AVML_VERSION: Final = 2
