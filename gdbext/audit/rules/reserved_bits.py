"""Rule ``reserved-bits``: entries the MMU faults on, tables outside RAM, leaves outside RAM.

**Entries that fault** (high). The shared walk does not follow, and reports as anomalies,
present entries with reserved bits set: address bits at or above MAXPHYADDR, NX without
EFER.NXE, the reserved low bits of a 2 MiB or 1 GiB leaf (13..20, 13..29), and PS (HUGE_PAGE)
in a PML4 or PML5 entry. Any access through such an entry raises #PF with the RSVD error code:
memory the OS means to be mapped is not (on a live kernel, a crash waiting for the first
access). Consecutive entries of one table with the same fault are one finding.

**Tables outside RAM** (high): an entry that links a table the target cannot read from RAM
(outside every RAM range), or a reachable table frame outside the target's RAM ranges (a
live target reads device memory too): the MMU would read entries from device memory or open
bus. A table that is in RAM but not in the dump (kdump's excluded pages) is **info**: what it
maps was not audited.

**Leaves outside RAM** (when the target knows its RAM: dumps from their segments, the
simulator from its scenario, live GDB from QEMU's memory tree). Mapping device memory is
legitimate, and how it is mapped decides the severity:

- **info**, *device memory mapped uncached*: a memory type other than write-back (PWT or PCD
  set: PAT entries 1-3 and 5-7, which are WC, UC-, UC, WP and WT under Linux's PAT, and WT,
  UC-, UC under the power-on PAT). Named when the frame is a well-known one: the local APIC
  (0xfee00000), I/O APIC (0xfec00000), HPET (0xfed00000).
- **info**, *the legacy ISA range*: frames in 0xa0000-0xfffff (VGA window, option and BIOS
  ROMs) that the direct map covers whatever its memory type: Linux maps the first 1 MiB
  whole (``init_memory_mapping(0, ISA_END_ADDRESS)``) and the fixed-range MTRRs decide its
  caching.
- **low**, *cacheable mapping outside RAM*: write-back (PAT entry 0 or 4, the same under both
  PATs) on a frame that is not RAM: speculative and cached accesses to device or absent
  memory (machine checks on some platforms), or an entry whose address is garbage.
- **medium**, *executable mapping outside RAM*: code fetched from a device or ROM (an
  attacker-controlled BAR, say), whatever the memory type.

On the three committed dumps (QEMU, 128 MiB) every finding is info: the direct map's
0xa0000-0xbffff (the VGA window between the two RAM segments), the HPET (mapped twice, PCD),
the I/O APIC and the local APIC (fixmap, PCD|PWT); PTI's user PGD maps nothing outside RAM.

Checked in the selected table and, under PTI, in both halves of the pair; a finding of the
user PGD identical to one of the kernel PGD (shared tables) is reported once.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

from gdbext.addr import AddrRange
from gdbext.audit.context import AuditContext
from gdbext.audit.evidence import raw_path, step_text
from gdbext.audit.model import Finding, Severity, once_per_table
from gdbext.audit.rules.user_kernel import table_names
from gdbext.audit.spans import LeafSpan, repeats_text
from gdbext.audit.views import AuditView
from gdbext.flags import HUGE_PAGE, NO_EXECUTE, perm_text
from gdbext.geometry import SIZE_4K, entry_span, level_name
from gdbext.units import plural
from gdbext.x86.entries import link_address
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import Anomaly

#: Page-attribute bits of a leaf: PWT, PCD, and PAT (bit 7 of a 4 KiB leaf, 12 of a large one).
PWT, PCD = 1 << 3, 1 << 4
PAT_4K, PAT_LARGE = 1 << 7, 1 << 12
#: The legacy ISA range that Linux's direct map always covers.
ISA = AddrRange(0xA0000, 0x100000)
#: Well-known device frames (x86 PC platform defaults).
DEVICES = {0xFEE00000: "local APIC", 0xFEC00000: "I/O APIC", 0xFED00000: "HPET"}

_ANOMALY_SEVERITY = {
    "reserved-bits": Severity.HIGH,
    "huge-page-forbidden": Severity.HIGH,
    "table-outside-ram": Severity.HIGH,
    "table-not-captured": Severity.INFO,
}


def memory_type_bits(entry: int, page_size: int) -> tuple[bool, bool, bool]:
    """``(PWT, PCD, PAT)`` of a leaf entry.

    >>> memory_type_bits(0x8000000000000173, 4096)
    (False, True, False)
    """
    pat = PAT_4K if page_size == SIZE_4K else PAT_LARGE
    return bool(entry & PWT), bool(entry & PCD), bool(entry & pat)


def write_back(entry: int) -> bool:
    """True for PAT entries 0 and 4, write-back under Linux's PAT and the power-on one."""
    return not entry & (PWT | PCD)


