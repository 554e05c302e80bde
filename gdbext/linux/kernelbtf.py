"""The kernel's BTF, found in its image's read-only data.

A kernel built with ``CONFIG_DEBUG_INFO_BTF=y`` links its BTF blob (``.BTF``, between
``__start_BTF`` and ``__stop_BTF``) into the image's read-only data, so a dump that holds the
image holds it. Without symbols, :func:`find_kernel_btf` searches the image's read-only pages,
as the kernel's own tables map them (the non-executable ones first), for the
magic and version (``9f eb 01``); a hit counts only when its header's sections fit, the whole
blob parses and it has a ``task_struct``. Module BTF (split BTF, in the modules area) is not
looked for: the kernel's own types are all the task list needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from gdbext.addr import AddrRange
from gdbext.errors import BtfError, GdbextError, NotFoundError
from gdbext.flags import ACCESSED_DIRTY
from gdbext.formats.btf import BTF_HEADER, BTF_MAGIC, BTF_VERSION
from gdbext.linux.btf import Btf
from gdbext.linux.kernelimage import KERNEL_IMAGE_VA
from gdbext.mapper import PhysMapper, readable_ranges
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun

__all__ = ["MAX_BTF_SIZE", "find_kernel_btf", "kernel_btf_candidates"]

#: The largest blob believed (Debian's 6.1 kernel: 4.4 MB; a header that says more is not one).
MAX_BTF_SIZE: Final = 64 << 20
#: What a blob starts with: the magic (little-endian) and version 1.
_SIGNATURE: Final = BTF_MAGIC.to_bytes(2, "little") + bytes([BTF_VERSION])
#: Bytes read at once while searching.
_CHUNK: Final = 1 << 20


def _hits(mapper: PhysMapper, ranges: list[AddrRange]) -> Iterator[int]:
    """Physical addresses in ``ranges`` where :data:`_SIGNATURE` starts, in order."""
    overlap = len(_SIGNATURE) - 1
    for r in readable_ranges(mapper, ranges):
        at = r.start
        while at < r.end:
            size = min(_CHUNK + overlap, r.end - at)
            try:
                data = mapper.read(at, size)
            except GdbextError:
                at += _CHUNK
                continue
            i = data.find(_SIGNATURE)
            while i >= 0:
                if i < _CHUNK:
                    yield at + i
                i = data.find(_SIGNATURE, i + 1)
            at += _CHUNK


def kernel_btf_candidates(pt: X86PageTable) -> list[AddrRange]:
    """The physical ranges searched, in order: the kernel image's read-only, non-executable
    leaves in ``pt`` (the kernel's own tables; read-only data, where ``.BTF`` is), then its
    read-only executable ones (text, in case the data is mapped so), neighbours joined; all
    of the image when nothing of it is read-only. Searching data first matters on slow read
    paths (a gdbstub): the text is as large as the data."""
    data: list[AddrRange] = []
    text: list[AddrRange] = []
    every: list[AddrRange] = []
    for r in pt.iter_runs(KERNEL_IMAGE_VA, ignore=ACCESSED_DIRTY):
        if type(r) is not LeafRun:
            continue
        where = every if r.writable else text if r.executable else data
        got = AddrRange(r.paddr, r.paddr + r.size)
        if where and where[-1].end == got.start:
            where[-1] = AddrRange(where[-1].start, got.end)
        else:
            where.append(got)
    return data + text or every


def find_kernel_btf(pt: X86PageTable, mapper: PhysMapper | None = None) -> Btf:
    """The kernel's BTF, parsed; ``origin`` is its physical address.

    :param pt: the kernel's own page tables (their kernel-image mapping says where to look).
    :param mapper: where to read (default: ``pt``'s).
    :raises NotFoundError: when no blob in the image parses and has ``task_struct``; the
        message says what the candidates lacked.
    """
    mapper = mapper or pt.mapper
    ranges = kernel_btf_candidates(pt)
    if not ranges:
        raise NotFoundError("no kernel image is mapped in the kernel's tables: no BTF to find")
    rejected: list[str] = []
    for paddr in _hits(mapper, ranges):
        try:
            header = BTF_HEADER.unpack(mapper.read(paddr, BTF_HEADER.size))
            size = header["hdr_len"] + max(
                header["type_off"] + header["type_len"], header["str_off"] + header["str_len"]
            )
            if not BTF_HEADER.size <= header["hdr_len"] <= size <= MAX_BTF_SIZE:
                continue
            btf = Btf.parse(mapper.read(paddr, size), paddr)
            btf.find("task_struct")
        except BtfError as exc:
            rejected.append(str(exc))
            continue
        except GdbextError:
            continue
        return btf
    where = ", ".join(f"0x{r.start:x}-0x{r.end:x}" for r in ranges[:4])
    why = f"; {len(rejected)} candidate(s) rejected, first: {rejected[0]}" if rejected else ""
    raise NotFoundError(
        f"no BTF with a task_struct in the kernel image's read-only data ({where}"
        f"{', ...' if len(ranges) > 4 else ''}): a kernel built without "
        f"CONFIG_DEBUG_INFO_BTF, or a dump that left its pages out{why}"
    )
