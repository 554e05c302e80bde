"""``walk --format ptdump``: Linux's ``/sys/kernel/debug/page_tables`` lines.

Expected lines are written out by hand from the format (``paging-semantics.md`` 6.1 and the
kernel's ``note_page``/``printk_prot``): ``0x%016lx-0x%016lx   %9lu%c `` then the 30 columns of
flags (``USR RW PWT PCD PSE PAT GLB NX`` or blanks, ``ro``, ``x``) and the level name. Larger
outputs are compared with :func:`reference_ptdump`, a plain model of the kernel's walk written
here: one ``note_page`` per entry, every shared table walked again, no shortcuts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from depth import kernels

from gdbext import cli
from gdbext.errors import UsageError
from gdbext.frontend import commands
from gdbext.linux.detect import detect_layout
from gdbext.linux.layout import Layout
from gdbext.linux.ptdump import PtdumpWalk
from gdbext.mapper import PhysMapper, read_table
from gdbext.plugin.facts import KernelFacts
from gdbext.plugin.host import Host
from gdbext.render.ptdump import prot_flags, ptdump_line, render_walk, size_field
from gdbext_sim.scenario import build_machine

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "scenarios" / "demo.json"
KERNELS = ROOT / "fixtures" / "kernels"
HOLE = " " * 30


def run(argv: list[str]) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = cli.run(argv, Host.create(), out)
    return status, out.getvalue().split("\n")[:-1]


def scenario(tmp_path: Path, doc: dict[str, Any], name: str = "s.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


# --- the line format ----------------------------------------------------------------------


def test_flag_tokens_each_alone() -> None:
    p = 0x1
    assert prot_flags(p, 4) == "    ro                     x  "
    assert prot_flags(p | 0x4, 4) == "USR ro                     x  "
    assert prot_flags(p | 0x2, 4) == "    RW                     x  "
    assert prot_flags(p | 0x8, 4) == "    ro PWT                 x  "
    assert prot_flags(p | 0x10, 4) == "    ro     PCD             x  "
    assert prot_flags(p | 0x80, 3) == "    ro         PSE         x  "
    assert prot_flags(p | 0x80, 2) == "    ro         PSE         x  "
    # Bit 7 of a PTE is PAT, not PSE.
    assert prot_flags(p | 0x80, 4) == "    ro             PAT     x  "
    # Bit 12 is PAT for pmd and pud (printk_prot tests it; see the PTE_FLAGS_MASK test).
    assert prot_flags(p | 0x1000, 3) == "    ro             PAT     x  "
    assert prot_flags(p | 0x1000, 4) == "    ro                     x  "
    assert prot_flags(p | 0x100, 4) == "    ro                 GLB x  "
    assert prot_flags(p | 1 << 63, 4) == "    ro                     NX "
    assert prot_flags(0x8000000000000FFF & ~0x80, 4) == "USR RW PWT PCD         GLB NX "
    assert prot_flags(0x8000000000000FFF, 3) == "USR RW PWT PCD PSE     GLB NX "
    # Not present: 30 blanks, whatever else is set.
    assert prot_flags(0x8000000000000FFE, 4) == HOLE
    assert all(len(prot_flags(v, lv)) == 30 for v in (0, 1, 0xFFF) for lv in range(5))


def test_size_units() -> None:
    assert size_field(4096) == "        4K"
    assert size_field(0x1FD000) == "     2036K"
    assert size_field(2 << 20) == "        2M"
    assert size_field(1 << 30) == "        1G"
    assert size_field(3 << 40) == "        3T"
    assert size_field(5 << 50) == "        5P"
    assert size_field(1 << 60) == "        1E"
    assert size_field(1 << 63) == "        8E"  # no unit past E
    assert size_field(1000) == "     1000B"
    assert size_field(1536 << 10) == "     1536K"
    assert size_field(123456789 << 40) == "123456789T"
    assert size_field(1234567890 << 40) == "1234567890T"  # %9lu widens, never cuts


def test_line() -> None:
    assert ptdump_line(0, 0x200000, 3, 0) == (
        "0x0000000000000000-0x0000000000200000           2M                               pmd"
    )
    assert ptdump_line(0xFFFFFFFFFF800000, 1 << 64, 3, 0) == (
        "0xffffffffff800000-0x0000000000000000           8M                               pmd"
    )
    assert ptdump_line(0xFFFFFFFF81000000, 0xFFFFFFFF81001000, 4, 0x101) == (
        "0xffffffff81000000-0xffffffff81001000           4K     ro                 GLB x  pte"
    )


# --- hand-built tables, every token, every level ------------------------------------------

#: 4-level tables whose raw entries are set by hand (see the expected lines below).
TOKENS: dict[str, Any] = {
    "levels": 4,
    "ram": "64M",
    "mappings": [
        {"vaddr": "0x200000", "paddr": "0x100000", "size": "4K", "count": 3,
         "flags": ["USER_ACCESSIBLE", "WRITABLE"]},
        {"vaddr": "0x40000000", "paddr": "0x200000", "size": "2M",
         "flags": ["WRITABLE", "GLOBAL", "NO_EXECUTE"]},
        {"vaddr": "0x8000000000", "paddr": "0x40000000", "size": "1G", "flags": ["NO_CACHE"]},
        {"vaddr": "0xffff888000000000", "paddr": "0x0", "size": "2M", "count": 2,
         "flags": ["WRITABLE", "GLOBAL", "NO_EXECUTE"]},
        {"vaddr": "0xffffffff81000000", "paddr": "0x1000000", "size": "4K", "flags": ["GLOBAL"]},
    ],
    "entries": [
        # P RW USR PWT PCD PAT(bit 7) GLB
        {"vaddr": "0x200000", "level": 1, "value": "0x10019f"},
        # P USR NX
        {"vaddr": "0x201000", "level": 1, "value": "0x8000000000101005"},
        # not present, bit 9 set: a series of its own, printed without flags
        {"vaddr": "0x202000", "level": 1, "value": "0x102200"},
        # 2 MiB: P RW PSE GLB NX and PAT (bit 12, a frame bit to PTE_FLAGS_MASK)
        {"vaddr": "0x40000000", "level": 2, "value": "0x8000000000201183"},
        # not present, not none, no PSE: not noted (the 2 MiB series runs on over it)
        {"vaddr": "0x40200000", "level": 2, "value": "0x2"},
        # ACCESSED|DIRTY only: pmd_none(), a hole
        {"vaddr": "0x40400000", "level": 2, "value": "0x60"},
    ],
}  # fmt: skip

TOKENS_PTDUMP = [
    "---[ User Space ]---",
    "0x0000000000000000-0x0000000000200000           2M                               pmd",
    "0x0000000000200000-0x0000000000201000           4K USR RW PWT PCD     PAT GLB x  pte",
    "0x0000000000201000-0x0000000000202000           4K USR ro                     NX pte",
    "0x0000000000202000-0x0000000000203000           4K                               pte",
    "0x0000000000203000-0x0000000000400000        2036K                               pte",
    "0x0000000000400000-0x0000000040000000        1020M                               pmd",
    "0x0000000040000000-0x0000000040400000           4M     RW         PSE     GLB NX pmd",
    "0x0000000040400000-0x0000000080000000        1020M                               pmd",
    "0x0000000080000000-0x0000008000000000         510G                               pud",
    "0x0000008000000000-0x0000008040000000           1G     ro     PCD PSE         x  pud",
    "0x0000008040000000-0x0000010000000000         511G                               pud",
    "0x0000010000000000-0xffff880000000000    16777095T                               pgd",
    "---[ Kernel Space ]---",
    "0xffff880000000000-0xffff888000000000         512G                               pgd",
    "---[ LDT remap ]---",
    "0xffff888000000000-0xffff888000200000           2M     RW         PSE     GLB NX pmd",
    "---[ Low Kernel Mapping ]---",
    "0xffff888000200000-0xffff888000400000           2M     RW         PSE     GLB NX pmd",
    "0xffff888000400000-0xffff888040000000        1020M                               pmd",
    "0xffff888040000000-0xffff890000000000         511G                               pud",
    "0xffff890000000000-0xffffc90000000000          64T                               pgd",
    "---[ vmalloc() Area ]---",
    "0xffffc90000000000-0xffffea0000000000          33T                               pgd",
    "---[ Vmemmap ]---",
    "0xffffea0000000000-0xfffffe0000000000          20T                               pgd",
    "---[ CPU entry Area ]---",
    "0xfffffe0000000000-0xffffff0000000000           1T                               pgd",
    "---[ ESPfix Area ]---",
    "0xffffff0000000000-0xffffff8000000000         512G                               pgd",
    "0xffffff8000000000-0xffffffef00000000         444G                               pud",
    "---[ EFI Runtime Services ]---",
    "0xffffffef00000000-0xffffffff80000000          66G                               pud",
    "---[ High Kernel Mapping ]---",
    "0xffffffff80000000-0xffffffff81000000          16M                               pmd",
    "0xffffffff81000000-0xffffffff81001000           4K     ro                 GLB x  pte",
    "0xffffffff81001000-0xffffffff81200000        2044K                               pte",
    "0xffffffff81200000-0xffffffffc0000000        1006M                               pmd",
    "---[ Modules ]---",
    "0xffffffffc0000000-0x0000000000000000           1G                               pud",
]


def test_every_token_and_level_by_hand(tmp_path: Path) -> None:
    status, lines = run(["walk", "--backend", "sim", "--scenario", scenario(tmp_path, TOKENS),
                         "--format", "ptdump"])  # fmt: skip
    assert status == 0
    assert lines == TOKENS_PTDUMP


def test_five_level_names(tmp_path: Path) -> None:
    # With LA57 the PML5 is ptdump's pgd and the PML4 its p4d.
    doc = {"levels": 5, "ram": "16M", "mappings": [
        {"vaddr": "0x1000", "paddr": "0x5000", "size": "4K", "flags": ["WRITABLE"]}]}  # fmt: skip
    status, lines = run(["walk", "--backend", "sim", "--scenario", scenario(tmp_path, doc),
                         "--format", "ptdump"])  # fmt: skip
    assert status == 0
    assert lines[:8] == [
        "---[ User Space ]---",
        "0x0000000000000000-0x0000000000001000           4K                               pte",
        "0x0000000000001000-0x0000000000002000           4K     RW                     x  pte",
        "0x0000000000002000-0x0000000000200000        2040K                               pte",
        "0x0000000000200000-0x0000000040000000        1022M                               pmd",
        "0x0000000040000000-0x0000008000000000         511G                               pud",
        "0x0000008000000000-0x0001000000000000      261632G                               p4d",
        "0x0001000000000000-0xff10000000000000    16715520T                               pgd",
    ]
    # One marker per note, as the kernel advances them: each pgd hole enters the next section.
    assert lines[8:] == [
        "---[ Kernel Space ]---",
        "0xff10000000000000-0xff11000000000000         256T                               pgd",
        "---[ LDT remap ]---",
        "0xff11000000000000-0xff12000000000000         256T                               pgd",
        "---[ Low Kernel Mapping ]---",
        "0xff12000000000000-0xffa0000000000000       36352T                               pgd",
        "---[ vmalloc() Area ]---",
        "0xffa0000000000000-0xffd4000000000000          13P                               pgd",
        "---[ Vmemmap ]---",
        "0xffd4000000000000-0x0000000000000000          11P                               pgd",
    ]


def test_range_and_filter(tmp_path: Path) -> None:
    path = scenario(tmp_path, TOKENS)
    status, lines = run(["walk", "--backend", "sim", "--scenario", path, "--format", "ptdump",
                         "--range", "0x201000-0x40400000"])  # fmt: skip
    assert status == 0
    assert lines == [
        "---[ User Space ]---",
        "0x0000000000201000-0x0000000000202000           4K USR ro                     NX pte",
        "0x0000000000202000-0x0000000000203000           4K                               pte",
        "0x0000000000203000-0x0000000000400000        2036K                               pte",
        "0x0000000000400000-0x0000000040000000        1020M                               pmd",
        "0x0000000040000000-0x0000000040400000           4M     RW         PSE     GLB NX pmd",
    ]
    status, lines = run(["walk", "--backend", "sim", "--scenario", path, "--format", "ptdump",
                         "--range", "0xffffffff80000000-0xffffffffffffffff"])  # fmt: skip
    assert lines[0] == "---[ High Kernel Mapping ]---"
    with pytest.raises(UsageError):
        run(["walk", "--backend", "sim", "--scenario", path, "--format", "ptdump",
             "--filter", "w"])  # fmt: skip


# --- a plain model of the kernel's walk, for larger comparisons ----------------------------


def reference_ptdump(mapper: PhysMapper, root: int, levels: int, layout: Layout) -> list[str]:
    """Linux's ptdump, entry by entry: ``walk_page_range_novma`` with ``ptdump_ops`` and x86's
    ``note_page``, over ``[0, lower half end)`` and ``[GUARD_HOLE_END_ADDR, 2^64)``."""
    flags_mask = 0xFFF0_0000_0000_0FFF
    names = ["pgd", "p4d", "pud", "pmd", "pte"]
    markers = [(m.start, m.name, m.max_lines) for m in layout.markers] + [((1 << 64) - 1, "", 0)]
    out: list[str] = []
    st: dict[str, Any] = {"level": -1}
    prot_levels = [0] * 5

    def note(addr: int, level: int, val: int) -> None:
        prot = val & flags_mask
        eff = 0 if not val else prot_levels[level]
        if st["level"] == -1:
            st.update(level=level, prot=prot, eff=eff, start=addr, marker=0, lines=0)
            out.append(f"---[ {markers[0][1]} ]---")
            return
        nxt = markers[st["marker"] + 1][0]
        if prot != st["prot"] or eff != st["eff"] or level != st["level"] or addr >= nxt:
            cap = markers[st["marker"]][2]
            if not cap or st["lines"] < cap:
                delta = (addr - st["start"]) % (1 << 64)
                unit = 0
                while delta % 1024 == 0 and unit < 6:
                    delta //= 1024
                    unit += 1
                p = st["prot"]
                lv = st["level"]
                flags = HOLE if not p & 1 else "".join([
                    "USR " if p & 4 else "    ", "RW " if p & 2 else "ro ",
                    "PWT " if p & 8 else "    ", "PCD " if p & 16 else "    ",
                    "PSE " if lv <= 3 and p & 0x80 else "    ",
                    "PAT " if (lv == 4 and p & 0x80) or (lv in (2, 3) and p & 0x1000) else "    ",
                    "GLB " if p & 0x100 else "    ", "NX " if p >> 63 else "x  "])  # fmt: skip
                out.append(
                    f"0x{st['start']:016x}-0x{addr % (1 << 64):016x}   "
                    f"{delta:9d}{'BKMGTPE'[unit]} {flags}{names[lv]}"
                )
            st["lines"] += 1
            if addr >= nxt:
                if cap and st["lines"] > cap:
                    n = st["lines"] - cap
                    out.append(f"... {n} entr{'y' if n == 1 else 'ies'} skipped ... ")
                st["marker"] += 1
                st["lines"] = 0
                out.append(f"---[ {markers[st['marker']][1]} ]---")
            st.update(start=addr, prot=prot, eff=eff, level=level)

    def effective(level: int, val: int) -> None:
        prot = val & flags_mask
        if level == 0:
            prot_levels[0] = prot
        else:
            hi = prot_levels[level - 1]
            prot_levels[level] = (hi & prot & 6) | ((hi | prot) & (1 << 63))

    def table(paddr: int) -> tuple[int, ...]:
        return read_table(mapper, paddr)

    def none(val: int) -> bool:
        return val & ~0x60 == 0

    def walk_pte(t: int, va: int) -> None:
        for i, e in enumerate(table(t)):
            effective(4, e)
            note(va + i * 4096, 4, e)

    def walk_pmd(t: int, va: int) -> None:
        for i, e in enumerate(table(t)):
            a = va + (i << 21)
            if none(e):
                note(a, 3, 0)
                continue
            effective(3, e)
            if e & 0x80:
                note(a, 3, e)
            elif e & 0x101:
                walk_pte(e & 0xFFFFFFFFFF000, a)

    def walk_pud(t: int, va: int) -> None:
        for i, e in enumerate(table(t)):
            a = va + (i << 30)
            if none(e):
                note(a, 2, 0)
                continue
            effective(2, e)
            if (e & 0x81) == 0x81:
                note(a, 2, e)
            elif e & 1:
                walk_pmd(e & 0xFFFFFFFFFF000, a)

    def top_indices() -> Iterator[tuple[int, int]]:
        shift = 12 + 9 * (levels - 1)
        half = 1 << (shift + 8)
        guard_end = (1 << 64) - half + 16 * (1 << shift)
        for i in range(512):
            va = i << shift if i < 256 else (1 << 64) - ((512 - i) << shift)
            if i < 256 or va >= guard_end:
                yield i, va

    top = table(root)
    for i, va in top_indices():
        e = top[i]
        if levels == 5:
            if e == 0:
                note(va, 0, 0)
                continue
            effective(0, e)
            for j, e4 in enumerate(table(e & 0xFFFFFFFFFF000)):
                a = va + (j << 39)
                if none(e4):
                    note(a, 1, 0)
                    continue
                effective(1, e4)
                walk_pud(e4 & 0xFFFFFFFFFF000, a)
        else:
            effective(0, e)  # pgd_entry of the folded pgd
            if none(e):
                note(va, 0, 0)  # p4d hole, reported at real_depth 0
                continue
            effective(1, e)
            walk_pud(e & 0xFFFFFFFFFF000, va)  # not none: walked, present or not
    # the final note_page(0, -1, 0)
    if st["level"] != -1:
        note_final = st["lines"] < markers[st["marker"]][2] or not markers[st["marker"]][2]
        if note_final:
            prev = len(out)
            note(1 << 64, -2, 0)
            del out[prev + 1 :]  # only the flushed line, no marker
    return out


def _ours_and_reference(target: Any, **opts: Any) -> tuple[list[str], list[str]]:
    result = commands.walk(target, commands.WalkOptions(max_leaves=None, **opts))
    ours = list(render_walk(result))
    layout = detect_layout(result.page_table, result.facts)
    pt = result.page_table
    return ours, reference_ptdump(pt.mapper, pt.root, pt.levels, layout)


def test_demo_equals_reference() -> None:
    machine = build_machine(json.loads(DEMO.read_text()), str(DEMO))
    ours, ref = _ours_and_reference(machine.to_target())
    assert ours == ref
    assert any(line.startswith("... ") for line in ours)


def test_tokens_equal_reference() -> None:
    machine = build_machine(TOKENS)
    ours, ref = _ours_and_reference(machine.to_target())
    assert ours == ref == TOKENS_PTDUMP


def espfix_like(levels: int = 4) -> dict[str, Any]:
    """Linux's ESPFIX layout: one PT with 32 read-only stacks (one PTE every 16), linked by
    every entry of one PD, which 4 PUD entries link: 65,536 leaves, all one page."""
    base = 0xFFFFFF0000000000
    stacks = [
        {"vaddr": hex(base + (16 * n + 15) * 4096), "paddr": "0x300000", "size": "4K",
         "flags": ["GLOBAL", "NO_EXECUTE"]}
        for n in range(32)
    ]  # fmt: skip
    return {
        "levels": levels,
        "ram": "64M",
        "mappings": [
            *stacks,
            {"vaddr": "0xffffffff81000000", "paddr": "0x1000000", "size": "2M",
             "flags": ["GLOBAL"]},
        ],
        "links": [
            {"vaddr": hex(base + (1 << 21)), "level": 2, "count": 511, "table_of": hex(base)},
            {"vaddr": hex(base + (1 << 30)), "level": 3, "count": 3, "table_of": hex(base)},
        ],
    }  # fmt: skip


def count_visits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one at each link the ptdump walk visits entry by entry (links
    accounted for in bulk are not visits)."""
    visits: list[int] = []
    visit = PtdumpWalk.visit

    def counted(self: PtdumpWalk, *args: Any, **kwargs: Any) -> Any:
        visits.append(1)
        return visit(self, *args, **kwargs)

    monkeypatch.setattr(PtdumpWalk, "visit", counted)
    return visits