def describe_bits(bits: int, pt: X86PageTable) -> str:
    """What reserved bits ``bits`` are, for a message.

    >>> from gdbext_sim.memory import SparsePhysMemory
    >>> pt = X86PageTable(SparsePhysMemory(1 << 20), 0, nxe=False, max_phys_bits=39)
    >>> describe_bits((1 << 63) | (1 << 40), pt)
    'address bits at or above MAXPHYADDR 39; NX without EFER.NXE'
    """
    parts: list[str] = []
    above = bits & pt.rules.phys_reserved
    if above:
        parts.append(f"address bits at or above MAXPHYADDR {pt.max_phys_bits}")
    if bits & NO_EXECUTE and not pt.nxe:
        parts.append("NX without EFER.NXE")
    low = bits & ((1 << 30) - 1) & ~0xFFF
    if low:
        parts.append("reserved low bits of a large page")
    if bits & HUGE_PAGE and not low and not above:
        parts.append("PS in a PML4/PML5 entry")
    return "; ".join(parts) or "reserved bits"


@dataclass
class _Piece:
    """Part of a leaf span whose frames lie outside RAM, with its class."""

    span: LeafSpan
    vaddr: int
    paddr: int
    size: int
    severity: Severity
    what: str

    @property
    def end(self) -> int:
        return self.vaddr + self.size

    def extends(self, other: _Piece) -> bool:
        a, b = self.span.run, other.span.run
        return (
            not self.span.reps
            and not other.span.reps
            and self.end == other.vaddr
            and self.paddr + self.size == other.paddr
            and self.severity == other.severity
            and self.what == other.what
            and (a.user, a.writable, a.executable) == (b.user, b.writable, b.executable)
        )


