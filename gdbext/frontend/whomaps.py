"""``who-maps`` and ``aliases``: physical frames to the virtual addresses that map them.

One collapsed walk of the selected root (:class:`~gdbext.audit.views.TableWalk`) gives its
leaf spans (aliases kept as repetitions, not expanded); :class:`~gdbext.audit.revindex.
ReverseIndex` sorts them by physical address. The index is kept for the stop (a debugger's
second ``pt-who-maps`` only looks up). :func:`who_maps` answers one physical range;
:func:`aliases` lists the physical ranges mapped with different permissions or privilege,
ranked, with the Linux direct map's copies summed up in one :class:`DirectMapFact`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from gdbext.addr import AddrRange
from gdbext.audit.revindex import Place, ReverseIndex, place_of
from gdbext.errors import EXIT_NOT_FOUND, EXIT_OK, UsageError
from gdbext.frontend.commands import RootOptions, open_page_table, root_warnings, target_layout
from gdbext.linux.detect import labels_wanted
from gdbext.linux.layout import Layout
from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable

__all__ = [
    "AliasFinding",
    "AliasesResult",
    "DirectMapFact",
    "Hit",
    "SpaceHits",
    "WhoMapsResult",
    "aliases",
    "reverse_index",
    "who_maps",
    "who_maps_everywhere",
]


@dataclass(frozen=True)
class Hit:
    """One mapping of (part of) the asked range, and the Linux region of its first copy."""

    place: Place
    region: str | None = None


@dataclass(frozen=True)
class SpaceHits:
    """The user-half mappings of the range in one address space (``roots``' id), with the
    tasks that own it (PID, ``comm``) and its exec identity (argv, or the file name)."""

    space: str
    owners: tuple[tuple[int, str], ...]
    identity: str | None
    hits: Sequence[Hit]


@dataclass(frozen=True)
class WhoMapsResult:
    """Every virtual address of the root ``root`` that maps ``[start, end)``; with every
    address space asked (``--all-roots``), ``hits`` are the kernel half's (the kernel's own
    table: every process shares it) and :attr:`spaces` each address space's user half."""

    start: int
    end: int
    levels: int
    root: int
    hits: Sequence[Hit]
    warnings: Sequence[str] = ()
    spaces: Sequence[SpaceHits] | None = None

    @property
    def exit_status(self) -> int:
        """0 when something maps the range, else 1."""
        found = self.hits or any(s.hits for s in self.spaces or ())
        return EXIT_OK if found else EXIT_NOT_FOUND

    @property
    def first_vaddr(self) -> int | None:
        """The lowest virtual address found (GDB's ``$pt_virt``)."""
        return self.hits[0].place.vaddr if self.hits else None


def reverse_index(target: Target, pt: X86PageTable) -> ReverseIndex:
    """The reverse index of ``pt``: one collapsed walk, kept for the stop when the target has
    a stop cache."""
    from gdbext.audit.views import TableWalk

    def make() -> ReverseIndex:
        return ReverseIndex(TableWalk(pt).spans)

    cache = target.stop_cache
    if cache is None:
        return make()
    key = ("reverse-index", pt.root, pt.levels, pt.nxe, pt.max_phys_bits)
    index: ReverseIndex = cache.get(key, make)
    return index


def _layout(target: Target, pt: X86PageTable) -> Layout | None:
    if not labels_wanted("auto", target.facts):
        return None
    return target_layout(target, pt)


def _region(layout: Layout | None, vaddr: int) -> str | None:
    return None if layout is None else layout.label(vaddr).name


def who_maps(target: Target, prange: AddrRange, root: RootOptions | None = None) -> WhoMapsResult:
    """Every mapping of the physical range ``prange`` in the selected root."""
    if prange.end <= prange.start:
        raise UsageError(f"who-maps: the range {prange} is empty")
    if prange.end > 1 << 52:
        raise UsageError(f"who-maps: 0x{prange.end - 1:x} is beyond any physical address")
    root = RootOptions() if root is None else root
    pt = open_page_table(target, root)
    places = reverse_index(target, pt).lookup(prange.start, prange.end)
    layout = _layout(target, pt) if places else None
    hits = [Hit(p, _region(layout, p.vaddr)) for p in places]
    return WhoMapsResult(
        prange.start, prange.end, pt.levels, pt.root, hits, root_warnings(pt, root)
    )