def test_espfix_aliases_fast_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = build_machine(espfix_like())
    target = machine.to_target()
    result = commands.walk(target, commands.WalkOptions())
    visits = count_visits(monkeypatch)
    lines = list(render_walk(result))
    assert result.stats["leaves"] == 32 * 512 * 4 + 1  # and the kernel text page
    section = lines[lines.index("---[ ESPfix Area ]---") + 1 :]
    assert section[0] == (
        "0xffffff0000000000-0xffffff000000f000          60K                               pte"
    )
    assert section[1] == (
        "0xffffff000000f000-0xffffff0000010000           4K     ro                 GLB NX pte"
    )
    assert section[14] == (
        "0xffffff0000070000-0xffffff000007f000          60K                               pte"
    )
    assert section[15] == (
        "0xffffff000007f000-0xffffff0000080000           4K     ro                 GLB NX pte"
    )
    # 4 x 512 copies of 64 series (hole, stack, ... stack), then the pud hole up to the EFI
    # marker: 131,073 lines, 16 printed.
    assert section[16] == f"... {4 * 512 * 64 + 1 - 16} entries skipped ... "
    assert section[17] == "---[ EFI Runtime Services ]---"
    # Past the line limit the 2,048 links are accounted for in bulk, not visited one by one.
    assert len(visits) < 64, len(visits)
    # The plain model walks every alias: same lines.
    assert lines == reference_ptdump(
        machine.memory, machine.page_table.root, 4, detect_layout(machine.page_table, KernelFacts())
    )