def outside(start: int, end: int, ram: Sequence[AddrRange]) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` outside the sorted, merged ``ram`` ranges.

    >>> outside(0x9F000, 0xC1000, [AddrRange(0, 0xA0000), AddrRange(0xC0000, 0x8000000)])
    [(655360, 786432)]
    """
    out: list[tuple[int, int]] = []
    i = max(0, bisect.bisect_right([r.start for r in ram], start) - 1)
    pos = start
    while pos < end:
        if i >= len(ram) or ram[i].start >= end:
            out.append((pos, end))
            break
        r = ram[i]
        i += 1
        if r.end <= pos:
            continue
        if r.start > pos:
            out.append((pos, r.start))
        pos = max(pos, r.end)
    return out


class ReservedBitsRule:
    id = "reserved-bits"
    severity = Severity.HIGH
    summary = "entries that fault (reserved bits), tables outside RAM; leaves outside RAM"

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        found: list[Finding] = []
        for view in ctx.views:
            found.extend(self._anomalies(ctx, view))
            if ctx.ram is not None:
                found.extend(self._tables_outside_ram(ctx, view))
                found.extend(self._leaves_outside_ram(ctx, view, ctx.ram))
        return once_per_table(found, table_names(ctx))

    # Entries the walk did not follow

    def _anomalies(self, ctx: AuditContext, view: AuditView) -> Iterator[Finding]:
        groups: list[list[Anomaly]] = []
        for a in view.anomalies:
            if a.kind not in _ANOMALY_SEVERITY:
                continue  # "recursive": a self-map is not a fault (pt-writable-alias's business)
            last = groups[-1][-1] if groups else None
            if (
                last is not None
                and (last.kind, last.level, last.table, last.index + 1)
                == (a.kind, a.level, a.table, a.index)
                and (a.kind != "reserved-bits" or last.detail == a.detail)
            ):
                groups[-1].append(a)
            else:
                groups.append([a])
        for group in groups:
            yield self._anomaly_finding(ctx, view, group)

    def _anomaly_finding(self, ctx: AuditContext, view: AuditView, group: list[Anomaly]) -> Finding:
        first = group[0]
        pt = view.pt
        n = len(group)
        span = entry_span(first.level)
        name = level_name(first.level)
        entries = f"{n} {name} entr{'ies' if n > 1 else 'y'}"
        table = link_address(first.entry, pt.rules.level(first.level))
        if first.kind == "reserved-bits":
            bits = int(first.detail.removeprefix("bits "), 16) if first.detail else 0
            message = (
                f"{entries} with reserved bits 0x{bits:x} set ({describe_bits(bits, pt)}): "
                "any access through them faults (#PF, RSVD)"
            )
        elif first.kind == "huge-page-forbidden":
            message = f"{entries} with PS (HUGE_PAGE) set, reserved at this level: accesses fault"
        elif first.kind == "table-outside-ram":
            message = (
                f"{entries} link{'' if n > 1 else 's'} a table outside RAM (0x{table:x}): the "
                "MMU would read entries from non-RAM"
            )
        else:
            message = (
                f"{entries} link{'' if n > 1 else 's'} a table not in the dump (0x{table:x}): "
                "what it maps was not audited"
            )
        evidence = [step_text(s) for s in raw_path(pt, first.vaddr, first.level)]
        if n > 1:
            evidence.append(f"entries {first.index}..{group[-1].index} of table 0x{first.table:x}")
        found = ctx.finding(
            self,
            None,  # the walk to it faults: the evidence is the path read again
            message,
            vaddr=first.vaddr,
            end=group[-1].vaddr + span,
            pages=n * span // SIZE_4K,
            severity=_ANOMALY_SEVERITY[first.kind],
            evidence=evidence,
        )
        return dataclasses.replace(found, root=view.name)

    # Tables outside RAM that the walk could read (a live target reads device memory too)

    def _tables_outside_ram(self, ctx: AuditContext, view: AuditView) -> Iterator[Finding]:
        reported = {
            link_address(a.entry, view.pt.rules.level(a.level))
            for a in view.anomalies
            if a.kind in ("table-outside-ram", "table-not-captured")
        }
        for frame, level in sorted(view.tables.items()):
            if frame in reported or ctx.in_ram(frame, frame + SIZE_4K):
                continue
            found = ctx.finding(
                self,
                None,
                f"{level_name(level)} table at 0x{frame:x} lies outside RAM: the MMU reads "
                "entries from non-RAM",
                paddr=frame,
                paddr_end=frame + SIZE_4K,
            )
            yield dataclasses.replace(found, root=view.name)

    # Leaves outside RAM

    def _leaves_outside_ram(
        self, ctx: AuditContext, view: AuditView, ram: Sequence[AddrRange]
    ) -> Iterator[Finding]:
        pieces: list[_Piece] = []
        for span in view.spans:
            for lo, hi in outside(span.paddr, span.paddr_end, ram):
                for plo, phi in _split(lo, hi, ISA):
                    severity, what = _classify(span, plo, phi)
                    v = span.vaddr + (plo - span.paddr)
                    pieces.append(_Piece(span, v, plo, phi - plo, severity, what))
        groups: list[list[_Piece]] = []
        for piece in pieces:
            if groups and groups[-1][-1].extends(piece):
                groups[-1].append(piece)
            else:
                groups.append([piece])
        for group in groups:
            yield self._leaf_finding(ctx, view, group)

    def _leaf_finding(self, ctx: AuditContext, view: AuditView, group: list[_Piece]) -> Finding:
        first, last = group[0], group[-1]
        span = first.span
        run = span.run
        size = sum(p.size for p in group)
        pages = size // SIZE_4K * span.copies
        end = last.end + (span.last_end - span.end)  # copies included, as group_range does
        pwt, pcd, pat = memory_type_bits(run.entry, run.page_size)
        kind = "write-back" if write_back(run.entry) else "not write-back"
        evidence = [
            f"memory type: PWT={int(pwt)} PCD={int(pcd)} PAT={int(pat)} ({kind})",
            f"frames 0x{first.paddr:x}-0x{last.paddr + last.size:x} are in no RAM range",
        ]
        if span.reps:
            evidence.append(repeats_text(span))
        access = perm_text(run.user, run.writable, run.executable)
        return ctx.finding(
            self,
            view,
            f"{pages} page{plural(pages)} ({access}) outside RAM: {first.what}",
            cause=f"pages ({access}) outside RAM: {first.what}",
            vaddr=first.vaddr,
            end=end,
            paddr=first.paddr,
            paddr_end=last.paddr + last.size,
            user=run.user,
            writable=run.writable,
            executable=run.executable,
            pages=pages,
            severity=first.severity,
            evidence=evidence,
        )


def _split(lo: int, hi: int, cut: AddrRange) -> list[tuple[int, int]]:
    """``[lo, hi)`` cut at ``cut``'s bounds."""
    points = sorted({lo, hi, *(p for p in (cut.start, cut.end) if lo < p < hi)})
    return list(pairwise(points))


def _classify(span: LeafSpan, lo: int, hi: int) -> tuple[Severity, str]:
    """Severity and explanation of frames ``[lo, hi)`` of ``span`` that are not RAM."""
    run = span.run
    if run.executable:
        return Severity.MEDIUM, "executable: code fetched from a device or ROM"
    if ISA.start <= lo and hi <= ISA.end:
        return Severity.INFO, "the legacy ISA range (the direct map covers the first 1 MiB)"
    if not write_back(run.entry):
        device = DEVICES.get(lo & ~0xFFF)
        name = f"{device} " if device is not None and hi - lo == SIZE_4K else ""
        return Severity.INFO, f"{name}device memory, mapped uncached"
    return Severity.LOW, "cacheable (write-back) mapping of memory that is not RAM"


RULES = (ReservedBitsRule(),)