def who_maps_everywhere(
    target: Target, prange: AddrRange, root: RootOptions | None = None
) -> WhoMapsResult:
    """Every mapping of ``prange`` in every address space ``roots`` finds: the kernel half
    once, from the kernel's own table, then each address space's user half (with PTI, from
    its user table: what the process runs on in user mode)."""
    from gdbext.frontend.roots import RootsOptions, roots
    from gdbext.linux.layout import params

    root = RootOptions() if root is None else root
    found = roots(target, RootsOptions(root=root))
    kpt = open_page_table(
        target, RootOptions(cpu=root.cpu, levels=root.levels, cr3=found.kernel_root)
    )
    user_end = params(kpt.levels).user_end
    kernel = who_maps(
        target,
        prange,
        dataclasses.replace(root, cr3=found.kernel_root, kernel=False, user_pgd=False),
    )
    layout = _layout(target, kpt)
    spaces = []
    for space in found.spaces:
        pt = kpt.with_root(space.user_root if space.user_root is not None else space.root)
        places = reverse_index(target, pt).lookup(prange.start, prange.end)
        hits = [Hit(p, _region(layout, p.vaddr)) for p in places if p.vaddr < user_end]
        ident = space.identity
        who = None
        if ident is not None:
            who = " ".join(ident.argv) if ident.argv else ident.filename
        spaces.append(SpaceHits(space.id, space.owners, who, hits))
    return WhoMapsResult(
        prange.start,
        prange.end,
        kpt.levels,
        kpt.root,
        [h for h in kernel.hits if h.place.vaddr >= user_end],
        (*found.warnings, *kernel.warnings),
        tuple(spaces),
    )


# --- aliases ---------------------------------------------------------------------------------

#: Finding kinds, most serious first.
WRITABLE_EXECUTABLE = "writable and executable"
USER_KERNEL = "user and kernel"
OTHER_PERMISSIONS = "other permissions"
KINDS = (WRITABLE_EXECUTABLE, USER_KERNEL, OTHER_PERMISSIONS)


def _kind(perms: set[tuple[bool, bool, bool]]) -> str:
    if any(w for _, w, _ in perms) and any(x for _, _, x in perms):
        return WRITABLE_EXECUTABLE
    if len({u for u, _, _ in perms}) > 1:
        return USER_KERNEL
    return OTHER_PERMISSIONS


@dataclass(frozen=True)
class AliasFinding:
    """Physical ``[start, end)`` mapped at several places with different permissions."""

    start: int
    end: int
    kind: str
    places: Sequence[Hit]


@dataclass
class DirectMapFact:
    """The direct map's copies of frames mapped elsewhere with other permissions, in sum."""

    base: int
    ranges: int = 0
    size: int = 0
    #: Of those, ranges executable elsewhere and writable in the direct map.
    writable_of_executable: int = 0


@dataclass(frozen=True)
class AliasesResult:
    levels: int
    root: int
    findings: Sequence[AliasFinding]
    direct_map: DirectMapFact | None = None
    warnings: Sequence[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return EXIT_OK


def _key(place: Place) -> tuple[object, ...]:
    return (place.vaddr - place.paddr, place.perm, place.reps)


def aliases(target: Target, root: RootOptions | None = None) -> AliasesResult:
    """The physical ranges the selected root maps more than once with different permissions
    or privilege: W/X splits first, then user/kernel, then the rest; the Linux direct map's
    copies (``VA = page_offset_base + PA``) are left out of the findings and summed up in
    :attr:`AliasesResult.direct_map`."""
    root = RootOptions() if root is None else root
    pt = open_page_table(target, root)
    index = reverse_index(target, pt)
    layout = _layout(target, pt)
    base = layout.bases["page_offset_base"].value if layout is not None else None
    fact = DirectMapFact(base) if base is not None else None
    raw: list[tuple[int, int, str, list[Place]]] = []
    for lo, hi, spans in index.shared():
        places = [place_of(s, lo, hi) for s in spans]
        direct = [
            p for p in places if base is not None and not p.reps and p.vaddr - p.paddr == base
        ]
        others = [p for p in places if p not in direct]
        perms = {p.perm for p in others}
        if len(perms) > 1:
            key = [_key(p) for p in others]
            prev = raw[-1] if raw else None
            if prev is not None and prev[1] == lo and [_key(p) for p in prev[3]] == key:
                raw[-1] = (prev[0], hi, prev[2], prev[3])
            else:
                raw.append((lo, hi, _kind(perms), others))
        elif fact is not None and direct and perms and {p.perm for p in direct} != perms:
            fact.ranges += 1
            fact.size += hi - lo
            if any(p.writable for p in direct) and any(p.executable for p in others):
                fact.writable_of_executable += 1
    raw.sort(key=lambda r: (KINDS.index(r[2]), r[0]))
    findings = [
        AliasFinding(lo, hi, kind, [Hit(_clip(p, lo, hi), _region(layout, p.vaddr)) for p in ps])
        for lo, hi, kind, ps in raw
    ]
    return AliasesResult(pt.levels, pt.root, findings, fact, root_warnings(pt, root))


def _clip(place: Place, lo: int, hi: int) -> Place:
    """``place`` widened over a merged range ``[lo, hi)`` that starts at its ``paddr``."""
    return place._replace(vaddr=place.vaddr + (lo - place.paddr), paddr=lo, size=hi - lo)