def test_aliases_outside_a_capped_section_print_every_series() -> None:
    # The same tables under vmalloc: nothing is capped, every series is a line.
    doc = espfix_like()
    text = json.dumps(doc).replace("0xffffff00", "0xffffc900")
    machine = build_machine(json.loads(text))
    result = commands.walk(machine.to_target(), commands.WalkOptions())
    lines = list(render_walk(result))
    series = [
        line
        for line in lines
        if line.startswith("0x") and 0xFFFFC90000000000 <= int(line[2:18], 16) < 0xFFFFC98000000000
    ]
    assert len(series) == 4 * 512 * 64 + 1


def test_identical_links_merge_in_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fully mapped PT linked 65,536 times: one ptdump series (ptdump groups by permission, not
    # by physical contiguity), found without replaying the links.
    doc = {
        "levels": 4,
        "ram": "64M",
        "mappings": [{"vaddr": "0xffffc90000000000", "paddr": "0x200000", "size": "4K",
                      "count": 512, "flags": ["WRITABLE", "NO_EXECUTE"]}],
        "links": [
            {"vaddr": "0xffffc90000200000", "level": 2, "count": 511,
             "table_of": "0xffffc90000000000"},
            {"vaddr": "0xffffc90040000000", "level": 3, "count": 127,
             "table_of": "0xffffc90000000000"},
        ],
    }  # fmt: skip
    machine = build_machine(doc)
    result = commands.walk(machine.to_target(), commands.WalkOptions(max_leaves=None))
    visits = count_visits(monkeypatch)
    lines = list(render_walk(result))
    one = "0xffffc90000000000-0xffffc92000000000         128G     RW                     NX pte"
    assert one in lines
    assert result.stats["leaves"] == 512 * 512 * 128
    # The 65,536 links are accounted for in bulk, not visited one by one.
    assert len(visits) < 64, len(visits)


def test_leaf_limit(tmp_path: Path) -> None:
    machine = build_machine(espfix_like())
    result = commands.walk(machine.to_target(), commands.WalkOptions(max_leaves=1000))
    from gdbext.errors import WalkLimitError

    with pytest.raises(WalkLimitError):
        list(render_walk(result))


# --- real kernels ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dumps(kernel_dump: Callable[[str], Path]) -> dict[str, Path]:
    names = sorted(path.name.removesuffix(".elf.xz") for path in KERNELS.glob("*.elf.xz"))
    return {name: kernel_dump(name) for name in names}


@pytest.mark.parametrize("name", kernels())
def test_real_kernel_equals_reference(dumps: dict[str, Path], name: str) -> None:
    if name not in dumps:
        pytest.skip(f"no fixture {name}")
    from gdbext_dump.dump import open_dump

    target = open_dump(str(dumps[name]))
    try:
        ours, ref = _ours_and_reference(target, root=commands.RootOptions(kernel=True))
    finally:
        if target.close is not None:
            target.close()
    assert ours == ref
    names = [line for line in ours if line.startswith("---[")]
    assert names == [
        "---[ User Space ]---", "---[ Kernel Space ]---", "---[ LDT remap ]---",
        "---[ Low Kernel Mapping ]---", "---[ vmalloc() Area ]---", "---[ Vmemmap ]---",
        "---[ CPU entry Area ]---", "---[ ESPfix Area ]---", "---[ EFI Runtime Services ]---",
        "---[ High Kernel Mapping ]---", "---[ Modules ]---", "---[ End Modules ]---",
        "---[ Fixmap Area ]---",
    ]  # fmt: skip
    # Debian's kernel ends with the vsyscall page's PMD and the top 8 MiB.
    assert ours[-1] == (
        "0xffffffffff800000-0x0000000000000000           8M                               pmd"
    )


def test_unreadable_table_is_listed_after_the_dump(tmp_path: Path) -> None:
    # PD entry 1 links a "table" beyond RAM: nothing is noted for it (the 2 MiB series runs on),
    # and it is listed as a '#' line after the dump, as the text output lists anomalies.
    doc = {
        "levels": 4,
        "ram": "16M",
        "mappings": [{"vaddr": "0x40000000", "paddr": "0x200000", "size": "2M",
                      "flags": ["WRITABLE"]}],
        "entries": [{"vaddr": "0x40200000", "level": 2, "value": "0x10000003"}],
    }  # fmt: skip
    machine = build_machine(doc)
    result = commands.walk(machine.to_target(), commands.WalkOptions())
    lines = list(render_walk(result))
    assert lines[1:3] == [
        "0x0000000000000000-0x0000000040000000           1G                               pud",
        "0x0000000040000000-0x0000000040400000           4M     RW         PSE         x  pmd",
    ]
    assert lines[-1].startswith("# 0x0000000040200000: PD[1] entry 0x10000003 in table 0x")
    assert lines[-1].endswith(": table-outside-ram (table 0x10000000)")
    assert result.stats == {"leaves": 1, "anomalies": 1}


def test_unreadable_table_under_aliases_reported_at_each_link() -> None:
    # The shared PD's last entry links a table beyond RAM; the PD is linked 4 times, past the
    # ESPfix line cap: still 4 '#' lines, one per path.
    doc = espfix_like()
    doc["entries"] = [{"vaddr": hex(0xFFFFFF0000000000 + 511 * (1 << 21)), "level": 2,
                       "value": "0x10000003"}]  # fmt: skip
    machine = build_machine(doc)
    result = commands.walk(machine.to_target(), commands.WalkOptions())
    lines = list(render_walk(result))
    gaps = [line for line in lines if line.startswith("#")]
    assert [g[:20] for g in gaps] == [
        "# 0xffffff003fe00000",
        "# 0xffffff007fe00000",
        "# 0xffffff00bfe00000",
        "# 0xffffff00ffe00000",
    ]
    assert result.stats == {"leaves": 4 * 511 * 32 + 1, "anomalies": 4}
